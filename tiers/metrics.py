"""Metric definitions and the single aggregate query that computes them.

Every metric of every requirement in the ladder is computed for a set of members
in one GROUP BY over the activity ledger, with one filtered aggregate per
(metric, window) pair, so the cost is one pass over the ledger whatever the
number of members or requirements.

An opening balance, an activity whose kind has the role "opening", carries
what a member had built up in an earlier program at the cut-over moment
(its ``occurred_at``). Its ``amount`` counts in net spend and its
``growth_points`` are added to growth value as they are, with no weight and
no cap. Like any activity it counts in every window that contains its
moment. A rolling 365-day window thus counts it on the cut-over day and
on the 364 days after, and a calendar-year window only in the cut-over
year. It is never an order, visit, review or referral, and it makes no
day active.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import (
    Count,
    DecimalField,
    F,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate

from members.models import Activity, ActivityKind
from tiers.models import Metric, Window

ZERO = Decimal("0")


def program_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


@dataclass(frozen=True)
class WindowSpec:
    """A requirement's window: its kind and, for rolling windows, the day count."""

    kind: str
    days: int | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}_{self.days}" if self.days else self.kind

    def bounds(self, as_of: dt.datetime) -> tuple[dt.datetime | None, dt.datetime]:
        """Return the aware [start, end] of the window ending at ``as_of``.

        Windows start at midnight in the program's time zone: "last 30 days"
        on 15 March covers 15 March and the 29 days before it.
        """
        return _window_bounds(self.kind, self.days, as_of, settings.TIME_ZONE)


# Every member of a chunk shares the same windows, so computing each once
# saves a time zone conversion per member and requirement.
@functools.lru_cache(maxsize=256)
def _window_bounds(
    kind: str, days: int | None, as_of: dt.datetime, zone_name: str
) -> tuple[dt.datetime | None, dt.datetime]:
    zone = ZoneInfo(zone_name)
    local_day = as_of.astimezone(zone).date()
    if kind == Window.LIFETIME:
        return None, as_of
    if kind == Window.YEAR_TO_DATE:
        first = local_day.replace(month=1, day=1)
    elif kind == Window.ROLLING_DAYS:
        if not days:
            raise ValueError("A rolling window needs a positive number of days.")
        first = local_day - dt.timedelta(days=days - 1)
    else:
        raise ValueError(f"Unknown window {kind!r}.")
    return dt.datetime.combine(first, dt.time.min, tzinfo=zone), as_of


@dataclass(frozen=True)
class MetricSpec:
    metric: str
    window: WindowSpec

    @property
    def key(self) -> str:
        return f"{self.metric}__{self.window.key}"


@dataclass(frozen=True)
class WeightRule:
    """A growth value weight of one rule version, with its optional caps."""

    id: int
    kind_id: int
    channel_id: int | None
    per_event: Decimal
    per_unit: Decimal
    daily_cap: Decimal | None
    window_cap: Decimal | None


@dataclass(frozen=True)
class KindCatalogue:
    """Activity kind ids grouped by role, and a version's growth value weights."""

    ids_by_role: Mapping[str, frozenset[int]]
    weights: tuple[WeightRule, ...] = ()

    def ids(self, *roles: str) -> list[int]:
        found: set[int] = set()
        for role in roles:
            found |= self.ids_by_role.get(role, frozenset())
        return sorted(found)

    def weight_filter(self, weight: WeightRule) -> Q:
        """Match the activities a weight applies to.

        A channel-less weight covers its kind in every channel that has no
        weight of its own for that kind.
        """
        match = Q(kind_id=weight.kind_id)
        if weight.channel_id is not None:
            return match & Q(channel_id=weight.channel_id)
        specific = [
            w.channel_id
            for w in self.weights
            if w.kind_id == weight.kind_id and w.channel_id is not None
        ]
        if specific:
            match &= ~Q(channel_id__in=specific)
        return match

    @classmethod
    def load(cls, version_id: int | None = None) -> KindCatalogue:
        """Load kinds and, for ``version_id``, its weights (two queries)."""
        from tiers.models import GrowthWeight

        ids_by_role: dict[str, set[int]] = {}
        for kind_id, role in ActivityKind.objects.values_list("pk", "role"):
            ids_by_role.setdefault(role, set()).add(kind_id)
        # An opening balance brings its growth value with it, so a weight on
        # an opening kind would count the carried-over spend a second time.
        opening_ids = ids_by_role.get(ActivityKind.Role.OPENING, set())
        weights: list[WeightRule] = []
        if version_id is not None:
            for weight in GrowthWeight.objects.filter(version_id=version_id).order_by(
                "pk"
            ):
                if not (weight.points_per_event or weight.points_per_unit):
                    continue
                if weight.kind_id in opening_ids:
                    continue
                weights.append(
                    WeightRule(
                        id=weight.pk,
                        kind_id=weight.kind_id,
                        channel_id=weight.channel_id,
                        per_event=weight.points_per_event,
                        per_unit=weight.points_per_unit,
                        daily_cap=weight.daily_cap,
                        window_cap=weight.window_cap,
                    )
                )
        return cls(
            {role: frozenset(ids) for role, ids in ids_by_role.items()}, tuple(weights)
        )


