"""Merging two members into one, audited and reversible.

merge_members() moves the source member's rows (activities, channel ids,
tier history, overrides, review warnings, tier periods, benefit grants and
outbox messages) to the target member, and marks the source merged into
the target. The target keeps its own profile and gains the source's values
only where its own are empty, and joined_on becomes the earlier date. The
target takes the source's tier, with its dates, when that tier ranks
higher, which writes a TierChange with reason "merge". The target is then
evaluated on the combined ledger.

Rows that a unique constraint or a tier rule keeps from moving stay with
the source and are listed under "stayed" in MemberMerge.moved:

- A tier period that overlaps a period of the target in the same tier
  stays. Its grants move into the target's period, except a grant of a
  benefit the target already has in that period. A pool choice also stays
  when the target chose from the same pool in that period. A grant that
  stays and could still be redeemed or issued (USABLE_STATUSES) is ended,
  so one person cannot use the same benefit twice in one period. Its
  previous status is recorded under "ended_grants".
- A review warning stays when the target has one for the same review date.
- The source's active override stays when the target has an active one
  too, because a member has at most one active override.

MemberMerge rows are the audit trail: who merged, when, why and what
moved. revert_merge() moves exactly the recorded rows back, gives the
ended grants their previous status, restores the source's tier and the
target fields the merge set (unless they changed since), and evaluates
both members again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.contrib.auth.models import User
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from benefits.models import Grant, TierPeriod
from members.audit import record_events
from members.importing.lookups import chunked
from members.models import (
    Activity,
    AuditAction,
    ChannelIdentity,
    Member,
    MemberMerge,
    OutboxMessage,
)
from tiers.evaluation import evaluate
from tiers.followups import after_tier_changes
from tiers.ladder import LadderError
from tiers.models import ReviewWarning, RuleVersion, Tier, TierChange, TierOverride

logger = logging.getLogger(__name__)


def _label(model: type[models.Model]) -> str:
    return model._meta.label_lower


ACTIVITIES = _label(Activity)
IDENTITIES = _label(ChannelIdentity)
OUTBOX = _label(OutboxMessage)
TIER_CHANGES = _label(TierChange)
OVERRIDES = _label(TierOverride)
WARNINGS = _label(ReviewWarning)
PERIODS = _label(TierPeriod)
GRANTS = _label(Grant)

# Every model whose rows move with their member, in the order they move.
MOVED_MODELS: dict[str, type[models.Model]] = {
    ACTIVITIES: Activity,
    IDENTITIES: ChannelIdentity,
    TIER_CHANGES: TierChange,
    OVERRIDES: TierOverride,
    WARNINGS: ReviewWarning,
    PERIODS: TierPeriod,
    GRANTS: Grant,
    OUTBOX: OutboxMessage,
}

# The reason rows of each model stay with the source, shown by the admin.
STAYED_REASONS = {
    PERIODS: gettext_lazy(
        "Overlaps a period of the kept member in the same tier. Its grants move "
        "into that period."
    ),
    GRANTS: gettext_lazy(
        "The kept member already has this benefit, or a choice from the same "
        "pool, in the same tier period. Grants that were still usable are "
        "ended, so their codes cannot be redeemed."
    ),
    WARNINGS: gettext_lazy(
        "The kept member already has a review warning for the same review date."
    ),
    OVERRIDES: gettext_lazy(
        "Both members have an active override, and the kept member's stays in force."
    ),
}

# The member fields a merge may fill on the target, and the tier fields it
# records, by attribute name.
PROFILE_FIELDS = ("name", "phone", "phone_e164", "email", "joined_on")
TIER_FIELDS = ("tier_id", "tier_since", "review_at", "grace_until")

# The statuses of a grant that could still be redeemed, or become
# redeemable once it is approved or stock arrives.
USABLE_STATUSES = (
    Grant.Status.ISSUED,
    Grant.Status.AWAITING_STOCK,
    Grant.Status.AWAITING_APPROVAL,
)


class MergeError(Exception):
    """Raised when a merge or a revert is not allowed. The message gives the reason."""


@dataclass
class MergePlan:
    """The rows a merge of ``source`` into ``target`` moves, and the fields it sets.

    ``moves`` lists the ids of the rows that move, by model label.
    ``grant_periods`` maps each moving grant that changes period to its
    period and the target's period it moves into. ``stayed`` lists the rows
    that stay with the source, by model label. ``ended_grants`` maps each
    staying grant that the merge ends to its current status. ``profile``
    maps each target field that changes to its value and the new value.
    """

    source: Member
    target: Member
    moves: dict[str, list[int]] = field(default_factory=dict)
    grant_periods: dict[int, tuple[int, int]] = field(default_factory=dict)
    stayed: dict[str, list[int]] = field(default_factory=dict)
    ended_grants: dict[int, str] = field(default_factory=dict)
    profile: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    takes_source_tier: bool = False

    def counts(self) -> dict[str, int]:
        return {label: len(ids) for label, ids in self.moves.items()}


def _dump(value: Any) -> Any:
    """Return a field value as JSON, keeping a datetime's microseconds.

    DjangoJSONEncoder cuts times to milliseconds, and a revert must restore
    them exactly.
    """
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _load(attname: str, value: Any) -> Any:
    if value is None:
        return None
    field_ = cast(models.Field, Member._meta.get_field(attname.removesuffix("_id")))
    if attname.endswith("_id"):
        return int(value)
    return field_.to_python(value)


def _values(member: Member, attnames: Iterable[str]) -> dict[str, Any]:
    return {name: _dump(getattr(member, name)) for name in attnames}


def check_mergeable(source: Member, target: Member) -> None:
    """Raise MergeError unless ``source`` may be merged into ``target``."""
    if source.pk == target.pk:
        raise MergeError(
            _("Member #%(id)s cannot be merged into itself. Choose two members.")
            % {"id": source.pk}
        )
    for member in (source, target):
        if member.erased_at is not None:
            raise MergeError(
                _(
                    "Member #%(id)s was erased on request, so it cannot be "
                    "merged. Choose a member whose data is kept."
                )
                % {"id": member.pk}
            )
    if source.merged_into_id is not None:
        raise MergeError(
            _(
                "Member #%(source)s is already merged into member #%(target)s. "
                "Revert that merge first to merge it elsewhere."
            )
            % {"source": source.pk, "target": source.merged_into_id}
        )
    if target.merged_into_id is not None:
        raise MergeError(
            _(
                "Member #%(target)s is merged into member #%(into)s, so nothing "
                "can be merged into it. Merge into member #%(into)s instead."
            )
            % {"target": target.pk, "into": target.merged_into_id}
        )
    merged_in = list(
        Member.objects.filter(merged_into=source)
        .order_by("pk")
        .values_list("pk", flat=True)[:5]
    )
    if merged_in:
        raise MergeError(
            _(
                "Members %(ids)s are merged into member #%(source)s, and merging "
                "it as well would chain merges. Merge member #%(target)s into "
                "member #%(source)s instead, or revert those merges first."
            )
            % {
                "ids": ", ".join(f"#{pk}" for pk in merged_in),
                "source": source.pk,
                "target": target.pk,
            }
        )


def _row_ids(model: type[models.Model], member_id: int) -> list[int]:
    return list(
        model._default_manager.filter(member_id=member_id)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _plan_benefits(plan: MergePlan) -> None:
    """Plan the tier periods and grants by the rules in the module docstring."""
    # NOTE: ongoing grants of a tier the target is not in stay open after the
    # move, because benefits.issuing ends them only when a member leaves
    # that tier.
    source_id, target_id = plan.source.pk, plan.target.pk
    periods = TierPeriod.objects.filter(member_id__in=[source_id, target_id])
    target_periods = []
    source_periods = []
    for period in periods.order_by("pk"):
        if period.member_id == target_id:
            target_periods.append(period)
        else:
            source_periods.append(period)
    into: dict[int, int] = {}
    for period in source_periods:
        overlapping = [
            other
            for other in target_periods
            if other.tier_id == period.tier_id
            and other.starts_at < period.ends_at
            and period.starts_at < other.ends_at
        ]
        if overlapping:
            into[period.pk] = max(overlapping, key=lambda p: (p.ends_at, p.pk)).pk
    plan.moves[PERIODS] = [p.pk for p in source_periods if p.pk not in into]
    if into:
        plan.stayed[PERIODS] = sorted(into)

    grants = Grant.objects.filter(member_id__in=[source_id, target_id]).order_by("pk")
    rows = list(
        grants.values_list(
            "pk", "member_id", "period_id", "benefit_id", "pool_id", "status"
        )
    )
    slots = dict(grants.filter(pool__isnull=False).values_list("pk", "pool_slot"))
    target_rows = [row for row in rows if row[1] == target_id]
    taken_benefits = {(row[2], row[3]) for row in target_rows}
    target_pools = {(row[2], row[4]) for row in target_rows if row[4] is not None}
    taken_slots: set[tuple[int, int, int | None]] = set()
    moving: list[int] = []
    stayed: list[int] = []
    for pk, member_id, period_id, benefit_id, pool_id, status in rows:
        if member_id != source_id:
            continue
        target_period = into.get(period_id)
        if target_period is None:
            moving.append(pk)
            continue
        slot = (target_period, pool_id, slots.get(pk)) if pool_id else None
        if (
            (target_period, benefit_id) in taken_benefits
            or (pool_id and (target_period, pool_id) in target_pools)
            or (slot is not None and slot in taken_slots)
        ):
            stayed.append(pk)
            if status in USABLE_STATUSES:
                plan.ended_grants[pk] = status
            continue
        taken_benefits.add((target_period, benefit_id))
        if slot is not None:
            taken_slots.add(slot)
        plan.grant_periods[pk] = (period_id, target_period)
        moving.append(pk)
    plan.moves[GRANTS] = moving
    if stayed:
        plan.stayed[GRANTS] = stayed


def _plan_conflicting_rows(plan: MergePlan) -> None:
    """Plan the review warnings and overrides, which have unique constraints."""
    source_id, target_id = plan.source.pk, plan.target.pk
    target_reviews = set(
        ReviewWarning.objects.filter(member_id=target_id).values_list(
            "review_at", flat=True
        )
    )
    warnings = ReviewWarning.objects.filter(member_id=source_id).order_by("pk")
    plan.moves[WARNINGS] = []
    for pk, review_at in warnings.values_list("pk", "review_at"):
        if review_at in target_reviews:
            plan.stayed.setdefault(WARNINGS, []).append(pk)
        else:
            plan.moves[WARNINGS].append(pk)

    active = TierOverride.Status.ACTIVE
    target_active = TierOverride.objects.filter(
        member_id=target_id, status=active
    ).exists()
    overrides = TierOverride.objects.filter(member_id=source_id).order_by("pk")
    plan.moves[OVERRIDES] = []
    for pk, status in overrides.values_list("pk", "status"):
        if target_active and status == active:
            plan.stayed.setdefault(OVERRIDES, []).append(pk)
        else:
            plan.moves[OVERRIDES].append(pk)


def _plan_profile(plan: MergePlan) -> None:
    source, target = plan.source, plan.target
    for name in ("name", "email"):
        if not getattr(target, name) and getattr(source, name):
            plan.profile[name] = (getattr(target, name), getattr(source, name))
    if not target.phone and source.phone:
        plan.profile["phone"] = (target.phone, source.phone)
        plan.profile["phone_e164"] = (target.phone_e164, source.phone_e164)
    if source.joined_on is not None and (
        target.joined_on is None or source.joined_on < target.joined_on
    ):
        plan.profile["joined_on"] = (target.joined_on, source.joined_on)

    if source.tier_id is None:
        return
    if target.tier_id is None:
        plan.takes_source_tier = True
        return
    ranks = dict(
        Tier.objects.filter(pk__in=[source.tier_id, target.tier_id]).values_list(
            "pk", "rank"
        )
    )
    plan.takes_source_tier = ranks[source.tier_id] > ranks[target.tier_id]


def plan_merge(source: Member, target: Member) -> MergePlan:
    """Return what merging ``source`` into ``target`` would do, writing nothing.

    Raises MergeError when the merge is not allowed. Costs a fixed number
    of queries, whatever the number of rows.
    """
    check_mergeable(source, target)
    plan = MergePlan(source=source, target=target)
    for label in (ACTIVITIES, IDENTITIES, TIER_CHANGES, OUTBOX):
        plan.moves[label] = _row_ids(MOVED_MODELS[label], source.pk)
    _plan_conflicting_rows(plan)
    _plan_benefits(plan)
    _plan_profile(plan)
    plan.moves = {label: plan.moves[label] for label in MOVED_MODELS}
    return plan


def _lock_members(*member_ids: int) -> dict[int, Member]:
    """Lock the members' rows in pk order.

    Two merges that share a member then lock in the same order, so one
    waits for the other instead of deadlocking.
    """
    members = Member.objects.select_for_update().filter(pk__in=member_ids)
    found = {member.pk: member for member in members.order_by("pk")}
    missing = sorted(set(member_ids) - set(found))
    if missing:
        raise MergeError(
            _("Member %(ids)s does not exist.")
            % {"ids": ", ".join(f"#{pk}" for pk in missing)}
        )
    return found


def _move(
    model: type[models.Model],
    ids: Sequence[int],
    from_id: int,
    to_id: int,
    **values: Any,
) -> int:
    """Give the rows ``ids`` that belong to member ``from_id`` to ``to_id``.

    Returns the number of rows moved; rows deleted or moved elsewhere since
    they were recorded are skipped.
    """
    moved = 0
    for chunk in chunked(list(ids)):
        moved += model._default_manager.filter(pk__in=chunk, member_id=from_id).update(
            member_id=to_id, **values
        )
    return moved


def _move_rows(plan: MergePlan) -> None:
    source_id, target_id = plan.source.pk, plan.target.pk
    by_period: dict[int, list[int]] = defaultdict(list)
    for grant_id, periods in plan.grant_periods.items():
        by_period[periods[1]].append(grant_id)
    for label, model in MOVED_MODELS.items():
        ids = plan.moves[label]
        if label == GRANTS:
            ids = [pk for pk in ids if pk not in plan.grant_periods]
        _move(model, ids, source_id, target_id)
    for period_id, grant_ids in sorted(by_period.items()):
        _move(Grant, grant_ids, source_id, target_id, period_id=period_id)


def _end_stayed_grants(plan: MergePlan, now: dt.datetime) -> None:
    """End the usable grants that stay with the source.

    The target already has the same benefit in that period, so the
    source's copy would let one person redeem it twice. A grant that
    reserved stock while awaiting approval keeps it, so that a revert can
    give the grant back exactly as it was.
    """
    # NOTE: until the merge is reverted, that reserved stock item is not
    # available to other members.
    for chunk in chunked(sorted(plan.ended_grants)):
        Grant.objects.filter(
            pk__in=chunk, member_id=plan.source.pk, status__in=USABLE_STATUSES
        ).update(status=Grant.Status.ENDED, ended_at=now)


def _restore_ended_grants(merge: MemberMerge) -> int:
    """Give the grants the merge ended their previous status; return how many.

    A grant is restored only while it is still ended and with the source,
    so a change made to it since the merge stays.
    """
    by_status: dict[str, list[int]] = defaultdict(list)
    for pk, status in merge.moved.get("ended_grants", {}).items():
        by_status[status].append(int(pk))
    restored = 0
    for status, grant_ids in sorted(by_status.items()):
        for chunk in chunked(sorted(grant_ids)):
            restored += Grant.objects.filter(
                pk__in=chunk, member_id=merge.source_id, status=Grant.Status.ENDED
            ).update(status=status, ended_at=None)
    return restored


def _last_checks(source: Member) -> dict[str, Any]:
    """Return the explanation of the source's last change into its tier.

    Called before the source's history moves, so the MERGE row can show the
    requirements the source met for the tier it passes on.
    """
    explanation = (
        TierChange.objects.filter(member_id=source.pk, to_tier_id=source.tier_id)
        .order_by("-changed_at", "-pk")
        .values_list("explanation", flat=True)
        .first()
    )
    return explanation if isinstance(explanation, dict) else {}


def _merge_tier_change(
    target: Member,
    source: Member,
    merge: MemberMerge,
    checks: dict[str, Any],
    now: dt.datetime,
) -> TierChange:
    """Write the history row of the target taking the source's tier."""
    assert source.tier is not None
    explanation = {
        "as_of": now.isoformat(),
        "tiers": checks.get("tiers", []),
        "retention": checks.get("retention"),
        "version": checks.get("version"),
        "from_tier": target.tier.name if target.tier else None,
        "tier": source.tier.pk,
        "tier_name": source.tier.name,
        "review_at": _dump(source.review_at),
        "grace_until": _dump(source.grace_until),
        "merge": {"id": merge.pk, "source": source.pk},
    }
    change = TierChange.objects.create(
        member_id=target.pk,
        from_tier_id=target.tier_id,
        to_tier=source.tier,
        version=RuleVersion.objects.in_effect(now),
        changed_at=now,
        as_of=now,
        reason=TierChange.Reason.MERGE,
        review_at=source.review_at,
        explanation=explanation,
    )
    after_tier_changes()
    return change


