"""Figures for the operations dashboard on the admin home.

Each figure is one or a few aggregate queries (GROUP BY tier, week or
status), never a query per member. It comes back as a frozen dataclass,
which the admin caches and draws as a chart, a table and a spreadsheet.

Weeks start on Monday at midnight in the program's time zone
(settings.TIME_ZONE), and "the last N weeks" includes the current, partial
week. Members merged into another member (``Member.merged_into`` set) are
left out of every figure, together with their tier changes and grants,
because the member they were merged into carries on for them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Lag, TruncDate, TruncWeek
from django.utils import timezone

from benefits.models import Grant
from members.models import Activity, ActivityKind, ImportBatch, Member
from tiers.metrics import WindowSpec, program_zone
from tiers.models import Tier, TierChange, TierSnapshot
from tiers.models import Window as WindowKind

logger = logging.getLogger(__name__)

DEFAULT_WEEKS = 12
MAX_WEEKS = 104
DEFAULT_CHURN_DAYS = 90
MAX_CHURN_DAYS = 3660
# Failed and refused import batches listed under import health.
PROBLEM_BATCHES_SHOWN = 5
# How long computed figures are served from the cache, in seconds.
DEFAULT_CACHE_SECONDS = 300
CACHE_KEY_PREFIX = "tiers.dashboard.v1"
# Snapshot rows written per INSERT by the backfill.
BACKFILL_BATCH_SIZE = 2000


def churn_days_setting() -> int:
    """Return settings.CRM_CHURN_DAYS, the default churn window in days (90)."""
    return int(getattr(settings, "CRM_CHURN_DAYS", DEFAULT_CHURN_DAYS))


def cache_seconds_setting() -> int:
    """Return settings.CRM_DASHBOARD_CACHE_SECONDS (default 300)."""
    return int(getattr(settings, "CRM_DASHBOARD_CACHE_SECONDS", DEFAULT_CACHE_SECONDS))


# The grouping of tier change reasons into automatic, manual and carried over.
#
# Evaluation and the reviews decide INITIAL, PROMOTION, DEMOTION, RENEWAL
# and GRACE from the rules, so they are automatic. OVERRIDE is a tier set by
# staff. OPENING is a tier brought from an earlier program, and MERGE the
# tier a member takes over in a merge. Neither is a rule decision or a staff
# judgement on the member, so they form a third group, carried over.
AUTOMATIC = "automatic"
MANUAL = "manual"
CARRIED_OVER = "carried_over"
TRIGGERS = (AUTOMATIC, MANUAL, CARRIED_OVER)
TRIGGER_OF_REASON: Mapping[str, str] = {
    TierChange.Reason.INITIAL: AUTOMATIC,
    TierChange.Reason.PROMOTION: AUTOMATIC,
    TierChange.Reason.DEMOTION: AUTOMATIC,
    TierChange.Reason.RENEWAL: AUTOMATIC,
    TierChange.Reason.GRACE: AUTOMATIC,
    TierChange.Reason.OVERRIDE: MANUAL,
    TierChange.Reason.OPENING: CARRIED_OVER,
    TierChange.Reason.MERGE: CARRIED_OVER,
}

# Import batch statuses in the order the charts stack them.
IMPORT_STATUSES: tuple[str, ...] = tuple(ImportBatch.Status.values)
PROBLEM_STATUSES = (ImportBatch.Status.FAILED, ImportBatch.Status.REFUSED)


# Shared pieces


@dataclass(frozen=True)
class TierLabel:
    """A tier as the figures show it: id, name, colour and rank."""

    id: int
    name: str
    colour: str
    rank: int


@dataclass(frozen=True)
class WeekRange:
    """The last N weeks: their Mondays, oldest first, and the aware bounds."""

    mondays: tuple[dt.date, ...]
    start: dt.datetime
    end: dt.datetime

    @property
    def last_day(self) -> dt.date:
        return self.mondays[-1] + dt.timedelta(days=6)


def week_range(weeks: int, now: dt.datetime) -> WeekRange:
    """Return the ``weeks`` weeks that end with the week containing ``now``.

    ``start`` is the first Monday's midnight and ``end`` the midnight after
    the last Sunday, both in the program's time zone.
    """
    check_weeks(weeks)
    zone = program_zone()
    today = now.astimezone(zone).date()
    this_monday = today - dt.timedelta(days=today.weekday())
    mondays = tuple(
        this_monday - dt.timedelta(weeks=back) for back in range(weeks - 1, -1, -1)
    )
    start = dt.datetime.combine(mondays[0], dt.time.min, tzinfo=zone)
    end = dt.datetime.combine(
        this_monday + dt.timedelta(weeks=1), dt.time.min, tzinfo=zone
    )
    return WeekRange(mondays=mondays, start=start, end=end)


def check_weeks(weeks: int) -> None:
    if not 1 <= weeks <= MAX_WEEKS:
        raise ValueError(f"weeks={weeks} is invalid. Use 1 to {MAX_WEEKS}.")


def check_churn_days(days: int) -> None:
    if not 1 <= days <= MAX_CHURN_DAYS:
        raise ValueError(f"days={days} is invalid. Use 1 to {MAX_CHURN_DAYS}.")


def load_tiers() -> tuple[TierLabel, ...]:
    """Return every tier, lowest rank first."""
    return tuple(
        TierLabel(id=pk, name=name, colour=colour, rank=rank)
        for pk, name, colour, rank in Tier.objects.order_by("rank").values_list(
            "pk", "name", "colour", "rank"
        )
    )


def _monday(value: dt.date | dt.datetime) -> dt.date:
    """Return the date of a TruncWeek result in the program's time zone."""
    if isinstance(value, dt.datetime):
        return value.astimezone(program_zone()).date()
    return value


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _current_members() -> Q:
    return Q(merged_into__isnull=True)


