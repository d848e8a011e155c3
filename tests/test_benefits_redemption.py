"""Redeeming grants by code or id, including two redemptions of one code at once.

Alice is a Silver member with a welcome coupon (valid 30 days) and free
shipping (ongoing). The tills are the Xuhui store and the Tmall shop.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, Grant
from benefits.redemption import (
    GrantNotFound,
    InvalidRedemption,
    RedemptionRejected,
    redeem,
)
from members.models import Channel
from tests.test_benefits_support import (
    NEEDS_POSTGRESQL,
    ON_POSTGRESQL,
    create_catalogue,
    member_in_silver,
    run_at_once,
)

Status = Grant.Status


@pytest.fixture
def tmall(db) -> Channel:
    return Channel.objects.create(code="tmall", name="Tmall shop", kind="ecommerce")


@pytest.fixture
def alice_grants(ladder, store) -> dict[str, Grant]:
    create_catalogue(ladder)
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    grants = Grant.objects.filter(member=alice).select_related("benefit")
    return {grant.benefit.name: grant for grant in grants}


@pytest.fixture
def coupon(alice_grants) -> Grant:
    return alice_grants["Welcome coupon ¥50"]


def test_redeem_by_code(coupon, store):
    result = redeem(code=coupon.code, channel=store, reference="ORDER-1")

    assert result.replayed is False
    assert result.grant.status == Status.REDEEMED
    assert result.grant.redeemed_channel == store
    assert result.grant.redemption_reference == "ORDER-1"
    assert result.grant.redeemed_at is not None


def test_code_read_out_loosely_matches(coupon, store):
    typed = coupon.code.replace("-", " ").lower()

    result = redeem(code=typed, channel=store, reference="ORDER-1")

    assert result.grant.pk == coupon.pk


def test_redeem_by_grant_id(coupon, store):
    result = redeem(grant_id=coupon.pk, channel=store, reference="ORDER-1")

    assert result.grant.status == Status.REDEEMED


def test_second_redemption_rejected_with_time(coupon, store, tmall):
    first = redeem(code=coupon.code, channel=store, reference="ORDER-1")

    with pytest.raises(RedemptionRejected) as caught:
        redeem(code=coupon.code, channel=tmall, reference="TM-9")

    assert caught.value.code == "already_redeemed"
    message = str(caught.value)
    assert f"already redeemed at {first.grant.redeemed_at.isoformat()}" in message
    assert "in channel store-xuhui" in message
    assert "'ORDER-1'" in message


def test_retry_with_same_reference_replays(coupon, store):
    first = redeem(code=coupon.code, channel=store, reference="ORDER-1")

    again = redeem(code=coupon.code, channel=store, reference="ORDER-1")

    assert again.replayed is True
    assert again.grant.pk == first.grant.pk
    assert again.grant.redeemed_at == first.grant.redeemed_at


def test_same_channel_other_reference_rejected(coupon, store):
    redeem(code=coupon.code, channel=store, reference="ORDER-1")

    with pytest.raises(RedemptionRejected, match="already redeemed"):
        redeem(code=coupon.code, channel=store, reference="ORDER-2")


def test_unknown_code_not_found(coupon, store):
    with pytest.raises(GrantNotFound, match="No benefit grant has code 'ZZZZ"):
        redeem(code="ZZZZ-ZZZZ-ZZZZ", channel=store, reference="ORDER-1")


def test_channel_redemption_needs_reference(coupon, store):
    with pytest.raises(InvalidRedemption, match="reference is required"):
        redeem(code=coupon.code, channel=store, reference="  ")


def test_code_and_id_together_invalid(coupon, store):
    with pytest.raises(InvalidRedemption, match="not both"):
        redeem(code=coupon.code, grant_id=coupon.pk, channel=store, reference="X")


def test_expired_coupon_rejected(coupon, store):
    later = coupon.expires_at + dt.timedelta(seconds=1)

    with pytest.raises(RedemptionRejected) as caught:
        redeem(code=coupon.code, channel=store, reference="ORDER-1", now=later)

    assert caught.value.code == "expired"
    assert f"expired at {coupon.expires_at.isoformat()}" in str(caught.value)
    coupon.refresh_from_db()
    assert coupon.status == Status.ISSUED


def test_ended_grant_rejected(coupon, store):
    Grant.objects.filter(pk=coupon.pk).update(
        status=Status.ENDED, ended_at=timezone.now()
    )

    with pytest.raises(RedemptionRejected, match="when the member left the tier"):
        redeem(code=coupon.code, channel=store, reference="ORDER-1")


def test_awaiting_approval_rejected(coupon, store):
    Grant.objects.filter(pk=coupon.pk).update(
        status=Status.AWAITING_APPROVAL,
        approval_due_at=timezone.now() + dt.timedelta(days=1),
    )

    with pytest.raises(RedemptionRejected, match="waiting for staff approval"):
        redeem(code=coupon.code, channel=store, reference="ORDER-1")


def test_ongoing_grant_not_redeemable(alice_grants, store):
    shipping = alice_grants["Free shipping"]

    with pytest.raises(RedemptionRejected) as caught:
        redeem(code=shipping.code, channel=store, reference="ORDER-1")

    assert caught.value.code == "not_redeemable"
    assert "applies while the member is in the tier" in str(caught.value)


def test_not_yet_valid_rejected(coupon, store):
    start = timezone.now() + dt.timedelta(days=2)
    Benefit.objects.filter(pk=coupon.benefit_id).update(valid_from=start)

    with pytest.raises(RedemptionRejected) as caught:
        redeem(code=coupon.code, channel=store, reference="ORDER-1")

    assert caught.value.code == "not_yet_valid"
    assert start.isoformat() in str(caught.value)


def test_staff_redemption_records_user(coupon, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", is_staff=True)

    result = redeem(grant_id=coupon.pk, user=clerk)

    assert result.grant.redeemed_by == clerk
    assert result.grant.redeemed_channel is None


@pytest.mark.skipif(not ON_POSTGRESQL, reason=NEEDS_POSTGRESQL)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_simultaneous_redemptions_one_succeeds(ladder, store):
    create_catalogue(ladder)
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    code = Grant.objects.get(member=alice, origin=Grant.Origin.WELCOME).code

    def redeem_at_till(number: int):
        return redeem(code=code, channel=store, reference=f"ORDER-{number}")

    results, errors = run_at_once(redeem_at_till, 10)

    assert len(results) == 1
    assert results[0].replayed is False
    assert len(errors) == 9
    assert all(isinstance(error, RedemptionRejected) for error in errors)
    assert all(error.code == "already_redeemed" for error in errors)
    grant = Grant.objects.get(code=code)
    assert grant.status == Status.REDEEMED
    assert grant.redemption_reference == results[0].grant.redemption_reference
