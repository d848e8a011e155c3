"""Seeded synthetic member and activity data for benchmarks.

Activity per member follows a skewed (Pareto) distribution over 24 months,
across 5 channels, with Chinese-format phone numbers. On PostgreSQL the rows
go in through COPY; on SQLite through large batched inserts.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python -m bench.generate --members 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import time
import uuid
from decimal import Decimal


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django

    django.setup()


CHANNELS = [
    ("bench-store", "store"),
    ("bench-tmall", "ecommerce"),
    ("bench-jd", "ecommerce"),
    ("bench-wechat", "social"),
    ("bench-douyin", "social"),
]


def generate(members: int, seed: int = 7) -> dict[str, float]:
    from django.conf import settings
    from django.db import connection, transaction
    from django.utils import timezone

    from members.models import Activity, ActivityKind, Channel, ChannelIdentity, Member

    started = time.perf_counter()
    rng = random.Random(seed)
    today = timezone.localdate()
    zone = timezone.get_current_timezone()
    with transaction.atomic():
        Activity.objects.all().delete()
        ChannelIdentity.objects.all().delete()
        from tiers.models import TierChange

        TierChange.objects.all().delete()
        Member.objects.all().delete()
        channels = []
        for code, kind in CHANNELS:
            channel, _ = Channel.objects.get_or_create(
                code=code, defaults={"name": code, "kind": kind}
            )
            channels.append(channel.pk)
    kinds = dict(ActivityKind.objects.values_list("code", "pk"))
    vendor = connection.vendor

    member_buffer = io.StringIO()
    identity_buffer = io.StringIO()
    activity_buffer = io.StringIO()
    base_id = 1
    activity_count = 0
    now = timezone.now().isoformat()
    # Raw inserts skip the model's default, so the language is written here.
    language = settings.LANGUAGE_CODE
    for offset in range(members):
        member_id = base_id + offset
        phone = f"13{rng.randrange(0, 10**9):09d}"
        joined = today - dt.timedelta(days=rng.randrange(30, 1500))
        member_buffer.write(
            f"{member_id}\t{uuid.UUID(int=rng.getrandbits(128))}\tBench member {member_id}"
            f"\t{phone}\t+86{phone}\t\t{joined}\t{language}\t{now}\t{now}\n"
        )
        identity_buffer.write(
            f"{member_id}\t{channels[member_id % len(channels)]}\tB{member_id:08d}\t{now}\n"
        )
        # Pareto-skewed activity: most members buy a few times, a few buy a lot.
        events = min(int(rng.paretovariate(1.3) * 4), 400)
        for event in range(events):
            day = today - dt.timedelta(days=rng.randrange(0, 730))
            moment = dt.datetime.combine(
                day, dt.time(rng.randrange(8, 22), rng.randrange(60)), tzinfo=zone
            )
            roll = rng.random()
            if roll < 0.70:
                kind, amount = "purchase", Decimal(rng.randrange(500, 200000)) / 100
            elif roll < 0.75:
                kind, amount = "refund", -Decimal(rng.randrange(500, 50000)) / 100
            elif roll < 0.90:
                kind, amount = "visit", Decimal(0)
            elif roll < 0.97:
                kind, amount = "review", Decimal(0)
            else:
                kind, amount = "referral", Decimal(0)
            channel = channels[rng.randrange(len(channels))]
            activity_buffer.write(
                f"{member_id}\t{channel}\t{kinds[kind]}\t{moment.isoformat()}\t{amount}"
                f"\t1\tR{member_id}-{event}\timport\t{now}\n"
            )
            activity_count += 1

    member_columns = (
        "id, public_id, name, phone, phone_e164, email, joined_on, language, "
        "created_at, updated_at"
    )
    identity_columns = "member_id, channel_id, external_id, created_at"
    activity_columns = (
        "member_id, channel_id, kind_id, occurred_at, amount, quantity, reference, "
        "source, recorded_at"
    )
    tables = [
        ("members_member", member_columns, member_buffer),
        ("members_channelidentity", identity_columns, identity_buffer),
        ("members_activity", activity_columns, activity_buffer),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for table, columns, buffer in tables:
            buffer.seek(0)
            if vendor == "postgresql":
                with cursor.cursor.copy(
                    f"COPY {table} ({columns}) FROM STDIN"  # noqa: S608
                ) as copy:
                    while data := buffer.read(1 << 20):
                        copy.write(data)
            else:
                placeholders = ", ".join(["%s"] * len(columns.split(",")))
                rows = [
                    [None if value == "" else value for value in line.split("\t")]
                    for line in buffer.getvalue().splitlines()
                ]
                for start in range(0, len(rows), 5000):
                    cursor.executemany(
                        f"INSERT INTO {table} ({columns}) VALUES ({placeholders})",  # noqa: S608
                        rows[start : start + 5000],
                    )
        if vendor == "postgresql":
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('members_member', 'id'), %s)",
                [base_id + members],
            )
            cursor.execute("ANALYZE members_member")
            cursor.execute("ANALYZE members_activity")
    return {
        "members": members,
        "activities": activity_count,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", type=int, default=100_000, help="Members to create."
    )
    parser.add_argument("--seed", type=int, default=7, help="Random seed.")
    arguments = parser.parse_args()
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(generate(arguments.members, arguments.seed))


if __name__ == "__main__":
    main()
