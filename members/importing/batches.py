"""Import batches: the record of each confirmed import, and its rollback.

A batch row is written before the import's own transaction starts, so that
a refused or failed file still leaves a REFUSED or FAILED batch behind. The
counts and issues are added inside the import's transaction, chunk by
chunk, so they are saved exactly when the rows they describe are.

An import ends by evaluating the tiers of the members it touched
(``evaluate_and_record``). The tier fields that this changes are stored in
the member's ImportedMember row, so a rollback can put the tiers back.
Evaluation alone cannot: under the publish policy "new activity", and for
tiers with reviews, it keeps a promotion after the rows that earned it are
deleted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from members.audit import record_event
from members.importing.lookups import CHUNK_SIZE, chunked
from members.importing.report import ImportReport, Status
from members.models import (
    Activity,
    AuditAction,
    ChannelIdentity,
    ImportBatch,
    ImportedMember,
    ImportIssue,
    ImportKind,
    Member,
    MemberMerge,
)
from tiers.evaluation import evaluate
from tiers.ladder import Ladder, LadderError
from tiers.models import TierChange, TierOverride
from tiers.openings import TIER_FIELDS, TierValues, read_tier_values, restore_tiers

logger = logging.getLogger(__name__)

# Maximum length of a cell value stored with an issue. The value helps staff
# find the cell, so a cut-off tail loses nothing they need.
ISSUE_VALUE_MAX_LENGTH = 500
ISSUE_COLUMN_MAX_LENGTH = ImportIssue._meta.get_field("column").max_length or 64
BATCH_SIZE = 1000
# Member ids listed in a rollback summary for staff to look at.
LISTED_MEMBERS = 50
# Line of an ImportedMember row written only for a tier change: the change
# comes from the file's rows together, not from one line.
WHOLE_FILE_LINE = 0
FINISHED_STATUSES = (
    ImportBatch.Status.CHECKED,
    ImportBatch.Status.APPLIED,
    ImportBatch.Status.REFUSED,
    ImportBatch.Status.FAILED,
)


class RollbackError(Exception):
    """Raised when a batch cannot be rolled back, in which case nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def start_batch(
    kind: str,
    *,
    file_name: str,
    data_or_size: bytes | int,
    user: Any,
    channel: Any = None,
    options: dict[str, Any] | None = None,
    sha256: str = "",
) -> ImportBatch:
    """Create and return a RUNNING batch for a file about to be imported.

    ``data_or_size`` is the file's content, whose SHA-256 and size are
    stored. A caller that streams the file passes only its size, and may
    pass the ``sha256`` it computed while reading. Call this outside the
    import's transaction, so the batch survives a rollback.
    """
    if isinstance(data_or_size, bytes):
        size = len(data_or_size)
        sha256 = hashlib.sha256(data_or_size).hexdigest()
    else:
        size = data_or_size
    batch = ImportBatch.objects.create(
        kind=ImportKind(kind),
        status=ImportBatch.Status.RUNNING,
        file_name=file_name[: ImportBatch._meta.get_field("file_name").max_length],
        file_sha256=sha256,
        file_size=size,
        channel=channel,
        options=options or {},
        created_by_id=getattr(user, "pk", None),
        started_at=timezone.now(),
    )
    logger.info(
        "import batch started batch=%d kind=%s file=%s size=%d user_id=%s",
        batch.pk, kind, batch.file_name, size, batch.created_by_id,
    )  # fmt: skip
    return batch


def mark_running(batch: ImportBatch) -> None:
    """Set an existing batch RUNNING from zero, e.g. after a checking run.

    The counts and issues a checking run stored are removed, because the
    confirmed run adds its own.
    """
    batch.issues.all().delete()
    fields = {
        "status": ImportBatch.Status.RUNNING,
        "started_at": timezone.now(),
        "finished_at": None,
        "message": "",
        "total_rows": 0,
        "processed_rows": 0,
        "created_count": 0,
        "updated_count": 0,
        "unchanged_count": 0,
        "already_imported_count": 0,
        "duplicate_count": 0,
        "rejected_count": 0,
    }
    ImportBatch.objects.filter(pk=batch.pk).update(**fields)
    for name, value in fields.items():
        setattr(batch, name, value)