def _merged_member_ids() -> QuerySet[Member, int]:
    """Return the ids of merged members, as a subquery to exclude.

    The foreign key index on ``merged_into`` finds the few merged members,
    so excluding them costs far less than joining every row to its member.
    """
    return Member.objects.filter(merged_into__isnull=False).values_list("pk", flat=True)


# Tier distribution now


@dataclass(frozen=True)
class TierCount:
    """Members holding one tier, or no tier yet when ``tier`` is None."""

    tier: TierLabel | None
    members: int
    share: float | None


@dataclass(frozen=True)
class Distribution:
    """Members per tier now, lowest tier first, then members without a tier."""

    rows: tuple[TierCount, ...]
    total: int


def members_per_tier() -> dict[int | None, int]:
    """Count the members of each tier id, with None for members without a tier."""
    counts = (
        Member.objects.filter(_current_members())
        .values_list("tier_id")
        .annotate(members=Count("pk"))
        .order_by()
    )
    return {tier_id: members for tier_id, members in counts}


def tier_distribution(
    tiers: Iterable[TierLabel] | None = None,
    counts: Mapping[int | None, int] | None = None,
) -> Distribution:
    """Count the members in each tier now, from ``Member.tier``.

    Every tier has a row, empty ones too. The row for members without a
    tier is there only when there are such members. ``counts`` takes the
    result of members_per_tier() when the caller already has it.
    """
    tiers = load_tiers() if tiers is None else tuple(tiers)
    counts = members_per_tier() if counts is None else counts
    total = sum(counts.values())
    rows = [
        TierCount(tier, counts.get(tier.id, 0), _share(counts.get(tier.id, 0), total))
        for tier in tiers
    ]
    without_tier = counts.get(None, 0)
    if without_tier:
        rows.append(TierCount(None, without_tier, _share(without_tier, total)))
    return Distribution(rows=tuple(rows), total=total)


# Tier distribution over time


@dataclass(frozen=True)
class HistoryPoint:
    """Members per tier on ``day``, the latest snapshot day of the week.

    ``members`` follows the order of DistributionHistory.tiers. ``day`` is
    None, and every count None, when the week has no snapshot.
    """

    monday: dt.date
    day: dt.date | None
    members: tuple[int | None, ...]


@dataclass(frozen=True)
class DistributionHistory:
    tiers: tuple[TierLabel, ...]
    points: tuple[HistoryPoint, ...]


