"""Tier evaluation: compute metrics, pick each member's tier, record changes.

One code path serves one member, a set of members or everyone, as of any
moment. Members are processed in chunks, and each chunk costs a fixed number
of queries, never a query per member. They are the members, their active
overrides, one aggregate over the ledger, a locking SELECT of the members to
write, one UPDATE per target tier and one INSERT of history rows. Two more
kinds of query run only when a chunk needs them. A review is judged on the
metrics of the period that ends at its date, which costs one aggregate per
local day on which such periods end. A one-step drop may hold a member's tier, which costs one
read of those members' demotion history.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from members.models import Activity, Member
from tiers.followups import after_tier_changes
from tiers.ladder import Ladder, TierRuleSet
from tiers.metrics import compute_metrics, program_zone
from tiers.models import Downgrade, RuleVersion, TierChange, TierOverride
from tiers.reviews import (
    Outcome,
    decide_with_reviews,
    next_review,
    period_end,
    review_after,
    settle_drop,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberEvaluation:
    member_id: int
    previous_tier_id: int | None
    tier: TierRuleSet
    metrics: dict[str, Decimal]
    # Built for members whose record changes and for explain_member().
    explanation: dict[str, object] | None
    # The history row to write (a TierChange reason), or None.
    reason: str | None = None
    review_at: dt.datetime | None = None
    grace_until: dt.datetime | None = None
    # Whether the member's stored tier, review date or grace date changes.
    writes: bool = False

    @property
    def changed(self) -> bool:
        return self.previous_tier_id != self.tier.id


@dataclass
class EvaluationSummary:
    as_of: dt.datetime
    evaluated: int = 0
    promoted: int = 0
    demoted: int = 0
    initial: int = 0
    renewed: int = 0
    in_grace: int = 0
    tier_counts: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return self.promoted + self.demoted + self.initial


def _explanation(
    ladder: Ladder,
    previous_tier_id: int | None,
    tier: TierRuleSet,
    checks: list[dict[str, object]],
    retention: dict[str, object] | None,
    held_by_policy: str,
    as_of: dt.datetime,
) -> dict[str, object]:
    previous = ladder.by_id(previous_tier_id)
    return {
        "as_of": as_of.isoformat(),
        "version": ladder.version_number,
        "version_id": ladder.version_id,
        "policy": ladder.policy,
        "from_tier": previous.name if previous else None,
        "tier": tier.id,
        "tier_name": tier.name,
        "tiers": checks,
        "retention": retention,
        "held_by_policy": held_by_policy,
    }


# (member id, tier id, tier since, review at, grace until)
MemberRow = tuple[
    int, "int | None", "dt.datetime | None", "dt.datetime | None", "dt.datetime | None"
]


def _members_with_new_activity(member_ids: list[int], since: dt.datetime) -> set[int]:
    return set(
        Activity.objects.filter(member_id__in=member_ids, recorded_at__gte=since)
        .order_by()
        .values_list("member_id", flat=True)
        .distinct()
    )


def _hold_by_policy(
    ladder: Ladder,
    decided: TierRuleSet,
    previous_tier_id: int | None,
    tier_since: dt.datetime | None,
    review_at: dt.datetime | None,
    has_new_activity: bool,
    as_of: dt.datetime,
) -> tuple[TierRuleSet, str]:
    """Apply the version's publish policy to a decision; return the tier and why.

    "new_activity" keeps a placed member's tier until activity is recorded
    after the version took effect. "grandfather" does not lower a tier reached
    before the version took effect until that tier's next review; a tier
    without reviews stays until another version is published.
    """
    previous = ladder.by_id(previous_tier_id)
    if previous is None or ladder.effective_from is None:
        return decided, ""
    if ladder.policy == RuleVersion.Policy.NEW_ACTIVITY and not has_new_activity:
        return previous, RuleVersion.Policy.NEW_ACTIVITY
    placed_before = tier_since is not None and tier_since < ladder.effective_from
    before_review = review_at is None or as_of < review_at
    if (
        ladder.policy == RuleVersion.Policy.GRANDFATHER
        and placed_before
        and before_review
        and previous.rank > decided.rank
    ):
        return previous, RuleVersion.Policy.GRANDFATHER
    return decided, ""


def _active_overrides(
    member_ids: list[int], as_of: dt.datetime
) -> dict[int, TierOverride]:
    """Return the override in force at ``as_of`` for each member.

    An override is in force while it is active, was requested by ``as_of``
    and its end date, if any, is after ``as_of``. One query loads them,
    joined to the member for its stored review and grace dates. An active
    override whose end date has passed is marked ended here, which costs
    more queries only when there is one.
    """
    # NOTE: status is the override's current state, so evaluating as of a past
    # moment applies an override that was active then only if it still is.
    now = timezone.now()
    in_force_or_ended = Q(until__isnull=True) | Q(until__gt=as_of) | Q(until__lte=now)
    overrides = (
        TierOverride.objects.filter(
            in_force_or_ended,
            member_id__in=member_ids,
            status=TierOverride.Status.ACTIVE,
            requested_at__lte=as_of,
        )
        .select_related("member", "requested_by", "approved_by")
        .order_by("requested_at", "pk")
    )
    in_force: dict[int, TierOverride] = {}
    ended: list[int] = []
    for override in overrides:
        if override.until is None or override.until > as_of:
            in_force[override.member_id] = override
        else:
            ended.append(override.member_id)
    if ended:
        # Imported on use because tiers.overrides imports this module.
        from tiers.overrides import end_expired_overrides

        end_expired_overrides(as_of, member_ids=ended)
    return in_force


def _direction(previous: TierRuleSet | None, tier: TierRuleSet) -> str | None:
    """Return the TierChange reason for moving from ``previous`` to ``tier``."""
    if previous is None:
        return TierChange.Reason.INITIAL
    if tier.rank > previous.rank:
        return TierChange.Reason.PROMOTION
    if tier.rank < previous.rank:
        return TierChange.Reason.DEMOTION
    return None


def _apply_override(
    ladder: Ladder,
    override: TierOverride,
    outcome: Outcome,
    previous: TierRuleSet | None,
    as_of: dt.datetime,
) -> Outcome | None:
    """Return the outcome an active override imposes, or None if it changes nothing.

    A floor raises a lower outcome to its tier and leaves a higher one alone.
    A fixed override sets its tier. An override that keeps the member's
    current tier against the rules keeps it as if its retention rules were
    met: a review that falls due renews the hold, and a grace period ends.
    The exception is a fixed override that keeps the member above what the
    rules give. A reviewed tier is then reviewed at the override's end, or
    at the later review date the member already had, so the rules take over
    as at a review.
    """
    tier = ladder.by_id(override.tier_id)
    if tier is None:
        return None
    # Loaded by _active_overrides with the override.
    member = override.member
    at_tier = previous is not None and previous.id == tier.id
    # What the member gets at the current tier if its retention rules are met.
    kept = None
    if at_tier:
        kept = decide_with_reviews(
            ladder,
            tier,
            previous,
            member.review_at,
            member.grace_until,
            as_of,
            tier_since=member.tier_since,
        )

    if override.mode == TierOverride.Mode.FLOOR:
        lifted = outcome.tier.rank < tier.rank or outcome.held_by == "grace"
        if kept is not None and lifted:
            return Outcome(tier, kept.reason, kept.review_at, None)
        if outcome.tier.rank >= tier.rank:
            return None
        return Outcome(tier, _direction(previous, tier), next_review(tier, as_of), None)

    if outcome.tier.id == tier.id:
        return None
    if outcome.tier.rank > tier.rank:
        # The override keeps the member below the rules, which take over at
        # its end with a promotion, so its end date plays no part here.
        if kept is not None:
            return Outcome(tier, kept.reason, kept.review_at, None)
        return Outcome(tier, _direction(previous, tier), next_review(tier, as_of), None)
    review_at = override.until if tier.reviewed else None
    if at_tier and review_at is not None and member.review_at is not None:
        review_at = max(review_at, member.review_at)
    return Outcome(tier, _direction(previous, tier), review_at, None)


def _rules_decision(
    ladder: Ladder,
    row: MemberRow,
    metrics: dict[str, Decimal],
    has_new_activity: bool,
    as_of: dt.datetime,
) -> tuple[TierRuleSet, str]:
    """Return the tier that the rules and the publish policy give on
    ``metrics``, and the policy that held the tier, if any."""
    _, previous_tier_id, tier_since, review_at, _ = row
    decided, _ = ladder.choose(metrics, previous_tier_id)
    return _hold_by_policy(
        ladder,
        decided,
        previous_tier_id,
        tier_since,
        review_at,
        has_new_activity,
        as_of,
    )


def _hold_candidates(
    ladder: Ladder,
    members: Sequence[MemberRow],
    decisions: dict[int, tuple[TierRuleSet, str]],
    as_of: dt.datetime,
) -> dict[int, tuple[int, dt.datetime]]:
    """Return the tier id and review date of each member whose outcome
    depends on whether a one-step drop placed it in its tier.

    These are members of a tier that drops between reviews (continuous, or
    with "drop between reviews" set) whose retention fails now, and members
    of a continuous tier whose review date is due.
    """
    candidates = {}
    for member_id, tier_id, _, review_at, _ in members:
        current = ladder.by_id(tier_id)
        if current is None or review_at is None:
            continue
        failing = decisions[member_id][0].rank < current.rank
        if current.reviewed:
            may_hold = current.demote_between_reviews and failing and as_of < review_at
        else:
            may_hold = failing or as_of >= review_at
        if may_hold:
            candidates[member_id] = (current.id, review_at)
    return candidates


def _held_after_one_step_drop(
    ladder: Ladder, candidates: dict[int, tuple[int, dt.datetime]]
) -> set[int]:
    """Return the candidates who keep their tier after a one-step drop.

    ``candidates`` maps member ids to their tier id and review date. A
    member holds its tier when its latest demotion came from a tier that
    drops one step, into the tier it has now, with the review date it has
    now. One query reads the demotions of all candidates.
    """
    if not candidates:
        return set()
    demotions = (
        TierChange.objects.filter(
            member_id__in=list(candidates), reason=TierChange.Reason.DEMOTION
        )
        .order_by("member_id", "-changed_at", "-pk")
        .values_list("member_id", "from_tier_id", "to_tier_id", "review_at")
    )
    latest: dict[int, tuple[int | None, int, dt.datetime | None]] = {}
    for member_id, from_tier_id, to_tier_id, review_at in demotions:
        latest.setdefault(member_id, (from_tier_id, to_tier_id, review_at))
    held = set()
    for member_id, (tier_id, review_at) in candidates.items():
        if member_id not in latest:
            continue
        dropped_from_id, dropped_to_id, drop_review_at = latest[member_id]
        dropped_from = ladder.by_id(dropped_from_id)
        if (
            dropped_from is not None
            and dropped_from.downgrade == Downgrade.ONE_STEP
            and dropped_to_id == tier_id
            and drop_review_at == review_at
        ):
            held.add(member_id)
    return held


def _reviews_to_judge(
    ladder: Ladder,
    members: Sequence[MemberRow],
    decisions: dict[int, tuple[TierRuleSet, str]],
    held: set[int],
    as_of: dt.datetime,
) -> dict[int, dt.datetime]:
    """Return the review date of each member whose review is judged on the
    metrics as of that date.

    Left out are members in a grace period (catching up there counts until
    the grace ends) and members the rules promote now. A review that falls
    exactly at ``as_of`` is judged too, because it judges the period ending
    just before ``as_of``.
    """
    reviews = {}
    for member_id, tier_id, _, review_at, grace_until in members:
        current = ladder.by_id(tier_id)
        if current is None or review_at is None or grace_until is not None:
            continue
        if review_at > as_of or decisions[member_id][0].rank > current.rank:
            continue
        if current.reviewed or member_id in held:
            reviews[member_id] = review_at
    return reviews


def _metrics_at_reviews(
    ladder: Ladder, reviews: dict[int, dt.datetime]
) -> dict[int, dict[str, Decimal]]:
    """Compute each member's metrics over the period that ends at its review.

    The metrics are those as of period_end(review date), so a calendar-year
    review at 1 January 00:00 judges the year just ended. Windows start at
    local midnight, so periods that end on one local day share every
    window start and differ only in where the ledger is cut off. Each such
    day costs one aggregate (plus one per growth value window when a weight
    has a daily cap) over a ledger cut at each member's own review moment.
    """
    by_day: dict[dt.date, dict[dt.datetime, list[int]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for member_id, review_at in reviews.items():
        day = period_end(review_at).astimezone(program_zone()).date()
        by_day[day][review_at].append(member_id)
    results: dict[int, dict[str, Decimal]] = {}
    for moments in by_day.values():
        cut_off = Q()
        for moment, ids in moments.items():
            # Activity at the review moment belongs to the next period.
            cut_off |= Q(member_id__in=ids, occurred_at__lt=moment)
        ledger = Activity.objects.filter(cut_off)
        latest = period_end(max(moments))
        results.update(compute_metrics(ledger, ladder.specs, ladder.kinds, latest))
    return results


@dataclass(frozen=True)
class ReviewJudgement:
    """The due review that decides a member's outcome, judged on its date."""

    review_at: dt.datetime
    # The tier the rules and the publish policy give on ``metrics``.
    tier: TierRuleSet
    metrics: dict[str, Decimal]


