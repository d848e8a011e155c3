"""A member's progress towards the next tier, as the member page shows it.

build_progress() is pure. It reads a member, the explanation that
tiers.evaluation.explain_member() returns, the ladder that explanation came
from and the member's metrics, and runs no query. member_progress() loads
those and calls it. Texts are built in the active language, so build the
progress inside the request that renders it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import get_language, gettext, ngettext, ngettext_lazy

from members.models import Activity, Member
from tiers.evaluation import explain_member
from tiers.formatting import (
    format_count,
    format_date,
    format_day_month,
    format_metric_value,
    local_date,
)
from tiers.ladder import Ladder, TierRuleSet
from tiers.metrics import MetricSpec, compute_metrics
from tiers.models import Metric, RuleGroup, TierOverride, Window
from tiers.rendering import render_group

DEFAULT_COLOUR = "#8a8a8a"
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")

# Shortfall phrases for count metrics. ngettext picks the plural form from the
# "number" key, and the text shows "count", the same number with thousands
# separators.
_MISSING_COUNT = {
    Metric.ORDERS: ngettext_lazy(
        "%(count)s more order", "%(count)s more orders", "number"
    ),
    Metric.ACTIVE_DAYS: ngettext_lazy(
        "%(count)s more active day", "%(count)s more active days", "number"
    ),
    Metric.VISITS: ngettext_lazy(
        "%(count)s more visit", "%(count)s more visits", "number"
    ),
    Metric.REVIEWS: ngettext_lazy(
        "%(count)s more review", "%(count)s more reviews", "number"
    ),
    Metric.REFERRALS: ngettext_lazy(
        "%(count)s more referral", "%(count)s more referrals", "number"
    ),
    Metric.GROWTH_VALUE: ngettext_lazy(
        "%(count)s more point of growth value",
        "%(count)s more points of growth value",
        "number",
    ),
}


@dataclass(frozen=True)
class TierBadge:
    """A tier as a coloured badge: its name, background and readable text colour."""

    name: str
    colour: str
    text_colour: str
    since: dt.datetime | None = None
    since_text: str = ""


@dataclass(frozen=True)
class RequirementProgress:
    """One progress bar, for one requirement of a tier's rules."""

    requirement_id: int
    metric: str
    label: str
    value: Decimal
    target: Decimal
    value_text: str
    target_text: str
    progress_text: str
    percent: int
    met: bool
    window: str
    window_text: str
    missing: Decimal
    missing_text: str

    # Lets a template tell bars from groups while it walks a rule tree.
    is_group = False


@dataclass(frozen=True)
class GroupProgress:
    """A group of bars: all, any or at least N of its bars and subgroups."""

    operator: str
    at_least: int | None
    met: bool
    heading: str
    items: tuple[RequirementProgress | GroupProgress, ...]

    is_group = True

    def leaves(self) -> Iterator[RequirementProgress]:
        for item in self.items:
            if isinstance(item, GroupProgress):
                yield from item.leaves()
            else:
                yield item


@dataclass(frozen=True)
class NextTier:
    """The tier above the member's, with its rule sentence and a bar per requirement.

    ``rule`` contains the bars in the shape of the rule tree, and
    ``requirements`` the same bars as a flat tuple. ``rule`` is None for a tier without entry
    rules, which every member reaches.
    """

    badge: TierBadge
    combine: str
    at_least: int | None
    reached: bool
    rule_text: str
    sentence: str
    rule: GroupProgress | None
    requirements: tuple[RequirementProgress, ...]

    @property
    def needs_all(self) -> bool:
        return self.combine == RuleGroup.Operator.ALL


@dataclass(frozen=True)
class RetentionProgress:
    """The retention rules (保级条件) that keep the member's current tier.

    ``met`` is the result of the retention check. ``entry_met`` is True when
    the member also meets the tier's entry rules, which keep the tier as well.
    """

    heading: str
    sentence: str
    met: bool
    entry_met: bool
    status_text: str
    rule: GroupProgress
    requirements: tuple[RequirementProgress, ...]


@dataclass(frozen=True)
class TierHold:
    """How long the member's hold on a reviewed tier lasts, as of the page's moment.

    ``review_day`` is set while the next review is ahead and ``grace_day``
    during a grace period after a failed review. Both are the last local day
    the hold covers. ``text`` describes either one in words.
    """

    text: str
    review_day: dt.date | None = None
    grace_day: dt.date | None = None
    # Whether unmet retention rules wait for the review before the tier drops,
    # instead of dropping at the next evaluation.
    drop_waits_for_review: bool = False

    @property
    def in_grace(self) -> bool:
        return self.grace_day is not None


