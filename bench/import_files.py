"""Seeded member and activity files for the import benchmark, clean or dirty.

The activity files have the columns of ``import_activities`` (external_id,
occurred_at, amount, channel, kind, reference): 80 % purchases, 5 % refunds
and 15 % visits of members ``B00000000`` onwards. A dirty file replaces 1 %
of the rows with one realistic fault each, spread evenly over ``FAULTS``,
and returns how many rows of each fault it wrote, so the import benchmark
can check the import's counts against them.

    .venv/bin/python -m bench.generate --files /tmp/files --rows 100000 --dirty
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

CHANNEL = "bench-import"
# A channel code no row of the member file uses.
UNKNOWN_CHANNEL = "bench-unknown"
ACTIVITY_HEADER = [
    "external_id",
    "occurred_at",
    "amount",
    "channel",
    "kind",
    "reference",
]
# Every 100th row of a dirty file gets one of these faults, in turn.
FAULTS = [
    "bad_date",
    "negative_amount",
    "non_numeric_amount",
    "unknown_channel",
    "empty_member_id",
    "duplicate_reference",
]
DIRTY_EVERY = 100
# The import rejects these faults and skips repeated references as
# duplicates. It accepts a row of an unknown channel when the member id is
# known in exactly one other channel, and then creates the channel
# (members.importing.activity_writer, ChannelDirectory.create_missing).
REJECTED_FAULTS = {
    "bad_date",
    "negative_amount",
    "non_numeric_amount",
    "empty_member_id",
}


def write_members(path: Path, members: int) -> None:
    """Write ``members`` members of channel CHANNEL with Chinese mobile numbers."""
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
                    f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
                    CHANNEL,
                    joined.isoformat(),
                ]
            )


def _clean_row(
    rng: random.Random, number: int, members: int, prefix: str
) -> list[object]:
    # Naive on purpose: the file contains store-local times without an offset.
    start = dt.datetime(2025, 1, 1, 8, 0)  # noqa: DTZ001
    moment = start + dt.timedelta(minutes=rng.randrange(500_000))
    roll = rng.random()
    if roll < 0.80:
        kind, amount = "purchase", rng.randrange(500, 200_000) / 100
    elif roll < 0.85:
        kind, amount = "refund", rng.randrange(500, 50_000) / 100
    else:
        kind, amount = "visit", 0.0
    return [
        f"B{rng.randrange(members):08d}",
        moment,
        amount,
        CHANNEL,
        kind,
        f"{prefix}-{number:08d}",
    ]


def _spoil(row: list[object], fault: str, number: int, prefix: str) -> None:
    """Give ``row`` one fault, in place."""
    if fault == "bad_date":
        row[1] = "2025-02-30 10:00:00"
    elif fault == "negative_amount":
        row[2], row[4] = -35.5, "purchase"
    elif fault == "non_numeric_amount":
        row[2], row[4] = "N/A", "purchase"
    elif fault == "unknown_channel":
        row[3] = UNKNOWN_CHANNEL
    elif fault == "empty_member_id":
        row[0] = ""
    elif fault == "duplicate_reference":
        # The reference of the row just before, which is always clean.
        row[5] = f"{prefix}-{number - 1:08d}"


def activity_rows(
    rows: int, members: int, prefix: str, faults: Counter[str] | None = None
) -> Iterator[list[object]]:
    """Yield seeded activity rows with typed cells; spoil 1 % if ``faults`` is given.

    ``faults`` counts the rows spoiled per fault. Times are naive datetimes and
    amounts floats, as a spreadsheet stores them. The CSV writer formats them as
    text.
    """
    rng = random.Random(prefix)
    for number in range(rows):
        row = _clean_row(rng, number, members, prefix)
        if faults is not None and number % DIRTY_EVERY == DIRTY_EVERY - 1:
            fault = FAULTS[(number // DIRTY_EVERY) % len(FAULTS)]
            _spoil(row, fault, number, prefix)
            faults[fault] += 1
        yield row


def _csv_cell(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}"
    return value


def write_activities_csv(
    path: Path, rows: int, members: int, prefix: str, *, dirty: bool = False
) -> Counter[str]:
    """Write the activity file as CSV; return the rows spoiled per fault."""
    faults: Counter[str] = Counter()
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(ACTIVITY_HEADER)
        for row in activity_rows(rows, members, prefix, faults if dirty else None):
            writer.writerow([_csv_cell(value) for value in row])
    return faults


def write_activities_xlsx(
    path: Path, rows: int, members: int, prefix: str, *, dirty: bool = False
) -> Counter[str]:
    """Write the activity file as XLSX with openpyxl's write-only mode.

    Times are date cells and amounts number cells, as Excel stores them;
    the spoiled values are text cells. Returns the rows spoiled per fault.
    """
    from openpyxl import Workbook

    faults: Counter[str] = Counter()
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("activities")
    sheet.append(ACTIVITY_HEADER)
    for row in activity_rows(rows, members, prefix, faults if dirty else None):
        sheet.append(row)
    workbook.save(path)
    return faults


def expected_outcome(faults: Counter[str]) -> dict[str, int]:
    """Return the rejected and duplicate line counts an import should report."""
    return {
        "rejected": sum(faults[name] for name in REJECTED_FAULTS),
        "duplicates": faults["duplicate_reference"],
        "unknown_channel": faults["unknown_channel"],
    }
