"""Large imports run as django-q2 tasks: check, wait for staff, then import.

Staff upload a file, which is stored in ``ImportBatch.upload``. A first
task checks it with a dry run (QUEUED, CHECKING, then CHECKED or REFUSED)
and stores the counts and issues. Staff read them and confirm, and a second
task imports the file (RUNNING, then APPLIED, REFUSED or FAILED). Both use
``members.importing.streaming``, so memory stays flat in the rows.

An import runs in one open transaction, so other processes cannot read its
progress from the database. The tasks write it to the Django cache, which
the web and job processes share (files or Redis, see settings.CACHES).

django-q2 delivers a task at least once. Each task claims its batch with a
conditional UPDATE on the status, so a second delivery finds the batch
claimed and does nothing. That also covers a task that runs longer than
the cluster's ``retry`` seconds, which the ORM broker delivers again while
the first copy still runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, BinaryIO

from django.conf import settings
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.tasks import async_task

from members.importing.batches import add_chunk, finish_batch, mark_running
from members.importing.report import ImportReport
from members.importing.streaming import (
    SCANNING,
    Progress,
    ProgressCallback,
    StreamReport,
    import_stream,
)
from members.models import Channel, ImportBatch

logger = logging.getLogger(__name__)

CHECK_TASK = "members.importing.background.check_batch"
APPLY_TASK = "members.importing.background.apply_batch"
# Default seconds a check or import task may run before django-q2 stops it.
# NOTE: an estimate. bench/import_bench.py imported 1M activity rows in 5
# to 10 minutes on 2 shared cores (docs/benchmarks.md), so this leaves a
# wide margin. Slower machines may need more: set CRM_IMPORT_TASK_TIMEOUT.
TASK_TIMEOUT = 3 * 60 * 60
# Seconds the cache keeps a batch's progress after its last update.
PROGRESS_TTL = 24 * 60 * 60
QUEUED = "queued"
# Statuses in which a task still has work to do on the batch.
ACTIVE_STATUSES = (
    ImportBatch.Status.QUEUED,
    ImportBatch.Status.CHECKING,
    ImportBatch.Status.RUNNING,
)


class ImportNotReady(Exception):
    """Raised when staff confirm a batch that is not waiting for confirmation."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def task_timeout() -> int:
    """Return the seconds a background import task may run (see TASK_TIMEOUT).

    django-q2 1.11 reads a per-task ``timeout`` from ``async_task``'s
    keyword arguments and stops the task with TimeoutException after it.
    """
    return int(getattr(settings, "CRM_IMPORT_TASK_TIMEOUT", TASK_TIMEOUT))


# Progress in the cache


def progress_key(batch_id: int) -> str:
    return f"members:import-progress:{batch_id}"


def write_progress(batch_id: int, phase: str, done: int, total: int | None) -> None:
    cache.set(
        progress_key(batch_id),
        {
            "phase": phase,
            "done": done,
            "total": total,
            "updated_at": timezone.now().isoformat(),
        },
        PROGRESS_TTL,
    )


def read_progress(batch_id: int) -> dict[str, Any] | None:
    """Return the last progress a task wrote for the batch, or None."""
    progress: dict[str, Any] | None = cache.get(progress_key(batch_id))
    return progress


def _progress_writer(batch_id: int) -> ProgressCallback:
    def write(progress: Progress) -> None:
        write_progress(batch_id, progress.phase, progress.done, progress.total)

    return write


# Starting and confirming


