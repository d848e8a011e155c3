"""Tier reviews: validity periods, renewals, downgrade modes and grace."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate, explain_member
from tiers.ladder import Ladder
from tiers.models import Downgrade, TierChange, Validity
from tiers.reviews import next_review

pytestmark = pytest.mark.django_db


def reviewed_ladder(tiers, **gold_rule):
    """Publish the standard ladder with Gold reviewed yearly from reaching it."""
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    for name, value in gold_rule.items():
        setattr(gold, name, value)
    publish_spec(spec)
    return Ladder.load()


def tier_of(member) -> str:
    member.refresh_from_db()
    return member.tier.name


def reach_gold(store, external_id="G"):
    """Six orders of 1,000 in January 2024; Gold is reached on 31 January."""
    member = make_member(store, external_id)
    for day in range(1, 7):
        record(member, store, "purchase", local(2024, 1, day + 25), "1000")
    evaluate(as_of=local(2024, 1, 31, 12))
    return member


def test_months_keep_day_or_clamp(tiers):
    gold = reviewed_ladder(tiers).by_id(tiers["gold"].pk)

    assert next_review(gold, local(2024, 1, 31, 12)) == local(2025, 1, 31, 12)
    gold_one = gold.__class__(**{**gold.__dict__, "validity_months": 1})
    assert next_review(gold_one, local(2024, 1, 31, 12)) == local(2024, 2, 29, 12)
    assert next_review(gold_one, local(2025, 1, 31, 12)) == local(2025, 2, 28, 12)


def test_calendar_year_ends_at_local_new_year(tiers):
    spec = standard_spec(tiers)
    spec.tiers[2].validity = Validity.CALENDAR_YEAR
    publish_spec(spec)
    gold = Ladder.load().by_id(tiers["gold"].pk)

    assert next_review(gold, local(2024, 12, 31, 23, 59, 59)) == local(2025, 1, 1)
    assert next_review(gold, local(2025, 1, 1, 0, 0, 0)) == local(2026, 1, 1)


def test_promotion_sets_review_date(tiers, store):
    reviewed_ladder(tiers)

    member = reach_gold(store)

    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == local(2025, 1, 31, 12)
    change = TierChange.objects.filter(member=member).first()
    assert change.review_at == member.review_at


def test_refund_waits_for_review(tiers, store):
    reviewed_ladder(tiers)
    member = reach_gold(store)
    record(member, store, "refund", local(2024, 3, 1), "-4000")

    evaluate(as_of=local(2024, 3, 2))

    assert tier_of(member) == "Gold"
    assert (
        explain_member(member, as_of=local(2024, 3, 2)).explanation["held_by_policy"]
        == "review"
    )


def test_drop_between_reviews_when_chosen(tiers, store):
    reviewed_ladder(tiers, demote_between_reviews=True)
    member = reach_gold(store)
    record(member, store, "refund", local(2024, 3, 1), "-4000")

    evaluate(as_of=local(2024, 3, 2))

    assert tier_of(member) == "Silver"


def test_review_renews_when_retention_holds(tiers, store):
    reviewed_ladder(tiers)
    member = reach_gold(store)
    for day in range(1, 7):
        record(member, store, "purchase", local(2025, 1, day), "1000")

    summary, _ = evaluate(as_of=local(2025, 1, 31, 12))

    member.refresh_from_db()
    assert summary.renewed == 1
    assert member.tier.name == "Gold"
    assert member.review_at == local(2026, 1, 31, 12)
    renewal = TierChange.objects.filter(member=member).first()
    assert renewal.reason == TierChange.Reason.RENEWAL
    assert renewal.from_tier == renewal.to_tier


def test_review_one_second_early_changes_nothing(tiers, store):
    reviewed_ladder(tiers)
    member = reach_gold(store)

    summary, _ = evaluate(as_of=local(2025, 1, 31, 11, 59, 59))

    assert summary.changed == 0
    assert summary.renewed == 0
    assert tier_of(member) == "Gold"


@pytest.mark.parametrize(
    ("mode", "expected", "review_at"),
    [
        # Silver has no reviews, so a one-step drop keeps it until Gold's
        # next review date, and the other drops leave Silver unheld. A drop
        # to the base stops at Silver, whose entry rules the member meets.
        (Downgrade.ONE_STEP, "Silver", local(2026, 1, 31, 12)),
        (Downgrade.TO_QUALIFIED, "Silver", None),
        (Downgrade.TO_BASE, "Silver", None),
    ],
)
def test_failed_review_drop_modes(tiers, store, mode, expected, review_at):
    reviewed_ladder(tiers, downgrade=mode)
    member = reach_gold(store)
    # In the year before the review: 1,500 of spend, enough for Silver only.
    record(member, store, "purchase", local(2024, 12, 1), "1500")

    evaluate(as_of=local(2025, 1, 31, 12))

    assert tier_of(member) == expected
    member.refresh_from_db()
    assert member.review_at == review_at


def test_one_step_drop_stops_above_qualified(tiers, store):
    spec = standard_spec(tiers)
    platinum = spec.tiers[3]
    platinum.validity = Validity.MONTHS
    platinum.validity_months = 12
    platinum.downgrade = Downgrade.ONE_STEP
    publish_spec(spec)
    member = make_member(store, "P")
    record(member, store, "purchase", local(2024, 1, 10), "60000")
    evaluate(as_of=local(2024, 1, 31))
    record(member, store, "refund", local(2024, 2, 1), "-59000")

    evaluate(as_of=local(2025, 2, 1))

    assert tier_of(member) == "Gold"  # qualifies for Bronze, drops one step


def test_grace_delays_the_drop(tiers, store):
    reviewed_ladder(tiers, grace_days=30)
    member = reach_gold(store)
    review = local(2025, 1, 31, 12)

    summary, _ = evaluate(as_of=review)
    member.refresh_from_db()
    assert summary.in_grace == 1
    assert member.tier.name == "Gold"
    assert member.grace_until == review + dt.timedelta(days=30)

    evaluate(as_of=review + dt.timedelta(days=29))
    assert tier_of(member) == "Gold"

    evaluate(as_of=review + dt.timedelta(days=30))
    assert tier_of(member) == "Bronze"


def test_catching_up_in_grace_renews(tiers, store):
    reviewed_ladder(tiers, grace_days=30)
    member = reach_gold(store)
    review = local(2025, 1, 31, 12)
    evaluate(as_of=review)
    for day in range(1, 7):
        record(member, store, "purchase", local(2025, 2, day), "1000")

    evaluate(as_of=local(2025, 2, 10))

    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.grace_until is None
    assert member.review_at == local(2026, 1, 31, 12)


def test_late_review_keeps_cycle(tiers, store):
    reviewed_ladder(tiers)
    member = reach_gold(store)
    # One order a month from February 2024 to February 2026, so the year
    # before each of the two missed reviews has 12.
    for index in range(1, 26):
        when = local(2024 + index // 12, index % 12 + 1, 15)
        record(member, store, "purchase", when, "1000")

    evaluate(as_of=local(2026, 3, 1))  # the January 2025 and 2026 reviews ran late

    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == local(2027, 1, 31, 12)


def monthly_gold(tiers):
    """Publish the standard ladder with Gold reviewed every month."""
    return reviewed_ladder(tiers, validity_months=1)


def test_monthly_reviews_keep_month_end(tiers, store):
    monthly_gold(tiers)
    member = reach_gold(store)  # on 31 January 2024 at noon
    expected = [
        local(2024, 2, 29, 12),
        local(2024, 3, 31, 12),
        local(2024, 4, 30, 12),
        local(2024, 5, 31, 12),
        local(2024, 6, 30, 12),
    ]
    member.refresh_from_db()
    reviews = [member.review_at]

    for _ in range(4):
        evaluate(as_of=reviews[-1])
        member.refresh_from_db()
        reviews.append(member.review_at)

    assert reviews == expected
    assert tier_of(member) == "Gold"


def test_late_monthly_review_keeps_month_end(tiers, store):
    monthly_gold(tiers)
    member = reach_gold(store)

    evaluate(as_of=local(2024, 3, 5))  # the 29 February review ran late

    member.refresh_from_db()
    assert member.review_at == local(2024, 3, 31, 12)


def test_leap_day_reviews_february_end(tiers, store):
    reviewed_ladder(tiers)
    member = make_member(store, "L")
    for day in range(20, 26):
        record(member, store, "purchase", local(2028, 2, day), "1000")
    evaluate(as_of=local(2028, 2, 29, 12))
    member.refresh_from_db()
    reviews = [member.review_at]

    for year in range(2029, 2032):
        for day in range(1, 7):
            record(member, store, "purchase", local(year, 2, day), "1000")
        evaluate(as_of=reviews[-1])
        member.refresh_from_db()
        reviews.append(member.review_at)

    assert reviews == [
        local(2029, 2, 28, 12),
        local(2030, 2, 28, 12),
        local(2031, 2, 28, 12),
        local(2032, 2, 29, 12),
    ]
    assert member.tier.name == "Gold"
    assert member.tier_since == local(2028, 2, 29, 12)


def test_late_started_cycle_keeps_start(tiers, store):
    publish_spec(standard_spec(tiers))  # Gold without reviews
    member = reach_gold(store)  # reached on 31 January 2024
    reviewed_ladder(tiers)
    evaluate(as_of=local(2024, 3, 10))  # the first period starts now
    for day in range(1, 7):
        record(member, store, "purchase", local(2025, 3, day), "1000")

    evaluate(as_of=local(2025, 3, 10))

    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == local(2026, 3, 10)


def test_review_run_twice_changes_nothing(tiers, store):
    reviewed_ladder(tiers, grace_days=10)
    member = reach_gold(store)
    as_of = local(2025, 1, 31, 12)
    evaluate(as_of=as_of)
    rows = TierChange.objects.filter(member=member).count()

    summary, _ = evaluate(as_of=as_of)

    assert summary.changed == 0
    assert summary.in_grace == 0
    assert TierChange.objects.filter(member=member).count() == rows


def test_drop_between_reviews_skips_grace(tiers, store):
    reviewed_ladder(tiers, demote_between_reviews=True, grace_days=30)
    member = reach_gold(store)
    record(member, store, "refund", local(2024, 3, 1), "-4000")

    evaluate(as_of=local(2024, 3, 2))

    member.refresh_from_db()
    assert member.tier.name == "Silver"
    assert member.grace_until is None


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Downgrade.ONE_STEP, "Silver"),
        (Downgrade.TO_QUALIFIED, "Silver"),
        # The member meets Silver's entry rules, so a drop to the base stops there.
        (Downgrade.TO_BASE, "Silver"),
    ],
)
def test_drop_modes_after_grace(tiers, store, mode, expected):
    reviewed_ladder(tiers, downgrade=mode, grace_days=14)
    member = reach_gold(store)
    record(member, store, "purchase", local(2024, 12, 1), "1500")
    review = local(2025, 1, 31, 12)

    evaluate(as_of=review)
    assert tier_of(member) == "Gold"

    evaluate(as_of=review + dt.timedelta(days=14))
    assert tier_of(member) == expected


def test_tier_that_becomes_reviewed_gets_a_review_date(tiers, store):
    publish_spec(standard_spec(tiers))  # Gold without reviews
    member = reach_gold(store)
    member.refresh_from_db()
    assert member.review_at is None
    reviewed_ladder(tiers)  # a later version reviews Gold yearly

    evaluate(as_of=local(2024, 3, 10))

    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == local(2025, 3, 10)

    evaluate(as_of=local(2025, 3, 10, 0, 0, 1))

    assert tier_of(member) == "Bronze"  # no purchases since January 2024