_COUNTED_ROLES: dict[str, tuple[str, ...]] = {
    Metric.ORDERS: (ActivityKind.Role.PURCHASE,),
    Metric.VISITS: (ActivityKind.Role.VISIT,),
    Metric.REVIEWS: (ActivityKind.Role.REVIEW,),
    Metric.REFERRALS: (ActivityKind.Role.REFERRAL,),
}
# Every role but refunds and opening balances makes a day active: a refund
# is not engagement, and an opening balance sums up days in another program.
_ACTIVE_ROLES = tuple(
    r
    for r in ActivityKind.Role.values
    if r not in (ActivityKind.Role.REFUND, ActivityKind.Role.OPENING)
)
# Roles whose amount counts in net spend.
_SPEND_ROLES = (
    ActivityKind.Role.PURCHASE,
    ActivityKind.Role.REFUND,
    ActivityKind.Role.OPENING,
)
_MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=20, decimal_places=4)


def _window_q(spec: MetricSpec, as_of: dt.datetime) -> Q:
    start, end = spec.window.bounds(as_of)
    in_window = Q(occurred_at__lte=end)
    if start is not None:
        in_window &= Q(occurred_at__gte=start)
    return in_window


def _aggregate(spec: MetricSpec, kinds: KindCatalogue, as_of: dt.datetime) -> Any:
    """Return the aggregate of a count or spend metric; growth value is summed apart."""
    in_window = _window_q(spec, as_of)

    if spec.metric == Metric.NET_SPEND:
        ids = kinds.ids(*_SPEND_ROLES)
        return Coalesce(
            Sum("amount", filter=in_window & Q(kind_id__in=ids)),
            Value(ZERO),
            output_field=_MONEY,
        )
    if spec.metric in _COUNTED_ROLES:
        ids = kinds.ids(*_COUNTED_ROLES[spec.metric])
        return Count("pk", filter=in_window & Q(kind_id__in=ids))
    if spec.metric == Metric.ACTIVE_DAYS:
        ids = kinds.ids(*_ACTIVE_ROLES)
        local_day = TruncDate("occurred_at", tzinfo=program_zone())
        return Count(local_day, distinct=True, filter=in_window & Q(kind_id__in=ids))
    raise ValueError(f"Unknown metric {spec.metric!r}.")


def _points(weight: WeightRule) -> Any:
    return Value(weight.per_event, output_field=_MONEY) + Value(
        weight.per_unit, output_field=_MONEY
    ) * F("amount")


def _weight_key(spec: MetricSpec, weight: WeightRule) -> str:
    return f"{spec.key}__w{weight.id}"


def _opening_key(spec: MetricSpec) -> str:
    return f"{spec.key}__opening"


def _opening_growth(spec: MetricSpec, kinds: KindCatalogue, as_of: dt.datetime) -> Any:
    """Sum the growth value that opening balances in the window carry over."""
    opening = Q(kind_id__in=kinds.ids(ActivityKind.Role.OPENING))
    return Coalesce(
        Sum("growth_points", filter=_window_q(spec, as_of) & opening),
        Value(ZERO),
        output_field=_MONEY,
    )


