"""Streamed import of large CSV and XLSX files, with memory flat in the rows.

The file is read twice. The first pass counts the rows, maps the headers
and gathers the evidence for the choices made once per column (date order,
decimal mark), so they are fixed before any row is saved. The second pass
cleans and saves the rows chunk by chunk inside one transaction: a refused
or failed file saves nothing. The writers find repeats across chunks
through the import batch that every saved row records. At the end, the
tiers of the members the file touched are evaluated again, with their ids
read from the database in chunks rather than kept in memory. The tier
fields that change are recorded in the batch, so a rollback can restore
them.

``import_data`` in ``members.importing.service`` stays the path for files
that fit in memory; it gives the same results on the same file.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from members.importing.activity_writer import save_activities
from members.importing.amounts import DECIMAL_COMMA, DECIMAL_POINT
from members.importing.batches import (
    add_chunk,
    evaluate_and_record,
    finish_batch,
    start_batch,
)
from members.importing.cleaning import (
    CleaningOptions,
    FileEvidence,
    RowIssue,
    clean_activity_chunk,
    clean_member_chunk,
    kinds_by_label,
)
from members.importing.columns import (
    ACTIVITIES,
    KINDS,
    MEMBERS,
    ColumnMap,
    headers_used,
    map_headers,
)
from members.importing.dates import DAY_FIRST, MONTH_FIRST
from members.importing.errors import FileRejected
from members.importing.member_writer import save_members
from members.importing.reading import (
    RowStream,
    detect_format,
    open_stream,
    streaming_max_rows,
)
from members.importing.report import (
    ImportReport,
    SkippedIssue,
    Status,
    StatusCounts,
)
from members.importing.service import (
    channel_mapping,
    remember_mapping,
    row_with_channel,
)
from members.importing.table import SourceRow, check_row_count
from members.models import Activity, Channel, ImportBatch, ImportedMember
from members.rights import drop_erased_records
from tiers.ladder import Ladder, LadderError

logger = logging.getLogger(__name__)

# Rows cleaned and saved together. The writers cost a fixed number of
# queries per chunk, so larger chunks mean fewer round trips, and memory
# grows with the chunk, not the file.
CHUNK_ROWS = 10_000
SCANNING = "scanning"
IMPORTING = "importing"
EVALUATING = "evaluating"


@dataclass(frozen=True)
class Progress:
    """How far a streamed import is: ``done`` of ``total`` in ``phase``.

    ``phase`` is "scanning" (first pass, rows counted so far, no total),
    "importing" (rows saved) or "evaluating" (members whose tiers were
    evaluated).
    """

    phase: str
    done: int
    total: int | None = None


ProgressCallback = Callable[[Progress], None]


class IssueSpool:
    """Rejected and skipped lines kept in a temporary file, chunk by chunk.

    Memory stays flat however many lines a file has issues on. Each chunk's
    issues are pickled as (rejections, skipped); the file is only ever read
    back by the process that wrote it.
    """

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()
        self.chunks = 0

    def add(self, report: ImportReport) -> None:
        if not report.rejections and not report.skipped:
            return
        pickle.dump((report.rejections, report.skipped), self._file)
        self.chunks += 1

    def chunks_read(self) -> Iterator[tuple[list[RowIssue], list[SkippedIssue]]]:
        """Yield each chunk's (rejections, skipped) in the order they were added."""
        self._file.seek(0)
        for _ in range(self.chunks):
            yield pickle.load(self._file)  # noqa: S301 - written by this process
        self._file.seek(0, 2)

    def rejections(self) -> Iterator[RowIssue]:
        for rejections, _skipped in self.chunks_read():
            yield from sorted(rejections, key=lambda issue: issue.line)

    def skipped(self) -> Iterator[SkippedIssue]:
        for _rejections, skipped in self.chunks_read():
            yield from sorted(skipped, key=lambda issue: issue.line)

    def close(self) -> None:
        self._file.close()


