"""Saving cleaned member rows: create or update members by channel identity."""

from __future__ import annotations

import uuid

from django.utils import timezone

from members.importing.cleaning import MemberRecord, RowIssue
from members.importing.lookups import (
    ChannelDirectory,
    channel_key,
    chunked,
    identities_for,
)
from members.importing.report import ImportReport, Status
from members.models import ChannelIdentity, Member

BATCH_SIZE = 1000
# The member fields an import can set, in display order.
MEMBER_FIELDS = ("name", "phone", "phone_e164", "email", "joined_on")


def _display(record: MemberRecord) -> dict[str, str]:
    values = {"external_id": record.external_id, "channel": record.channel}
    for name in MEMBER_FIELDS:
        if name in record.fields:
            values[name] = str(record.fields[name])
    return values


def _drop_duplicates(
    records: list[MemberRecord], report: ImportReport
) -> list[MemberRecord]:
    first_lines: dict[tuple[str, str], int] = {}
    unique = []
    for record in records:
        key = (channel_key(record.channel), record.external_id)
        if key in first_lines:
            issue = RowIssue(
                record.line,
                "external_id",
                record.external_id,
                f"duplicate of line {first_lines[key]} (same channel and external_id)",
            )
            report.skip(issue, Status.DUPLICATE)
            continue
        first_lines[key] = record.line
        unique.append(record)
    return unique


def _existing_members(
    records: list[MemberRecord], channels: ChannelDirectory
) -> dict[int, Member]:
    """Return the members the records identify, keyed by record line."""
    member_ids = {
        (channel_id, external_id): member_id
        for channel_id, external_id, member_id in identities_for(
            r.external_id for r in records
        )
    }
    by_line = {}
    for record in records:
        channel = channels.get(record.channel)
        member_id = (
            member_ids.get((channel.pk, record.external_id)) if channel else None
        )
        if member_id is not None:
            by_line[record.line] = member_id
    members: dict[int, Member] = {}
    for chunk in chunked(sorted(set(by_line.values()))):
        members.update(Member.objects.in_bulk(chunk))
    return {line: members[member_id] for line, member_id in by_line.items()}


def _update(member: Member, fields: dict[str, object]) -> set[str]:
    """Set the given fields on a member; return the names that changed."""
    changed = set()
    for name, value in fields.items():
        if getattr(member, name) != value:
            setattr(member, name, value)
            changed.add(name)
    return changed


def _create(records: list[MemberRecord], channels: ChannelDirectory) -> list[Member]:
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
        )
        for record, member in zip(records, members, strict=True)
    ]
    ChannelIdentity.objects.bulk_create(identities, batch_size=BATCH_SIZE)
    return members


def save_members(records: list[MemberRecord], report: ImportReport) -> None:
    """Create or update the members that the records identify.

    A member is identified by (channel, external_id) through ChannelIdentity.
    Empty cells leave existing values unchanged. Unknown channels are
    created with kind "other" and listed in the report.
    """
    channels = ChannelDirectory()
    records = _drop_duplicates(records, report)
    report.channels_created.extend(channels.create_missing(r.channel for r in records))
    existing = _existing_members(records, channels)
    new_records, changed_members, changed_fields = [], [], set()
    for record in records:
        member = existing.get(record.line)
        if member is None:
            new_records.append(record)
            continue
        changed = _update(member, record.fields)
        report.add_line(
            record.line,
            Status.UPDATED if changed else Status.UNCHANGED,
            _display(record),
        )
        if changed:
            changed_members.append(member)
            changed_fields |= changed
            report.member_ids.add(member.pk)
    if changed_members:
        now = timezone.now()
        for member in changed_members:
            member.updated_at = now
        Member.objects.bulk_update(
            changed_members,
            sorted(changed_fields | {"updated_at"}),
            batch_size=BATCH_SIZE,
        )
    for record, member in zip(new_records, _create(new_records, channels), strict=True):
        report.add_line(record.line, Status.CREATED, _display(record))
        report.member_ids.add(member.pk)
