"""Member outlooks: progress to the next tier, the pace projection and the
risk at the coming review.

refresh_outlooks() stores one MemberOutlook per live member for the work
queues in the admin. member_pace() computes the same figures live for one
member on the member page. Both call project_outlook(), which runs no query,
so the queues and the page always agree on the rules below.

Progress
    A requirement's progress is min(value / threshold, 1) as a whole percent
    rounded down (tiers.progress.percent_of), so 100 means met. A group of
    "all of" takes the minimum of its items, "any of" the maximum and "at
    least k of" the k-th largest (0 when it has fewer than k items). A tier's
    progress is that of its entry rules; a tier without entry rules is at 100.

Pace
    The pace of a metric is its value over the last ``pace days`` (setting
    CRM_OUTLOOK_PACE_DAYS, default 90) divided by that number of days: a daily
    rate that assumes the member goes on as in that period. For a requirement
    not met yet, with value v, threshold t and daily rate r:

    * lifetime window: met after (t - v) / r days;
    * calendar year window: the same, unless that day falls after 31 December
      of the current year, when the requirement falls short this year;
    * last N days: activity older than N days leaves the window, so the value
      changes by the net rate r - v / N a day. Once the whole window is at
      the pace, the value stays at r * N. The requirement is met after
      (t - v) / (r - v / N) days when r * N >= t, and never at this pace
      otherwise, which includes every case of a net rate <= 0.

    Days are counted from the as-of day and rounded up. No pace (r = 0), and
    a date more than MAX_PROJECTION_DAYS ahead, give no date. A met
    requirement is dated the as-of day. A group of "all of" takes the latest
    date of its items (none if an item has none), "any of" the earliest and
    "at least k of" the k-th earliest. A tier's projected date is that of its
    entry rules.

At risk
    A member is at risk when its tier, above the base tier, has a review date
    (or a grace period ending). The member must also be placed lower by the
    rules if every metric moved at its pace until the end of the period that
    review judges. Lower means that neither the entry rules of the tier or a higher
    one nor the tier's retention rules would hold, as in Ladder.choose(). As
    in tiers.warnings, an active fixed override or floor that keeps the tier
    past the review, and the "new activity" publish policy for a member with
    no activity since the version took effect, keep a member out of risk.
    tiers.warnings judges today's metrics instead, so a member who meets the
    rules today but whose rolling window empties before the review is at risk
    here, and one who is short today but catches up at the pace is not.

    Moving a value to the review, d days after the as-of day: lifetime
    v + r * d; calendar year the same within the year, and r times the days
    of the new year when the review judges a later year; last N days
    v * (N - d) / N + r * d while d < N, and r * N after that.

    Retention progress is the progress of the retention rules (the entry
    rules for a tier without them) on today's metrics; None for the base
    tier.

Query cost of refresh_outlooks(): loading the rules (six queries), then per
chunk of members what iter_evaluations() costs (the members, one ledger
aggregate, the overrides, plus the review queries a chunk needs), one pace
aggregate (plus one when growth value weights have a daily cap), one for the
overrides that keep tiers (only when a member of the chunk has a review
date) and one upsert. A last query deletes the outlooks of merged members,
whom evaluation skips.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import dateformat, timezone
from django.utils.translation import gettext, pgettext

from members.models import Activity, Member
from tiers.evaluation import MemberEvaluation, _hold_by_policy, iter_evaluations
from tiers.formatting import format_date, format_metric_value, local_date
from tiers.ladder import GroupRule, Ladder, LadderError, RequirementRule
from tiers.metrics import MetricSpec, WindowSpec, compute_metrics
from tiers.models import (
    MemberOutlook,
    Metric,
    ReviewExtension,
    RuleGroup,
    RuleVersion,
    TierOverride,
    Window,
)
from tiers.progress import percent_of
from tiers.reviews import period_end
from tiers.warnings import _describe_unmet, unmet_requirements

logger = logging.getLogger(__name__)

DEFAULT_PACE_DAYS = 90
DEFAULT_NEAR_PROMOTION_PERCENT = 80
# Ten years, the longest window a requirement may have. A later date is of no
# use to anyone, and tiny paces would overflow date arithmetic.
MAX_PROJECTION_DAYS = 3660
# Bounds of the "extend grace" action, in days.
MIN_EXTENSION_DAYS = 1
MAX_EXTENSION_DAYS = 365


class Status:
    """Status of a requirement's projection: met, dated, or the reason it has
    no date."""

    MET = "met"
    PROJECTED = "projected"
    NO_PACE = "no_pace"
    SHORT_THIS_YEAR = "short_this_year"
    # A rolling window can never hold the threshold at this pace.
    BELOW_WINDOW = "below_window"
    BEYOND_HORIZON = "beyond_horizon"


def pace_days() -> int:
    """Return the length of the pace window in days (CRM_OUTLOOK_PACE_DAYS)."""
    days = int(getattr(settings, "CRM_OUTLOOK_PACE_DAYS", DEFAULT_PACE_DAYS))
    if days < 1:
        raise ValueError(
            f"CRM_OUTLOOK_PACE_DAYS={days} is invalid; use 1 or more days."
        )
    return days


def near_promotion_percent() -> int:
    """Return the default share for the near promotion queue, in percent."""
    return int(
        getattr(settings, "CRM_NEAR_PROMOTION_PERCENT", DEFAULT_NEAR_PROMOTION_PERCENT)
    )


@dataclass(frozen=True)
class Outlook:
    """A member's figures as project_outlook() computes them.

    ``deadline`` is the moment that decides whether the member keeps its tier:
    the review date, or the end of the grace period after a failed review.
    """

    tier_id: int | None
    next_tier_id: int | None
    progress: int
    projected_on: dt.date | None
    deadline: dt.datetime | None
    in_grace: bool
    at_risk: bool
    retention_progress: int | None
    explanation: dict[str, Any]


# Pace metrics


def pace_specs(ladder: Ladder, days: int) -> dict[str, MetricSpec]:
    """Return, per metric the ladder uses, its spec over the last ``days`` days."""
    # NOTE: a growth value weight's window cap applies to the pace window too,
    # so a capped weight can show a slower pace than the member really has.
    window = WindowSpec(Window.ROLLING_DAYS, days)
    return {spec.metric: MetricSpec(spec.metric, window) for spec in ladder.specs}


def _recent_metrics(
    ledger: QuerySet[Activity],
    ladder: Ladder,
    specs: Mapping[str, MetricSpec],
    as_of: dt.datetime,
    days: int,
) -> dict[int, dict[str, Decimal]]:
    """Aggregate the pace window of ``ledger`` per member, in one query.

    A ladder without requirements has no metric to measure, so no query runs.
    """
    if not specs:
        return {}
    window_start, _ = WindowSpec(Window.ROLLING_DAYS, days).bounds(as_of)
    assert window_start is not None
    return compute_metrics(
        ledger.filter(occurred_at__gte=window_start),
        specs.values(),
        ladder.kinds,
        as_of,
    )


def recent_values(
    metrics: Mapping[str, Decimal], specs: Mapping[str, MetricSpec]
) -> dict[str, Decimal]:
    """Pick each metric's value over the pace window from an aggregate row."""
    return {metric: metrics.get(spec.key, Decimal(0)) for metric, spec in specs.items()}