def _evaluate(member_ids: list[int], merge_id: int) -> bool:
    """Evaluate the members; return False when no rule version is in effect."""
    try:
        evaluate(member_ids)
    except LadderError as error:
        logger.warning(
            "member merge left tiers unevaluated merge_id=%s member_ids=%s error=%s",
            merge_id,
            member_ids,
            error,
        )
        return False
    return True


def _log_moved(event: str, merge: MemberMerge, counts: dict[str, int]) -> None:
    logger.info(
        "member merge %s merge_id=%s source_id=%s target_id=%s %s",
        event,
        merge.pk,
        merge.source_id,
        merge.target_id,
        " ".join(f"{label}={count}" for label, count in counts.items()),
    )


def merge_members(
    source: Member, target: Member, *, user: User, reason: str
) -> MemberMerge:
    """Merge ``source`` into ``target`` in one transaction; return the audit row.

    Both member rows are locked first, in pk order, and the checks run on
    the locked rows, so of two merges that touch one member the second
    reads what the first committed. Raises MergeError when the merge is not
    allowed.
    """
    # NOTE: an event API request that read the source's channel id before the
    # merge committed still stores its activity on the source, where no
    # evaluation counts it.
    reason = reason.strip()
    if not reason:
        raise MergeError(_("Enter the reason for the merge. It is stored for audit."))
    logger.info(
        "member merge started source_id=%s target_id=%s user_id=%s",
        source.pk,
        target.pk,
        user.pk,
    )
    with transaction.atomic():
        locked = _lock_members(source.pk, target.pk)
        source, target = locked[source.pk], locked[target.pk]
        plan = plan_merge(source, target)
        now = timezone.now()
        merge = MemberMerge.objects.create(
            source=source, target=target, reason=reason, merged_by=user, merged_at=now
        )
        target_before = _values(target, PROFILE_FIELDS + TIER_FIELDS)
        source_tier = _values(source, TIER_FIELDS)
        checks = _last_checks(source) if plan.takes_source_tier else {}

        _move_rows(plan)
        _end_stayed_grants(plan, now)
        Member.objects.filter(pk=source.pk).update(
            merged_into=target,
            tier=None,
            tier_since=None,
            review_at=None,
            grace_until=None,
            updated_at=now,
        )
        updates: dict[str, Any] = {
            name: values[1] for name, values in plan.profile.items()
        }
        if plan.takes_source_tier:
            _merge_tier_change(target, source, merge, checks, now)
            updates.update({name: getattr(source, name) for name in TIER_FIELDS})
        Member.objects.filter(pk=target.pk).update(updated_at=now, **updates)
        evaluated = _evaluate([target.pk], merge.pk)

        target.refresh_from_db()
        merge.moved = {
            **plan.moves,
            "grant_periods": {
                str(pk): list(periods) for pk, periods in plan.grant_periods.items()
            },
            "stayed": plan.stayed,
            "ended_grants": {
                str(pk): status for pk, status in plan.ended_grants.items()
            },
            "source_tier": source_tier,
            "target": {
                "before": target_before,
                "after": _values(target, PROFILE_FIELDS + TIER_FIELDS),
            },
            "target_took_source_tier": plan.takes_source_tier,
            "tiers_evaluated": evaluated,
        }
        merge.save(update_fields=["moved"])
        record_events(
            user,
            AuditAction.MERGE,
            [target.pk, source.pk],
            detail={"merge": merge.pk, "source": source.pk, "target": target.pk},
        )
    _log_moved("finished", merge, plan.counts())
    return merge


