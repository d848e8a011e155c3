"""One-step drops move a member one tier per review, however often jobs run.

Platinum is reviewed 12 months after it is reached and drops one step. The
member reaches Platinum at noon on 31 January 2024 with ¥60,000 of lifetime
spend and is refunded ¥59,000 the next day, so from then on the rules give
Bronze, and every review fails.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate
from tiers.models import Downgrade, TierChange, Validity

pytestmark = pytest.mark.django_db

REACHED = local(2024, 1, 31, 12)
REVIEW = local(2025, 1, 31, 12)
NEXT_REVIEW = local(2026, 1, 31, 12)


def publish_one_step_platinum(tiers, **gold_rule):
    """Publish Platinum reviewed yearly, dropping one step, and Gold with
    ``gold_rule`` (continuous and dropping one step unless given)."""
    spec = standard_spec(tiers)
    platinum = spec.tiers[3]
    platinum.validity = Validity.MONTHS
    platinum.validity_months = 12
    platinum.downgrade = Downgrade.ONE_STEP
    gold = spec.tiers[2]
    gold.downgrade = Downgrade.ONE_STEP
    for name, value in gold_rule.items():
        setattr(gold, name, value)
    publish_spec(spec)


def refunded_platinum(store, external_id="P"):
    member = make_member(store, external_id)
    record(member, store, "purchase", local(2024, 1, 10), "60000")
    evaluate([member.pk], as_of=REACHED)
    record(member, store, "refund", local(2024, 2, 1), "-59000")
    member.refresh_from_db()
    assert member.tier.name == "Platinum"
    assert member.review_at == REVIEW
    return member


def stored(member):
    member.refresh_from_db()
    return member.tier.name, member.review_at


def demotions(member) -> list[tuple[str, str]]:
    rows = TierChange.objects.filter(
        member=member, reason=TierChange.Reason.DEMOTION
    ).select_related("from_tier", "to_tier")
    return [(row.from_tier.name, row.to_tier.name) for row in reversed(rows)]


def test_same_night_rerun_keeps_target(tiers, store):
    publish_one_step_platinum(tiers)
    member = refunded_platinum(store)

    evaluate(as_of=REVIEW)
    evaluate(as_of=REVIEW + dt.timedelta(hours=1))

    # Gold has no reviews, so it is held until Platinum's next review date.
    assert stored(member) == ("Gold", NEXT_REVIEW)
    assert demotions(member) == [("Platinum", "Gold")]


def test_next_day_run_keeps_drop_target(tiers, store):
    publish_one_step_platinum(tiers)
    member = refunded_platinum(store)
    evaluate(as_of=REVIEW)

    summary, _ = evaluate(as_of=REVIEW + dt.timedelta(days=1))

    assert summary.changed == 0
    assert stored(member) == ("Gold", NEXT_REVIEW)


def test_next_review_drops_one_more_step(tiers, store):
    publish_one_step_platinum(tiers)
    member = refunded_platinum(store)
    evaluate(as_of=REVIEW)
    evaluate(as_of=NEXT_REVIEW - dt.timedelta(seconds=1))
    assert stored(member)[0] == "Gold"

    evaluate(as_of=NEXT_REVIEW)
    evaluate(as_of=NEXT_REVIEW + dt.timedelta(days=1))

    # The chain keeps Platinum's cycle through Gold, which has no reviews.
    assert stored(member) == ("Silver", local(2027, 1, 31, 12))
    assert demotions(member) == [("Platinum", "Gold"), ("Gold", "Silver")]


def test_held_target_renews_when_met(tiers, store):
    publish_one_step_platinum(tiers)
    member = refunded_platinum(store)
    evaluate(as_of=REVIEW)
    for day in range(1, 7):
        record(member, store, "purchase", local(2025, 12, day), "1000")

    summary, _ = evaluate(as_of=NEXT_REVIEW)

    assert summary.renewed == 1
    assert stored(member) == ("Gold", None)  # Gold is continuous from now on


def test_between_reviews_target_held(tiers, store):
    publish_one_step_platinum(
        tiers,
        validity=Validity.MONTHS,
        validity_months=12,
        demote_between_reviews=True,
    )
    member = refunded_platinum(store)

    evaluate(as_of=REVIEW)
    evaluate(as_of=REVIEW + dt.timedelta(hours=1))

    # Gold is held until its own first review, 12 months after the drop.
    assert stored(member) == ("Gold", NEXT_REVIEW)
    assert demotions(member) == [("Platinum", "Gold")]

    evaluate(as_of=NEXT_REVIEW)

    # Silver has no reviews, so it is held until Gold's next review date.
    assert stored(member) == ("Silver", local(2027, 1, 31, 12))


def test_held_target_can_be_promoted(tiers, store):
    publish_one_step_platinum(tiers)
    member = refunded_platinum(store)
    evaluate(as_of=REVIEW)
    record(member, store, "purchase", local(2025, 3, 1), "49000")

    summary, _ = evaluate(as_of=local(2025, 3, 2))

    assert summary.promoted == 1
    assert stored(member) == ("Platinum", local(2026, 3, 2))


def test_promoted_member_drops_between_reviews(tiers, store):
    publish_one_step_platinum(
        tiers,
        validity=Validity.MONTHS,
        validity_months=12,
        demote_between_reviews=True,
        downgrade=Downgrade.TO_QUALIFIED,
    )
    member = make_member(store, "G")
    for day in range(1, 7):
        record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate([member.pk], as_of=REACHED)
    record(member, store, "refund", local(2024, 3, 1), "-5500")

    evaluate(as_of=local(2024, 3, 2))

    # Gold drops between reviews when no one-step drop placed the member.
    assert stored(member) == ("Bronze", None)


def test_stale_review_date_not_held(tiers, store):
    spec = standard_spec(tiers)
    spec.tiers[2].validity = Validity.MONTHS
    spec.tiers[2].validity_months = 12
    publish_spec(spec)
    member = make_member(store, "S")
    for day in range(1, 7):
        record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate([member.pk], as_of=REACHED)
    publish_spec(standard_spec(tiers))  # Gold without reviews again
    record(member, store, "refund", local(2024, 3, 1), "-5500")

    evaluate(as_of=local(2024, 3, 2))

    assert stored(member)[0] == "Bronze"
