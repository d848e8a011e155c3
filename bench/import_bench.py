"""Benchmark: importing 100,000 and 1,000,000 activity rows from CSV and XLSX.

Writes seeded files (bench.import_files) into a temporary folder, then runs
each measurement in a child process of its own, so every peak RSS (the
process's VmHWM) belongs to one run. Every import calls
``members.importing.streaming.import_path``, the code behind the
``import_activities`` command and the admin's background import. The
baselines, measured in the same run:

* floor: the csv module parses the file and psycopg COPYs the rows into a
  TEMP staging table with the same columns, typed;
* django-import-export's default import: a plain ``ModelResource`` for
  Activity with default options, row by row, on a sample, extrapolated;
* for XLSX: openpyxl's read-only mode parses the same file, nothing else.

A dirty CSV and XLSX file (1 % bad rows) checks that the rejected and
duplicate counts equal the bad rows written. The database is emptied first,
so use a PostgreSQL database of its own:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h4_import \\
        .venv/bin/python -m bench.import_bench --rows 1000000

Every run has DEBUG off, as in production.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import import_files
from bench.generate import setup_django
from bench.machine import describe_machine, load_average

STAGING_SQL = """
CREATE TEMP TABLE bench_staging (
    external_id text, occurred_at timestamptz, amount numeric(14, 2),
    channel text, kind text, reference text
)
"""


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


def measure_floor(path: Path) -> dict[str, Any]:
    """Parse the CSV file with the csv module and COPY it into a staging table."""
    setup_django()
    from django.db import connection, transaction

    started = time.perf_counter()
    rows = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(STAGING_SQL)
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file)
            next(reader)
            with cursor.cursor.copy("COPY bench_staging FROM STDIN") as copy:
                for row in reader:
                    copy.write_row(row)
                    rows += 1
    return {"seconds": time.perf_counter() - started, "rows": rows}


def measure_xlsx_parse(path: Path) -> dict[str, Any]:
    """Read every cell of the XLSX file with openpyxl's read-only mode."""
    from openpyxl import load_workbook

    started = time.perf_counter()
    workbook = load_workbook(path, read_only=True, data_only=True)
    rows = 0
    for _row in workbook.active.iter_rows(values_only=True):
        rows += 1
    workbook.close()
    return {"seconds": time.perf_counter() - started, "rows": rows - 1}


def measure_stream(path: Path, kind: str) -> dict[str, Any]:
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
        "duplicates": report.duplicates,
        "already_imported": report.already_imported,
        "channels_created": sorted(report.channels_created),
        "members_evaluated": report.members_evaluated,
        "phases": phases,
    }


def measure_import_export(path: Path) -> dict[str, Any]:
    """Import the sample with a default ModelResource, row by row.

    The file's member ids, channel and kind codes are turned into the primary
    keys the default resource expects before the clock starts. Refunds are
    made negative, as the ledger stores them.
    """
    setup_django()
    import tablib
    from import_export.resources import ModelResource

    from members.models import Activity, ActivityKind, Channel, ChannelIdentity

    class ActivityResource(ModelResource):
        class Meta:
            model = Activity

    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    members = dict(
        ChannelIdentity.objects.filter(
            external_id__in={row["external_id"] for row in rows}
        ).values_list("external_id", "member_id")
    )
    channels = dict(Channel.objects.values_list("code", "pk"))
    kinds = dict(ActivityKind.objects.values_list("code", "pk"))
    dataset = tablib.Dataset(
        headers=["id", "member", "channel", "kind", "occurred_at", "amount"]
        + ["reference", "source"]
    )
    for row in rows:
        amount = row["amount"]
        if row["kind"] == "refund":
            amount = f"-{amount}"
        dataset.append(
            [
                "",
                members[row["external_id"]],
                channels[row["channel"]],
                kinds[row["kind"]],
                row["occurred_at"],
                amount,
                row["reference"],
                Activity.Source.IMPORT,
            ]
        )

    started = time.perf_counter()
    result = ActivityResource().import_data(dataset, dry_run=False)
    seconds = time.perf_counter() - started
    if result.has_errors() or result.has_validation_errors():
        raise SystemExit("django-import-export reported errors on the sample.")
    return {
        "seconds": seconds,
        "rows": len(rows),
        "created": result.totals["new"],
    }


