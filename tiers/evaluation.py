"""Tier evaluation: compute metrics, pick each member's tier, record changes.

One code path serves one member, a set of members or everyone, as of any
moment. Members are processed in chunks; each chunk costs a fixed number of
queries (members, one aggregate over the ledger, one UPDATE per target tier,
one INSERT of history rows), never a query per member.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from members.models import Activity, Member
from tiers.ladder import Ladder, TierRule
from tiers.metrics import compute_metrics
from tiers.models import TierChange

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberEvaluation:
    member_id: int
    previous_tier_id: int | None
    tier: TierRule
    metrics: dict[str, Decimal]
    explanation: dict[str, object]

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
    tier_counts: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return self.promoted + self.demoted + self.initial


def _explanation(
    ladder: Ladder,
    previous_tier_id: int | None,
    tier: TierRule,
    checks: list[dict[str, object]],
    as_of: dt.datetime,
) -> dict[str, object]:
    previous = ladder.by_id(previous_tier_id)
    return {
        "as_of": as_of.isoformat(),
        "from_tier": previous.name if previous else None,
        "tier": tier.id,
        "tier_name": tier.name,
        "tiers": checks,
    }


def _evaluate_chunk(
    ladder: Ladder,
    members: Sequence[tuple[int, int | None]],
    activities: Iterable[Activity] | None,
    as_of: dt.datetime,
) -> list[MemberEvaluation]:
    member_ids = [member_id for member_id, _ in members]
    if activities is None:
        ledger = Activity.objects.filter(member_id__in=member_ids)
    else:
        ledger = activities  # type: ignore[assignment]
    metrics_by_member = compute_metrics(ledger, ladder.specs, ladder.kinds, as_of)  # type: ignore[arg-type]
    evaluations = []
    for member_id, previous_tier_id in members:
        metrics = metrics_by_member.get(member_id, {})
        tier, checks = ladder.decide(metrics, as_of)
        evaluations.append(
            MemberEvaluation(
                member_id=member_id,
                previous_tier_id=previous_tier_id,
                tier=tier,
                metrics=metrics,
                explanation=_explanation(ladder, previous_tier_id, tier, checks, as_of),
            )
        )
    return evaluations


def _reason(ladder: Ladder, evaluation: MemberEvaluation) -> str:
    previous = ladder.by_id(evaluation.previous_tier_id)
    if previous is None:
        return TierChange.Reason.INITIAL
    if evaluation.tier.rank > previous.rank:
        return TierChange.Reason.PROMOTION
    return TierChange.Reason.DEMOTION


def _apply(
    ladder: Ladder, evaluations: list[MemberEvaluation], as_of: dt.datetime
) -> Counter[str]:
    """Write tier changes and their history rows for one chunk."""
    now = timezone.now()
    changed = [e for e in evaluations if e.changed]
    reasons: Counter[str] = Counter()
    if not changed:
        return reasons
    by_target: dict[int, list[int]] = defaultdict(list)
    for evaluation in changed:
        by_target[evaluation.tier.id].append(evaluation.member_id)
    history = []
    for evaluation in changed:
        reason = _reason(ladder, evaluation)
        reasons[reason] += 1
        history.append(
            TierChange(
                member_id=evaluation.member_id,
                from_tier_id=evaluation.previous_tier_id,
                to_tier_id=evaluation.tier.id,
                changed_at=now,
                as_of=as_of,
                reason=reason,
                explanation=evaluation.explanation,
            )
        )
    with transaction.atomic():
        for tier_id, member_ids in by_target.items():
            Member.objects.filter(pk__in=member_ids).update(
                tier_id=tier_id, tier_since=now
            )
        TierChange.objects.bulk_create(history, batch_size=2000)
    return reasons


def _member_chunks(
    member_ids: Iterable[int] | None, chunk_size: int
) -> Iterator[tuple[list[tuple[int, int | None]], bool]]:
    """Yield chunks of (member id, tier id), and whether the chunk is a pk range."""
    if member_ids is None:
        last_pk = 0
        while True:
            chunk: list[tuple[int, int | None]] = list(
                Member.objects.filter(pk__gt=last_pk)
                .order_by("pk")
                .values_list("pk", "tier_id")[:chunk_size]
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
                Member.objects.filter(pk__in=part)
                .order_by("pk")
                .values_list("pk", "tier_id")
            )
            yield chunk, False


def evaluate(
    member_ids: Iterable[int] | None = None,
    *,
    as_of: dt.datetime | None = None,
    commit: bool = True,
    chunk_size: int | None = None,
    ladder: Ladder | None = None,
) -> tuple[EvaluationSummary, list[MemberEvaluation]]:
    """Evaluate members against the ladder as of ``as_of`` (default: now).

    ``member_ids=None`` evaluates every member. With ``commit=False`` nothing
    is written and every evaluation is returned; with ``commit=True`` only
    the evaluations that changed a tier are returned, to keep memory flat.
    """
    as_of = as_of or timezone.now()
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be an aware datetime.")
    chunk_size = chunk_size or settings.CRM_EVALUATION_CHUNK_SIZE
    ladder = ladder or Ladder.load()
    summary = EvaluationSummary(as_of=as_of)
    kept: list[MemberEvaluation] = []
    logger.info(
        "evaluation started as_of=%s scope=%s commit=%s",
        as_of.isoformat(),
        "all" if member_ids is None else "set",
        commit,
    )
    for members, is_range in _member_chunks(member_ids, chunk_size):
        activities = None
        if is_range:
            activities = Activity.objects.filter(
                member_id__gte=members[0][0], member_id__lte=members[-1][0]
            )
        evaluations = _evaluate_chunk(ladder, members, activities, as_of)
        summary.evaluated += len(evaluations)
        for evaluation in evaluations:
            summary.tier_counts[evaluation.tier.name] += 1
        if commit:
            reasons = _apply(ladder, evaluations, as_of)
            kept.extend(e for e in evaluations if e.changed)
        else:
            reasons = Counter(_reason(ladder, e) for e in evaluations if e.changed)
            kept.extend(evaluations)
        summary.promoted += reasons[TierChange.Reason.PROMOTION]
        summary.demoted += reasons[TierChange.Reason.DEMOTION]
        summary.initial += reasons[TierChange.Reason.INITIAL]
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
    member: Member, as_of: dt.datetime | None = None
) -> MemberEvaluation:
    """Evaluate one member without writing anything, for pages and support staff."""
    as_of = as_of or timezone.now()
    ladder = Ladder.load()
    (evaluation,) = _evaluate_chunk(ladder, [(member.pk, member.tier_id)], None, as_of)
    return evaluation


def evaluate_member(
    member_id: int, as_of: dt.datetime | None = None
) -> MemberEvaluation | None:
    """Evaluate one member and record a change; return it, or None if unchanged."""
    _, changes = evaluate([member_id], as_of=as_of)
    return changes[0] if changes else None
