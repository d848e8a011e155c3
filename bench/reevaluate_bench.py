"""Benchmark: re-evaluating every member after a rule change.

On a database filled by bench.generate, the benchmark publishes a four-tier
ladder that one SQL statement can express. Every requirement is net spend,
orders or active days over the last 365 days. Tiers are re-checked at every
evaluation (no reviews), and a member who fails drops to the tier still
qualified for. It evaluates everyone once, then publishes a copy that
raises the gold net spend threshold from 8,000 to 10,000 and times
``tiers.jobs.reevaluate_everyone``, the task that publishing with the
"reevaluate" policy queues. The baselines, in the same run:

* one hand-written UPDATE with a GROUP BY over the ledger, writing each
  member's tier for the same ladder into a scratch copy of the tier column;
  the two results are then compared member by member;
* a naive loop over a sample of members: one ORM aggregate per member, the
  tier decided in Python, one save per member (rolled back afterwards),
  extrapolated to every member.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h4_1m \\
        .venv/bin/python -m bench.reevaluate_bench

The published versions stay in the database; bench.simulate and
bench.page_load use them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import random
import time
from decimal import Decimal
from typing import Any

from bench.generate import setup_django
from bench.machine import describe_machine, load_average

logger = logging.getLogger(__name__)

LADDER_NOTE = "Benchmark ladder for SQL comparison"
# The tiers of bench.simulate's ladder, so both benchmarks share them.
TIER_NAMES = [
    ("Bench base", 100),
    ("Bench silver", 110),
    ("Bench gold", 120),
    ("Bench top", 130),
]
SILVER_SPEND, SILVER_ORDERS = 2000, 4
GOLD_SPEND, GOLD_ORDERS, GOLD_DAYS = 8000, 8, 6
RAISED_GOLD_SPEND = 10000
TOP_SPEND, TOP_ORDERS = 30000, 12
SCRATCH_TABLE = "bench_tier_copy"

# TODO: reviews, retention rules and growth value have no SQL counterpart
# here, so the member-by-member comparison covers only this simpler ladder.
# The ladder in SQL: spend, orders and active days per member over the
# window, then the highest tier whose entry holds. The thresholds are
# inclusive, as in tiers.evaluation. Members without activity in the window
# get the base tier through the LEFT JOIN.
STATEMENT_SQL = """
WITH metrics AS (
    SELECT a.member_id,
           COALESCE(SUM(a.amount) FILTER (WHERE a.kind_id = ANY(%(spend)s)), 0)
               AS spend,
           COUNT(*) FILTER (WHERE a.kind_id = ANY(%(orders)s)) AS orders,
           COUNT(DISTINCT (a.occurred_at AT TIME ZONE %(zone)s)::date)
               FILTER (WHERE a.kind_id = ANY(%(active)s)) AS days
    FROM members_activity a
    WHERE a.occurred_at >= %(start)s AND a.occurred_at <= %(end)s
    GROUP BY a.member_id
)
UPDATE bench_tier_copy AS target
SET tier_id = CASE
    WHEN m.spend >= %(top_spend)s AND m.orders >= %(top_orders)s THEN %(top)s
    WHEN m.spend >= %(gold_spend)s AND m.orders >= %(gold_orders)s
         AND m.days >= %(gold_days)s THEN %(gold)s
    WHEN m.spend >= %(silver_spend)s OR m.orders >= %(silver_orders)s
        THEN %(silver)s
    ELSE %(base)s
