"""The activities behind an evaluation, for "why was I (not) promoted?" questions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.translation import get_language, gettext

from members.models import Activity, ActivityKind
from tiers.models import Metric, Window
from tiers.rendering import describe_activity

Role = ActivityKind.Role

# Activity roles that feed each metric, as tiers.metrics counts them.
# Growth value is left out: which kinds feed it depends on the version's
# weights, except for opening balances (see _counts_towards).
_ROLES_BY_METRIC: dict[str, frozenset[str]] = {
    Metric.NET_SPEND: frozenset({Role.PURCHASE, Role.REFUND, Role.OPENING}),
    Metric.ORDERS: frozenset({Role.PURCHASE}),
    Metric.VISITS: frozenset({Role.VISIT}),
    Metric.REVIEWS: frozenset({Role.REVIEW}),
    Metric.REFERRALS: frozenset({Role.REFERRAL}),
    Metric.ACTIVE_DAYS: frozenset(
        role for role in Role.values if role not in (Role.REFUND, Role.OPENING)
    ),
}

# The page lists at most this many activities, newest first.
MAX_ACTIVITIES = 500


@dataclass(frozen=True)
class CountedActivity:
    activity: Activity
    metrics: tuple[str, ...]  # labels such as "net spend (last 365 days)"
    # The activity in words, in the active language: its kind's name, or
    # "Opening balance from the previous program" with its values.
    description: str = ""


def _requirement_rows(explanation: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        row for tier in explanation.get("tiers", []) for row in tier["requirements"]
    ]
    retention = explanation.get("retention")
    if retention:
        rows.extend(retention["requirements"])
    return rows


def _window_label(row: dict[str, Any]) -> str:
    label = str(Metric(row["metric"]).label)
    if row["days"]:
        window = gettext("last %(days)d days") % {"days": row["days"]}
    else:
        window = str(Window(row["window"]).label)
    return f"{label} ({window})"


def _counts_towards(activity: Activity, metric: str) -> bool:
    """Return whether ``activity`` feeds ``metric``, judged by its kind's role.

    An opening balance feeds net spend through its amount and growth value
    through its carried-over growth value, so it counts only where the value
    it carries is not zero.
    """
    role = activity.kind.role
    if role == Role.OPENING:
        if metric == Metric.NET_SPEND:
            return activity.amount != 0
        if metric == Metric.GROWTH_VALUE:
            return activity.growth_points != 0
        return False
    roles = _ROLES_BY_METRIC.get(metric)
    return roles is not None and role in roles


def activities_that_counted(
    member_id: int, explanation: dict[str, Any]
) -> list[CountedActivity]:
    """List the member's activities up to the evaluation moment, newest first,
    each with the requirements whose metric and window it counted towards
    (one query)."""
    language = get_language() or settings.LANGUAGE_CODE
    rows = _requirement_rows(explanation)
    end = dt.datetime.fromisoformat(str(explanation["as_of"]))
    starts = [row["start"] for row in rows]
    activities = Activity.objects.filter(member_id=member_id, occurred_at__lte=end)
    if starts and all(start is not None for start in starts):
        earliest = min(dt.datetime.fromisoformat(start) for start in starts)
        activities = activities.filter(occurred_at__gte=earliest)
    activities = activities.select_related("kind", "channel").order_by(
        "-occurred_at", "-pk"
    )[:MAX_ACTIVITIES]
    counted = []
    for activity in activities:
        labels = []
        for row in rows:
            if not _counts_towards(activity, row["metric"]):
                continue
            start = dt.datetime.fromisoformat(row["start"]) if row["start"] else None
            if start is not None and activity.occurred_at < start:
                continue
            label = _window_label(row)
            if label not in labels:
                labels.append(label)
        description = describe_activity(activity, language)
        counted.append(CountedActivity(activity, tuple(labels), description))
    return counted
