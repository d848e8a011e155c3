"""Recording channel events: the service behind the event API.

Every event of a request gets one status of its own:

- ``created``: stored now.
- ``duplicate``: its reference is already stored in the channel with the
  same member, kind, time, amount and quantity, or an earlier event of the
  same request has the same reference and content. Nothing is stored again.
- ``conflict``: the reference is already stored, or used earlier in the
  request, with different content. Nothing changes. A correction is a new
  event with a new reference, such as a refund.
- ``invalid``: a value failed validation, no member has the given id in
  the channel, or the id, phone or e-mail belongs to a person whose data
  was erased on request (see members.rights).

The semantics are per event: the created events of a batch are stored even
when others are invalid or in conflict, and the response lists every
event's status. What one request stores, and the tier changes it causes,
commit in one transaction, so an unexpected error stores nothing.

Members are matched by their id (ChannelIdentity) in the token's channel,
never by ids in other channels. An id the channel has not sent before is
linked to an existing member only when the channel allows matching by
phone or e-mail (Channel.match_phone, Channel.match_email) and the phone
or e-mail sent with the event matches exactly one live member (see
members.identity). Otherwise the event is invalid. Events never create
members.

Each member with a created event is evaluated once, after all of the
request's events are inserted. A purchase and its refund in one batch
therefore net out before any tier decision.

Rows are inserted with INSERT ... ON CONFLICT DO NOTHING RETURNING, so
parallel requests with the same reference store it once, and each request
learns whether it was the one that stored it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import Field
from django.utils import timezone
from django.utils.translation import gettext as _

from members.identity import ContactRecord, match_members
from members.importing.lookups import chunked
from members.models import (
    Activity,
    ActivityKind,
    Channel,
    ChannelIdentity,
    IdempotencyRecord,
    Member,
)
from members.rights import Contact, find_erased
from tiers.evaluation import evaluate
from tiers.jobs import evaluate_when_due
from tiers.ladder import LadderError
from tiers.models import TierChange

logger = logging.getLogger(__name__)

# Member ids listed in one log line; longer lists end with a count.
LOGGED_IDS = 20


class EventStatus(StrEnum):
    CREATED = "created"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    INVALID = "invalid"


ACCEPTED = frozenset({EventStatus.CREATED, EventStatus.DUPLICATE})


@dataclass(frozen=True)
class EventInput:
    """One event with valid values, ready to be matched and stored.

    ``index`` is the event's position in the request, from 0. ``amount``
    already has the sign its kind stores: refunds are negative.
    """

    index: int
    external_id: str
    reference: str
    occurred_at: dt.datetime
    amount: Decimal
    kind: ActivityKind
    quantity: int
    # Contact data for linking an unknown external_id; never logged.
    phone_e164: str = ""
    email: str = ""


@dataclass(frozen=True)
class InvalidEvent:
    """An event whose values failed validation, with the messages per field."""

    index: int
    reference: str | None
    errors: dict[str, list[str]]


@dataclass
class EventResult:
    """The outcome of one event, as the API reports it.

    ``tier_before``, ``tier_after`` and ``promoted`` describe the member
    across the whole request, so every event of one member in a batch
    reports the same values.
    """

    index: int
    status: EventStatus
    reference: str | None
    member: uuid.UUID | None = None
    tier_before: str | None = None
    tier_after: str | None = None
    promoted: bool = False
    detail: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)
    member_id: int | None = None


@dataclass
class IngestResult:
    """The outcomes of one request's events, in request order."""

    channel: Channel
    events: list[EventResult]
    tiers_evaluated: bool = True

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(result.status for result in self.events)
        return {status.value: counter[status] for status in EventStatus}

    @property
    def promoted(self) -> int:
        return len({r.member_id for r in self.events if r.promoted})

    @property
    def all_accepted(self) -> bool:
        return all(result.status in ACCEPTED for result in self.events)


@dataclass(frozen=True)
class _MemberRef:
    member_id: int
    public_id: uuid.UUID
    tier_name: str | None


# The stored fields that must match for a repeated reference to count as a
# duplicate, with the names the API uses for them.
_CONTENT_FIELDS = {
    "member_id": "external_id",
    "kind_id": "kind",
    "occurred_at": "occurred_at",
    "amount": "amount",
    "quantity": "quantity",
}
Content = tuple[Any, ...]


