"""Building and copying rule versions: drafts, groups, requirements, weights.

``build`` writes a declarative rule tree into a draft, for fixtures, the demo
and data migrations. ``copy_to_draft`` is what staff use to start editing: a
deep copy of a version's tier rules, groups, requirements and weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max
from simple_history.utils import bulk_create_with_history

from members.models import ActivityKind, Channel
from tiers.models import (
    Downgrade,
    GrowthWeight,
    Requirement,
    RuleGroup,
    RuleVersion,
    Tier,
    TierRule,
    Validity,
    Window,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Need:
    """A requirement in a declarative rule tree."""

    metric: str
    threshold: Decimal | int | str
    window: str = Window.ROLLING_DAYS
    days: int | None = 365

    def __post_init__(self) -> None:
        if self.window != Window.ROLLING_DAYS:
            object.__setattr__(self, "days", None)


@dataclass(frozen=True)
class Group:
    """A group in a declarative rule tree."""

    operator: str
    items: tuple[Need | Group, ...]
    at_least: int | None = None
    label: str = ""


def all_of(*items: Need | Group, label: str = "") -> Group:
    return Group(RuleGroup.Operator.ALL, items, label=label)


def any_of(*items: Need | Group, label: str = "") -> Group:
    return Group(RuleGroup.Operator.ANY, items, label=label)


def at_least(count: int, *items: Need | Group, label: str = "") -> Group:
    return Group(RuleGroup.Operator.AT_LEAST, items, at_least=count, label=label)


@dataclass
class TierSpec:
    tier: Tier
    entry: Group | Need | None = None
    retention: Group | Need | None = None
    validity: str = Validity.CONTINUOUS
    validity_months: int | None = None
    downgrade: str = Downgrade.TO_QUALIFIED
    grace_days: int = 0
    demote_between_reviews: bool = False


@dataclass
class WeightSpec:
    kind: str
    per_event: Decimal | int | str = 0
    per_unit: Decimal | int | str = 0
    channel: str | None = None
    daily_cap: Decimal | int | str | None = None
    window_cap: Decimal | int | str | None = None


@dataclass
class VersionSpec:
    tiers: list[TierSpec]
    weights: list[WeightSpec] = field(default_factory=list)
    note: str = ""


def next_number() -> int:
    highest = RuleVersion.objects.aggregate(highest=Max("number"))["highest"]
    return (highest or 0) + 1


def _write_group(
    version: RuleVersion,
    node: Group | Need,
    parent: RuleGroup | None,
    position: int,
    label: str,
) -> RuleGroup:
    group_spec = node if isinstance(node, Group) else all_of(node)
    group = RuleGroup.objects.create(
        version=version,
        parent=parent,
        label=group_spec.label or label,
        operator=group_spec.operator,
        at_least=group_spec.at_least,
        position=position,
    )
    for index, item in enumerate(group_spec.items):
        if isinstance(item, Group):
            _write_group(version, item, group, index, f"{label} / {index + 1}")
        else:
            Requirement.objects.create(
                version=version,
                group=group,
                metric=item.metric,
                window=item.window,
                window_days=item.days,
                threshold=Decimal(str(item.threshold)),
                position=index,
            )
    return group


@transaction.atomic
def build(spec: VersionSpec, *, user: Any = None) -> RuleVersion:
    """Create a draft version from a declarative spec."""
    version = RuleVersion.objects.create(
        number=next_number(), note=spec.note, created_by=user
    )
    for tier_spec in spec.tiers:
        name = tier_spec.tier.name
        entry = (
            _write_group(version, tier_spec.entry, None, 0, f"{name} entry")
            if tier_spec.entry is not None
            else None
        )
        retention = (
            _write_group(version, tier_spec.retention, None, 1, f"{name} retention")
            if tier_spec.retention is not None
            else None
        )
        TierRule.objects.create(
            version=version,
            tier=tier_spec.tier,
            entry=entry,
            retention=retention,
            validity=tier_spec.validity,
            validity_months=tier_spec.validity_months,
            downgrade=tier_spec.downgrade,
            grace_days=tier_spec.grace_days,
            demote_between_reviews=tier_spec.demote_between_reviews,
        )
    kinds = {kind.code: kind for kind in ActivityKind.objects.all()}
    for weight in spec.weights:
        channel = Channel.objects.get(code=weight.channel) if weight.channel else None
        GrowthWeight.objects.create(
            version=version,
            kind=kinds[weight.kind],
            channel=channel,
            points_per_event=Decimal(str(weight.per_event)),
            points_per_unit=Decimal(str(weight.per_unit)),
            daily_cap=None
            if weight.daily_cap is None
            else Decimal(str(weight.daily_cap)),
            window_cap=None
            if weight.window_cap is None
            else Decimal(str(weight.window_cap)),
        )
    return version


@transaction.atomic
def copy_to_draft(
    source: RuleVersion, *, user: Any = None, note: str = ""
) -> RuleVersion:
    """Deep-copy ``source`` into a new draft that staff can edit."""
    draft = RuleVersion.objects.create(
        number=next_number(),
        based_on=source,
        note=note or f"Copied from version {source.number}.",
        created_by=user,
    )
    old_groups = list(RuleGroup.objects.filter(version=source).order_by("pk"))
    new_ids: dict[int, RuleGroup] = {}
    # Walk the tree from the roots so that every parent exists before its children.
    pending = [g for g in old_groups if g.parent_id is None]
    children: dict[int, list[RuleGroup]] = {}
    for group in old_groups:
        if group.parent_id is not None:
            children.setdefault(group.parent_id, []).append(group)
    while pending:
        group = pending.pop(0)
        new_ids[group.pk] = RuleGroup.objects.create(
            version=draft,
            parent=new_ids[group.parent_id] if group.parent_id else None,
            label=group.label,
            operator=group.operator,
            at_least=group.at_least,
            position=group.position,
        )
        pending.extend(children.get(group.pk, []))
    bulk_create_with_history(
        [
            Requirement(
                version=draft,
                group=new_ids[requirement.group_id],
                metric=requirement.metric,
                window=requirement.window,
                window_days=requirement.window_days,
                threshold=requirement.threshold,
                position=requirement.position,
            )
            for requirement in Requirement.objects.filter(version=source)
        ],
        Requirement,
    )
    bulk_create_with_history(
        [
            TierRule(
                version=draft,
                tier_id=rule.tier_id,
                entry=new_ids[rule.entry_id] if rule.entry_id else None,
                retention=new_ids[rule.retention_id] if rule.retention_id else None,
                validity=rule.validity,
                validity_months=rule.validity_months,
                downgrade=rule.downgrade,
                grace_days=rule.grace_days,
                demote_between_reviews=rule.demote_between_reviews,
            )
            for rule in TierRule.objects.filter(version=source)
        ],
        TierRule,
    )
    bulk_create_with_history(
        [
            GrowthWeight(
                version=draft,
                kind_id=weight.kind_id,
                channel_id=weight.channel_id,
                points_per_event=weight.points_per_event,
                points_per_unit=weight.points_per_unit,
                daily_cap=weight.daily_cap,
                window_cap=weight.window_cap,
            )
            for weight in GrowthWeight.objects.filter(version=source)
        ],
        GrowthWeight,
    )
    logger.info("copied rule version %d to draft %d", source.number, draft.number)
    return draft