@dataclass(frozen=True)
class MemberProgress:
    """The member page's tier section.

    ``next_tier`` is None at the top tier. ``retention`` is None unless the
    current tier has retention rules of its own and is above the base tier.
    ``hold`` is None unless that tier is reviewed and a review or a grace
    period is ahead.
    """

    as_of: dt.datetime
    as_of_text: str
    current: TierBadge | None
    next_tier: NextTier | None
    retention: RetentionProgress | None = None
    hold: TierHold | None = None
    # Set while a fixed override or floor that staff set keeps the shown tier.
    override_text: str = ""
    # The member's metrics as of ``as_of`` that the evaluation used, keyed by
    # MetricSpec.key, with any extra windows the caller asked for.
    metrics: Mapping[str, Decimal] = field(default_factory=dict)


def override_text(member: Member, explanation: Mapping[str, Any]) -> str:
    """Describe the fixed override or floor that keeps the member's tier, or "".

    Only an override in the evaluation that concerns the stored tier is
    described; a one-off override leaves nothing in force to describe.
    """
    override = explanation.get("override")
    if not override or member.tier is None or override.get("tier") != member.tier_id:
        return ""
    names: dict[str, str] = {"tier": member.tier.name}
    until = override.get("until")
    if until:
        names["date"] = format_date(last_day_held(dt.datetime.fromisoformat(until)))
    if override.get("mode") == "fixed":
        return gettext("Staff keep you at %(tier)s until %(date)s.") % names
    if override.get("mode") == "floor":
        if until:
            return (
                gettext("Staff keep you at %(tier)s or above until %(date)s.") % names
            )
        return gettext("Staff keep you at %(tier)s or above.") % names
    return ""


def percent_of(value: Decimal, target: Decimal) -> int:
    """Return value as a whole percent of target, rounded down, within 0 to 100.

    Rounding down keeps 100 for a met requirement, so 4,999.99 of 5,000 is 99.
    """
    if target <= 0:
        return 100 if value >= target else 0
    if value <= 0:
        return 0
    percent = (value * 100 / target).to_integral_value(rounding=ROUND_FLOOR)
    return int(min(percent, Decimal(100)))


def window_deadline(window: str, as_of: dt.datetime) -> dt.date | None:
    """Return the last day that counts towards a window, or None if it slides.

    Only a calendar year window has one, which is 31 December of the year
    that ``as_of`` falls in, in the program's time zone. Rolling windows move
    every day and lifetime windows never close.
    """
    if window == Window.YEAR_TO_DATE:
        return dt.date(local_date(as_of).year, 12, 31)
    return None


def describe_window(
    window: str, days: int | None, start: dt.datetime | None, end: dt.datetime
) -> str:
    """Describe a requirement's window in words with its dates.

    For example "Last 365 days (15 Mar 2024 – 14 Mar 2025)", "Calendar year
    2025 (1 January – 31 December)" or "All time, up to 14 Mar 2025".
    """
    if window == Window.ROLLING_DAYS and days and start is not None:
        return ngettext(
            "Last %(days)s day (%(start)s – %(end)s)",
            "Last %(days)s days (%(start)s – %(end)s)",
            days,
        ) % {"days": days, "start": format_date(start), "end": format_date(end)}
    if window == Window.YEAR_TO_DATE:
        year = local_date(end).year
        return gettext("Calendar year %(year)s (%(start)s – %(end)s)") % {
            "year": year,
            "start": format_day_month(dt.date(year, 1, 1)),
            "end": format_day_month(dt.date(year, 12, 31)),
        }
    if window == Window.LIFETIME:
        return gettext("All time, up to %(date)s") % {"date": format_date(end)}
    raise ValueError(
        f"Invalid window {window!r} with days={days!r}. Expected rolling_days "
        "with days of at least 1, year_to_date or lifetime."
    )


def describe_shortfall(metric: str, missing: Decimal) -> str:
    """Describe what a metric lacks, e.g. "¥1,240 more net spend", "3 more orders"."""
    if metric == Metric.NET_SPEND:
        amount = format_metric_value(metric, missing, round_up=True)
        return gettext("%(amount)s more net spend") % {"amount": amount}
    if metric not in _MISSING_COUNT:
        raise ValueError(
            f"Invalid metric {metric!r}. Expected one of {', '.join(Metric.values)}."
        )
    number = int(missing.to_integral_value(rounding=ROUND_CEILING))
    return _MISSING_COUNT[Metric(metric)] % {
        "number": number,
        "count": format_count(number),
    }


