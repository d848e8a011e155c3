"""Saving cleaned member rows: create or update members by channel identity.

A row whose channel id is known updates its member. A row with a new id
whose phone or e-mail matches one existing member (see members.identity)
links the id to that member. It only fills the member's empty fields, so
another channel's spelling of a name or phone does not replace the
member's own data.

With an import batch, every member the batch creates or changes gets an
ImportedMember row with the values the batch replaced, and every identity
it creates points to the batch, so the batch can be rolled back.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.utils import timezone
from django.utils.translation import gettext as _

from members.identity import EMAIL, PHONE, ContactRecord, email_key, match_contacts
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
from members.rights import drop_erased_records

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class _Found:
    """An existing member that a record identifies.

    ``matched_by`` is empty when the record's own channel id identifies the
    member, and otherwise contains PHONE and/or EMAIL, the contact data
    that linked the new id to the member.
    """

    member: Member
    matched_by: tuple[str, ...] = ()


def _existing_members(
    records: list[MemberRecord], channels: ChannelDirectory
) -> dict[int, _Found]:
    """Return the members the records identify, keyed by record line.

    A record whose id is new in its channel identifies the one live member
    with its phone or e-mail, where the channel allows that match (see
    members.identity.match_contacts).
    """
    member_ids = {
        (channel_id, external_id): member_id
        for channel_id, external_id, member_id in identities_for(
            r.external_id for r in records
        )
    }
    by_line: dict[int, tuple[int, tuple[str, ...]]] = {}
    unknown: dict[int, list[MemberRecord]] = defaultdict(list)
    for record in records:
        channel = channels.get(record.channel)
        member_id = (
            member_ids.get((channel.pk, record.external_id)) if channel else None
        )
        if member_id is not None:
            by_line[record.line] = (member_id, ())
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
        matches = match_contacts(channel, contacts)
        for record in channel_records:
            match = matches.get(record.external_id)
            if match is not None:
                by_line[record.line] = (match.member_id, match.matched_by)
    members: dict[int, Member] = {}
    for chunk in chunked(sorted({found[0] for found in by_line.values()})):
        members.update(Member.objects.in_bulk(chunk))
    return {
        line: _Found(members[member_id], matched_by)
        for line, (member_id, matched_by) in by_line.items()
    }


def _update(member: Member, fields: dict[str, object]) -> dict[str, list[object]]:
    """Set the given fields on a member and return {name: [old, new]} of changes."""
    changes = {}
    for name, value in fields.items():
        old = getattr(member, name)
        if old != value:
            setattr(member, name, value)
            changes[name] = [old, value]
    return changes


def _fill_empty(
    member: Member, fields: dict[str, object]
) -> tuple[dict[str, list[object]], list[str]]:
    """Fill the member's empty fields from a linked record.

    Returns {name: [old, new]} of the changes, and the names of the fields
    where the record differs from a value the member keeps. The phone and
    its E.164 form are filled together. The join date becomes the earlier
    of the two dates.
    """
    filled: dict[str, object] = {}
    kept_fields: list[str] = []
    name = fields.get("name")
    if name:
        if not member.name:
            filled["name"] = name
        elif name != member.name:
            kept_fields.append("name")
    phone = fields.get("phone")
    if phone:
        if not member.phone:
            filled["phone"] = phone
            if "phone_e164" in fields:
                filled["phone_e164"] = fields["phone_e164"]
        elif fields.get("phone_e164", "") != member.phone_e164:
            kept_fields.append("phone")
    email = fields.get("email")
    if isinstance(email, str) and email:
        if not member.email:
            filled["email"] = email
        elif email_key(email) != email_key(member.email):
            kept_fields.append("email")
    joined_on = fields.get("joined_on")
    if isinstance(joined_on, dt.date):
        if member.joined_on is None or joined_on < member.joined_on:
            filled["joined_on"] = joined_on
        elif joined_on != member.joined_on:
            kept_fields.append("joined_on")
    return _update(member, filled), kept_fields


def _link_note(matched_by: tuple[str, ...], kept_fields: list[str]) -> str:
    """Return the text shown with a linked line in the import report."""
    if matched_by == (PHONE,):
        basis = _("phone")
    elif matched_by == (EMAIL,):
        basis = _("e-mail")
    else:
        basis = _("phone and e-mail")
    note = _("linked to an existing member by %(basis)s") % {"basis": basis}
    if kept_fields:
        kept = ", ".join(kept_fields)
        note += "; " + _("kept the member's %(fields)s") % {"fields": kept}
    return note


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

    A member is identified by (channel, external_id) through ChannelIdentity,
    and such a record updates it. Empty cells leave existing values
    unchanged. Unknown channels are created with kind "other" and listed in
    the report. A record with a new id that is matched to an existing
    member by phone or e-mail adds the identity and only fills the member's
    empty fields (see _fill_empty). Its line gets a "match" value that says
    how it was linked and which of the member's values were kept.

    A caller may pass the rows of one file in chunks, one call per chunk
    with the same ``batch``: a record whose identity an earlier chunk
    created is reported as a duplicate of that line. Costs a fixed number
    of queries per chunk of rows.

    NOTE: a repeat of an identity that existed before the batch is a
    duplicate only within one chunk. In a later chunk it updates the member
    again, so the later line's values win.
    """
    # TODO: report linked lines with a status of their own once
    # members.importing.report has one. Until then they count as updated,
    # because they add an identity to the member.
    channels = ChannelDirectory()
    records = drop_erased_records(records, report)
    records = _drop_duplicates(records, report)
    report.channels_created.extend(channels.create_missing(r.channel for r in records))
    existing = _existing_members(records, channels)
    identities = identities_with_batch_lines(
        (r.external_id for r in records), batch.pk if batch else None
    )
    if batch is not None:
        records = _drop_batch_duplicates(records, identities, channels, report)
    provenance = _Provenance(batch)
    new_records: list[MemberRecord] = []
    changed_members: dict[int, Member] = {}
    changed_fields: set[str] = set()
    new_identities = []
    matched_lines = 0
    for record in records:
        found = existing.get(record.line)
        if found is None:
            new_records.append(record)
            continue
        member = found.member
        values = _display(record)
        if found.matched_by:
            changes, kept_fields = _fill_empty(member, record.fields)
            values["match"] = _link_note(found.matched_by, kept_fields)
            matched_lines += 1
        else:
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
            values,
        )
        if changes or linked:
            provenance.add(member.pk, record.line, changes)
            report.member_ids.add(member.pk)
        if changes:
            changed_members[member.pk] = member
            changed_fields |= set(changes)
    if changed_members:
        now = timezone.now()
        for member in changed_members.values():
            member.updated_at = now
        Member.objects.bulk_update(
            list(changed_members.values()),
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
    if matched_lines:
        logger.info(
            "member import linked new ids by phone or e-mail batch_id=%s lines=%d",
            batch.pk if batch else None,
            matched_lines,
        )
