"""Scheduled expiry of grants and the warnings sent before it.

Both jobs are idempotent: expiring is a conditional UPDATE of issued grants
past their expiry, and each warning is sent once, recorded in
Grant.expiry_warned_at and keyed by grant in the notification outbox.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from benefits.models import Grant
from members.notifications import notify

logger = logging.getLogger(__name__)

Status = Grant.Status

# Grants expired or warned per UPDATE or per run.
BATCH_SIZE = 1000
WARNING_LIMIT = 5000


def expire_grants(now: dt.datetime | None = None) -> dict[str, int]:
    """Mark issued grants whose expiry has passed as expired.

    Redeemed, ended and rejected grants keep their status. A grant redeemed
    while this runs stays redeemed: each UPDATE re-checks the status.
    """
    now = now or timezone.now()
    logger.info("grant expiry started as_of=%s", now.isoformat())
    due = Grant.objects.filter(status=Status.ISSUED, expires_at__lte=now)
    expired = 0
    first_ids: list[int] = []
    while True:
        batch = list(due.order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE])
        if not batch:
            break
        expired += Grant.objects.filter(
            pk__in=batch, status=Status.ISSUED, expires_at__lte=now
        ).update(status=Status.EXPIRED)
        first_ids.extend(batch[: 50 - len(first_ids)])
    logger.info("grant expiry finished: expired=%d first_grants=%s", expired, first_ids)
    return {"expired": expired}


def warn_expiring_grants(now: dt.datetime | None = None) -> dict[str, int]:
    """Queue one "benefit expiring" message per issued grant expiring soon.

    Soon means within CRM_BENEFIT_EXPIRY_WARNING_DAYS days of ``now``
    (default: the current time). A grant is warned at most once.
    """
    now = now or timezone.now()
    days = settings.CRM_BENEFIT_EXPIRY_WARNING_DAYS
    logger.info("grant expiry warnings started as_of=%s days=%d", now.isoformat(), days)
    expiring = (
        Grant.objects.filter(
            status=Status.ISSUED,
            expires_at__gt=now,
            expires_at__lte=now + dt.timedelta(days=days),
            expiry_warned_at__isnull=True,
        )
        .select_related("benefit")
        .order_by("expires_at", "pk")[:WARNING_LIMIT]
    )
    warned_ids: list[int] = []
    for grant in expiring:
        with transaction.atomic():
            claimed = Grant.objects.filter(
                pk=grant.pk, expiry_warned_at__isnull=True
            ).update(expiry_warned_at=now)
            if not claimed:
                continue
            notify(
                grant.member_id,
                "benefit_expiring",
                grant.notification_params(),
                key=f"grant-expiring:{grant.pk}",
            )
        warned_ids.append(grant.pk)
    logger.info(
        "grant expiry warnings finished: warned=%d grants=%s",
        len(warned_ids),
        warned_ids[:50],
    )
    return {"warned": len(warned_ids)}
