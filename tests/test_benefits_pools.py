"""Choosing from a tier's benefit pool: the N-choice limit, also under concurrency.

Bob is a Gold member. The Gold pool "Gold pick" lets him choose 1 of a
listening party, 500 points and a signed poster (stock 3). Alice is Silver.
"""

from __future__ import annotations

import pytest
from django.utils import timezone, translation

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, BenefitPool, Grant
from benefits.pools import PoolChoiceError, choose_from_pool
from members.models import Member
from tests.test_benefits_support import (
    NEEDS_POSTGRESQL,
    ON_POSTGRESQL,
    create_catalogue,
    member_in_gold,
    member_in_silver,
    run_at_once,
)

Status = Grant.Status


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def catalogue(ladder):
    return create_catalogue(ladder)


@pytest.fixture
def bob(ladder, store, catalogue) -> Member:
    member = member_in_gold(store, "B-1", timezone.now(), name="Bob")
    issue_for_tier_changes()
    return member


def choices(member: Member, pool: BenefitPool) -> list[str]:
    grants = Grant.objects.filter(member=member, pool=pool).order_by("pool_slot")
    return [grant.benefit.name for grant in grants]


def test_choice_creates_grant(bob, catalogue):
    grant = choose_from_pool(bob, catalogue["pool"].pk, catalogue["points"].pk)

    assert grant.origin == Grant.Origin.POOL
    assert grant.status == Status.ISSUED
    assert grant.pool_slot == 1
    assert grant.tier == bob.tier
    assert grant.period.tier == bob.tier
    assert choices(bob, catalogue["pool"]) == ["500 points"]


def test_second_choice_over_limit_rejected(bob, catalogue):
    choose_from_pool(bob, catalogue["pool"].pk, catalogue["points"].pk)

    with pytest.raises(PoolChoiceError) as caught:
        choose_from_pool(bob, catalogue["pool"].pk, catalogue["party"].pk)

    assert str(caught.value) == (
        "You have already made all 1 of your choices from “Gold pick”."
    )
    assert choices(bob, catalogue["pool"]) == ["500 points"]


def test_choose_two_of_three(bob, catalogue):
    BenefitPool.objects.filter(pk=catalogue["pool"].pk).update(choose=2)
    pool = catalogue["pool"].pk

    choose_from_pool(bob, pool, catalogue["points"].pk)
    choose_from_pool(bob, pool, catalogue["party"].pk)
    with pytest.raises(PoolChoiceError, match="all 2 of your choices"):
        choose_from_pool(bob, pool, catalogue["poster"].pk)

    assert choices(bob, catalogue["pool"]) == ["500 points", "Listening party"]


def test_same_option_twice_rejected(bob, catalogue):
    BenefitPool.objects.filter(pk=catalogue["pool"].pk).update(choose=2)
    choose_from_pool(bob, catalogue["pool"].pk, catalogue["points"].pk)

    with pytest.raises(PoolChoiceError, match="already chosen “500 points”"):
        choose_from_pool(bob, catalogue["pool"].pk, catalogue["points"].pk)


def test_option_outside_pool_rejected(bob, catalogue):
    with pytest.raises(PoolChoiceError, match="not in “Gold pick”"):
        choose_from_pool(bob, catalogue["pool"].pk, catalogue["shipping"].pk)


def test_pool_of_other_tier_rejected(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()

    with pytest.raises(PoolChoiceError, match="not offered to your tier"):
        choose_from_pool(alice, catalogue["pool"].pk, catalogue["points"].pk)

    assert not Grant.objects.filter(member=alice, pool__isnull=False).exists()


def test_choice_before_issuing_rejected(ladder, store, catalogue):
    bob = member_in_gold(store, "B-1", timezone.now(), name="Bob")

    with pytest.raises(PoolChoiceError, match="still being issued"):
        choose_from_pool(bob, catalogue["pool"].pk, catalogue["points"].pk)


def test_out_of_stock_choice_waits(bob, catalogue):
    Benefit.objects.filter(pk=catalogue["poster"].pk).update(stock=0)

    grant = choose_from_pool(bob, catalogue["pool"].pk, catalogue["poster"].pk)

    assert grant.status == Status.AWAITING_STOCK


@pytest.mark.skipif(not ON_POSTGRESQL, reason=NEEDS_POSTGRESQL)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_simultaneous_choices_stay_within_limit(ladder, store):
    catalogue = create_catalogue(ladder)
    bob = member_in_gold(store, "B-1", timezone.now(), name="Bob")
    issue_for_tier_changes()
    options = [catalogue["party"].pk, catalogue["points"].pk, catalogue["poster"].pk]

    def choose(number: int) -> Grant:
        return choose_from_pool(bob, catalogue["pool"].pk, options[number % 3])

    results, errors = run_at_once(choose, 9)

    assert len(results) == 1
    assert len(errors) == 8
    assert all(isinstance(error, PoolChoiceError) for error in errors)
    assert Grant.objects.filter(member=bob, pool=catalogue["pool"]).count() == 1


@pytest.mark.skipif(not ON_POSTGRESQL, reason=NEEDS_POSTGRESQL)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_simultaneous_choices_never_overdraw_stock(ladder, store):
    catalogue = create_catalogue(ladder)
    now = timezone.now()
    members = [member_in_gold(store, f"G-{n}", now) for n in range(8)]
    issue_for_tier_changes()

    def choose_poster(number: int) -> Grant:
        pool, poster = catalogue["pool"].pk, catalogue["poster"].pk
        return choose_from_pool(members[number], pool, poster)

    results, errors = run_at_once(choose_poster, 8)

    assert errors == []
    statuses = sorted(grant.status for grant in results)
    assert statuses.count(Status.ISSUED) == 3
    assert statuses.count(Status.AWAITING_STOCK) == 5
    catalogue["poster"].refresh_from_db()
    assert catalogue["poster"].stock == 0