def _issue_rows(batch: ImportBatch, report: ImportReport) -> Iterator[ImportIssue]:
    for issue in report.rejections:
        yield _issue_row(batch, issue.line, issue.column, issue.value, issue.reason)
    for skipped in report.skipped:
        yield _issue_row(
            batch,
            skipped.line,
            skipped.column,
            skipped.value,
            skipped.reason,
            str(skipped.status),
        )


def _issue_row(
    batch: ImportBatch,
    line: int,
    column: str,
    value: str,
    reason: str,
    status: str = str(Status.REJECTED),
) -> ImportIssue:
    return ImportIssue(
        batch=batch,
        line=line,
        column=column[:ISSUE_COLUMN_MAX_LENGTH],
        value=value[:ISSUE_VALUE_MAX_LENGTH],
        reason=reason,
        status=status,
    )


def add_chunk(batch: ImportBatch, report: ImportReport) -> None:
    """Store a chunk's issues and add its counts to the batch's counters.

    ``report`` describes one chunk only: pass a new report for each chunk.
    ``total_rows`` grows by the report's ``total_rows`` and
    ``processed_rows`` by the number of lines it has an outcome for. The
    counters are added with F() expressions, so no count is read back.
    Costs one UPDATE and one INSERT per 1,000 issues.
    """
    if report.recorded:
        raise ValueError(
            f"This report was already added to batch {report.batch_id}. Pass a "
            "new report for each chunk."
        )
    ImportIssue.objects.bulk_create(_issue_rows(batch, report), batch_size=BATCH_SIZE)
    ImportBatch.objects.filter(pk=batch.pk).update(
        total_rows=F("total_rows") + report.total_rows,
        processed_rows=F("processed_rows") + sum(report.counts.values()),
        created_count=F("created_count") + report.created,
        updated_count=F("updated_count") + report.updated,
        unchanged_count=F("unchanged_count") + report.unchanged,
        already_imported_count=F("already_imported_count") + report.already_imported,
        duplicate_count=F("duplicate_count") + report.duplicates,
        rejected_count=F("rejected_count") + report.rejected,
    )
    report.recorded = True
    report.batch_id = batch.pk


def finish_batch(batch: ImportBatch, status: str, message: str = "") -> None:
    """Set the batch's final status, message and finish time.

    Only the status fields are written: the counters on ``batch`` may be
    older than those in the database (``refresh_from_db`` reads them).
    """
    status = ImportBatch.Status(status)
    if status not in FINISHED_STATUSES:
        raise ValueError(
            f"Invalid final status {status!r} for a batch. Use one of "
            f"{', '.join(FINISHED_STATUSES)}."
        )
    finished_at = timezone.now()
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=status, message=message, finished_at=finished_at
    )
    batch.status = status
    batch.message = message
    batch.finished_at = finished_at
    logger.info("import batch finished batch=%d status=%s", batch.pk, status)
    if status == ImportBatch.Status.APPLIED:
        _audit_import(batch)


def _touched_members(batch: ImportBatch) -> int:
    """Count the members a batch created, changed or added activities to."""
    from_provenance = ImportedMember.objects.filter(batch=batch).values("member_id")
    from_activities = Activity.objects.filter(import_batch=batch).values("member_id")
    return Member.objects.filter(
        Q(pk__in=from_provenance) | Q(pk__in=from_activities)
    ).count()


def _audit_import(batch: ImportBatch) -> None:
    """Record one IMPORT audit row for an applied batch, with its counts.

    Called inside the import's transaction, so a failed import leaves no
    audit row. The counters are read again because ``batch`` may contain
    older values.
    """
    counts = ImportBatch.objects.filter(pk=batch.pk).values(
        "total_rows", "created_count", "updated_count", "rejected_count"
    )[0]
    user = None
    if batch.created_by_id is not None:
        user = get_user_model().objects.filter(pk=batch.created_by_id).first()
    record_event(
        user,
        AuditAction.IMPORT,
        count=_touched_members(batch),
        detail={"batch": batch.pk, "kind": batch.kind, **counts},
    )