# Progress and the projected date towards a tier


def _kth_largest(percents: Sequence[int], k: int) -> int:
    ordered = sorted(percents, reverse=True)
    return ordered[k - 1] if 0 < k <= len(ordered) else 0


def combine_percents(operator: str, at_least: int | None, percents: list[int]) -> int:
    """Combine the progress of a group's items as the module docstring defines."""
    if operator == RuleGroup.Operator.ANY:
        return max(percents, default=0)
    if operator == RuleGroup.Operator.AT_LEAST:
        return _kth_largest(percents, at_least or 0)
    return min(percents, default=100)


def combine_dates(
    operator: str,
    at_least: int | None,
    dates: list[dt.date | None],
    today: dt.date,
) -> dt.date | None:
    """Combine the projected dates of a group's items: latest, earliest or k-th.

    An empty "all of" group is met already, so it is dated ``today``.
    """
    known = sorted(date for date in dates if date is not None)
    if operator == RuleGroup.Operator.ANY:
        return known[0] if known else None
    if operator == RuleGroup.Operator.AT_LEAST:
        k = at_least or 0
        return known[k - 1] if 0 < k <= len(known) else None
    if len(known) < len(dates):
        return None
    return known[-1] if known else today


def _days_to_threshold(
    rule: RequirementRule, value: Decimal, recent: Decimal, days: int
) -> tuple[str, int | None]:
    """Return the status and the whole days a requirement not met yet needs.

    ``recent`` is the metric over the last ``days`` days, so the daily rate
    is recent / days. The formulas are multiplied out to keep Decimal exact.
    """
    threshold = rule.threshold
    if recent <= 0:
        return Status.NO_PACE, None
    if rule.window.kind == Window.ROLLING_DAYS:
        width = Decimal(rule.window.days or 1)
        # r * N >= t, with r = recent / days.
        if recent * width < threshold * days:
            return Status.BELOW_WINDOW, None
        # (t - v) / (r - v / N), with r = recent / days.
        needed = (threshold - value) * days * width / (recent * width - value * days)
    else:
        needed = (threshold - value) * days / recent
    whole = int(needed.to_integral_value(rounding=ROUND_CEILING))
    if whole > MAX_PROJECTION_DAYS:
        return Status.BEYOND_HORIZON, None
    return Status.PROJECTED, whole