def _judge_due_reviews(
    ladder: Ladder,
    members: Sequence[MemberRow],
    reviews: dict[int, dt.datetime],
    with_new_activity: set[int],
    as_of: dt.datetime,
) -> dict[int, ReviewJudgement]:
    """Judge each review in ``reviews`` on the metrics as of its date.

    A member who keeps the tier at one review and has the next one due by
    ``as_of`` too is judged again at that one. A job that missed several
    reviews thus judges each in turn and stops at the first one failed.
    Each round costs one _metrics_at_reviews() for the members still due.
    """
    rows = {row[0]: row for row in members}
    judgements: dict[int, ReviewJudgement] = {}
    pending = dict(reviews)
    while pending:
        metrics_at_review = _metrics_at_reviews(ladder, pending)
        following: dict[int, dt.datetime] = {}
        for member_id, review_at in pending.items():
            row = rows[member_id]
            metrics = metrics_at_review.get(member_id, {})
            tier, _ = _rules_decision(
                ladder, row, metrics, member_id in with_new_activity, as_of
            )
            judgements[member_id] = ReviewJudgement(review_at, tier, metrics)
            current = ladder.by_id(row[1])
            assert current is not None
            if tier.rank < current.rank:
                continue
            next_review_at = review_after(current, review_at, review_at, row[2])
            if next_review_at is not None and next_review_at <= as_of:
                following[member_id] = next_review_at
        pending = following
    return judgements


