"""Reviews judge the period that ends at the review moment, and a drop lands
where a second run of the same job would leave the member.

Calendar-year Gold here needs ¥5,000 of spend in the calendar year to date
and is reviewed at 1 January 00:00 in the program's time zone.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate
from tiers.jobs import run_nightly_reviews
from tiers.models import Downgrade, TierChange, TierOverride, Validity, Window
from tiers.overrides import request_override
from tiers.rules import Need, all_of

pytestmark = pytest.mark.django_db

NEW_YEAR = local(2025, 1, 1)


def publish_year_to_date_gold(tiers, downgrade=Downgrade.TO_QUALIFIED):
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.entry = all_of(Need("net_spend", 5000, window=Window.YEAR_TO_DATE))
    gold.validity = Validity.CALENDAR_YEAR
    gold.downgrade = downgrade
    publish_spec(spec)


def gold_in_june(store, external_id="Y"):
    member = make_member(store, external_id)
    record(member, store, "purchase", local(2024, 6, 1), "6000")
    evaluate([member.pk], as_of=local(2024, 6, 30))
    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == NEW_YEAR
    return member


def stored(member):
    member.refresh_from_db()
    return member.tier.name, member.review_at, member.grace_until, member.tier_since


def history(member, since):
    return list(TierChange.objects.filter(member=member, as_of__gte=since))


@pytest.mark.parametrize(
    "as_of", [NEW_YEAR, local(2025, 1, 1, 3), local(2025, 1, 2)], ids=str
)
def test_year_end_review_keeps_qualified(tiers, store, as_of):
    publish_year_to_date_gold(tiers)
    member = gold_in_june(store)

    run_nightly_reviews(as_of=as_of)

    assert stored(member)[:3] == ("Gold", local(2026, 1, 1), None)
    (renewal,) = history(member, NEW_YEAR)
    assert renewal.reason == TierChange.Reason.RENEWAL
    assert renewal.explanation["review"]["kept"] is True


def test_year_end_review_drops_short_member(tiers, store):
    publish_year_to_date_gold(tiers)
    member = gold_in_june(store)
    record(member, store, "refund", local(2024, 9, 1), "-2000")

    run_nightly_reviews(as_of=NEW_YEAR)

    # ¥4,000 in the last 365 days still meets Silver's entry rules.
    assert stored(member)[:3] == ("Silver", None, None)
    (drop,) = history(member, NEW_YEAR)
    assert drop.reason == TierChange.Reason.DEMOTION


def test_refund_at_review_moment_counts_next_year(tiers, store):
    publish_year_to_date_gold(tiers)
    member = gold_in_june(store)
    record(member, store, "refund", NEW_YEAR, "-2000")

    run_nightly_reviews(as_of=local(2025, 1, 1, 1))

    assert stored(member)[:3] == ("Gold", local(2026, 1, 1), None)


def test_refund_just_before_review_counts(tiers, store):
    publish_year_to_date_gold(tiers)
    member = gold_in_june(store)
    record(member, store, "refund", NEW_YEAR - dt.timedelta(microseconds=1), "-2000")

    run_nightly_reviews(as_of=local(2025, 1, 1, 1))

    assert stored(member)[0] == "Silver"


# A drop lands on the tier the entry rules give as of the run.

REVIEW = local(2025, 1, 31, 12)
LATE = local(2025, 2, 10)


def publish_yearly_gold(tiers, downgrade):
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.downgrade = downgrade
    publish_spec(spec)


def gold_at_end_of_january(store):
    """Six orders of ¥1,000 in January 2024, which leave the 365-day window
    before the review at noon on 31 January 2025."""
    member = make_member(store, "G")
    for day in range(26, 32):
        record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 31, 12))
    member.refresh_from_db()
    assert member.review_at == REVIEW
    return member


@pytest.mark.parametrize(
    ("mode", "review_at"),
    [
        # A one-step drop keeps Silver until Gold's next review date.
        (Downgrade.ONE_STEP, local(2026, 1, 31, 12)),
        (Downgrade.TO_QUALIFIED, None),
        (Downgrade.TO_BASE, None),
    ],
)
@pytest.mark.parametrize("job", ["evaluate", "nightly"])
def test_second_run_after_drop_writes_nothing(tiers, store, mode, review_at, job):
    publish_yearly_gold(tiers, mode)
    member = gold_at_end_of_january(store)
    # After the review date: enough for Silver's entry rules, not for Gold.
    record(member, store, "purchase", local(2025, 2, 1), "1500")

    def run():
        if job == "nightly":
            run_nightly_reviews(as_of=LATE)
        else:
            evaluate(as_of=LATE)

    run()
    first = stored(member)
    run()

    assert first == ("Silver", review_at, None, LATE)
    assert stored(member) == first
    (drop,) = history(member, REVIEW)
    assert drop.reason == TierChange.Reason.DEMOTION
    assert drop.from_tier.name == "Gold"
    assert drop.to_tier.name == "Silver"


@pytest.mark.parametrize(
    "mode", [Downgrade.ONE_STEP, Downgrade.TO_QUALIFIED, Downgrade.TO_BASE]
)
def test_regained_entry_keeps_tier(tiers, store, mode):
    publish_yearly_gold(tiers, mode)
    member = gold_at_end_of_january(store)
    for day in range(1, 7):
        record(member, store, "purchase", local(2025, 2, day), "1000")

    run_nightly_reviews(as_of=LATE)
    first = stored(member)
    run_nightly_reviews(as_of=LATE)

    # The review on 31 January fails, but the entry rules of Gold hold
    # again at the run, so a new period starts then.
    assert first[:3] == ("Gold", local(2026, 2, 10), None)
    assert stored(member) == first
    (renewal,) = history(member, REVIEW)
    assert renewal.reason == TierChange.Reason.RENEWAL
    assert renewal.explanation["review"]["kept"] is False


def test_expired_fixed_override_drops_once(tiers, store):
    publish_yearly_gold(tiers, Downgrade.TO_BASE)
    member = make_member(store, "F")
    record(member, store, "purchase", local(2024, 6, 1), "1500")
    evaluate([member.pk], as_of=local(2024, 6, 1, 12))
    override = request_override(
        member,
        tiers["gold"],
        TierOverride.Mode.FIXED,
        "Campaign winner",
        None,
        until=local(2024, 9, 1),
        as_of=local(2024, 7, 1),
    )
    override.refresh_from_db()
    assert override.status == TierOverride.Status.ACTIVE
    assert stored(member)[0] == "Gold"

    run_nightly_reviews(as_of=local(2024, 9, 2))
    first = stored(member)
    run_nightly_reviews(as_of=local(2024, 9, 2))

    assert first[:3] == ("Silver", None, None)
    assert stored(member) == first
    (drop,) = history(member, local(2024, 9, 1))
    assert drop.reason == TierChange.Reason.DEMOTION
    assert drop.to_tier.name == "Silver"