def _sha256(upload: UploadedFile) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def queue_batch(
    upload: UploadedFile,
    kind: str,
    *,
    user: Any,
    options: dict[str, str | None],
    channel: Channel | None = None,
) -> ImportBatch:
    """Store an uploaded file as a QUEUED batch and queue its check.

    ``options`` contains staff's choices (encoding, date_order,
    decimal_mark), and an empty one is left to detection. The task is queued when the current
    transaction commits, so it always finds the batch and its file.
    """
    batch = ImportBatch(
        kind=kind,
        status=ImportBatch.Status.QUEUED,
        file_name=(upload.name or "")[:255],
        file_sha256=_sha256(upload),
        file_size=upload.size or 0,
        channel=channel,
        options={name: value for name, value in options.items() if value},
        created_by_id=getattr(user, "pk", None),
    )
    batch.upload.save(upload.name or "import", upload, save=False)
    batch.save()
    write_progress(batch.pk, QUEUED, 0, None)
    _enqueue(CHECK_TASK, batch)
    logger.info(
        "background import queued batch=%d kind=%s size=%d user_id=%s",
        batch.pk, kind, batch.file_size, batch.created_by_id,
    )  # fmt: skip
    return batch


def confirm_batch(batch: ImportBatch, user: Any) -> None:
    """Queue the import of a checked batch.

    Raises ImportNotReady unless the batch is CHECKED, e.g. when it is
    still being checked or was already imported.
    """
    if batch.status != ImportBatch.Status.CHECKED:
        raise ImportNotReady(
            f"Import #{batch.pk} has status {batch.get_status_display()!r}, so it "
            "cannot be confirmed: only a checked file waiting for confirmation can."
        )
    write_progress(batch.pk, QUEUED, 0, None)
    _enqueue(APPLY_TASK, batch)
    logger.info(
        "background import confirmed batch=%d user_id=%s",
        batch.pk,
        getattr(user, "pk", None),
    )


def _enqueue(task: str, batch: ImportBatch) -> None:
    name = "check" if task == CHECK_TASK else "import"
    batch_id = batch.pk
    transaction.on_commit(
        lambda: async_task(
            task,
            batch_id,
            task_name=f"import-{name}-{batch_id}",
            timeout=task_timeout(),
        )
    )


# Tasks


def _claim(
    batch_id: int, ready: ImportBatch.Status, working: ImportBatch.Status
) -> bool:
    """Move the batch from ``ready`` to ``working``; return whether this run did.

    A batch left ``working`` for longer than the task timeout belongs to a
    task that was killed (a worker lost, a machine restarted), so a later
    delivery takes it over.
    """
    now = timezone.now()
    abandoned = now - dt.timedelta(seconds=task_timeout() + 60)
    claimable = Q(status=ready) | Q(status=working, started_at__lt=abandoned)
    claimed = ImportBatch.objects.filter(claimable, pk=batch_id).update(
        status=working, started_at=now
    )
    return bool(claimed)


def _open_upload(batch: ImportBatch) -> Callable[[], BinaryIO]:
    storage, name = batch.upload.storage, batch.upload.name

    def open_file() -> BinaryIO:
        file: BinaryIO = storage.open(name, "rb")
        return file

    return open_file


def _run(batch: ImportBatch, *, dry_run: bool) -> StreamReport:
    return import_stream(
        _open_upload(batch),
        batch.kind,
        size=batch.file_size,
        file_name=batch.file_name,
        file_format=batch.options.get("file_format"),
        dry_run=dry_run,
        user=batch.created_by,
        channel=batch.channel,
        batch=batch,
        keep_issues=dry_run,
        progress=_progress_writer(batch.pk),
        encoding=batch.options.get("encoding"),
        date_order=batch.options.get("date_order"),
        decimal_mark=batch.options.get("decimal_mark"),
    )


def _delete_upload(batch: ImportBatch) -> None:
    """Delete the stored file once no task needs it, since it contains personal data."""
    if batch.upload:
        batch.upload.delete(save=False)
        ImportBatch.objects.filter(pk=batch.pk).update(upload="")


