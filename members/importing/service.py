"""Import service: read, clean and save one file in one transaction.

The admin (through the resources in members.resources) and the
import_members and import_activities commands all call ``import_data``,
so a file gives the same result wherever it is imported. A confirmed
import is recorded as an ImportBatch (see members.importing.batches).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from members.importing.activity_writer import save_activities
from members.importing.amounts import DECIMAL_COMMA, DECIMAL_POINT
from members.importing.batches import (
    add_chunk,
    evaluate_and_record,
    finish_batch,
    mark_running,
    start_batch,
)
from members.importing.cleaning import (
    CleaningOptions,
    clean_activity_rows,
    clean_member_rows,
    kinds_by_label,
)
from members.importing.columns import (
    ACTIVITIES,
    COLUMNS,
    KINDS,
    MEMBERS,
    ColumnMap,
    headers_used,
    map_headers,
)
from members.importing.dates import DAY_FIRST, MONTH_FIRST
from members.importing.errors import FileRejected
from members.importing.member_writer import save_members
from members.importing.reading import detect_format, read_table
from members.importing.report import ImportReport
from members.importing.table import SourceRow, Table
from members.models import Channel, ColumnMapping, ImportBatch
from members.rights import drop_erased_records
from tiers.ladder import Ladder, LadderError

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


def _evaluate_tiers(batch: ImportBatch, member_ids: set[int]) -> None:
    """Evaluate the members' tiers, recording the changes in ``batch`` for a rollback."""
    if not member_ids:
        return
    as_of = timezone.now()
    try:
        ladder = Ladder.load(as_of=as_of)
    except LadderError as error:
        # Without tiers there is nothing to assign; the ledger still counts.
        logger.warning(
            "import skipped tier evaluation batch=%d members=%d error=%s",
            batch.pk, len(member_ids), error,
        )  # fmt: skip
        return
    evaluate_and_record(batch, sorted(member_ids), ladder=ladder, as_of=as_of)


CHANNEL_OPTION_HELP = (
    "Code of the channel the file comes from. Its saved column mapping is used "
    "to read the headers, and rows take this channel when the file has no "
    "channel column. After the import, the headers used are saved as the "
    "channel's mapping."
)


def find_channel(code: str) -> Channel:
    """Return the channel with this code, ignoring case.

    Raises ValueError, listing the known codes, when there is none.
    """
    channel = Channel.objects.filter(code__iexact=code.strip()).first()
    if channel is None:
        codes = ", ".join(
            Channel.objects.order_by("code").values_list("code", flat=True)
        )
        raise ValueError(
            f"Channel {code!r} not found. Use one of these codes: {codes or 'none'}, "
            "or add the channel in the admin first."
        )
    return channel


def channel_mapping(channel: Channel | None, kind: str) -> dict[str, str]:
    """Return the channel's saved {column: header} mapping for ``kind`` files."""
    if channel is None:
        return {}
    mapping = ColumnMapping.objects.filter(channel=channel, kind=kind).first()
    return dict(mapping.columns) if mapping else {}


def remember_mapping(
    channel: Channel, kind: str, columns: dict[str, str], user: Any
) -> None:
    """Save the headers an import used as the channel's mapping for ``kind``."""
    ColumnMapping.objects.update_or_create(
        channel=channel,
        kind=kind,
        defaults={"columns": columns, "updated_by_id": getattr(user, "pk", None)},
    )


def row_with_channel(row: SourceRow, width: int, code: str) -> SourceRow:
    """Return the row with ``code`` as its cell number ``width`` (0-based).

    Short rows are padded to ``width`` first. Cells past ``width`` stay
    after the added one, so the cleaning still rejects them as extra values.
    NOTE: the value and column counts in that rejection then include the
    added cell, one more than the file has.
    """
    cells = row.cells[:width] + ("",) * (width - len(row.cells))
    return replace(row, cells=(*cells, code, *row.cells[width:]))


def add_channel_column(
    table: Table, columns: ColumnMap, code: str
) -> tuple[Table, ColumnMap]:
    """Give every row of a file without a channel column the channel ``code``.

    The channel becomes a column after the last header.
    """
    width = len(table.headers)
    rows = [row_with_channel(row, width, code) for row in table.rows]
    positions = {**columns.positions, "channel": width}
    return (
        replace(table, headers=[*table.headers, "channel"], rows=rows),
        ColumnMap(positions=positions, ignored=columns.ignored),
    )


def _clean_and_save(
    data: bytes,
    file_format: str,
    kind: str,
    report: ImportReport,
    encoding: str | None,
    options: CleaningOptions,
    channel: Channel | None,
    batch: ImportBatch | None,
) -> dict[str, str]:
    """Read, clean and save the file; return the channel's mapping to save.

    The mapping to save is the saved one, with the headers this file used
    for its columns in place of the saved ones.
    """
    table = read_table(data, file_format, encoding)
    optional = ("channel",) if channel is not None else ()
    mapping = channel_mapping(channel, kind)
    columns = map_headers(table.headers, kind, mapping, optional=optional)
    known = {
        column: header for column, header in mapping.items() if column in COLUMNS[kind]
    }
    used = {**known, **headers_used(table.headers, columns)}
    if channel is not None and "channel" not in columns.positions:
        table, columns = add_channel_column(table, columns, channel.code)
    report.total_rows = len(table.rows)
    report.encoding = table.encoding
    report.delimiter = table.delimiter
    report.ignored_columns = list(columns.ignored)
    if kind == MEMBERS:
        members, issues = clean_member_rows(table, columns, options)
        report.reject(issues)
        save_members(members, report, batch)
    else:
        activities, issues = clean_activity_rows(
            table, columns, options, kinds_by_label()
        )
        report.reject(issues)
        activities = drop_erased_records(activities, report)
        save_activities(activities, report, batch)
    return used