def _move_back(merge: MemberMerge) -> dict[str, int]:
    """Return the recorded rows to the source; return the counts not found."""
    moved = merge.moved
    source_id, target_id = merge.source_id, merge.target_id
    grant_periods = {
        int(pk): (int(source_period), int(target_period))
        for pk, (source_period, target_period) in moved.get("grant_periods", {}).items()
    }
    missing: dict[str, int] = {}
    for label, model in MOVED_MODELS.items():
        ids = [int(pk) for pk in moved.get(label, [])]
        if label == GRANTS:
            ids = [pk for pk in ids if pk not in grant_periods]
        returned = _move(model, ids, target_id, source_id)
        if returned != len(ids):
            missing[label] = len(ids) - returned
    by_period: dict[int, list[int]] = defaultdict(list)
    for grant_id, periods in grant_periods.items():
        by_period[periods[0]].append(grant_id)
    for period_id, grant_ids in sorted(by_period.items()):
        returned = _move(Grant, grant_ids, target_id, source_id, period_id=period_id)
        if returned != len(grant_ids):
            missing[GRANTS] = missing.get(GRANTS, 0) + len(grant_ids) - returned
    return missing


def _restore_target(
    merge: MemberMerge, target: Member, now: dt.datetime
) -> tuple[dict[str, Any], list[str]]:
    """Return the target's fields to restore, and those changed since the merge.

    A field is restored only while it still has the value the merge left,
    so a later edit by staff stays. The tier fields count as one value:
    after a later tier change the evaluation decides instead.
    """
    before = merge.moved.get("target", {}).get("before", {})
    after = merge.moved.get("target", {}).get("after", {})
    updates: dict[str, Any] = {}
    changed_since: list[str] = []
    for name in PROFILE_FIELDS:
        if name not in after:
            continue
        if getattr(target, name) != _load(name, after[name]):
            changed_since.append(name)
        elif after[name] != before.get(name):
            updates[name] = _load(name, before.get(name))
    tier_now = {name: getattr(target, name) for name in TIER_FIELDS}
    tier_after = {name: _load(name, after.get(name)) for name in TIER_FIELDS}
    if tier_now != tier_after:
        changed_since.append("tier")
    else:
        updates.update({name: _load(name, before.get(name)) for name in TIER_FIELDS})
    restored_tier = updates.get("tier_id", target.tier_id)
    if restored_tier is not None and restored_tier != target.tier_id:
        TierChange.objects.create(
            member_id=target.pk,
            from_tier_id=target.tier_id,
            to_tier_id=restored_tier,
            version=RuleVersion.objects.in_effect(now),
            changed_at=now,
            as_of=now,
            reason=TierChange.Reason.MERGE,
            review_at=updates.get("review_at"),
            explanation={
                "as_of": now.isoformat(),
                "tiers": [],
                "from_tier": target.tier.name if target.tier else None,
                "tier": restored_tier,
                "tier_name": Tier.objects.get(pk=restored_tier).name,
                "merge": {"id": merge.pk, "source": merge.source_id, "reverted": True},
            },
        )
        after_tier_changes()
    return updates, changed_since