def _record_check(batch: ImportBatch, report: StreamReport) -> None:
    """Store a dry run's counts and issues on the batch and set it CHECKED.

    The dry run's own transaction was rolled back, so its issues were kept
    in the report's spool and are added here, chunk by chunk.
    """
    totals = ImportReport(kind=batch.kind, file_name=batch.file_name, dry_run=True)
    totals.total_rows = report.total_rows
    totals.counts = Counter(report.counts)
    with transaction.atomic():
        add_chunk(batch, totals)
        if report.issues is not None:
            for rejections, skipped in report.issues.chunks_read():
                chunk = ImportReport(
                    kind=batch.kind, file_name=batch.file_name, dry_run=True
                )
                chunk.rejections = rejections
                chunk.skipped = skipped
                add_chunk(batch, chunk)
        finish_batch(batch, ImportBatch.Status.CHECKED)


def _fail(batch: ImportBatch, error: BaseException) -> None:
    """Mark a batch FAILED after an error outside ``import_stream``'s own handling."""
    logger.error(
        "background import failed batch=%d error=%s", batch.pk, type(error).__name__
    )
    if isinstance(error, TimeoutException):
        message = (
            f"The import was stopped after {task_timeout()} seconds and nothing "
            "from the file was saved. Split the file, or ask an administrator "
            "to raise CRM_IMPORT_TASK_TIMEOUT."
        )
    else:
        message = (
            f"The import failed unexpectedly ({type(error).__name__}) and nothing "
            "from the file was saved."
        )
    finish_batch(batch, ImportBatch.Status.FAILED, message)
    _delete_upload(batch)


def check_batch(batch_id: int) -> dict[str, int]:
    """Check a QUEUED batch's file with a dry run and store what it found.

    The batch ends CHECKED with counts and issues, REFUSED with the reason,
    or FAILED. A batch not QUEUED is left alone, so a repeated delivery
    does nothing.
    """
    if not _claim(batch_id, ImportBatch.Status.QUEUED, ImportBatch.Status.CHECKING):
        logger.info("background import check skipped batch=%d: not queued", batch_id)
        return {"skipped": 1}
    batch = ImportBatch.objects.select_related("channel", "created_by").get(pk=batch_id)
    logger.info("background import check started batch=%d", batch_id)
    write_progress(batch_id, SCANNING, 0, None)
    try:
        report = _run(batch, dry_run=True)
        if report.refused is not None:
            finish_batch(batch, ImportBatch.Status.REFUSED, report.refused)
            _delete_upload(batch)
            return {"refused": 1}
        try:
            _record_check(batch, report)
        finally:
            if report.issues is not None:
                report.issues.close()
    except (Exception, TimeoutException) as error:
        _fail(batch, error)
        if isinstance(error, TimeoutException):
            raise
        return {"failed": 1}
    logger.info(
        "background import check finished batch=%d rows=%d", batch_id, report.total_rows
    )
    return {"rows": report.total_rows}


def apply_batch(batch_id: int) -> dict[str, int]:
    """Import a CHECKED batch's file; it ends APPLIED, REFUSED or FAILED.

    The counts and issues of the check are replaced by those of the import.
    A batch not CHECKED is left alone, so a repeated delivery does nothing.
    """
    if not _claim(batch_id, ImportBatch.Status.CHECKED, ImportBatch.Status.RUNNING):
        logger.info("background import skipped batch=%d: not checked", batch_id)
        return {"skipped": 1}
    batch = ImportBatch.objects.select_related("channel", "created_by").get(pk=batch_id)
    logger.info("background import started batch=%d", batch_id)
    mark_running(batch)
    write_progress(batch_id, SCANNING, 0, None)
    try:
        report = _run(batch, dry_run=False)
    except TimeoutException as error:
        _fail(batch, error)
        raise
    except Exception as error:
        # import_stream marks the batch FAILED itself once the import has
        # started, but not for an error before, such as a missing file.
        _fail(batch, error)
        return {"failed": 1}
    _delete_upload(batch)
    if report.refused is not None:
        return {"refused": 1}
    logger.info(
        "background import finished batch=%d rows=%d created=%d",
        batch_id, report.total_rows, report.created,
    )  # fmt: skip
    return {"rows": report.total_rows, "created": report.created}