def issue_rows(batch: ImportBatch) -> Iterator[tuple[int, str, str, str, str]]:
    """Yield (line, status, column, value, reason) of the batch's issues by line.

    The rows are read from the database in chunks, not all at once.
    """
    queryset = ImportIssue.objects.filter(batch=batch).order_by("line", "pk")
    rows = queryset.values_list("line", "status", "column", "value", "reason")
    yield from rows.iterator(chunk_size=2000)


# Tier changes of an import


def _merged_tier_previous(
    earlier: Mapping[str, Any], before: TierValues, after: TierValues
) -> dict[str, Any]:
    """Return ``earlier`` with the tier fields set to [value before, ``after``].

    A tier field the row already records, e.g. from an opening tier placed
    earlier in the same import, keeps its first "before" value, so the
    rollback goes back to the state before the whole import.
    """
    merged = dict(earlier)
    unchanged = True
    for index, name in enumerate(TIER_FIELDS):
        pair = earlier.get(name)
        first = pair[0] if pair else before[index]
        merged[name] = [first, after[index]]
        unchanged = unchanged and first == after[index]
    if unchanged:
        for name in TIER_FIELDS:
            del merged[name]
    return merged


def record_tier_changes(
    batch: ImportBatch,
    before: Mapping[int, TierValues],
    after: Mapping[int, TierValues],
) -> int:
    """Store in the batch's ImportedMember rows the tier fields that changed.

    ``before`` and ``after`` are ``read_tier_values`` of the same members
    around an evaluation. Each changed member's row gets all four tier
    fields as [value before, value after]: an existing row of the batch
    keeps its other values, and a member without one gets a new row with
    ``created=False``. Members the batch created are skipped, because a
    rollback deletes them or keeps them as they are. Returns the number of
    members whose tier fields changed. Costs one SELECT, one UPDATE and one
    INSERT per chunk of changed members.
    """
    changed = sorted(pk for pk, values in after.items() if before.get(pk) != values)
    for chunk in chunked(changed):
        rows = ImportedMember.objects.filter(batch=batch, member_id__in=list(chunk))
        existing = {row.member_id: row for row in rows}
        new_rows: list[ImportedMember] = []
        updated_rows: list[ImportedMember] = []
        for member_id in chunk:
            row = existing.get(member_id)
            if row is not None and row.created:
                continue
            earlier = row.previous if row is not None else {}
            previous = _merged_tier_previous(
                earlier, before[member_id], after[member_id]
            )
            if row is None:
                new_rows.append(
                    ImportedMember(
                        batch=batch,
                        member_id=member_id,
                        line=WHOLE_FILE_LINE,
                        created=False,
                        previous=previous,
                    )
                )
            elif previous != earlier:
                row.previous = previous
                updated_rows.append(row)
        ImportedMember.objects.bulk_create(new_rows, batch_size=BATCH_SIZE)
        ImportedMember.objects.bulk_update(
            updated_rows, ["previous"], batch_size=BATCH_SIZE
        )
    return len(changed)


def evaluate_and_record(
    batch: ImportBatch | None,
    member_ids: Sequence[int],
    *,
    ladder: Ladder,
    as_of: dt.datetime,
) -> int:
    """Evaluate the members' tiers and record what changed in ``batch``.

    The tier fields are read before and after each chunk's evaluation and
    the changes stored by ``record_tier_changes``; a dry run passes None
    and records nothing. Returns the number of members whose tier fields
    changed, 0 without a batch. The query count is fixed per chunk of
    ``settings.CRM_EVALUATION_CHUNK_SIZE`` members.
    """
    chunk_size = settings.CRM_EVALUATION_CHUNK_SIZE
    changed = 0
    for chunk in chunked(sorted(member_ids), chunk_size):
        before = read_tier_values(chunk) if batch is not None else {}
        evaluate(chunk, as_of=as_of, ladder=ladder, chunk_size=chunk_size)
        if batch is not None:
            changed += record_tier_changes(batch, before, read_tier_values(chunk))
    return changed


# Rollback


