"""Benchmark: simulating a draft rule version over every member.

Measures tiers.simulation.simulate() against a floor measured in the same run:
one hand-written SQL statement that computes the same metrics per member with
GROUP BY, which is what any implementation must at least read. Data comes from
bench.generate, already loaded.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python -m bench.simulate --repeat 3

With ``--against-current`` it leaves the version in effect and the members'
tiers as they are (for example after bench.reevaluate_bench), builds the
benchmark ladder as a new draft and simulates that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from bench.generate import setup_django
from bench.machine import describe_machine, load_average

LADDER_NOTE = "Benchmark ladder"


def benchmark_spec(note: str = LADDER_NOTE) -> Any:
    """Return the four-tier benchmark ladder as a VersionSpec."""
    from tiers.models import Tier
    from tiers.rules import (
        Need,
        TierSpec,
        VersionSpec,
        WeightSpec,
        all_of,
        any_of,
    )

    names = [
        ("Bench base", 0),
        ("Bench silver", 10),
        ("Bench gold", 20),
        ("Bench top", 30),
    ]
    tiers = [
        Tier.objects.get_or_create(name=name, defaults={"rank": rank + 100})[0]
        for name, rank in names
    ]
    return VersionSpec(
        note=note,
        tiers=[
            TierSpec(tiers[0]),
            TierSpec(tiers[1], any_of(Need("net_spend", 2000), Need("orders", 4))),
            TierSpec(
                tiers[2],
                all_of(
                    Need("net_spend", 8000), Need("orders", 8), Need("active_days", 6)
                ),
                retention=all_of(Need("net_spend", 5000)),
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


def ensure_published_ladder() -> None:
    """Publish the benchmark ladder, effective since 2000, unless it is published."""
    from tiers.models import RuleVersion
    from tiers.publishing import publish
    from tiers.rules import build

    if RuleVersion.objects.filter(status="published", note=LADDER_NOTE).exists():
        return
    publish(
        build(benchmark_spec()),
        user=None,
        reason="benchmark",
        policy="reevaluate",
        effective_from=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        allow_past=True,
    )


FLOOR_SQL = """
SELECT a.member_id,
       SUM(a.amount) FILTER (WHERE a.kind_id IN (%(spend)s) AND a.occurred_at >= %%s),
       COUNT(*) FILTER (WHERE a.kind_id IN (%(purchase)s) AND a.occurred_at >= %%s),
       COUNT(DISTINCT (a.occurred_at AT TIME ZONE 'Asia/Shanghai')::date)
           FILTER (WHERE a.kind_id <> %(refund)s AND a.occurred_at >= %%s),
       SUM(a.amount) FILTER (WHERE a.kind_id IN (%(spend)s) AND a.occurred_at >= %%s),
       SUM(CASE WHEN a.kind_id = %(purchase)s THEN 10 + a.amount
                WHEN a.kind_id = %(visit)s THEN 20 ELSE 0 END)
FROM members_activity a
WHERE a.occurred_at <= %%s
GROUP BY a.member_id
"""


def floor_seconds() -> float:
    """Time one GROUP BY statement over the ledger with the same main aggregates."""
    from django.db import connection
    from django.utils import timezone

    from members.models import ActivityKind

    kinds = dict(ActivityKind.objects.values_list("code", "pk"))
    sql = FLOOR_SQL % {
        "spend": f"{kinds['purchase']}, {kinds['refund']}",
        "purchase": kinds["purchase"],
        "refund": kinds["refund"],
        "visit": kinds["visit"],
    }
    now = timezone.now()
    year_ago = now - dt.timedelta(days=365)
    year_start = now.replace(month=1, day=1, hour=0, minute=0)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, [year_ago, year_ago, year_ago, year_start, now])
        rows = cursor.fetchall()
    elapsed = time.perf_counter() - started
    assert rows
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="Runs of each; best is kept."
    )
    parser.add_argument(
        "--against-current",
        action="store_true",
        help=(
            "Keep the version in effect and the tiers members hold, and simulate "
            "the benchmark ladder as a new draft; skips the first evaluation."
        ),
    )
    arguments = parser.parse_args()
    setup_django()
    from members.models import Activity, Member
    from tiers.evaluation import evaluate
    from tiers.models import Requirement, RuleVersion
    from tiers.rules import build, copy_to_draft
    from tiers.simulation import simulate

    first_evaluation = None
    if arguments.against_current:
        draft = build(benchmark_spec(note="Benchmark draft"))
    else:
        ensure_published_ladder()
        current = RuleVersion.objects.filter(
            status="published", note=LADDER_NOTE
        ).first()
        if current is None:
            raise SystemExit("The benchmark ladder was not published; see above.")
        started = time.perf_counter()
        summary, _ = evaluate()
        first_evaluation = time.perf_counter() - started
        draft = copy_to_draft(current)
        # The draft raises the base-to-silver spend threshold from 2,000 to 3,000.
        requirement = Requirement.objects.get(
            version=draft, metric="net_spend", threshold=2000
        )
        requirement.threshold = requirement.threshold + 1000
        requirement.save()

    floors, simulations = [], []
    for _ in range(arguments.repeat):
        floors.append(floor_seconds())
        started = time.perf_counter()
        result = simulate(draft)
        simulations.append(time.perf_counter() - started)
        print(
            f"floor {floors[-1]:.2f} s, simulate {simulations[-1]:.2f} s, "
            f"load {load_average()}",
            flush=True,
        )
    floor, simulation = min(floors), min(simulations)
    print(describe_machine())
    print(f"members: {Member.objects.count()}, activities: {Activity.objects.count()}")
    if first_evaluation is not None:
        print(
            f"full evaluation (writes): {first_evaluation:.2f} s, "
            f"evaluated {summary.evaluated}"
        )
    print(f"floor (one GROUP BY statement): {floor:.2f} s")
    print(
        f"simulate(draft): {simulation:.2f} s, {result.evaluated} evaluated, "
        f"{result.moved} would move (up {sum(result.up_from.values())}, down "
        f"{sum(result.down_from.values())})"
    )
    print(f"ratio simulate / floor: {simulation / floor:.1f}x")


if __name__ == "__main__":
    main()
