"""Saving cleaned member rows: create or update members by channel identity.

With an import batch, every member the batch creates or changes gets an
ImportedMember row with the values the batch replaced, and every identity
it creates points to the batch, so the batch can be rolled back.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from django.utils import timezone

from members.identity import ContactRecord, match_members
from members.importing.cleaning import MemberRecord, RowIssue
from members.importing.lookups import (
    ChannelDirectory,
    channel_key,
    chunked,
    identities_for,
    identities_with_batch_lines,
)
from members.importing.report import ImportReport, Status
from members.models import ChannelIdentity, ImportBatch, ImportedMember, Member

BATCH_SIZE = 1000
# The member fields an import can set, in display order.
MEMBER_FIELDS = ("name", "phone", "phone_e164", "email", "joined_on")
# {(channel id, external id): (member id, line of this batch or None)}
IdentityIndex = dict[tuple[int, str], tuple[int, int | None]]


def _display(record: MemberRecord) -> dict[str, str]:
    values = {"external_id": record.external_id, "channel": record.channel}
    for name in MEMBER_FIELDS:
        if name in record.fields:
            values[name] = str(record.fields[name])
    return values


def _duplicate_issue(record: MemberRecord, first_line: int) -> RowIssue:
    return RowIssue(
        record.line,
        "external_id",
        record.external_id,
        f"duplicate of line {first_line} (same channel and external_id)",
    )


def _drop_duplicates(
    records: list[MemberRecord], report: ImportReport
) -> list[MemberRecord]:
    first_lines: dict[tuple[str, str], int] = {}
    unique = []
    for record in records:
        key = (channel_key(record.channel), record.external_id)
        if key in first_lines:
            report.skip(_duplicate_issue(record, first_lines[key]), Status.DUPLICATE)
            continue
        first_lines[key] = record.line
        unique.append(record)
    return unique


def _drop_batch_duplicates(
    records: list[MemberRecord],
    identities: IdentityIndex,
    channels: ChannelDirectory,
    report: ImportReport,
) -> list[MemberRecord]:
    """Skip records whose identity an earlier chunk of the same batch created."""
    unique = []
    for record in records:
        channel = channels.get(record.channel)
        found = identities.get((channel.pk, record.external_id)) if channel else None
        if found is not None and found[1] is not None:
            report.skip(_duplicate_issue(record, found[1]), Status.DUPLICATE)
            continue
        unique.append(record)
    return unique


def _existing_members(
    records: list[MemberRecord], channels: ChannelDirectory
) -> dict[int, Member]:
    """Return the members the records identify, keyed by record line.

    A record whose id is new in its channel identifies the one live member
    with its phone or e-mail, where the channel allows that match (see
    members.identity.match_members).
    """
    member_ids = {
        (channel_id, external_id): member_id
        for channel_id, external_id, member_id in identities_for(
            r.external_id for r in records
        )
    }
    by_line = {}
    unknown: dict[int, list[MemberRecord]] = defaultdict(list)
    for record in records:
        channel = channels.get(record.channel)
        member_id = (
            member_ids.get((channel.pk, record.external_id)) if channel else None
        )
        if member_id is not None:
            by_line[record.line] = member_id
        elif channel is not None and (channel.match_phone or channel.match_email):
            unknown[channel.pk].append(record)
    for channel_records in unknown.values():
        channel = channels.get(channel_records[0].channel)
        assert channel is not None
        contacts = [
            ContactRecord(
                r.external_id,
                str(r.fields.get("phone_e164", "")),
                str(r.fields.get("email", "")),
            )
            for r in channel_records
        ]
        matches = match_members(channel, contacts)
        for record in channel_records:
            if record.external_id in matches:
                by_line[record.line] = matches[record.external_id]
    members: dict[int, Member] = {}
    for chunk in chunked(sorted(set(by_line.values()))):
        members.update(Member.objects.in_bulk(chunk))
    return {line: members[member_id] for line, member_id in by_line.items()}


def _update(member: Member, fields: dict[str, object]) -> dict[str, list[object]]:
    """Set the given fields on a member and return {name: [old, new]} of changes."""
    changes = {}
    for name, value in fields.items():
        old = getattr(member, name)
        if old != value:
            setattr(member, name, value)
            changes[name] = [old, value]
    return changes


class _Provenance:
    """The ImportedMember rows of one chunk, merged with earlier chunks' rows.

    A member keeps one row per batch. When several lines change it, the row
    keeps the first line and the value from before the batch, and takes the
    newest value.
    """

    def __init__(self, batch: ImportBatch | None) -> None:
        self.batch = batch
        self.rows: dict[int, ImportedMember] = {}

    def add(
        self,
        member_id: int,
        line: int,
        changes: dict[str, list[object]],
        created: bool = False,
    ) -> None:
        if self.batch is None:
            return
        row = self.rows.get(member_id)
        if row is None:
            self.rows[member_id] = ImportedMember(
                batch=self.batch,
                member_id=member_id,
                line=line,
                created=created,
                previous=dict(changes),
            )
            return
        _merge_changes(row.previous, changes)

    def save(self) -> None:
        """Insert the new rows and merge the changes into earlier chunks' rows."""
        if self.batch is None or not self.rows:
            return
        updated_ids = [pk for pk, row in self.rows.items() if not row.created]
        earlier: dict[int, ImportedMember] = {}
        for chunk in chunked(updated_ids):
            earlier.update(
                (row.member_id, row)
                for row in ImportedMember.objects.filter(
                    batch=self.batch, member_id__in=chunk
                )
            )
        for member_id, row in earlier.items():
            _merge_changes(row.previous, self.rows.pop(member_id).previous)
        ImportedMember.objects.bulk_create(self.rows.values(), batch_size=BATCH_SIZE)
        ImportedMember.objects.bulk_update(
            earlier.values(), ["previous"], batch_size=BATCH_SIZE
        )


