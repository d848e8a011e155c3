"""Benchmark: refreshing every member's outlook, and the work queue lists.

Times tiers.outlook.refresh_outlooks() over every member against two
baselines measured in the same run: one hand-written GROUP BY statement over
the ledger (bench.simulate.floor_seconds), and iterating the evaluations of
every member without writing anything (tiers.evaluation.iter_evaluations),
which the refresh does first. Then times the near promotion and at-risk
admin lists. Data comes from bench.generate, already loaded.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_outlook \\
        .venv/bin/python -m bench.outlook_bench

The lists are timed twice: right after the refresh has rewritten every row,
and after VACUUM ANALYZE. Autovacuum runs both on its own once a fifth of
the rows have changed (PostgreSQL's default scale factors are 0.2 for
vacuum and 0.1 for analyze).
``--lists-only`` skips the refresh and times the lists over stored outlooks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from collections.abc import Callable
from typing import Any

from bench.generate import setup_django

LADDER_NOTE = "Outlook benchmark ladder"


def ensure_published_ladder() -> None:
    """Publish a ladder whose upper tiers are reviewed, so members have
    review dates and the at-risk figures are computed."""
    from tiers.models import RuleVersion, Tier, Validity
    from tiers.publishing import publish
    from tiers.rules import (
        Need,
        TierSpec,
        VersionSpec,
        WeightSpec,
        all_of,
        any_of,
        build,
    )

    if RuleVersion.objects.filter(status="published", note=LADDER_NOTE).exists():
        return
    names = [
        ("Outlook base", 0),
        ("Outlook silver", 10),
        ("Outlook gold", 20),
        ("Outlook top", 30),
    ]
    tiers = [
        Tier.objects.get_or_create(name=name, defaults={"rank": rank + 200})[0]
        for name, rank in names
    ]
    spec = VersionSpec(
        note=LADDER_NOTE,
        tiers=[
            TierSpec(tiers[0]),
            TierSpec(
                tiers[1],
                any_of(Need("net_spend", 2000), Need("orders", 4)),
                retention=all_of(Need("net_spend", 1500)),
                validity=Validity.MONTHS,
                validity_months=12,
            ),
            TierSpec(
                tiers[2],
                all_of(
                    Need("net_spend", 8000), Need("orders", 8), Need("active_days", 6)
                ),
                retention=all_of(Need("net_spend", 5000, window="year_to_date")),
                validity=Validity.CALENDAR_YEAR,
                grace_days=30,
            ),
            TierSpec(
                tiers[3],
                any_of(
                    all_of(
                        Need("net_spend", 30000, window="year_to_date"),
                        Need("orders", 12),
                    ),
                    Need("growth_value", 60000, window="lifetime"),
                ),
            ),
        ],
        weights=[
            WeightSpec("purchase", per_event=10, per_unit=1),
            WeightSpec("review", per_event=50, daily_cap=100),
            WeightSpec("visit", per_event=20),
        ],
    )
    publish(
        build(spec),
        user=None,
        reason="benchmark",
        policy="reevaluate",
        effective_from=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        allow_past=True,
    )


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Return the shortest of ``repeat`` timed runs and the last run's result."""
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def evaluate_without_writing() -> int:
    """Evaluate every member as refresh_outlooks() does, writing nothing."""
    from django.utils import timezone

    from tiers.evaluation import iter_evaluations
    from tiers.ladder import Ladder

    ladder = Ladder.load()
    chunks = iter_evaluations(ladder, as_of=timezone.now())
    return sum(len(chunk) for chunk in chunks)


def time_queue_page(params: dict[str, str]) -> tuple[float, int, int]:
    """Render one queue list page as a superuser.

    Returns the seconds taken, the number of queries and the rows listed.
    """
    from django.contrib import admin
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from tiers.models import MemberOutlook

    user = User(username="bench", is_staff=True, is_superuser=True, is_active=True)
    request = RequestFactory().get("/admin/tiers/memberoutlook/", params)
    request.user = user
    model_admin = admin.site.get_model_admin(MemberOutlook)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        response = model_admin.changelist_view(request)
        response.render()
    elapsed = time.perf_counter() - started
    rows = len(response.context_data["cl"].result_list)
    return elapsed, len(queries), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=1, help="Runs of each full pass; best is kept."
    )
    parser.add_argument(
        "--lists-only",
        action="store_true",
        help="Time only the queue lists, over the outlooks already stored.",
    )
    arguments = parser.parse_args()
    setup_django()
    import django
    from django.db import connection

    from members.models import Activity, Member
    from tiers.models import MemberOutlook

    ensure_published_ladder()
    members = Member.objects.count()
    activities = Activity.objects.count()
    print(
        f"machine: {platform.machine()}, {platform.python_version()}, "
        f"Django {django.get_version()}, {connection.vendor}"
    )
    print(f"members: {members}, activities: {activities}")
    if not arguments.lists_only:
        time_refresh(arguments.repeat)

    near = MemberOutlook.objects.filter(
        next_tier__isnull=False, progress__gte=80, progress__lt=100
    ).count()
    at_risk = MemberOutlook.objects.filter(at_risk=True).count()
    print(f"near promotion (80 %): {near}, at risk: {at_risk}")
    time_lists("before VACUUM ANALYZE")
    # Autovacuum does the same soon after a refresh rewrote every row.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE tiers_memberoutlook")
    time_lists("after VACUUM ANALYZE")


def time_refresh(repeat: int) -> None:
    """Time the two baselines and refresh_outlooks(), first and second run."""
    from bench.simulate import floor_seconds
    from tiers.models import MemberOutlook
    from tiers.outlook import refresh_outlooks

    floor, _ = best_of(3, floor_seconds)
    print(f"baseline, one GROUP BY statement: {floor:.2f} s")
    evaluation, evaluated = best_of(repeat, evaluate_without_writing)
    print(f"baseline, iter_evaluations() of everyone: {evaluation:.2f} s ({evaluated})")

    MemberOutlook.objects.all().delete()
    first, written = best_of(1, refresh_outlooks)
    print(f"refresh_outlooks(), first run (inserts): {first:.2f} s ({written})")
    again, written = best_of(repeat, refresh_outlooks)
    print(f"refresh_outlooks(), again (updates): {again:.2f} s ({written})")
    print(
        f"ratio refresh / evaluations: {again / evaluation:.2f}x, "
        f"refresh / GROUP BY: {again / floor:.1f}x"
    )


def time_lists(moment: str) -> None:
    for label, params in [
        ("near promotion list", {}),
        ("near promotion list, 70 %", {"share": "70"}),
        ("at-risk list", {"queue": "at_risk"}),
        (
            "at-risk list, review within 30 days",
            {"queue": "at_risk", "review_within": "30"},
        ),
    ]:
        # The first render warms PostgreSQL's buffers; the second is timed.
        time_queue_page(params)
        seconds, queries, rows = time_queue_page(params)
        print(
            f"{label}, {moment}: {seconds * 1000:.0f} ms, {queries} queries, "
            f"{rows} rows"
        )


if __name__ == "__main__":
    main()
