"""Fairness report: where a draft rule version places loyal low-spenders.

A loyal low-spender was active often over the last 365 days but spent
little. Over the members with at least one active day in that window, the
member's active days or orders are at or above the 75th percentile, and the
member's net spend is at or below the median. A rule change that lowers such
members while it raises big spenders is worth a second look before publishing.

The report costs a fixed number of queries whatever the number of members:
the two versions, one aggregate over the window's ledger rows, then the
evaluation queries of tiers.evaluation.iter_evaluations for each version,
over just the members found.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone

from members.models import Activity
from tiers.evaluation import iter_evaluations
from tiers.ladder import Ladder
from tiers.metrics import ZERO, MetricSpec, WindowSpec, compute_metrics
from tiers.models import Metric, RuleVersion, Window

logger = logging.getLogger(__name__)

WINDOW = WindowSpec(Window.ROLLING_DAYS, 365)
ACTIVE_DAYS = MetricSpec(Metric.ACTIVE_DAYS, WINDOW)
ORDERS = MetricSpec(Metric.ORDERS, WINDOW)
NET_SPEND = MetricSpec(Metric.NET_SPEND, WINDOW)


@dataclass(frozen=True)
class FairnessThresholds:
    """The cut-offs of a report, computed over the members active in the window.

    Percentiles interpolate linearly between the two nearest members, as
    ``statistics.quantiles(method="inclusive")`` does, so they can fall
    between whole numbers.
    """

    active_members: int
    active_days: Decimal  # 75th percentile of active days
    orders: Decimal  # 75th percentile of orders
    net_spend: Decimal  # median net spend


@dataclass(frozen=True)
class LoyalLowSpender:
    """A member of the report, with the tier each version places them in."""

    member_id: int
    active_days: int
    orders: int
    net_spend: Decimal
    current_tier: str
    draft_tier: str


@dataclass
class FairnessReport:
    """Loyal low-spenders and their tiers under the version in effect and the draft.

    ``current_counts`` and ``draft_counts`` map every tier of each version,
    by rank, to the number of these members it places there. ``thresholds``
    is None when no member was active in the window.
    """

    draft_number: int
    current_number: int
    as_of: dt.datetime
    window_days: int
    thresholds: FairnessThresholds | None
    current_counts: dict[str, int] = field(default_factory=dict)
    draft_counts: dict[str, int] = field(default_factory=dict)
    members: list[LoyalLowSpender] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.members)


def percentile_75(values: Sequence[Decimal]) -> Decimal:
    """Return the 75th percentile of ``values``, interpolated linearly."""
    if not values:
        raise ValueError("Cannot take a percentile of no values.")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=4, method="inclusive")[2]


def _thresholds(metrics: Iterable[dict[str, Decimal]]) -> FairnessThresholds | None:
    active = [row for row in metrics if row.get(ACTIVE_DAYS.key, ZERO) > 0]
    if not active:
        return None
    return FairnessThresholds(
        active_members=len(active),
        active_days=percentile_75([row[ACTIVE_DAYS.key] for row in active]),
        orders=percentile_75([row.get(ORDERS.key, ZERO) for row in active]),
        net_spend=statistics.median(row.get(NET_SPEND.key, ZERO) for row in active),
    )


def _is_loyal_low_spender(
    row: dict[str, Decimal], thresholds: FairnessThresholds
) -> bool:
    active_days = row.get(ACTIVE_DAYS.key, ZERO)
    orders = row.get(ORDERS.key, ZERO)
    if active_days <= 0:
        return False
    # When most active members never order, the orders percentile is 0. No
    # orders is not loyal ordering, so the orders test needs at least one.
    often = active_days >= thresholds.active_days or (
        orders > 0 and orders >= thresholds.orders
    )
    return often and row.get(NET_SPEND.key, ZERO) <= thresholds.net_spend


def _tiers_of(
    ladder: Ladder, member_ids: list[int], as_of: dt.datetime
) -> dict[int, str]:
    tiers: dict[int, str] = {}
    for evaluations in iter_evaluations(ladder, member_ids, as_of=as_of):
        for evaluation in evaluations:
            tiers[evaluation.member_id] = evaluation.tier.name
    return tiers


def _counts(ladder: Ladder, tiers: Iterable[str]) -> dict[str, int]:
    counts = {tier.name: 0 for tier in ladder.tiers}
    for name in tiers:
        counts[name] += 1
    return counts


def fairness_report(
    draft: RuleVersion, *, as_of: dt.datetime | None = None
) -> FairnessReport:
    """Compare where ``draft`` and the version in effect place loyal low-spenders.

    ``draft`` is usually a draft, but any version can be compared. Both
    versions evaluate each member against the member's stored tier, so
    retention rules apply as they would at the next evaluation. Raises
    LadderError when no version is in effect at ``as_of`` (default now).
    """
    as_of = as_of or timezone.now()
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be an aware datetime.")
    current_ladder = Ladder.load(as_of=as_of)
    draft_ladder = Ladder.load(draft)
    logger.info(
        "fairness report started draft=%d current=%d as_of=%s",
        draft_ladder.version_number,
        current_ladder.version_number,
        as_of.isoformat(),
    )

    start, _end = WINDOW.bounds(as_of)
    # NOTE: the metrics of every member active in the window are held in
    # memory to take the percentiles, because SQLite has no percentile
    # aggregate. PostgreSQL's percentile_cont could take them in the database.
    metrics = compute_metrics(
        Activity.objects.filter(occurred_at__gte=start),
        {ACTIVE_DAYS, ORDERS, NET_SPEND},
        draft_ladder.kinds,
        as_of,
    )
    report = FairnessReport(
        draft_number=draft_ladder.version_number,
        current_number=current_ladder.version_number,
        as_of=as_of,
        window_days=WINDOW.days or 0,
        thresholds=_thresholds(metrics.values()),
    )
    thresholds = report.thresholds
    selected = []
    if thresholds is not None:
        selected = sorted(
            member_id
            for member_id, row in metrics.items()
            if _is_loyal_low_spender(row, thresholds)
        )

    current_tiers = _tiers_of(current_ladder, selected, as_of)
    draft_tiers = _tiers_of(draft_ladder, selected, as_of)
    for member_id in selected:
        row = metrics[member_id]
        report.members.append(
            LoyalLowSpender(
                member_id=member_id,
                active_days=int(row.get(ACTIVE_DAYS.key, ZERO)),
                orders=int(row.get(ORDERS.key, ZERO)),
                net_spend=row.get(NET_SPEND.key, ZERO),
                current_tier=current_tiers[member_id],
                draft_tier=draft_tiers[member_id],
            )
        )
    report.current_counts = _counts(current_ladder, current_tiers.values())
    report.draft_counts = _counts(draft_ladder, draft_tiers.values())
    logger.info(
        "fairness report finished draft=%d current=%d members=%d",
        draft_ladder.version_number,
        current_ladder.version_number,
        report.count,
    )
    return report
