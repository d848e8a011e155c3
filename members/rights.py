"""Member rights: export one member's data, erase it, and keep erased people out.

``export_member`` renders everything the CRM stores about one member as
JSON or as a zip of CSV files, and records the export in the audit log.

``erase_member`` removes a member's personal data and keeps the member
row, its activities, tier history and benefit grants under a pseudonym, so
that sums and accounting stay correct. Before clearing the data it stores a
keyed hash (an ``ErasureTombstone``) of each channel id, of the E.164 phone
and of the lower-cased e-mail. Imports and channel events look the hashes
up with ``find_erased`` and reject rows that match, so an old file cannot
bring the person back. ``lift_tombstones`` removes the hashes when the
person joins again.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import re
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from benefits.models import Grant
from members.audit import record_event, record_events
from members.identity import email_key
from members.importing.cleaning import RowIssue
from members.importing.lookups import channel_key, chunked
from members.importing.report import ImportReport
from members.importing.text import quote_formula
from members.models import (
    Activity,
    AuditAction,
    ChannelIdentity,
    ErasureTombstone,
    ImportedMember,
    ImportIssue,
    Member,
    OutboxMessage,
)
from members.notifications import render
from members.privacy import mask_text
from tiers.models import TierChange, TierOverride

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser | None
Kind = ErasureTombstone.Kind

# The text that replaces an erased value inside free text, such as an
# override reason that named the member.
ERASED_TEXT = "[erased]"
# Names shorter than this are not searched for inside free text: one
# character (a Chinese surname, an initial) would match unrelated words.
MIN_SCRUBBED_NAME_CHARS = 2
# Channel ids shorter than this, and all-digit ones shorter than
# MIN_SCRUBBED_NUMERIC_ID_DIGITS, are not searched for inside free text and
# JSON, because they equal counts, amounts and dates in tier explanations.
# NOTE: such a short id mentioned in an override reason stays there.
MIN_SCRUBBED_ID_CHARS = 4
MIN_SCRUBBED_NUMERIC_ID_DIGITS = 7
# Member fields that hold personal data, cleared by an erasure.
PERSONAL_FIELDS = ("name", "phone", "phone_e164", "email")
# Columns that are never searched for personal data during an erasure:
# references and keys that a unique constraint or the accounting relies on.
# NOTE: an activity reference that embeds a phone number stays as it is.
KEPT_COLUMNS = frozenset(
    {
        (Activity, "reference"),
        (OutboxMessage, "key"),
        (ChannelIdentity, "external_id"),
    }
)


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


EXPORT_FORMATS = tuple(f.value for f in ExportFormat)


class ErasureError(Exception):
    """Raised when a member cannot be erased or let back, with the reason."""


def erased_reason() -> str:
    """Return the reason shown for an import row or event of an erased person."""
    return _("This person's data was erased on request, so the row was not imported.")


# Tombstones


def channel_id_value(channel_code: str, external_id: str) -> str:
    """Return the value a channel id is hashed as: "channel code:external id".

    The channel code is case-folded, as imports match channel codes.
    """
    return f"{channel_key(channel_code)}:{external_id}"


def _normalise(kind: str, value: str) -> str:
    value = value.strip()
    if kind == Kind.EMAIL:
        return email_key(value)
    return value


def tombstone_digest(kind: str, value: str) -> str:
    """Return the HMAC-SHA256 hex digest of ``value`` under CRM_ERASURE_KEY.

    The kind is part of the hashed text, so a phone and an e-mail that
    happen to be equal give different digests. E-mails are compared
    lower-cased and trimmed, phones as the E.164 text, and channel ids as
    ``channel_id_value`` builds them. Raises ValueError for an empty value.
    """
    normalised = _normalise(kind, value)
    if not normalised:
        raise ValueError(f"Cannot compute a tombstone digest of an empty {kind}.")
    message = f"{Kind(kind).value}\n{normalised}".encode()
    key = settings.CRM_ERASURE_KEY.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _stored_digests(digests: Iterable[str]) -> set[str]:
    """Return the digests that have a tombstone, in one query per 900 digests."""
    found: set[str] = set()
    for chunk in chunked(sorted(set(digests))):
        found.update(
            ErasureTombstone.objects.filter(digest__in=chunk).values_list(
                "digest", flat=True
            )
        )
    return found


def erased_digests(kind: str, values: Iterable[str]) -> set[str]:
    """Return the digests of ``values`` that match a tombstone.

    Empty values are ignored. Costs one query per 900 distinct values.
    """
    digests = {tombstone_digest(kind, v) for v in values if _normalise(kind, v)}
    return _stored_digests(digests)


@dataclass(frozen=True)
class Contact:
    """A channel id with the phone and e-mail sent with it, to check for erasure.

    ``phone_e164`` is the normalised phone. Empty values are not checked.
    """

    channel: str
    external_id: str
    phone_e164: str = ""
    email: str = ""

    def digests(self, kinds: Iterable[str] = tuple(Kind)) -> dict[str, str]:
        """Return {digest: kind} of the values this contact carries, of ``kinds``."""
        values = {
            Kind.CHANNEL_ID: channel_id_value(self.channel, self.external_id),
            Kind.PHONE: self.phone_e164,
            Kind.EMAIL: self.email,
        }
        return {
            tombstone_digest(kind, values[kind]): kind
            for kind in values
            if kind in kinds and _normalise(kind, values[kind])
        }


def find_erased(contacts: Sequence[Contact]) -> dict[int, str]:
    """Return {position in ``contacts``: matched kind} for contacts of erased people.

    A contact matches when its channel id, phone or e-mail has a tombstone.
    The kinds are checked in the order channel id, phone, e-mail, and the
    first match is returned. Costs one query for the kinds in use, then,
    if there are any, one query per 900 distinct digests.
    """
    # Most programs have few or no tombstones, and hashing every row costs
    # more than the import's insert, so only the kinds in use are hashed,
    # and each distinct contact once (an activity file repeats its ids).
    kinds = set(ErasureTombstone.objects.values_list("kind", flat=True).distinct())
    if not kinds:
        return {}
    by_contact: dict[Contact, dict[str, str]] = {}
    per_contact = []
    for contact in contacts:
        if contact not in by_contact:
            by_contact[contact] = contact.digests(kinds)
        per_contact.append(by_contact[contact])
    stored = _stored_digests(d for digests in by_contact.values() for d in digests)
    if not stored:
        return {}
    found: dict[int, str] = {}
    for position, digests in enumerate(per_contact):
        for digest, kind in digests.items():
            if digest in stored:
                found[position] = kind
                break
    return found


class ImportRecord(Protocol):
    """The part of a cleaned member or activity row that identifies the person."""

    line: int
    channel: str
    external_id: str


R = TypeVar("R", bound=ImportRecord)


def drop_erased_records(records: list[R], report: ImportReport) -> list[R]:
    """Reject the records of erased people in ``report`` and return the others.

    A member record is checked by its channel id, phone and e-mail, an
    activity record by its channel id. The rejection names the column that
    matched but not its value, so the import's issue list does not store
    the erased data again. Costs one query when there are no tombstones,
    otherwise one more query per 900 distinct digests.
    """
    contacts = []
    for record in records:
        fields = getattr(record, "fields", {})
        contacts.append(
            Contact(
                record.channel,
                record.external_id,
                str(fields.get("phone_e164", "")),
                str(fields.get("email", "")),
            )
        )
    erased = find_erased(contacts)
    if not erased:
        return records
    columns: dict[str, str] = {
        Kind.CHANNEL_ID: "external_id",
        Kind.PHONE: "phone",
        Kind.EMAIL: "email",
    }
    report.reject(
        [
            RowIssue(records[position].line, columns[kind], "", erased_reason())
            for position, kind in sorted(erased.items())
        ]
    )
    logger.info("import rejected %d rows of erased people", len(erased))
    return [record for position, record in enumerate(records) if position not in erased]


def _tombstones(
    people: Sequence[Member], identities: Sequence[ChannelIdentity]
) -> list[ErasureTombstone]:
    member = people[0]
    rows: dict[str, ErasureTombstone] = {}

    def add(kind: str, value: str) -> None:
        if _normalise(kind, value):
            digest = tombstone_digest(kind, value)
            rows[digest] = ErasureTombstone(digest=digest, kind=kind, member=member)

    for identity in identities:
        add(
            Kind.CHANNEL_ID,
            channel_id_value(identity.channel.code, identity.external_id),
        )
    for person in people:
        add(Kind.PHONE, person.phone_e164)
        add(Kind.EMAIL, person.email)
    return list(rows.values())


# Erasure


@dataclass
class ErasureResult:
    """Counts of the rows an erasure changed. Contains no personal data."""

    member_id: int
    members: int = 1
    tombstones: int = 0
    identities: int = 0
    messages_cancelled: int = 0
    rows_scrubbed: dict[str, int] = field(default_factory=dict)


def _lock_people(member: Member) -> list[Member]:
    """Lock and return the member and every member merged into it, member first.

    Members merged into this one are the same person, and a merge leaves
    their profile fields in place, so they are erased together.
    """
    locked = Member.objects.select_for_update().get(pk=member.pk)
    if locked.erased_at is not None:
        raise ErasureError(
            _("Member #%(id)s was already erased on %(when)s. Nothing was changed.")
            % {
                "id": locked.pk,
                "when": f"{timezone.localtime(locked.erased_at):%Y-%m-%d}",
            }
        )
    if locked.merged_into_id is not None:
        raise ErasureError(
            _(
                "Member #%(id)s was merged into member #%(into)s, which now holds "
                "its channel ids and activities. Erase member #%(into)s instead."
            )
            % {"id": locked.pk, "into": locked.merged_into_id}
        )
    merged = (
        Member.objects.select_for_update().filter(merged_into=locked).order_by("pk")
    )
    return [locked, *merged]


def _secret_values(
    people: Sequence[Member], identities: Sequence[ChannelIdentity]
) -> list[str]:
    """Return the personal values to remove from free text, longest first."""
    values: set[str] = set()
    for person in people:
        values.update(v for v in (person.phone, person.phone_e164, person.email) if v)
        if len(person.name.strip()) >= MIN_SCRUBBED_NAME_CHARS:
            values.add(person.name.strip())
    values.update(
        identity.external_id
        for identity in identities
        if _identifying_id(identity.external_id)
    )
    # Longest first, so that "+8613800138000" goes before "13800138000".
    return sorted(values, key=lambda value: (-len(value), value))


def _member_links() -> list[tuple[type[models.Model], list[str]]]:
    """Return every model with a foreign key to Member, and those key names.

    Historical models of django-simple-history are included, because their
    rows copy the text of the rows they record.
    """
    links = []
    for model in apps.get_models():
        if model is Member:
            continue
        names = [
            f.name
            for f in model._meta.get_fields()
            if isinstance(f, models.ForeignKey | models.OneToOneField)
            and f.related_model is Member
        ]
        if names:
            links.append((model, names))
    return links


def _linked_rows(
    model: type[models.Model], names: list[str], member_ids: list[int]
) -> models.QuerySet[Any]:
    condition = Q()
    for name in names:
        condition |= Q(**{f"{name}__in": member_ids})
    return model._default_manager.filter(condition)


def _identifying_id(external_id: str) -> bool:
    """Return whether a channel id is long enough to search for in free text."""
    if len(external_id) < MIN_SCRUBBED_ID_CHARS:
        return False
    return not (
        external_id.isdigit() and len(external_id) < MIN_SCRUBBED_NUMERIC_ID_DIGITS
    )


def _value_pattern(values: Sequence[str]) -> re.Pattern[str] | None:
    """Return a pattern that finds ``values`` as whole tokens, longest first.

    A value only matches where no ASCII letter or digit touches it, so the
    id "A123" is not found inside "XA1234" and a phone is not found inside
    a longer number. Chinese names still match inside Chinese sentences.
    """
    if not values:
        return None
    alternatives = "|".join(re.escape(value) for value in values)
    return re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])")


def _scrub_text(text: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return text
    return pattern.sub(ERASED_TEXT, text)


def _scrub_json(value: Any, pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, pattern)
    if isinstance(value, list):
        return [_scrub_json(item, pattern) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_json(item, pattern) for key, item in value.items()}
    return value


def _scrub_linked_rows(
    member_ids: list[int], values: Sequence[str], result: ErasureResult
) -> None:
    """Replace the personal values in text and JSON columns of linked rows.

    Each value is replaced only as a whole token (see ``_value_pattern``), so
    amounts, dates and codes that merely contain its characters are kept.
    Text columns are read only for rows that contain a value, JSON columns
    for every linked row, then rewritten in Python with at most one bulk
    UPDATE per model. Columns with choices, unique columns and KEPT_COLUMNS
    are skipped.
    """
    pattern = _value_pattern(values)
    if pattern is None:
        return
    for model, names in _member_links():
        rows = _linked_rows(model, names, member_ids)
        text_names = [
            f.name
            for f in model._meta.concrete_fields
            if isinstance(f, models.TextField)
            and not f.choices
            and not f.unique
            and (model, f.name) not in KEPT_COLUMNS
        ]
        json_names = [
            f.name
            for f in model._meta.concrete_fields
            if isinstance(f, models.JSONField)
        ]
        if not text_names and not json_names:
            continue
        candidates = rows
        if not json_names:
            contains = Q()
            for name in text_names:
                for value in values:
                    contains |= Q(**{f"{name}__contains": value})
            candidates = rows.filter(contains)
        changed = []
        for row in candidates.only("pk", *text_names, *json_names):
            dirty = False
            for name in text_names:
                old = getattr(row, name)
                if old and (new := _scrub_text(old, pattern)) != old:
                    setattr(row, name, new)
                    dirty = True
            for name in json_names:
                old = getattr(row, name)
                new = _scrub_json(old, pattern)
                if new != old:
                    setattr(row, name, new)
                    dirty = True
            if dirty:
                changed.append(row)
        if changed:
            model._default_manager.bulk_update(
                changed, [*text_names, *json_names], batch_size=500
            )
            label = model._meta.label_lower
            result.rows_scrubbed[label] = result.rows_scrubbed.get(label, 0) + len(
                changed
            )


def _clear_import_provenance(member_ids: list[int]) -> int:
    """Blank the personal fields in import batches' "previous values".

    A rollback compares a member's current value with the value the batch
    left, so both sides become empty: the rollback then restores nothing.
    """
    rows = list(ImportedMember.objects.filter(member_id__in=member_ids))
    changed = []
    for row in rows:
        previous = dict(row.previous or {})
        touched = [name for name in PERSONAL_FIELDS if name in previous]
        for name in touched:
            previous[name] = ["", ""]
        if touched:
            row.previous = previous
            changed.append(row)
    ImportedMember.objects.bulk_update(changed, ["previous"], batch_size=500)
    return len(changed)


def _pseudonymise_identities(identities: Sequence[ChannelIdentity]) -> None:
    """Replace each channel id with "erased:<member id>:<identity id>".

    The identity's primary key makes the pseudonym unique in its channel,
    so the (channel, external_id) constraint still holds.
    """
    for identity in identities:
        identity.external_id = f"erased:{identity.member_id}:{identity.pk}"
    ChannelIdentity.objects.bulk_update(identities, ["external_id"], batch_size=500)


def _cancel_messages(member_ids: list[int]) -> int:
    # NOTE: a message that a sender claimed before the erasure (status
    # "sending") is not cancelled and may still go out.
    return OutboxMessage.objects.filter(
        member_id__in=member_ids, status=OutboxMessage.Status.PENDING
    ).update(
        status=OutboxMessage.Status.SKIPPED,
        last_error="Cancelled: the member's personal data was erased.",
    )


def erase_member(member: Member, user: User, reason: str) -> ErasureResult:
    """Erase ``member``'s personal data in one transaction and return the counts.

    Writes tombstones for each channel id, the E.164 phone and the e-mail.
    Clears name, phone and e-mail and replaces channel ids with pseudonyms.
    Removes the old values from free text and JSON of every row linked to
    the member (history tables included) and from import issues. Cancels
    pending outbox messages. Gives the member a new public id, so old member
    page links stop working, and sets ``erased_at``. Members merged
    into ``member`` are erased with it. Activities, tier history and grants
    stay linked to the member. Records AuditAction.ERASE.

    Raises ErasureError, changing nothing, without a reason, or when the
    member was already erased or was merged into another member.
    """
    reason = reason.strip()
    if not reason:
        raise ErasureError(
            _("Enter the reason for the erasure. It is stored for audit.")
        )
    now = timezone.now()
    with transaction.atomic():
        people = _lock_people(member)
        member = people[0]
        member_ids = [person.pk for person in people]
        identities = list(
            ChannelIdentity.objects.filter(member_id__in=member_ids)
            .select_related("channel")
            .order_by("pk")
        )
        values = _secret_values(people, identities)
        result = ErasureResult(member_id=member.pk, members=len(people))

        tombstones = _tombstones(people, identities)
        # NOTE: a digest that another erased member already has (a shared
        # phone) keeps its first member, so lifting that member's tombstones
        # lets this value back in too.
        ErasureTombstone.objects.bulk_create(tombstones, ignore_conflicts=True)
        result.tombstones = len(tombstones)
        _scrub_linked_rows(member_ids, values, result)
        provenance = _clear_import_provenance(member_ids)
        if provenance:
            result.rows_scrubbed["members.importedmember"] = provenance
        issues = ImportIssue.objects.filter(value__in=values).update(value="")
        if issues:
            result.rows_scrubbed["members.importissue"] = issues
        _pseudonymise_identities(identities)
        result.identities = len(identities)
        result.messages_cancelled = _cancel_messages(member_ids)
        for person in people:
            Member.objects.filter(pk=person.pk).update(
                name="",
                phone="",
                phone_e164="",
                email="",
                public_id=uuid.uuid4(),
                erased_at=now,
                updated_at=now,
            )
        record_event(
            user,
            AuditAction.ERASE,
            member,
            count=len(people),
            detail={
                # The reason may quote the erased data itself ("request from
                # a@b.cn"), and the audit log outlives the erasure.
                "reason": mask_text(_scrub_text(reason, _value_pattern(values))),
                "merged_members": member_ids[1:],
                "tombstones": result.tombstones,
                "channel_ids": result.identities,
                "messages_cancelled": result.messages_cancelled,
                "rows_scrubbed": result.rows_scrubbed,
            },
        )
    logger.info(
        "member erased member_id=%s user_id=%s members=%d tombstones=%d",
        member.pk,
        getattr(user, "pk", None),
        len(people),
        result.tombstones,
    )
    return result


def lift_tombstones(
    member: Member,
    user: User,
    reason: str,
    *,
    tombstone_ids: Iterable[int] | None = None,
) -> int:
    """Delete the member's tombstones so the person can come back, and count them.

    ``tombstone_ids`` limits the lift to those tombstones of the member.
    Records AuditAction.LIFT_TOMBSTONE in the same transaction. Raises
    ErasureError without a reason.
    """
    reason = reason.strip()
    if not reason:
        raise ErasureError(
            _("Enter the reason for letting the person back. It is stored for audit.")
        )
    with transaction.atomic():
        rows = ErasureTombstone.objects.filter(member=member)
        if tombstone_ids is not None:
            rows = rows.filter(pk__in=list(tombstone_ids))
        kinds = sorted(set(rows.values_list("kind", flat=True)))
        deleted, _by_model = rows.delete()
        record_event(
            user,
            AuditAction.LIFT_TOMBSTONE,
            member,
            detail={"reason": mask_text(reason), "tombstones": deleted, "kinds": kinds},
        )
    logger.info(
        "erasure tombstones lifted member_id=%s user_id=%s tombstones=%d",
        member.pk,
        getattr(user, "pk", None),
        deleted,
    )
    return deleted


def lift_selected_tombstones(
    tombstone_ids: Sequence[int], user: User, reason: str
) -> int:
    """Delete the given tombstones of any members; return how many.

    Records one LIFT_TOMBSTONE audit row per member concerned, or one row
    without a member for tombstones whose member was deleted. Raises
    ErasureError without a reason.
    """
    reason = reason.strip()
    if not reason:
        raise ErasureError(
            _("Enter the reason for letting the people back. It is stored for audit.")
        )
    with transaction.atomic():
        rows = ErasureTombstone.objects.filter(pk__in=list(tombstone_ids))
        member_ids = set(rows.values_list("member_id", flat=True))
        deleted, _by_model = rows.delete()
        detail = {"reason": mask_text(reason), "tombstones": deleted}
        record_events(
            user,
            AuditAction.LIFT_TOMBSTONE,
            sorted(pk for pk in member_ids if pk is not None),
            detail=detail,
        )
        if None in member_ids:
            record_event(user, AuditAction.LIFT_TOMBSTONE, None, count=0, detail=detail)
    logger.info(
        "erasure tombstones lifted user_id=%s tombstones=%d members=%d",
        getattr(user, "pk", None),
        deleted,
        len(member_ids),
    )
    return deleted


# Export


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _profile(member: Member, identities: Iterable[ChannelIdentity]) -> dict[str, Any]:
    return {
        "id": member.pk,
        "name": member.name,
        "phone": member.phone,
        "phone_e164": member.phone_e164,
        "email": member.email,
        "language": member.language,
        "joined_on": _iso(member.joined_on),
        "tier": member.tier.name if member.tier else None,
        "tier_since": _iso(member.tier_since),
        "review_at": _iso(member.review_at),
        "grace_until": _iso(member.grace_until),
        "merged_into": member.merged_into_id,
        "erased_at": _iso(member.erased_at),
        "created_at": _iso(member.created_at),
        "channel_ids": [
            {
                "channel": identity.channel.code,
                "external_id": identity.external_id,
                "created_at": _iso(identity.created_at),
            }
            for identity in identities
        ],
    }


def _activities(member: Member) -> list[dict[str, Any]]:
    rows = (
        Activity.objects.filter(member=member)
        .select_related("channel", "kind")
        .order_by("occurred_at", "pk")
    )
    return [
        {
            "occurred_at": _iso(a.occurred_at),
            "channel": a.channel.code,
            "kind": a.kind.code,
            "amount": a.amount,
            "quantity": a.quantity,
            "reference": a.reference,
            "growth_points": a.growth_points,
            "source": a.source,
            "recorded_at": _iso(a.recorded_at),
        }
        for a in rows
    ]


def _tier_changes(member: Member) -> list[dict[str, Any]]:
    rows = (
        TierChange.objects.filter(member=member)
        .select_related("from_tier", "to_tier")
        .order_by("changed_at", "pk")
    )
    return [
        {
            "changed_at": _iso(c.changed_at),
            "from_tier": c.from_tier.name if c.from_tier else None,
            "to_tier": c.to_tier.name,
            "reason": c.reason,
            "as_of": _iso(c.as_of),
            "review_at": _iso(c.review_at),
            "rule_version": c.version_id,
            "explanation": c.explanation,
        }
        for c in rows
    ]


def _tier_overrides(member: Member) -> list[dict[str, Any]]:
    rows = (
        TierOverride.objects.filter(member=member)
        .select_related("tier")
        .order_by("requested_at", "pk")
    )
    return [
        {
            "tier": o.tier.name,
            "mode": o.mode,
            "status": o.status,
            "until": _iso(o.until),
            "reason": o.reason,
            "requested_at": _iso(o.requested_at),
            "approved_at": _iso(o.approved_at),
            "rejected_at": _iso(o.rejected_at),
            "rejection_reason": o.rejection_reason,
            "ended_at": _iso(o.ended_at),
            "end_reason": o.end_reason,
        }
        for o in rows
    ]


def _grants(member: Member) -> list[Grant]:
    return list(
        Grant.objects.filter(member=member)
        .select_related("benefit", "tier", "redeemed_channel")
        .order_by("created_at", "pk")
    )


def _grant_rows(grants: Iterable[Grant]) -> list[dict[str, Any]]:
    return [
        {
            "benefit": g.benefit.name,
            "tier": g.tier.name,
            "origin": g.origin,
            "status": g.status,
            "code": g.code,
            "created_at": _iso(g.created_at),
            "issued_at": _iso(g.issued_at),
            "expires_at": _iso(g.expires_at),
            "ended_at": _iso(g.ended_at),
        }
        for g in grants
    ]


def _redemption_rows(grants: Iterable[Grant]) -> list[dict[str, Any]]:
    return [
        {
            "code": g.code,
            "benefit": g.benefit.name,
            "redeemed_at": _iso(g.redeemed_at),
            "channel": g.redeemed_channel.code if g.redeemed_channel else None,
            "reference": g.redemption_reference,
        }
        for g in grants
        if g.redeemed_at is not None
    ]


def _notifications(member: Member) -> list[dict[str, Any]]:
    rows = OutboxMessage.objects.filter(member=member).order_by("created_at", "pk")
    result = []
    for message in rows:
        try:
            rendered = render(message.topic, message.params, message.language)
            subject, body = rendered.subject, rendered.body
        except (KeyError, ValueError, TypeError):
            # A message whose parameters no longer render is still listed.
            subject, body = "", ""
        result.append(
            {
                "channel": message.channel,
                "topic": message.topic,
                "status": message.status,
                "language": message.language,
                "subject": subject,
                "body": body,
                "created_at": _iso(message.created_at),
                "sent_at": _iso(message.sent_at),
            }
        )
    return result


def _merged_profiles(member: Member) -> list[dict[str, Any]]:
    """Return the profiles of the members merged into ``member``.

    A merge moves the channel ids and activities to the kept member but
    leaves the name, phone and e-mail on the merged one, which erasure
    treats as the same person.
    """
    merged = Member.objects.filter(merged_into=member).select_related("tier")
    rows = []
    for other in merged.order_by("pk"):
        profile = _profile(other, [])
        del profile["channel_ids"]
        rows.append(profile)
    return rows


def export_member_data(member: Member) -> dict[str, Any]:
    """Return everything stored about ``member``, section by section.

    The sections are profile (with channel ids), merged_members (the
    profiles of members merged into this one, whose activities and ids now
    belong to it), activities, tier_changes (with their explanations),
    tier_overrides, benefit_grants, redemptions and notifications. Staff
    user names are left out. Costs a fixed number of queries whatever the
    member's size: the member with its tier, then one per section, with
    redemptions read from the grants.
    """
    member = Member.objects.select_related("tier").get(pk=member.pk)
    identities = (
        ChannelIdentity.objects.filter(member=member)
        .select_related("channel")
        .order_by("channel__code", "external_id")
    )
    grants = _grants(member)
    return {
        "exported_at": _iso(timezone.now()),
        "profile": _profile(member, identities),
        "merged_members": _merged_profiles(member),
        "activities": _activities(member),
        "tier_changes": _tier_changes(member),
        "tier_overrides": _tier_overrides(member),
        "benefit_grants": _grant_rows(grants),
        "redemptions": _redemption_rows(grants),
        "notifications": _notifications(member),
    }


def render_json(data: dict[str, Any]) -> bytes:
    """Return the export as UTF-8 JSON with sorted keys, so two exports diff cleanly."""
    text = json.dumps(
        data, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True, indent=2
    )
    return text.encode("utf-8")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        text = json.dumps(
            value, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True
        )
    else:
        text = str(value)
    return quote_formula(text)


def _csv_bytes(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    # The byte order mark makes Excel read the file as UTF-8.
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    headers: list[str] = []
    for row in rows:
        headers.extend(key for key in row if key not in headers)
    return headers, [[row.get(name) for name in headers] for row in rows]


LIST_SECTIONS = (
    "merged_members",
    "activities",
    "tier_changes",
    "tier_overrides",
    "benefit_grants",
    "redemptions",
    "notifications",
)


def render_csv_zip(data: dict[str, Any]) -> bytes:
    """Return the export as a zip with one CSV per section.

    profile.csv has one "field,value" line per profile field and
    channel_ids.csv the channel ids. Every file is UTF-8 with a byte order
    mark, and text that a spreadsheet would run as a formula is quoted as
    in the import error reports.
    """
    profile = dict(data["profile"])
    identities = profile.pop("channel_ids")
    files = {
        "profile.csv": _csv_bytes(
            ["field", "value"], [[name, value] for name, value in profile.items()]
        ),
        "channel_ids.csv": _csv_bytes(*_table(identities or [])),
    }
    for section in LIST_SECTIONS:
        headers, rows = _table(data[section])
        files[f"{section}.csv"] = _csv_bytes(headers, rows)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@dataclass(frozen=True)
class MemberExport:
    """A rendered export: the file's content, type and suggested name."""

    content: bytes
    content_type: str
    file_name: str


def export_member(member: Member, user: User, export_format: str) -> MemberExport:
    """Render ``member``'s data as JSON or a CSV zip and record EXPORT_MEMBER.

    The audit row is written in the same transaction as the data is read.
    Raises ValueError for an unknown format.
    """
    try:
        chosen = ExportFormat(export_format)
    except ValueError:
        raise ValueError(
            f"Unknown export format {export_format!r}: use json or csv."
        ) from None
    with transaction.atomic():
        data = export_member_data(member)
        if chosen == ExportFormat.JSON:
            export = MemberExport(
                render_json(data), "application/json", f"member-{member.pk}.json"
            )
        else:
            export = MemberExport(
                render_csv_zip(data), "application/zip", f"member-{member.pk}.zip"
            )
        record_event(
            user,
            AuditAction.EXPORT_MEMBER,
            member,
            detail={
                "format": chosen.value,
                "activities": len(data["activities"]),
                "bytes": len(export.content),
            },
        )
    return export