@dataclass
class StreamReport(StatusCounts):
    """The outcome of a streamed import: counts, but no per-line list.

    ``refused`` is the reason a whole file was rejected, with nothing saved.
    ``issues`` contains the rejected and skipped lines when the caller asked
    for them to be kept.
    """

    kind: str
    file_name: str
    dry_run: bool
    refused: str | None = None
    total_rows: int = 0
    encoding: str | None = None
    delimiter: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    channels_created: set[str] = field(default_factory=set)
    counts: Counter[Status] = field(default_factory=Counter)
    members_evaluated: int = 0
    batch_id: int | None = None
    issues: IssueSpool | None = None

    def add(self, report: ImportReport) -> None:
        self.counts.update(report.counts)
        self.channels_created.update(report.channels_created)

    def summary(self) -> str:
        return (
            f"{self.total_rows} rows: {self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.already_imported} already imported, "
            f"{self.duplicates} duplicates, {self.rejected} rejected"
        )


@dataclass(frozen=True)
class _Plan:
    """The first pass's decisions for the second: columns and options.

    ``channel_code`` is set when every row takes the chosen channel because
    the file has no channel column; ``headers_used`` is {column: header}.
    """

    columns: ColumnMap
    width: int
    options: CleaningOptions
    total_rows: int
    headers_used: dict[str, str]
    channel_code: str | None = None

    def rows(self, rows: list[SourceRow]) -> list[SourceRow]:
        """Return the rows as the cleaning reads them, with any added channel."""
        code = self.channel_code
        if code is None:
            return rows
        return [row_with_channel(row, self.width - 1, code) for row in rows]


def check_options(kind: str, options: CleaningOptions) -> None:
    """Raise ValueError for an unknown kind, date order or decimal mark."""
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