def _reach_requirement(
    rule: RequirementRule,
    metrics: dict[str, Decimal],
    recent: Mapping[str, Decimal],
    today: dt.date,
    days: int,
) -> dict[str, Any]:
    value = metrics.get(rule.key, Decimal(0))
    pace = recent.get(rule.metric, Decimal(0))
    met = rule.holds(metrics)
    after: int | None = 0
    status = Status.MET
    if not met:
        status, after = _days_to_threshold(rule, value, pace, days)
    on: dt.date | None = None
    if after is not None:
        on = today + dt.timedelta(days=after)
    if (
        on is not None
        and rule.window.kind == Window.YEAR_TO_DATE
        and on.year > today.year
    ):
        status, on = Status.SHORT_THIS_YEAR, None
    return {
        "requirement": rule.id,
        "metric": rule.metric,
        "window": rule.window.kind,
        "days": rule.window.days,
        "value": str(value),
        "threshold": str(rule.threshold),
        "met": met,
        "percent": percent_of(value, rule.threshold),
        "recent": str(pace),
        "status": status,
        "on": on.isoformat() if on else None,
    }


def _reach_group(
    group: GroupRule,
    metrics: dict[str, Decimal],
    recent: Mapping[str, Decimal],
    today: dt.date,
    days: int,
) -> dict[str, Any]:
    """Build a group's progress and projected date, with its items as the
    explanation of both."""
    items = []
    for item in group.items:
        if isinstance(item, GroupRule):
            items.append(_reach_group(item, metrics, recent, today, days))
        else:
            items.append(_reach_requirement(item, metrics, recent, today, days))
    dates = [dt.date.fromisoformat(i["on"]) if i["on"] else None for i in items]
    on = combine_dates(group.operator, group.at_least, dates, today)
    return {
        "group": group.id,
        "operator": group.operator,
        "at_least": group.at_least,
        "met": group.holds(metrics),
        "percent": combine_percents(
            group.operator, group.at_least, [i["percent"] for i in items]
        ),
        "on": on.isoformat() if on else None,
        "items": items,
    }


# Metrics moved forward to a review


def _value_at(
    spec: MetricSpec,
    value: Decimal,
    recent: Decimal,
    days: int,
    ahead: int,
    moment_day: dt.date,
    today: dt.date,
) -> Decimal:
    """Move a metric's value ``ahead`` days forward at its pace.

    ``moment_day`` is the local day the moved value is for.
    """
    if spec.window.kind == Window.ROLLING_DAYS:
        width = spec.window.days or 1
        if ahead >= width:
            return recent * width / days
        return value * (width - ahead) / width + recent * ahead / days
    if spec.window.kind == Window.YEAR_TO_DATE and moment_day.year > today.year:
        # The window started again on 1 January of the review's year.
        in_year = (moment_day - moment_day.replace(month=1, day=1)).days + 1
        return recent * in_year / days
    return value + recent * ahead / days


def metrics_at(
    ladder: Ladder,
    metrics: Mapping[str, Decimal],
    recent: Mapping[str, Decimal],
    deadline: dt.datetime,
    as_of: dt.datetime,
    days: int,
) -> tuple[dict[str, Decimal], int]:
    """Return every metric of the ladder moved at its pace to the end of the
    period a review at ``deadline`` judges, and the days moved.

    A deadline already passed moves nothing.
    """
    today = local_date(as_of)
    moment_day = local_date(period_end(deadline))
    ahead = max((moment_day - today).days, 0)
    moved = {}
    for spec in ladder.specs:
        moved[spec.key] = _value_at(
            spec,
            metrics.get(spec.key, Decimal(0)),
            recent.get(spec.metric, Decimal(0)),
            days,
            ahead,
            max(moment_day, today),
            today,
        )
    return moved, ahead


def _review_node(
    group: GroupRule,
    metrics: dict[str, Decimal],
    moved: dict[str, Decimal],
    recent: Mapping[str, Decimal],
) -> dict[str, Any]:
    """Check a rule tree on the moved metrics. ``value`` is the moved value
    and ``now`` today's, so unmet_requirements() gives the shortfall at review."""
    items: list[dict[str, Any]] = []
    for item in group.items:
        if isinstance(item, GroupRule):
            items.append(_review_node(item, metrics, moved, recent))
            continue
        value = moved.get(item.key, Decimal(0))
        items.append(
            {
                "requirement": item.id,
                "metric": item.metric,
                "window": item.window.kind,
                "days": item.window.days,
                "value": str(value.quantize(Decimal("0.01"), rounding=ROUND_FLOOR)),
                "now": str(metrics.get(item.key, Decimal(0))),
                "threshold": str(item.threshold),
                "met": item.holds(moved),
                "recent": str(recent.get(item.metric, Decimal(0))),
            }
        )
    return {
        "group": group.id,
        "operator": group.operator,
        "at_least": group.at_least,
        "met": group.holds(moved),
        "items": items,
    }


# The outlook of one member


