"""The audit log of staff actions on member data.

Services call :func:`record_event` inside their own transaction, so an
action and its audit row are saved or rolled back together. The log stores
ids, counts and formats, never the personal data that was seen or changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import AuditAction, AuditEvent, Member

logger = logging.getLogger(__name__)


def _actor(user: AbstractBaseUser | AnonymousUser | None) -> tuple[Any, str]:
    if user is None or not user.is_authenticated:
        return None, ""
    return user, user.get_username()


def record_event(
    user: AbstractBaseUser | AnonymousUser | None,
    action: AuditAction | str,
    member: Member | int | None = None,
    *,
    count: int = 1,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one audit row for ``user`` doing ``action`` to ``member``.

    ``member`` may be a member or its id. For an action on many members,
    such as an export of a list, leave it empty and set ``count``.
    """
    actor, username = _actor(user)
    member_id = member.pk if isinstance(member, Member) else member
    event = AuditEvent.objects.create(
        user=actor,
        username=username,
        action=action,
        member_id=member_id,
        count=count,
        detail=detail or {},
    )
    logger.info(
        "audit %s by user %s on member %s (count %d)",
        event.action,
        getattr(actor, "pk", None),
        member_id,
        count,
    )
    return event


def record_events(
    user: AbstractBaseUser | AnonymousUser | None,
    action: AuditAction | str,
    member_ids: Iterable[int],
    *,
    detail: dict[str, Any] | None = None,
) -> int:
    """Add one audit row per member in ``member_ids``, in one insert."""
    actor, username = _actor(user)
    events = [
        AuditEvent(
            user=actor,
            username=username,
            action=action,
            member_id=member_id,
            detail=detail or {},
        )
        for member_id in dict.fromkeys(member_ids)
    ]
    AuditEvent.objects.bulk_create(events, batch_size=1000)
    logger.info(
        "audit %s by user %s on %d members",
        action,
        getattr(actor, "pk", None),
        len(events),
    )
    return len(events)