def _review_explanation(
    ladder: Ladder, previous_tier_id: int | None, judgement: ReviewJudgement
) -> dict[str, object]:
    """Return the retention check of a review judged on its date's metrics."""
    current = ladder.by_id(previous_tier_id)
    assert current is not None
    check = current.check(
        judgement.metrics, period_end(judgement.review_at), retention=True
    )
    return {
        "as_of": judgement.review_at.isoformat(),
        "kept": judgement.tier.rank >= current.rank,
        "retention": check,
    }


def _settle_drop(
    ladder: Ladder,
    row: MemberRow,
    outcome: Outcome,
    metrics: dict[str, Decimal],
    has_new_activity: bool,
    as_of: dt.datetime,
) -> Outcome:
    """Raise a drop to where a re-evaluation at ``as_of`` would place the member.

    The rules are applied to this run's metrics as if the member had been
    placed in the tier dropped to at ``as_of``, as the next run would find it.
    """
    member_id, previous_tier_id, _, _, _ = row
    current = ladder.by_id(previous_tier_id)
    if current is None:
        return outcome
    dropped_row: MemberRow = (
        member_id,
        outcome.tier.id,
        as_of,
        outcome.review_at,
        None,
    )
    reentered, _ = _rules_decision(
        ladder, dropped_row, metrics, has_new_activity, as_of
    )
    return settle_drop(outcome, current, reentered, as_of)


