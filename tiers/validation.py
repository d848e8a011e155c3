"""Checks on the ladder as a whole, worded for the staff who edit it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.utils.translation import gettext as _

from tiers.models import Metric, Tier, Window


@dataclass(frozen=True)
class ProposedRequirement:
    metric: str
    window: str
    window_days: int | None
    threshold: Decimal


@dataclass(frozen=True)
class ProposedTier:
    id: int | None
    name: str
    rank: int
    requirements: tuple[ProposedRequirement, ...]


@dataclass(frozen=True)
class LadderProblem:
    message: str
    tier_names: frozenset[str]

    def __str__(self) -> str:
        return self.message


def _window_words(requirement: ProposedRequirement) -> str:
    if requirement.window == Window.ROLLING_DAYS:
        return _("in the last %(days)d days") % {"days": requirement.window_days or 0}
    if requirement.window == Window.YEAR_TO_DATE:
        return _("in the calendar year to date")
    return _("over the member's lifetime")


def _metric_words(metric: str) -> str:
    return str(Metric(metric).label)


def ladder_problems(tiers: Iterable[ProposedTier]) -> list[LadderProblem]:
    """Return plain-language problems with a ladder, lowest tier first.

    A higher tier must not be easier to reach than a lower one: where two tiers
    measure the same metric over the same window, the higher tier's threshold
    must be at least the lower tier's.
    """
    ordered = sorted(tiers, key=lambda tier: tier.rank)
    problems: list[LadderProblem] = []
    if not ordered:
        return [
            LadderProblem(
                _("The ladder has no tiers. Add a base tier first."), frozenset()
            )
        ]
    for tier in ordered[1:]:
        if not tier.requirements:
            message = _(
                "%(tier)s has no requirements, so every member would reach it. "
                "Add at least one requirement."
            ) % {"tier": tier.name}
            problems.append(LadderProblem(message, frozenset({tier.name})))
    for lower_index, lower in enumerate(ordered[1:], start=1):
        for higher in ordered[lower_index + 1 :]:
            for high_req in higher.requirements:
                for low_req in lower.requirements:
                    same_measure = (
                        high_req.metric == low_req.metric
                        and high_req.window == low_req.window
                        and high_req.window_days == low_req.window_days
                    )
                    if same_measure and high_req.threshold < low_req.threshold:
                        message = _(
                            "%(higher)s is easier to reach than %(lower)s: it "
                            "needs %(metric)s of %(high)s %(window)s, but "
                            "%(lower)s needs %(low)s. Raise %(higher)s's "
                            "threshold or lower %(lower)s's."
                        ) % {
                            "higher": higher.name,
                            "lower": lower.name,
                            "metric": _metric_words(high_req.metric),
                            "high": f"{high_req.threshold:,}",
                            "low": f"{low_req.threshold:,}",
                            "window": _window_words(high_req),
                        }
                        problems.append(
                            LadderProblem(message, frozenset({higher.name, lower.name}))
                        )
    return problems


def current_ladder() -> list[ProposedTier]:
    """Load the saved ladder as proposals (two queries)."""
    return [
        ProposedTier(
            id=tier.pk,
            name=tier.name,
            rank=tier.rank,
            requirements=tuple(
                ProposedRequirement(r.metric, r.window, r.window_days, r.threshold)
                for r in tier.requirements.all()
            ),
        )
        for tier in Tier.objects.prefetch_related("requirements")
    ]
