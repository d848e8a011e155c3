"""Issuing tier benefits from tier changes, exactly once per member, benefit and period.

Personas: Alice is evaluated into Silver, Bob into Gold, Carol into Bronze
(the base tier). Dates are in 2024 and 2025, program time (Asia/Shanghai).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction

from benefits.issuing import issue_for_tier_changes, issue_waiting_for_stock
from benefits.models import Benefit, Grant, ProcessedTierChange, TierPeriod
from members.models import Member, OutboxMessage
from tests.conftest import local, make_member, publish_spec
from tests.test_benefits_support import (
    NEEDS_POSTGRESQL,
    ON_POSTGRESQL,
    create_catalogue,
    member_in_gold,
    member_in_silver,
    run_at_once,
    spend,
)
from tiers.evaluation import evaluate
from tiers.models import TierChange, Validity
from tiers.rules import Need, TierSpec, VersionSpec, all_of

Status = Grant.Status


@pytest.fixture
def catalogue(ladder):
    return create_catalogue(ladder)


@pytest.fixture
def sent(monkeypatch) -> list[tuple[int, str, dict, str]]:
    """Record the notifications that issuing queues, in order."""
    calls: list[tuple[int, str, dict, str]] = []

    def record_call(member_id, topic, params, key):
        calls.append((member_id, topic, params, key))

    monkeypatch.setattr("benefits.issuing.notify", record_call)
    return calls


def grants_of(member: Member) -> dict[str, Grant]:
    grants = Grant.objects.filter(member=member).select_related("benefit")
    return {grant.benefit.name: grant for grant in grants}


def evaluate_at(member: Member, when: dt.datetime) -> None:
    evaluate([member.pk], as_of=when)
    member.refresh_from_db()


# Promotion


def test_promotion_issues_welcome_and_ongoing(ladder, store, catalogue, sent):
    when = local(2024, 3, 10)
    alice = member_in_silver(store, "A-1", when, name="Alice")

    counts = issue_for_tier_changes()

    grants = grants_of(alice)
    assert set(grants) == {"Welcome coupon ¥50", "Free shipping"}
    coupon = grants["Welcome coupon ¥50"]
    assert coupon.status == Status.ISSUED
    assert coupon.origin == Grant.Origin.WELCOME
    assert coupon.tier == ladder["silver"]
    assert coupon.issued_at is not None
    assert coupon.expires_at == coupon.issued_at + dt.timedelta(days=30)
    assert len(coupon.code) == 14
    shipping = grants["Free shipping"]
    assert shipping.origin == Grant.Origin.ONGOING
    assert shipping.expires_at is None
    assert coupon.tier_change == TierChange.objects.get(member=alice)
    assert counts["changes"] == 1
    assert counts["grants"] == 2
    assert {call[3] for call in sent} == {
        f"grant-issued:{coupon.pk}",
        f"grant-issued:{shipping.pk}",
    }
    assert sent[0][1] == "benefit_issued"
    assert sent[0][0] == alice.pk


def test_issued_grant_queues_outbox_message(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))

    issue_for_tier_changes()
    issue_for_tier_changes()

    coupon = Grant.objects.get(member=alice, benefit=catalogue["welcome_coupon"])
    messages = OutboxMessage.objects.filter(key=f"grant-issued:{coupon.pk}")
    assert messages.exists()
    assert {message.topic for message in messages} == {"benefit_issued"}
    assert {message.member_id for message in messages} == {alice.pk}


def test_issuing_again_changes_nothing(ladder, store, catalogue, sent):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    before = list(Grant.objects.values_list("pk", "status", "code"))

    counts = issue_for_tier_changes()

    assert counts == {}
    assert list(Grant.objects.values_list("pk", "status", "code")) == before
    assert ProcessedTierChange.objects.filter(change__member=alice).count() == 1
    assert len(sent) == 2


def test_continuous_tier_period_is_calendar_year(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))

    issue_for_tier_changes()

    (period,) = TierPeriod.objects.filter(member=alice)
    assert period.tier == ladder["silver"]
    assert period.starts_at == local(2024, 3, 10)
    assert period.ends_at == local(2025, 1, 1)


def test_initial_above_base_counts_as_reaching(ladder, store, catalogue):
    bob = member_in_gold(store, "B-1", local(2024, 3, 10), name="Bob")

    issue_for_tier_changes()

    change = TierChange.objects.get(member=bob)
    assert change.reason == TierChange.Reason.INITIAL
    grants = grants_of(bob)
    assert set(grants) == {"Gold tote bag", "5% off"}
    assert grants["Gold tote bag"].origin == Grant.Origin.WELCOME


def test_initial_into_base_issues_no_welcome(ladder, store, catalogue):
    bronze_gift = Benefit.objects.create(name="Bronze hello", kind="gift")
    bronze_perk = Benefit.objects.create(name="Bronze newsletter", kind="service")
    bronze_gift.tiers.add(ladder["bronze"], through_defaults={"mode": "welcome"})
    bronze_perk.tiers.add(ladder["bronze"])
    carol = make_member(store, "C-1", name="Carol")
    evaluate_at(carol, local(2024, 3, 10))

    issue_for_tier_changes()

    assert carol.tier == ladder["bronze"]
    assert set(grants_of(carol)) == {"Bronze newsletter"}


def test_tier_without_benefits_gets_no_period(ladder, store, catalogue):
    carol = make_member(store, "C-1", name="Carol")
    evaluate_at(carol, local(2024, 3, 10))

    counts = issue_for_tier_changes()

    assert counts["changes"] == 1
    assert not TierPeriod.objects.filter(member=carol).exists()
    record = ProcessedTierChange.objects.get(change__member=carol)
    assert record.period is None
    assert record.grants_created == 0


# Demotion and the same period


def test_demotion_ends_ongoing_keeps_welcome(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    spend(alice, store, local(2024, 4, 1), "-500")
    evaluate_at(alice, local(2024, 4, 1))
    assert alice.tier == ladder["bronze"]

    issue_for_tier_changes()

    grants = grants_of(alice)
    assert grants["Welcome coupon ¥50"].status == Status.ISSUED
    assert grants["Free shipping"].status == Status.ENDED
    assert grants["Free shipping"].ended_at is not None


@pytest.mark.parametrize("issue_between_changes", [True, False])
def test_up_down_up_in_one_period_issues_once(
    ladder, store, catalogue, sent, issue_between_changes
):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    if issue_between_changes:
        issue_for_tier_changes()
    spend(alice, store, local(2024, 4, 1), "-500")
    evaluate_at(alice, local(2024, 4, 1))
    if issue_between_changes:
        issue_for_tier_changes()
    spend(alice, store, local(2024, 5, 1), "600")
    evaluate_at(alice, local(2024, 5, 1))
    assert alice.tier == ladder["silver"]

    issue_for_tier_changes()

    reasons = list(
        TierChange.objects.filter(member=alice)
        .order_by("pk")
        .values_list("reason", flat=True)
    )
    assert reasons == ["initial", "demotion", "promotion"]
    coupons = Grant.objects.filter(member=alice, benefit=catalogue["welcome_coupon"])
    assert coupons.count() == 1
    shipping = Grant.objects.filter(member=alice, benefit=catalogue["shipping"])
    assert shipping.count() == 1
    # The ongoing grant that ended on the way down is back.
    assert shipping.get().status == Status.ISSUED
    assert shipping.get().ended_at is None
    assert TierPeriod.objects.filter(member=alice).count() == 1
    assert len(sent) == 2


def test_new_period_issues_again(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    spend(alice, store, local(2024, 4, 1), "-500")
    evaluate_at(alice, local(2024, 4, 1))
    issue_for_tier_changes()
    spend(alice, store, local(2025, 2, 1), "900")
    evaluate_at(alice, local(2025, 2, 1))
    assert alice.tier == ladder["silver"]

    issue_for_tier_changes()

    coupons = Grant.objects.filter(
        member=alice, benefit=catalogue["welcome_coupon"]
    ).order_by("period__ends_at")
    assert [grant.period.ends_at for grant in coupons] == [
        local(2025, 1, 1),
        local(2026, 1, 1),
    ]
    shipping = Grant.objects.filter(
        member=alice, benefit=catalogue["shipping"]
    ).order_by("period__ends_at")
    assert [grant.status for grant in shipping] == [Status.ENDED, Status.ISSUED]


def test_promotion_ends_ongoing_of_lower_tier(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    for day in range(11, 16):
        spend(alice, store, local(2024, 3, day), "1000")
    evaluate_at(alice, local(2024, 3, 20))
    assert alice.tier == ladder["gold"]

    issue_for_tier_changes()

    grants = grants_of(alice)
    assert grants["Free shipping"].status == Status.ENDED
    assert grants["Welcome coupon ¥50"].status == Status.ISSUED
    assert grants["Gold tote bag"].status == Status.ISSUED
    assert grants["5% off"].status == Status.ISSUED


# Reviewed tiers


@pytest.fixture
def reviewed_ladder(tiers):
    """Silver is held 6 months and then reviewed. The other tiers are standard."""
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(
                    tiers["silver"],
                    all_of(Need("net_spend", 1000)),
                    validity=Validity.MONTHS,
                    validity_months=6,
                ),
                TierSpec(tiers["gold"], all_of(Need("net_spend", 5000))),
                TierSpec(tiers["platinum"], all_of(Need("net_spend", 50000))),
            ]
        )
    )
    return tiers


def test_reviewed_tier_period_ends_at_review(reviewed_ladder, store):
    create_catalogue(reviewed_ladder)
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))

    issue_for_tier_changes()

    (period,) = TierPeriod.objects.filter(member=alice)
    assert period.ends_at == alice.review_at
    assert period.ends_at == local(2024, 9, 10)


def test_renewal_opens_next_period(reviewed_ladder, store):
    catalogue = create_catalogue(reviewed_ladder)
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    spend(alice, store, local(2024, 9, 1), "1000")
    evaluate_at(alice, local(2024, 9, 11))
    renewal = TierChange.objects.filter(member=alice).order_by("pk").last()
    assert renewal.reason == TierChange.Reason.RENEWAL

    issue_for_tier_changes()

    periods = list(TierPeriod.objects.filter(member=alice).order_by("ends_at"))
    assert [(p.starts_at, p.ends_at) for p in periods] == [
        (local(2024, 3, 10), local(2024, 9, 10)),
        (local(2024, 9, 10), local(2025, 3, 10)),
    ]
    coupons = Grant.objects.filter(member=alice, benefit=catalogue["welcome_coupon"])
    assert coupons.count() == 1
    shipping = list(
        Grant.objects.filter(member=alice, benefit=catalogue["shipping"]).order_by(
            "period__ends_at"
        )
    )
    assert [grant.status for grant in shipping] == [Status.ENDED, Status.ISSUED]
    assert shipping[1].period == periods[1]


# The database constraints


def test_second_grant_in_period_violates_constraint(ladder, store, catalogue):
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    coupon = Grant.objects.get(member=alice, benefit=catalogue["welcome_coupon"])

    with pytest.raises(IntegrityError), transaction.atomic():
        Grant.objects.create(
            member=alice,
            benefit=coupon.benefit,
            tier=coupon.tier,
            period=coupon.period,
            origin=Grant.Origin.WELCOME,
            status=Status.ISSUED,
            code="AAAA-BBBB-CCCC",
            created_at=coupon.created_at,
            issued_at=coupon.issued_at,
        )


def test_stock_below_zero_violates_constraint(ladder, catalogue):
    tote = catalogue["tote"]

    with pytest.raises(IntegrityError), transaction.atomic():
        Benefit.objects.filter(pk=tote.pk).update(stock=-1)


def test_change_handled_twice_violates_constraint(ladder, store, catalogue):
    member_in_silver(store, "A-1", local(2024, 3, 10))
    issue_for_tier_changes()
    record = ProcessedTierChange.objects.get()

    with pytest.raises(IntegrityError), transaction.atomic():
        ProcessedTierChange.objects.create(
            change_id=record.change_id, processed_at=record.processed_at
        )


# Stock


def test_out_of_stock_grants_wait(ladder, store, catalogue, sent):
    Benefit.objects.filter(pk=catalogue["tote"].pk).update(stock=1)
    bob = member_in_gold(store, "B-1", local(2024, 3, 10), name="Bob")
    dan = member_in_gold(store, "D-1", local(2024, 3, 10), name="Dan")

    counts = issue_for_tier_changes()

    totes = Grant.objects.filter(benefit=catalogue["tote"]).order_by("member_id")
    assert [(grant.member_id, grant.status) for grant in totes] == [
        (bob.pk, Status.ISSUED),
        (dan.pk, Status.AWAITING_STOCK),
    ]
    assert totes[1].code
    assert counts[Status.AWAITING_STOCK] == 1
    catalogue["tote"].refresh_from_db()
    assert catalogue["tote"].stock == 0
    waiting_key = f"grant-issued:{totes[1].pk}"
    assert waiting_key not in {call[3] for call in sent}


def test_waiting_grant_issued_when_stock_raised(ladder, store, catalogue, sent):
    Benefit.objects.filter(pk=catalogue["tote"].pk).update(stock=0)
    bob = member_in_gold(store, "B-1", local(2024, 3, 10), name="Bob")
    issue_for_tier_changes()
    assert issue_waiting_for_stock() == {}

    Benefit.objects.filter(pk=catalogue["tote"].pk).update(stock=2)
    counts = issue_waiting_for_stock()

    tote = Grant.objects.get(member=bob, benefit=catalogue["tote"])
    assert counts == {Status.ISSUED: 1}
    assert tote.status == Status.ISSUED
    assert tote.stock_taken
    assert tote.expires_at == tote.issued_at + dt.timedelta(days=90)
    catalogue["tote"].refresh_from_db()
    assert catalogue["tote"].stock == 1
    assert f"grant-issued:{tote.pk}" in {call[3] for call in sent}
    assert issue_waiting_for_stock() == {}


def test_expired_benefit_not_issued(ladder, store, catalogue):
    Benefit.objects.filter(pk=catalogue["welcome_coupon"].pk).update(
        valid_until=local(2020, 1, 1)
    )
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))

    counts = issue_for_tier_changes()

    assert set(grants_of(alice)) == {"Free shipping"}
    assert counts["not_offered"] == 1


def test_approval_benefit_waits_in_queue(ladder, store, catalogue, sent):
    Benefit.objects.filter(pk=catalogue["welcome_coupon"].pk).update(
        approval_required=True, approval_days=2
    )
    alice = member_in_silver(store, "A-1", local(2024, 3, 10))

    issue_for_tier_changes()

    coupon = grants_of(alice)["Welcome coupon ¥50"]
    assert coupon.status == Status.AWAITING_APPROVAL
    assert coupon.issued_at is None
    assert coupon.approval_due_at == coupon.created_at + dt.timedelta(days=2)
    assert f"grant-issued:{coupon.pk}" not in {call[3] for call in sent}


# Concurrency


@pytest.mark.skipif(not ON_POSTGRESQL, reason=NEEDS_POSTGRESQL)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_issuing_issues_one_welcome_gift(ladder, store, catalogue):
    when = local(2024, 3, 10)
    members = [member_in_silver(store, f"A-{n}", when) for n in range(5)]
    assert TierChange.objects.count() == 5

    results, errors = run_at_once(lambda number: issue_for_tier_changes(), 8)

    assert errors == []
    assert sum(result.get("changes", 0) for result in results) == 5
    assert ProcessedTierChange.objects.count() == 5
    for member in members:
        coupons = Grant.objects.filter(
            member=member, benefit=catalogue["welcome_coupon"]
        )
        assert coupons.count() == 1
        assert TierPeriod.objects.filter(member=member).count() == 1


@pytest.mark.skipif(not ON_POSTGRESQL, reason=NEEDS_POSTGRESQL)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_issuing_keeps_stock_exact(ladder, store, catalogue):
    when = local(2024, 3, 10)
    Benefit.objects.filter(pk=catalogue["tote"].pk).update(stock=3)
    for number in range(6):
        member_in_gold(store, f"B-{number}", when)

    results, errors = run_at_once(lambda number: issue_for_tier_changes(), 6)

    assert errors == []
    totes = Grant.objects.filter(benefit=catalogue["tote"])
    assert totes.count() == 6
    assert totes.filter(status=Status.ISSUED).count() == 3
    assert totes.filter(status=Status.AWAITING_STOCK).count() == 3
    catalogue["tote"].refresh_from_db()
    assert catalogue["tote"].stock == 0