def _evaluate_chunk(
    ladder: Ladder,
    members: Sequence[MemberRow],
    activities: QuerySet[Activity] | None,
    as_of: dt.datetime,
    *,
    explain_all: bool = False,
    metrics_by_member: dict[int, dict[str, Decimal]] | None = None,
    overrides: dict[int, TierOverride] | None = None,
) -> list[MemberEvaluation]:
    member_ids = [row[0] for row in members]
    ledger = (
        activities
        if activities is not None
        else Activity.objects.filter(member_id__in=member_ids)
    )
    if metrics_by_member is None:
        metrics_by_member = compute_metrics(ledger, ladder.specs, ladder.kinds, as_of)
    with_new_activity: set[int] = set()
    if ladder.policy == RuleVersion.Policy.NEW_ACTIVITY and ladder.effective_from:
        with_new_activity = _members_with_new_activity(
            member_ids, ladder.effective_from
        )
    if overrides is None:
        overrides = _active_overrides(member_ids, as_of)
    decisions = {
        row[0]: _rules_decision(
            ladder,
            row,
            metrics_by_member.get(row[0], {}),
            row[0] in with_new_activity,
            as_of,
        )
        for row in members
    }
    candidates = _hold_candidates(ladder, members, decisions, as_of)
    held = _held_after_one_step_drop(ladder, candidates)
    reviews = _reviews_to_judge(ladder, members, decisions, held, as_of)
    judgements = _judge_due_reviews(ladder, members, reviews, with_new_activity, as_of)
    evaluations = []
    for row in members:
        member_id, previous_tier_id, tier_since, review_at, grace_until = row
        metrics = metrics_by_member.get(member_id, {})
        decided, held_by = decisions[member_id]
        judgement = judgements.get(member_id)
        # No lock is taken here: _write_unless_stale locks the rows it writes
        # and re-evaluates a member whose stored tier changed since this read,
        # so concurrent evaluations of one member record one promotion.
        outcome = decide_with_reviews(
            ladder,
            decided,
            ladder.by_id(previous_tier_id),
            judgement.review_at if judgement else review_at,
            grace_until,
            as_of,
            tier_since=tier_since,
            decided_at_review=judgement.tier if judgement else None,
            held_after_drop=member_id in held,
        )
        if outcome.reason == TierChange.Reason.DEMOTION:
            outcome = _settle_drop(
                ladder,
                row,
                outcome,
                metrics,
                member_id in with_new_activity,
                as_of,
            )
        override = overrides.get(member_id)
        overridden = None
        if override is not None:
            overridden = _apply_override(
                ladder, override, outcome, ladder.by_id(previous_tier_id), as_of
            )
        if overridden is not None:
            outcome = overridden
        writes = (
            outcome.tier.id != previous_tier_id
            or outcome.review_at != review_at
            or outcome.grace_until != grace_until
        )
        explanation = None
        # Explaining costs more than deciding, so only members whose record
        # changes and explicit requests build the full explanation.
        if explain_all or writes or outcome.reason:
            _, checks, retention = ladder.decide(metrics, as_of, previous_tier_id)
            explanation = _explanation(
                ladder,
                previous_tier_id,
                outcome.tier,
                checks,
                retention,
                held_by or outcome.held_by,
                as_of,
            )
            explanation["review_at"] = (
                outcome.review_at.isoformat() if outcome.review_at else None
            )
            explanation["grace_until"] = (
                outcome.grace_until.isoformat() if outcome.grace_until else None
            )
            if overridden is not None and override is not None:
                explanation["override"] = override.summary()
            if judgement is not None:
                explanation["review"] = _review_explanation(
                    ladder, previous_tier_id, judgement
                )
        evaluations.append(
            MemberEvaluation(
                member_id=member_id,
                previous_tier_id=previous_tier_id,
                tier=outcome.tier,
                metrics=metrics,
                explanation=explanation,
                reason=outcome.reason,
                review_at=outcome.review_at,
                grace_until=outcome.grace_until,
                writes=writes,
            )
        )
    return evaluations


