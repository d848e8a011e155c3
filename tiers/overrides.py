"""Manual tier overrides: request, approve, reject, apply and end them.

Three modes exist. A fixed override keeps the member at its tier until a
date, a floor keeps the member from dropping below its tier, and a one-off
sets the tier now and leaves later evaluations free to change it.

An override to a tier at or above the lowest tier marked
``override_needs_approval`` waits for a second person to approve it, unless
it is a one-off or fixed override below the member's current tier. Every
other override applies at once. Applying one writes a
TierChange with reason OVERRIDE, even when the tier stays the same.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Min
from django.utils import timezone

from members.audit import record_event
from members.models import AuditAction, Member
from tiers.evaluation import explain_member
from tiers.followups import after_tier_changes
from tiers.ladder import Ladder, LadderError
from tiers.models import Tier, TierChange, TierOverride
from tiers.reviews import next_review

logger = logging.getLogger(__name__)

Mode = TierOverride.Mode
Status = TierOverride.Status
EndReason = TierOverride.EndReason


class OverrideError(Exception):
    """Raised when an override request, approval or rejection is invalid."""


def check_request(
    mode: str, reason: str, until: dt.datetime | None, now: dt.datetime
) -> None:
    """Raise OverrideError when the fields of a new override are invalid."""
    if mode not in Mode.values:
        raise OverrideError(
            f"Invalid override mode {mode!r}: use one of {', '.join(Mode.values)}."
        )
    if not reason or not reason.strip():
        raise OverrideError("A reason is required: say why the tier is overridden.")
    if mode == Mode.FIXED and until is None:
        raise OverrideError("A fixed override needs an end date: enter 'until'.")
    if until is not None and timezone.is_naive(until):
        raise OverrideError("The end date 'until' must include a time zone.")
    if mode in (Mode.FIXED, Mode.FLOOR) and until is not None and until <= now:
        raise OverrideError(
            f"The end date {until.isoformat()} is not in the future. "
            "Enter a later date."
        )


def needs_approval(member: Member, tier: Tier, mode: str) -> bool:
    """Return whether an override of ``member`` to ``tier`` needs a second approver.

    It does when ``tier`` ranks at or above the lowest tier marked
    ``override_needs_approval`` and the override raises the member's tier
    or guarantees it. Any override at the current tier counts: a fixed
    override or floor keeps a flagged tier that the rules may take away,
    and a one-off restarts the tier's review period. A floor below the
    current tier guarantees it too. Fixed and one-off downgrades do not.
    """
    current = member.tier
    if current is not None:
        if mode in (Mode.ONE_OFF, Mode.FIXED) and tier.rank < current.rank:
            return False
    lowest_flagged = Tier.objects.filter(override_needs_approval=True).aggregate(
        rank=Min("rank")
    )["rank"]
    return lowest_flagged is not None and tier.rank >= lowest_flagged


def request_override(
    member: Member,
    tier: Tier,
    mode: str,
    reason: str,
    user: User | None,
    until: dt.datetime | None = None,
    *,
    as_of: dt.datetime | None = None,
) -> TierOverride:
    """Create an override and apply it unless it waits for approval.

    ``as_of`` (default: now) is the moment of the request, and the moment the
    member is evaluated at when the override applies at once.
    """
    now = as_of or timezone.now()
    check_request(mode, reason, until, now)
    override = TierOverride(
        member=member,
        tier=tier,
        mode=mode,
        until=until if mode != Mode.ONE_OFF else None,
        reason=reason.strip(),
        requested_by=user,
        requested_at=now,
        status=Status.PENDING,
    )
    with transaction.atomic():
        _save(override, user, "requested")
        if needs_approval(member, tier, mode):
            logger.info(
                "tier override %d for member %d to tier %d waits for approval",
                override.pk,
                member.pk,
                tier.pk,
            )
            _audit(override, user, "requested")
            return override
        _apply(override, user, now)
        _audit(override, user, "requested")
    return override


def approve(
    override: TierOverride,
    user: User,
    *,
    as_of: dt.datetime | None = None,
) -> TierOverride:
    """Approve a pending override and apply it.

    The approver must be someone other than the requester.
    """
    now = as_of or timezone.now()
    if override.status != Status.PENDING:
        raise OverrideError(
            f"Override {override.pk} is {override.get_status_display().lower()}, "
            "not waiting for approval."
        )
    if override.requested_by_id is not None and override.requested_by_id == user.pk:
        raise OverrideError(
            "You requested this override, so another person must approve it."
        )
    if override.mode != Mode.ONE_OFF and override.until and override.until <= now:
        raise OverrideError(
            f"Override {override.pk} ended on {override.until.isoformat()} before "
            "it was approved. Reject it and request a new one."
        )
    with transaction.atomic():
        override.approved_by = user
        override.approved_at = now
        _apply(override, user, now)
        _audit(override, user, "approved")
    return override


def reject(
    override: TierOverride,
    user: User,
    reason: str,
    *,
    as_of: dt.datetime | None = None,
) -> TierOverride:
    """Reject a pending override, recording who rejected it, when and why."""
    if override.status != Status.PENDING:
        raise OverrideError(
            f"Override {override.pk} is {override.get_status_display().lower()}, "
            "not waiting for approval."
        )
    if not reason or not reason.strip():
        raise OverrideError("A reason is required to reject an override.")
    override.status = Status.REJECTED
    override.rejected_by = user
    override.rejected_at = as_of or timezone.now()
    override.rejection_reason = reason.strip()
    with transaction.atomic():
        _save(override, user, "rejected")
        _audit(override, user, "rejected")
    logger.info("tier override %d rejected by user %s", override.pk, user.pk)
    return override


def end_expired_overrides(
    as_of: dt.datetime | None = None, member_ids: Iterable[int] | None = None
) -> int:
    """End the active overrides past their end date, and return how many.

    Each one gets its own end date as ``ended_at`` and a history row with
    the change reason "expired" and no user. The cost is one locking
    SELECT, one UPDATE and one INSERT of history rows, however many end.
    End dates after the current time are left alone even when ``as_of``
    (default: now) is later, so evaluating a future moment ends nothing
    early. ``member_ids`` limits the work to those members' overrides.
    """
    now = timezone.now()
    cutoff = min(as_of, now) if as_of is not None else now
    candidates = TierOverride.objects.filter(status=Status.ACTIVE, until__lte=cutoff)
    if member_ids is not None:
        candidates = candidates.filter(member_id__in=list(member_ids))
    with transaction.atomic():
        # The lock makes a concurrent run wait and then find them ended, so
        # each override gets one "expired" history row.
        expired = list(candidates.select_for_update().order_by("pk"))
        if not expired:
            return 0
        TierOverride.objects.filter(pk__in=[o.pk for o in expired]).update(
            status=Status.ENDED,
            ended_at=F("until"),
            ended_by=None,
            end_reason=EndReason.EXPIRED,
        )
        for override in expired:
            override.status = Status.ENDED
            override.ended_at = override.until
            override.ended_by = None
            override.end_reason = EndReason.EXPIRED
            # No user ended it, so the history row must not name the user
            # whose request happened to run this.
            override._history_user = None  # type: ignore[attr-defined]
        TierOverride.history.bulk_history_create(  # type: ignore[attr-defined]
            expired, update=True, default_change_reason="expired"
        )
    logger.info("ended %d tier overrides whose end date passed", len(expired))
    return len(expired)


def _audit(override: TierOverride, user: User | None, step: str) -> None:
    record_event(
        user,
        AuditAction.OVERRIDE,
        override.member_id,
        detail={
            "override": override.pk,
            "step": step,
            "tier": override.tier_id,
            "mode": override.mode,
            "status": override.status,
        },
    )


def _save(override: TierOverride, user: User | None, action: str) -> None:
    # simple-history reads these two attributes for the historical row.
    override._history_user = user  # type: ignore[attr-defined]
    override._change_reason = action  # type: ignore[attr-defined]
    override.save()


def _apply(override: TierOverride, user: User | None, now: dt.datetime) -> None:
    """Apply an override that no longer waits for approval.

    The member's other active override ends first, so at most one is active.
    """
    member = Member.objects.select_for_update().get(pk=override.member_id)
    for other in TierOverride.objects.filter(
        member_id=member.pk, status=Status.ACTIVE
    ).exclude(pk=override.pk):
        other.status = Status.ENDED
        other.ended_at = now
        other.ended_by = user
        other.end_reason = EndReason.REPLACED
        _save(other, user, f"replaced by override {override.pk}")

    if override.mode == Mode.ONE_OFF:
        _set_tier_now(member, override, now)
        override.status = Status.ENDED
        override.ended_at = now
        override.ended_by = user
        override.end_reason = EndReason.APPLIED_ONCE
        _save(override, user, "applied once")
    else:
        override.status = Status.ACTIVE
        _save(override, user, "activated")
        _hold_tier(member, override, now)
    logger.info(
        "tier override %d (%s) applied to member %d",
        override.pk,
        override.mode,
        member.pk,
    )


def _hold_tier(member: Member, override: TierOverride, now: dt.datetime) -> None:
    """Write what an active fixed override or floor gives the member at ``now``.

    Evaluation decides the tier, review date and grace date with the
    override in force. The history row has reason OVERRIDE and is written
    even when nothing changes, so the member's history shows the override.
    ``member`` must be locked, so no evaluation writes between the read and
    the write.
    """
    ladder = Ladder.load(as_of=now)
    evaluation = explain_member(member, as_of=now, ladder=ladder)
    fields: dict[str, object] = {
        "review_at": evaluation.review_at,
        "grace_until": evaluation.grace_until,
    }
    if evaluation.changed:
        fields.update(tier_id=evaluation.tier.id, tier_since=now)
    explanation = dict(evaluation.explanation or {})
    explanation["override"] = override.summary()
    TierChange.objects.create(
        member=member,
        from_tier_id=member.tier_id,
        to_tier_id=evaluation.tier.id,
        version_id=ladder.version_id,
        changed_at=timezone.now(),
        as_of=now,
        reason=TierChange.Reason.OVERRIDE,
        review_at=evaluation.review_at,
        explanation=explanation,
    )
    after_tier_changes()
    Member.objects.filter(pk=member.pk).update(**fields)


def _set_tier_now(member: Member, override: TierOverride, now: dt.datetime) -> None:
    """Write a one-off override's tier and its history row.

    The tier then behaves like one reached by promotion at ``now``: its
    review date follows the tier's rules, and the next evaluation may change
    it.
    """
    try:
        ladder: Ladder | None = Ladder.load(as_of=now)
    except LadderError:
        ladder = None
    rule_set = ladder.by_id(override.tier_id) if ladder else None
    review_at = next_review(rule_set, now) if rule_set else None
    previous = member.tier
    TierChange.objects.create(
        member=member,
        from_tier=previous,
        to_tier=override.tier,
        version_id=ladder.version_id if ladder else None,
        changed_at=timezone.now(),
        as_of=now,
        reason=TierChange.Reason.OVERRIDE,
        review_at=review_at,
        explanation={
            "as_of": now.isoformat(),
            "from_tier": previous.name if previous else None,
            "tier": override.tier_id,
            "tier_name": override.tier.name,
            "review_at": review_at.isoformat() if review_at else None,
            "override": override.summary(),
        },
    )
    after_tier_changes()
    Member.objects.filter(pk=member.pk).update(
        tier=override.tier,
        tier_since=now,
        review_at=review_at,
        grace_until=None,
    )
