"""Rule trees and growth value weights as plain-language sentences.

Every public function takes the language explicitly and renders inside
``translation.override``, so the admin can show the Chinese and the English
text side by side whatever language the request uses. Money goes through
``tiers.formatting.format_money`` in ``settings.CRM_CURRENCY``; counts are
whole numbers with thousands separators.

Examples of the output:

- ``最近365天净消费满¥5,000，且订单不少于6笔``
- ``(最近365天净消费满¥5,000且订单不少于6笔)或累计成长值满8,000``
- ``net spend of at least ¥5,000 and at least 6 orders in the last 365 days``
- ``at least 2 of these 3: ...``

Activities are described here too, because an opening balance must read as
what it is, "Opening balance from the previous program", and never as a
purchase.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import (
    gettext,
    ngettext,
    ngettext_lazy,
    pgettext,
    pgettext_lazy,
)

from members.models import Activity, ActivityKind
from tiers.formatting import format_count, format_metric_value, format_money
from tiers.ladder import GroupRule, Ladder, RequirementRule, TierRuleSet
from tiers.metrics import WindowSpec
from tiers.models import GrowthWeight, Metric, RuleGroup, Window

# Conditions on count metrics. ngettext picks the plural form from "number",
# and the text shows "count", the same number with thousands separators.
_COUNT_CONDITIONS = {
    Metric.ORDERS: ngettext_lazy(
        "at least %(count)s order", "at least %(count)s orders", "number"
    ),
    Metric.ACTIVE_DAYS: ngettext_lazy(
        "at least %(count)s active day", "at least %(count)s active days", "number"
    ),
    Metric.VISITS: ngettext_lazy(
        "at least %(count)s visit", "at least %(count)s visits", "number"
    ),
    Metric.REVIEWS: ngettext_lazy(
        "at least %(count)s review", "at least %(count)s reviews", "number"
    ),
    Metric.REFERRALS: ngettext_lazy(
        "at least %(count)s referral", "at least %(count)s referrals", "number"
    ),
}

# Joiners for the items of an "all of" or "any of" group: a separator between
# all items but the last, and a pattern that adds the last one. Chinese joins
# top-level clauses with "，且" and clauses inside parentheses with "且", so the
# joiners depend on whether the group is inside parentheses.
_JOINERS: dict[tuple[str, bool], tuple[Promise, Promise]] = {
    (RuleGroup.Operator.ALL, False): (
        pgettext_lazy("rule text: all of, outside parentheses", ", "),
        pgettext_lazy(
            "rule text: all of, outside parentheses", "%(items)s and %(last)s"
        ),
    ),
    (RuleGroup.Operator.ALL, True): (
        pgettext_lazy("rule text: all of, inside parentheses", ", "),
        pgettext_lazy(
            "rule text: all of, inside parentheses", "%(items)s and %(last)s"
        ),
    ),
    (RuleGroup.Operator.ANY, False): (
        pgettext_lazy("rule text: any of, outside parentheses", ", "),
        pgettext_lazy(
            "rule text: any of, outside parentheses", "%(items)s or %(last)s"
        ),
    ),
    (RuleGroup.Operator.ANY, True): (
        pgettext_lazy("rule text: any of, inside parentheses", ", "),
        pgettext_lazy("rule text: any of, inside parentheses", "%(items)s or %(last)s"),
    ),
}


def _supported_language(language: str) -> str:
    """Return the supported language code for ``language`` or raise ValueError."""
    supported = [code for code, _name in settings.LANGUAGES]
    try:
        return translation.get_supported_language_variant(language)
    except LookupError:
        raise ValueError(
            f"Unsupported language {language!r}. Expected one of "
            f"{', '.join(supported)}."
        ) from None


def _condition(requirement: RequirementRule) -> str:
    """Describe a requirement's threshold without its window."""
    metric = requirement.metric
    threshold = requirement.threshold
    if metric == Metric.NET_SPEND:
        amount = format_metric_value(metric, threshold, round_up=True)
        return gettext("net spend of at least %(amount)s") % {"amount": amount}
    if metric == Metric.GROWTH_VALUE:
        points = format_metric_value(metric, threshold, round_up=True)
        return gettext("growth value of at least %(count)s") % {"count": points}
    if metric not in _COUNT_CONDITIONS:
        raise ValueError(
            f"Invalid metric {metric!r}. Expected one of {', '.join(Metric.values)}."
        )
    # A count threshold is whole after model validation. Rounding up keeps a
    # fractional one from reading easier than it is.
    number = int(threshold.to_integral_value(rounding=ROUND_CEILING))
    return _COUNT_CONDITIONS[Metric(metric)] % {
        "number": number,
        "count": format_count(number),
    }


def _window(window: WindowSpec) -> str:
    if window.kind == Window.ROLLING_DAYS and window.days:
        return ngettext(
            "in the last %(days)s day", "in the last %(days)s days", window.days
        ) % {"days": format_count(window.days)}
    if window.kind == Window.YEAR_TO_DATE:
        return pgettext("rule text", "in the calendar year to date")
    if window.kind == Window.LIFETIME:
        return pgettext("rule text", "in total")
    raise ValueError(
        f"Invalid window {window.kind!r} with days={window.days!r}. Expected "
        "rolling_days with days of at least 1, year_to_date or lifetime."
    )


