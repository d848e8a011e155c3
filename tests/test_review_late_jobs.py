"""Review jobs that run after the review date judge it on that date's metrics.

Gold is reviewed 12 months after it is reached. The member in these tests
reaches Gold at noon on 31 January 2024 with six orders of ¥1,000 from 26 to
31 January, so the review falls at noon on 31 January 2025. By then those
orders have left the 365-day window, so the review fails unless the member
buys again.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import translation

from members.admin import render_explanation
from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate, explain_member
from tiers.models import TierChange, Validity

pytestmark = pytest.mark.django_db

REVIEW = local(2025, 1, 31, 12)
LATE = local(2025, 2, 10)


def publish_yearly_gold(tiers, grace_days=0):
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.grace_days = grace_days
    publish_spec(spec)


def gold_member(store, external_id="G"):
    member = make_member(store, external_id)
    for day in range(26, 32):
        record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 31, 12))
    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == REVIEW
    return member


def buy_six(member, store, year, month, first_day):
    for day in range(first_day, first_day + 6):
        record(member, store, "purchase", local(year, month, day), "1000")


def moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def stored(member):
    member.refresh_from_db()
    return member.tier.name, member.review_at, member.grace_until


def test_late_review_ignores_later_purchases(tiers, store):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    # After the review date: enough for Silver's entry rules, not for Gold.
    record(member, store, "purchase", local(2025, 2, 1), "1000")

    evaluate(as_of=LATE)

    assert stored(member) == ("Silver", None, None)
    drop = TierChange.objects.filter(member=member).first()
    assert drop.reason == TierChange.Reason.DEMOTION
    assert drop.as_of == LATE
    assert moment(drop.explanation["review"]["as_of"]) == REVIEW
    assert drop.explanation["review"]["kept"] is False


def test_admin_shows_review_date_check(tiers, store):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    evaluate(as_of=LATE)
    drop = TierChange.objects.filter(member=member).first()

    with translation.override("en"):
        html = render_explanation(drop.explanation)

    assert "Gold (retention on the review date 2025-01-31)" in html


def test_late_review_ignores_later_refund(tiers, store):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    buy_six(member, store, 2024, 12, 1)
    record(member, store, "refund", local(2025, 2, 3), "-4000")

    summary, _ = evaluate(as_of=LATE)

    assert summary.renewed == 1
    assert stored(member) == ("Gold", local(2026, 1, 31, 12), None)
    renewal = TierChange.objects.filter(member=member).first()
    assert renewal.reason == TierChange.Reason.RENEWAL
    assert renewal.explanation["review"]["kept"] is True


def test_review_ignores_activity_at_review_moment(tiers, store):
    # The review judges the period that ends just before the review moment,
    # so a refund at that moment belongs to the next period.
    publish_yearly_gold(tiers)
    member = gold_member(store)
    buy_six(member, store, 2024, 12, 1)
    record(member, store, "refund", REVIEW, "-4000")

    evaluate(as_of=LATE)

    assert stored(member)[0] == "Gold"


def test_review_counts_activity_just_before_review(tiers, store):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    buy_six(member, store, 2024, 12, 1)
    record(member, store, "refund", REVIEW - dt.timedelta(seconds=1), "-4000")

    evaluate(as_of=LATE)

    assert stored(member)[0] == "Silver"


def test_missed_reviews_judged_in_turn(tiers, store):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    buy_six(member, store, 2024, 12, 1)  # keeps Gold at the 2025 review only
    # After the 2026 review date: enough for Silver's entry rules only.
    record(member, store, "purchase", local(2026, 2, 1), "1000")

    evaluate(as_of=local(2026, 3, 1))

    assert stored(member) == ("Silver", None, None)
    drop = TierChange.objects.filter(member=member).first()
    assert moment(drop.explanation["review"]["as_of"]) == local(2026, 1, 31, 12)


def test_late_failure_grace_from_review(tiers, store):
    publish_yearly_gold(tiers, grace_days=30)
    member = gold_member(store)
    record(member, store, "purchase", local(2025, 2, 1), "1000")

    summary, _ = evaluate(as_of=LATE)

    assert summary.in_grace == 1
    assert stored(member) == ("Gold", REVIEW, REVIEW + dt.timedelta(days=30))


def test_late_review_catch_up_in_grace_renews(tiers, store):
    publish_yearly_gold(tiers, grace_days=30)
    member = gold_member(store)
    buy_six(member, store, 2025, 2, 1)  # within the grace period

    summary, _ = evaluate(as_of=LATE)

    assert summary.renewed == 1
    assert stored(member) == ("Gold", local(2026, 1, 31, 12), None)


def test_grace_catch_up_uses_current_metrics(tiers, store):
    publish_yearly_gold(tiers, grace_days=30)
    member = gold_member(store)
    evaluate(as_of=REVIEW)
    assert stored(member) == ("Gold", REVIEW, REVIEW + dt.timedelta(days=30))
    buy_six(member, store, 2025, 2, 1)

    evaluate(as_of=LATE)

    assert stored(member) == ("Gold", local(2026, 1, 31, 12), None)


def test_explain_due_review_uses_review_metrics(tiers, store):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    record(member, store, "purchase", local(2025, 2, 1), "1000")

    evaluation = explain_member(member, as_of=LATE)

    assert evaluation.tier.name == "Silver"
    review = evaluation.explanation["review"]
    assert review["retention"]["reached"] is False
    spend = review["retention"]["requirements"][0]
    assert spend["value"] == "0"
    assert moment(spend["end"]) == REVIEW - dt.timedelta(microseconds=1)


def late_job_queries(store, per_moment: int) -> int:
    """Place members in Gold at two moments on 31 January 2024 and one on
    1 February, then count the queries of a dry run after their reviews."""
    moments = [
        local(2024, 1, 31, 9),
        local(2024, 1, 31, 18),
        local(2024, 2, 1, 9),
    ]
    for moment_index, moment in enumerate(moments):
        members = []
        for number in range(per_moment):
            member = make_member(store, f"Q{per_moment}-{moment_index}-{number}")
            for day in range(1, 7):
                record(
                    member, store, "purchase", moment - dt.timedelta(days=day), "1000"
                )
            members.append(member.pk)
        evaluate(members, as_of=moment)
    with CaptureQueriesContext(connection) as captured:
        summary, _ = evaluate(as_of=local(2025, 2, 10), commit=False)
    assert summary.demoted == summary.evaluated
    return len(captured)


def test_late_job_queries_per_review_day(tiers, store):
    publish_yearly_gold(tiers)
    # version in effect, groups, requirements, tier rules, kinds, weights,
    # members chunk, ledger aggregate, overrides in force, one aggregate per
    # local review day (31 January, 1 February), empty next chunk
    few = late_job_queries(store, 1)
    TierChange.objects.all().delete()
    many = late_job_queries(store, 4)

    assert few == many == 12
