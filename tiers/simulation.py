"""Simulating a draft rule version on current data, writing nothing."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone

from members.importing.formats import write_workbook
from members.models import Member
from tiers.evaluation import iter_evaluations
from tiers.ladder import Ladder
from tiers.models import RuleVersion, Tier

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
    metric_keys: list[str] = field(default_factory=list)

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
        metric_keys=sorted(spec.key for spec in ladder.specs),
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


def movers_workbook(result: SimulationResult) -> bytes:
    """Write the movers and the movement matrix to an XLSX file."""
    names: dict[int, str] = {}
    ids = [mover.member_id for mover in result.movers]
    for start in range(0, len(ids), 5000):
        names.update(
            Member.objects.filter(pk__in=ids[start : start + 5000]).values_list(
                "pk", "name"
            )
        )
    movers = (
        [
            mover.member_id,
            names.get(mover.member_id, ""),
            mover.from_tier or "",
            mover.to_tier,
            mover.direction,
            *[mover.metrics.get(key, Decimal(0)) for key in result.metric_keys],
        ]
        for mover in result.movers
    )
    matrix = (
        [source or "(no tier)", *counts, up, down]
        for source, counts, up, down in result.rows()
    )
    return write_workbook(
        [
            (
                "Movers",
                [
                    "member_id",
                    "name",
                    "from_tier",
                    "to_tier",
                    "direction",
                    *result.metric_keys,
                ],
                movers,
            ),
            ("Matrix", ["from \\ to", *result.tier_names, "up", "down"], matrix),
        ]
    )