def _with_window(condition: str, window: WindowSpec) -> str:
    # Translators: a condition and the window it is measured over, e.g.
    # "net spend of at least ¥5,000" and "in the last 365 days". Chinese puts
    # the window first: "最近365天净消费满¥5,000".
    return pgettext("rule text", "%(condition)s %(window)s") % {
        "condition": condition,
        "window": _window(window),
    }


def _join(parts: Sequence[str], operator: str, in_parentheses: bool) -> str:
    separator, last_pattern = _JOINERS[(operator, in_parentheses)]
    if len(parts) == 1:
        return parts[0]
    return str(last_pattern) % {
        "items": str(separator).join(parts[:-1]),
        "last": parts[-1],
    }


def _shared_window(group: GroupRule) -> WindowSpec | None:
    """Return the window of a group whose items are requirements on one window.

    Such a group names its window once, as in "net spend of at least ¥5,000
    and at least 6 orders in the last 365 days".
    """
    windows = set()
    for item in group.items:
        if isinstance(item, GroupRule):
            return None
        windows.add(item.window)
    return windows.pop() if len(windows) == 1 else None


def _render_node(node: RequirementRule | GroupRule, nested: bool) -> str:
    """Render a requirement or group. ``nested`` is True for an item of a group.

    A nested group of two or more items gets parentheses. A group of one item
    is rendered as that item, unless it needs more items than it has.
    """
    if isinstance(node, RequirementRule):
        return _with_window(_condition(node), node.window)
    if not node.items:
        if node.operator == RuleGroup.Operator.ALL:
            return pgettext("rule text", "no requirements")
        # "Any of" nothing and "at least N of" nothing can never hold.
        return pgettext("rule text", "a rule that no member can meet")
    impossible = node.operator == RuleGroup.Operator.AT_LEAST and (
        node.at_least or 0
    ) > len(node.items)
    if len(node.items) == 1 and not impossible:
        return _render_node(node.items[0], nested)
    body = _render_group_body(node, in_parentheses=nested)
    if nested:
        return pgettext("rule text", "(%(group)s)") % {"group": body}
    return body


def _render_group_body(group: GroupRule, in_parentheses: bool) -> str:
    if group.operator == RuleGroup.Operator.AT_LEAST:
        items = [_render_node(item, nested=True) for item in group.items]
        # Translators: "count" of the "total" items that follow must hold,
        # e.g. "at least 2 of these 3: A; B; C".
        return gettext("at least %(count)s of these %(total)s: %(items)s") % {
            "count": group.at_least or 0,
            "total": len(group.items),
            "items": pgettext("rule text: list of items", "; ").join(items),
        }
    window = _shared_window(group)
    if window is not None:
        conditions = [
            _condition(item)
            for item in group.items
            if isinstance(item, RequirementRule)
        ]
        return _with_window(_join(conditions, group.operator, in_parentheses), window)
    items = [_render_node(item, nested=True) for item in group.items]
    return _join(items, group.operator, in_parentheses)


def _render_rule(group: GroupRule | None) -> str:
    if group is None:
        return pgettext("rule text", "every member")
    return _render_node(group, nested=False)


def render_group(group: GroupRule, language: str) -> str:
    """Render a rule tree as one sentence in ``language`` ("zh-hans" or "en").

    Raises ValueError for a language missing from settings.LANGUAGES.
    """
    with translation.override(_supported_language(language)):
        return _render_node(group, nested=False)


def render_tier(tier: TierRuleSet, language: str, *, retention: bool = False) -> str:
    """Render a tier's entry rules, or with ``retention`` what keeps the tier.

    The text starts with the tier's name: "Gold: ...". A tier without entry
    rules (the base tier) reads "every member". Like TierRuleSet.check, a
    tier without retention rules is kept by its entry rules, so those are
    rendered for ``retention`` then.
    """
    group = (tier.retention or tier.entry) if retention else tier.entry
    with translation.override(_supported_language(language)):
        return pgettext("rule text", "%(tier)s: %(rule)s") % {
            "tier": tier.name,
            "rule": _render_rule(group),
        }


def render_version(ladder: Ladder, language: str) -> list[tuple[str, str, str]]:
    """Return (tier name, entry text, retention text) for each tier by rank.

    The retention text is "" for a tier without retention rules of its own.
    """
    rows = []
    with translation.override(_supported_language(language)):
        for tier in ladder.tiers:
            retention = (
                _render_node(tier.retention, nested=False) if tier.retention else ""
            )
            rows.append((tier.name, _render_rule(tier.entry), retention))
    return rows


def _points(value: Decimal) -> str:
    """Format a weight's points without trailing zeros: "1", "0.5", "1,000"."""
    if value == value.to_integral_value():
        return f"{value:,.0f}"
    return f"{value.normalize():,f}"