def review_deadline(
    review_at: dt.datetime | None, grace_until: dt.datetime | None, as_of: dt.datetime
) -> tuple[dt.datetime | None, bool]:
    """Return the moment that decides whether the tier is kept, and whether it
    is the end of a grace period.

    A review ahead decides, even when an old grace date is still stored (staff
    extended the review of a member in grace). Once the review has passed,
    the end of the grace period decides, if there is one.
    """
    if review_at is None:
        return None, False
    if review_at > as_of or grace_until is None:
        return review_at, False
    return grace_until, True


def project_outlook(
    ladder: Ladder,
    tier_id: int | None,
    review_at: dt.datetime | None,
    grace_until: dt.datetime | None,
    metrics: Mapping[str, Decimal],
    recent: Mapping[str, Decimal],
    as_of: dt.datetime,
    *,
    days: int,
    override_keeps: bool = False,
    has_new_activity: bool = True,
) -> Outlook:
    """Compute a member's outlook without running a query.

    ``tier_id``, ``review_at`` and ``grace_until`` are the member's tier and
    dates, ``metrics`` its metrics as of ``as_of`` and ``recent`` each
    metric's value over the last ``days`` days. ``override_keeps`` is True
    when an override keeps the tier past the review, and
    ``has_new_activity`` False when the "new activity" publish policy keeps
    it. The module docstring defines every figure.
    """
    today = local_date(as_of)
    # Rule checks take a dict; one copy serves every check below.
    values = dict(metrics)
    current = ladder.by_id(tier_id) or ladder.base
    upper = ladder.above(current.id)
    explanation: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "version": ladder.version_number,
        "pace_days": days,
        "next": None,
        "review": None,
    }
    progress = 0
    projected_on = None
    if upper is not None:
        if upper.entry is None:
            progress, projected_on, rule = 100, today, None
        else:
            rule = _reach_group(upper.entry, values, recent, today, days)
            progress = rule["percent"]
            projected_on = dt.date.fromisoformat(rule["on"]) if rule["on"] else None
        explanation["next"] = {
            "tier": upper.id,
            "name": upper.name,
            "percent": progress,
            "on": projected_on.isoformat() if projected_on else None,
            "rule": rule,
        }

    retention_progress = None
    rules = current.retention or current.entry
    if current.id != ladder.base.id and rules is not None:
        retention_progress = _reach_group(rules, values, recent, today, days)["percent"]

    deadline, in_grace = review_deadline(review_at, grace_until, as_of)
    at_risk = False
    if deadline is not None and current.id != ladder.base.id:
        at_risk, review = _risk_at(
            ladder,
            current.id,
            deadline,
            values,
            recent,
            as_of,
            days,
            override_keeps=override_keeps,
            has_new_activity=has_new_activity,
        )
        review["in_grace"] = in_grace
        explanation["review"] = review
    return Outlook(
        tier_id=current.id,
        next_tier_id=upper.id if upper else None,
        progress=progress,
        projected_on=projected_on,
        deadline=deadline,
        in_grace=in_grace,
        at_risk=at_risk,
        retention_progress=retention_progress,
        explanation=explanation,
    )


def _risk_at(
    ladder: Ladder,
    tier_id: int,
    deadline: dt.datetime,
    metrics: dict[str, Decimal],
    recent: Mapping[str, Decimal],
    as_of: dt.datetime,
    days: int,
    *,
    override_keeps: bool,
    has_new_activity: bool,
) -> tuple[bool, dict[str, Any]]:
    """Decide whether the tier would drop at ``deadline`` at the current pace,
    and explain it."""
    current = ladder.by_id(tier_id)
    assert current is not None
    moved, ahead = metrics_at(ladder, metrics, recent, deadline, as_of, days)
    chosen, _ = ladder.choose(moved, current.id)
    # Judged as of the deadline: "grandfather" keeps a tier only until its
    # review, so only "new_activity" can keep it here.
    chosen, held_by = _hold_by_policy(
        ladder, chosen, current.id, None, deadline, has_new_activity, deadline
    )
    drops = chosen.rank < current.rank
    rules = current.retention or current.entry
    return drops and not override_keeps, {
        "tier": current.id,
        "name": current.name,
        "at": deadline.isoformat(),
        "days_ahead": ahead,
        "kept": not drops,
        "kept_by_policy": held_by,
        "kept_by_override": override_keeps,
        "rule": _review_node(rules, metrics, moved, recent) if rules else None,
    }


# Refreshing the stored outlooks


