"""Time-travel checks at window and review boundaries in Asia/Shanghai.

Each case puts an activity or a review one second either side of a local
midnight, a month end or a leap day, and checks which side counts. The
standard ladder's Silver needs ¥1,000 of net spend in the last 365 days.
More boundary checks live elsewhere. test_evaluation.py checks the first
day of a rolling window and the year-to-date window by activity time, and
test_reviews.py checks calendar-year review dates and month-end and
leap-day review cycles.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate, explain_member
from tiers.models import Validity
from tiers.rules import Need, TierSpec, VersionSpec, all_of

pytestmark = pytest.mark.django_db


def silver_only(tiers, need: Need) -> None:
    """Publish a version with Bronze and a Silver that needs ``need``."""
    publish_spec(
        VersionSpec(
            tiers=[TierSpec(tiers["bronze"]), TierSpec(tiers["silver"], all_of(need))]
        )
    )


def tier_as_of(member, as_of: dt.datetime) -> str:
    return explain_member(member, as_of=as_of).tier.name


def stored(member):
    member.refresh_from_db()
    return member.tier.name, member.review_at


# Windows: the last second of a day against the first second of the next


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (local(2025, 7, 1, 23, 59, 59), "Silver"),
        (local(2025, 7, 2, 0, 0, 0), "Bronze"),
    ],
)
def test_rolling_window_end_at_midnight(ladder, store, as_of, expected):
    # 2 July 2024 is the first day of the 365 days ending 1 July 2025.
    member = make_member(store, "R")
    record(member, store, "purchase", local(2024, 7, 2, 10), "1000")

    assert tier_as_of(member, as_of) == expected


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (local(2025, 2, 27, 23, 59, 59), "Silver"),
        (local(2025, 2, 28, 0, 0, 0), "Bronze"),
    ],
)
def test_rolling_window_over_leap_day(ladder, store, as_of, expected):
    # The 365 days ending 28 February 2025 start on 1 March 2024.
    member = make_member(store, "L")
    record(member, store, "purchase", local(2024, 2, 29, 12), "1000")

    assert tier_as_of(member, as_of) == expected


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        (local(2024, 1, 31, 23, 59, 59), "Bronze"),
        (local(2024, 2, 1, 0, 0, 0), "Silver"),
    ],
)
def test_thirty_days_back_from_march_first(tiers, store, occurred_at, expected):
    # February 2024 has 29 days, so the 30 days ending 1 March start on 1 February.
    silver_only(tiers, Need("net_spend", 1000, days=30))
    member = make_member(store, "M")
    record(member, store, "purchase", occurred_at, "1000")

    assert tier_as_of(member, local(2024, 3, 1, 0, 0, 0)) == expected


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (local(2024, 12, 31, 23, 59, 59), "Silver"),
        (local(2025, 1, 1, 0, 0, 0), "Bronze"),
    ],
)
def test_year_to_date_restarts_at_local_new_year(tiers, store, as_of, expected):
    silver_only(tiers, Need("net_spend", 1000, window="year_to_date"))
    member = make_member(store, "Y")
    record(member, store, "purchase", local(2024, 12, 31, 10), "1000")

    assert tier_as_of(member, as_of) == expected


# Review moments: nothing happens one second early


def publish_reviewed_gold(tiers, validity: str, months: int | None = None) -> None:
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = validity
    gold.validity_months = months
    publish_spec(spec)


def gold_member(store, reached: dt.datetime, external_id="G"):
    """Reach Gold at ``reached`` with six orders of ¥1,000 in the days before."""
    member = make_member(store, external_id)
    for day in range(1, 7):
        record(member, store, "purchase", reached - dt.timedelta(days=day), "1000")
    evaluate([member.pk], as_of=reached)
    assert stored(member)[0] == "Gold"
    return member


def test_calendar_year_review_at_local_new_year(tiers, store):
    publish_reviewed_gold(tiers, Validity.CALENDAR_YEAR)
    member = gold_member(store, local(2024, 6, 30, 12))
    record(member, store, "refund", local(2024, 9, 1), "-5500")

    evaluate(as_of=local(2024, 12, 31, 23, 59, 59))
    assert stored(member) == ("Gold", local(2025, 1, 1))

    evaluate(as_of=local(2025, 1, 1, 0, 0, 0))
    assert stored(member) == ("Bronze", None)


def test_months_review_at_local_midnight(tiers, store):
    publish_reviewed_gold(tiers, Validity.MONTHS, 12)
    member = gold_member(store, local(2024, 1, 31, 0, 0, 0))
    assert stored(member) == ("Gold", local(2025, 1, 31, 0, 0, 0))

    summary, _ = evaluate(as_of=local(2025, 1, 30, 23, 59, 59))
    assert summary.changed == 0
    assert stored(member) == ("Gold", local(2025, 1, 31, 0, 0, 0))

    evaluate(as_of=local(2025, 1, 31, 0, 0, 0))
    assert stored(member) == ("Bronze", None)


@pytest.mark.parametrize(
    ("refunded_at", "expected"),
    [
        (local(2024, 12, 31, 23, 59, 59), "Bronze"),  # before the review: counts
        (local(2025, 1, 1, 0, 0, 0), "Gold"),  # at the review moment: ignored
    ],
)
def test_late_review_cut_at_review_second(tiers, store, refunded_at, expected):
    publish_reviewed_gold(tiers, Validity.CALENDAR_YEAR)
    member = gold_member(store, local(2024, 12, 20, 12))
    record(member, store, "refund", refunded_at, "-5500")

    evaluate(as_of=local(2025, 1, 3))  # the 1 January review ran late

    assert stored(member)[0] == expected


@pytest.mark.parametrize(
    ("bought_at", "expected"),
    [
        (local(2024, 1, 31, 23, 59, 59), "Silver"),  # five orders: drops
        (local(2024, 2, 1, 0, 0, 0), "Gold"),
    ],
)
def test_late_review_window_start_midnight(tiers, store, bought_at, expected):
    # The review at midnight starting 31 January 2025 judges the 365 days
    # that end just before it, from 1 February 2024 00:00. Five orders are
    # inside and the sixth is at the edge.
    publish_reviewed_gold(tiers, Validity.MONTHS, 12)
    member = gold_member(store, local(2024, 1, 31, 0, 0, 0))
    for day in range(1, 6):
        record(member, store, "purchase", local(2024, 12, day), "1000")
    record(member, store, "purchase", bought_at, "1000")

    evaluate(as_of=local(2025, 2, 5))  # the review ran five days late

    assert stored(member)[0] == expected
