"""Merging two members and reverting the merge.

Personas: Tom is the member staff keep, with an id at the Xuhui store.
Sam is the same person with an id at Tmall, merged into Tom. Both are
placed by the standard rules: Silver needs ¥1,000 of net spend in 365
days, Gold ¥5,000 and 6 orders (see conftest.standard_spec).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.utils import timezone, translation

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, BenefitPool, Grant, TierBenefit, TierPeriod
from benefits.redemption import RedemptionRejected, redeem
from members.identity import suspected_duplicates
from members.merging import (
    ACTIVITIES,
    GRANTS,
    IDENTITIES,
    OUTBOX,
    OVERRIDES,
    PERIODS,
    TIER_CHANGES,
    WARNINGS,
    MergeError,
    merge_members,
    plan_merge,
    revert_merge,
)
from members.models import (
    Activity,
    AuditEvent,
    Channel,
    ChannelIdentity,
    Member,
    MemberMerge,
    OutboxMessage,
)
from tests.conftest import make_member, record
from tests.test_benefits_support import run_at_once
from tiers.evaluation import evaluate
from tiers.models import ReviewWarning, TierChange, TierOverride

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")
NAMES = ("Tom Chen", "Sam Chen")


@pytest.fixture(autouse=True)
def _english_messages():
    """Check the English messages, whatever language an earlier test left on."""
    with translation.override("en"):
        yield


@pytest.fixture
def tmall(db) -> Channel:
    return Channel.objects.create(code="tmall", name="Tmall", kind="ecommerce")


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)


def days_ago(days: int) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)


def placed(channel: Channel, external_id: str, name: str, *spends: str) -> Member:
    """A member of ``channel`` with one purchase per amount, evaluated now."""
    member = make_member(channel, external_id, name=name)
    for offset, amount in enumerate(spends):
        record(member, channel, "purchase", days_ago(30 + offset), amount)
    evaluate([member.pk])
    member.refresh_from_db()
    return member


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Return every row of every table, except the merge and audit records.

    Member.updated_at is left out: a merge and its revert both change it.
    """
    tables: dict[str, list[dict[str, Any]]] = {}
    for model in apps.get_models():
        if model in (MemberMerge, AuditEvent):
            continue
        rows = list(model._default_manager.order_by("pk").values())
        if model is Member:
            for row in rows:
                row.pop("updated_at")
        tables[model._meta.label_lower] = rows
    return tables


def add_silver_benefits(ladder) -> dict[str, Benefit]:
    coupon = Benefit.objects.create(name="Silver coupon", kind=Benefit.Kind.COUPON)
    shipping = Benefit.objects.create(name="Free shipping", kind=Benefit.Kind.SERVICE)
    TierBenefit.objects.create(
        tier=ladder["silver"], benefit=coupon, mode=TierBenefit.Mode.WELCOME
    )
    TierBenefit.objects.create(
        tier=ladder["silver"], benefit=shipping, mode=TierBenefit.Mode.ONGOING
    )
    return {"coupon": coupon, "shipping": shipping}


def grant(member: Member, benefit: Benefit, period: TierPeriod, **fields) -> Grant:
    values = {
        "origin": Grant.Origin.WELCOME,
        "status": Grant.Status.ISSUED,
        "code": f"CODE-{Grant.objects.count() + 1:04d}",
        "created_at": period.starts_at,
        "issued_at": period.starts_at,
        **fields,
    }
    return Grant.objects.create(
        member=member, benefit=benefit, tier=period.tier, period=period, **values
    )


def override(member: Member, tier, status: str, requested_by: User) -> TierOverride:
    return TierOverride.objects.create(
        member=member,
        tier=tier,
        mode=TierOverride.Mode.FLOOR,
        reason="loyal customer",
        requested_by=requested_by,
        requested_at=days_ago(5),
        status=status,
    )


def warning(member: Member, tier, review_at: dt.datetime) -> ReviewWarning:
    return ReviewWarning.objects.create(
        member=member, tier=tier, review_at=review_at, as_of=days_ago(1), shortfall={}
    )