# Rounds of re-evaluation for members whose record another evaluator wrote
# between this evaluation's read and its write.
STALE_RETRY_ROUNDS = 3


def _is_stale(
    evaluation: MemberEvaluation,
    tier_id: int | None,
    review_at: dt.datetime | None,
    grace_until: dt.datetime | None,
) -> bool:
    """Return whether the stored record no longer matches what was evaluated.

    The evaluation carries the tier it started from but not the review and
    grace dates. A stored record that already equals the evaluation's outcome
    means another evaluator wrote the same change first.
    """
    # NOTE: a review or grace date that another evaluator changed to a third
    # value, with the tier left as it was, is not detected.
    if tier_id != evaluation.previous_tier_id:
        return True
    stored = (tier_id, review_at, grace_until)
    outcome = (evaluation.tier.id, evaluation.review_at, evaluation.grace_until)
    return evaluation.writes and stored == outcome


def _history_row(
    ladder: Ladder, evaluation: MemberEvaluation, now: dt.datetime, as_of: dt.datetime
) -> TierChange:
    assert evaluation.reason is not None
    return TierChange(
        member_id=evaluation.member_id,
        from_tier_id=evaluation.previous_tier_id,
        to_tier_id=evaluation.tier.id,
        # changed_at is the wall-clock time the row is recorded. as_of is the
        # evaluated moment, which a tier change also stores as tier_since.
        changed_at=now,
        as_of=as_of,
        reason=evaluation.reason,
        review_at=evaluation.review_at,
        explanation=evaluation.explanation or {},
        version_id=ladder.version_id,
    )


