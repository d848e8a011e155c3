"""Checks on a rule version as a whole, worded for the staff who edit it.

Blocking problems stop a version from being published; warnings are shown
beside the draft and on the publish page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from django.db.models import Count, Min
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import ngettext_lazy, pgettext

from members.models import Activity
from tiers.formatting import format_count, format_metric_value
from tiers.ladder import GroupRule, Ladder, LadderError, RequirementRule, TierRuleSet
from tiers.metrics import MetricSpec, program_zone
from tiers.models import (
    MONEY_METRICS,
    Metric,
    Requirement,
    RuleGroup,
    RuleVersion,
    TierRule,
    Window,
)

# A count threshold this large is far more likely an amount typed into the
# wrong metric than a real target: 1,000 orders a year is about 3 a day.
SUSPICIOUS_COUNT = Decimal("1000")

# Thresholds of count metrics as a number and its noun. ngettext picks the
# plural form from "number", and the text shows "count", the same number with
# thousands separators.
_COUNT_QUANTITIES = {
    Metric.ORDERS: ngettext_lazy("%(count)s order", "%(count)s orders", "number"),
    Metric.ACTIVE_DAYS: ngettext_lazy(
        "%(count)s active day", "%(count)s active days", "number"
    ),
    Metric.VISITS: ngettext_lazy("%(count)s visit", "%(count)s visits", "number"),
    Metric.REVIEWS: ngettext_lazy("%(count)s review", "%(count)s reviews", "number"),
    Metric.REFERRALS: ngettext_lazy(
        "%(count)s referral", "%(count)s referrals", "number"
    ),
}


@dataclass(frozen=True)
class LadderProblem:
    message: str
    tier_names: frozenset[str]
    blocking: bool = True

    def __str__(self) -> str:
        return self.message


def _problem(
    message: str, tier_names: Iterable[str] = (), *, blocking: bool = True
) -> LadderProblem:
    # Messages can start with a tier name or a group label, which staff may
    # have typed in lower case.
    return LadderProblem(capfirst(message), frozenset(tier_names), blocking)


# Words for requirements


def _window_words(requirement: RequirementRule) -> str:
    if requirement.window.kind == Window.ROLLING_DAYS:
        return _("in the last %(days)d days") % {"days": requirement.window.days or 0}
    if requirement.window.kind == Window.YEAR_TO_DATE:
        return _("in the calendar year to date")
    return _("over the member's lifetime")


def _quantity(requirement: RequirementRule) -> str:
    """Describe a requirement's threshold without its window: "5 orders".

    Money is shown with the currency and counts as whole numbers. Both round
    up, so that a fractional threshold never reads easier than it is.
    """
    metric = requirement.metric
    threshold = requirement.threshold
    if metric == Metric.NET_SPEND:
        amount = format_metric_value(metric, threshold, round_up=True)
        return _("net spend of %(amount)s") % {"amount": amount}
    if metric == Metric.GROWTH_VALUE:
        points = format_metric_value(metric, threshold, round_up=True)
        return _("growth value of %(points)s") % {"points": points}
    number = int(threshold.to_integral_value(rounding=ROUND_CEILING))
    return _COUNT_QUANTITIES[Metric(metric)] % {
        "number": number,
        "count": format_count(number),
    }


def _entry_leaves(tier: TierRuleSet) -> list[RequirementRule]:
    return list(tier.entry.leaves()) if tier.entry else []


# Whether a higher tier's entry rules imply a lower tier's


def _requires_every_item(group: GroupRule) -> bool:
    """Return whether the group is met only when every one of its items is met."""
    if group.operator == RuleGroup.Operator.ALL:
        return True
    if group.operator == RuleGroup.Operator.AT_LEAST:
        return (group.at_least or 0) >= len(group.items)
    return len(group.items) == 1


def _guaranteed_bounds(group: GroupRule | None) -> dict[MetricSpec, Decimal]:
    """Return the lowest value of each metric that every member meeting
    ``group`` is guaranteed to have.

    Only requirements that ``group`` always needs count, which are those
    reached from the top through groups that need every item. Of several on
    the same metric and window, the highest threshold is the bound.
    """
    bounds: dict[MetricSpec, Decimal] = {}
    pending = [group] if group is not None else []
    while pending:
        node = pending.pop()
        if not _requires_every_item(node):
            continue
        for item in node.items:
            if isinstance(item, GroupRule):
                pending.append(item)
            elif item.spec not in bounds or item.threshold > bounds[item.spec]:
                bounds[item.spec] = item.threshold
    return bounds


def _met_within(
    node: GroupRule | RequirementRule, bounds: dict[MetricSpec, Decimal]
) -> bool:
    """Return whether every member with at least ``bounds`` meets ``node``.

    A requirement is met when the bound on its metric and window reaches its
    threshold. A requirement on a metric without a bound is unmet.
    """
    if isinstance(node, RequirementRule):
        bound = bounds.get(node.spec)
        return bound is not None and bound >= node.threshold
    met_count = sum(1 for item in node.items if _met_within(item, bounds))
    if node.operator == RuleGroup.Operator.ANY:
        return met_count >= 1
    if node.operator == RuleGroup.Operator.AT_LEAST:
        return met_count >= (node.at_least or 0)
    return met_count == len(node.items)


def _only_all_of(group: GroupRule) -> bool:
    """Return whether every group of the tree needs all of its items."""
    return _requires_every_item(group) and all(
        _only_all_of(item) for item in group.items if isinstance(item, GroupRule)
    )


def _lower_thresholds(
    higher: TierRuleSet, lower: TierRuleSet
) -> list[tuple[RequirementRule, RequirementRule]]:
    """Return the entry requirements where ``higher`` has the lower threshold.

    For each metric and window, the pair is the lowest requirement of
    ``higher`` and the highest of ``lower``, in the order ``lower`` lists them.
    """
    highest_low: dict[MetricSpec, RequirementRule] = {}
    for low in _entry_leaves(lower):
        current = highest_low.get(low.spec)
        if current is None or low.threshold > current.threshold:
            highest_low[low.spec] = low
    lowest_high: dict[MetricSpec, RequirementRule] = {}
    for high in _entry_leaves(higher):
        current = lowest_high.get(high.spec)
        if current is None or high.threshold < current.threshold:
            lowest_high[high.spec] = high
    return [
        (lowest_high[spec], low)
        for spec, low in highest_low.items()
        if spec in lowest_high and lowest_high[spec].threshold < low.threshold
    ]


def _easier_than_lower(tiers: tuple[TierRuleSet, ...]) -> list[LadderProblem]:
    """Find higher tiers that members may reach without meeting a lower tier.

    A lower tier is implied when it is met by a member who has exactly the
    guaranteed bounds of the higher tier's entry rules, and then nothing is
    reported. Otherwise a problem is reported if the higher tier has a lower
    threshold than the lower tier on some metric and window. It blocks when both
    trees need all of their items, because then a member with just the
    bounds reaches the higher tier and not the lower one. With "any of" or
    "at least N" groups such a member may not exist, so it is a warning.
    """
    problems = []
    for index, lower in enumerate(tiers[1:], start=1):
        if lower.entry is None:
            continue
        for higher in tiers[index + 1 :]:
            if _met_within(lower.entry, _guaranteed_bounds(higher.entry)):
                continue
            pairs = _lower_thresholds(higher, lower)
            if not pairs:
                continue
            # Pairs exist only when the higher tier has requirements.
            assert higher.entry is not None
            words = {"higher": higher.name, "lower": lower.name}
            blocking = _only_all_of(higher.entry) and _only_all_of(lower.entry)
            if blocking:
                opening = _(
                    "%(higher)s is easier to reach than %(lower)s, because members "
                    "can reach %(higher)s without meeting %(lower)s's requirements."
                )
            else:
                opening = _(
                    "%(higher)s may be easier to reach than %(lower)s, because some "
                    "members could reach %(higher)s without meeting %(lower)s's "
                    "requirements."
                )
            sentences = [opening % words]
            for high, low in pairs:
                sentences.append(
                    _(
                        "%(higher)s needs %(high)s %(window)s, but %(lower)s needs "
                        "%(low)s."
                    )
                    % {
                        **words,
                        "high": _quantity(high),
                        "low": _quantity(low),
                        "window": _window_words(high),
                    }
                )
            sentences.append(
                _("Raise %(higher)s's thresholds or lower %(lower)s's.") % words
            )
            problems.append(
                _problem(
                    " ".join(sentences),
                    {higher.name, lower.name},
                    blocking=blocking,
                )
            )
    return problems


# Thresholds that look wrong on their own


def _unit_problems(tier: TierRuleSet) -> list[LadderProblem]:
    problems = []
    groups = [g for g in (tier.entry, tier.retention) if g is not None]
    for requirement in (leaf for group in groups for leaf in group.leaves()):
        words = {
            "tier": tier.name,
            "quantity": _quantity(requirement),
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
                    "%(tier)s needs %(quantity)s %(window)s, which no member can "
                    "reach. Lower the threshold or lengthen the window."
                )
                % words
            )
            problems.append(_problem(message, {tier.name}))
        elif (
            requirement.metric not in MONEY_METRICS
            and requirement.metric != Metric.GROWTH_VALUE
            and requirement.threshold >= SUSPICIOUS_COUNT
        ):
            message = (
                _(
                    "%(tier)s needs %(quantity)s %(window)s. That looks like an "
                    "amount typed into a count, so check the metric."
                )
                % words
            )
            problems.append(_problem(message, {tier.name}, blocking=False))
    return problems


def _retention_stricter(tier: TierRuleSet) -> list[LadderProblem]:
    if tier.retention is None or tier.entry is None:
        return []
    problems = []
    for keep in tier.retention.leaves():
        for enter in tier.entry.leaves():
            if keep.spec == enter.spec and keep.threshold > enter.threshold:
                message = _(
                    "%(tier)s is harder to keep than to enter, because its "
                    "retention requirements need %(keep)s %(window)s but its "
                    "entry requirements need only %(enter)s."
                ) % {
                    "tier": tier.name,
                    "keep": _quantity(keep),
                    "enter": _quantity(enter),
                    "window": _window_words(keep),
                }
                problems.append(_problem(message, {tier.name}, blocking=False))
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
            problems.append(_problem(message, {tier.name}, blocking=False))
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
        problems.append(_problem(message, {base.name}))
    for tier in ladder.tiers[1:]:
        # An entry group whose subgroups are all empty is reported by
        # _group_problems, which can tell whether it is always or never met.
        if tier.entry is None or not tier.entry.items:
            message = _(
                "%(tier)s has no requirements, so every member would reach it. "
                "Add at least one requirement."
            ) % {"tier": tier.name}
            problems.append(_problem(message, {tier.name}))
    problems.extend(_easier_than_lower(ladder.tiers))
    for tier in ladder.tiers:
        problems.extend(_unit_problems(tier))
        problems.extend(_retention_stricter(tier))
    problems.extend(_longer_than_data(ladder))
    return sorted(problems, key=lambda p: not p.blocking)


# The shape of the rule trees, checked on the database rows


@dataclass(frozen=True)
class _Root:
    """A group that a tier rule uses as its entry or retention requirements."""

    tier: str
    retention: bool
    base: bool


@dataclass
class _VersionRows:
    """A version's groups, requirement counts and tier rules, in three queries."""

    groups: dict[int, RuleGroup]
    requirement_counts: dict[int, int]
    rules: list[TierRule]
    children: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group in self.groups.values():
            if group.parent_id in self.groups:
                self.children.setdefault(group.parent_id, []).append(group.pk)

    @classmethod
    def load(cls, version: RuleVersion) -> _VersionRows:
        counts = (
            Requirement.objects.filter(group__version=version)
            .values("group_id")
            .annotate(count=Count("pk"))
        )
        rules = TierRule.objects.filter(version=version).select_related("tier")
        return cls(
            groups={g.pk: g for g in RuleGroup.objects.filter(version=version)},
            requirement_counts={row["group_id"]: row["count"] for row in counts},
            rules=sorted(rules, key=lambda rule: rule.tier.rank),
        )

    def item_count(self, group_id: int) -> int:
        return self.requirement_counts.get(group_id, 0) + len(
            self.children.get(group_id, [])
        )

    def is_met(self, group_id: int, *, requirements_met: bool) -> bool:
        """Return whether a group is met when all its requirements are met, or none.

        Call it only on groups outside parent loops, or it never returns.
        """
        group = self.groups[group_id]
        requirements = self.requirement_counts.get(group_id, 0)
        met_count = requirements if requirements_met else 0
        met_count += sum(
            1
            for child in self.children.get(group_id, [])
            if self.is_met(child, requirements_met=requirements_met)
        )
        if group.operator == RuleGroup.Operator.ANY:
            return met_count >= 1
        if group.operator == RuleGroup.Operator.AT_LEAST:
            return met_count >= (group.at_least or 0)
        return met_count == self.item_count(group_id)

    def subtree(self, group_id: int) -> list[int]:
        """Return the group and every group inside it, outermost first."""
        found = [group_id]
        for found_id in found:
            found.extend(self.children.get(found_id, []))
        return found

    def roots(self) -> list[tuple[int, _Root]]:
        """Return each root group with its use, base tier first."""
        roots = []
        for index, rule in enumerate(self.rules):
            for group_id, retention in (
                (rule.entry_id, False),
                (rule.retention_id, True),
            ):
                if group_id is not None and group_id in self.groups:
                    roots.append(
                        (group_id, _Root(rule.tier.name, retention, index == 0))
                    )
        return roots


