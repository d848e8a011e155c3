"""Deleting stored rows the program no longer needs.

Idempotency records: the event API stores its response to each request
sent with an Idempotency-Key, so a retry gets the same response. Retries come
within minutes or hours, so a record older than CRM_IDEMPOTENCY_KEY_DAYS is
deleted by the daily ``purge_idempotency_records`` task. A key reused after
that is a new request; the event's (channel, reference) pair still keeps it
from being recorded twice.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.utils import timezone

from members.models import IdempotencyRecord

logger = logging.getLogger(__name__)

# Rows deleted per statement, so a large backlog never holds a long lock.
PURGE_CHUNK = 5000


def purge_idempotency_records(now: dt.datetime | None = None) -> int:
    """Delete idempotency records past their keeping time; return how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.CRM_IDEMPOTENCY_KEY_DAYS)
    logger.info("idempotency purge started cutoff=%s", cutoff.isoformat())
    deleted = 0
    while True:
        ids = list(
            IdempotencyRecord.objects.filter(created_at__lt=cutoff)
            .order_by("pk")
            .values_list("pk", flat=True)[:PURGE_CHUNK]
        )
        if not ids:
            break
        count, _ = IdempotencyRecord.objects.filter(pk__in=ids).delete()
        deleted += count
    logger.info("idempotency purge finished deleted=%d", deleted)
    return deleted