def _write_unless_stale(
    ladder: Ladder,
    evaluations: list[MemberEvaluation],
    as_of: dt.datetime,
    reasons: Counter[str],
) -> list[int]:
    """Write the evaluations whose member record is unchanged since it was read.

    Locks the members to write with SELECT ... FOR NO KEY UPDATE in pk
    order, so that concurrent evaluators of one member write one after the
    other and each reads what the previous one committed. The lock does not
    conflict with the KEY SHARE locks that inserting activities takes on
    their members, so two concurrent event batches cannot deadlock on them. Counts the written history
    rows in ``reasons`` and returns the ids of the stale members, which are
    left as they are. A member deleted since it was read is skipped.
    """
    pending = {e.member_id: e for e in evaluations if e.writes or e.reason}
    if not pending:
        return []
    now = timezone.now()
    stale: list[int] = []
    with transaction.atomic():
        stored = (
            Member.objects.select_for_update(no_key=True)
            .filter(pk__in=list(pending))
            .order_by("pk")
            .values_list("pk", "tier_id", "review_at", "grace_until")
        )
        current = []
        for member_id, tier_id, review_at, grace_until in stored:
            evaluation = pending[member_id]
            if _is_stale(evaluation, tier_id, review_at, grace_until):
                stale.append(member_id)
            else:
                current.append(evaluation)

        # One UPDATE per distinct (tier, review, grace) combination, which a
        # chunk evaluated at one moment has few of.
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for evaluation in current:
            if evaluation.writes:
                key = (
                    evaluation.tier.id,
                    evaluation.changed,
                    evaluation.review_at,
                    evaluation.grace_until,
                )
                groups[key].append(evaluation.member_id)
        for (tier_id, tier_changed, review_at, grace_until), ids in groups.items():
            fields: dict[str, Any] = {
                "review_at": review_at,
                "grace_until": grace_until,
            }
            if tier_changed:
                fields.update(tier_id=tier_id, tier_since=as_of)
            Member.objects.filter(pk__in=ids).update(**fields)

        recorded = [e for e in current if e.reason]
        history = [_history_row(ladder, e, now, as_of) for e in recorded]
        TierChange.objects.bulk_create(history, batch_size=2000)
        if history:
            after_tier_changes()
    for evaluation in recorded:
        assert evaluation.reason is not None
        reasons[evaluation.reason] += 1
    return stale


