"""The tier ladder loaded into plain immutable objects for evaluation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tiers.metrics import KindCatalogue, MetricSpec, WindowSpec
from tiers.models import Tier


class LadderError(Exception):
    """Raised when the ladder cannot be evaluated, e.g. no tiers are defined."""


@dataclass(frozen=True)
class RequirementRule:
    id: int
    metric: str
    window: WindowSpec
    threshold: Decimal

    @property
    def spec(self) -> MetricSpec:
        return MetricSpec(self.metric, self.window)


@dataclass(frozen=True)
class TierRule:
    id: int
    name: str
    rank: int
    colour: str
    combine: str
    requirements: tuple[RequirementRule, ...]

    def check(
        self, metrics: dict[str, Decimal], as_of: dt.datetime
    ) -> dict[str, object]:
        """Return the explanation of this tier for one member's metrics."""
        rows = []
        for requirement in self.requirements:
            value = metrics.get(requirement.spec.key, Decimal(0))
            start, end = requirement.window.bounds(as_of)
            rows.append(
                {
                    "requirement": requirement.id,
                    "metric": requirement.metric,
                    "window": requirement.window.kind,
                    "days": requirement.window.days,
                    "start": start.isoformat() if start else None,
                    "end": end.isoformat(),
                    "value": str(value),
                    "threshold": str(requirement.threshold),
                    "met": value >= requirement.threshold,
                }
            )
        if not rows:
            reached = True
        elif self.combine == Tier.Combine.ANY:
            reached = any(row["met"] for row in rows)
        else:
            reached = all(row["met"] for row in rows)
        return {
            "tier": self.id,
            "name": self.name,
            "rank": self.rank,
            "combine": self.combine,
            "reached": reached,
            "requirements": rows,
        }


@dataclass(frozen=True)
class Ladder:
    tiers: tuple[TierRule, ...]  # ordered by rank, base first
    kinds: KindCatalogue

    @property
    def base(self) -> TierRule:
        return self.tiers[0]

    @property
    def specs(self) -> set[MetricSpec]:
        return {r.spec for tier in self.tiers[1:] for r in tier.requirements}

    def by_id(self, tier_id: int | None) -> TierRule | None:
        for tier in self.tiers:
            if tier.id == tier_id:
                return tier
        return None

    def above(self, tier_id: int | None) -> TierRule | None:
        """Return the next tier up from ``tier_id``, or the base for no tier."""
        current = self.by_id(tier_id)
        if current is None:
            return self.base
        higher = [tier for tier in self.tiers if tier.rank > current.rank]
        return higher[0] if higher else None

    def decide(
        self, metrics: dict[str, Decimal], as_of: dt.datetime
    ) -> tuple[TierRule, list[dict[str, object]]]:
        """Pick the highest tier whose requirements hold, with every tier's check.

        The base tier has no requirements that count: every member holds it.
        """
        checks = [tier.check(metrics, as_of) for tier in self.tiers[1:]]
        chosen = self.base
        for tier, check in zip(self.tiers[1:], checks, strict=True):
            if check["reached"]:
                chosen = tier
        return chosen, checks

    @classmethod
    def load(cls) -> Ladder:
        """Load tiers, requirements and activity kinds (three queries)."""
        tiers = []
        for tier in Tier.objects.prefetch_related("requirements").order_by("rank"):
            requirements = tuple(
                RequirementRule(
                    id=r.pk,
                    metric=r.metric,
                    window=WindowSpec(r.window, r.window_days),
                    threshold=r.threshold,
                )
                for r in sorted(tier.requirements.all(), key=lambda r: r.pk)
            )
            tiers.append(
                TierRule(
                    id=tier.pk,
                    name=tier.name,
                    rank=tier.rank,
                    colour=tier.colour,
                    combine=tier.combine,
                    requirements=requirements,
                )
            )
        if not tiers:
            raise LadderError(
                "No tiers are defined. Add at least a base tier in the admin under Tiers."
            )
        return cls(tuple(tiers), KindCatalogue.load())
