"""The notification outbox: create messages to members and render them.

notify() and queue_tier_change_messages() store one OutboxMessage per event
and backend in settings.CRM_NOTIFICATION_BACKENDS. members.jobs sends them.
Each message stores its topic and parameters rather than its text, and is
rendered on demand: in the member's language when sent, and in the page's
language on the member page.

Parameters per topic. Dates and datetimes may be objects or ISO 8601 text,
and other keys are stored but not shown:

* promotion, demotion: ``tier`` (the new tier's name) and, optionally,
  ``from_tier``.
* benefit_issued: ``benefit`` (its name) and, optionally, ``code`` and
  ``expires_at``.
* benefit_expiring: ``benefit`` and ``expires_at``, and optionally ``code``.
* review_warning: ``tier``, ``review_at`` and ``shortfall``, as stored on
  the ReviewWarning.
* nudge: ``goal``, ``tier`` and ``shortfall`` (a tree pruned by
  tiers.warnings.unmet_requirements()). With the goal "reach", ``tier`` is
  the next tier and ``projected_on`` the date the pace reaches it, if any.
  With the goal "keep", ``tier`` is the member's tier, ``review_at`` the
  review that decides it and ``in_grace`` whether that is the end of a grace
  period. The shortfall is then what the pace still misses by that moment.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone, translation
from django.utils.translation import get_language, gettext
from django_q.tasks import async_task

from members.delivery import configured_backends
from members.models import Member, OutboxMessage
from tiers.formatting import format_date
from tiers.models import ReviewWarning, Tier, TierChange
from tiers.outlook import describe_unmet
from tiers.warnings import warning_text

logger = logging.getLogger(__name__)

SEND_TASK = "members.jobs.send_due_messages"
# Events whose messages are looked up and created per query round.
CHUNK_SIZE = 1000
# How many in-app messages the member page lists.
RECENT_MESSAGE_COUNT = 10

Topic = OutboxMessage.Topic

REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {
    Topic.PROMOTION: ("tier",),
    Topic.DEMOTION: ("tier",),
    Topic.BENEFIT_ISSUED: ("benefit",),
    Topic.BENEFIT_EXPIRING: ("benefit", "expires_at"),
    Topic.REVIEW_WARNING: ("tier", "review_at", "shortfall"),
    Topic.NUDGE: ("goal", "tier", "shortfall"),
}


@dataclass(frozen=True)
class Event:
    """Something to tell one member about, before it becomes outbox rows."""

    member_id: int
    language: str
    topic: str
    key: str
    params: dict[str, Any]


@dataclass(frozen=True)
class RenderedMessage:
    """A message's text in one language."""

    subject: str
    body: str


@dataclass(frozen=True)
class InAppMessage:
    """One line of the member page's message list, formatted for display."""

    date_text: str
    subject: str
    body: str


# Creating messages


def notify(member_id: int, topic: str, params: dict[str, Any], key: str) -> None:
    """Queue a message to one member on every configured backend.

    ``key`` names the event, such as "grant-issued:12": a second call with
    the same key adds nothing. The message is rendered in the member's
    language. The rows belong to the caller's transaction, so a rollback
    drops them, and the sender is queued once it commits. Raises ValueError
    for an
    unknown topic, an empty or over-long key or a missing parameter, and
    Member.DoesNotExist for an unknown member.
    """
    _check_event(topic, params, key)
    language = Member.objects.values_list("language", flat=True).get(pk=member_id)
    event = Event(member_id, language, topic, key, _as_json(params))
    if _insert([event]):
        queue_sender_after_commit()


def queue_tier_change_messages() -> int:
    """Create the messages for recent tier changes and review warnings.

    Covers promotions, demotions, manual overrides that move a member up
    or down, and warnings of a review still to come, all created within
    CRM_NOTIFICATION_MAX_AGE_DAYS. Events that already have messages are
    skipped, so a rerun creates nothing. The cost is a fixed number of
    queries per chunk of events. Returns the number of messages created;
    a concurrent run can make it higher than the rows really added.
    """
    now = timezone.now()
    since = now - dt.timedelta(days=settings.CRM_NOTIFICATION_MAX_AGE_DAYS)
    created = 0
    # The events are read through open cursors while messages are written.
    # On SQLite in WAL mode, a read that began before another writer
    # committed cannot take the write lock and fails with "database is
    # locked". One transaction takes the write lock when it begins, so the
    # reads and the writes share one snapshot.
    with transaction.atomic():
        for events in _chunks(_tier_change_events(since)):
            created += _insert(events)
        for events in _chunks(_review_warning_events(since, now)):
            created += _insert(events)
    logger.info("tier change messages created=%d since=%s", created, since.isoformat())
    if created:
        queue_sender_after_commit()
    return created