@pytest.fixture
def pair(ladder, store, tmall, staff) -> dict[str, Any]:
    """Tom and Sam, both Silver, with every kind of row a merge moves.

    Sam has rows that clash with Tom's: the same Silver benefits in an
    overlapping period, an active override while Tom has one, and a
    review warning for Tom's review date.
    """
    add_silver_benefits(ladder)
    tom = placed(store, "C-1", NAMES[0], "1500")
    sam = placed(tmall, "T-9", NAMES[1], "1200")
    Member.objects.filter(pk=tom.pk).update(
        phone="13800138000", phone_e164="+8613800138000", joined_on=dt.date(2023, 5, 1)
    )
    Member.objects.filter(pk=sam.pk).update(
        phone="138 0013 8000",
        phone_e164="+8613800138000",
        email="sam@example.com",
        joined_on=dt.date(2022, 1, 1),
    )
    issue_for_tier_changes()

    sam_silver = TierPeriod.objects.get(member=sam, tier=ladder["silver"])
    birthday = Benefit.objects.create(name="Birthday cake", kind=Benefit.Kind.GIFT)
    cake = grant(sam, birthday, sam_silver)
    tea = Benefit.objects.create(name="Tea set", kind=Benefit.Kind.GIFT)
    pool = BenefitPool.objects.create(tier=ladder["silver"], name="Pick one")
    pool.options.add(tea)
    choice = grant(
        sam,
        tea,
        sam_silver,
        origin=Grant.Origin.POOL,
        pool=pool,
        pool_slot=1,
    )
    # A Gold period of Sam's from 2023, which overlaps nothing of Tom's.
    old_gold = TierPeriod.objects.create(
        member=sam,
        tier=ladder["gold"],
        starts_at=dt.datetime(2023, 1, 1, tzinfo=dt.UTC),
        ends_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )
    old_gift = grant(sam, birthday, old_gold, status=Grant.Status.EXPIRED)

    override(tom, ladder["silver"], TierOverride.Status.ACTIVE, staff)
    sam_active = override(sam, ladder["silver"], TierOverride.Status.ACTIVE, staff)
    sam_pending = override(sam, ladder["gold"], TierOverride.Status.PENDING, staff)
    review_day = timezone.now() + dt.timedelta(days=40)
    warning(tom, ladder["silver"], review_day)
    same_day = warning(sam, ladder["silver"], review_day)
    other_day = warning(sam, ladder["silver"], review_day + dt.timedelta(days=1))
    tom.refresh_from_db()
    sam.refresh_from_db()
    return {
        "tom": tom,
        "sam": sam,
        "cake": cake,
        "choice": choice,
        "old_gold": old_gold,
        "old_gift": old_gift,
        "sam_silver": sam_silver,
        "sam_active": sam_active,
        "sam_pending": sam_pending,
        "same_day": same_day,
        "other_day": other_day,
    }


# Merge and revert