END
FROM bench_tier_copy AS source
LEFT JOIN metrics AS m ON m.member_id = source.member_id
WHERE target.member_id = source.member_id
"""


def _tiers() -> list[Any]:
    from tiers.models import Tier

    return [
        Tier.objects.get_or_create(name=name, defaults={"rank": rank})[0]
        for name, rank in TIER_NAMES
    ]


def _spec(gold_spend: int) -> Any:
    from tiers.models import Downgrade, Validity
    from tiers.rules import Need, TierSpec, VersionSpec, all_of, any_of

    base, silver, gold, top = _tiers()

    def continuous(tier: Any, entry: Any) -> TierSpec:
        return TierSpec(
            tier,
            entry,
            validity=Validity.CONTINUOUS,
            downgrade=Downgrade.TO_QUALIFIED,
        )

    return VersionSpec(
        note=LADDER_NOTE,
        tiers=[
            TierSpec(base),
            continuous(
                silver,
                any_of(Need("net_spend", SILVER_SPEND), Need("orders", SILVER_ORDERS)),
            ),
            continuous(
                gold,
                all_of(
                    Need("net_spend", gold_spend),
                    Need("orders", GOLD_ORDERS),
                    Need("active_days", GOLD_DAYS),
                ),
            ),
            continuous(
                top, all_of(Need("net_spend", TOP_SPEND), Need("orders", TOP_ORDERS))
            ),
        ],
    )


def publish_ladder(gold_spend: int, effective_from: dt.datetime) -> Any:
    """Publish the SQL-expressible ladder with the "reevaluate" policy.

    The django-q2 task that publishing queues is deleted from the ORM queue,
    because the benchmark calls the same function itself.
    """
    from django_q.models import OrmQ

    from tiers.publishing import publish
    from tiers.rules import build

    version = publish(
        build(_spec(gold_spend)),
        user=None,
        reason="benchmark",
        policy="reevaluate",
        effective_from=effective_from,
        allow_past=True,
    )
    OrmQ.objects.all().delete()
    return version


def run_statement(as_of: dt.datetime) -> float:
    """Copy the tier column to the scratch table and run the UPDATE; return seconds."""
    from django.conf import settings
    from django.db import connection

    from members.models import ActivityKind
    from tiers.metrics import WindowSpec

    roles = dict(ActivityKind.objects.values_list("pk", "role"))
    refund_or_opening = (ActivityKind.Role.REFUND, ActivityKind.Role.OPENING)
    start, end = WindowSpec("rolling_days", 365).bounds(as_of)
    base, silver, gold, top = (tier.pk for tier in _tiers())
    parameters = {
        "spend": [
            pk
            for pk, role in roles.items()
            if role in (ActivityKind.Role.PURCHASE, *refund_or_opening)
        ],
        "orders": [pk for pk, role in roles.items() if role == "purchase"],
        "active": [pk for pk, role in roles.items() if role not in refund_or_opening],
        "zone": settings.TIME_ZONE,
        "start": start,
        "end": end,
        "top_spend": TOP_SPEND,
        "top_orders": TOP_ORDERS,
        "gold_spend": RAISED_GOLD_SPEND,
        "gold_orders": GOLD_ORDERS,
        "gold_days": GOLD_DAYS,
        "silver_spend": SILVER_SPEND,
        "silver_orders": SILVER_ORDERS,
        "top": top,
        "gold": gold,
        "silver": silver,
        "base": base,
    }
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        # A plain table, not UNLOGGED, so its writes cost what the members
        # table's do.
        cursor.execute(
            f"CREATE TABLE {SCRATCH_TABLE} AS SELECT id AS member_id, tier_id "  # noqa: S608
            "FROM members_member WHERE merged_into_id IS NULL"
        )
        cursor.execute(f"ALTER TABLE {SCRATCH_TABLE} ADD PRIMARY KEY (member_id)")
        cursor.execute(f"ANALYZE {SCRATCH_TABLE}")
        started = time.perf_counter()
        cursor.execute(STATEMENT_SQL, parameters)
        return time.perf_counter() - started


def count_differences() -> tuple[int, list[tuple[int, int | None, int | None]]]:
    """Return how many members' tiers differ from the scratch table, and 5 of them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT m.id, m.tier_id, c.tier_id FROM members_member m "  # noqa: S608
            f"JOIN {SCRATCH_TABLE} c ON c.member_id = m.id "
            "WHERE m.tier_id IS DISTINCT FROM c.tier_id ORDER BY m.id"
        )
        rows = cursor.fetchall()
    return len(rows), rows[:5]


