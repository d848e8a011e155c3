"""Benchmark: streamed import of a 1,000,000-row activity file.

Writes a seeded members file and activity files into a temporary folder,
then runs each measurement in a child process of its own, so every peak
RSS belongs to one run:

* baseline: reading and parsing the large file with the csv module alone;
* the member file (streamed);
* 100,000 activity rows through the in-memory path (``import_data``);
* 100,000 and 1,000,000 activity rows streamed (``import_path``), the same
  code the import commands and the background import run.

The database is emptied first, so use a database of its own:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_import \\
        .venv/bin/python -m bench.import_bench --rows 1000000
    .venv/bin/python -m bench.import_bench --rows 1000000 --sqlite

``--sqlite`` uses a new SQLite file in the temporary folder, never the
project's db.sqlite3. Every run has DEBUG off, as in production.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.generate import setup_django

CHANNEL = "bench-import"
ACTIVITY_HEADER = [
    "external_id",
    "occurred_at",
    "amount",
    "channel",
    "kind",
    "reference",
]


def write_members(path: Path, members: int) -> None:
    rng = random.Random(11)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["external_id", "name", "phone", "channel", "joined_at"])
        for number in range(members):
            joined = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(1500))
            writer.writerow(
                [
                    f"B{number:08d}",
                    f"Bench member {number}",
                    f"13{rng.randrange(10**9):09d}",
                    CHANNEL,
                    joined.isoformat(),
                ]
            )


def write_activities(path: Path, rows: int, members: int, prefix: str) -> None:
    """Write ``rows`` activities: 80 % purchases, 5 % refunds, 15 % visits."""
    rng = random.Random(prefix)
    # Naive on purpose: the file contains store-local times without an offset.
    start = dt.datetime(2025, 1, 1, 8, 0)  # noqa: DTZ001
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(ACTIVITY_HEADER)
        for number in range(rows):
            moment = start + dt.timedelta(minutes=rng.randrange(500_000))
            roll = rng.random()
            if roll < 0.80:
                kind, amount = "purchase", f"{rng.randrange(500, 200_000) / 100:.2f}"
            elif roll < 0.85:
                kind, amount = "refund", f"{rng.randrange(500, 50_000) / 100:.2f}"
            else:
                kind, amount = "visit", "0"
            writer.writerow(
                [
                    f"B{rng.randrange(members):08d}",
                    moment.strftime("%Y-%m-%d %H:%M:%S"),
                    amount,
                    CHANNEL,
                    kind,
                    f"{prefix}-{number:08d}",
                ]
            )


# Measurements, each run in a child process


def _peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux only).

    VmHWM starts again at exec, while ru_maxrss keeps the peak of the
    parent process that forked this one.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def measure_parse(path: Path) -> dict[str, object]:
    started = time.perf_counter()
    rows = 0
    with path.open(newline="", encoding="utf-8") as file:
        for _row in csv.reader(file):
            rows += 1
    return {"seconds": time.perf_counter() - started, "rows": rows - 1}


def measure_stream(path: Path, kind: str) -> dict[str, object]:
    setup_django()
    from members.importing.streaming import Progress, import_path

    phases: dict[str, float] = {}
    started = time.perf_counter()

    def record(progress: Progress) -> None:
        # Seconds from the start to the end of each phase.
        phases[progress.phase] = round(time.perf_counter() - started, 1)

    report = import_path(path, kind, progress=record)
    seconds = time.perf_counter() - started
    if report.refused:
        raise SystemExit(f"The file was rejected: {report.refused}")
    return {
        "seconds": seconds,
        "rows": report.total_rows,
        "created": report.created,
        "rejected": report.rejected,
        "members_evaluated": report.members_evaluated,
        "phases": phases,
    }


def measure_in_memory(path: Path, kind: str) -> dict[str, object]:
    setup_django()
    from members.importing.service import import_data

    started = time.perf_counter()
    report = import_data(path.read_bytes(), kind, file_name=path.name)
    if report.refused:
        raise SystemExit(f"The file was rejected: {report.refused}")
    return {
        "seconds": time.perf_counter() - started,
        "rows": report.total_rows,
        "created": report.created,
        "rejected": report.rejected,
    }


def child_main(arguments: argparse.Namespace) -> None:
    path = Path(arguments.path)
    if arguments.step == "parse":
        result = measure_parse(path)
    elif arguments.step == "stream":
        result = measure_stream(path, arguments.kind)
    else:
        result = measure_in_memory(path, arguments.kind)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def run_child(step: str, path: Path, kind: str, env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "bench.import_bench", "--child", step]
    command += ["--path", str(path), "--kind", kind]
    # The command is this module with arguments this function built.
    completed = subprocess.run(  # noqa: S603
        command, env=env, check=True, capture_output=True, text=True
    )
    result: dict = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# Set-up of the database


def prepare_database(env: dict[str, str]) -> str:
    """Migrate, empty the ledger and publish a two-tier ladder; return the vendor."""
    os.environ.update(env)
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    from members.models import Activity, ChannelIdentity, ImportBatch, Member
    from tiers.models import TierChange

    call_command("migrate", verbosity=0)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE members_member, members_importbatch CASCADE")
    else:
        Activity.objects.all().delete()
        TierChange.objects.all().delete()
        ChannelIdentity.objects.all().delete()
        ImportBatch.objects.all().delete()
        Member.objects.all().delete()
    from bench.simulate import ensure_published_ladder

    ensure_published_ladder()
    return connection.vendor


def _rate(result: dict) -> str:
    return f"{result['rows'] / result['seconds']:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="Rows of the large file."
    )
    parser.add_argument(
        "--small", type=int, default=100_000, help="Rows of the small files."
    )
    parser.add_argument(
        "--members", type=int, default=50_000, help="Members the activities use."
    )
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="Use a new SQLite file in the temporary folder.",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        arguments.step = arguments.child
        child_main(arguments)
        return

    with tempfile.TemporaryDirectory(prefix="import-bench-") as folder:
        work = Path(folder)
        # DEBUG keeps the SQL of the last 9,000 queries in memory, which
        # would hide whether the import itself keeps memory flat.
        env = {**os.environ, "DEBUG": "false"}
        if arguments.sqlite:
            env["DATABASE_URL"] = f"sqlite:///{work / 'bench.sqlite3'}"
        vendor = prepare_database(env)

        started = time.perf_counter()
        members_path = work / "members.csv"
        small_path = work / "activities-small.csv"
        memory_path = work / "activities-memory.csv"
        large_path = work / "activities-large.csv"
        write_members(members_path, arguments.members)
        write_activities(small_path, arguments.small, arguments.members, "S")
        write_activities(memory_path, arguments.small, arguments.members, "M")
        write_activities(large_path, arguments.rows, arguments.members, "L")
        print(
            f"files written in {time.perf_counter() - started:.1f} s; large file "
            f"{large_path.stat().st_size / 2**20:.1f} MiB",
            flush=True,
        )

        steps = [
            ("baseline: csv module parses the large file", "parse", large_path, ""),
            ("members file, streamed", "stream", members_path, "members"),
            (
                "small file, in memory (import_data)",
                "memory",
                memory_path,
                "activities",
            ),
            ("small file, streamed", "stream", small_path, "activities"),
            ("large file, streamed", "stream", large_path, "activities"),
        ]
        results = {}
        for label, step, path, kind in steps:
            result = run_child(step, path, kind, env)
            results[label] = result
            print(label, json.dumps(result), flush=True)

    baseline = results["baseline: csv module parses the large file"]
    print()
    print(
        f"{vendor}, Python {platform.python_version()}, {os.cpu_count()} cores; "
        f"{arguments.members:,} members"
    )
    print("| measurement | rows | seconds | rows/s | peak RSS MiB | × baseline time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, result in results.items():
        ratio = result["seconds"] / baseline["seconds"]
        print(
            f"| {label} | {result['rows']:,} | {result['seconds']:.1f} | "
            f"{_rate(result)} | {result['peak_rss_mib']:.0f} | {ratio:.0f}× |"
        )


if __name__ == "__main__":
    main()