def _merge_changes(
    previous: dict[str, list[object]], changes: dict[str, list[object]]
) -> None:
    """Add later changes to ``previous``, keeping each field's first old value."""
    for name, (old, new) in changes.items():
        first_old = previous[name][0] if name in previous else old
        previous[name] = [first_old, new]


def _create(
    records: list[MemberRecord],
    channels: ChannelDirectory,
    batch: ImportBatch | None,
) -> list[Member]:
    members = [Member(**record.fields) for record in records]
    Member.objects.bulk_create(members, batch_size=BATCH_SIZE)
    if any(member.pk is None for member in members):
        # Databases that cannot return ids from a bulk insert: find them by
        # the random public id each new member got.
        ids: dict[uuid.UUID, int] = {}
        for chunk in chunked([member.public_id for member in members]):
            ids.update(
                Member.objects.filter(public_id__in=chunk).values_list(
                    "public_id", "pk"
                )
            )
        for member in members:
            member.pk = ids[member.public_id]
    identities = [
        ChannelIdentity(
            member=member,
            channel=channels.get(record.channel),
            external_id=record.external_id,
            import_batch=batch,
        )
        for record, member in zip(records, members, strict=True)
    ]
    ChannelIdentity.objects.bulk_create(identities, batch_size=BATCH_SIZE)
    return members


def save_members(
    records: list[MemberRecord],
    report: ImportReport,
    batch: ImportBatch | None = None,
) -> None:
    """Create or update the members that the records identify.

    A member is identified by (channel, external_id) through ChannelIdentity.
    Empty cells leave existing values unchanged. Unknown channels are
    created with kind "other" and listed in the report. A record matched to
    an existing member without that identity adds the identity.

    A caller may pass the rows of one file in chunks, one call per chunk
    with the same ``batch``: a record whose identity an earlier chunk
    created is reported as a duplicate of that line. Costs a fixed number
    of queries per chunk of rows.

    NOTE: a repeat of an identity that existed before the batch is a
    duplicate only within one chunk. In a later chunk it updates the member
    again, so the later line's values win.
    """
    channels = ChannelDirectory()
    records = _drop_duplicates(records, report)
    report.channels_created.extend(channels.create_missing(r.channel for r in records))
    existing = _existing_members(records, channels)
    identities = identities_with_batch_lines(
        (r.external_id for r in records), batch.pk if batch else None
    )
    if batch is not None:
        records = _drop_batch_duplicates(records, identities, channels, report)
    provenance = _Provenance(batch)
    new_records, changed_members, changed_fields = [], [], set()
    new_identities = []
    for record in records:
        member = existing.get(record.line)
        if member is None:
            new_records.append(record)
            continue
        changes = _update(member, record.fields)
        channel = channels.get(record.channel)
        assert channel is not None  # create_missing added every channel
        linked = (channel.pk, record.external_id) not in identities
        if linked:
            new_identities.append(
                ChannelIdentity(
                    member=member,
                    channel=channel,
                    external_id=record.external_id,
                    import_batch=batch,
                )
            )
        report.add_line(
            record.line,
            Status.UPDATED if changes or linked else Status.UNCHANGED,
            _display(record),
        )
        if changes or linked:
            provenance.add(member.pk, record.line, changes)
            report.member_ids.add(member.pk)
        if changes:
            changed_members.append(member)
            changed_fields |= set(changes)
    if changed_members:
        now = timezone.now()
        for member in changed_members:
            member.updated_at = now
        Member.objects.bulk_update(
            changed_members,
            sorted(changed_fields | {"updated_at"}),
            batch_size=BATCH_SIZE,
        )
    ChannelIdentity.objects.bulk_create(new_identities, batch_size=BATCH_SIZE)
    created = _create(new_records, channels, batch)
    for record, member in zip(new_records, created, strict=True):
        report.add_line(record.line, Status.CREATED, _display(record))
        report.member_ids.add(member.pk)
        provenance.add(member.pk, record.line, {}, created=True)
    provenance.save()