def _content(event: EventInput, member_id: int) -> Content:
    return (member_id, event.kind.pk, event.occurred_at, event.amount, event.quantity)


def _differences(ours: Content, theirs: Content) -> list[str]:
    return [
        name
        for name, mine, other in zip(
            _CONTENT_FIELDS.values(), ours, theirs, strict=True
        )
        if mine != other
    ]


def _match_members(
    channel: Channel, events: Sequence[EventInput]
) -> dict[str, _MemberRef]:
    """Return the members with these external ids in ``channel``, by external id."""
    found: dict[str, _MemberRef] = {}
    external_ids = sorted({event.external_id for event in events})
    for chunk in chunked(external_ids):
        rows = ChannelIdentity.objects.filter(
            channel=channel, external_id__in=chunk
        ).values_list(
            "external_id", "member_id", "member__public_id", "member__tier__name"
        )
        for external_id, member_id, public_id, tier_name in rows:
            found[external_id] = _MemberRef(member_id, public_id, tier_name)
    return found


def _link_by_contact(
    channel: Channel, events: Sequence[EventInput]
) -> dict[str, _MemberRef]:
    """Link unknown external ids to the one member their phone or e-mail matches.

    ``events`` carry ids without a ChannelIdentity in ``channel``. Returns
    the members of the ids now linked, by external id. A parallel request
    may link the same id first, so the identities are inserted with ON
    CONFLICT DO NOTHING and read back: the stored identity wins.
    """
    if not (channel.match_phone or channel.match_email):
        return {}
    records = [
        ContactRecord(event.external_id, event.phone_e164, event.email)
        for event in events
        if event.phone_e164 or event.email
    ]
    matches = match_members(channel, records)
    if not matches:
        return {}
    ChannelIdentity.objects.bulk_create(
        [
            ChannelIdentity(member_id=member_id, channel=channel, external_id=ext_id)
            for ext_id, member_id in sorted(matches.items())
        ],
        ignore_conflicts=True,
    )
    linked = _match_members(
        channel, [event for event in events if event.external_id in matches]
    )
    logger.info(
        "event API linked new ids by contact data channel_id=%s ids=%d member_ids=%s",
        channel.pk,
        len(linked),
        summarize_ids(ref.member_id for ref in linked.values()),
    )
    return linked


def _stored_content(channel: Channel, references: Iterable[str]) -> dict[str, Content]:
    """Return the content of the stored activities with these references."""
    stored: dict[str, Content] = {}
    for chunk in chunked(sorted(set(references))):
        rows = Activity.objects.filter(
            channel=channel, reference__in=chunk
        ).values_list("reference", *_CONTENT_FIELDS)
        for reference, *content in rows:
            stored[reference] = tuple(content)
    return stored


_INSERT_FIELDS = (
    "member",
    "channel",
    "kind",
    "occurred_at",
    "amount",
    "quantity",
    "reference",
    "source",
    "recorded_at",
)


def _insert_new(rows: list[Activity]) -> set[str]:
    """Insert ``rows``, skipping references already stored; return those inserted.

    bulk_create(ignore_conflicts=True) does not report which rows it
    inserted, so this builds the INSERT ... ON CONFLICT DO NOTHING RETURNING
    statement that PostgreSQL and SQLite (3.35 and later) both run. Rows go
    in reference order, so two requests with overlapping references lock
    them in the same order instead of deadlocking on each other's rows.
    """
    meta = Activity._meta
    fields = [cast("Field[Any, Any]", meta.get_field(name)) for name in _INSERT_FIELDS]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(f.column) for f in fields)
    reference = quote(cast("Field[Any, Any]", meta.get_field("reference")).column)
    channel = quote(cast("Field[Any, Any]", meta.get_field("channel")).column)
    row_placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    rows = sorted(rows, key=lambda row: row.reference)
    batch_size = connection.ops.bulk_batch_size(fields, rows) or len(rows)
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for chunk in chunked(rows, batch_size):
            params = [
                f.get_db_prep_save(getattr(row, f.attname), connection)
                for row in chunk
                for f in fields
            ]
            # Table and column names come from the model, and every value is
            # a query parameter.
            values = ", ".join([row_placeholder] * len(chunk))
            insert = f"INSERT INTO {table} ({columns}) VALUES {values}"  # noqa: S608
            cursor.execute(
                f"{insert} ON CONFLICT ({channel}, {reference}) DO NOTHING "
                f"RETURNING {reference}",
                params,
            )
            inserted.update(value for (value,) in cursor.fetchall())
    return inserted


