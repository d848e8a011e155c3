"""A rule version loaded into plain immutable objects for evaluation."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from tiers.metrics import ZERO, KindCatalogue, MetricSpec, WindowSpec
from tiers.models import (
    Downgrade,
    Requirement,
    RuleGroup,
    RuleVersion,
    Tier,
    TierRule,
    Validity,
)


class LadderError(Exception):
    """Raised when the rules cannot be evaluated, e.g. nothing is published."""


@dataclass(frozen=True)
class RequirementRule:
    id: int
    metric: str
    window: WindowSpec
    threshold: Decimal

    @functools.cached_property
    def spec(self) -> MetricSpec:
        return MetricSpec(self.metric, self.window)

    @functools.cached_property
    def key(self) -> str:
        return self.spec.key

    def holds(self, metrics: dict[str, Decimal]) -> bool:
        return metrics.get(self.key, ZERO) >= self.threshold

    def check(self, metrics: dict[str, Decimal], as_of: dt.datetime) -> dict[str, Any]:
        value = metrics.get(self.key, ZERO)
        start, end = _window_text(self.window, as_of, settings.TIME_ZONE)
        return {
            "requirement": self.id,
            "metric": self.metric,
            "window": self.window.kind,
            "days": self.window.days,
            "start": start,
            "end": end,
            "value": str(value),
            "threshold": str(self.threshold),
            "met": value >= self.threshold,
        }


@functools.lru_cache(maxsize=256)
def _window_text(
    window: WindowSpec, as_of: dt.datetime, zone_name: str = ""
) -> tuple[str | None, str]:
    start, end = window.bounds(as_of)
    return (start.isoformat() if start else None), end.isoformat()


@dataclass(frozen=True)
class GroupRule:
    """All, any or at least N of its items, each a requirement or a subgroup."""

    id: int
    operator: str
    at_least: int | None
    items: tuple[RequirementRule | GroupRule, ...]

    def holds(self, metrics: dict[str, Decimal]) -> bool:
        """Return whether the group is met, without building an explanation."""
        held = sum(1 for item in self.items if item.holds(metrics))
        if self.operator == RuleGroup.Operator.ANY:
            return held >= 1
        if self.operator == RuleGroup.Operator.AT_LEAST:
            return held >= (self.at_least or 0)
        return held == len(self.items)

    def leaves(self) -> Iterator[RequirementRule]:
        for item in self.items:
            if isinstance(item, GroupRule):
                yield from item.leaves()
            else:
                yield item

    def check(self, metrics: dict[str, Decimal], as_of: dt.datetime) -> dict[str, Any]:
        items = [item.check(metrics, as_of) for item in self.items]
        held = sum(1 for item in items if item["met"])
        if self.operator == RuleGroup.Operator.ANY:
            met = held >= 1
        elif self.operator == RuleGroup.Operator.AT_LEAST:
            met = held >= (self.at_least or 0)
        else:
            met = held == len(items)
        return {
            "group": self.id,
            "operator": self.operator,
            "at_least": self.at_least,
            "met": met,
            "items": items,
        }


def _flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in node["items"]:
        rows.extend(_flatten(item) if "items" in item else [item])
    return rows


@dataclass(frozen=True)
class TierRuleSet:
    """One tier in a version: its identity and its entry and retention rules."""

    id: int
    name: str
    rank: int
    colour: str
    entry: GroupRule | None
    retention: GroupRule | None
    validity: str = Validity.CONTINUOUS
    validity_months: int | None = None
    downgrade: str = Downgrade.TO_QUALIFIED
    grace_days: int = 0
    demote_between_reviews: bool = False
    # False for a tier that members hold but this version has no rule for:
    # it can be kept only by a publish policy, never by its own rules.
    in_version: bool = True

    @property
    def reviewed(self) -> bool:
        """Whether a hold on this tier lasts until a review date."""
        return self.validity != Validity.CONTINUOUS

    def holds(self, metrics: dict[str, Decimal], *, retention: bool = False) -> bool:
        if not self.in_version:
            return False
        group = (self.retention or self.entry) if retention else self.entry
        return group.holds(metrics) if group else True

    def check(
        self,
        metrics: dict[str, Decimal],
        as_of: dt.datetime,
        *,
        retention: bool = False,
    ) -> dict[str, Any]:
        """Return this tier's explanation: the rule tree and its flattened requirements.

        With ``retention`` the retention rules are checked, falling back to the
        entry rules when the tier has none. A tier without rules always holds.
        """
        group = (self.retention or self.entry) if retention else self.entry
        tree = group.check(metrics, as_of) if group else None
        return {
            "tier": self.id,
            "name": self.name,
            "rank": self.rank,
            "purpose": "retention" if retention else "entry",
            "combine": group.operator if group else RuleGroup.Operator.ALL,
            "at_least": group.at_least if group else None,
            "reached": tree["met"] if tree else True,
            "rule": tree,
            "requirements": _flatten(tree) if tree else [],
        }


@dataclass(frozen=True)
class Ladder:
    version_id: int
    version_number: int
    policy: str
    effective_from: dt.datetime | None
    tiers: tuple[TierRuleSet, ...]  # ordered by rank, base first
    kinds: KindCatalogue
    # Tiers that exist but have no rule in this version, by id, loaded on
    # the first lookup of a tier id the version does not rule.
    outside: dict[int, TierRuleSet] = field(default_factory=dict, compare=False)

    @property
    def base(self) -> TierRuleSet:
        return self.tiers[0]

    @property
    def specs(self) -> set[MetricSpec]:
        specs: set[MetricSpec] = set()
        for tier in self.tiers:
            for group in (tier.entry, tier.retention):
                if group is not None:
                    specs.update(leaf.spec for leaf in group.leaves())
        return specs

    def by_id(self, tier_id: int | None) -> TierRuleSet | None:
        """Return a tier of this version, or a tier outside it that members hold."""
        for tier in self.tiers:
            if tier.id == tier_id:
                return tier
        if tier_id is None:
            return None
        if not self.outside:
            self._load_outside()
        return self.outside.get(tier_id)

    def _load_outside(self) -> None:
        """Load the tiers this version has no rule for, once, on the first
        lookup that needs them."""
        ruled = {tier.id for tier in self.tiers}
        self.outside[0] = self.base  # marks the lookup as done; no tier has id 0
        for tier in Tier.objects.exclude(pk__in=ruled):
            self.outside[tier.pk] = TierRuleSet(
                id=tier.pk,
                name=tier.name,
                rank=tier.rank,
                colour=tier.colour,
                entry=None,
                retention=None,
                in_version=False,
            )

    def below(self, tier_id: int) -> TierRuleSet:
        """Return the next tier down from ``tier_id``, or the base tier."""
        current = self.by_id(tier_id)
        lower = [t for t in self.tiers if current is not None and t.rank < current.rank]
        return lower[-1] if lower else self.base

    def above(self, tier_id: int | None) -> TierRuleSet | None:
        """Return the next tier up from ``tier_id``, or the base for no tier."""
        current = self.by_id(tier_id)
        if current is None:
            return self.base
        higher = [tier for tier in self.tiers if tier.rank > current.rank]
        return higher[0] if higher else None

    def choose(
        self, metrics: dict[str, Decimal], current_tier_id: int | None = None
    ) -> tuple[TierRuleSet, bool]:
        """Pick the member's tier and whether retention kept it, without explaining.

        The highest tier whose entry rules hold wins. A member already in a
        higher tier keeps it while that tier's retention rules hold (保级).
        """
        chosen = self.base
        for tier in self.tiers[1:]:
            if tier.holds(metrics):
                chosen = tier
        current = self.by_id(current_tier_id)
        if current is not None and current.rank > chosen.rank:
            if current.holds(metrics, retention=True):
                return current, True
        return chosen, False

    def decide(
        self,
        metrics: dict[str, Decimal],
        as_of: dt.datetime,
        current_tier_id: int | None = None,
    ) -> tuple[TierRuleSet, list[dict[str, Any]], dict[str, Any] | None]:
        """Pick the member's tier, with every tier's entry check.

        The highest tier whose entry rules hold wins. A member already in a
        higher tier keeps it while that tier's retention rules hold (保级), so
        the retention check, when one was needed, is returned too.
        """
        checks = [tier.check(metrics, as_of) for tier in self.tiers[1:]]
        chosen = self.base
        for tier, check in zip(self.tiers[1:], checks, strict=True):
            if check["reached"]:
                chosen = tier
        retention_check = None
        current = self.by_id(current_tier_id)
        if current is not None and current.rank > chosen.rank:
            retention_check = current.check(metrics, as_of, retention=True)
            if retention_check["reached"]:
                chosen = current
        return chosen, checks, retention_check

    @classmethod
    def load(
        cls, version: RuleVersion | None = None, as_of: dt.datetime | None = None
    ) -> Ladder:
        """Load ``version``, or the version in effect at ``as_of`` (default now)."""
        if version is None:
            version = RuleVersion.objects.in_effect(as_of or timezone.now())
        if version is None:
            raise LadderError(
                "No published rule version is in effect. Publish a version in "
                "the admin under Rule versions."
            )
        groups = {g.pk: g for g in RuleGroup.objects.filter(version=version)}
        requirements_by_group: dict[int, list[Any]] = {}
        children_by_group: dict[int, list[RuleGroup]] = {}
        for group in groups.values():
            if group.parent_id is not None:
                children_by_group.setdefault(group.parent_id, []).append(group)
        for requirement in Requirement.objects.filter(group__version=version):
            requirements_by_group.setdefault(requirement.group_id, []).append(
                requirement
            )

        def build(group: RuleGroup) -> GroupRule:
            entries: list[tuple[int, int, RequirementRule | GroupRule]] = []
            for requirement in requirements_by_group.get(group.pk, []):
                rule = RequirementRule(
                    id=requirement.pk,
                    metric=requirement.metric,
                    window=WindowSpec(requirement.window, requirement.window_days),
                    threshold=requirement.threshold,
                )
                entries.append((requirement.position, requirement.pk, rule))
            for child in children_by_group.get(group.pk, []):
                entries.append((child.position, child.pk, build(child)))
            entries.sort(key=lambda entry: (entry[0], entry[1]))
            return GroupRule(
                id=group.pk,
                operator=group.operator,
                at_least=group.at_least,
                items=tuple(entry[2] for entry in entries),
            )

        tiers = []
        rules = TierRule.objects.filter(version=version).select_related("tier")
        for rule in sorted(rules, key=lambda r: r.tier.rank):
            tiers.append(
                TierRuleSet(
                    id=rule.tier_id,
                    name=rule.tier.name,
                    rank=rule.tier.rank,
                    colour=rule.tier.colour,
                    entry=build(groups[rule.entry_id]) if rule.entry_id else None,
                    retention=build(groups[rule.retention_id])
                    if rule.retention_id
                    else None,
                    validity=rule.validity,
                    validity_months=rule.validity_months,
                    downgrade=rule.downgrade,
                    grace_days=rule.grace_days,
                    demote_between_reviews=rule.demote_between_reviews,
                )
            )
        if not tiers:
            raise LadderError(
                f"Rule version {version.number} has no tiers. Add tier rules to it "
                "in the admin."
            )
        return cls(
            version_id=version.pk,
            version_number=version.number,
            policy=version.policy,
            effective_from=version.effective_from,
            tiers=tuple(tiers),
            kinds=KindCatalogue.load(version.pk),
        )