def distribution_history(
    weeks: int,
    now: dt.datetime | None = None,
    tiers: Iterable[TierLabel] | None = None,
) -> DistributionHistory:
    """Read one TierSnapshot day per week for the last ``weeks`` weeks.

    The day used is the latest one with snapshots in each week, so the
    current week shows the most recent snapshot and a week where the daily
    job missed some days still gets a point.
    """
    now = now or timezone.now()
    tiers = load_tiers() if tiers is None else tuple(tiers)
    span = week_range(weeks, now)
    latest_day_per_week = (
        TierSnapshot.objects.filter(day__gte=span.mondays[0], day__lte=span.last_day)
        .annotate(week=TruncWeek("day"))
        .values("week")
        .annotate(latest=Max("day"))
        .values("latest")
        .order_by()
    )
    rows = (
        TierSnapshot.objects.filter(day__in=Subquery(latest_day_per_week))
        .values_list("day", "tier_id", "members")
        .order_by()
    )

    by_day: dict[dt.date, dict[int, int]] = defaultdict(dict)
    for snapshot_day, tier_id, count in rows:
        by_day[snapshot_day][tier_id] = count
    day_of_week = {day - dt.timedelta(days=day.weekday()): day for day in by_day}
    points = []
    for monday in span.mondays:
        day = day_of_week.get(monday)
        if day is None:
            points.append(HistoryPoint(monday, None, tuple(None for _ in tiers)))
            continue
        counts = by_day[day]
        points.append(
            HistoryPoint(monday, day, tuple(counts.get(tier.id, 0) for tier in tiers))
        )
    return DistributionHistory(tiers=tiers, points=tuple(points))


# Daily snapshots


def record_tier_snapshot(day: dt.date | None = None) -> int:
    """Store the current number of members per tier as the snapshot of ``day``.

    This is the daily scheduled task (00:10). ``day`` defaults to yesterday
    in the program's time zone: just after midnight, the current tiers are
    the tiers at the end of yesterday. Every tier gets a row, empty ones
    with 0. Running it again for the same day replaces that day's counts,
    so a retried delivery leaves one row per (day, tier). Returns the number
    of rows written.
    """
    if day is None:
        day = timezone.localdate(timezone.now(), program_zone()) - dt.timedelta(days=1)
    logger.info("tier snapshot for %s started", day)
    tier_ids = list(Tier.objects.values_list("pk", flat=True))
    counts = members_per_tier()
    snapshots = [
        TierSnapshot(day=day, tier_id=tier_id, members=counts.get(tier_id, 0))
        for tier_id in tier_ids
    ]
    TierSnapshot.objects.bulk_create(
        snapshots,
        update_conflicts=True,
        unique_fields=["day", "tier"],
        update_fields=["members"],
    )
    logger.info("tier snapshot for %s stored %d tiers", day, len(snapshots))
    return len(snapshots)