def _duplicate_detail(earlier: int | None) -> str:
    if earlier is None:
        return _("Already recorded with the same content; nothing was changed.")
    return _(
        "Same reference and content as event %(index)s of this request; recorded once."
    ) % {"index": earlier}


def _conflict_detail(reference: str, fields: list[str], earlier: int | None) -> str:
    values = {"reference": reference, "fields": ", ".join(fields)}
    if earlier is None:
        return (
            _(
                "Reference %(reference)r is already recorded in this channel with "
                "a different %(fields)s. Nothing was changed; send a correction "
                "as a new event with a new reference."
            )
            % values
        )
    return _(
        "Reference %(reference)r is used by event %(index)s of this request "
        "with a different %(fields)s. Only event %(index)s was considered, "
        "and this one was not recorded."
    ) % {**values, "index": earlier}


class _Recorder:
    """The steps of record_events() for one request, sharing its look-ups."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.results: dict[int, EventResult] = {}
        self.members: dict[str, _MemberRef] = {}

    def reject(self, invalid: InvalidEvent) -> None:
        self.results[invalid.index] = EventResult(
            index=invalid.index,
            status=EventStatus.INVALID,
            reference=invalid.reference,
            detail=_("The event is invalid; 'errors' lists the problems."),
            errors=invalid.errors,
        )

    def settle(self, event: EventInput, status: EventStatus, detail: str = "") -> None:
        member = self.members[event.external_id]
        self.results[event.index] = EventResult(
            index=event.index,
            status=status,
            reference=event.reference,
            member=member.public_id,
            detail=detail,
            member_id=member.member_id,
        )

    def drop_erased(self, events: list[EventInput]) -> list[EventInput]:
        """Reject the events of people whose data was erased and return the others."""
        contacts = [
            Contact(self.channel.code, e.external_id, e.phone_e164, e.email)
            for e in events
        ]
        erased = find_erased(contacts)
        message = _(
            "This person's data was erased on request, so the event was not "
            "recorded. Staff can lift the erasure in the admin if the person "
            "joined again."
        )
        for position in sorted(erased):
            event = events[position]
            self.reject(
                InvalidEvent(event.index, event.reference, {"external_id": [message]})
            )
        return [e for position, e in enumerate(events) if position not in erased]

    def matched(self, events: list[EventInput]) -> list[EventInput]:
        """Return the events whose member is known in the channel; reject the rest.

        An unknown id is first linked by phone or e-mail where the channel
        allows it (see _link_by_contact).
        """
        events = self.drop_erased(events)
        self.members = _match_members(self.channel, events)
        unknown = [e for e in events if e.external_id not in self.members]
        if unknown:
            self.members.update(_link_by_contact(self.channel, unknown))
        matching = self.channel.match_phone or self.channel.match_email
        known = []
        for event in events:
            if event.external_id in self.members:
                known.append(event)
                continue
            values = {"id": event.external_id, "channel": self.channel.code}
            if matching and (event.phone_e164 or event.email):
                message = (
                    _(
                        "No member has id %(id)r in channel %(channel)s, and the "
                        "phone or e-mail sent with it matches no member or more "
                        "than one. Add the member with this id first, then send "
                        "the event again."
                    )
                    % values
                )
            else:
                message = (
                    _(
                        "No member has id %(id)r in channel %(channel)s. Add the "
                        "member with this id first, then send the event again."
                    )
                    % values
                )
            self.reject(
                InvalidEvent(event.index, event.reference, {"external_id": [message]})
            )
        return known

    def first_per_reference(self, events: list[EventInput]) -> list[EventInput]:
        """Return the first event of each reference; settle the repeats."""
        first: dict[str, EventInput] = {}
        for event in events:
            earlier = first.get(event.reference)
            if earlier is None:
                first[event.reference] = event
                continue
            ours = _content(event, self.members[event.external_id].member_id)
            theirs = _content(earlier, self.members[earlier.external_id].member_id)
            different = _differences(ours, theirs)
            if different:
                detail = _conflict_detail(event.reference, different, earlier.index)
                self.settle(event, EventStatus.CONFLICT, detail)
            else:
                self.settle(
                    event, EventStatus.DUPLICATE, _duplicate_detail(earlier.index)
                )
        return list(first.values())

    def compare_with_stored(
        self, events: list[EventInput], stored: dict[str, Content]
    ) -> list[EventInput]:
        """Settle events whose reference is in ``stored``; return the others."""
        new = []
        for event in events:
            content = stored.get(event.reference)
            if content is None:
                new.append(event)
                continue
            ours = _content(event, self.members[event.external_id].member_id)
            different = _differences(ours, content)
            if different:
                detail = _conflict_detail(event.reference, different, None)
                self.settle(event, EventStatus.CONFLICT, detail)
            else:
                self.settle(event, EventStatus.DUPLICATE, _duplicate_detail(None))
        return new

    def insert(self, events: list[EventInput]) -> None:
        """Insert new events; settle the ones a parallel request stored first."""
        now = timezone.now()
        rows = [
            Activity(
                member_id=self.members[event.external_id].member_id,
                channel=self.channel,
                kind=event.kind,
                occurred_at=event.occurred_at,
                amount=event.amount,
                quantity=event.quantity,
                reference=event.reference,
                source=Activity.Source.API,
                recorded_at=now,
            )
            for event in events
        ]
        inserted = _insert_new(rows) if rows else set()
        late = [event for event in events if event.reference not in inserted]
        for event in events:
            if event.reference in inserted:
                self.settle(event, EventStatus.CREATED)
        if late:
            stored = _stored_content(self.channel, [e.reference for e in late])
            self.compare_with_stored(late, stored)

    def report_tiers(self, promoted: set[int]) -> None:
        """Fill in each accepted event's tier before and after the request."""
        accepted = [r for r in self.results.values() if r.status in ACCEPTED]
        member_ids = {r.member_id for r in accepted if r.member_id is not None}
        tiers_after = dict(
            Member.objects.filter(pk__in=member_ids).values_list("pk", "tier__name")
        )
        before = {ref.member_id: ref.tier_name for ref in self.members.values()}
        for result in accepted:
            assert result.member_id is not None
            result.tier_before = before.get(result.member_id)
            result.tier_after = tiers_after.get(result.member_id)
            result.promoted = result.member_id in promoted