def _group_name(group: RuleGroup, tier: str | None = None) -> str:
    """Name a group as staff see it: its label, prefixed with its tier."""
    label = group.label or _("group #%(id)d") % {"id": group.pk}
    if tier is None or label.startswith(tier):
        return label
    return pgettext("rule check", "%(tier)s: %(group)s") % {
        "tier": tier,
        "group": label,
    }


def _use_words(root: _Root) -> str:
    if root.retention:
        return _("%(tier)s's retention requirements") % {"tier": root.tier}
    return _("%(tier)s's entry requirements") % {"tier": root.tier}


def _loop_problems(rows: _VersionRows) -> list[LadderProblem]:
    """Report groups that sit inside each other in a circle."""
    in_loop: set[int] = set()
    for group_id in rows.groups:
        path: list[int] = []
        current: int | None = group_id
        while current in rows.groups and current not in path:
            path.append(current)
            current = rows.groups[current].parent_id
        if current in path:
            in_loop.update(path[path.index(current) :])
    if not in_loop:
        return []
    names = ", ".join(sorted(_group_name(rows.groups[pk]) for pk in in_loop))
    message = _(
        "Groups %(groups)s sit inside each other in a loop, so their rules "
        "cannot be evaluated. Move one of them out of the loop."
    ) % {"groups": names}
    return [_problem(message)]


