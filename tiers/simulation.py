"""Simulating a draft rule version on current data, writing nothing."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone
from django.utils.translation import gettext, pgettext

from members.importing.formats import write_workbook
from members.models import Member
from members.privacy import mask_name
from tiers.evaluation import iter_evaluations
from tiers.ladder import Ladder
from tiers.metrics import MetricSpec
from tiers.models import Metric, RuleVersion, Tier, Window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mover:
    member_id: int
    from_tier: str | None
    to_tier: str
    direction: str  # "up", "down" or "new"
    metrics: dict[str, Decimal]


@dataclass
class SimulationResult:
    version_number: int
    as_of: dt.datetime
    tier_names: list[str]
    evaluated: int = 0
    matrix: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    up_from: Counter[str | None] = field(default_factory=Counter)
    down_from: Counter[str | None] = field(default_factory=Counter)
    movers: list[Mover] = field(default_factory=list)
    # The metrics of the version's requirements, sorted by key.
    metric_specs: list[MetricSpec] = field(default_factory=list)

    @property
    def metric_keys(self) -> list[str]:
        return [spec.key for spec in self.metric_specs]

    def count(self, from_tier: str | None, to_tier: str) -> int:
        return self.matrix[(from_tier, to_tier)]

    @property
    def moved(self) -> int:
        return len(self.movers)

    def rows(self) -> list[tuple[str | None, list[int], int, int]]:
        """Return the matrix as rows: from-tier, counts per to-tier, up, down."""
        sources: list[str | None] = [None, *self.tier_names]
        rows = []
        for source in sources:
            counts = [self.count(source, target) for target in self.tier_names]
            if source is None and not any(counts):
                continue
            rows.append((source, counts, self.up_from[source], self.down_from[source]))
        return rows

    def column_totals(self) -> list[int]:
        """Return the number of members each tier would hold, in tier order."""
        return [
            sum(self.count(source, target) for source in [None, *self.tier_names])
            for target in self.tier_names
        ]


def metric_heading(spec: MetricSpec) -> str:
    """Name a metric and its window for a column heading.

    For example "net spend, last 365 days" or "orders, lifetime".
    """
    window = spec.window
    if window.kind == Window.ROLLING_DAYS:
        window_words = gettext("last %(days)d days") % {"days": window.days or 0}
    else:
        window_words = str(Window(window.kind).label)
    return f"{Metric(spec.metric).label}, {window_words}"


def simulate(
    version: RuleVersion,
    *,
    as_of: dt.datetime | None = None,
    chunk_size: int | None = None,
) -> SimulationResult:
    """Evaluate every member under ``version`` against their current tier.

    The result is what publishing ``version`` with the "reevaluate" policy
    would write at ``as_of``: the same evaluation code runs, only the writes
    are left out.
    """
    as_of = as_of or timezone.now()
    ladder = Ladder.load(version)
    ranks = dict(Tier.objects.values_list("name", "rank"))
    names_by_id = dict(Tier.objects.values_list("pk", "name"))
    result = SimulationResult(
        version_number=ladder.version_number,
        as_of=as_of,
        tier_names=[tier.name for tier in ladder.tiers],
        metric_specs=sorted(ladder.specs, key=lambda spec: spec.key),
    )
    logger.info("simulation started for rule version %d", ladder.version_number)
    for evaluations in iter_evaluations(ladder, as_of=as_of, chunk_size=chunk_size):
        for evaluation in evaluations:
            result.evaluated += 1
            previous_id = evaluation.previous_tier_id
            source = names_by_id.get(previous_id) if previous_id is not None else None
            target = evaluation.tier.name
            result.matrix[(source, target)] += 1
            if source == target:
                continue
            if source is None:
                direction = "new"
            elif ranks[target] > ranks[source]:
                direction = "up"
                result.up_from[source] += 1
            else:
                direction = "down"
                result.down_from[source] += 1
            result.movers.append(
                Mover(
                    evaluation.member_id, source, target, direction, evaluation.metrics
                )
            )
    logger.info(
        "simulation finished for rule version %d evaluated=%d moved=%d",
        ladder.version_number,
        result.evaluated,
        result.moved,
    )
    return result


def movers_workbook(result: SimulationResult, *, masked: bool = True) -> bytes:
    """Write the movers and the movement matrix to an XLSX file.

    The headings are those of the simulation page, in the active language.
    Metric values stay numbers, so that the spreadsheet can sum and sort them.
    Member names are masked unless ``masked`` is false.
    """
    names: dict[int, str] = {}
    ids = [mover.member_id for mover in result.movers]
    for start in range(0, len(ids), 5000):
        names.update(
            Member.objects.filter(pk__in=ids[start : start + 5000]).values_list(
                "pk", "name"
            )
        )
    movers_headers = [
        gettext("Member ID"),
        gettext("Member"),
        gettext("From"),
        gettext("To"),
        gettext("Direction"),
        *[metric_heading(spec) for spec in result.metric_specs],
    ]
    movers = (
        [
            mover.member_id,
            mask_name(names.get(mover.member_id, ""))
            if masked
            else names.get(mover.member_id, ""),
            mover.from_tier or "",
            mover.to_tier,
            mover.direction,
            *[mover.metrics.get(key, Decimal(0)) for key in result.metric_keys],
        ]
        for mover in result.movers
    )
    return write_workbook(
        [
            (gettext("Movers"), movers_headers, movers),
            (gettext("Matrix"), _matrix_headers(result), _matrix_rows(result)),
        ]
    )


def _matrix_headers(result: SimulationResult) -> list[str]:
    return [
        gettext("From \\ to"),
        *result.tier_names,
        gettext("Total"),
        pgettext("tier movement", "Up"),
        pgettext("tier movement", "Down"),
    ]


def _matrix_rows(result: SimulationResult) -> list[list[str | int]]:
    """Lay out the matrix as the page does: a total per row and a total row."""
    rows: list[list[str | int]] = []
    for source, counts, up, down in result.rows():
        label = source or gettext("(no tier yet)")
        rows.append([label, *counts, sum(counts), up, down])
    column_totals = result.column_totals()
    rows.append(
        [
            gettext("Total"),
            *column_totals,
            sum(column_totals),
            sum(result.up_from.values()),
            sum(result.down_from.values()),
        ]
    )
    return rows