def _reevaluate(
    ladder: Ladder, member_ids: list[int], as_of: dt.datetime
) -> list[MemberEvaluation]:
    """Evaluate ``member_ids`` again from their stored records and full ledgers."""
    evaluations: list[MemberEvaluation] = []
    for members, _ in _member_chunks(member_ids, len(member_ids)):
        evaluations.extend(_evaluate_chunk(ladder, members, None, as_of))
    return evaluations


def _apply(
    ladder: Ladder, evaluations: list[MemberEvaluation], as_of: dt.datetime
) -> Counter[str]:
    """Write the chunk's tier, review and grace changes and their history rows.

    A member whose record another evaluator changed since it was read is not
    written. It is evaluated again from the new record, and that evaluation
    replaces the stale one in ``evaluations``, so the caller sees what was
    really written. This repeats at most STALE_RETRY_ROUNDS times, so the
    final tier counts every activity committed before the last round.
    Returns the number of history rows written per reason.
    """
    # NOTE: a member whose evaluation writes nothing is not locked. If another
    # evaluator writes a decision that missed this call's activity, that
    # decision remains until the member's next evaluation.
    reasons: Counter[str] = Counter()
    position = {e.member_id: index for index, e in enumerate(evaluations)}
    to_write = evaluations
    for attempt in range(STALE_RETRY_ROUNDS + 1):
        stale = _write_unless_stale(ladder, to_write, as_of, reasons)
        if not stale:
            break
        if attempt == STALE_RETRY_ROUNDS:
            logger.warning(
                "evaluation gave up on stale members after %d rounds "
                "as_of=%s member_ids=%s",
                STALE_RETRY_ROUNDS,
                as_of.isoformat(),
                stale,
            )
            break
        logger.info(
            "evaluation re-evaluating stale members as_of=%s member_ids=%s",
            as_of.isoformat(),
            stale,
        )
        to_write = _reevaluate(ladder, stale, as_of)
        for evaluation in to_write:
            evaluations[position[evaluation.member_id]] = evaluation
    return reasons


def _member_chunks(
    member_ids: Iterable[int] | None, chunk_size: int
) -> Iterator[tuple[list[MemberRow], bool]]:
    """Yield chunks of member rows, and whether the chunk is a pk range."""
    if member_ids is None:
        last_pk = 0
        while True:
            chunk: list[MemberRow] = list(
                Member.objects.filter(pk__gt=last_pk, merged_into__isnull=True)
                .order_by("pk")
                .values_list("pk", "tier_id", "tier_since", "review_at", "grace_until")[
                    :chunk_size
                ]
            )
            if not chunk:
                return
            yield chunk, True
            last_pk = chunk[-1][0]
    else:
        ids = sorted(set(member_ids))
        for start in range(0, len(ids), chunk_size):
            part = ids[start : start + chunk_size]
            chunk = list(
                Member.objects.filter(pk__in=part, merged_into__isnull=True)
                .order_by("pk")
                .values_list("pk", "tier_id", "tier_since", "review_at", "grace_until")
            )
            yield chunk, False


def iter_evaluations(
    ladder: Ladder,
    member_ids: Iterable[int] | None = None,
    *,
    as_of: dt.datetime,
    chunk_size: int | None = None,
) -> Iterator[list[MemberEvaluation]]:
    """Yield the evaluations of members chunk by chunk, writing nothing."""
    chunk_size = chunk_size or settings.CRM_EVALUATION_CHUNK_SIZE
    for members, is_range in _member_chunks(member_ids, chunk_size):
        activities = None
        if is_range:
            activities = Activity.objects.filter(
                member_id__gte=members[0][0], member_id__lte=members[-1][0]
            )
        yield _evaluate_chunk(ladder, members, activities, as_of)