def _as_date(value: dt.date | str) -> dt.date:
    # SQLite returns the truncated date of a raw query as text.
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def _daily_tier_deltas(
    before: dt.datetime,
) -> dict[dt.date, dict[int, int]]:
    """Return, per local day, how many members entered minus left each tier.

    Each member's previous tier is the ``to_tier`` of their change before,
    found with LAG() over the member's history, so a member's deltas up to
    a day add up to +1 for the tier of their latest change by then. The
    ``from_tier`` column is not used, so history rows that disagree with it
    cannot unbalance the sums.
    """
    zone = program_zone()
    changes = (
        TierChange.objects.filter(changed_at__lt=before)
        .exclude(member_id__in=_merged_member_ids())
        .annotate(
            day=TruncDate("changed_at", tzinfo=zone),
            tier=F("to_tier_id"),
            previous=Window(
                Lag("to_tier_id"),
                partition_by=[F("member_id")],
                order_by=[F("changed_at").asc(), F("pk").asc()],
            ),
        )
        .values_list("day", "tier", "previous")
        .order_by()
    )
    inner_sql, params = changes.query.sql_with_params()
    day, tier, previous = (
        connection.ops.quote_name(name) for name in ("day", "tier", "previous")
    )
    # The ORM cannot group by the result of a window function, so the
    # compiled query becomes the FROM of one GROUP BY statement. Every
    # value in it is a bound parameter.
    sql = (
        f"SELECT {day}, {tier}, {previous}, COUNT(*) "  # noqa: S608
        f"FROM ({inner_sql}) AS member_changes "
        f"GROUP BY {day}, {tier}, {previous}"
    )
    deltas: dict[dt.date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for raw_day, to_tier, from_tier, changes_count in cursor.fetchall():
            day_deltas = deltas[_as_date(raw_day)]
            day_deltas[to_tier] += changes_count
            if from_tier is not None:
                day_deltas[from_tier] -= changes_count
    return deltas


def backfill_tier_snapshots(days: int, today: dt.date | None = None) -> int:
    """Reconstruct the daily snapshots of the ``days`` days before ``today``.

    A member counts in a tier at the end of a day when their latest tier
    change up to then moved them into it. Days that already have snapshots
    are kept as the daily task recorded them. Returns the number of days
    filled.

    Limits: the result is only as complete as the tier history. Members
    whose tier was set without a TierChange row (a direct database load)
    are missing from every reconstructed day, and members merged away since
    are left out of the days before their merge as well. Staff run this
    once, after installing the dashboard; from then on the daily task
    records each day.
    """
    if days < 1:
        raise ValueError(f"days={days} is invalid. Use 1 or more.")
    zone = program_zone()
    today = today or timezone.localdate(timezone.now(), zone)
    first = today - dt.timedelta(days=days)
    logger.info("tier snapshot backfill from %s to %s started", first, today)

    recorded = set(
        TierSnapshot.objects.filter(day__gte=first, day__lt=today)
        .values_list("day", flat=True)
        .distinct()
    )
    tier_ids = list(Tier.objects.values_list("pk", flat=True))
    deltas = _daily_tier_deltas(
        before=dt.datetime.combine(today, dt.time.min, tzinfo=zone)
    )

    # Changes before the first day make the opening balance.
    members: dict[int, int] = defaultdict(int)
    for day in sorted(day for day in deltas if day < first):
        for tier_id, delta in deltas[day].items():
            members[tier_id] += delta
    snapshots: list[TierSnapshot] = []
    filled = 0
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        for tier_id, delta in deltas.get(day, {}).items():
            members[tier_id] += delta
        if day in recorded:
            continue
        filled += 1
        snapshots.extend(
            TierSnapshot(day=day, tier_id=tier_id, members=members[tier_id])
            for tier_id in tier_ids
        )
    # ignore_conflicts: the daily task may record a day in the meantime.
    TierSnapshot.objects.bulk_create(
        snapshots, batch_size=BACKFILL_BATCH_SIZE, ignore_conflicts=True
    )
    logger.info(
        "tier snapshot backfill from %s to %s filled %d days, kept %d recorded days",
        first,
        today,
        filled,
        len(recorded),
    )
    return filled


# Promotions and downgrades per week


@dataclass(frozen=True)
class TriggerCounts:
    """Tier changes split by what triggered them (see TRIGGER_OF_REASON)."""

    automatic: int = 0
    manual: int = 0
    carried_over: int = 0

    @property
    def total(self) -> int:
        return self.automatic + self.manual + self.carried_over

    def get(self, trigger: str) -> int:
        value: int = getattr(self, trigger)
        return value


@dataclass(frozen=True)
class MovementWeek:
    monday: dt.date
    promotions: TriggerCounts
    downgrades: TriggerCounts


@dataclass(frozen=True)
class Movements:
    """Promotions and downgrades in each of the last N weeks."""

    weeks: tuple[MovementWeek, ...]

    @property
    def promotions(self) -> TriggerCounts:
        return _sum_triggers(week.promotions for week in self.weeks)

    @property
    def downgrades(self) -> TriggerCounts:
        return _sum_triggers(week.downgrades for week in self.weeks)


def _sum_triggers(counts: Iterable[TriggerCounts]) -> TriggerCounts:
    totals = dict.fromkeys(TRIGGERS, 0)
    for count in counts:
        for trigger in TRIGGERS:
            totals[trigger] += count.get(trigger)
    return TriggerCounts(**totals)


def tier_movements(weeks: int, now: dt.datetime | None = None) -> Movements:
    """Count promotions and downgrades per week, by trigger.

    A promotion is a change to a tier of higher rank than the one before,
    a downgrade one to a lower rank. A member's first tier (no tier before)
    and changes that keep the rank, such as renewals, are neither.
    """
    now = now or timezone.now()
    span = week_range(weeks, now)
    moved = Q(to_tier__rank__gt=F("from_tier__rank")) | Q(
        to_tier__rank__lt=F("from_tier__rank")
    )
    rows = (
        TierChange.objects.filter(
            moved,
            changed_at__gte=span.start,
            changed_at__lt=span.end,
            from_tier__isnull=False,
        )
        .exclude(member_id__in=_merged_member_ids())
        .annotate(
            week=TruncWeek("changed_at", tzinfo=program_zone()),
            promoted=Case(
                When(to_tier__rank__gt=F("from_tier__rank"), then=Value(True)),
                default=Value(False),
            ),
        )
        .values_list("week", "reason", "promoted")
        .annotate(changes=Count("pk"))
        .order_by()
    )

    counts: dict[tuple[dt.date, bool], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(TRIGGERS, 0)
    )
    for week, reason, promoted, changes in rows:
        trigger = TRIGGER_OF_REASON.get(reason)
        if trigger is None:
            logger.warning(
                "tier movements skipped %d changes with unknown reason %r",
                changes,
                reason,
            )
            continue
        counts[(_monday(week), bool(promoted))][trigger] += changes
    return Movements(
        weeks=tuple(
            MovementWeek(
                monday=monday,
                promotions=TriggerCounts(**counts[(monday, True)]),
                downgrades=TriggerCounts(**counts[(monday, False)]),
            )
            for monday in span.mondays
        )
    )


# Benefit issuance and redemption


@dataclass(frozen=True)
class BenefitRow:
    """Grants of one tier issued in the range, and how many were redeemed.

    ``redeemed`` and ``expired`` count those same grants by their status
    now, so the redemption rate never exceeds 1.
    """

    tier: TierLabel
    issued: int
    redeemed: int
    expired: int

    @property
    def redemption_rate(self) -> float | None:
        return _share(self.redeemed, self.issued)


@dataclass(frozen=True)
class BenefitUse:
    start: dt.datetime
    end: dt.datetime
    rows: tuple[BenefitRow, ...]

    @property
    def issued(self) -> int:
        return sum(row.issued for row in self.rows)

    @property
    def redeemed(self) -> int:
        return sum(row.redeemed for row in self.rows)

    @property
    def expired(self) -> int:
        return sum(row.expired for row in self.rows)

    @property
    def redemption_rate(self) -> float | None:
        return _share(self.redeemed, self.issued)


def benefit_use(
    start: dt.datetime,
    end: dt.datetime,
    tiers: Iterable[TierLabel] | None = None,
) -> BenefitUse:
    """Count grants issued in [start, end) per tier of the grant's period.

    A grant counts as issued when it has an issue time, so grants waiting
    for stock or approval are not counted until they are issued.
    """
    tiers = load_tiers() if tiers is None else tuple(tiers)
    counts = (
        Grant.objects.filter(issued_at__gte=start, issued_at__lt=end)
        .exclude(member_id__in=_merged_member_ids())
        .values_list("period__tier_id")
        .annotate(
            issued=Count("pk"),
            redeemed=Count("pk", filter=Q(status=Grant.Status.REDEEMED)),
            expired=Count("pk", filter=Q(status=Grant.Status.EXPIRED)),
        )
        .order_by()
    )
    by_tier = {
        tier_id: (issued, redeemed, expired)
        for tier_id, issued, redeemed, expired in counts
    }
    rows = tuple(BenefitRow(tier, *by_tier.get(tier.id, (0, 0, 0))) for tier in tiers)
    return BenefitUse(start=start, end=end, rows=rows)


# Churn by tier


@dataclass(frozen=True)
class ChurnRow:
    """Members of one tier (None: no tier yet) and those with no activity."""

    tier: TierLabel | None
    members: int
    inactive: int

    @property
    def share(self) -> float | None:
        return _share(self.inactive, self.members)


@dataclass(frozen=True)
class Churn:
    """Members with no activity in the ``days`` days from ``since`` to now."""

    days: int
    since: dt.datetime
    rows: tuple[ChurnRow, ...]

    @property
    def members(self) -> int:
        return sum(row.members for row in self.rows)

    @property
    def inactive(self) -> int:
        return sum(row.inactive for row in self.rows)

    @property
    def share(self) -> float | None:
        return _share(self.inactive, self.members)


def churn_by_tier(
    days: int | None = None,
    now: dt.datetime | None = None,
    tiers: Iterable[TierLabel] | None = None,
    counts: Mapping[int | None, int] | None = None,
) -> Churn:
    """Count the members of each tier with no activity in the last ``days`` days.

    The window starts at midnight in the program's time zone, as rolling
    rule windows do: the last 90 days on 15 March cover 15 March and the
    89 days before it. Any ledger row counts as activity (refunds and
    visits too) except opening balances, which are carried over from an
    earlier program. ``days`` defaults to settings.CRM_CHURN_DAYS, and
    ``counts`` takes the result of members_per_tier() when the caller
    already has it.
    """
    days = churn_days_setting() if days is None else days
    check_churn_days(days)
    now = now or timezone.now()
    tiers = load_tiers() if tiers is None else tuple(tiers)
    since, _end = WindowSpec(WindowKind.ROLLING_DAYS, days).bounds(now)
    assert since is not None
    counts = members_per_tier() if counts is None else counts
    recent = Activity.objects.filter(
        member=OuterRef("pk"), occurred_at__gte=since, occurred_at__lte=now
    ).exclude(kind__role=ActivityKind.Role.OPENING)
    # NOT EXISTS in the WHERE clause lets PostgreSQL run one hash anti join
    # over the window's activity. The same test inside COUNT(... FILTER)
    # probes the activity index once per member: 4.7 s instead of 2.2 s in
    # bench/dashboard_bench.py on 1,000,000 members (docs/benchmarks.md).
    inactive = dict(
        Member.objects.filter(_current_members())
        .filter(~Exists(recent))
        .values_list("tier_id")
        .annotate(inactive=Count("pk"))
        .order_by()
    )
    rows = [
        ChurnRow(tier, counts.get(tier.id, 0), inactive.get(tier.id, 0))
        for tier in tiers
    ]
    if counts.get(None):
        rows.append(ChurnRow(None, counts[None], inactive.get(None, 0)))
    return Churn(days=days, since=since, rows=tuple(rows))


# Import health


@dataclass(frozen=True)
class ImportWeek:
    """Import batches created in one week: count per status, rows and rejects.

    ``batches`` follows the order of IMPORT_STATUSES.
    """

    monday: dt.date
    batches: tuple[int, ...]
    rows: int
    rejected: int

    @property
    def total(self) -> int:
        return sum(self.batches)


@dataclass(frozen=True)
class ProblemBatch:
    """A failed or refused import batch, for the list of latest problems."""

    id: int
    kind: str
    status: str
    file_name: str
    created_at: dt.datetime
    total_rows: int
    rejected: int
    message: str


@dataclass(frozen=True)
class ImportHealth:
    statuses: tuple[str, ...]
    weeks: tuple[ImportWeek, ...]
    problems: tuple[ProblemBatch, ...] = field(default=())

    @property
    def batches(self) -> int:
        return sum(week.total for week in self.weeks)

    @property
    def rows(self) -> int:
        return sum(week.rows for week in self.weeks)

    @property
    def rejected(self) -> int:
        return sum(week.rejected for week in self.weeks)

    @property
    def rejection_rate(self) -> float | None:
        return _share(self.rejected, self.rows)

    def batches_with_status(self, status: str) -> int:
        index = self.statuses.index(status)
        return sum(week.batches[index] for week in self.weeks)


def import_health(weeks: int, now: dt.datetime | None = None) -> ImportHealth:
    """Count import batches per week and status, with their rows and rejects.

    ``rows`` adds up each batch's ``total_rows`` and ``rejected`` its
    ``rejected_count``, by the week the batch was created. The problems are
    the latest failed or refused batches of the same weeks.
    """
    now = now or timezone.now()
    span = week_range(weeks, now)
    in_range = ImportBatch.objects.filter(
        created_at__gte=span.start, created_at__lt=span.end
    )
    counts = (
        in_range.annotate(week=TruncWeek("created_at", tzinfo=program_zone()))
        .values_list("week", "status")
        .annotate(
            batches=Count("pk"),
            rows=Sum("total_rows"),
            rejected=Sum("rejected_count"),
        )
        .order_by()
    )
    per_week: dict[dt.date, dict[str, tuple[int, int, int]]] = defaultdict(dict)
    for week, status, batches, rows, rejected in counts:
        per_week[_monday(week)][status] = (batches, rows or 0, rejected or 0)

    import_weeks = []
    for monday in span.mondays:
        by_status = per_week.get(monday, {})
        import_weeks.append(
            ImportWeek(
                monday=monday,
                batches=tuple(
                    by_status.get(status, (0, 0, 0))[0] for status in IMPORT_STATUSES
                ),
                rows=sum(values[1] for values in by_status.values()),
                rejected=sum(values[2] for values in by_status.values()),
            )
        )
    problems = tuple(
        ProblemBatch(*values)
        for values in in_range.filter(status__in=PROBLEM_STATUSES)
        .order_by("-created_at", "-pk")
        .values_list(
            "pk",
            "kind",
            "status",
            "file_name",
            "created_at",
            "total_rows",
            "rejected_count",
            "message",
        )[:PROBLEM_BATCHES_SHOWN]
    )
    return ImportHealth(
        statuses=IMPORT_STATUSES, weeks=tuple(import_weeks), problems=problems
    )


# The whole dashboard


@dataclass(frozen=True)
class Dashboard:
    """Every figure of the dashboard, computed together at ``computed_at``."""

    computed_at: dt.datetime
    weeks: int
    churn_days: int
    tiers: tuple[TierLabel, ...]
    distribution: Distribution
    history: DistributionHistory
    movements: Movements
    benefits: BenefitUse
    churn: Churn
    imports: ImportHealth


def build_dashboard(
    weeks: int = DEFAULT_WEEKS,
    churn_days: int | None = None,
    now: dt.datetime | None = None,
) -> Dashboard:
    """Compute every figure with eight queries, whatever the number of members.

    The benefit figure covers the same weeks as the weekly charts. The
    member counts per tier are read once for the distribution and churn.
    """
    churn_days = churn_days_setting() if churn_days is None else churn_days
    check_weeks(weeks)
    check_churn_days(churn_days)
    now = now or timezone.now()
    span = week_range(weeks, now)
    tiers = load_tiers()
    counts = members_per_tier()
    return Dashboard(
        computed_at=now,
        weeks=weeks,
        churn_days=churn_days,
        tiers=tiers,
        distribution=tier_distribution(tiers, counts),
        history=distribution_history(weeks, now, tiers),
        movements=tier_movements(weeks, now),
        benefits=benefit_use(span.start, span.end, tiers),
        churn=churn_by_tier(churn_days, now, tiers, counts),
        imports=import_health(weeks, now),
    )


def cache_key(weeks: int, churn_days: int) -> str:
    return f"{CACHE_KEY_PREFIX}:{weeks}:{churn_days}"


def cached_dashboard(
    weeks: int = DEFAULT_WEEKS,
    churn_days: int | None = None,
    *,
    refresh: bool = False,
) -> Dashboard:
    """Return the figures from the cache, computing them when missing or stale.

    Figures stay in the cache for settings.CRM_DASHBOARD_CACHE_SECONDS, so
    the admin home does not run the aggregates on every visit. ``refresh``
    computes them again at once.
    """
    churn_days = churn_days_setting() if churn_days is None else churn_days
    key = cache_key(weeks, churn_days)
    if not refresh:
        stored = cache.get(key)
        if isinstance(stored, Dashboard):
            return stored
    dashboard = build_dashboard(weeks, churn_days)
    cache.set(key, dashboard, cache_seconds_setting())
    return dashboard