def _override_keepers(
    ladder: Ladder,
    deadlines: Mapping[int, tuple[int, dt.datetime]],
    as_of: dt.datetime,
    overrides: Sequence[TierOverride] | None = None,
) -> set[int]:
    """Return the members whose active fixed override or floor keeps their
    tier past its deadline, in one query, or none when the members'
    ``overrides`` are passed in.

    ``deadlines`` maps member ids to their tier id and deadline.
    """
    if not deadlines:
        return set()
    modes = [TierOverride.Mode.FIXED, TierOverride.Mode.FLOOR]
    rows: Iterable[tuple[int, dt.datetime | None, int]]
    if overrides is None:
        rows = TierOverride.objects.filter(
            member_id__in=list(deadlines),
            status=TierOverride.Status.ACTIVE,
            mode__in=modes,
            requested_at__lte=as_of,
        ).values_list("member_id", "until", "tier__rank")
    else:
        rows = [
            (override.member_id, override.until, tier.rank)
            for override in overrides
            if override.status == TierOverride.Status.ACTIVE
            and override.mode in modes
            and override.requested_at <= as_of
            and (tier := ladder.by_id(override.tier_id)) is not None
        ]
    keepers = set()
    for member_id, until, rank in rows:
        tier_id, deadline = deadlines[member_id]
        current = ladder.by_id(tier_id)
        past_deadline = until is None or until > deadline
        if current is not None and past_deadline and rank >= current.rank:
            keepers.add(member_id)
    return keepers


def _without_new_activity(ladder: Ladder, member_ids: Iterable[int]) -> set[int]:
    """Return the members the "new_activity" policy keeps in their tier.

    Costs one query, and none under another policy.
    """
    ids = list(member_ids)
    if (
        ladder.policy != RuleVersion.Policy.NEW_ACTIVITY
        or ladder.effective_from is None
        or not ids
    ):
        return set()
    active = set(
        Activity.objects.filter(
            member_id__in=ids, recorded_at__gte=ladder.effective_from
        )
        .order_by()
        .values_list("member_id", flat=True)
        .distinct()
    )
    return set(ids) - active


def _deadlines(
    evaluations: Iterable[MemberEvaluation], as_of: dt.datetime
) -> dict[int, tuple[int, dt.datetime]]:
    deadlines = {}
    for evaluation in evaluations:
        deadline, _ = review_deadline(
            evaluation.review_at, evaluation.grace_until, as_of
        )
        if deadline is not None:
            deadlines[evaluation.member_id] = (evaluation.tier.id, deadline)
    return deadlines


def _refresh_chunk(
    ladder: Ladder,
    evaluations: list[MemberEvaluation],
    specs: Mapping[str, MetricSpec],
    as_of: dt.datetime,
    days: int,
    by_range: bool,
) -> int:
    """Store the outlooks of one chunk of evaluated members.

    ``by_range`` is True when the chunk is every live member in a pk range,
    so the ledger is read by range rather than by a list of ids. Returns the
    number of outlooks written.
    """
    first, last = evaluations[0].member_id, evaluations[-1].member_id
    ledger = (
        Activity.objects.filter(member_id__gte=first, member_id__lte=last)
        if by_range
        else Activity.objects.filter(member_id__in=[e.member_id for e in evaluations])
    )
    paces = _recent_metrics(ledger, ladder, specs, as_of, days)
    deadlines = _deadlines(evaluations, as_of)
    keepers = _override_keepers(ladder, deadlines, as_of)
    policy_kept = _without_new_activity(ladder, deadlines)

    rows = []
    for evaluation in evaluations:
        member_id = evaluation.member_id
        outlook = project_outlook(
            ladder,
            evaluation.tier.id,
            evaluation.review_at,
            evaluation.grace_until,
            evaluation.metrics,
            recent_values(paces.get(member_id, {}), specs),
            as_of,
            days=days,
            override_keeps=member_id in keepers,
            has_new_activity=member_id not in policy_kept,
        )
        rows.append(_outlook_row(member_id, outlook, as_of))
    MemberOutlook.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["member"],
        update_fields=[
            "tier",
            "next_tier",
            "progress",
            "projected_on",
            "review_at",
            "at_risk",
            "retention_progress",
            "explanation",
            "computed_at",
        ],
    )
    return len(rows)


def _outlook_row(member_id: int, outlook: Outlook, as_of: dt.datetime) -> MemberOutlook:
    return MemberOutlook(
        member_id=member_id,
        tier_id=outlook.tier_id,
        next_tier_id=outlook.next_tier_id,
        progress=outlook.progress,
        projected_on=outlook.projected_on,
        review_at=outlook.deadline,
        at_risk=outlook.at_risk,
        retention_progress=outlook.retention_progress,
        explanation=outlook.explanation,
        computed_at=as_of,
    )


def _delete_merged(member_ids: list[int] | None) -> int:
    """Delete the stored outlooks of merged members, in one query.

    iter_evaluations() skips merged members, so their outlooks would
    otherwise stay in the queues as they were before the merge.
    """
    stale = MemberOutlook.objects.filter(member__merged_into__isnull=False)
    if member_ids is not None:
        stale = stale.filter(member_id__in=member_ids)
    removed, _ = stale.delete()
    return removed