def _evaluate_tiers(channel: Channel, member_ids: set[int]) -> tuple[bool, set[int]]:
    """Evaluate ``member_ids``; return whether it ran and who was promoted."""
    if not member_ids:
        return True, set()
    try:
        _, changes = evaluate(member_ids)
    except LadderError as error:
        # Without a rule version there is no tier to assign; the events count
        # from the first evaluation after one is published.
        logger.warning(
            "event API skipped tier evaluation channel_id=%s members=%d error=%s",
            channel.pk,
            len(member_ids),
            error,
        )
        return False, set()
    promoted = {
        change.member_id
        for change in changes
        if change.reason == TierChange.Reason.PROMOTION
    }
    return True, promoted


def _evaluate_again_when_due(recorder: _Recorder, events: list[EventInput]) -> None:
    """Schedule another evaluation for members with events dated ahead of now.

    Plausibility checks accept times up to a day ahead (a till with a fast
    clock), and the evaluation in the request does not count them yet.
    """
    now = timezone.now()
    ahead = [
        (event.occurred_at, result.member_id)
        for event in events
        if event.occurred_at > now
        and (result := recorder.results.get(event.index)) is not None
        and result.status == EventStatus.CREATED
        and result.member_id is not None
    ]
    if ahead:
        evaluate_when_due(
            {member_id for _, member_id in ahead if member_id is not None},
            max(moment for moment, _ in ahead),
        )