def describe_missing(
    metric: str,
    missing: Decimal,
    window: str,
    days: int | None,
    as_of: dt.datetime,
) -> str:
    """Describe what a requirement lacks and by when, or that it is reached.

    For example "¥1,240 more net spend by 31 December" for a calendar year
    window and "3 more orders within the last 365 days" for a rolling one.
    """
    if missing <= 0:
        return gettext("Reached")
    shortfall = describe_shortfall(metric, missing)
    deadline = window_deadline(window, as_of)
    if deadline is not None:
        # Translators: "missing" is a shortfall such as "¥1,240 more net
        # spend"; "date" is a day and month such as "31 December".
        return gettext("%(missing)s by %(date)s") % {
            "missing": shortfall,
            "date": format_day_month(deadline),
        }
    if window == Window.ROLLING_DAYS and days:
        return ngettext(
            "%(missing)s within the last %(days)s day",
            "%(missing)s within the last %(days)s days",
            days,
        ) % {"missing": shortfall, "days": days}
    if window == Window.LIFETIME:
        return gettext("%(missing)s in total") % {"missing": shortfall}
    raise ValueError(
        f"Invalid window {window!r} with days={days!r}. Expected rolling_days "
        "with days of at least 1, year_to_date or lifetime."
    )


def describe_rule(
    tier_name: str, combine: str, item_count: int, at_least: int | None = None
) -> str:
    """Say how many of a tier's top-level items reaching it takes.

    ``item_count`` counts the items of the rule tree's root group: its
    requirements and subgroups.
    """
    if item_count == 1 and (at_least or 0) <= 1:
        return gettext("To reach %(tier)s:") % {"tier": tier_name}
    if combine == RuleGroup.Operator.ANY:
        return gettext("To reach %(tier)s, meet any one of these:") % {
            "tier": tier_name
        }
    if combine == RuleGroup.Operator.AT_LEAST:
        return gettext(
            "To reach %(tier)s, meet at least %(count)s of these %(total)s:"
        ) % {"tier": tier_name, "count": at_least or 0, "total": item_count}
    return gettext("To reach %(tier)s, meet all of these:") % {"tier": tier_name}


def describe_group(operator: str, item_count: int, at_least: int | None = None) -> str:
    """Say how many items of a group must hold, or "" for a group of one item."""
    if item_count == 1 and (at_least or 0) <= 1:
        return ""
    if operator == RuleGroup.Operator.ANY:
        return gettext("Meet any one of these:")
    if operator == RuleGroup.Operator.AT_LEAST:
        return gettext("Meet at least %(count)s of these %(total)s:") % {
            "count": at_least or 0,
            "total": item_count,
        }
    return gettext("Meet all of these:")