def refresh_outlooks(
    member_ids: Iterable[int] | None = None,
    as_of: dt.datetime | None = None,
    *,
    chunk_size: int | None = None,
) -> int:
    """Recompute and store the outlooks of live members as of ``as_of``.

    ``member_ids=None`` refreshes every member; merged members are skipped
    and their stored outlooks deleted. Each member is evaluated as
    tiers.evaluation would evaluate it now, without writing its tier, so a
    tier the next evaluation changes is already the outlook's tier. The cost
    is a fixed number of queries per chunk (see the module docstring), and
    running it again writes the same rows. Returns the number of outlooks
    written, or 0 when no rule version is in effect.
    """
    as_of = as_of or timezone.now()
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be an aware datetime.")
    try:
        ladder = Ladder.load(as_of=as_of)
    except LadderError as error:
        logger.warning(
            "outlook refresh skipped as_of=%s error=%s", as_of.isoformat(), error
        )
        return 0
    days = pace_days()
    specs = pace_specs(ladder, days)
    ids = None if member_ids is None else sorted(set(member_ids))
    logger.info(
        "outlook refresh started as_of=%s version=%d scope=%s",
        as_of.isoformat(),
        ladder.version_number,
        "all" if ids is None else f"{len(ids)} members",
    )
    written = 0
    for evaluations in iter_evaluations(
        ladder, ids, as_of=as_of, chunk_size=chunk_size
    ):
        if evaluations:
            written += _refresh_chunk(
                ladder, evaluations, specs, as_of, days, by_range=ids is None
            )
    removed = _delete_merged(ids)
    logger.info(
        "outlook refresh finished as_of=%s written=%d removed=%d",
        as_of.isoformat(),
        written,
        removed,
    )
    return written


# The member page


@dataclass(frozen=True)
class PaceText:
    """The member page's pace sentences; each is "" when it does not apply."""

    # "At your pace, Gold by March."
    projection: str = ""
    # The recent activity the projection assumes continues.
    basis: str = ""
    # "At your pace you would fall short of keeping Gold at your review on …"
    risk: str = ""


def format_month(day: dt.date, as_of: dt.datetime) -> str:
    """Format the month of ``day``, with its year unless it is that of ``as_of``."""
    # Translators: django.utils.dateformat format strings for a month
    # ("March", e.g. "n月") and a month with its year ("March 2027", e.g.
    # "Y年n月"). Letters are format codes.
    if day.year == local_date(as_of).year:
        month_format = pgettext("date format: month", "F")
    else:
        month_format = pgettext("date format: month and year", "F Y")
    return dateformat.format(day, month_format)


