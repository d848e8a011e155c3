"""Import service: read, clean and save one file in one transaction.

The admin (through the resources in members.resources) and the
import_members and import_activities commands all call ``import_data``,
so a file gives the same result wherever it is imported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.db import transaction

from members.importing.activity_writer import save_activities
from members.importing.amounts import DECIMAL_COMMA, DECIMAL_POINT
from members.importing.cleaning import (
    CleaningOptions,
    clean_activity_rows,
    clean_member_rows,
    kinds_by_label,
)
from members.importing.columns import ACTIVITIES, KINDS, MEMBERS, map_headers
from members.importing.dates import DAY_FIRST, MONTH_FIRST
from members.importing.errors import FileRejected
from members.importing.member_writer import save_members
from members.importing.reading import detect_format, read_table
from members.importing.report import ImportReport
from tiers.evaluation import evaluate
from tiers.ladder import LadderError

logger = logging.getLogger(__name__)


def _check_arguments(kind: str, options: CleaningOptions) -> None:
    if kind not in KINDS:
        raise ValueError(f"Unknown import kind {kind!r}; use {' or '.join(KINDS)}.")
    if options.date_order not in (None, DAY_FIRST, MONTH_FIRST):
        raise ValueError(
            f"Unknown date order {options.date_order!r}; use {DAY_FIRST} or "
            f"{MONTH_FIRST}."
        )
    if options.decimal_mark not in (None, DECIMAL_POINT, DECIMAL_COMMA):
        raise ValueError(
            f"Unknown decimal mark {options.decimal_mark!r}; use {DECIMAL_POINT} "
            f"or {DECIMAL_COMMA}."
        )


def _evaluate_tiers(member_ids: set[int]) -> None:
    if not member_ids:
        return
    try:
        evaluate(member_ids)
    except LadderError as error:
        # Without tiers there is nothing to assign; the ledger still counts.
        logger.warning(
            "import skipped tier evaluation members=%d error=%s", len(member_ids), error
        )


def _clean_and_save(
    data: bytes,
    file_format: str,
    kind: str,
    report: ImportReport,
    encoding: str | None,
    options: CleaningOptions,
) -> None:
    table = read_table(data, file_format, encoding)
    columns = map_headers(table.headers, kind)
    report.total_rows = len(table.rows)
    report.encoding = table.encoding
    report.delimiter = table.delimiter
    report.ignored_columns = list(columns.ignored)
    if kind == MEMBERS:
        members, issues = clean_member_rows(table, columns, options)
        report.reject(issues)
        save_members(members, report)
    else:
        activities, issues = clean_activity_rows(
            table, columns, options, kinds_by_label()
        )
        report.reject(issues)
        save_activities(activities, report)


def import_data(
    data: bytes,
    kind: str,
    *,
    file_name: str = "",
    file_format: str | None = None,
    encoding: str | None = None,
    date_order: str | None = None,
    decimal_mark: str | None = None,
    dry_run: bool = False,
    user: Any = None,
) -> ImportReport:
    """Import a members or activities file given as bytes; return the report.

    ``encoding`` (CSV only), ``date_order`` (day_first or month_first) and
    ``decimal_mark`` (point or comma, for amounts) are staff's choices for
    what detection rejects as unclear; None lets the import detect them.

    Everything happens in one transaction: a dry run rolls it back, and an
    unexpected error rolls it back before it propagates. A confirmed import
    re-evaluates the tiers of every member it touched inside the same
    transaction, so a refund later in the file cancels a purchase before it.
    A rejected file saves nothing and gives a report whose ``refused`` is
    the reason, with all counts zero.
    """
    options = CleaningOptions(date_order=date_order, decimal_mark=decimal_mark)
    _check_arguments(kind, options)
    file_format = detect_format(data, file_name, file_format)
    user_id = getattr(user, "pk", None)
    logger.info(
        "import started file=%s kind=%s format=%s dry_run=%s user_id=%s",
        file_name, kind, file_format, dry_run, user_id,
    )  # fmt: skip
    report = ImportReport(kind=kind, file_name=file_name, dry_run=dry_run)
    try:
        with transaction.atomic():
            _clean_and_save(data, file_format, kind, report, encoding, options)
            if dry_run:
                transaction.set_rollback(True)
            else:
                _evaluate_tiers(report.member_ids)
    except FileRejected as error:
        logger.warning(
            "import rejected file=%s kind=%s reason=%s", file_name, kind, error.message
        )
        return ImportReport(
            kind=kind, file_name=file_name, dry_run=dry_run, refused=error.message
        )
    logger.info(
        "import finished file=%s kind=%s dry_run=%s rows=%d created=%d updated=%d "
        "unchanged=%d already_imported=%d duplicates=%d rejected=%d",
        file_name, kind, dry_run, report.total_rows, report.created, report.updated,
        report.unchanged, report.already_imported, report.duplicates, report.rejected,
    )  # fmt: skip
    return report


def import_file(
    source: str | Path | bytes,
    kind: str,
    *,
    encoding: str | None = None,
    date_order: str | None = None,
    decimal_mark: str | None = None,
    dry_run: bool = False,
    user: Any = None,
    file_name: str | None = None,
) -> ImportReport:
    """Import a file given by path or as bytes (see ``import_data``)."""
    if isinstance(source, bytes):
        data, name = source, file_name or ""
    else:
        path = Path(source)
        data, name = path.read_bytes(), file_name or path.name
    return import_data(
        data,
        kind,
        file_name=name,
        encoding=encoding,
        date_order=date_order,
        decimal_mark=decimal_mark,
        dry_run=dry_run,
        user=user,
    )


__all__ = [
    "ACTIVITIES",
    "MEMBERS",
    "FileRejected",
    "ImportReport",
    "import_data",
    "import_file",
]
