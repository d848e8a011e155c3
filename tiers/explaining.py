"""The activities behind an evaluation, for "why was I (not) promoted?" questions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext

from members.models import Activity, ActivityKind
from tiers.models import Metric, Window

# Activity roles that feed each metric, as tiers.metrics counts them.
# Growth value is left out: which kinds feed it depends on the version's weights.
_ROLES_BY_METRIC: dict[str, frozenset[str]] = {
    Metric.NET_SPEND: frozenset({ActivityKind.Role.PURCHASE, ActivityKind.Role.REFUND}),
    Metric.ORDERS: frozenset({ActivityKind.Role.PURCHASE}),
    Metric.VISITS: frozenset({ActivityKind.Role.VISIT}),
    Metric.REVIEWS: frozenset({ActivityKind.Role.REVIEW}),
    Metric.REFERRALS: frozenset({ActivityKind.Role.REFERRAL}),
    Metric.ACTIVE_DAYS: frozenset(
        role for role in ActivityKind.Role.values if role != ActivityKind.Role.REFUND
    ),
}

# The page lists at most this many activities, newest first.
MAX_ACTIVITIES = 500


@dataclass(frozen=True)
class CountedActivity:
    activity: Activity
    metrics: tuple[str, ...]  # labels such as "net spend (last 365 days)"


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


def activities_that_counted(
    member_id: int, explanation: dict[str, Any]
) -> list[CountedActivity]:
    """List the member's activities up to the evaluation moment, newest first,
    each with the requirements whose metric and window it counted towards
    (one query)."""
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
            roles = _ROLES_BY_METRIC.get(row["metric"])
            if roles is None or activity.kind.role not in roles:
                continue
            start = dt.datetime.fromisoformat(row["start"]) if row["start"] else None
            if start is not None and activity.occurred_at < start:
                continue
            label = _window_label(row)
            if label not in labels:
                labels.append(label)
        counted.append(CountedActivity(activity, tuple(labels)))
    return counted
