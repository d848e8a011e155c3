"""Seeded synthetic member and activity data for benchmarks.

Activity per member follows a skewed (Pareto) distribution over 24 months,
across 5 channels, with Chinese-format phone numbers: about 20 activities per
member on average, so the default 1,000,000 members get about 20.5 million.
On PostgreSQL the rows go in through COPY; on SQLite through large batched
inserts.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python -m bench.generate --members 1000000
    .venv/bin/python -m bench.generate --files /tmp/bench-files --rows 100000 --dirty

``--files`` writes import files (bench.import_files) and needs no database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import os
import random
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Activities per member are min(int(Pareto(1.3) * SCALE), CAP), whose mean
# is about 20.5 with these values (measured over 400,000 draws with seed 7).
ACTIVITY_SCALE = 6
ACTIVITY_CAP = 600
# Members generated between two COPY calls.
FLUSH_MEMBERS = 50_000


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


def _write_member_activities(
    buffer: io.StringIO,
    rng: random.Random,
    member_id: int,
    channels: list[int],
    kinds: dict[str, int],
    today: dt.date,
    zone: Any,
    now: str,
) -> int:
    """Write one member's activities as COPY text and return how many."""
    # Pareto-skewed activity: most members buy a few times, a few buy a lot.
    events = min(int(rng.paretovariate(1.3) * ACTIVITY_SCALE), ACTIVITY_CAP)
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
        buffer.write(
            f"{member_id}\t{channel}\t{kinds[kind]}\t{moment.isoformat()}\t{amount}"
            f"\t1\tR{member_id}-{event}\timport\t{now}\n"
        )
    return events


def _load(
    cursor: Any, vendor: str, table: str, columns: str, buffer: io.StringIO
) -> None:
    """Insert the tab-separated rows of ``buffer`` into ``table``."""
    buffer.seek(0)
    if vendor == "postgresql":
        with cursor.cursor.copy(
            f"COPY {table} ({columns}) FROM STDIN"  # noqa: S608
        ) as copy:
            while data := buffer.read(1 << 20):
                copy.write(data)
        return
    placeholders = ", ".join(["%s"] * len(columns.split(",")))
    # No column is NULL: an empty field is an empty string, as COPY reads it.
    rows = [line.split("\t") for line in buffer.getvalue().splitlines()]
    for start in range(0, len(rows), 5000):
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders})",  # noqa: S608
            rows[start : start + 5000],
        )


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

    member_columns = (
        "id, public_id, name, phone, phone_e164, email, joined_on, language, "
        "created_at, updated_at"
    )
    identity_columns = "member_id, channel_id, external_id, created_at"
    activity_columns = (
        "member_id, channel_id, kind_id, occurred_at, amount, quantity, reference, "
        "source, recorded_at"
    )
    member_buffer = io.StringIO()
    identity_buffer = io.StringIO()
    activity_buffer = io.StringIO()
    base_id = 1
    activity_count = 0
    now = timezone.now().isoformat()
    # Raw inserts skip the model's default, so the language is written here.
    language = settings.LANGUAGE_CODE
    with transaction.atomic(), connection.cursor() as cursor:
        if vendor == "postgresql":
            # Replica mode skips the foreign key triggers until the
            # transaction ends. The rows only refer to ids made above, and
            # Django's deferred checks made the COMMIT of 20 million
            # activities take longer than the COPY itself.
            # NOTE: timed at 20,000 members only; the 1,000,000-member figure
            # in docs/benchmarks.md was made with the checks still on.
            cursor.execute("SET LOCAL session_replication_role = replica")
        for offset in range(members):
            member_id = base_id + offset
            phone = f"13{rng.randrange(0, 10**9):09d}"
            joined = today - dt.timedelta(days=rng.randrange(30, 1500))
            member_buffer.write(
                f"{member_id}\t{uuid.UUID(int=rng.getrandbits(128))}"
                f"\tBench member {member_id}"
                f"\t{phone}\t+86{phone}\t\t{joined}\t{language}\t{now}\t{now}\n"
            )
            identity_buffer.write(
                f"{member_id}\t{channels[member_id % len(channels)]}"
                f"\tB{member_id:08d}\t{now}\n"
            )
            activity_count += _write_member_activities(
                activity_buffer, rng, member_id, channels, kinds, today, zone, now
            )
            # Members go in before their activities because of the foreign key,
            # and flushing every chunk keeps memory flat at 20M activities.
            if (offset + 1) % FLUSH_MEMBERS == 0 or offset + 1 == members:
                _load(cursor, vendor, "members_member", member_columns, member_buffer)
                _load(
                    cursor,
                    vendor,
                    "members_channelidentity",
                    identity_columns,
                    identity_buffer,
                )
                _load(
                    cursor,
                    vendor,
                    "members_activity",
                    activity_columns,
                    activity_buffer,
                )
                member_buffer, identity_buffer, activity_buffer = (
                    io.StringIO(),
                    io.StringIO(),
                    io.StringIO(),
                )
                logger.info(
                    "Generated %s of %s members, %s activities",
                    offset + 1,
                    members,
                    activity_count,
                )
        if vendor == "postgresql":
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('members_member', 'id'), %s)",
                [base_id + members],
            )
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE members_member")
            cursor.execute("ANALYZE members_channelidentity")
            cursor.execute("ANALYZE members_activity")
    return {
        "members": members,
        "activities": activity_count,
        "seconds": time.perf_counter() - started,
    }


def write_import_files(
    folder: Path, rows: int, members: int, *, dirty: bool
) -> dict[str, object]:
    """Write a member file and a CSV and an XLSX activity file into ``folder``."""
    from bench import import_files

    folder.mkdir(parents=True, exist_ok=True)
    import_files.write_members(folder / "members.csv", members)
    suffix = "-dirty" if dirty else ""
    faults = import_files.write_activities_csv(
        folder / f"activities{suffix}.csv", rows, members, "F", dirty=dirty
    )
    import_files.write_activities_xlsx(
        folder / f"activities{suffix}.xlsx", rows, members, "F", dirty=dirty
    )
    return {"folder": str(folder), "rows": rows, "faults": dict(faults)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", type=int, default=1_000_000, help="Members to create."
    )
    parser.add_argument("--seed", type=int, default=7, help="Random seed.")
    parser.add_argument(
        "--files",
        type=Path,
        help="Write import files into this folder instead of filling the database.",
    )
    parser.add_argument(
        "--rows", type=int, default=100_000, help="Activity rows of the import files."
    )
    parser.add_argument(
        "--dirty",
        action="store_true",
        help="Give 1 %% of the import file rows one fault each (see bench.import_files).",
    )
    arguments = parser.parse_args()
    if arguments.files:
        # The files use member ids B00000000 to B00049999 of members.csv.
        print(
            write_import_files(
                arguments.files, arguments.rows, 50_000, dirty=arguments.dirty
            )
        )
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(generate(arguments.members, arguments.seed))


if __name__ == "__main__":
    main()
