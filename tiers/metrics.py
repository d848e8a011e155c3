"""Metric definitions and the single aggregate query that computes them.

Every metric of every requirement in the ladder is computed for a set of members
in one GROUP BY over the activity ledger, with one filtered aggregate per
(metric, window) pair, so the cost is one pass over the ledger whatever the
number of members or requirements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import (
    Case,
    Count,
    DecimalField,
    F,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
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
        zone = program_zone()
        local_day = as_of.astimezone(zone).date()
        if self.kind == Window.LIFETIME:
            return None, as_of
        if self.kind == Window.YEAR_TO_DATE:
            first = local_day.replace(month=1, day=1)
        elif self.kind == Window.ROLLING_DAYS:
            if not self.days:
                raise ValueError("A rolling window needs a positive number of days.")
            first = local_day - dt.timedelta(days=self.days - 1)
        else:
            raise ValueError(f"Unknown window {self.kind!r}.")
        return dt.datetime.combine(first, dt.time.min, tzinfo=zone), as_of


@dataclass(frozen=True)
class MetricSpec:
    metric: str
    window: WindowSpec

    @property
    def key(self) -> str:
        return f"{self.metric}__{self.window.key}"


@dataclass(frozen=True)
class KindCatalogue:
    """Activity kind ids grouped by role, and growth value weights by kind id."""

    ids_by_role: Mapping[str, frozenset[int]]
    weights: Mapping[int, tuple[Decimal, Decimal]]

    def ids(self, *roles: str) -> list[int]:
        found: set[int] = set()
        for role in roles:
            found |= self.ids_by_role.get(role, frozenset())
        return sorted(found)

    @classmethod
    def load(cls) -> KindCatalogue:
        ids_by_role: dict[str, set[int]] = {}
        weights: dict[int, tuple[Decimal, Decimal]] = {}
        for kind in ActivityKind.objects.select_related("growth_weight"):
            ids_by_role.setdefault(kind.role, set()).add(kind.pk)
            weight = getattr(kind, "growth_weight", None)
            if weight is not None and (
                weight.points_per_event or weight.points_per_unit
            ):
                weights[kind.pk] = (weight.points_per_event, weight.points_per_unit)
        return cls({role: frozenset(ids) for role, ids in ids_by_role.items()}, weights)


_COUNTED_ROLES: dict[str, tuple[str, ...]] = {
    Metric.ORDERS: (ActivityKind.Role.PURCHASE,),
    Metric.VISITS: (ActivityKind.Role.VISIT,),
    Metric.REVIEWS: (ActivityKind.Role.REVIEW,),
    Metric.REFERRALS: (ActivityKind.Role.REFERRAL,),
}
# Every role but refunds makes a day active: a refund is not engagement.
_ACTIVE_ROLES = tuple(
    r for r in ActivityKind.Role.values if r != ActivityKind.Role.REFUND
)
_MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=20, decimal_places=4)


def _aggregate(spec: MetricSpec, kinds: KindCatalogue, as_of: dt.datetime):  # type: ignore[no-untyped-def]
    start, end = spec.window.bounds(as_of)
    in_window = Q(occurred_at__lte=end)
    if start is not None:
        in_window &= Q(occurred_at__gte=start)

    if spec.metric == Metric.NET_SPEND:
        ids = kinds.ids(ActivityKind.Role.PURCHASE, ActivityKind.Role.REFUND)
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
    if spec.metric == Metric.GROWTH_VALUE:
        if not kinds.weights:
            return Value(ZERO, output_field=_MONEY)
        points = Case(
            *[
                When(
                    kind_id=kind_id,
                    then=Value(per_event, output_field=_MONEY)
                    + Value(per_unit, output_field=_MONEY) * F("amount"),
                )
                for kind_id, (per_event, per_unit) in kinds.weights.items()
            ],
            default=Value(ZERO, output_field=_MONEY),
            output_field=_MONEY,
        )
        return Coalesce(Sum(points, filter=in_window), Value(ZERO), output_field=_MONEY)
    raise ValueError(f"Unknown metric {spec.metric!r}.")


def compute_metrics(
    activities: QuerySet[Activity],
    specs: Iterable[MetricSpec],
    kinds: KindCatalogue,
    as_of: dt.datetime,
) -> dict[int, dict[str, Decimal]]:
    """Aggregate ``specs`` per member over ``activities`` in one query.

    Members without activity in the queryset are absent from the result; their
    metrics are all zero.
    """
    annotations = {spec.key: _aggregate(spec, kinds, as_of) for spec in set(specs)}
    if not annotations:
        return {}
    rows = (
        activities.filter(occurred_at__lte=as_of)
        .order_by()
        .values("member_id")
        .annotate(**annotations)
    )
    results: dict[int, dict[str, Decimal]] = {}
    for row in rows:
        member_id = row.pop("member_id")
        results[member_id] = {key: Decimal(value or 0) for key, value in row.items()}
    return results