def _leaves(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "items" not in node:
        return [node]
    return [leaf for item in node["items"] for leaf in _leaves(item)]


def _pace_basis(rule: Mapping[str, Any], days: int) -> str:
    """Name the recent value of each metric the rule tree uses."""
    parts = []
    seen = set()
    for leaf in _leaves(rule):
        metric = leaf["metric"]
        if metric in seen:
            continue
        seen.add(metric)
        # Translators: a metric and its value over the pace window, e.g.
        # "net spend ¥1,200" or "orders 3".
        parts.append(
            gettext("%(metric)s %(value)s")
            % {
                "metric": Metric(metric).label,
                "value": format_metric_value(metric, Decimal(leaf["recent"])),
            }
        )
    # Translators: "activity" lists metrics with their values, e.g. "net
    # spend ¥1,200, orders 3".
    return gettext("Based on your last %(days)s days: %(activity)s.") % {
        "days": days,
        "activity": pgettext("list separator", ", ").join(parts),
    }


def describe_pace(outlook: Outlook, as_of: dt.datetime) -> PaceText:
    """Write an outlook as the member page's sentences, in the active language.

    The projection is left out for a member who already meets the next
    tier's rules, or whose pace gives no date.
    """
    projection = basis = risk = ""
    upcoming = outlook.explanation.get("next")
    if upcoming and outlook.progress < 100 and outlook.projected_on:
        projection = gettext("At your pace, %(tier)s by %(month)s.") % {
            "tier": upcoming["name"],
            "month": format_month(outlook.projected_on, as_of),
        }
        if upcoming["rule"]:
            basis = _pace_basis(upcoming["rule"], outlook.explanation["pace_days"])
    review = outlook.explanation.get("review")
    if outlook.at_risk and review and outlook.deadline:
        names = {"tier": review["name"], "date": format_date(outlook.deadline)}
        if outlook.in_grace:
            risk = (
                gettext(
                    "At your pace you would fall short of keeping %(tier)s when "
                    "your grace period ends on %(date)s."
                )
                % names
            )
        else:
            risk = (
                gettext(
                    "At your pace you would fall short of keeping %(tier)s at "
                    "your review on %(date)s."
                )
                % names
            )
    return PaceText(projection=projection, basis=basis, risk=risk)


def member_outlook(
    member: Member,
    as_of: dt.datetime | None = None,
    *,
    ladder: Ladder | None = None,
    metrics: Mapping[str, Decimal] | None = None,
    overrides: Sequence[TierOverride] | None = None,
) -> Outlook:
    """Compute one member's outlook live from its stored tier and dates.

    The member page shows the stored tier, so this does too, unlike
    refresh_outlooks(), which projects from what an evaluation would decide.
    Costs seven queries: six to load the rules and one aggregate for both the
    metrics and the pace. A caller that has evaluated the member already can
    pass the ``ladder`` and the member's ``metrics`` as of ``as_of``, which
    leaves one aggregate over the pace window, and none when ``metrics``
    contains the pace windows of pace_specs() too. A member with a review
    date adds one query for the overrides unless the caller passes the
    member's ``overrides``, and the "new_activity" publish policy one more.
    Raises LadderError when no rule version is in effect.
    """
    as_of = as_of or timezone.now()
    ladder = ladder or Ladder.load(as_of=as_of)
    days = pace_days()
    specs = pace_specs(ladder, days)
    ledger = Activity.objects.filter(member_id=member.pk)
    if metrics is None:
        specs_to_compute = ladder.specs | set(specs.values())
        rows = compute_metrics(ledger, specs_to_compute, ladder.kinds, as_of)
        metrics = rows.get(member.pk, {})
        recent = recent_values(metrics, specs)
    elif all(spec.key in metrics for spec in specs.values()):
        recent = recent_values(metrics, specs)
    else:
        paces = _recent_metrics(ledger, ladder, specs, as_of, days)
        recent = recent_values(paces.get(member.pk, {}), specs)
    deadline, _ = review_deadline(member.review_at, member.grace_until, as_of)
    keepers: set[int] = set()
    policy_kept: set[int] = set()
    if deadline is not None and member.tier_id is not None:
        keepers = _override_keepers(
            ladder, {member.pk: (member.tier_id, deadline)}, as_of, overrides
        )
        policy_kept = _without_new_activity(ladder, [member.pk])
    return project_outlook(
        ladder,
        member.tier_id,
        member.review_at,
        member.grace_until,
        metrics,
        recent,
        as_of,
        days=days,
        override_keeps=member.pk in keepers,
        has_new_activity=member.pk not in policy_kept,
    )


def member_pace(
    member: Member,
    as_of: dt.datetime | None = None,
    *,
    ladder: Ladder | None = None,
    metrics: Mapping[str, Decimal] | None = None,
    overrides: Sequence[TierOverride] | None = None,
) -> PaceText:
    """Return the member page's pace sentences, or none without rules in effect.

    Takes and costs what member_outlook() does.
    """
    as_of = as_of or timezone.now()
    try:
        outlook = member_outlook(
            member, as_of, ladder=ladder, metrics=metrics, overrides=overrides
        )
    except LadderError:
        return PaceText()
    return describe_pace(outlook, as_of)


# What a member lacks, for the queues and the reminders


def missing_text(rule: Mapping[str, Any] | None) -> str:
    """Describe what a checked rule tree lacks, in the active language.

    For example "¥800 more net spend and 2 more orders". Returns "" for a
    tree that is met or missing.
    """
    if not rule or rule["met"]:
        return ""
    return describe_unmet(unmet_requirements(rule))


def describe_unmet(shortfall: Mapping[str, Any]) -> str:
    """Describe a tree pruned by tiers.warnings.unmet_requirements()."""
    return _describe_unmet(shortfall, nested=False)


# Queue actions


def nudge_key(member_id: int, day: dt.date) -> str:
    """Return the outbox key of a member's reminder on ``day``: one a day."""
    return f"nudge:{member_id}:{day.isoformat()}"


def nudge_params(outlook: MemberOutlook) -> dict[str, Any] | None:
    """Return the reminder parameters for a stored outlook, or None if there
    is nothing to remind of.

    A member at risk is reminded of what keeps its tier at the review, at the
    current pace. Anyone else short of the next tier is reminded of what
    reaches it and, when the pace gives one, the projected date.
    """
    explanation = outlook.explanation or {}
    review = explanation.get("review")
    if outlook.at_risk and review and review.get("rule") and not review["rule"]["met"]:
        return {
            "goal": "keep",
            "tier": review["name"],
            "review_at": review["at"],
            "in_grace": bool(review.get("in_grace")),
            "shortfall": unmet_requirements(review["rule"]),
        }
    upcoming = explanation.get("next")
    if upcoming and upcoming.get("rule") and not upcoming["rule"]["met"]:
        return {
            "goal": "reach",
            "tier": upcoming["name"],
            "projected_on": upcoming["on"],
            "shortfall": unmet_requirements(upcoming["rule"]),
        }
    return None


@dataclass
class NudgeResult:
    sent: int = 0
    # Members who already had a reminder that day.
    repeated: int = 0
    # Members with nothing to remind of, or without a stored outlook.
    skipped: int = 0


def send_nudges(member_ids: Sequence[int], day: dt.date) -> NudgeResult:
    """Queue a reminder to each member from its stored outlook, at most one
    per member and day.

    The reminder goes through members.notifications.notify() with the topic
    "nudge", so it is rendered in the member's language when sent. Costs two
    queries, then two per reminder (notify() reads the member's language and
    inserts its rows).
    """
    # Imported on use because members.notifications imports this module.
    from members.models import OutboxMessage
    from members.notifications import notify

    # NOTE: notify() handles one member at a time; a bulk variant in
    # members.notifications would make this a fixed number of queries.
    ids = sorted(set(member_ids))
    keys = {member_id: nudge_key(member_id, day) for member_id in ids}
    already = set(
        OutboxMessage.objects.filter(key__in=list(keys.values())).values_list(
            "key", flat=True
        )
    )
    result = NudgeResult()
    outlooks = {o.member_id: o for o in MemberOutlook.objects.filter(member_id__in=ids)}
    with transaction.atomic():
        for member_id in ids:
            if keys[member_id] in already:
                result.repeated += 1
                continue
            outlook = outlooks.get(member_id)
            params = nudge_params(outlook) if outlook is not None else None
            if params is None:
                result.skipped += 1
                continue
            notify(member_id, OutboxMessage.Topic.NUDGE, params, keys[member_id])
            result.sent += 1
    logger.info(
        "nudges queued day=%s sent=%d repeated=%d skipped=%d",
        day.isoformat(),
        result.sent,
        result.repeated,
        result.skipped,
    )
    return result


@dataclass(frozen=True)
class ExtensionResult:
    extended: tuple[int, ...]
    # Members left unchanged because they have no tier or no review date.
    without_review: tuple[int, ...]


def extend_reviews(
    member_ids: Iterable[int],
    *,
    days: int,
    reason: str,
    user: Any,
    now: dt.datetime | None = None,
) -> ExtensionResult:
    """Move the review of each member ``days`` days later, and record why.

    A review still ahead moves by ``days``. A review that has passed (the
    member is in its grace period, or the review job has not run yet) moves
    to ``days`` after ``now``, so the extension always gives that much time.
    Any grace date stays, and the tier drops at once if the rules still fail
    at the new review. One ReviewExtension per member stores who, why and
    the dates before and after. Members without a tier or a review date are
    left unchanged and returned apart. The outlooks of the extended members
    are refreshed afterwards. Raises ValueError for ``days`` outside 1 to
    365 or an empty reason.
    """
    if not MIN_EXTENSION_DAYS <= days <= MAX_EXTENSION_DAYS:
        raise ValueError(
            f"days={days} is out of range; extend a review by "
            f"{MIN_EXTENSION_DAYS} to {MAX_EXTENSION_DAYS} days."
        )
    reason = reason.strip()
    if not reason:
        raise ValueError("The reason is missing; say why the review is extended.")
    now = now or timezone.now()
    result = _move_reviews(sorted(set(member_ids)), days, reason, user, now)
    logger.info(
        "reviews extended days=%d user_id=%s extended=%d without_review=%d",
        days,
        getattr(user, "pk", None),
        len(result.extended),
        len(result.without_review),
    )
    if result.extended:
        refresh_outlooks(result.extended, as_of=now)
    return result


@transaction.atomic
def _move_reviews(
    member_ids: list[int], days: int, reason: str, user: Any, now: dt.datetime
) -> ExtensionResult:
    """Lock the members, move their review dates and write the audit rows.

    Costs four queries whatever the number of members: the locking read, one
    UPDATE for reviews ahead, one for reviews passed and one INSERT.
    """
    delta = dt.timedelta(days=days)
    rows = (
        Member.objects.select_for_update()
        .filter(pk__in=member_ids)
        .order_by("pk")
        .values_list("pk", "tier_id", "review_at")
    )
    ahead: list[int] = []
    passed: list[int] = []
    without_review: list[int] = []
    extensions = []
    for member_id, tier_id, review_at in rows:
        if review_at is None or tier_id is None:
            without_review.append(member_id)
            continue
        if review_at > now:
            ahead.append(member_id)
            moved = review_at + delta
        else:
            passed.append(member_id)
            moved = now + delta
        extensions.append(
            ReviewExtension(
                member_id=member_id,
                tier_id=tier_id,
                previous_review_at=review_at,
                review_at=moved,
                reason=reason,
                extended_by=user,
            )
        )
    if ahead:
        Member.objects.filter(pk__in=ahead).update(review_at=F("review_at") + delta)
    if passed:
        Member.objects.filter(pk__in=passed).update(review_at=now + delta)
    ReviewExtension.objects.bulk_create(extensions)
    return ExtensionResult(
        extended=tuple(sorted(ahead + passed)), without_review=tuple(without_review)
    )