def test_revert_restores_every_row(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    before = snapshot()

    merge = merge_members(sam, tom, user=staff, reason="same phone, same person")
    assert snapshot() != before
    revert_merge(merge, user=staff)

    after = snapshot()
    for table in before:
        assert after[table] == before[table], table
    merge.refresh_from_db()
    assert merge.status == MemberMerge.Status.REVERTED
    assert merge.reverted_by == staff
    assert merge.reverted_at is not None


def test_merge_moves_rows_to_kept_member(pair, staff, ladder):
    tom, sam = pair["tom"], pair["sam"]
    sam_rows = {
        ACTIVITIES: set(
            Activity.objects.filter(member=sam).values_list("pk", flat=True)
        ),
        IDENTITIES: set(sam.identities.values_list("pk", flat=True)),
        TIER_CHANGES: set(sam.tier_changes.values_list("pk", flat=True)),
        OUTBOX: set(sam.outbox_messages.values_list("pk", flat=True)),
    }
    assert all(sam_rows.values())

    merge = merge_members(sam, tom, user=staff, reason="same phone, same person")

    for label, ids in sam_rows.items():
        assert set(merge.moved[label]) == ids, label
    assert Activity.objects.filter(member=sam).count() == 0
    assert set(tom.identities.values_list("external_id", flat=True)) == {"C-1", "T-9"}
    assert OutboxMessage.objects.filter(member=sam).count() == 0
    assert TierChange.objects.filter(member=sam).count() == 0
    assert merge.moved[OVERRIDES] == [pair["sam_pending"].pk]
    assert merge.moved[WARNINGS] == [pair["other_day"].pk]
    assert merge.moved[PERIODS] == [pair["old_gold"].pk]
    assert merge.merged_by == staff
    assert merge.reason == "same phone, same person"


def test_merge_retires_source(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    source_tier = {
        "tier_id": sam.tier_id,
        "tier_since": sam.tier_since.isoformat(),
        "review_at": None,
        "grace_until": None,
    }

    merge = merge_members(sam, tom, user=staff, reason="same person")

    sam.refresh_from_db()
    assert sam.merged_into == tom
    assert sam.tier is None
    assert sam.tier_since is None
    assert merge.moved["source_tier"] == source_tier
    # Sam keeps its own profile, so the revert has nothing to restore there.
    assert sam.email == "sam@example.com"


def test_merge_fills_empty_profile_fields(pair, staff):
    tom, sam = pair["tom"], pair["sam"]

    merge_members(sam, tom, user=staff, reason="same person")

    tom.refresh_from_db()
    assert tom.email == "sam@example.com"
    assert tom.name == NAMES[0]
    assert tom.phone == "13800138000"
    assert tom.joined_on == dt.date(2022, 1, 1)


def test_clashing_grants_stay_with_source(pair, staff, ladder):
    tom, sam = pair["tom"], pair["sam"]
    tom_silver = TierPeriod.objects.get(member=tom, tier=ladder["silver"])
    sam_issued = set(
        Grant.objects.filter(member=sam, period=pair["sam_silver"])
        .exclude(pk__in=[pair["cake"].pk, pair["choice"].pk])
        .values_list("pk", flat=True)
    )
    assert len(sam_issued) == 2

    merge = merge_members(sam, tom, user=staff, reason="same person")

    assert set(merge.moved["stayed"][GRANTS]) == sam_issued
    assert merge.moved["stayed"][PERIODS] == [pair["sam_silver"].pk]
    assert set(Grant.objects.filter(member=sam).values_list("pk", flat=True)) == (
        sam_issued
    )
    cake = Grant.objects.get(pk=pair["cake"].pk)
    assert cake.member == tom
    assert cake.period == tom_silver
    choice = Grant.objects.get(pk=pair["choice"].pk)
    assert choice.member == tom
    assert choice.period == tom_silver
    old_gift = Grant.objects.get(pk=pair["old_gift"].pk)
    assert old_gift.member == tom
    assert old_gift.period == pair["old_gold"]
    assert TierPeriod.objects.get(pk=pair["old_gold"].pk).member == tom
    assert merge.moved["grant_periods"] == {
        str(pair["cake"].pk): [pair["sam_silver"].pk, tom_silver.pk],
        str(pair["choice"].pk): [pair["sam_silver"].pk, tom_silver.pk],
    }


def stayed_issued(pair) -> list[Grant]:
    """Sam's Silver coupon and free shipping from issuing, which clash with Tom's."""
    return list(
        Grant.objects.filter(member=pair["sam"], period=pair["sam_silver"])
        .exclude(pk__in=[pair["cake"].pk, pair["choice"].pk])
        .order_by("-benefit__name")
    )


def test_merge_ends_stayed_usable_grants(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    stayed = stayed_issued(pair)
    assert [g.status for g in stayed] == [Grant.Status.ISSUED, Grant.Status.ISSUED]

    merge = merge_members(sam, tom, user=staff, reason="same person")

    assert merge.moved["ended_grants"] == {
        str(g.pk): Grant.Status.ISSUED for g in stayed
    }
    for stayed_grant in stayed:
        stayed_grant.refresh_from_db()
        assert stayed_grant.status == Grant.Status.ENDED
        assert stayed_grant.ended_at == merge.merged_at


def test_merge_keeps_finished_stayed_grants(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    coupon, shipping = stayed_issued(pair)
    Grant.objects.filter(pk=coupon.pk).update(
        status=Grant.Status.REDEEMED, redeemed_at=days_ago(1)
    )
    Grant.objects.filter(pk=shipping.pk).update(status=Grant.Status.EXPIRED)

    merge = merge_members(sam, tom, user=staff, reason="same person")

    assert merge.moved["ended_grants"] == {}
    assert Grant.objects.get(pk=coupon.pk).status == Grant.Status.REDEEMED
    assert Grant.objects.get(pk=shipping.pk).status == Grant.Status.EXPIRED


def test_stayed_code_not_redeemable(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    coupon = stayed_issued(pair)[0]
    assert coupon.origin == Grant.Origin.WELCOME

    merge_members(sam, tom, user=staff, reason="same person")

    with pytest.raises(RedemptionRejected) as rejected:
        redeem(code=coupon.code, user=staff)
    assert rejected.value.code == "ended"
    assert coupon.code in str(rejected.value)
    assert Grant.objects.get(pk=coupon.pk).redeemed_at is None


def test_revert_makes_stayed_code_redeemable(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    coupon = stayed_issued(pair)[0]

    merge = merge_members(sam, tom, user=staff, reason="same person")
    revert_merge(merge, user=staff)

    coupon.refresh_from_db()
    assert coupon.status == Grant.Status.ISSUED
    assert coupon.ended_at is None
    assert coupon.member == sam
    redemption = redeem(code=coupon.code, user=staff)
    assert redemption.grant.status == Grant.Status.REDEEMED
    merge.refresh_from_db()
    assert merge.moved["revert"]["ended_grants_not_restored"] == 0


def test_revert_restores_awaiting_statuses(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    coupon, shipping = stayed_issued(pair)
    Grant.objects.filter(pk=coupon.pk).update(
        status=Grant.Status.AWAITING_APPROVAL,
        issued_at=None,
        approval_due_at=timezone.now() + dt.timedelta(days=3),
        stock_taken=True,
    )
    Grant.objects.filter(pk=shipping.pk).update(
        status=Grant.Status.AWAITING_STOCK, issued_at=None
    )

    merge = merge_members(sam, tom, user=staff, reason="same person")
    assert merge.moved["ended_grants"] == {
        str(coupon.pk): Grant.Status.AWAITING_APPROVAL,
        str(shipping.pk): Grant.Status.AWAITING_STOCK,
    }
    assert Grant.objects.get(pk=coupon.pk).status == Grant.Status.ENDED
    revert_merge(merge, user=staff)

    coupon.refresh_from_db()
    shipping.refresh_from_db()
    assert coupon.status == Grant.Status.AWAITING_APPROVAL
    assert coupon.stock_taken is True
    assert shipping.status == Grant.Status.AWAITING_STOCK


def test_revert_keeps_grant_changed_since(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    coupon = stayed_issued(pair)[0]

    merge = merge_members(sam, tom, user=staff, reason="same person")
    Grant.objects.filter(pk=coupon.pk).update(status=Grant.Status.EXPIRED)
    revert_merge(merge, user=staff)

    assert Grant.objects.get(pk=coupon.pk).status == Grant.Status.EXPIRED
    merge.refresh_from_db()
    assert merge.moved["revert"]["ended_grants_not_restored"] == 1


def test_pool_choice_clash_stays(pair, staff, ladder):
    tom, sam = pair["tom"], pair["sam"]
    tom_silver = TierPeriod.objects.get(member=tom, tier=ladder["silver"])
    pool = pair["choice"].pool
    other = Benefit.objects.create(name="Umbrella", kind=Benefit.Kind.GIFT)
    grant(tom, other, tom_silver, origin=Grant.Origin.POOL, pool=pool, pool_slot=1)

    merge = merge_members(sam, tom, user=staff, reason="same person")

    assert pair["choice"].pk in merge.moved["stayed"][GRANTS]
    assert Grant.objects.get(pk=pair["choice"].pk).member == sam


def test_clashing_override_and_warning_stay(pair, staff):
    tom, sam = pair["tom"], pair["sam"]

    merge = merge_members(sam, tom, user=staff, reason="same person")

    assert merge.moved["stayed"][OVERRIDES] == [pair["sam_active"].pk]
    assert merge.moved["stayed"][WARNINGS] == [pair["same_day"].pk]
    assert TierOverride.objects.get(pk=pair["sam_active"].pk).member == sam
    assert ReviewWarning.objects.get(pk=pair["same_day"].pk).member == sam
    assert ReviewWarning.objects.get(pk=pair["other_day"].pk).member == tom


def test_plan_matches_merge(pair, staff):
    tom, sam = pair["tom"], pair["sam"]

    plan = plan_merge(sam, tom)
    merge = merge_members(sam, tom, user=staff, reason="same person")

    for label, ids in plan.moves.items():
        assert merge.moved[label] == ids, label
    assert merge.moved["stayed"] == plan.stayed
    assert plan.profile["email"] == ("", "sam@example.com")
    assert plan.takes_source_tier is False


# Tiers


def test_higher_tier_passes_to_kept_member(ladder, store, tmall, staff):
    tom = placed(store, "C-1", NAMES[0], "1500")
    sam = placed(tmall, "T-9", NAMES[1], *["1000"] * 6)
    assert tom.tier == ladder["silver"]
    assert sam.tier == ladder["gold"]

    merge = merge_members(sam, tom, user=staff, reason="same person")

    tom.refresh_from_db()
    assert tom.tier == ladder["gold"]
    assert tom.tier_since == sam.tier_since
    change = TierChange.objects.get(member=tom, reason=TierChange.Reason.MERGE)
    assert change.from_tier == ladder["silver"]
    assert change.to_tier == ladder["gold"]
    assert change.explanation["merge"] == {"id": merge.pk, "source": sam.pk}
    assert change.explanation["tiers"]
    assert merge.moved["target_took_source_tier"] is True
    assert merge.moved["tiers_evaluated"] is True


def test_revert_gives_tier_back(ladder, store, tmall, staff):
    tom = placed(store, "C-1", NAMES[0], "1500")
    sam = placed(tmall, "T-9", NAMES[1], *["1000"] * 6)
    merge = merge_members(sam, tom, user=staff, reason="same person")

    revert_merge(merge, user=staff)

    tom_after = Member.objects.get(pk=tom.pk)
    sam_after = Member.objects.get(pk=sam.pk)
    assert tom_after.tier == ladder["silver"]
    assert tom_after.tier_since == tom.tier_since
    assert sam_after.tier == ladder["gold"]
    assert sam_after.tier_since == sam.tier_since
    assert sam_after.merged_into is None
    reasons = list(
        TierChange.objects.filter(member=tom)
        .order_by("pk")
        .values_list("reason", "to_tier__name")
    )
    assert reasons == [
        (TierChange.Reason.INITIAL, "Silver"),
        (TierChange.Reason.MERGE, "Gold"),
        (TierChange.Reason.MERGE, "Silver"),
    ]


def test_combined_activity_promotes(ladder, store, tmall, staff):
    tom = placed(store, "C-1", NAMES[0], "600")
    sam = placed(tmall, "T-9", NAMES[1], "600")
    assert tom.tier == ladder["bronze"]

    merge = merge_members(sam, tom, user=staff, reason="same person")

    tom.refresh_from_db()
    assert tom.tier == ladder["silver"]
    assert merge.moved["target"]["after"]["tier_id"] == ladder["silver"].pk
    assert TierChange.objects.filter(
        member=tom, reason=TierChange.Reason.PROMOTION
    ).exists()

    revert_merge(merge, user=staff)

    tom.refresh_from_db()
    sam.refresh_from_db()
    assert tom.tier == ladder["bronze"]
    assert sam.tier == ladder["bronze"]


def test_merge_without_rules_leaves_tier(tiers, store, tmall, staff):
    tom = make_member(store, "C-1", name=NAMES[0])
    sam = make_member(tmall, "T-9", name=NAMES[1])
    record(sam, tmall, "purchase", days_ago(3), "100")

    merge = merge_members(sam, tom, user=staff, reason="same person")

    assert merge.moved["tiers_evaluated"] is False
    assert Activity.objects.filter(member=tom).count() == 1


def test_evaluation_skips_merged_members(ladder, store, tmall, staff):
    tom = placed(store, "C-1", NAMES[0], "1500")
    sam = placed(tmall, "T-9", NAMES[1], "1200")
    merge_members(sam, tom, user=staff, reason="same person")
    # An activity entered for the merged member by hand, after the merge.
    record(sam, tmall, "purchase", days_ago(1), "5000")

    summary, _ = evaluate()
    evaluate([sam.pk])

    sam.refresh_from_db()
    assert sam.tier is None
    assert summary.evaluated == 1
    assert not TierChange.objects.filter(member=sam).exists()


# Revert after later changes


def test_revert_keeps_later_rows_and_edits(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    merge = merge_members(sam, tom, user=staff, reason="same person")
    later = record(tom, Channel.objects.get(code="store-xuhui"), "visit", days_ago(0))
    Member.objects.filter(pk=tom.pk).update(email="tom@example.com")

    revert_merge(merge, user=staff)

    assert Activity.objects.get(pk=later.pk).member == tom
    tom.refresh_from_db()
    assert tom.email == "tom@example.com"
    assert tom.joined_on == dt.date(2023, 5, 1)
    merge.refresh_from_db()
    assert merge.moved["revert"]["edited_since"] == ["email"]
    assert merge.moved["revert"]["not_found"] == {}


def test_revert_reports_deleted_rows(pair, staff):
    tom, sam = pair["tom"], pair["sam"]
    merge = merge_members(sam, tom, user=staff, reason="same person")
    OutboxMessage.objects.filter(pk__in=merge.moved[OUTBOX]).delete()

    revert_merge(merge, user=staff)

    merge.refresh_from_db()
    assert merge.moved["revert"]["not_found"] == {OUTBOX: len(merge.moved[OUTBOX])}
    assert set(
        ChannelIdentity.objects.filter(member=sam).values_list("external_id", flat=True)
    ) == {"T-9"}


# Refusals


def test_merge_into_itself_rejected(pair, staff):
    tom = pair["tom"]

    with pytest.raises(MergeError, match="cannot be merged into itself"):
        merge_members(tom, tom, user=staff, reason="oops")


def test_merge_of_merged_member_rejected(pair, staff, store):
    tom, sam = pair["tom"], pair["sam"]
    third = make_member(store, "C-3", name="Third")
    merge_members(sam, tom, user=staff, reason="same person")

    with pytest.raises(MergeError, match="already merged into member"):
        merge_members(sam, third, user=staff, reason="again")
    with pytest.raises(MergeError, match="nothing can be merged into it"):
        merge_members(third, sam, user=staff, reason="into merged")
    assert MemberMerge.objects.count() == 1


def test_chain_rejected(pair, staff, store):
    tom, sam = pair["tom"], pair["sam"]
    third = make_member(store, "C-3", name="Third")
    merge_members(sam, tom, user=staff, reason="same person")

    with pytest.raises(MergeError, match="would chain merges"):
        merge_members(tom, third, user=staff, reason="chain")
    tom.refresh_from_db()
    assert tom.merged_into is None


def test_blank_reason_rejected(pair, staff):
    with pytest.raises(MergeError, match="reason"):
        merge_members(pair["sam"], pair["tom"], user=staff, reason="   ")
    assert MemberMerge.objects.count() == 0


def test_second_revert_rejected(pair, staff):
    merge = merge_members(pair["sam"], pair["tom"], user=staff, reason="same person")
    revert_merge(merge, user=staff)

    with pytest.raises(MergeError, match="already reverted"):
        revert_merge(merge, user=staff)
    stale = MemberMerge.objects.get(pk=merge.pk)
    stale.status = MemberMerge.Status.MERGED
    with pytest.raises(MergeError, match="already reverted"):
        revert_merge(stale, user=staff)


def test_merged_member_not_listed_as_duplicate(pair, staff):
    _, groups = suspected_duplicates()
    assert [group.value for group in groups] == ["+8613800138000"]

    merge_members(pair["sam"], pair["tom"], user=staff, reason="same person")

    _, groups = suspected_duplicates()
    assert groups == []


# Audit log


def test_log_has_ids_not_names(pair, staff, caplog):
    tom, sam = pair["tom"], pair["sam"]

    with caplog.at_level(logging.INFO, logger="members.merging"):
        merge = merge_members(sam, tom, user=staff, reason="same person")
        revert_merge(merge, user=staff)

    text = caplog.text
    assert f"member merge started source_id={sam.pk} target_id={tom.pk}" in text
    assert f"member merge finished merge_id={merge.pk}" in text
    assert f"member merge reverted merge_id={merge.pk}" in text
    for secret in (*NAMES, "sam@example.com", "13800138000", "same person"):
        assert secret not in text


# Concurrency (PostgreSQL only: SQLite serialises whole transactions)


def _run_parallel(pairs: list[tuple[int, int]], user: User) -> list[str]:
    """Merge each (source, target) pair in its own thread, all at once.

    Returns "merged" or the MergeError message of each merge, sorted.
    """

    def merge_pair(number: int) -> str:
        source_id, target_id = pairs[number]
        merge_members(
            Member.objects.get(pk=source_id),
            Member.objects.get(pk=target_id),
            user=user,
            reason="parallel",
        )
        return "merged"

    results, errors = run_at_once(merge_pair, len(pairs))
    assert all(isinstance(error, MergeError) for error in errors), errors
    return sorted([*results, *(str(error) for error in errors)])


@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs PostgreSQL row locks")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize(
    "order", [((0, 1), (1, 2)), ((1, 2), (0, 1)), ((0, 1), (0, 2))]
)
def test_parallel_merges_never_chain(ladder, store, order):
    user = User.objects.create_user("staff", "staff@example.com", "pw")
    members = [
        placed(store, f"C-{number}", f"Member {number}", "100") for number in range(3)
    ]
    pairs = [(members[a].pk, members[b].pk) for a, b in order]

    results = _run_parallel(pairs, user)

    assert len(results) == 2
    assert results.count("merged") == 1
    assert MemberMerge.objects.count() == 1
    merged = Member.objects.filter(merged_into__isnull=False)
    assert merged.count() == 1
    # The member kept has no merge pointing past it, and nothing points at a
    # merged member.
    assert not Member.objects.filter(merged_into__in=merged).exists()
    assert Activity.objects.filter(member__in=merged).count() == 0
    assert (
        sum(Decimal(a) for a in Activity.objects.values_list("amount", flat=True))
        == 300
    )


@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs PostgreSQL row locks")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_parallel_merges_into_one_member(ladder, store):
    user = User.objects.create_user("staff", "staff@example.com", "pw")
    members = [
        placed(store, f"C-{number}", f"Member {number}", "400") for number in range(3)
    ]
    kept = members[0]

    results = _run_parallel([(members[1].pk, kept.pk), (members[2].pk, kept.pk)], user)

    assert results == ["merged", "merged"]
    kept.refresh_from_db()
    assert kept.tier == ladder["silver"]
    assert Activity.objects.filter(member=kept).count() == 3