def send_again(messages: QuerySet[OutboxMessage]) -> int:
    """Make failed and skipped messages due now, with their attempts reset.

    Sent messages are left alone, so nothing is sent twice. Returns the
    number of messages requeued.
    """
    requeued = messages.filter(
        status__in=[OutboxMessage.Status.FAILED, OutboxMessage.Status.SKIPPED]
    ).update(
        status=OutboxMessage.Status.PENDING,
        attempts=0,
        next_attempt_at=timezone.now(),
        claim_token="",
        claimed_at=None,
    )
    if requeued:
        queue_sender_after_commit()
    return requeued


def _check_event(topic: str, params: Mapping[str, Any], key: str) -> None:
    if topic not in REQUIRED_PARAMS:
        raise ValueError(
            f"Unknown notification topic {topic!r}. Use one of "
            f"{', '.join(REQUIRED_PARAMS)}."
        )
    max_length = OutboxMessage._meta.get_field("key").max_length or 0
    if not key or len(key) > max_length:
        raise ValueError(
            f"Notification key {key!r} is invalid. Use 1 to {max_length} characters."
        )
    missing = [
        name for name in REQUIRED_PARAMS[topic] if params.get(name) in (None, "")
    ]
    if missing:
        raise ValueError(
            f"Notification {key!r} ({topic}) is missing the parameters "
            f"{', '.join(missing)}."
        )


def _as_json(params: Mapping[str, Any]) -> dict[str, Any]:
    # Dates and decimals become strings now, as they are when read back.
    result: dict[str, Any] = json.loads(json.dumps(params, cls=DjangoJSONEncoder))
    return result


def _insert(events: Iterable[Event]) -> int:
    """Store one message per event and backend, skipping those that exist.

    Returns the number of rows passed to the insert. Backends that deliver
    by storing (in-app) get rows that are already sent.
    """
    backends = configured_backends().values()
    now = timezone.now()
    rows = []
    for event in events:
        for backend in backends:
            delivered = backend.delivered_on_insert
            rows.append(
                OutboxMessage(
                    member_id=event.member_id,
                    channel=backend.name,
                    topic=event.topic,
                    key=event.key,
                    params=event.params,
                    language=event.language,
                    status=(
                        OutboxMessage.Status.SENT
                        if delivered
                        else OutboxMessage.Status.PENDING
                    ),
                    next_attempt_at=now,
                    sent_at=now if delivered else None,
                )
            )
    # The unique (key, channel) constraint turns a repeat into a no-op. On
    # PostgreSQL this is ON CONFLICT DO NOTHING, which leaves a caller's
    # transaction usable, unlike a caught IntegrityError.
    OutboxMessage.objects.bulk_create(
        rows, ignore_conflicts=True, batch_size=CHUNK_SIZE
    )
    return len(rows)


def _chunks(events: Iterable[Event]) -> Iterable[list[Event]]:
    """Split events into chunks, leaving out those whose messages all exist."""
    channels = set(configured_backends())
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == CHUNK_SIZE:
            yield _without_existing(chunk, channels)
            chunk = []
    if chunk:
        yield _without_existing(chunk, channels)


def _without_existing(events: list[Event], channels: set[str]) -> list[Event]:
    existing: dict[str, set[str]] = {}
    rows = OutboxMessage.objects.filter(key__in=[e.key for e in events]).values_list(
        "key", "channel"
    )
    for key, channel in rows:
        existing.setdefault(key, set()).add(channel)
    return [e for e in events if not channels <= existing.get(e.key, set())]