def readable_text_colour(background: str) -> str:
    """Return black or white, whichever contrasts more with ``background``.

    Uses the WCAG 2.1 relative luminance and contrast ratio formulas.
    """
    channels = [int(background[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    ]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    contrast_with_white = 1.05 / (luminance + 0.05)
    contrast_with_black = (luminance + 0.05) / 0.05
    return "#000000" if contrast_with_black >= contrast_with_white else "#ffffff"


def make_badge(
    name: str, colour: str | None, since: dt.datetime | None = None
) -> TierBadge:
    """Build a badge, replacing a colour that is not "#rrggbb" with the default.

    The colour goes into a style attribute, so only the validated form passes.
    """
    safe_colour = colour if colour and _HEX_COLOUR.match(colour) else DEFAULT_COLOUR
    return TierBadge(
        name=name,
        colour=safe_colour,
        text_colour=readable_text_colour(safe_colour),
        since=since,
        since_text=format_date(since) if since else "",
    )


def requirement_progress(row: Mapping[str, Any]) -> RequirementProgress:
    """Build one bar from a requirement row of an evaluation's explanation."""
    metric = row["metric"]
    value = Decimal(row["value"])
    target = Decimal(row["threshold"])
    # A lifetime window has no start. Every window ends at the as_of time.
    start = dt.datetime.fromisoformat(row["start"]) if row["start"] else None
    end = dt.datetime.fromisoformat(row["end"])
    missing = max(target - value, Decimal(0))
    value_text = format_metric_value(metric, value)
    target_text = format_metric_value(metric, target, round_up=True)
    return RequirementProgress(
        requirement_id=row["requirement"],
        metric=metric,
        label=capfirst(str(Metric(metric).label)),
        value=value,
        target=target,
        value_text=value_text,
        target_text=target_text,
        # Translators: read out for a progress bar, e.g. "¥1,240 of ¥5,000".
        progress_text=gettext("%(value)s of %(target)s")
        % {"value": value_text, "target": target_text},
        percent=percent_of(value, target),
        met=bool(row["met"]),
        window=row["window"],
        window_text=describe_window(row["window"], row["days"], start, end),
        missing=missing,
        missing_text=describe_missing(metric, missing, row["window"], row["days"], end),
    )


def group_progress(node: Mapping[str, Any]) -> GroupProgress:
    """Build the bars of a checked rule tree, a "rule" of an explanation."""
    items: list[RequirementProgress | GroupProgress] = []
    for item in node["items"]:
        if "items" in item:
            items.append(group_progress(item))
        else:
            items.append(requirement_progress(item))
    return GroupProgress(
        operator=node["operator"],
        at_least=node["at_least"],
        met=bool(node["met"]),
        heading=describe_group(node["operator"], len(items), node["at_least"]),
        items=tuple(items),
    )


def _next_check(
    checks: Sequence[Mapping[str, Any]], current_rank: int | None
) -> Mapping[str, Any] | None:
    """Pick the lowest-ranked tier check above ``current_rank``.

    The explanation has no check for the base tier, so for a member without
    a tier (``current_rank`` None) this is the tier right above the base.
    """
    above = [c for c in checks if current_rank is None or c["rank"] > current_rank]
    return min(above, key=lambda check: check["rank"]) if above else None


def _active_language() -> str:
    return get_language() or settings.LANGUAGE_CODE


def _next_tier(check: Mapping[str, Any], ladder: Ladder) -> NextTier:
    rules = ladder.by_id(check["tier"])
    rule = group_progress(check["rule"]) if check["rule"] else None
    item_count = len(rule.items) if rule else 0
    sentence = ""
    if rules is not None and rules.entry is not None:
        sentence = render_group(rules.entry, _active_language())
    return NextTier(
        badge=make_badge(check["name"], rules.colour if rules else None),
        combine=check["combine"],
        at_least=check["at_least"],
        reached=bool(check["reached"]),
        rule_text=describe_rule(
            check["name"], check["combine"], item_count, check["at_least"]
        ),
        sentence=sentence,
        rule=rule,
        requirements=tuple(rule.leaves()) if rule else (),
    )


def describe_retention(
    tier_name: str, met: bool, entry_met: bool, deadline: str = ""
) -> str:
    """Say whether the member keeps ``tier_name``, and by which rules.

    ``deadline`` is the date by which unmet rules must be met, e.g. "31
    January", or "" when the tier drops at the next evaluation.
    """
    if met:
        return gettext("You meet these, so you keep %(tier)s.") % {"tier": tier_name}
    if entry_met:
        return gettext(
            "You meet the requirements to reach %(tier)s, so you keep it."
        ) % {"tier": tier_name}
    if deadline:
        # Translators: "date" is a day and month such as "31 January", with
        # the year when it is not the current one.
        return gettext("Not met yet. Meet these by %(date)s to keep %(tier)s.") % {
            "date": deadline,
            "tier": tier_name,
        }
    return gettext(
        "Not met yet. Meet these by the next evaluation to keep %(tier)s."
    ) % {"tier": tier_name}


def last_day_held(end: dt.datetime) -> dt.date:
    """Return the last local day that a hold ending at ``end`` covers.

    A hold that ends at local midnight, as a calendar year hold does, covers
    the day before, so it reads "until 31 December" and not "until 1 January".
    """
    return local_date(end - dt.timedelta(microseconds=1))


def _day_text(day: dt.date, as_of: dt.datetime) -> str:
    """Format ``day`` without its year while that is the year of ``as_of``."""
    if day.year == local_date(as_of).year:
        return format_day_month(day)
    return format_date(day)


def _stored_or_explained(
    member: Member, explanation: Mapping[str, Any]
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Return the review date and grace end that go with the member's stored tier.

    While the explanation keeps that tier, its dates are the ones an
    evaluation at its moment would store, so they are used. When it moves
    the member, the stored dates still belong to the tier the page shows.
    """
    if explanation.get("tier") != member.tier_id or "review_at" not in explanation:
        return member.review_at, member.grace_until
    review_at = explanation.get("review_at")
    grace_until = explanation.get("grace_until")
    return (
        dt.datetime.fromisoformat(review_at) if review_at else None,
        dt.datetime.fromisoformat(grace_until) if grace_until else None,
    )


def tier_hold(
    rules: TierRuleSet,
    review_at: dt.datetime | None,
    grace_until: dt.datetime | None,
    as_of: dt.datetime,
) -> TierHold | None:
    """Describe how long the hold on the tier of ``rules`` lasts after ``as_of``.

    Returns None for a continuous tier, and for a review or grace end that is
    not after ``as_of``, which the next evaluation settles.
    """
    if not rules.reviewed:
        return None
    if grace_until is not None and grace_until > as_of:
        grace_day = last_day_held(grace_until)
        text = gettext(
            "In a grace period until %(date)s. Meet the requirements to keep "
            "%(tier)s by then."
        ) % {"date": format_date(grace_day), "tier": rules.name}
        return TierHold(text=text, grace_day=grace_day)
    if review_at is not None and review_at > as_of:
        review_day = last_day_held(review_at)
        text = gettext("Valid until %(date)s; reviewed then") % {
            "date": format_date(review_day)
        }
        return TierHold(
            text=text,
            review_day=review_day,
            drop_waits_for_review=not rules.demote_between_reviews,
        )
    return None


def _retention_heading(
    tier_name: str, hold: TierHold | None, as_of: dt.datetime
) -> str:
    if hold is not None and hold.grace_day is not None:
        # Translators: "date" is a day and month such as "2 March", with the
        # year when it is not the current one.
        return gettext("To keep %(tier)s by %(date)s") % {
            "tier": tier_name,
            "date": _day_text(hold.grace_day, as_of),
        }
    if hold is not None and hold.review_day is not None:
        # Translators: "date" as in "To keep %(tier)s by %(date)s".
        return gettext("To keep %(tier)s at the review on %(date)s") % {
            "tier": tier_name,
            "date": _day_text(hold.review_day, as_of),
        }
    return gettext("What keeps %(tier)s") % {"tier": tier_name}


def _retention_deadline(hold: TierHold | None, as_of: dt.datetime) -> str:
    """Return the date by which unmet retention rules must be met, or ""."""
    if hold is None:
        return ""
    if hold.grace_day is not None:
        return _day_text(hold.grace_day, as_of)
    if hold.review_day is not None and hold.drop_waits_for_review:
        return _day_text(hold.review_day, as_of)
    return ""


def _retention(
    rules: TierRuleSet,
    explanation: Mapping[str, Any],
    metrics: Mapping[str, Decimal],
    as_of: dt.datetime,
    hold: TierHold | None = None,
) -> RetentionProgress | None:
    """Build the retention section for the tier of ``rules``, the member's tier.

    The explanation carries a retention check only when evaluation needed one,
    that is when the member no longer meets the tier's entry rules. Otherwise
    the retention rules are checked here against the member's metrics.
    """
    if rules.retention is None:
        return None
    check = explanation.get("retention")
    if not check or check["tier"] != rules.id:
        check = rules.check(dict(metrics), as_of, retention=True)
    entry = next((c for c in explanation["tiers"] if c["tier"] == rules.id), None)
    entry_met = bool(entry and entry["reached"])
    met = bool(check["reached"])
    rule = group_progress(check["rule"])
    deadline = _retention_deadline(hold, as_of)
    return RetentionProgress(
        heading=_retention_heading(rules.name, hold, as_of),
        sentence=render_group(rules.retention, _active_language()),
        met=met,
        entry_met=entry_met,
        status_text=describe_retention(rules.name, met, entry_met, deadline),
        rule=rule,
        requirements=tuple(rule.leaves()),
    )


def build_progress(
    member: Member,
    explanation: Mapping[str, Any],
    ladder: Ladder,
    metrics: Mapping[str, Decimal],
) -> MemberProgress:
    """Build the member page's tier section without running a query.

    ``member.tier`` must be loaded already (select_related). ``ladder`` is
    the version that produced ``explanation``, and ``metrics`` are the
    member's metrics from the same evaluation. The current tier is the stored
    ``member.tier``, which can lag behind the explanation until the next
    evaluation writes it. NextTier.reached is True in that case.
    """
    tier = member.tier
    current = None
    retention = None
    hold = None
    as_of = dt.datetime.fromisoformat(explanation["as_of"])
    if tier is not None:
        current = make_badge(tier.name, tier.colour, member.tier_since)
        rules = ladder.by_id(tier.pk)
        # Evaluation never places a member below the base tier, so the base
        # tier's retention rules never apply and a review can only renew it.
        if rules is not None and rules.id != ladder.base.id:
            review_at, grace_until = _stored_or_explained(member, explanation)
            hold = tier_hold(rules, review_at, grace_until, as_of)
            retention = _retention(rules, explanation, metrics, as_of, hold)

    check = _next_check(explanation["tiers"], tier.rank if tier else None)
    next_tier = _next_tier(check, ladder) if check is not None else None

    return MemberProgress(
        as_of=as_of,
        as_of_text=format_date(as_of),
        current=current,
        next_tier=next_tier,
        retention=retention,
        hold=hold,
        override_text=override_text(member, explanation),
    )


def overrides_in_force(
    member: Member, overrides: Iterable[TierOverride], as_of: dt.datetime
) -> dict[int, TierOverride]:
    """Pick the override in force at ``as_of`` from the member's active ones.

    Follows tiers.evaluation._active_overrides(): the latest request wins,
    and an active override whose end date has passed both ``as_of`` and now
    is marked ended, which costs queries only when there is one.
    """
    now = timezone.now()
    in_force: dict[int, TierOverride] = {}
    ended = False
    for override in sorted(overrides, key=lambda o: (o.requested_at, o.pk)):
        if (
            override.status != TierOverride.Status.ACTIVE
            or override.requested_at > as_of
        ):
            continue
        if override.until is None or override.until > as_of:
            # Evaluation reads the member's stored dates through the override.
            override.member = member
            in_force[member.pk] = override
        elif override.until <= now:
            ended = True
    if ended:
        # Imported on use because tiers.overrides imports tiers.evaluation.
        from tiers.overrides import end_expired_overrides

        end_expired_overrides(as_of, member_ids=[member.pk])
    return in_force


def member_metrics(
    member: Member, ladder: Ladder, as_of: dt.datetime, specs: Iterable[MetricSpec]
) -> dict[str, Decimal]:
    """Aggregate the member's metrics for ``specs`` in one query.

    Every spec gets a value, zero without activity in its window. Growth
    value weights with a daily cap add one query per growth value window.
    """
    specs = set(specs)
    rows = compute_metrics(
        Activity.objects.filter(member_id=member.pk), specs, ladder.kinds, as_of
    )
    found = rows.get(member.pk, {})
    return {spec.key: found.get(spec.key, Decimal(0)) for spec in specs}


def member_progress(
    member: Member,
    as_of: dt.datetime | None = None,
    *,
    ladder: Ladder | None = None,
    overrides: Sequence[TierOverride] | None = None,
    extra_specs: Iterable[MetricSpec] = (),
) -> MemberProgress:
    """Evaluate ``member`` without saving and build its page's tier section.

    Costs eight queries: six to load the version in effect (the version,
    groups, requirements, tier rules with tiers, activity kinds, weights),
    unless ``ladder`` is given, one aggregate for the metrics of the ladder
    and of ``extra_specs``, and one for the overrides, unless the member's
    active ``overrides`` are given. A due review adds one aggregate as of
    its date, a version with the "new_activity" policy one query, and growth
    value weights with a daily cap one per growth value window.
    """
    as_of = as_of or timezone.now()
    if ladder is None:
        ladder = Ladder.load(as_of=as_of)
    # TODO: a due review (its date passed and no evaluation has run since)
    # still costs explain_member() one more aggregate as of the review date.
    # Computing those windows, cut off at the review, in this GROUP BY would
    # keep the page at three queries then too.
    metrics = member_metrics(member, ladder, as_of, ladder.specs | set(extra_specs))
    evaluation = explain_member(
        member,
        as_of,
        ladder,
        metrics=metrics,
        overrides=None
        if overrides is None
        else overrides_in_force(member, overrides, as_of),
    )
    if evaluation.explanation is None:
        raise RuntimeError(
            f"explain_member() returned no explanation for member id={member.pk}."
        )
    progress = build_progress(member, evaluation.explanation, ladder, metrics)
    return replace(progress, metrics=metrics)
