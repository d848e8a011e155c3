"""Overrides and review dates: floors across reviews, fixed holds, and ending.

Gold is reviewed 12 months after it is reached. The member in these tests
reaches Gold at noon on 30 June 2024 with six orders of ¥1,000 from 25 to
30 June, so the review falls at noon on 30 June 2025. By then five of the
orders have left the 365-day window, so the review fails unless something
keeps the tier.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate, explain_member
from tiers.jobs import run_nightly_reviews
from tiers.models import TierChange, TierOverride, Validity
from tiers.overrides import end_expired_overrides, request_override

pytestmark = pytest.mark.django_db

Mode = TierOverride.Mode
Status = TierOverride.Status

REACHED = local(2024, 6, 30, 12)
REVIEW = local(2025, 6, 30, 12)
NEXT_REVIEW = local(2026, 6, 30, 12)


@pytest.fixture
def alice(db) -> User:
    """The staff member who requests overrides."""
    return User.objects.create_superuser("alice", "alice@example.com", "pw-12345-x")


def publish_yearly_gold(tiers, grace_days=0, demote_between_reviews=False):
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.grace_days = grace_days
    gold.demote_between_reviews = demote_between_reviews
    publish_spec(spec)


def gold_member(store, external_id="G"):
    member = make_member(store, external_id)
    for day in range(25, 31):
        record(member, store, "purchase", local(2024, 6, day), "1000")
    evaluate([member.pk], as_of=REACHED)
    member.refresh_from_db()
    assert member.tier.name == "Gold"
    assert member.review_at == REVIEW
    return member


def bronze_member(store, external_id="B"):
    member = make_member(store, external_id)
    evaluate([member.pk], as_of=local(2024, 1, 1))
    member.refresh_from_db()
    return member


def stored(member):
    member.refresh_from_db()
    return member.tier.name, member.review_at, member.grace_until


def request_floor(member, tier, alice, until=None):
    return request_override(
        member,
        tier,
        Mode.FLOOR,
        "Partner employee",
        alice,
        until=until,
        as_of=local(2024, 7, 1),
    )


def request_fixed(member, tier, alice, until, as_of=None):
    return request_override(
        member,
        tier,
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=until,
        as_of=as_of or local(2024, 7, 1),
    )


# A floor at the member's tier passes the reviews it would fail


def test_floor_renews_failed_review(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    request_floor(member, tiers["gold"], alice)

    evaluate([member.pk], as_of=REVIEW + dt.timedelta(minutes=1))

    assert stored(member) == ("Gold", NEXT_REVIEW, None)
    renewal = TierChange.objects.filter(member=member).first()
    assert renewal.reason == TierChange.Reason.RENEWAL
    assert renewal.review_at == NEXT_REVIEW
    assert renewal.explanation["override"]["mode"] == Mode.FLOOR


def test_floor_reviewed_again_next_period(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    request_floor(member, tiers["gold"], alice)
    evaluate([member.pk], as_of=REVIEW + dt.timedelta(minutes=1))

    evaluate([member.pk], as_of=NEXT_REVIEW + dt.timedelta(minutes=1))

    assert stored(member) == ("Gold", local(2027, 6, 30, 12), None)


def test_floor_renewal_counts_from_review_date(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    request_floor(member, tiers["gold"], alice)

    # A review job that runs three days late keeps the member's cycle.
    evaluate([member.pk], as_of=REVIEW + dt.timedelta(days=3))

    assert stored(member) == ("Gold", NEXT_REVIEW, None)


def test_floor_skips_grace_period(tiers, store, alice):
    publish_yearly_gold(tiers, grace_days=30)
    member = gold_member(store)
    request_floor(member, tiers["gold"], alice)

    evaluate([member.pk], as_of=REVIEW + dt.timedelta(minutes=1))

    assert stored(member) == ("Gold", NEXT_REVIEW, None)
    renewal = TierChange.objects.filter(member=member).first()
    assert renewal.reason == TierChange.Reason.RENEWAL


def test_floor_ends_grace_already_started(tiers, store, alice):
    publish_yearly_gold(tiers, grace_days=30)
    member = gold_member(store)
    evaluate([member.pk], as_of=REVIEW + dt.timedelta(minutes=1))
    assert stored(member) == ("Gold", REVIEW, REVIEW + dt.timedelta(days=30))

    request_override(
        member,
        tiers["gold"],
        Mode.FLOOR,
        "Partner employee",
        alice,
        as_of=REVIEW + dt.timedelta(days=1),
    )

    assert stored(member) == ("Gold", NEXT_REVIEW, None)


def test_floor_keeps_review_date_between_reviews(tiers, store, alice):
    publish_yearly_gold(tiers, demote_between_reviews=True)
    member = gold_member(store)
    request_floor(member, tiers["gold"], alice)
    record(member, store, "refund", local(2024, 12, 1), "-1800")

    evaluate([member.pk], as_of=local(2024, 12, 2))

    assert stored(member) == ("Gold", REVIEW, None)


def test_floor_without_review_due_writes_nothing(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    request_floor(member, tiers["gold"], alice)
    changes = TierChange.objects.count()

    evaluate([member.pk], as_of=local(2025, 1, 1))

    assert stored(member) == ("Gold", REVIEW, None)
    assert TierChange.objects.count() == changes


# A fixed override and the review date the member earned


def test_fixed_keeps_later_earned_review(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = gold_member(store)

    request_fixed(member, tiers["gold"], alice, until=local(2024, 9, 1))

    assert stored(member) == ("Gold", REVIEW, None)
    evaluate([member.pk], as_of=local(2024, 9, 2))
    assert stored(member) == ("Gold", REVIEW, None)


def test_fixed_hold_keeps_later_earned_review(tiers, store, alice):
    publish_yearly_gold(tiers, demote_between_reviews=True)
    member = gold_member(store)
    record(member, store, "refund", local(2024, 7, 2), "-1800")

    request_fixed(member, tiers["gold"], alice, until=local(2024, 9, 1))
    evaluate([member.pk], as_of=local(2024, 8, 1))

    assert stored(member) == ("Gold", REVIEW, None)
    evaluate([member.pk], as_of=local(2024, 9, 2))
    assert stored(member)[0] == "Silver"


def test_fixed_hold_reviewed_when_it_ends(tiers, store, alice):
    publish_yearly_gold(tiers, grace_days=30)
    member = bronze_member(store)
    until = local(2024, 9, 1)

    request_fixed(member, tiers["gold"], alice, until=until)

    assert stored(member) == ("Gold", until, None)
    evaluate([member.pk], as_of=local(2024, 9, 2))
    # The review at the end of the hold fails, so the tier's grace period
    # starts from that moment.
    assert stored(member) == ("Gold", until, until + dt.timedelta(days=30))


def test_fixed_hold_past_failed_review(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = gold_member(store)
    until = local(2025, 9, 1)
    request_fixed(member, tiers["gold"], alice, until=until)

    evaluate([member.pk], as_of=REVIEW + dt.timedelta(minutes=1))

    assert stored(member) == ("Gold", until, None)
    evaluate([member.pk], as_of=until + dt.timedelta(minutes=1))
    assert stored(member)[0] == "Bronze"


# Overrides whose end date has passed become ended


def test_evaluation_ends_expired_override(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = bronze_member(store)
    until = local(2024, 9, 1)
    override = request_fixed(member, tiers["silver"], alice, until=until)

    evaluate([member.pk], as_of=local(2024, 9, 2))

    override.refresh_from_db()
    assert override.status == Status.ENDED
    assert override.ended_at == until
    assert override.ended_by is None
    assert override.end_reason == TierOverride.EndReason.EXPIRED
    latest = override.history.order_by("-history_date", "-history_id").first()
    assert latest.status == Status.ENDED
    assert latest.history_change_reason == "expired"
    assert latest.history_user is None
    assert stored(member)[0] == "Bronze"


def test_explaining_ends_expired_override(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = bronze_member(store)
    override = request_floor(member, tiers["silver"], alice, until=local(2024, 9, 1))

    explain_member(member, as_of=local(2024, 9, 2))

    override.refresh_from_db()
    assert override.status == Status.ENDED


def test_future_moment_ends_nothing_early(tiers, store, alice):
    publish_yearly_gold(tiers)
    member = bronze_member(store)
    now = timezone.now()
    override = request_override(
        member,
        tiers["silver"],
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=now + dt.timedelta(days=30),
        as_of=now,
    )

    explain_member(member, as_of=now + dt.timedelta(days=60))
    ended = end_expired_overrides(now + dt.timedelta(days=60))

    assert ended == 0
    override.refresh_from_db()
    assert override.status == Status.ACTIVE


def test_nightly_reviews_end_expired_overrides(tiers, store, alice):
    publish_yearly_gold(tiers)
    members = [bronze_member(store, f"N{index}") for index in range(3)]
    for member in members:
        request_fixed(member, tiers["silver"], alice, until=local(2024, 9, 1))

    with CaptureQueriesContext(connection) as queries:
        run_nightly_reviews(local(2024, 9, 2))

    statuses = TierOverride.objects.values_list("status", flat=True)
    assert list(statuses) == [Status.ENDED] * 3
    updates = [
        query["sql"]
        for query in queries
        if query["sql"].startswith("UPDATE") and '"tiers_tieroverride"' in query["sql"]
    ]
    assert len(updates) == 1
    assert [stored(member)[0] for member in members] == ["Bronze"] * 3


def test_ending_costs_fixed_queries(tiers, store, alice):
    publish_yearly_gold(tiers)
    first = bronze_member(store, "E0")
    request_fixed(first, tiers["silver"], alice, until=local(2024, 9, 1))
    with CaptureQueriesContext(connection) as one:
        assert end_expired_overrides(local(2024, 9, 2)) == 1
    for index in range(1, 5):
        member = bronze_member(store, f"E{index}")
        request_fixed(member, tiers["silver"], alice, until=local(2024, 9, 1))

    with CaptureQueriesContext(connection) as four:
        assert end_expired_overrides(local(2024, 9, 2)) == 4

    # The locking SELECT, the UPDATE and the INSERT of history rows, each
    # inside a savepoint of the test's transaction.
    assert len(one.captured_queries) == len(four.captured_queries)
    assert end_expired_overrides(local(2024, 9, 2)) == 0