def _root_problems(
    rows: _VersionRows, roots: list[tuple[int, _Root]]
) -> list[LadderProblem]:
    problems = []
    uses: dict[int, list[_Root]] = {}
    for group_id, root in roots:
        uses.setdefault(group_id, []).append(root)
    for group_id, group_uses in uses.items():
        group = rows.groups[group_id]
        tiers = {use.tier for use in group_uses}
        if len(tiers) > 1:
            message = _(
                "%(group)s is both %(first)s and %(second)s, so changing it for "
                "one tier changes it for the other. Give each tier its own group."
            ) % {
                "group": _group_name(group),
                "first": _use_words(group_uses[0]),
                "second": _use_words(group_uses[1]),
            }
            problems.append(_problem(message, tiers))
        parent = rows.groups.get(group.parent_id) if group.parent_id else None
        if parent is not None:
            message = _(
                "%(group)s is %(use)s and also sits inside %(parent)s, so it "
                "counts in both places. Take it out of %(parent)s, or use a "
                "separate group for one of them."
            ) % {
                "group": _group_name(group),
                "use": _use_words(group_uses[0]),
                "parent": _group_name(parent),
            }
            problems.append(_problem(message, tiers))
    return problems


def _effect_words(
    rows: _VersionRows, root_id: int, root: _Root, *, requirements_met: bool
) -> str:
    """Describe what a group that is always or never met does to its tier.

    With ``requirements_met`` False, the check is whether the tree is met for
    a member who meets no requirement. With True, whether it fails for a
    member who meets all of them. Returns "" when neither happens.
    """
    met = rows.is_met(root_id, requirements_met=requirements_met)
    words = {"tier": root.tier}
    if not requirements_met and met:
        if root.retention:
            return _("As a result, no member loses %(tier)s at review.") % words
        return _("As a result, every member reaches %(tier)s.") % words
    if requirements_met and not met:
        if root.retention:
            return (
                _(
                    "As a result, members keep %(tier)s at review only by meeting "
                    "its entry requirements again."
                )
                % words
            )
        return _("As a result, no member can reach %(tier)s.") % words
    return ""