def evaluate(
    member_ids: Iterable[int] | None = None,
    *,
    as_of: dt.datetime | None = None,
    commit: bool = True,
    chunk_size: int | None = None,
    ladder: Ladder | None = None,
    keep_changes: bool = True,
) -> tuple[EvaluationSummary, list[MemberEvaluation]]:
    """Evaluate members as of ``as_of`` (default: now) and record tier changes.

    ``member_ids=None`` evaluates every member not merged into another. The
    rules are those of the version in effect at ``as_of`` unless ``ladder``
    is given. With
    ``commit=False`` nothing is written and every evaluation is returned;
    with ``commit=True`` only the evaluations that changed a tier are
    returned, and none with ``keep_changes=False``, which jobs over every
    member use so that their memory stays flat even when every tier changes.
    """
    as_of = as_of or timezone.now()
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be an aware datetime.")
    ladder = ladder or Ladder.load(as_of=as_of)
    summary = EvaluationSummary(as_of=as_of)
    kept: list[MemberEvaluation] = []
    logger.info(
        "evaluation started as_of=%s version=%d scope=%s commit=%s",
        as_of.isoformat(),
        ladder.version_number,
        "all" if member_ids is None else "set",
        commit,
    )
    for evaluations in iter_evaluations(
        ladder, member_ids, as_of=as_of, chunk_size=chunk_size
    ):
        summary.evaluated += len(evaluations)
        for evaluation in evaluations:
            summary.tier_counts[evaluation.tier.name] += 1
        if commit:
            reasons = _apply(ladder, evaluations, as_of)
            if keep_changes:
                kept.extend(e for e in evaluations if e.changed)
        else:
            reasons = Counter(e.reason for e in evaluations if e.reason)
            kept.extend(evaluations)
        summary.promoted += reasons[TierChange.Reason.PROMOTION]
        summary.demoted += reasons[TierChange.Reason.DEMOTION]
        summary.initial += reasons[TierChange.Reason.INITIAL]
        summary.renewed += reasons[TierChange.Reason.RENEWAL]
        summary.in_grace += reasons[TierChange.Reason.GRACE]
    logger.info(
        "evaluation finished as_of=%s evaluated=%d promoted=%d demoted=%d initial=%d",
        as_of.isoformat(),
        summary.evaluated,
        summary.promoted,
        summary.demoted,
        summary.initial,
    )
    return summary, kept


def explain_member(
    member: Member,
    as_of: dt.datetime | None = None,
    ladder: Ladder | None = None,
    *,
    metrics: dict[str, Decimal] | None = None,
    overrides: dict[int, TierOverride] | None = None,
) -> MemberEvaluation:
    """Evaluate one member without writing anything, for pages and support staff.

    A caller that loaded them already passes the member's ``metrics`` as of
    ``as_of`` and the ``overrides`` in force then (as _active_overrides()
    returns them), which saves those two queries.
    """
    as_of = as_of or timezone.now()
    ladder = ladder or Ladder.load(as_of=as_of)
    row: MemberRow = (
        member.pk,
        member.tier_id,
        member.tier_since,
        member.review_at,
        member.grace_until,
    )
    (evaluation,) = _evaluate_chunk(
        ladder,
        [row],
        None,
        as_of,
        explain_all=True,
        metrics_by_member=None if metrics is None else {member.pk: metrics},
        overrides=overrides,
    )
    return evaluation


def evaluate_member(
    member_id: int, as_of: dt.datetime | None = None
) -> MemberEvaluation | None:
    """Evaluate one member and record a change; return it, or None if unchanged."""
    _, changes = evaluate([member_id], as_of=as_of)
    return changes[0] if changes else None