def revert_merge(merge: MemberMerge, *, user: User) -> MemberMerge:
    """Undo ``merge``: move the recorded rows back and restore both members.

    The target's profile and tier fields are restored only where they still
    have the values the merge left. Both members are then evaluated. Raises
    MergeError when the merge was already reverted or the members changed
    in a way that stops the revert.
    """
    logger.info(
        "member merge revert started merge_id=%s source_id=%s target_id=%s user_id=%s",
        merge.pk,
        merge.source_id,
        merge.target_id,
        user.pk,
    )
    try:
        with transaction.atomic():
            locked = _lock_members(merge.source_id, merge.target_id)
            source, target = locked[merge.source_id], locked[merge.target_id]
            merge = MemberMerge.objects.select_for_update().get(pk=merge.pk)
            _check_revertible(merge, source, target)
            now = timezone.now()

            missing = _move_back(merge)
            not_restored = len(merge.moved.get("ended_grants", {}))
            not_restored -= _restore_ended_grants(merge)
            updates, changed_since = _restore_target(merge, target, now)
            Member.objects.filter(pk=target.pk).update(updated_at=now, **updates)
            source_tier = merge.moved.get("source_tier", {})
            Member.objects.filter(pk=source.pk).update(
                merged_into=None,
                updated_at=now,
                **{name: _load(name, source_tier.get(name)) for name in TIER_FIELDS},
            )
            evaluated = _evaluate([source.pk, target.pk], merge.pk)

            merge.status = MemberMerge.Status.REVERTED
            merge.reverted_by = user
            merge.reverted_at = now
            merge.moved = {
                **merge.moved,
                "revert": {
                    "not_found": missing,
                    "ended_grants_not_restored": not_restored,
                    "edited_since": changed_since,
                    "tiers_evaluated": evaluated,
                },
            }
            merge.save(update_fields=["status", "reverted_by", "reverted_at", "moved"])
            record_events(
                user,
                AuditAction.REVERT_MERGE,
                [target.pk, source.pk],
                detail={"merge": merge.pk, "source": source.pk, "target": target.pk},
            )
    except IntegrityError as error:
        logger.warning(
            "member merge revert failed merge_id=%s error=%s", merge.pk, error
        )
        raise MergeError(
            _(
                "Merge #%(id)s could not be reverted: a row would break a "
                "uniqueness rule (%(error)s). Nothing was changed."
            )
            % {"id": merge.pk, "error": error}
        ) from error
    if missing or not_restored:
        logger.warning(
            "member merge revert found rows gone merge_id=%s not_found=%s "
            "ended_grants_not_restored=%d",
            merge.pk,
            missing,
            not_restored,
        )
    _log_moved(
        "reverted", merge, {k: len(merge.moved.get(k, [])) for k in MOVED_MODELS}
    )
    return merge


def _check_revertible(merge: MemberMerge, source: Member, target: Member) -> None:
    if merge.status == MemberMerge.Status.REVERTED:
        raise MergeError(
            _("Merge #%(id)s was already reverted on %(when)s.")
            % {
                "id": merge.pk,
                "when": f"{timezone.localtime(merge.reverted_at):%Y-%m-%d %H:%M}"
                if merge.reverted_at
                else "?",
            }
        )
    if target.erased_at is not None:
        raise MergeError(
            _(
                "Member #%(target)s was erased on request since the merge, so "
                "merge #%(id)s cannot be reverted."
            )
            % {"target": target.pk, "id": merge.pk}
        )
    if source.merged_into_id != target.pk:
        raise MergeError(
            _(
                "Member #%(source)s is no longer merged into member #%(target)s, "
                "so merge #%(id)s cannot be reverted."
            )
            % {"source": source.pk, "target": target.pk, "id": merge.pk}
        )
    if target.merged_into_id is not None:
        raise MergeError(
            _(
                "Member #%(target)s was merged into member #%(into)s since. Revert "
                "that merge first."
            )
            % {"target": target.pk, "into": target.merged_into_id}
        )