def _tier_change_events(since: dt.datetime) -> Iterable[Event]:
    changes = (
        TierChange.objects.filter(
            changed_at__gte=since,
            reason__in=[
                TierChange.Reason.PROMOTION,
                TierChange.Reason.DEMOTION,
                TierChange.Reason.OVERRIDE,
            ],
        )
        .order_by("pk")
        .values_list(
            "pk",
            "member_id",
            "member__language",
            "reason",
            "from_tier__name",
            "from_tier__rank",
            "to_tier__name",
            "to_tier__rank",
        )
    )
    for (
        pk,
        member_id,
        language,
        reason,
        from_name,
        from_rank,
        to_name,
        to_rank,
    ) in changes.iterator(chunk_size=CHUNK_SIZE):
        if reason == TierChange.Reason.OVERRIDE:
            # An override states no direction, so the ranks decide it.
            if from_rank is not None and from_rank == to_rank:
                continue
            up = from_rank is None or to_rank > from_rank
            topic = Topic.PROMOTION if up else Topic.DEMOTION
        elif reason == TierChange.Reason.PROMOTION:
            topic = Topic.PROMOTION
        else:
            topic = Topic.DEMOTION
        params = {"tier": to_name, "from_tier": from_name}
        yield Event(member_id, language, topic, f"tier-change:{pk}", params)


def _review_warning_events(since: dt.datetime, now: dt.datetime) -> Iterable[Event]:
    warnings = (
        ReviewWarning.objects.filter(created_at__gte=since, review_at__gt=now)
        .order_by("pk")
        .values_list(
            "pk",
            "member_id",
            "member__language",
            "tier__name",
            "review_at",
            "shortfall",
        )
    )
    for pk, member_id, language, tier_name, review_at, shortfall in warnings.iterator(
        chunk_size=CHUNK_SIZE
    ):
        params = {
            "tier": tier_name,
            "review_at": review_at.isoformat(),
            "shortfall": shortfall,
        }
        yield Event(
            member_id, language, Topic.REVIEW_WARNING, f"review-warning:{pk}", params
        )


# Queueing the sender


def _queue_sender() -> None:
    try:
        async_task(SEND_TASK, task_name="send-notifications")
    except Exception:
        # The every-minute schedule of the same task sends the messages later.
        logger.exception("could not queue %s", SEND_TASK)


def queue_sender_after_commit() -> None:
    """Queue the sender once the current transaction commits, once per commit."""
    connection = transaction.get_connection()
    # Many notify() calls in one transaction would otherwise queue one task
    # each. run_on_commit lists (savepoint ids, callback, robust) entries.
    if connection.in_atomic_block and any(
        entry[1] is _queue_sender for entry in connection.run_on_commit
    ):
        return
    transaction.on_commit(_queue_sender)


# Rendering


def render(topic: str, params: Mapping[str, Any], language: str) -> RenderedMessage:
    """Render a message's subject and body in ``language``.

    A language missing from settings.LANGUAGES falls back to LANGUAGE_CODE,
    so a message is still sent after a language is withdrawn.
    """
    if language not in dict(settings.LANGUAGES):
        language = settings.LANGUAGE_CODE
    with translation.override(language):
        return _RENDERERS[topic](params, language)


def render_message(message: OutboxMessage) -> RenderedMessage:
    """Render a stored message in the language it was created with."""
    return render(message.topic, message.params, message.language)


def recent_in_app_messages(member: Member, language: str) -> list[InAppMessage]:
    """Return the member's newest in-app messages rendered in ``language``.

    Lists at most RECENT_MESSAGE_COUNT, newest first, in one query.
    """
    messages = OutboxMessage.objects.filter(
        member=member,
        channel="in_app",
        status=OutboxMessage.Status.SENT,
    ).order_by("-created_at", "-pk")[:RECENT_MESSAGE_COUNT]
    return in_app_items(messages, language)


def in_app_items(
    messages: Iterable[OutboxMessage], language: str
) -> list[InAppMessage]:
    """Render loaded in-app messages in ``language``, in the order given."""
    items = []
    with translation.override(language):
        for message in messages:
            rendered = render(message.topic, message.params, language)
            date_text = format_date(message.created_at)
            items.append(InAppMessage(date_text, rendered.subject, rendered.body))
    return items


def _date(value: str) -> dt.date | dt.datetime:
    """Parse an ISO 8601 date or datetime from the message parameters."""
    if len(value) == len("2025-01-31"):
        return dt.date.fromisoformat(value)
    return dt.datetime.fromisoformat(value)


def _render_promotion(params: Mapping[str, Any], language: str) -> RenderedMessage:
    names = {"tier": params["tier"], "from_tier": params.get("from_tier")}
    subject = gettext("You are now %(tier)s") % names
    if names["from_tier"]:
        body = (
            gettext(
                "Congratulations! Your tier has gone up from %(from_tier)s to %(tier)s."
            )
            % names
        )
    else:
        body = gettext("Congratulations! Your tier is now %(tier)s.") % names
    return RenderedMessage(subject, body)