def _json_value(value: object) -> object:
    """Return a value as a JSONField stores it, so stored and live values compare."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _created_members(batch: ImportBatch) -> QuerySet[ImportedMember]:
    return ImportedMember.objects.filter(batch=batch, created=True)


def _kept_members(batch: ImportBatch) -> QuerySet[Member]:
    """Return the members the batch created that a rollback must keep.

    A member is kept when something other than this batch refers to it:
    activity, benefit grants, tier history other than its first evaluation,
    overrides, merges, or channel identities that this batch did not create.
    """
    from benefits.models import Grant

    member = OuterRef("pk")
    created = _created_members(batch).values("member_id")
    initial = TierChange.Reason.INITIAL
    other_batches = ChannelIdentity.objects.exclude(import_batch=batch)
    referred = (
        Exists(Activity.objects.filter(member=member))
        | Exists(Grant.objects.filter(member=member))
        | Exists(TierChange.objects.filter(member=member).exclude(reason=initial))
        | Exists(TierOverride.objects.filter(member=member))
        | Exists(MemberMerge.objects.filter(Q(source=member) | Q(target=member)))
        | Exists(Member.objects.filter(merged_into=member))
        | Exists(other_batches.filter(member=member))
    )
    return Member.objects.filter(pk__in=created).filter(referred)


def _linked_identities(batch: ImportBatch) -> QuerySet[ChannelIdentity]:
    """Return the identities the batch added to members that existed before it."""
    created = _created_members(batch).values("member_id")
    return ChannelIdentity.objects.filter(import_batch=batch).exclude(
        member_id__in=created
    )


def _member_value(name: str, stored: object) -> object:
    """Turn a value stored in ImportedMember.previous back into the field's type."""
    field = Member._meta.get_field(name)
    if not isinstance(field, models.Field):
        raise ValueError(f"Member has no column {name!r} to restore.")
    return field.to_python(stored)


def _restore_chunk(rows: list[ImportedMember], summary: dict[str, Any]) -> set[int]:
    """Put back the values the batch replaced on one chunk of members.

    A value is put back only where the member still has the value the batch
    set. A value changed since then is a conflict and stays as it is. The
    tier fields are left to ``_restore_tiers``.
    """
    members = Member.objects.in_bulk([row.member_id for row in rows])
    changed: list[Member] = []
    fields: set[str] = set()
    for row in rows:
        member = members[row.member_id]
        restored = False
        for name, (old, new) in row.previous.items():
            if name in TIER_FIELDS:
                continue
            current = getattr(member, name)
            if _json_value(current) != new:
                summary["conflicts"] += 1
                if len(summary["conflicted_members"]) < LISTED_MEMBERS:
                    summary["conflicted_members"].append(member.pk)
                continue
            setattr(member, name, _member_value(name, old))
            fields.add(name)
            restored = True
        if restored:
            changed.append(member)
    if changed:
        now = timezone.now()
        for member in changed:
            member.updated_at = now
        Member.objects.bulk_update(
            changed, sorted(fields | {"updated_at"}), batch_size=BATCH_SIZE
        )
    summary["members_restored"] += len(changed)
    return {member.pk for member in changed}


def _tier_rows(batch: ImportBatch) -> QuerySet[ImportedMember]:
    """Return the batch's rows that record tier fields of existing members."""
    return ImportedMember.objects.filter(
        batch=batch, created=False, previous__has_key="tier"
    )


def _restore_tiers(
    batch: ImportBatch, summary: dict[str, Any], *, opening: bool
) -> set[int]:
    """Put back the tier fields the batch changed; return the members moved.

    Members whose tier placement changed since the import are counted in
    the summary's conflicts and keep their tier. Runs chunk by chunk, so
    memory does not grow with the batch.
    """
    now = timezone.now()
    try:
        ladder: Ladder | None = Ladder.load(as_of=now)
    except LadderError:
        ladder = None
    summary.setdefault("conflicts", 0)
    summary.setdefault("conflicted_members", [])
    summary["tiers_restored"] = 0
    moved: set[int] = set()
    rows = _tier_rows(batch).order_by("pk").iterator(chunk_size=CHUNK_SIZE)
    for chunk in _batched(rows, CHUNK_SIZE):
        result = restore_tiers(
            {row.member_id: row.previous for row in chunk},
            ladder,
            batch_id=batch.pk,
            now=now,
            opening=opening,
        )
        summary["tiers_restored"] += result.restored
        summary["conflicts"] += result.conflicts
        listed = summary["conflicted_members"]
        listed.extend(result.conflicted_members[: LISTED_MEMBERS - len(listed)])
        moved |= result.moved_members
    return moved