def _start(
    data: bytes,
    kind: str,
    file_name: str,
    user: Any,
    channel: Channel | None,
    batch: ImportBatch | None,
    choices: dict[str, str | None],
) -> ImportBatch:
    """Return the batch that records a confirmed import, set RUNNING."""
    if batch is None:
        options = {name: value for name, value in choices.items() if value}
        return start_batch(
            kind,
            file_name=file_name,
            data_or_size=data,
            user=user,
            channel=channel,
            options=options,
        )
    mark_running(batch)
    return batch


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
    channel: Channel | None = None,
    batch: ImportBatch | None = None,
) -> ImportReport:
    """Import a members or activities file given as bytes; return the report.

    ``encoding`` (CSV only), ``date_order`` (day_first or month_first) and
    ``decimal_mark`` (point or comma, for amounts) are staff's choices for
    what detection rejects as unclear; None lets the import detect them.
    ``channel`` is the channel the file comes from: its saved column
    mapping is applied before the built-in header aliases, and rows take
    it when the file has no channel column. A confirmed import saves the
    headers it used in that channel's mapping.

    Everything happens in one transaction: a dry run rolls it back, and an
    unexpected error rolls it back before it propagates. A confirmed import
    re-evaluates the tiers of every member it touched inside the same
    transaction, so a refund later in the file cancels a purchase before it,
    and records the tier fields that changed in the batch for a rollback.
    A rejected file saves nothing and gives a report whose ``refused`` is
    the reason, with all counts zero.

    A confirmed import is recorded in ``batch``, or in a new ImportBatch,
    whose id is the report's ``batch_id``; a dry run records nothing. The
    batch ends APPLIED, REFUSED with the reason, or FAILED, and a failed
    import leaves nothing else behind.
    """
    options = CleaningOptions(date_order=date_order, decimal_mark=decimal_mark)
    _check_arguments(kind, options)
    file_format = detect_format(data, file_name, file_format)
    user_id = getattr(user, "pk", None)
    logger.info(
        "import started file=%s kind=%s format=%s dry_run=%s user_id=%s channel_id=%s",
        file_name, kind, file_format, dry_run, user_id, getattr(channel, "pk", None),
    )  # fmt: skip
    report = ImportReport(kind=kind, file_name=file_name, dry_run=dry_run)
    if not dry_run:
        choices = {
            "encoding": encoding,
            "date_order": date_order,
            "decimal_mark": decimal_mark,
            "file_format": file_format,
        }
        batch = _start(data, kind, file_name, user, channel, batch, choices)
        report.batch_id = batch.pk
    try:
        with transaction.atomic():
            used = _clean_and_save(
                data, file_format, kind, report, encoding, options, channel, batch
            )
            if dry_run:
                transaction.set_rollback(True)
            else:
                assert batch is not None
                _evaluate_tiers(batch, report.member_ids)
                add_chunk(batch, report)
                if channel is not None:
                    remember_mapping(channel, kind, used, user)
                finish_batch(batch, ImportBatch.Status.APPLIED)
    except FileRejected as error:
        logger.warning(
            "import rejected file=%s kind=%s batch=%s reason=%s",
            file_name, kind, report.batch_id, error.message,
        )  # fmt: skip
        if batch is not None and not dry_run:
            finish_batch(batch, ImportBatch.Status.REFUSED, error.message)
        return ImportReport(
            kind=kind,
            file_name=file_name,
            dry_run=dry_run,
            refused=error.message,
            batch_id=report.batch_id,
        )
    except Exception as error:
        if batch is not None and not dry_run:
            logger.warning(
                "import failed file=%s kind=%s batch=%d error=%s",
                file_name, kind, batch.pk, type(error).__name__,
            )  # fmt: skip
            finish_batch(
                batch,
                ImportBatch.Status.FAILED,
                f"The import failed unexpectedly ({type(error).__name__}) and "
                "nothing from the file was saved.",
            )
        raise
    logger.info(
        "import finished file=%s kind=%s dry_run=%s batch=%s rows=%d created=%d "
        "updated=%d unchanged=%d already_imported=%d duplicates=%d rejected=%d",
        file_name, kind, dry_run, report.batch_id, report.total_rows, report.created,
        report.updated, report.unchanged, report.already_imported, report.duplicates,
        report.rejected,
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
    channel: Channel | None = None,
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
        channel=channel,
    )


__all__ = [
    "ACTIVITIES",
    "MEMBERS",
    "FileRejected",
    "ImportReport",
    "import_data",
    "import_file",
]