def _capped(value: Decimal, cap: Decimal | None) -> Decimal:
    return min(value, cap) if cap is not None else value


def _daily_points(
    activities: QuerySet[Activity],
    spec: MetricSpec,
    kinds: KindCatalogue,
    as_of: dt.datetime,
) -> dict[tuple[int, int], Decimal]:
    """Sum daily-capped weights per member and weight, one day at a time."""
    capped = [w for w in kinds.weights if w.daily_cap is not None]
    annotations = {
        f"w{weight.id}": Coalesce(
            Sum(_points(weight), filter=kinds.weight_filter(weight)),
            Value(ZERO),
            output_field=_MONEY,
        )
        for weight in capped
    }
    matches_capped = Q()
    for weight in capped:
        matches_capped |= kinds.weight_filter(weight)
    rows = (
        activities.filter(_window_q(spec, as_of) & matches_capped)
        .order_by()
        .annotate(local_day=TruncDate("occurred_at", tzinfo=program_zone()))
        .values("member_id", "local_day")
        .annotate(**annotations)
    )
    totals: dict[tuple[int, int], Decimal] = {}
    for row in rows.iterator(chunk_size=5000):
        for weight in capped:
            points = _capped(Decimal(row[f"w{weight.id}"] or 0), weight.daily_cap)
            key = (row["member_id"], weight.id)
            totals[key] = totals.get(key, ZERO) + points
    return totals


def compute_metrics(
    activities: QuerySet[Activity],
    specs: Iterable[MetricSpec],
    kinds: KindCatalogue,
    as_of: dt.datetime,
) -> dict[int, dict[str, Decimal]]:
    """Aggregate ``specs`` per member over ``activities``.

    One query computes everything, plus one more per growth value window when
    a weight has a daily cap. Members without activity in the queryset are
    absent from the result; their metrics are all zero. Growth value is the
    sum of each weight's points, each capped as the weight sets, plus the
    growth value of opening balances, which no cap limits.
    """
    specs = set(specs)
    growth_specs = [s for s in specs if s.metric == Metric.GROWTH_VALUE]
    has_openings = bool(kinds.ids(ActivityKind.Role.OPENING))
    annotations: dict[str, Any] = {}
    for spec in specs:
        if spec.metric != Metric.GROWTH_VALUE:
            annotations[spec.key] = _aggregate(spec, kinds, as_of)
    for spec in growth_specs:
        if has_openings:
            annotations[_opening_key(spec)] = _opening_growth(spec, kinds, as_of)
        for weight in kinds.weights:
            if weight.daily_cap is None:
                annotations[_weight_key(spec, weight)] = Coalesce(
                    Sum(
                        _points(weight),
                        filter=_window_q(spec, as_of) & kinds.weight_filter(weight),
                    ),
                    Value(ZERO),
                    output_field=_MONEY,
                )
    if not specs:
        return {}
    activities = activities.filter(occurred_at__lte=as_of)
    results: dict[int, dict[str, Decimal]] = {}
    if annotations:
        rows = activities.order_by().values("member_id").annotate(**annotations)
        for row in rows:
            member_id = row.pop("member_id")
            results[member_id] = {
                key: Decimal(value or 0) for key, value in row.items()
            }
    for spec in growth_specs:
        daily = (
            _daily_points(activities, spec, kinds, as_of)
            if any(w.daily_cap is not None for w in kinds.weights)
            else {}
        )
        member_ids = set(results) | {member_id for member_id, _ in daily}
        for member_id in member_ids:
            metrics = results.setdefault(member_id, {})
            total = metrics.pop(_opening_key(spec), ZERO)
            for weight in kinds.weights:
                if weight.daily_cap is None:
                    points = metrics.pop(_weight_key(spec, weight), ZERO)
                else:
                    points = daily.get((member_id, weight.id), ZERO)
                total += _capped(points, weight.window_cap)
            metrics[spec.key] = total
    return results