def record_events(
    channel: Channel, items: Sequence[EventInput | InvalidEvent]
) -> IngestResult:
    """Store the valid events of one request and evaluate their members' tiers.

    ``items`` are the request's events in order, already validated. Runs in
    one transaction. Costs a fixed number of queries per chunk of events:
    members, stored references, the inserts (one per chunk of rows), the
    tier evaluation of the members with created events, and their new tiers.
    Ids new in the channel add the phone and e-mail look-ups and the insert
    and read-back of the identities they link.
    """
    recorder = _Recorder(channel)
    events = []
    for item in items:
        if isinstance(item, InvalidEvent):
            recorder.reject(item)
        else:
            events.append(item)
    tiers_evaluated = True
    with transaction.atomic():
        if events:
            events = recorder.matched(events)
            events = recorder.first_per_reference(events)
            stored = _stored_content(channel, [event.reference for event in events])
            events = recorder.compare_with_stored(events, stored)
            recorder.insert(events)
            created = {
                r.member_id
                for r in recorder.results.values()
                if r.status == EventStatus.CREATED and r.member_id is not None
            }
            tiers_evaluated, promoted = _evaluate_tiers(channel, created)
            recorder.report_tiers(promoted)
            if tiers_evaluated:
                _evaluate_again_when_due(recorder, events)
    results = [recorder.results[index] for index in sorted(recorder.results)]
    return IngestResult(
        channel=channel, events=results, tiers_evaluated=tiers_evaluated
    )


def summarize_ids(ids: Iterable[int]) -> str:
    """Return ids for a log line: the first LOGGED_IDS, then a count of the rest."""
    ordered = sorted(set(ids))
    shown = ",".join(str(i) for i in ordered[:LOGGED_IDS])
    hidden = len(ordered) - LOGGED_IDS
    return f"{shown},+{hidden}" if hidden > 0 else shown


# Idempotency-Key handling.


@dataclass(frozen=True)
class StoredResponse:
    """A response status and body, and whether it is a replay of a stored one."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False


class IdempotencyKeyReused(Exception):
    """Raised when a channel's Idempotency-Key comes back with a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def request_hash(path: str, data: object) -> str:
    """Return the SHA-256 of a request's path and parsed JSON body.

    The body is serialised with sorted keys and no spaces, so a client that
    re-encodes the same JSON differently still sends the same request.
    """
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{path}\n{body}".encode()).hexdigest()


def _stored_response(
    channel: Channel, key: str, request_hash_: str
) -> StoredResponse | None:
    record = IdempotencyRecord.objects.filter(channel=channel, key=key).first()
    if record is None:
        return None
    if record.request_hash != request_hash_:
        raise IdempotencyKeyReused(key)
    return StoredResponse(record.status_code, record.response_body, replayed=True)


def respond_once(
    channel: Channel,
    key: str | None,
    request_hash_: str,
    respond: Callable[[], tuple[int, dict[str, Any]]],
) -> StoredResponse:
    """Run ``respond`` in one transaction, at most once per (channel, key).

    Without a key, ``respond`` simply runs. With a key, the first request
    claims it by inserting its IdempotencyRecord and stores the response
    there in the same transaction. A request that repeats the key gets the
    stored response, and one that arrives while the first is still running
    waits for its commit on the record's unique index, then gets the same.
    Raises IdempotencyKeyReused when the key was used with another request.
    """
    # TODO: no job deletes old IdempotencyRecords yet, so a key stays taken
    # for good and the table grows by one row per keyed request.
    if key is None:
        with transaction.atomic():
            status_code, body = respond()
        return StoredResponse(status_code, body)

    stored = _stored_response(channel, key, request_hash_)
    if stored is not None:
        return stored
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    channel=channel,
                    key=key,
                    request_hash=request_hash_,
                    status_code=0,
                    response_body={},
                )
        except IntegrityError:
            record = None
        if record is not None:
            status_code, body = respond()
            record.status_code = status_code
            record.response_body = body
            record.save(update_fields=["status_code", "response_body"])
            return StoredResponse(status_code, body)
    # Another request with this key committed first.
    stored = _stored_response(channel, key, request_hash_)
    if stored is None:
        raise RuntimeError(
            f"Idempotency key of channel id={channel.pk} conflicted on insert but "
            "no record was found afterwards."
        )
    return stored