def _shape_problems(
    rows: _VersionRows, root_id: int, root: _Root, checked: set[int]
) -> list[LadderProblem]:
    """Report empty groups and "at least N" groups with fewer than N items."""
    problems = []
    for group_id in rows.subtree(root_id):
        if group_id in checked:
            continue
        checked.add(group_id)
        count = rows.item_count(group_id)
        # ladder_problems reports a tier whose entry group itself is empty.
        if group_id == root_id and not root.retention and count == 0:
            continue
        group = rows.groups[group_id]
        if count == 0 and group.operator == RuleGroup.Operator.ALL:
            cause = _("%(group)s has no requirements, so it is always met.")
            advice = _("Add requirements to it or delete it.")
            requirements_met = False
        elif count == 0:
            cause = _("%(group)s has no requirements, so no member can meet it.")
            advice = _("Add requirements to it or delete it.")
            requirements_met = True
        elif (
            group.operator == RuleGroup.Operator.AT_LEAST
            and (group.at_least or 0) > count
        ):
            cause = _(
                "%(group)s needs at least %(n)d of its %(count)d items, so no "
                "member can meet it."
            )
            advice = _("Lower N to %(count)d or less, or add items to the group.")
            requirements_met = True
        else:
            continue
        words = {
            "group": _group_name(group, root.tier),
            "n": group.at_least or 0,
            "count": count,
        }
        sentences = [cause % words]
        effect = _effect_words(rows, root_id, root, requirements_met=requirements_met)
        if effect:
            sentences.append(effect)
        sentences.append(advice % words)
        problems.append(_problem(" ".join(sentences), {root.tier}))
    return problems