def _rollback_members(batch: ImportBatch, summary: dict[str, Any]) -> set[int]:
    """Undo a member batch and return the ids of the remaining members it touched."""
    affected: set[int] = set()
    linked = _linked_identities(batch)
    affected.update(linked.values_list("member_id", flat=True))
    summary["identities_deleted"] = linked.delete()[0]

    summary.update(conflicts=0, conflicted_members=[], members_restored=0)
    updated = ImportedMember.objects.filter(batch=batch, created=False).exclude(
        previous={}
    )
    rows = updated.order_by("pk").iterator(chunk_size=CHUNK_SIZE)
    for chunk in _batched(rows, CHUNK_SIZE):
        affected |= _restore_chunk(chunk, summary)
    affected |= set(_tier_rows(batch).values_list("member_id", flat=True))

    # Kept members stay exactly as they are, so they need no evaluation.
    kept = _kept_members(batch).order_by("pk")
    summary["members_kept"] = kept.count()
    summary["kept_members"] = list(kept.values_list("pk", flat=True)[:LISTED_MEMBERS])
    created = _created_members(batch).values("member_id")
    doomed = Member.objects.filter(pk__in=created).exclude(pk__in=kept.values("pk"))
    deleted = doomed.delete()[1]
    summary["members_deleted"] = deleted.get(Member._meta.label, 0)
    return affected


def _batched(
    rows: Iterable[ImportedMember], size: int
) -> Iterator[list[ImportedMember]]:
    chunk: list[ImportedMember] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rollback_activities(batch: ImportBatch, summary: dict[str, Any]) -> set[int]:
    """Delete the batch's activities and return the ids of their members.

    An opening balance batch's activities are its opening balances, and
    its members also include those whose line only set a tier.
    """
    activities = Activity.objects.filter(import_batch=batch)
    member_ids = set(
        activities.order_by().values_list("member_id", flat=True).distinct()
    )
    if batch.kind == ImportKind.OPENING_BALANCES:
        imported = ImportedMember.objects.filter(batch=batch)
        member_ids.update(imported.values_list("member_id", flat=True))
    summary["activities_deleted"] = activities.delete()[0]
    return member_ids


def _evaluate(
    batch: ImportBatch, member_ids: set[int], moved: set[int], summary: dict[str, Any]
) -> None:
    """Evaluate the members' tiers after a rollback and count the tier changes.

    ``tiers_changed`` counts each member once whose tier the rollback
    changed, by a restore (``moved``) or by this evaluation.
    """
    summary["tiers_changed"] = len(moved)
    summary["tiers_evaluated"] = False
    if not member_ids:
        return
    try:
        _, changes = evaluate(sorted(member_ids))
    except LadderError as error:
        logger.warning(
            "import rollback skipped tier evaluation batch=%d members=%d error=%s",
            batch.pk, len(member_ids), error,
        )  # fmt: skip
        return
    summary["tiers_evaluated"] = True
    summary["tiers_changed"] = len(moved | {change.member_id for change in changes})


def _check_can_roll_back(batch: ImportBatch) -> None:
    if batch.status == ImportBatch.Status.ROLLED_BACK:
        when = ""
        if batch.rolled_back_at is not None:
            when = f" at {timezone.localtime(batch.rolled_back_at):%Y-%m-%d %H:%M}"
        raise RollbackError(
            f"Import #{batch.pk} was already rolled back{when}, so nothing was changed."
        )
    if batch.status in (ImportBatch.Status.QUEUED, ImportBatch.Status.RUNNING):
        raise RollbackError(
            f"Import #{batch.pk} is still running, so it was not rolled back. "
            "Wait until it has finished, then roll it back."
        )
    if batch.status != ImportBatch.Status.APPLIED:
        raise RollbackError(
            f"Import #{batch.pk} has status {batch.get_status_display()!r}, so "
            "nothing was changed: only a finished import can be rolled back."
        )


