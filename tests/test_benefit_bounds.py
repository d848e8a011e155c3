"""Bounds on benefit values, and issuing that survives one benefit with bad dates.

The catalogue is the one in tests.test_benefits_support. Alice is evaluated
into Silver, whose welcome coupon plays the benefit with a validity too far
in the future. Bob is evaluated into Gold.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from benefits.admin import BenefitPoolForm
from benefits.issuing import issue_for_tier_changes, issue_waiting_for_stock
from benefits.models import (
    MAX_BENEFIT_DAYS,
    Benefit,
    BenefitPool,
    Grant,
    ProcessedTierChange,
    TierBenefit,
    TierPeriod,
)
from benefits.pools import PoolChoiceError, choose_from_pool
from tests.test_benefits_support import (
    create_catalogue,
    member_in_gold,
    member_in_silver,
    spend,
)
from tiers.evaluation import evaluate
from tiers.models import TierChange

pytestmark = pytest.mark.django_db

Status = Grant.Status
# Far beyond the bound: issuing with it overflows datetime.
HUGE_DAYS = 3_000_000


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def catalogue(ladder):
    return create_catalogue(ladder)


@pytest.fixture
def overflowing(monkeypatch):
    """Make the given benefits expire HUGE_DAYS after issue, like a row stored
    before the check constraints existed. Returns the set of their ids."""
    benefit_ids: set[int] = set()
    original = Benefit.expiry_for

    def expiry_for(benefit, issued_at):
        if benefit.pk in benefit_ids:
            return issued_at + dt.timedelta(days=HUGE_DAYS)
        return original(benefit, issued_at)

    monkeypatch.setattr(Benefit, "expiry_for", expiry_for)
    return benefit_ids


def valid_benefit(**fields) -> Benefit:
    values = {"name": "Voucher", "kind": Benefit.Kind.COUPON, **fields}
    return Benefit(**values)


# Model validation


@pytest.mark.parametrize("days", [MAX_BENEFIT_DAYS + 1, HUGE_DAYS, 2_147_483_647])
def test_valid_days_over_bound_invalid(days):
    benefit = valid_benefit(valid_days=days)

    with pytest.raises(ValidationError) as caught:
        benefit.full_clean()

    assert "valid_days" in caught.value.message_dict


@pytest.mark.parametrize("days", [MAX_BENEFIT_DAYS + 1, 32_767])
def test_approval_days_over_bound_invalid(days):
    benefit = valid_benefit(approval_days=days)

    with pytest.raises(ValidationError) as caught:
        benefit.full_clean()

    assert "approval_days" in caught.value.message_dict


def test_days_at_bound_valid():
    benefit = valid_benefit(valid_days=MAX_BENEFIT_DAYS, approval_days=MAX_BENEFIT_DAYS)

    benefit.full_clean()


def test_negative_value_invalid():
    benefit = valid_benefit(value=Decimal("-1"))

    with pytest.raises(ValidationError) as caught:
        benefit.full_clean()

    assert "negative" in caught.value.message_dict["value"][0]


def test_discount_over_hundred_invalid():
    benefit = valid_benefit(kind=Benefit.Kind.DISCOUNT, value=Decimal("100.01"))

    with pytest.raises(ValidationError) as caught:
        benefit.full_clean()

    assert "more than 100%" in caught.value.message_dict["value"][0]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (Benefit.Kind.DISCOUNT, Decimal("100")),
        (Benefit.Kind.DISCOUNT, Decimal("0")),
        (Benefit.Kind.COUPON, Decimal("150")),
        (Benefit.Kind.POINTS, Decimal("5000")),
    ],
)
def test_plausible_values_valid(kind, value):
    valid_benefit(kind=kind, value=value).full_clean()


# Database constraints


@pytest.mark.parametrize(
    "fields",
    [
        {"valid_days": HUGE_DAYS},
        {"valid_days": MAX_BENEFIT_DAYS + 1},
        {"valid_days": 0},
        {"approval_days": MAX_BENEFIT_DAYS + 1},
        {"approval_days": 0},
    ],
)
def test_database_rejects_days_out_of_range(fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        Benefit.objects.create(name="Voucher", kind=Benefit.Kind.COUPON, **fields)


def test_database_rejects_update_out_of_range():
    benefit = Benefit.objects.create(name="Voucher", kind=Benefit.Kind.COUPON)

    with pytest.raises(IntegrityError), transaction.atomic():
        Benefit.objects.filter(pk=benefit.pk).update(valid_days=HUGE_DAYS)


# Admin forms


@pytest.fixture
def staff(db) -> Client:
    mei = User.objects.create_superuser("mei", "mei@example.com", "pw-12345-x")
    client = Client(headers={"accept-language": "en"})
    client.force_login(mei)
    return client


def benefit_form_data(**fields) -> dict:
    return {
        "name": "Voucher",
        "kind": Benefit.Kind.COUPON,
        "approval_days": "3",
        "tier_benefits-TOTAL_FORMS": "0",
        "tier_benefits-INITIAL_FORMS": "0",
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"valid_days": str(HUGE_DAYS)}, "valid_days"),
        ({"valid_days": "2147483647"}, "valid_days"),
        ({"approval_days": "3661"}, "approval_days"),
        ({"value": "-5"}, "value"),
        ({"kind": Benefit.Kind.DISCOUNT, "value": "150"}, "value"),
    ],
)
def test_benefit_admin_rejects_doubtful_values(staff, fields, field_name):
    response = staff.post(
        reverse("admin:benefits_benefit_add"), benefit_form_data(**fields)
    )

    assert response.status_code == 200
    assert field_name in response.context["adminform"].form.errors
    assert not Benefit.objects.exists()


def test_benefit_admin_accepts_bound(staff):
    response = staff.post(
        reverse("admin:benefits_benefit_add"),
        benefit_form_data(valid_days=str(MAX_BENEFIT_DAYS)),
    )

    assert response.status_code == 302
    assert Benefit.objects.get().valid_days == MAX_BENEFIT_DAYS


def pool_form(tiers, choose: int, option_count: int) -> BenefitPoolForm:
    options = [
        Benefit.objects.create(name=f"Option {number}", kind=Benefit.Kind.GIFT)
        for number in range(option_count)
    ]
    return BenefitPoolForm(
        data={
            "tier": tiers["gold"].pk,
            "name": "Gold pick",
            "choose": choose,
            "options": [option.pk for option in options],
        }
    )


def test_pool_form_rejects_more_choices_than_options(tiers):
    form = pool_form(tiers, choose=3, option_count=2)

    assert not form.is_valid()
    assert "choose" in form.errors
    assert "cannot pick 3 options from 2 options" in form.errors["choose"][0]


def test_pool_form_accepts_choices_equal_to_options(tiers):
    form = pool_form(tiers, choose=2, option_count=2)

    assert form.is_valid(), form.errors


def test_pool_admin_rejects_more_choices_than_options(staff, tiers):
    option = Benefit.objects.create(name="Option", kind=Benefit.Kind.GIFT)

    response = staff.post(
        reverse("admin:benefits_benefitpool_add"),
        {
            "tier": tiers["gold"].pk,
            "name": "Gold pick",
            "choose": "2",
            "options": [option.pk],
        },
    )

    assert response.status_code == 200
    assert "choose" in response.context["adminform"].form.errors
    assert not BenefitPool.objects.exists()


# Issuing with a benefit whose expiry overflows


def test_overflowing_benefit_does_not_stall_others(
    ladder, store, catalogue, overflowing, caplog
):
    overflowing.add(catalogue["welcome_coupon"].pk)
    now = timezone.now()
    alice = member_in_silver(store, "A-1", now, name="Alice")
    bob = member_in_gold(store, "B-1", now, name="Bob")

    with caplog.at_level(logging.ERROR, logger="benefits.issuing"):
        counts = issue_for_tier_changes()

    assert counts["failed"] == 1
    assert counts["changes"] == 1
    assert Grant.objects.filter(member=bob).count() == 2
    assert not Grant.objects.filter(member=alice).exists()
    assert not TierPeriod.objects.filter(member=alice).exists()
    assert not ProcessedTierChange.objects.filter(change__member=alice).exists()
    message = caplog.records[-1].getMessage()
    assert f"member {alice.pk}" in message
    assert f"benefit {catalogue['welcome_coupon'].pk}" in message


def test_failed_change_is_retried_after_fix(ladder, store, catalogue, overflowing):
    overflowing.add(catalogue["welcome_coupon"].pk)
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    again = issue_for_tier_changes()
    assert again["failed"] == 1

    overflowing.clear()
    counts = issue_for_tier_changes()

    assert counts["changes"] == 1
    assert "failed" not in counts
    names = set(
        Grant.objects.filter(member=alice).values_list("benefit__name", flat=True)
    )
    assert names == {"Welcome coupon ¥50", "Free shipping"}
    assert ProcessedTierChange.objects.filter(change__member=alice).count() == 1


def test_member_later_changes_wait_for_failed_one(
    ladder, store, catalogue, overflowing
):
    overflowing.add(catalogue["welcome_coupon"].pk)
    start = timezone.now() - dt.timedelta(days=2)
    alice = member_in_silver(store, "A-1", start, name="Alice")
    for day in range(6):
        spend(alice, store, start + dt.timedelta(hours=day + 2), "1000")
    evaluate([alice.pk], as_of=start + dt.timedelta(days=1))
    assert TierChange.objects.filter(member=alice).count() == 2

    counts = issue_for_tier_changes()

    assert counts["failed"] == 1
    assert counts["held_back"] == 1
    assert not ProcessedTierChange.objects.filter(change__member=alice).exists()

    overflowing.clear()
    issue_for_tier_changes()

    assert ProcessedTierChange.objects.filter(change__member=alice).count() == 2
    shipping = Grant.objects.get(member=alice, benefit=catalogue["shipping"])
    assert shipping.status == Status.ENDED
    tote = Grant.objects.get(member=alice, benefit=catalogue["tote"])
    assert tote.status == Status.ISSUED


def test_pool_choice_of_overflowing_benefit_rejected(
    ladder, store, catalogue, overflowing
):
    bob = member_in_gold(store, "B-1", timezone.now(), name="Bob")
    issue_for_tier_changes()
    poster = catalogue["poster"]
    overflowing.add(poster.pk)

    with pytest.raises(PoolChoiceError, match="cannot be issued"):
        choose_from_pool(bob, catalogue["pool"].pk, poster.pk)

    poster.refresh_from_db()
    assert poster.stock == 3
    assert not Grant.objects.filter(member=bob, pool=catalogue["pool"]).exists()


def test_stock_retry_skips_overflowing_benefit(ladder, store, catalogue, overflowing):
    tote = catalogue["tote"]
    mug = Benefit.objects.create(name="Gold mug", kind=Benefit.Kind.GIFT, stock=0)
    TierBenefit.objects.create(
        tier=ladder["gold"], benefit=mug, mode=TierBenefit.Mode.WELCOME
    )
    Benefit.objects.filter(pk=tote.pk).update(stock=0)
    bob = member_in_gold(store, "B-1", timezone.now(), name="Bob")
    issue_for_tier_changes()
    Benefit.objects.filter(pk__in=[tote.pk, mug.pk]).update(stock=5)
    overflowing.add(tote.pk)

    counts = issue_waiting_for_stock()

    assert counts["failed"] == 1
    assert counts[Status.ISSUED] == 1
    assert Grant.objects.get(member=bob, benefit=mug).status == Status.ISSUED
    assert Grant.objects.get(member=bob, benefit=tote).status == Status.AWAITING_STOCK
    tote.refresh_from_db()
    assert tote.stock == 5
