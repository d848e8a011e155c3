"""The outbox sender, a django-q2 task that delivers due messages.

A run claims due messages in batches, marking them sending with its own
claim token, and sends each through its channel's backend. Two runs never
claim the same message, so a message is sent once. The one exception is a
run that outlives CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS: its claims count
as abandoned and another run sends them again, which is why webhook
requests carry an Idempotency-Key header.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from collections import Counter
from typing import cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from members.delivery import (
    Backend,
    DeliveryError,
    RecipientMissing,
    configured_backends,
)
from members.models import OutboxMessage

logger = logging.getLogger(__name__)

Status = OutboxMessage.Status
# The max_length of OutboxMessage.last_error.
MAX_ERROR_LENGTH = 500


def retry_delay(attempts: int) -> dt.timedelta:
    """Return the wait after the ``attempts``-th failed attempt.

    The first retry waits CRM_NOTIFICATION_RETRY_SECONDS, and each further
    one twice as long as the one before, up to
    CRM_NOTIFICATION_RETRY_MAX_SECONDS.
    """
    first = settings.CRM_NOTIFICATION_RETRY_SECONDS
    cap = settings.CRM_NOTIFICATION_RETRY_MAX_SECONDS
    # The exponent is bounded so a large attempt count cannot overflow.
    seconds = min(first * 2 ** min(max(attempts - 1, 0), 40), cap)
    return dt.timedelta(seconds=seconds)


def send_due_messages(now: dt.datetime | None = None) -> dict[str, int]:
    """Send the messages that are due, batch by batch, and count the outcomes.

    ``now`` fixes the clock for tests. By default each batch uses the
    current time. A run claims no new batch once half the django-q2 task
    timeout has passed, so it ends before the cluster stops it, and the
    every-minute schedule sends the rest. Returns the count per outcome:
    sent, skipped, retry and failed.
    """
    backends = configured_backends()
    timeout = cast(int, settings.Q_CLUSTER.get("timeout", 600))
    deadline = time.monotonic() + timeout / 2
    outcomes: Counter[str] = Counter()
    while True:
        clock = now or timezone.now()
        messages = claim_due_messages(clock, settings.CRM_NOTIFICATION_BATCH_SIZE)
        if not messages:
            break
        for message in messages:
            outcomes[_send(message, backends, clock)] += 1
        if time.monotonic() > deadline:
            logger.info("outbox sender stops early to stay within the task timeout")
            break
    if outcomes:
        logger.info("outbox sender finished: %s", dict(outcomes))
    return dict(outcomes)


def _due(now: dt.datetime) -> Q:
    abandoned_before = now - dt.timedelta(
        seconds=settings.CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS
    )
    return Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Status.SENDING, claimed_at__lt=abandoned_before
    )


def claim_due_messages(now: dt.datetime, limit: int) -> list[OutboxMessage]:
    """Mark up to ``limit`` due messages sending under a new claim token.

    Due are pending messages whose next attempt has come, and sending ones
    whose claim is abandoned. Each claim counts as an attempt, so a message
    whose sends keep crashing the run still reaches the attempt limit.
    Returns the claimed messages with their members.
    """
    token = uuid.uuid4().hex
    due = OutboxMessage.objects.filter(_due(now)).order_by("next_attempt_at", "pk")
    if connection.features.has_select_for_update_skip_locked:
        # PostgreSQL: concurrent runs skip each other's locked rows instead
        # of waiting for them, and the short transaction releases the locks.
        with transaction.atomic():
            rows = list(
                due.select_for_update(skip_locked=True).values_list(
                    "pk", "member_id", "status"
                )[:limit]
            )
            _mark_claimed(rows, now, token)
    else:
        # SQLite locks the whole database for a write, so the conditional
        # UPDATE in _mark_claimed alone keeps two runs from claiming a row.
        rows = list(due.values_list("pk", "member_id", "status")[:limit])
        _mark_claimed(rows, now, token)
    claimed_ids = [row[0] for row in rows]
    return list(
        OutboxMessage.objects.filter(
            pk__in=claimed_ids, claim_token=token, status=Status.SENDING
        )
        .select_related("member")
        .order_by("next_attempt_at", "pk")
    )


def _mark_claimed(
    rows: list[tuple[int, int, str]], now: dt.datetime, token: str
) -> None:
    for pk, member_id, status in rows:
        if status == Status.SENDING:
            logger.warning(
                "outbox message %s for member %s: the claim of a previous run "
                "expired, sending it again",
                pk,
                member_id,
            )
    # The due condition is repeated, so a row that another run claimed since
    # the SELECT is left out.
    OutboxMessage.objects.filter(_due(now), pk__in=[row[0] for row in rows]).update(
        status=Status.SENDING,
        claim_token=token,
        claimed_at=now,
        attempts=F("attempts") + 1,
    )


def _send(
    message: OutboxMessage, backends: dict[str, Backend], now: dt.datetime
) -> str:
    """Send one claimed message, record the outcome and return its name."""
    backend = backends.get(message.channel)
    try:
        if backend is None:
            raise DeliveryError(
                f"No backend named {message.channel!r} is in "
                "CRM_NOTIFICATION_BACKENDS. Add it back to send this message."
            )
        backend.send(message)
    except RecipientMissing as error:
        logger.info(
            "outbox message %s for member %s skipped on %s: %s",
            message.pk,
            message.member_id,
            message.channel,
            error,
        )
        _finish(message, status=Status.SKIPPED, last_error=str(error))
        return "skipped"
    except DeliveryError as error:
        return _record_failure(message, str(error), now)
    except Exception as error:
        # The exception's text can quote personal data (an address, the
        # body), so only its type and the stack without values are logged.
        logger.error(
            "outbox message %s for member %s: unexpected %s while sending\n%s",
            message.pk,
            message.member_id,
            type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)),
        )
        return _record_failure(message, f"Unexpected {type(error).__name__}.", now)
    _finish(message, status=Status.SENT, sent_at=timezone.now(), last_error="")
    return "sent"


def _finish(message: OutboxMessage, **fields: object) -> bool:
    """Store the outcome of a send unless another run took over the claim."""
    updated = OutboxMessage.objects.filter(
        pk=message.pk, claim_token=message.claim_token, status=Status.SENDING
    ).update(claim_token="", **fields)
    if not updated:
        logger.warning(
            "outbox message %s for member %s: another run took over the claim "
            "before this send ended, so it may have been sent twice",
            message.pk,
            message.member_id,
        )
    return bool(updated)


def _record_failure(message: OutboxMessage, error: str, now: dt.datetime) -> str:
    error = error[:MAX_ERROR_LENGTH]
    max_attempts = settings.CRM_NOTIFICATION_MAX_ATTEMPTS
    if message.attempts >= max_attempts:
        logger.error(
            "outbox message %s for member %s failed permanently after %d "
            "attempts on %s: %s",
            message.pk,
            message.member_id,
            message.attempts,
            message.channel,
            error,
        )
        _finish(message, status=Status.FAILED, last_error=error)
        return "failed"
    next_attempt_at = now + retry_delay(message.attempts)
    logger.warning(
        "outbox message %s for member %s: attempt %d of %d on %s failed, "
        "retrying at %s: %s",
        message.pk,
        message.member_id,
        message.attempts,
        max_attempts,
        message.channel,
        next_attempt_at.isoformat(),
        error,
    )
    _finish(
        message,
        status=Status.PENDING,
        next_attempt_at=next_attempt_at,
        last_error=error,
    )
    return "retry"
