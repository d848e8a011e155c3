"""The approval queue: staff approve or reject grants, or the deadline approves them.

Every decision is a conditional UPDATE from "waiting for approval", so of a
staff decision and the deadline job acting at once exactly one takes effect,
and the other gets ApprovalError or skips the grant.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from benefits.issuing import notify_issued, return_stock
from benefits.models import Grant

logger = logging.getLogger(__name__)

Status = Grant.Status

# Overdue grants that one run of approve_overdue_grants() approves.
AUTO_APPROVAL_LIMIT = 5000


class ApprovalError(Exception):
    """Raised when a grant cannot be approved or rejected, with the reason."""


def _not_waiting_error(grant: Grant) -> ApprovalError:
    grant.refresh_from_db()
    if grant.status == Status.AWAITING_STOCK:
        return ApprovalError(
            f"Grant {grant.code} is waiting for stock; it joins the approval "
            "queue once the benefit's stock is raised."
        )
    decided = grant.decided_at.isoformat() if grant.decided_at else "an earlier time"
    return ApprovalError(
        f"Grant {grant.code} is not waiting for approval: its status is "
        f"{grant.get_status_display()} (decided at {decided})."
    )


def _issued_fields(grant: Grant, now: dt.datetime) -> dict[str, Any]:
    return {
        "status": Status.ISSUED,
        "decided_at": now,
        "issued_at": now,
        "expires_at": grant.benefit.expiry_for(now),
    }


def approve(
    grant: Grant, user: AbstractBaseUser, now: dt.datetime | None = None
) -> Grant:
    """Approve a waiting grant and issue it now; raise ApprovalError otherwise."""
    now = now or timezone.now()
    fields = _issued_fields(grant, now)
    with transaction.atomic():
        approved = Grant.objects.filter(
            pk=grant.pk, status=Status.AWAITING_APPROVAL
        ).update(decided_by=user, **fields)
        if not approved:
            raise _not_waiting_error(grant)
        grant.refresh_from_db()
        notify_issued(grant)
    logger.info("grant %d approved by user %s", grant.pk, user.pk)
    return grant


def reject(
    grant: Grant, user: AbstractBaseUser, reason: str, now: dt.datetime | None = None
) -> Grant:
    """Reject a waiting grant and give back the stock it holds.

    Raises ApprovalError when the reason is empty or the grant is no longer
    waiting for approval.
    """
    if not reason.strip():
        raise ApprovalError("A reason is required to reject a grant.")
    now = now or timezone.now()
    fields = {
        "status": Status.REJECTED,
        "decided_by": user,
        "decided_at": now,
        "rejection_reason": reason.strip(),
        "stock_taken": False,
    }
    waiting = Grant.objects.filter(pk=grant.pk, status=Status.AWAITING_APPROVAL)
    with transaction.atomic():
        # Two conditional UPDATEs, so the stock is given back only by the
        # rejection that released it.
        if waiting.filter(stock_taken=True).update(**fields):
            return_stock(grant.benefit_id)
        elif not waiting.update(**fields):
            raise _not_waiting_error(grant)
    grant.refresh_from_db()
    logger.info("grant %d rejected by user %s", grant.pk, user.pk)
    return grant


def approve_overdue_grants(now: dt.datetime | None = None) -> dict[str, int]:
    """Approve every grant still waiting after its approval deadline.

    The grant records that it was approved automatically. A grant that staff
    decide while this runs keeps the staff decision.
    """
    now = now or timezone.now()
    logger.info("automatic approval started")
    overdue = (
        Grant.objects.filter(status=Status.AWAITING_APPROVAL, approval_due_at__lte=now)
        .select_related("benefit")
        .order_by("approval_due_at", "pk")[:AUTO_APPROVAL_LIMIT]
    )
    approved_ids: list[int] = []
    for grant in overdue:
        with transaction.atomic():
            fields = _issued_fields(grant, now)
            approved = Grant.objects.filter(
                pk=grant.pk, status=Status.AWAITING_APPROVAL
            ).update(auto_approved=True, **fields)
            if not approved:
                continue
            for name, value in fields.items():
                setattr(grant, name, value)
            grant.auto_approved = True
            notify_issued(grant)
        approved_ids.append(grant.pk)
    logger.info(
        "automatic approval finished: approved=%d grants=%s",
        len(approved_ids),
        approved_ids[:50],
    )
    return {"approved": len(approved_ids)}
