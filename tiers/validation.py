"""Checks on a rule version as a whole, worded for the staff who edit it.

Blocking problems stop a version from being published; warnings are shown
beside the draft and on the publish page.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Min
from django.utils import timezone
from django.utils.translation import gettext as _

from members.models import Activity
from tiers.ladder import Ladder, LadderError, RequirementRule, TierRuleSet
from tiers.metrics import program_zone
from tiers.models import MONEY_METRICS, Metric, RuleVersion, Window

# A count threshold this large is far more likely an amount typed into the
# wrong metric than a real target: 1,000 orders a year is about 3 a day.
SUSPICIOUS_COUNT = Decimal("1000")


@dataclass(frozen=True)
class LadderProblem:
    message: str
    tier_names: frozenset[str]
    blocking: bool = True

    def __str__(self) -> str:
        return self.message


def _window_words(requirement: RequirementRule) -> str:
    if requirement.window.kind == Window.ROLLING_DAYS:
        return _("in the last %(days)d days") % {"days": requirement.window.days or 0}
    if requirement.window.kind == Window.YEAR_TO_DATE:
        return _("in the calendar year to date")
    return _("over the member's lifetime")


def _metric_words(metric: str) -> str:
    return str(Metric(metric).label)


def _entry_leaves(tier: TierRuleSet) -> list[RequirementRule]:
    return list(tier.entry.leaves()) if tier.entry else []


def _easier_than_lower(tiers: tuple[TierRuleSet, ...]) -> list[LadderProblem]:
    problems = []
    for index, lower in enumerate(tiers[1:], start=1):
        for higher in tiers[index + 1 :]:
            for high in _entry_leaves(higher):
                for low in _entry_leaves(lower):
                    if high.spec == low.spec and high.threshold < low.threshold:
                        message = _(
                            "%(higher)s is easier to reach than %(lower)s: it needs "
                            "%(metric)s of %(high)s %(window)s, but %(lower)s needs "
                            "%(low)s. Raise %(higher)s's threshold or lower %(lower)s's."
                        ) % {
                            "higher": higher.name,
                            "lower": lower.name,
                            "metric": _metric_words(high.metric),
                            "high": f"{high.threshold:,}",
                            "low": f"{low.threshold:,}",
                            "window": _window_words(high),
                        }
                        problems.append(
                            LadderProblem(message, frozenset({higher.name, lower.name}))
                        )
    return problems


def _unit_problems(tier: TierRuleSet) -> list[LadderProblem]:
    problems = []
    groups = [g for g in (tier.entry, tier.retention) if g is not None]
    for requirement in (leaf for group in groups for leaf in group.leaves()):
        words = {
            "tier": tier.name,
            "metric": _metric_words(requirement.metric),
            "threshold": f"{requirement.threshold:,}",
            "window": _window_words(requirement),
        }
        days = requirement.window.days
        if (
            requirement.metric == Metric.ACTIVE_DAYS
            and days is not None
            and requirement.threshold > days
        ):
            message = (
                _(
                    "%(tier)s needs %(threshold)s active days %(window)s, which no "
                    "member can reach. Lower the threshold or lengthen the window."
                )
                % words
            )
            problems.append(LadderProblem(message, frozenset({tier.name})))
        elif (
            requirement.metric not in MONEY_METRICS
            and requirement.metric != Metric.GROWTH_VALUE
            and requirement.threshold >= SUSPICIOUS_COUNT
        ):
            message = (
                _(
                    "%(tier)s needs %(threshold)s %(metric)s %(window)s. That looks "
                    "like an amount typed into a count; check the metric."
                )
                % words
            )
            problems.append(
                LadderProblem(message, frozenset({tier.name}), blocking=False)
            )
    return problems


def _retention_stricter(tier: TierRuleSet) -> list[LadderProblem]:
    if tier.retention is None or tier.entry is None:
        return []
    problems = []
    for keep in tier.retention.leaves():
        for enter in tier.entry.leaves():
            if keep.spec == enter.spec and keep.threshold > enter.threshold:
                message = _(
                    "%(tier)s is harder to keep than to enter: retention needs "
                    "%(metric)s of %(keep)s %(window)s, entry only %(enter)s."
                ) % {
                    "tier": tier.name,
                    "metric": _metric_words(keep.metric),
                    "keep": f"{keep.threshold:,}",
                    "enter": f"{enter.threshold:,}",
                    "window": _window_words(keep),
                }
                problems.append(
                    LadderProblem(message, frozenset({tier.name}), blocking=False)
                )
    return problems


def _longer_than_data(ladder: Ladder) -> list[LadderProblem]:
    first = Activity.objects.aggregate(first=Min("occurred_at"))["first"]
    if first is None:
        return []
    today = timezone.localdate(timezone=program_zone())
    held_days = (today - first.astimezone(program_zone()).date()).days + 1
    problems = []
    for tier in ladder.tiers:
        groups = [g for g in (tier.entry, tier.retention) if g is not None]
        longest = max(
            (leaf.window.days or 0 for g in groups for leaf in g.leaves()), default=0
        )
        if longest > held_days:
            message = _(
                "%(tier)s looks back %(window)d days, but the ledger holds only "
                "%(held)d days of activity, so members look less active than they "
                "are until it fills. Import older activity or shorten the window."
            ) % {"tier": tier.name, "window": longest, "held": held_days}
            problems.append(
                LadderProblem(message, frozenset({tier.name}), blocking=False)
            )
    return problems


def ladder_problems(ladder: Ladder) -> list[LadderProblem]:
    """Return the problems of a loaded version, blocking ones first."""
    problems: list[LadderProblem] = []
    base = ladder.base
    if base.entry is not None and list(base.entry.leaves()):
        message = _(
            "The version has no base tier: its lowest tier, %(tier)s, has entry "
            "requirements, so members who meet none would have no tier. Remove "
            "%(tier)s's requirements or add a lower tier."
        ) % {"tier": base.name}
        problems.append(LadderProblem(message, frozenset({base.name})))
    for tier in ladder.tiers[1:]:
        if tier.entry is None or not list(tier.entry.leaves()):
            message = _(
                "%(tier)s has no requirements, so every member would reach it. "
                "Add at least one requirement."
            ) % {"tier": tier.name}
            problems.append(LadderProblem(message, frozenset({tier.name})))
    problems.extend(_easier_than_lower(ladder.tiers))
    for tier in ladder.tiers:
        problems.extend(_unit_problems(tier))
        problems.extend(_retention_stricter(tier))
    problems.extend(_longer_than_data(ladder))
    return sorted(problems, key=lambda p: not p.blocking)


def version_problems(version: RuleVersion) -> list[LadderProblem]:
    """Load ``version`` and return its problems."""
    try:
        ladder = Ladder.load(version)
    except LadderError as error:
        return [LadderProblem(str(error), frozenset())]
    return ladder_problems(ladder)