def naive_loop(as_of: dt.datetime, sample: int) -> tuple[float, int, int]:
    """Evaluate ``sample`` members one by one with the ORM, then roll back.

    Returns the seconds, the members evaluated and how many got another tier
    than the product gave them.
    """
    from django.db import transaction
    from django.db.models import Count, Q, Sum
    from django.db.models.functions import TruncDate

    from members.models import ActivityKind, Member
    from tiers.metrics import WindowSpec, program_zone

    start, end = WindowSpec("rolling_days", 365).bounds(as_of)
    base, silver, gold, top = _tiers()
    ids = list(Member.objects.values_list("pk", flat=True))
    chosen = sorted(random.Random(5).sample(ids, min(sample, len(ids))))
    spend_roles = (
        ActivityKind.Role.PURCHASE,
        ActivityKind.Role.REFUND,
        ActivityKind.Role.OPENING,
    )
    other_roles = (ActivityKind.Role.REFUND, ActivityKind.Role.OPENING)
    differences = 0
    started = time.perf_counter()
    with transaction.atomic():
        for member_id in chosen:
            member = Member.objects.get(pk=member_id)
            totals = member.activities.filter(
                occurred_at__gte=start, occurred_at__lte=end
            ).aggregate(
                spend=Sum("amount", filter=Q(kind__role__in=spend_roles)),
                orders=Count("pk", filter=Q(kind__role=ActivityKind.Role.PURCHASE)),
                days=Count(
                    TruncDate("occurred_at", tzinfo=program_zone()),
                    distinct=True,
                    filter=~Q(kind__role__in=other_roles),
                ),
            )
            spend = totals["spend"] or Decimal(0)
            orders, days = totals["orders"], totals["days"]
            if spend >= TOP_SPEND and orders >= TOP_ORDERS:
                tier = top
            elif (
                spend >= RAISED_GOLD_SPEND
                and orders >= GOLD_ORDERS
                and days >= GOLD_DAYS
            ):
                tier = gold
            elif spend >= SILVER_SPEND or orders >= SILVER_ORDERS:
                tier = silver
            else:
                tier = base
            if member.tier_id != tier.pk:
                differences += 1
            member.tier = tier
            member.save(update_fields=["tier"])
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return seconds, len(chosen), differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sample",
        type=int,
        default=2000,
        help="Members the naive per-member loop evaluates.",
    )
    arguments = parser.parse_args()
    setup_django()
    from django.utils import timezone

    from members.models import Activity, Member
    from tiers.jobs import reevaluate_everyone

    members = Member.objects.count()
    print(describe_machine())
    print(f"members: {members:,}, activities: {Activity.objects.count():,}")

    first = publish_ladder(GOLD_SPEND, timezone.now() - dt.timedelta(minutes=2))
    started = time.perf_counter()
    counts = reevaluate_everyone(first.pk)
    first_seconds = time.perf_counter() - started
    print(f"first evaluation: {first_seconds:.1f} s, {counts}, load {load_average()}")

    changed = publish_ladder(
        RAISED_GOLD_SPEND, timezone.now() - dt.timedelta(minutes=1)
    )
    # reevaluate_everyone() evaluates as of the moment it starts, which is
    # within milliseconds of this one; the generated times are whole minutes.
    as_of = timezone.now()
    started = time.perf_counter()
    counts = reevaluate_everyone(changed.pk)
    product_seconds = time.perf_counter() - started
    print(
        f"re-evaluation after the change: {product_seconds:.1f} s, {counts}, "
        f"load {load_average()}"
    )

    statement_seconds = run_statement(as_of)
    differences, examples = count_differences()
    print(
        f"statement: {statement_seconds:.1f} s; members whose tier differs: "
        f"{differences:,} (member id, product tier, statement tier: {examples}), "
        f"load {load_average()}"
    )

    naive_seconds, sampled, naive_differences = naive_loop(as_of, arguments.sample)
    extrapolated = naive_seconds / sampled * members
    print(
        f"naive loop: {naive_seconds:.1f} s for {sampled:,} members, "
        f"{naive_differences} differ from the product; extrapolated to "
        f"{members:,} members: {extrapolated:,.0f} s, load {load_average()}"
    )
    print()
    print("| measurement | seconds | ratio to the statement |")
    print("| --- | --- | --- |")
    rows = [
        ("baseline: one UPDATE with GROUP BY", statement_seconds),
        ("`reevaluate_everyone()` after the change", product_seconds),
        (
            f"naive ORM loop, {sampled:,} members, extrapolated to {members:,}",
            extrapolated,
        ),
        ("first evaluation of everyone", first_seconds),
    ]
    for label, seconds in rows:
        print(f"| {label} | {seconds:,.1f} | {seconds / statement_seconds:.1f}× |")


if __name__ == "__main__":
    main()