def rollback_batch(batch: ImportBatch, user: Any) -> dict[str, Any]:
    """Undo an applied import in one transaction; return the rollback summary.

    Activity batches lose their activities. Member batches lose the
    identities they added to existing members and the members they created,
    except members that something else refers to since (see
    ``_kept_members``), and the values they replaced are put back unless
    they were changed again since. Opening balance batches lose their
    opening balances. Every kind then puts back the tier fields the import
    changed, where the member still has the tier placement the import left
    (``_restore_tiers``), and evaluates the tiers of the members concerned
    again. Opening tiers are undone with history rows of reason OPENING.

    Raises RollbackError, changing nothing, unless the batch is APPLIED,
    e.g. when it was already rolled back.
    """
    user_id = getattr(user, "pk", None)
    with transaction.atomic():
        locked = ImportBatch.objects.select_for_update().get(pk=batch.pk)
        try:
            _check_can_roll_back(locked)
        except RollbackError:
            logger.warning(
                "import rollback rejected batch=%d status=%s user_id=%s",
                locked.pk, locked.status, user_id,
            )  # fmt: skip
            raise
        logger.info(
            "import rollback started batch=%d kind=%s user_id=%s",
            locked.pk, locked.kind, user_id,
        )  # fmt: skip
        summary: dict[str, Any] = {}
        if locked.kind == ImportKind.MEMBERS:
            member_ids = _rollback_members(locked, summary)
        else:
            member_ids = _rollback_activities(locked, summary)
        opening = locked.kind == ImportKind.OPENING_BALANCES
        moved = _restore_tiers(locked, summary, opening=opening)
        _evaluate(locked, member_ids, moved, summary)
        locked.status = ImportBatch.Status.ROLLED_BACK
        locked.rolled_back_at = timezone.now()
        locked.rolled_back_by_id = user_id
        locked.rollback_summary = summary
        locked.save(
            update_fields=[
                "status",
                "rolled_back_at",
                "rolled_back_by",
                "rollback_summary",
            ]
        )
        record_event(
            user,
            AuditAction.ROLLBACK,
            count=len(member_ids),
            detail={
                "batch": locked.pk,
                "kind": locked.kind,
                **{k: v for k, v in summary.items() if isinstance(v, int | bool)},
            },
        )
    counts = {k: v for k, v in summary.items() if isinstance(v, int | bool)}
    logger.info(
        "import rollback finished batch=%d %s",
        locked.pk,
        " ".join(f"{key}={value}" for key, value in sorted(counts.items())),
    )
    for name in ("status", "rolled_back_at", "rolled_back_by_id", "rollback_summary"):
        setattr(batch, name, getattr(locked, name))
    return summary


def describe_rollback(batch: ImportBatch) -> dict[str, int]:
    """Count what ``rollback_batch`` would remove or restore now, without writing.

    The counts are for the confirmation page. The rollback itself counts
    again inside its transaction.
    """
    tiers = _tier_rows(batch).count()
    if batch.kind == ImportKind.ACTIVITIES:
        activities = Activity.objects.filter(import_batch=batch)
        return {
            "activities": activities.count(),
            "members": activities.order_by().values("member_id").distinct().count(),
            "tiers": tiers,
        }
    if batch.kind == ImportKind.OPENING_BALANCES:
        return {
            "activities": Activity.objects.filter(import_batch=batch).count(),
            "members": ImportedMember.objects.filter(batch=batch).count(),
            "tiers": tiers,
        }
    created = _created_members(batch).count()
    kept = _kept_members(batch).count()
    return {
        "members_created": created,
        "members_to_delete": created - kept,
        "members_to_keep": kept,
        "members_to_restore": ImportedMember.objects.filter(batch=batch, created=False)
        .exclude(previous={})
        .count(),
        "identities": _linked_identities(batch).count(),
        "tiers": tiers,
    }