def _chunks(rows: Iterator[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _report_progress(
    progress: ProgressCallback | None, phase: str, done: int, total: int | None
) -> None:
    if progress is not None:
        progress(Progress(phase, done, total))


def _scan(
    stream: RowStream,
    kind: str,
    options: CleaningOptions,
    channel: Channel | None,
    chunk_rows: int,
    progress: ProgressCallback | None,
) -> _Plan:
    """Read the whole file once: map headers, count rows and decide options.

    Raises FileRejected for a file without a header or data rows, with
    more rows than the streaming limit, or whose columns leave a decision
    open.
    """
    max_rows = streaming_max_rows()
    with stream.rows() as (headers, rows):
        if not headers or not any(header.strip() for header in headers):
            raise FileRejected(
                "The file is empty: the first line must be a header row."
            )
        # A file without data rows is refused for that before its headers,
        # as the in-memory path does.
        header_error: FileRejected | None = None
        evidence: FileEvidence | None = None
        optional = ("channel",) if channel is not None else ()
        mapping = channel_mapping(channel, kind)
        try:
            columns = map_headers(headers, kind, mapping, optional=optional)
            evidence = FileEvidence(kind, columns)
        except FileRejected as error:
            header_error = error
        count = 0
        for chunk in _chunks(rows, chunk_rows):
            count += len(chunk)
            check_row_count(count, max_rows)
            if evidence is not None:
                evidence.add_rows(chunk)
            _report_progress(progress, SCANNING, count, None)
    if not count:
        raise FileRejected(
            "The file has no data rows: there is nothing below the header row. "
            "Add the rows to import and import again."
        )
    if header_error is not None:
        raise header_error
    assert evidence is not None
    decided = evidence.decide(options)
    used = headers_used(headers, columns)
    if channel is None or "channel" in columns.positions:
        return _Plan(columns, len(headers), decided, count, used)
    # The chosen channel becomes a column after the last header, as the
    # in-memory import adds it.
    positions = {**columns.positions, "channel": len(headers)}
    columns = ColumnMap(positions=positions, ignored=columns.ignored)
    return _Plan(columns, len(headers) + 1, decided, count, used, channel.code)


def _save_rows(
    stream: RowStream,
    kind: str,
    plan: _Plan,
    result: StreamReport,
    batch: ImportBatch,
    record_chunks: bool,
    chunk_rows: int,
    progress: ProgressCallback | None,
    on_chunk: Callable[[ImportReport], None] | None,
) -> None:
    """Read the file again and clean and save it chunk by chunk."""
    kinds = kinds_by_label() if kind == ACTIVITIES else {}
    now = timezone.now()
    done = 0
    with stream.rows() as (_headers, rows):
        for chunk in _chunks(rows, chunk_rows):
            report = ImportReport(kind=kind, file_name=result.file_name, dry_run=False)
            report.total_rows = len(chunk)
            chunk = plan.rows(chunk)
            if kind == MEMBERS:
                members, issues = clean_member_chunk(
                    chunk, plan.columns, plan.width, plan.options
                )
                report.reject(issues)
                save_members(members, report, batch=batch)
            else:
                activities, issues = clean_activity_chunk(
                    chunk, plan.columns, plan.width, plan.options, kinds, now
                )
                report.reject(issues)
                activities = drop_erased_records(activities, report)
                save_activities(activities, report, batch=batch)
            if record_chunks:
                add_chunk(batch, report)
            result.add(report)
            if on_chunk is not None:
                on_chunk(report)
            done += len(chunk)
            _report_progress(progress, IMPORTING, done, plan.total_rows)


def _touched_member_ids(
    batch: ImportBatch, kind: str, size: int
) -> Iterator[list[int]]:
    """Yield the ids of the members the batch saved rows for, ``size`` at a time.

    Each chunk is one query that starts after the last id of the one before.
    No cursor stays open, because evaluating a chunk writes ImportedMember
    rows of the batch, the table a member import's ids are read from.
    """
    ids: QuerySet[Any, int]
    if kind == ACTIVITIES:
        activities = Activity.objects.filter(import_batch=batch)
        ids = activities.order_by("member_id").values_list("member_id", flat=True)
    else:
        imported = ImportedMember.objects.filter(batch=batch)
        ids = imported.order_by("member_id").values_list("member_id", flat=True)
    last = 0
    while chunk := list(ids.filter(member_id__gt=last).distinct()[:size]):
        yield chunk
        last = chunk[-1]


def _evaluate_tiers(
    batch: ImportBatch, kind: str, progress: ProgressCallback | None
) -> int:
    """Evaluate the tiers of every member the batch touched; return how many.

    The ids come from the rows the batch saved, chunk by chunk, so memory
    does not grow with the file. The tier fields that change are recorded
    in the batch for a rollback (see ``batches.evaluate_and_record``).
    Without a published ladder nothing is evaluated, as in
    ``service.import_data``.
    """
    as_of = timezone.now()
    try:
        ladder = Ladder.load(as_of=as_of)
    except LadderError as error:
        logger.warning(
            "streamed import skipped tier evaluation batch=%d error=%s",
            batch.pk,
            error,
        )
        return 0
    done = 0
    chunks = _touched_member_ids(batch, kind, settings.CRM_EVALUATION_CHUNK_SIZE)
    for chunk in chunks:
        evaluate_and_record(batch, chunk, ladder=ladder, as_of=as_of)
        done += len(chunk)
        _report_progress(progress, EVALUATING, done, None)
    return done


def _dry_run_batch(kind: str, file_name: str, user: Any) -> ImportBatch:
    """Create a batch for a dry run, inside the transaction that is rolled back.

    The writers need a batch to report a repeat of an earlier chunk's row as
    a duplicate of its line.
    """
    return ImportBatch.objects.create(
        kind=kind,
        status=ImportBatch.Status.CHECKING,
        file_name=file_name[:255],
        created_by_id=getattr(user, "pk", None),
    )


def import_stream(
    open_file: Callable[[], BinaryIO],
    kind: str,
    *,
    size: int,
    file_name: str = "",
    file_format: str | None = None,
    encoding: str | None = None,
    date_order: str | None = None,
    decimal_mark: str | None = None,
    dry_run: bool = False,
    user: Any = None,
    channel: Channel | None = None,
    batch: ImportBatch | None = None,
    keep_issues: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: ProgressCallback | None = None,
    on_chunk: Callable[[ImportReport], None] | None = None,
) -> StreamReport:
    """Import a stored file row by row in one transaction; return the report.

    ``open_file`` opens the file in binary mode; it is called once for each
    pass. ``encoding``, ``date_order`` and ``decimal_mark`` are staff's
    choices, and ``channel`` the channel the file comes from, as for
    ``service.import_data``.

    A confirmed import records a batch: ``batch`` when given (RUNNING, see
    ``batches.mark_running``), else one started here. Its counts and issues
    are added chunk by chunk inside the transaction, and it is finished as
    APPLIED in the same transaction, or as REFUSED or FAILED after the
    rollback. A dry run rolls everything back, ``batch`` included when it
    is only given for the writers. With ``keep_issues`` the report's
    ``issues`` spool has every rejected and skipped line; the caller closes
    it. ``progress`` is called after each chunk and ``on_chunk`` with each
    chunk's report; an exception from either rolls the import back.
    """
    options = CleaningOptions(date_order=date_order, decimal_mark=decimal_mark)
    check_options(kind, options)
    with open_file() as head_file:
        head = head_file.read(8)
    file_format = detect_format(head, file_name, file_format)
    user_id = getattr(user, "pk", None)
    result = StreamReport(kind=kind, file_name=file_name, dry_run=dry_run)
    if keep_issues:
        result.issues = IssueSpool()
    if not dry_run and batch is None:
        batch = start_batch(
            kind,
            file_name=file_name,
            data_or_size=size,
            user=user,
            channel=channel,
            options={
                key: value
                for key, value in (
                    ("encoding", encoding),
                    ("date_order", date_order),
                    ("decimal_mark", decimal_mark),
                    ("file_format", file_format),
                )
                if value
            },
        )
    result.batch_id = batch.pk if batch is not None and not dry_run else None
    logger.info(
        "streamed import started file=%s kind=%s format=%s size=%d dry_run=%s "
        "user_id=%s batch=%s",
        file_name, kind, file_format, size, dry_run, user_id, result.batch_id,
    )  # fmt: skip

    def collect(report: ImportReport) -> None:
        if result.issues is not None:
            result.issues.add(report)
        if on_chunk is not None:
            on_chunk(report)

    try:
        stream = open_stream(open_file, size, file_format, encoding)
        result.encoding = stream.encoding
        result.delimiter = stream.delimiter
        plan = _scan(stream, kind, options, channel, chunk_rows, progress)
        result.total_rows = plan.total_rows
        result.ignored_columns = list(plan.columns.ignored)
        with transaction.atomic():
            writer_batch = batch
            if dry_run and writer_batch is None:
                writer_batch = _dry_run_batch(kind, file_name, user)
            assert writer_batch is not None
            _save_rows(
                stream,
                kind,
                plan,
                result,
                writer_batch,
                not dry_run,
                chunk_rows,
                progress,
                collect,
            )
            if dry_run:
                transaction.set_rollback(True)
            else:
                result.members_evaluated = _evaluate_tiers(writer_batch, kind, progress)
                if channel is not None:
                    remember_mapping(channel, kind, plan.headers_used, user)
                finish_batch(writer_batch, ImportBatch.Status.APPLIED)
    except FileRejected as error:
        logger.warning(
            "streamed import rejected file=%s kind=%s batch=%s reason=%s",
            file_name, kind, result.batch_id, error.message,
        )  # fmt: skip
        if batch is not None and not dry_run:
            finish_batch(batch, ImportBatch.Status.REFUSED, error.message)
        if result.issues is not None:
            result.issues.close()
        return StreamReport(
            kind=kind,
            file_name=file_name,
            dry_run=dry_run,
            refused=error.message,
            batch_id=result.batch_id,
        )
    except BaseException as error:
        # BaseException, because django-q2 stops a task that runs too long
        # by raising a SystemExit subclass inside it.
        # Only the error's type is logged and stored: database errors can
        # quote the values of a row, which may be personal data.
        logger.error(
            "streamed import failed file=%s kind=%s batch=%s error=%s",
            file_name, kind, result.batch_id, type(error).__name__,
        )  # fmt: skip
        if batch is not None and not dry_run:
            finish_batch(batch, ImportBatch.Status.FAILED, _failure_message(error))
        if result.issues is not None:
            result.issues.close()
        raise
    logger.info(
        "streamed import finished file=%s kind=%s dry_run=%s batch=%s rows=%d "
        "created=%d updated=%d unchanged=%d already_imported=%d duplicates=%d "
        "rejected=%d members_evaluated=%d",
        file_name, kind, dry_run, result.batch_id, result.total_rows,
        result.created, result.updated, result.unchanged, result.already_imported,
        result.duplicates, result.rejected, result.members_evaluated,
    )  # fmt: skip
    return result


def _failure_message(error: BaseException) -> str:
    """Return the message stored on a FAILED batch, naming the error's type."""
    return (
        f"The import failed unexpectedly ({type(error).__name__}) and nothing "
        "from the file was saved. Import the file again; if it fails again, "
        "report the batch number to an administrator."
    )


def import_path(path: str | Path, kind: str, **options: Any) -> StreamReport:
    """Import a file on disk with ``import_stream``; the options are the same.

    Raises OSError when the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    options.setdefault("file_name", path.name)
    return import_stream(lambda: path.open("rb"), kind, size=size, **options)