def _render_demotion(params: Mapping[str, Any], language: str) -> RenderedMessage:
    names = {"tier": params["tier"], "from_tier": params.get("from_tier")}
    subject = gettext("Your tier is now %(tier)s") % names
    if names["from_tier"]:
        body = gettext("Your tier has changed from %(from_tier)s to %(tier)s.") % names
    else:
        body = gettext("Your tier has changed to %(tier)s.") % names
    return RenderedMessage(subject, body)


def _join(*sentences: str) -> str:
    """Join sentences the way the active language writes them.

    Chinese puts no space after its full stop; English needs one.
    """
    separator = "" if (get_language() or "").startswith("zh") else " "
    return separator.join(sentence for sentence in sentences if sentence)


def _benefit_code_sentence(params: Mapping[str, Any]) -> str:
    if not params.get("code"):
        return ""
    return gettext("Your code is %(code)s.") % {"code": params["code"]}


def _render_benefit_issued(params: Mapping[str, Any], language: str) -> RenderedMessage:
    benefit = params["benefit"]
    subject = gettext("New benefit: %(benefit)s") % {"benefit": benefit}
    validity = ""
    if params.get("expires_at"):
        date_text = format_date(_date(params["expires_at"]))
        validity = gettext("It is valid until %(date)s.") % {"date": date_text}
    body = _join(
        gettext("You have received %(benefit)s.") % {"benefit": benefit},
        _benefit_code_sentence(params),
        validity,
    )
    return RenderedMessage(subject, body)


def _render_benefit_expiring(
    params: Mapping[str, Any], language: str
) -> RenderedMessage:
    names = {
        "benefit": params["benefit"],
        "date": format_date(_date(params["expires_at"])),
    }
    subject = gettext("%(benefit)s expires soon") % names
    body = _join(
        gettext("Your benefit %(benefit)s expires on %(date)s.") % names,
        _benefit_code_sentence(params),
    )
    return RenderedMessage(subject, body)


def _render_review_warning(params: Mapping[str, Any], language: str) -> RenderedMessage:
    tier = params["tier"]
    subject = gettext("Your %(tier)s tier is at risk") % {"tier": tier}
    # An unsaved warning built from the stored copy of its fields, so that
    # rendering needs no query and survives a later change of the tier name.
    warning = ReviewWarning(
        tier=Tier(name=tier),
        review_at=dt.datetime.fromisoformat(params["review_at"]),
        shortfall=params["shortfall"],
    )
    return RenderedMessage(subject, warning_text(warning, language))


def _render_nudge(params: Mapping[str, Any], language: str) -> RenderedMessage:
    names = {"tier": params["tier"], "missing": describe_unmet(params["shortfall"])}
    if params["goal"] == "keep":
        names["date"] = format_date(_date(params["review_at"]))
        subject = gettext("Keep your %(tier)s tier") % names
        if params.get("in_grace"):
            # Translators: "missing" is a shortfall such as "¥800 more net
            # spend" and "date" a full date.
            body = gettext(
                "At your current pace you would still need %(missing)s when your "
                "grace period ends on %(date)s to keep %(tier)s."
            )
        else:
            body = gettext(
                "At your current pace you would still need %(missing)s at your "
                "review on %(date)s to keep %(tier)s."
            )
        return RenderedMessage(subject, body % names)
    subject = gettext("You are close to %(tier)s") % names
    pace = ""
    if params.get("projected_on"):
        pace = gettext("At your pace you get there by %(date)s.") % {
            "date": format_date(_date(params["projected_on"]))
        }
    # Translators: "missing" is a shortfall such as "¥800 more net spend".
    body = _join(gettext("You need %(missing)s to reach %(tier)s.") % names, pace)
    return RenderedMessage(subject, body)


_RENDERERS: dict[str, Callable[[Mapping[str, Any], str], RenderedMessage]] = {
    Topic.PROMOTION: _render_promotion,
    Topic.DEMOTION: _render_demotion,
    Topic.BENEFIT_ISSUED: _render_benefit_issued,
    Topic.BENEFIT_EXPIRING: _render_benefit_expiring,
    Topic.REVIEW_WARNING: _render_review_warning,
    Topic.NUDGE: _render_nudge,
}
