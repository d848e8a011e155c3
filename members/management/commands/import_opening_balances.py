"""Import opening balances and tiers migrated from an earlier loyalty program."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.importing.amounts import DECIMAL_COMMA, DECIMAL_POINT
from members.importing.dates import DAY_FIRST, MONTH_FIRST
from members.importing.openings import (
    OpeningOptions,
    describe_tier_outcomes,
    import_openings_file,
)
from members.importing.report import ImportReport


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"--as-of {text!r} is not a date; use YYYY-MM-DD, e.g. 2025-12-31."
        ) from None


class Command(BaseCommand):
    help = (
        "Import opening balances from an earlier loyalty program: a CSV or XLSX "
        "file with the columns external_id, channel, tier, growth_value, spend "
        "and as_of. Members must exist already. Nothing is imported twice for a "
        "member, and no welcome benefits are issued for opening tiers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path of the CSV or XLSX file to import.")
        parser.add_argument(
            "--as-of",
            help="Cut-over date (YYYY-MM-DD) for lines whose as_of is empty. "
            "Default: none, so such lines are rejected.",
        )
        parser.add_argument(
            "--encoding",
            help="Encoding of a CSV file, e.g. utf-8, gb18030 or cp1252. "
            "Default: detected from the file.",
        )
        parser.add_argument(
            "--date-order",
            choices=(DAY_FIRST, MONTH_FIRST),
            help="Day/month order of as_of dates such as 03/04/2024. Default: "
            "detected from the dates; required when all of them fit both orders.",
        )
        parser.add_argument(
            "--decimal-mark",
            choices=(DECIMAL_POINT, DECIMAL_COMMA),
            help="Decimal mark of growth values and spends such as 2.500. "
            "Default: detected from the values; required when none shows it.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check the file and print the result without saving anything.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cut_over = _date(options["as_of"]) if options["as_of"] else None
        choices = OpeningOptions(
            cut_over=cut_over,
            encoding=options["encoding"],
            date_order=options["date_order"],
            decimal_mark=options["decimal_mark"],
        )
        try:
            report = import_openings_file(
                options["file"], options=choices, dry_run=options["dry_run"]
            )
        except OSError as error:
            raise CommandError(
                f"Cannot read {options['file']}: {error.strerror}."
            ) from None
        if report.refused:
            raise CommandError(f"File rejected, nothing was saved: {report.refused}")
        self._print(report)

    def _print(self, report: ImportReport) -> None:
        prefix = "Dry run, nothing saved. " if report.dry_run else ""
        self.stdout.write(f"{prefix}{report.file_name}: {report.summary()}.")
        if report.batch_id is not None:
            self.stdout.write(f"Recorded as import batch #{report.batch_id}.")
        if report.ignored_columns:
            self.stdout.write(
                f"Columns not imported: {', '.join(report.ignored_columns)}."
            )
        for text in describe_tier_outcomes(report):
            self.stdout.write(text)
        for issue in sorted(report.rejections, key=lambda issue: issue.line):
            self.stdout.write(f"Rejected: {issue.message}")
        for issue in sorted(report.skipped, key=lambda issue: issue.line):
            self.stdout.write(f"Skipped: {issue.message}")