def _group_problems(rows: _VersionRows) -> tuple[list[LadderProblem], bool]:
    """Return the problems in the shape of a version's rule trees.

    The second value is False when groups sit inside each other in a loop,
    so the trees cannot be loaded into a Ladder at all.
    """
    loops = _loop_problems(rows)
    if loops:
        return loops, False
    roots = rows.roots()
    problems = _root_problems(rows, roots)
    reached: set[int] = set()
    checked: set[int] = set()
    for root_id, root in roots:
        reached.update(rows.subtree(root_id))
        if root.base:
            continue
        problems.extend(_shape_problems(rows, root_id, root, checked))
    if rows.rules and rows.rules[0].retention_id is not None:
        tier = rows.rules[0].tier.name
        message = _(
            "%(tier)s is the base tier, which every member holds, so its "
            "retention requirements have no effect. Remove them."
        ) % {"tier": tier}
        problems.append(_problem(message, {tier}, blocking=False))
    for group in rows.groups.values():
        # Report only the outermost group of each unused tree.
        if group.pk in reached or group.parent_id in rows.groups:
            continue
        message = _(
            "%(group)s belongs to no tier, so it has no effect. Make it a tier's "
            "entry or retention requirements, or delete it."
        ) % {"group": _group_name(group)}
        problems.append(_problem(message, blocking=False))
    return problems, True


def version_problems(version: RuleVersion) -> list[LadderProblem]:
    """Load ``version`` and return its problems, blocking ones first.

    The cost is a fixed number of queries, whatever the size of the rules.
    """
    problems, loadable = _group_problems(_VersionRows.load(version))
    if loadable:
        try:
            problems.extend(ladder_problems(Ladder.load(version)))
        except LadderError as error:
            problems.append(_problem(str(error)))
    return sorted(problems, key=lambda p: not p.blocking)