def child_main(arguments: argparse.Namespace) -> None:
    path = Path(arguments.path)
    if arguments.child == "floor":
        result = measure_floor(path)
    elif arguments.child == "xlsx_parse":
        result = measure_xlsx_parse(path)
    elif arguments.child == "stream":
        result = measure_stream(path, arguments.kind)
    else:
        result = measure_import_export(path)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def run_child(step: str, path: Path, kind: str, env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "bench.import_bench", "--child", step]
    command += ["--path", str(path), "--kind", kind]
    # The command is this module with arguments this function built.
    completed = subprocess.run(  # noqa: S603
        command, env=env, check=False, capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise SystemExit(
            f"Measurement {step} of {path.name} failed with exit code "
            f"{completed.returncode}:\n{completed.stderr[-3000:]}"
        )
    result: dict = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# Set-up of the database and the files


def prepare_database(env: dict[str, str]) -> None:
    """Migrate, empty the ledger and publish the benchmark ladder."""
    os.environ.update(env)
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit(
            "The import benchmark needs PostgreSQL for its COPY floor; set "
            "DATABASE_URL to a PostgreSQL database of its own."
        )
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE members_member, members_importbatch CASCADE")
    from bench.simulate import ensure_published_ladder

    ensure_published_ladder()


def write_files(work: Path, arguments: argparse.Namespace) -> dict[str, Any]:
    """Write every file of the run; return their paths and the dirty files' faults."""
    rows, small, members = arguments.rows, arguments.small, arguments.members
    files: dict[str, Any] = {
        "members": work / "members.csv",
        "sample": work / "sample.csv",
        "csv_small": work / "small.csv",
        "csv_large": work / "large.csv",
        "csv_dirty": work / "dirty.csv",
        "xlsx_small": work / "small.xlsx",
        "xlsx_large": work / "large.xlsx",
        "xlsx_dirty": work / "dirty.xlsx",
    }
    import_files.write_members(files["members"], members)
    write_csv = import_files.write_activities_csv
    write_xlsx = import_files.write_activities_xlsx
    if not arguments.skip_csv:
        write_csv(files["sample"], arguments.sample, members, "E")
        write_csv(files["csv_small"], small, members, "S")
        write_csv(files["csv_large"], rows, members, "L")
        files["faults_csv"] = write_csv(
            files["csv_dirty"], small, members, "D", dirty=True
        )
    if not arguments.skip_xlsx:
        write_xlsx(files["xlsx_small"], small, members, "XS")
        write_xlsx(files["xlsx_large"], rows, members, "XL")
        files["faults_xlsx"] = write_xlsx(
            files["xlsx_dirty"], small, members, "XD", dirty=True
        )
    return files


# Report


def _check_dirty(result: dict, faults: Counter[str]) -> str:
    """Compare a dirty import's counts with the faults written; return a summary."""
    expected = import_files.expected_outcome(faults)
    checks = [
        ("rejected", result["rejected"], expected["rejected"]),
        ("duplicates", result["duplicates"], expected["duplicates"]),
    ]
    parts = [
        f"{name} {got:,} of {want:,} bad rows "
        + ("(equal)" if got == want else "(DIFFERENT)")
        for name, got, want in checks
    ]
    parts.append(
        f"{expected['unknown_channel']:,} rows of an unknown channel accepted, "
        f"channels created {result['channels_created']}"
    )
    return "; ".join(parts)


def _row(label: str, result: dict, baseline: dict | None, note: str = "") -> str:
    ratio = (
        "1.0×"
        if baseline is None
        else f"{result['seconds'] / baseline['seconds']:.2f}×"
    )
    rate = result["rows"] / result["seconds"]
    return (
        f"| {label} | {result['rows']:,} | {result['seconds']:.1f} | {rate:,.0f} | "
        f"{result['peak_rss_mib']:.0f} | {ratio} | {note} |"
    )


def _print_csv_rows(results: dict, files: dict) -> None:
    for size in ("small", "large"):
        floor = results[f"floor {size}"]
        streamed = results[f"csv {size}"]
        print(_row(f"floor: csv parse + COPY, {size}", floor, None))
        print(
            _row(f"CSV import, {size}", streamed, floor, json.dumps(streamed["phases"]))
        )
    default = results["django-import-export default"]
    per_row = default["seconds"] / default["rows"]
    print(_row("django-import-export default, sample", default, None))
    for size in ("small", "large"):
        rows = results[f"csv {size}"]["rows"]
        streamed = results[f"csv {size}"]["seconds"]
        print(
            f"| django-import-export default, {rows:,} rows, extrapolated | {rows:,} "
            f"| {per_row * rows:.0f} (extrapolated) | {1 / per_row:,.0f} | — | — | "
            f"CSV import is {per_row * rows / streamed:.1f}× faster |"
        )
    dirty = results["csv dirty"]
    print(
        _row("CSV import, dirty", dirty, None, _check_dirty(dirty, files["faults_csv"]))
    )


def print_report(arguments: argparse.Namespace, results: dict, files: dict) -> None:
    print()
    print(describe_machine())
    print(f"load average after the run: {load_average()}")
    print(f"{arguments.members:,} members")
    print()
    print("| measurement | rows | seconds | rows/s | peak RSS MiB | × floor | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    if not arguments.skip_csv:
        _print_csv_rows(results, files)
    if not arguments.skip_xlsx:
        for size in ("small", "large"):
            parse = results[f"xlsx parse {size}"]
            print(_row(f"openpyxl read-only parse, {size}", parse, None))
            print(_row(f"XLSX import, {size}", results[f"xlsx {size}"], parse))
        dirty = results["xlsx dirty"]
        print(
            _row(
                "XLSX import, dirty",
                dirty,
                None,
                _check_dirty(dirty, files["faults_xlsx"]),
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="Rows of the large files."
    )
    parser.add_argument(
        "--small", type=int, default=100_000, help="Rows of the small files."
    )
    parser.add_argument(
        "--members", type=int, default=50_000, help="Members the activities use."
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=2_000,
        help="Rows django-import-export's default import runs on.",
    )
    parser.add_argument(
        "--skip-xlsx", action="store_true", help="Leave out the XLSX measurements."
    )
    parser.add_argument(
        "--skip-csv",
        action="store_true",
        help="Leave out the CSV measurements and django-import-export's import.",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child_main(arguments)
        return

    with tempfile.TemporaryDirectory(prefix="import-bench-") as folder:
        work = Path(folder)
        # DEBUG keeps the SQL of the last 9,000 queries in memory, which
        # would hide whether the import itself keeps memory flat.
        env = {**os.environ, "DEBUG": "false"}
        # openpyxl's write-only mode stores text inline, about 330 bytes of
        # sheet XML per row, so 1,000,000 rows expand to 333 MiB: past
        # the default CRM_XLSX_MAX_UNCOMPRESSED_BYTES of 100 MiB.
        env.setdefault("CRM_XLSX_MAX_UNCOMPRESSED_BYTES", str(4 * 2**30))
        prepare_database(env)
        started = time.perf_counter()
        files = write_files(work, arguments)
        print(f"files written in {time.perf_counter() - started:.0f} s", flush=True)

        # The members go in first, because activity rows never create members.
        # The floors run just before the imports they are compared with.
        steps = [("members", "stream", files["members"], "members")]
        if not arguments.skip_csv:
            steps += [
                ("floor small", "floor", files["csv_small"], ""),
                ("csv small", "stream", files["csv_small"], "activities"),
                ("floor large", "floor", files["csv_large"], ""),
                ("csv large", "stream", files["csv_large"], "activities"),
                ("django-import-export default", "import_export", files["sample"], ""),
                ("csv dirty", "stream", files["csv_dirty"], "activities"),
            ]
        if not arguments.skip_xlsx:
            steps += [
                ("xlsx parse small", "xlsx_parse", files["xlsx_small"], ""),
                ("xlsx small", "stream", files["xlsx_small"], "activities"),
                ("xlsx parse large", "xlsx_parse", files["xlsx_large"], ""),
                ("xlsx large", "stream", files["xlsx_large"], "activities"),
                ("xlsx dirty", "stream", files["xlsx_dirty"], "activities"),
            ]
        results = {}
        for label, step, path, kind in steps:
            result = run_child(step, path, kind, env)
            results[label] = result
            print(label, json.dumps(result), f"load {load_average()}", flush=True)
        print_report(arguments, results, files)


if __name__ == "__main__":
    main()
