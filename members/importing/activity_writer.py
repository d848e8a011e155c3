"""Saving cleaned activity rows: match members, skip known references, insert.

An activity is identified by (channel, reference), so importing a file
again changes nothing. The member is found by ChannelIdentity in the row's
channel, else by an identity with that external_id in any channel when
exactly one member has it. Activity rows never create members.
"""

from __future__ import annotations

from collections import defaultdict

from django.utils import timezone

from members.importing.cleaning import ActivityRecord, RowIssue
from members.importing.lookups import (
    ChannelDirectory,
    channel_key,
    chunked,
    identities_for,
)
from members.importing.report import ImportReport, Status
from members.models import Activity, ImportBatch

BATCH_SIZE = 1000


def _display(record: ActivityRecord) -> dict[str, str]:
    return {
        "external_id": record.external_id,
        "occurred_at": timezone.localtime(record.occurred_at).isoformat(sep=" "),
        "amount": str(record.amount),
        "channel": record.channel,
        "kind": record.kind.code,
        "reference": record.reference,
        "quantity": str(record.quantity),
    }


def _known_references(
    records: list[ActivityRecord], channels: ChannelDirectory
) -> dict[tuple[int, str], tuple[int | None, int | None]]:
    """Return {(channel id, reference): (import batch id, line)} of saved records."""
    channel_ids = {
        c.pk for c in (channels.get(r.channel) for r in records) if c is not None
    }
    if not channel_ids:
        return {}
    known: dict[tuple[int, str], tuple[int | None, int | None]] = {}
    references = sorted({record.reference for record in records})
    for chunk in chunked(references):
        rows = Activity.objects.filter(
            channel_id__in=channel_ids, reference__in=chunk
        ).values_list("channel_id", "reference", "import_batch_id", "import_line")
        for channel_id, reference, batch_id, line in rows:
            known[(channel_id, reference)] = (batch_id, line)
    return known


def _duplicate_issue(record: ActivityRecord, first_line: int | None) -> RowIssue:
    if first_line is None:
        reason = "duplicate of an earlier line (same channel and reference)"
    else:
        reason = f"duplicate of line {first_line} (same channel and reference)"
    return RowIssue(record.line, "reference", record.reference, reason)


def _new_records(
    records: list[ActivityRecord],
    report: ImportReport,
    channels: ChannelDirectory,
    batch: ImportBatch | None,
) -> list[ActivityRecord]:
    """Drop records already in the ledger, then repeats within the file.

    A reference that an earlier chunk of the same batch saved is a repeat
    within the file, so it is reported with that chunk's line.
    """
    known = _known_references(records, channels)
    batch_id = batch.pk if batch is not None else None
    first_lines: dict[tuple[str, str], int] = {}
    new = []
    for record in records:
        channel = channels.get(record.channel)
        saved = known.get((channel.pk, record.reference)) if channel else None
        if saved is not None and batch_id is not None and saved[0] == batch_id:
            report.skip(_duplicate_issue(record, saved[1]), Status.DUPLICATE)
            continue
        if saved is not None:
            issue = RowIssue(
                record.line, "reference", record.reference, "already imported"
            )
            report.skip(issue, Status.ALREADY_IMPORTED)
            continue
        key = (channel_key(record.channel), record.reference)
        if key in first_lines:
            report.skip(_duplicate_issue(record, first_lines[key]), Status.DUPLICATE)
            continue
        first_lines[key] = record.line
        new.append(record)
    return new


class _MemberMatcher:
    """Member look-up for rows, from identities loaded once for the whole file."""

    def __init__(
        self, records: list[ActivityRecord], channels: ChannelDirectory
    ) -> None:
        self.channels = channels
        self.by_channel: dict[tuple[int, str], int] = {}
        self.by_id: dict[str, set[int]] = defaultdict(set)
        for channel_id, external_id, member_id in identities_for(
            r.external_id for r in records
        ):
            self.by_channel[(channel_id, external_id)] = member_id
            self.by_id[external_id].add(member_id)

    def match(self, record: ActivityRecord) -> int | RowIssue:
        """Return the member id, or the issue that rejects the row."""
        channel = self.channels.get(record.channel)
        if channel is not None:
            member_id = self.by_channel.get((channel.pk, record.external_id))
            if member_id is not None:
                return member_id
        candidates = self.by_id.get(record.external_id, set())
        if len(candidates) == 1:
            return next(iter(candidates))
        if candidates:
            reason = (
                f"matches {len(candidates)} different members in other channels and "
                f"none in channel {record.channel}; add the member's id in this "
                "channel first"
            )
        else:
            reason = "is not a known member in any channel; import the member first"
        return RowIssue(record.line, "external_id", record.external_id, reason)


def save_activities(
    records: list[ActivityRecord],
    report: ImportReport,
    batch: ImportBatch | None = None,
) -> None:
    """Insert the activities of ``records`` that are not in the ledger yet.

    Each activity records ``batch`` and its line in the file, so the batch
    can be rolled back. A caller may pass the rows of one file in chunks,
    one call per chunk with the same batch.

    Costs a fixed number of queries per chunk of rows: channels, known
    references, identities, then bulk inserts.
    """
    channels = ChannelDirectory()
    records = _new_records(records, report, channels, batch)
    matcher = _MemberMatcher(records, channels)
    matched: list[tuple[ActivityRecord, int]] = []
    for record in records:
        result = matcher.match(record)
        if isinstance(result, RowIssue):
            report.reject([result])
        else:
            matched.append((record, result))
    report.channels_created.extend(
        channels.create_missing(r.channel for r, _ in matched)
    )
    activities = []
    for record, member_id in matched:
        activities.append(
            Activity(
                member_id=member_id,
                channel=channels.get(record.channel),
                kind=record.kind,
                occurred_at=record.occurred_at,
                amount=record.amount,
                quantity=record.quantity,
                reference=record.reference,
                source=Activity.Source.IMPORT,
                import_batch=batch,
                import_line=record.line,
            )
        )
        report.add_line(record.line, Status.CREATED, _display(record))
        report.member_ids.add(member_id)
    Activity.objects.bulk_create(activities, batch_size=BATCH_SIZE)