def _points_word(value: Decimal) -> str:
    # English needs the singular for exactly one point, "0.5 points" otherwise.
    number = 1 if value == 1 else 2
    return ngettext("%(points)s point", "%(points)s points", number) % {
        "points": _points(value)
    }


def _per_event(kind: ActivityKind, points: str) -> str:
    """Describe the points one event of ``kind`` earns."""
    values = {"points": points, "kind": kind.name}
    # The default kinds read by their role ("per order"). Other kinds have
    # staff-chosen names, which are shown as they are.
    if kind.code == kind.role:
        if kind.role == ActivityKind.Role.PURCHASE:
            return gettext("%(points)s per order") % values
        if kind.role == ActivityKind.Role.REFUND:
            return gettext("%(points)s per refund") % values
        if kind.role == ActivityKind.Role.VISIT:
            return gettext("%(points)s per visit") % values
        if kind.role == ActivityKind.Role.REVIEW:
            return gettext("%(points)s per review") % values
        if kind.role == ActivityKind.Role.REFERRAL:
            return gettext("%(points)s per referral") % values
    return gettext("%(points)s per %(kind)s") % values


def _per_unit(kind: ActivityKind, points: str) -> str:
    """Describe the points one currency unit of ``kind`` earns."""
    values = {"points": points, "unit": format_money(1), "kind": kind.name}
    if kind.code == kind.role and kind.role == ActivityKind.Role.PURCHASE:
        return gettext("%(points)s per %(unit)s spent") % values
    if kind.code == kind.role and kind.role == ActivityKind.Role.REFUND:
        # Refund amounts are negative, so a positive weight deducts points.
        return gettext("%(points)s deducted per %(unit)s refunded") % values
    return gettext("%(points)s per %(unit)s of %(kind)s") % values


def _render_weight(weight: GrowthWeight, other_channels: bool) -> str:
    parts = []
    if weight.points_per_unit:
        parts.append(_per_unit(weight.kind, _points_word(weight.points_per_unit)))
    if weight.points_per_event:
        parts.append(_per_event(weight.kind, _points_word(weight.points_per_event)))
    if weight.daily_cap is not None:
        parts.append(
            gettext("at most %(points)s a day")
            % {"points": _points_word(weight.daily_cap)}
        )
    if weight.window_cap is not None:
        parts.append(
            gettext("at most %(points)s per requirement window")
            % {"points": _points_word(weight.window_cap)}
        )
    text = pgettext("rule text: list of weight terms", ", ").join(parts)
    channel = weight.channel if weight.channel_id is not None else None
    if channel is not None:
        return pgettext("rule text", "%(channel)s: %(weight)s") % {
            "channel": channel.name,
            "weight": text,
        }
    if other_channels:
        return pgettext("rule text", "other channels: %(weight)s") % {"weight": text}
    return text


def render_weights(weights: Iterable[GrowthWeight], language: str) -> str:
    """Render a version's growth value weights compactly in ``language``.

    For example "每消费¥1得1成长值，每笔订单得10成长值，每日上限500成长值".
    Load the weights with select_related("kind", "channel") to avoid a query
    per weight. Weights that give no points are left out, as evaluation
    ignores them.
    """
    active = [w for w in weights if w.points_per_event or w.points_per_unit]
    with_channel = {w.kind_id for w in active if w.channel_id is not None}
    with translation.override(_supported_language(language)):
        if not active:
            return pgettext("rule text", "no activity earns growth value")
        texts = [
            _render_weight(weight, other_channels=weight.kind_id in with_channel)
            for weight in active
        ]
        return pgettext("rule text: list of weights", "; ").join(texts)


def activity_label(activity: Activity, language: str) -> str:
    """Name an activity's kind in ``language`` for a list of activities.

    Kinds other than opening balances have staff-chosen names, which are
    returned as they are. ``activity.kind`` must be loaded already
    (select_related) to avoid a query per activity.
    """
    if activity.kind.role != ActivityKind.Role.OPENING:
        return activity.kind.name
    with translation.override(_supported_language(language)):
        return gettext("Opening balance from the previous program")


def describe_activity(activity: Activity, language: str) -> str:
    """Describe an activity in ``language``, with the values of an opening balance.

    For example "Opening balance from the previous program: net spend
    ¥12,000, growth value 8,000". Other activities read as their kind's name.
    """
    if activity.kind.role != ActivityKind.Role.OPENING:
        return activity.kind.name
    with translation.override(_supported_language(language)):
        values = []
        if activity.amount:
            values.append(
                gettext("net spend %(amount)s")
                % {"amount": format_money(activity.amount)}
            )
        if activity.growth_points:
            values.append(
                gettext("growth value %(count)s")
                % {"count": format_count(activity.growth_points)}
            )
        label = gettext("Opening balance from the previous program")
        if not values:
            return label
        # Translators: "label" is "Opening balance from the previous
        # program" and "values" lists what it carried over, e.g. "net spend
        # ¥12,000, growth value 8,000".
        return pgettext("activity text", "%(label)s: %(values)s") % {
            "label": label,
            "values": pgettext("activity text: list of values", ", ").join(values),
        }
