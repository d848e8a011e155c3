"""The outcome of an import: counts, per-line statuses and row issues."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from members.importing.cleaning import RowIssue
from members.importing.text import quote_formula


class Status(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    ALREADY_IMPORTED = "already imported"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class SkippedIssue(RowIssue):
    """A line that was not saved because it is a duplicate or already imported."""

    status: Status = Status.DUPLICATE


@dataclass(frozen=True)
class LineOutcome:
    """The outcome of one data line, with its cleaned values for display."""

    line: int
    status: Status
    values: dict[str, str] = field(default_factory=dict)


class StatusCounts:
    """The number of lines per status, read from ``counts``."""

    counts: Counter[Status]

    @property
    def created(self) -> int:
        return self.counts[Status.CREATED]

    @property
    def updated(self) -> int:
        return self.counts[Status.UPDATED]

    @property
    def unchanged(self) -> int:
        return self.counts[Status.UNCHANGED]

    @property
    def already_imported(self) -> int:
        return self.counts[Status.ALREADY_IMPORTED]

    @property
    def duplicates(self) -> int:
        return self.counts[Status.DUPLICATE]

    @property
    def rejected(self) -> int:
        return self.counts[Status.REJECTED]


@dataclass
class ImportReport(StatusCounts):
    """Counts and details of one import, whether dry run or confirmed.

    ``refused`` is the reason a whole file was rejected, with nothing saved.
    ``rejections`` lists every problem of rejected lines, and a line can have
    several. ``skipped`` lists duplicates and already imported lines, which
    are not errors. ``batch_id`` is the ImportBatch that recorded a
    confirmed import, and ``recorded`` is set once ``batches.add_chunk`` has
    stored this report's counts and issues in it.
    """

    kind: str
    file_name: str
    dry_run: bool
    refused: str | None = None
    total_rows: int = 0
    encoding: str | None = None
    delimiter: str | None = None
    lines: list[LineOutcome] = field(default_factory=list)
    rejections: list[RowIssue] = field(default_factory=list)
    skipped: list[SkippedIssue] = field(default_factory=list)
    channels_created: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    member_ids: set[int] = field(default_factory=set)
    counts: Counter[Status] = field(default_factory=Counter)
    batch_id: int | None = None
    recorded: bool = False

    def add_line(
        self, line: int, status: Status, values: dict[str, str] | None = None
    ) -> None:
        self.lines.append(LineOutcome(line, status, values or {}))
        self.counts[status] += 1

    def reject(self, issues: list[RowIssue]) -> None:
        """Record rejected lines; each line is counted once however many issues it has."""
        self.rejections.extend(issues)
        for line in sorted({issue.line for issue in issues}):
            self.add_line(line, Status.REJECTED)

    def skip(self, issue: RowIssue, status: Status) -> None:
        self.skipped.append(
            SkippedIssue(issue.line, issue.column, issue.value, issue.reason, status)
        )
        self.add_line(issue.line, status)

    def sorted_lines(self) -> list[LineOutcome]:
        return sorted(self.lines, key=lambda outcome: outcome.line)

    def summary(self) -> str:
        return (
            f"{self.total_rows} rows: {self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.already_imported} already imported, "
            f"{self.duplicates} duplicates, {self.rejected} rejected"
        )


ISSUES_CSV_HEADERS = ("line", "status", "column", "value", "reason")


class _Echo:
    """A file-like object whose ``write`` returns the text, for streaming CSV."""

    def write(self, text: str) -> str:
        return text


def issues_csv_lines(
    issues: Iterable[tuple[int, str, str, str, str]],
) -> Iterator[str]:
    """Yield the lines of the issues CSV, header first, without building it whole.

    Each issue is (line, status, column, value, reason). Values come from
    the uploaded file, so formula-like text is quoted the same way as in
    exports. The first line starts with a byte order mark, so that Excel
    reads the file as UTF-8 and shows Chinese text correctly.
    """
    writer = csv.writer(_Echo())
    yield "\ufeff" + writer.writerow(ISSUES_CSV_HEADERS)
    for line, status, column, value, reason in issues:
        yield writer.writerow([line, status, column, quote_formula(value), reason])


def issues_csv(report: ImportReport) -> bytes:
    """Return the rejected and skipped lines as a UTF-8 CSV for Excel."""
    rejected = [
        (issue.line, str(Status.REJECTED), issue.column, issue.value, issue.reason)
        for issue in report.rejections
    ]
    skipped = [
        (issue.line, str(issue.status), issue.column, issue.value, issue.reason)
        for issue in report.skipped
    ]
    issues = sorted(rejected + skipped, key=lambda issue: issue[0])
    return "".join(issues_csv_lines(issues)).encode("utf-8")
