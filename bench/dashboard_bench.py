"""Time each figure of the operations dashboard on a large PostgreSQL data set.

Run bench/generate.py first for the members and their activity. This
script then writes, with a few set-based SQL statements, what else the
dashboard reads: a four-tier ladder and a tier history for every member
(about 1.2 changes each). It adds benefit grants for 30 % of the members,
600 import batches and a year of daily tier snapshots rebuilt from the
history. It times every figure, the whole dashboard, the charts and the
Excel export against a baseline measured in the same run, ``SELECT
count(*)`` over the members table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_dash \\
        .venv/bin/python -m bench.dashboard_bench --repeat 3
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from bench.generate import setup_django

TIER_LADDER = [("Bronze", 0, "#a0522d"), ("Silver", 10, "#9ea7ad")]
TIER_LADDER += [("Gold", 20, "#c9a227"), ("Platinum", 30, "#5b6f8a")]
IMPORT_BATCHES = 600
SNAPSHOT_DAYS = 365


def bench_tiers() -> list[int]:
    """Return the ids of the four bench tiers, lowest rank first."""
    from tiers.models import Tier

    ids = []
    for name, rank, colour in TIER_LADDER:
        tier, _created = Tier.objects.get_or_create(
            rank=rank, defaults={"name": name, "colour": colour}
        )
        ids.append(tier.pk)
    return ids


# Each statement draws its pseudo-random numbers from the member id with a
# multiplicative hash, so that every run writes the same data.
HISTORY_SQL = [
    "DELETE FROM benefits_grant",
    "DELETE FROM benefits_tierperiod",
    "DELETE FROM tiers_tiersnapshot",
    "DELETE FROM tiers_tierchange",
    "DELETE FROM members_importbatch WHERE file_name LIKE 'bench-%%'",
    "UPDATE members_member SET tier_id = NULL, merged_into_id = NULL",
    # First tier: 55 % Bronze, 30 % Silver, 12 % Gold, 3 % Platinum, on
    # the day the member joined.
    """
    INSERT INTO tiers_tierchange
        (member_id, from_tier_id, to_tier_id, changed_at, as_of, reason, explanation)
    SELECT id, NULL, tiers[level], joined, joined, 'initial', '{}'
    FROM (
        SELECT id,
               (joined_on + time '10:00') AT TIME ZONE %(zone)s AS joined,
               CASE WHEN r < 550 THEN 1 WHEN r < 850 THEN 2
                    WHEN r < 970 THEN 3 ELSE 4 END AS level
        FROM (SELECT id, joined_on, (id * 2654435761) %% 1000 AS r
              FROM members_member) AS drawn
    ) AS first_tier, (SELECT %(tiers)s::bigint[] AS tiers) AS ladder
    """,
    # A move in the last 26 weeks for 40 % of the members: up one tier
    # (60 %) or down one, and 1 in 20 of those set by an override. Members
    # whose move would leave the top or bottom of the ladder get none.
    """
    INSERT INTO tiers_tierchange
        (member_id, from_tier_id, to_tier_id, changed_at, as_of, reason, explanation)
    SELECT member_id, tiers[level], tiers[target], moved_at, moved_at,
           CASE WHEN (member_id * 40503) %% 20 = 0 THEN 'override'
                WHEN target > level THEN 'promotion' ELSE 'demotion' END,
           '{}'
    FROM (
        SELECT c.member_id, c.changed_at,
               array_position(ladder.tiers, c.to_tier_id) AS level,
               CASE WHEN (c.member_id * 69069) %% 10 < 6
                    THEN least(array_position(ladder.tiers, c.to_tier_id) + 1, 4)
                    ELSE greatest(array_position(ladder.tiers, c.to_tier_id) - 1, 1)
               END AS target,
               greatest(
                   c.changed_at + interval '1 day',
                   now() - ((c.member_id * 2246822519) %% 182) * interval '1 day'
                         - ((c.member_id * 3266489917) %% 86400) * interval '1 second'
               ) AS moved_at
        FROM tiers_tierchange c, (SELECT %(tiers)s::bigint[] AS tiers) AS ladder
        WHERE (c.member_id * 2654435761) %% 10 < 4
    ) AS moves, (SELECT %(tiers)s::bigint[] AS tiers) AS ladder
    WHERE target <> level AND moved_at < now()
    """,
    # The member's tier is the one their latest change moved them to.
    """
    UPDATE members_member AS m SET tier_id = latest.to_tier_id,
                                   tier_since = latest.changed_at
    FROM (
        SELECT DISTINCT ON (member_id) member_id, to_tier_id, changed_at
        FROM tiers_tierchange ORDER BY member_id, changed_at DESC, id DESC
    ) AS latest
    WHERE latest.member_id = m.id
    """,
    # 1 member in 200 merged into the next member.
    """
    UPDATE members_member SET merged_into_id = id + 1
    WHERE id %% 200 = 0 AND id < (SELECT max(id) FROM members_member)
    """,
    # A benefit period and one grant for 30 % of the members, issued in
    # the last 26 weeks: 35 % redeemed, 15 % expired, the rest open.
    """
    INSERT INTO benefits_tierperiod (member_id, tier_id, starts_at, ends_at)
    SELECT id, tier_id, now() - interval '200 days', now() + interval '165 days'
    FROM members_member
    WHERE tier_id IS NOT NULL AND (id * 2654435761) %% 10 >= 7
    """,
    """
    INSERT INTO benefits_grant
        (member_id, benefit_id, tier_id, period_id, origin, status, code,
         stock_taken, created_at, issued_at, redeemed_at, auto_approved,
         rejection_reason, redemption_reference)
    SELECT member_id, %(benefit)s, tier_id, id, 'ongoing',
           CASE WHEN r < 35 THEN 'redeemed' WHEN r < 50 THEN 'expired'
                ELSE 'issued' END,
           'BENCH' || id, false, issued_at, issued_at,
           CASE WHEN r < 35 THEN issued_at + interval '3 days' END, false, '', ''
    FROM (
        SELECT id, member_id, tier_id, (member_id * 69069) %% 100 AS r,
               now() - ((member_id * 2246822519) %% 182) * interval '1 day'
                     - interval '3 days' AS issued_at
        FROM benefits_tierperiod
    ) AS periods
    """,
    # Import batches over the last 26 weeks, one in ten failed or refused.
    """
    INSERT INTO members_importbatch
        (kind, status, file_name, file_sha256, file_size, upload, options,
         created_at, total_rows, processed_rows, created_count, updated_count,
         unchanged_count, already_imported_count, duplicate_count,
         rejected_count, message, rollback_summary)
    SELECT 'activities',
           CASE WHEN n %% 20 = 0 THEN 'failed' WHEN n %% 20 = 1 THEN 'refused'
                WHEN n %% 20 = 2 THEN 'rolled_back' ELSE 'applied' END,
           'bench-' || n || '.csv', '', 0, '', '{}',
           now() - (n %% 182) * interval '1 day', 1000 + n, 1000 + n,
           0, 0, 0, 0, 0, n %% 37, '', '{}'
    FROM generate_series(1, %(batches)s) AS n
    """,
    "ANALYZE members_member",
    "ANALYZE tiers_tierchange",
    "ANALYZE benefits_grant",
    "ANALYZE benefits_tierperiod",
    "ANALYZE members_importbatch",
]


def prepare(zone: str) -> dict[str, float]:
    """Write the tier history, grants, batches and snapshots.

    Returns the seconds each of the two steps took.
    """
    from django.db import connection, transaction

    from benefits.models import Benefit
    from tiers.dashboard import backfill_tier_snapshots

    started = time.perf_counter()
    tiers = bench_tiers()
    benefit, _created = Benefit.objects.get_or_create(
        name="Bench coupon", defaults={"kind": Benefit.Kind.COUPON}
    )
    params = {
        "zone": zone,
        "tiers": tiers,
        "benefit": benefit.pk,
        "batches": IMPORT_BATCHES,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in HISTORY_SQL:
            cursor.execute(statement, params)
    written = time.perf_counter() - started

    started = time.perf_counter()
    backfill_tier_snapshots(SNAPSHOT_DAYS)
    return {"history": written, "backfill": time.perf_counter() - started}


def best_of(repeat: int, work: Callable[[], Any]) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def sizes() -> dict[str, int]:
    from django.db import connection

    tables = [
        "members_member",
        "members_activity",
        "tiers_tierchange",
        "benefits_grant",
        "members_importbatch",
        "tiers_tiersnapshot",
    ]
    counts = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
            counts[table] = cursor.fetchone()[0]
    return counts


def measure(repeat: int, weeks: int, churn_days: int) -> list[tuple[str, float]]:
    """Return (measurement, best seconds) pairs, the baseline first."""
    from django.db import connection
    from django.utils import timezone

    from tiers import admin_dashboard, dashboard

    def baseline() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM members_member")
            cursor.fetchone()

    now = timezone.now()
    span = dashboard.week_range(weeks, now)
    tiers = dashboard.load_tiers()
    board = dashboard.build_dashboard(weeks, churn_days, now)
    work: list[tuple[str, Callable[[], Any]]] = [
        ("baseline: SELECT count(*) FROM members_member", baseline),
        ("tiers (load_tiers)", dashboard.load_tiers),
        ("distribution now", lambda: dashboard.tier_distribution(tiers)),
        (
            f"distribution over {weeks} weeks (snapshots)",
            lambda: dashboard.distribution_history(weeks, now, tiers),
        ),
        (
            f"promotions and downgrades, {weeks} weeks",
            lambda: dashboard.tier_movements(weeks, now),
        ),
        (
            "benefits issued and redeemed",
            lambda: dashboard.benefit_use(span.start, span.end, tiers),
        ),
        (
            f"churn, {churn_days} days",
            lambda: dashboard.churn_by_tier(churn_days, now, tiers),
        ),
        ("import health", lambda: dashboard.import_health(weeks, now)),
        (
            "whole dashboard (build_dashboard)",
            lambda: dashboard.build_dashboard(weeks, churn_days, now),
        ),
        (
            "charts from computed figures",
            lambda: admin_dashboard.dashboard_charts(board),
        ),
        (
            "Excel workbook from computed figures",
            lambda: admin_dashboard.dashboard_workbook(board),
        ),
        ("record_tier_snapshot()", dashboard.record_tier_snapshot),
    ]
    return [(name, best_of(repeat, job)) for name, job in work]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="Runs per measurement; the best counts."
    )
    parser.add_argument("--weeks", type=int, default=12, help="Weeks of the charts.")
    parser.add_argument(
        "--churn-days", type=int, default=90, help="Churn window in days."
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="Write the tier history, grants and batches again even if present.",
    )
    arguments = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    setup_django()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from tiers.models import TierChange

    if connection.vendor != "postgresql":
        raise SystemExit(
            "The dashboard benchmark needs PostgreSQL; set DATABASE_URL to a "
            "postgres:// database filled by bench.generate."
        )
    if arguments.prepare or not TierChange.objects.exists():
        print("prepared in seconds:", prepare(settings.TIME_ZONE))
    print("rows:", sizes())

    results = measure(arguments.repeat, arguments.weeks, arguments.churn_days)
    baseline = results[0][1]
    today = timezone.localdate().isoformat()
    print(f"\nmeasured {today}, best of {arguments.repeat}\n")
    print("| measurement | seconds | ratio to the baseline |")
    print("| --- | --- | --- |")
    for name, seconds in results:
        print(f"| {name} | {seconds:.3f} | {seconds / baseline:.1f}× |")


if __name__ == "__main__":
    main()
