"""The shared body of the import_members and import_activities commands."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.importing.amounts import DECIMAL_COMMA, DECIMAL_POINT
from members.importing.columns import ACTIVITIES
from members.importing.dates import DAY_FIRST, MONTH_FIRST
from members.importing.report import ImportReport
from members.importing.service import import_file


class ImportCommand(BaseCommand):
    """Import one file of ``kind``; exit with status 1 when it is rejected."""

    kind = ""

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
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check the file and print the result without saving anything.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = import_file(
                options["file"],
                self.kind,
                encoding=options["encoding"],
                date_order=options["date_order"],
                decimal_mark=options.get("decimal_mark"),
                dry_run=options["dry_run"],
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
        if report.channels_created:
            channels = ", ".join(report.channels_created)
            self.stdout.write(f"New channels (kind other): {channels}.")
        if report.ignored_columns:
            self.stdout.write(
                f"Columns not imported: {', '.join(report.ignored_columns)}."
            )
        for issue in sorted(report.rejections, key=lambda issue: issue.line):
            self.stdout.write(f"Rejected: {issue.message}")
        for issue in sorted(report.skipped, key=lambda issue: issue.line):
            self.stdout.write(f"Skipped: {issue.message}")
