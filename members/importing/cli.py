"""The shared body of the import_members and import_activities commands.

CSV files, and any file larger than CRM_IMPORT_MAX_BYTES, are imported by
``members.importing.streaming``, which keeps memory flat however many rows
the file has. Smaller XLSX files are read into memory by
``members.importing.service``. Both give the same result on the same file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.importing.amounts import DECIMAL_COMMA, DECIMAL_POINT
from members.importing.columns import ACTIVITIES
from members.importing.dates import DAY_FIRST, MONTH_FIRST
from members.importing.reading import CSV, detect_format
from members.importing.report import ImportReport
from members.importing.service import CHANNEL_OPTION_HELP, find_channel, import_file
from members.importing.streaming import (
    EVALUATING,
    SCANNING,
    Progress,
    StreamReport,
    import_path,
)
from members.models import Channel

# Seconds between two progress lines on stderr.
PROGRESS_INTERVAL = 2.0
_PHASE_TEXT = {
    SCANNING: "checking the file: {done:,} rows read",
    EVALUATING: "evaluating tiers: {done:,} members done",
}


class ImportCommand(BaseCommand):
    """Import one file of ``kind``; exit with status 1 when it is rejected."""

    kind = ""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        # A command module may define an option that this class defines too,
        # such as --channel. The later definition then replaces this one, so
        # argparse does not raise for the repeat.
        kwargs.setdefault("conflict_handler", "resolve")
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path of the CSV or XLSX file to import.")
        parser.add_argument(
            "--encoding",
            help="Encoding of a CSV file, e.g. utf-8, gb18030 or cp1252. "
            "Default: detected from the file.",
        )
        parser.add_argument(
            "--date-order",
            choices=(DAY_FIRST, MONTH_FIRST),
            help="Day/month order of dates such as 03/04/2024. Default: "
            "detected from the dates; required when all of them fit both orders.",
        )
        if self.kind == ACTIVITIES:
            parser.add_argument(
                "--decimal-mark",
                choices=(DECIMAL_POINT, DECIMAL_COMMA),
                help="Decimal mark of amounts such as 2.500 (2.5 with a point, "
                "2500 with a comma). Default: detected from the amounts; "
                "required when no amount shows the mark.",
            )
        parser.add_argument("--channel", metavar="CODE", help=CHANNEL_OPTION_HELP)
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check the file and print the result without saving anything.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        channel = self._channel(options.get("channel"))
        choices = {
            "encoding": options["encoding"],
            "date_order": options["date_order"],
            "decimal_mark": options.get("decimal_mark"),
            "dry_run": options["dry_run"],
            "channel": channel,
        }
        try:
            if self._streams(path):
                self._import_streamed(path, choices)
                return
            report = import_file(path, self.kind, **choices)
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror}.") from None
        if report.refused:
            raise CommandError(f"File rejected, nothing was saved: {report.refused}")
        self._print(report)

    def _channel(self, code: str | None) -> Channel | None:
        if not code:
            return None
        try:
            return find_channel(code)
        except ValueError as error:
            raise CommandError(str(error)) from None

    def _streams(self, path: Path) -> bool:
        """Return whether the file is imported row by row rather than in memory."""
        with path.open("rb") as file:
            head = file.read(8)
        if detect_format(head, path.name) == CSV:
            return True
        return path.stat().st_size > settings.CRM_IMPORT_MAX_BYTES

    def _import_streamed(self, path: Path, choices: dict[str, Any]) -> None:
        report = import_path(
            path,
            self.kind,
            keep_issues=True,
            progress=_ProgressPrinter(self),
            **choices,
        )
        if report.refused:
            raise CommandError(f"File rejected, nothing was saved: {report.refused}")
        try:
            self._print_streamed(report)
        finally:
            if report.issues is not None:
                report.issues.close()

    def _print_header(self, report: ImportReport | StreamReport) -> None:
        prefix = "Dry run, nothing saved. " if report.dry_run else ""
        self.stdout.write(f"{prefix}{report.file_name}: {report.summary()}.")
        if report.channels_created:
            channels = ", ".join(sorted(report.channels_created))
            self.stdout.write(f"New channels (kind other): {channels}.")
        if report.ignored_columns:
            self.stdout.write(
                f"Columns not imported: {', '.join(report.ignored_columns)}."
            )

    def _print(self, report: ImportReport) -> None:
        self._print_header(report)
        for issue in sorted(report.rejections, key=lambda issue: issue.line):
            self.stdout.write(f"Rejected: {issue.message}")
        for skipped in sorted(report.skipped, key=lambda issue: issue.line):
            self.stdout.write(f"Skipped: {skipped.message}")

    def _print_streamed(self, report: StreamReport) -> None:
        self._print_header(report)
        if report.batch_id is not None:
            self.stdout.write(f"Recorded as import batch {report.batch_id}.")
        if report.issues is None:
            return
        for issue in report.issues.rejections():
            self.stdout.write(f"Rejected: {issue.message}")
        for skipped in report.issues.skipped():
            self.stdout.write(f"Skipped: {skipped.message}")


class _ProgressPrinter:
    """Writes a streamed import's progress to stderr, at most every few seconds."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command
        self.last_phase = ""
        self.last_time = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        finished = progress.total is not None and progress.done >= progress.total
        new_phase = progress.phase != self.last_phase
        if not (new_phase or finished or now - self.last_time >= PROGRESS_INTERVAL):
            return
        self.last_phase, self.last_time = progress.phase, now
        if progress.total:
            percent = progress.done * 100 // progress.total
            text = (
                f"{progress.phase}: {progress.done:,} of {progress.total:,} rows "
                f"({percent}%)"
            )
        else:
            template = _PHASE_TEXT.get(progress.phase, "{phase}: {done:,} done")
            text = template.format(phase=progress.phase, done=progress.done)
        self.command.stderr.write(text)
