"""Redeeming grants, by channels through the API and by staff in the admin.

A redemption is one conditional UPDATE from "issued" to "redeemed". Of two
redemptions of one code at once, the database lets exactly one match, and the
other is rejected with the time of the first. A channel that retries a
request with the same channel and reference gets the same success back.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone

from benefits.codes import normalize_code
from benefits.models import Grant
from members.models import Channel

logger = logging.getLogger(__name__)

Status = Grant.Status


class RedemptionError(Exception):
    """Base class of redemption failures; ``code`` names the failure for APIs."""

    code = "redemption_failed"


class GrantNotFound(RedemptionError):
    """Raised when no grant has the code or id given."""

    code = "not_found"


class InvalidRedemption(RedemptionError):
    """Raised when the request itself is incomplete, e.g. a missing reference."""

    code = "invalid"


class RedemptionRejected(RedemptionError):
    """Raised when the grant exists but cannot be redeemed in its current state."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Redemption:
    grant: Grant
    # True when this request repeated an earlier successful one.
    replayed: bool


def _find(code: str | None, grant_id: int | None) -> Grant:
    if (code is None) == (grant_id is None):
        raise InvalidRedemption("Give either a grant code or a grant id, not both.")
    grants = Grant.objects.select_related("benefit", "redeemed_channel")
    try:
        if code is not None:
            return grants.get(code=normalize_code(code))
        assert grant_id is not None
        return grants.get(pk=grant_id)
    except Grant.DoesNotExist:
        lookup = f"code {code!r}" if code is not None else f"id {grant_id}"
        raise GrantNotFound(
            f"No benefit grant has {lookup}. Check the code and try again."
        ) from None


def _same_request(
    grant: Grant,
    channel: Channel | None,
    reference: str,
    user: AbstractBaseUser | None,
) -> bool:
    if grant.status != Status.REDEEMED:
        return False
    if channel is not None:
        return (
            grant.redeemed_channel_id == channel.pk
            and grant.redemption_reference == reference
        )
    # A staff redemption is repeated when the same user redeemed it.
    return (
        grant.redeemed_channel_id is None
        and user is not None
        and grant.redeemed_by_id == user.pk
        and grant.redemption_reference == reference
    )


def _rejection(grant: Grant, now: dt.datetime) -> RedemptionRejected:
    code = grant.code
    if grant.status == Status.REDEEMED:
        assert grant.redeemed_at is not None
        where = (
            f"in channel {grant.redeemed_channel.code}"
            if grant.redeemed_channel
            else "by staff"
        )
        reference = (
            f", reference {grant.redemption_reference!r}"
            if grant.redemption_reference
            else ""
        )
        return RedemptionRejected(
            "already_redeemed",
            f"Code {code} was already redeemed at {grant.redeemed_at.isoformat()} "
            f"{where}{reference}.",
        )
    if grant.status == Status.EXPIRED or (
        grant.status == Status.ISSUED
        and grant.expires_at is not None
        and grant.expires_at <= now
    ):
        expired = (
            grant.expires_at.isoformat() if grant.expires_at else "an earlier time"
        )
        return RedemptionRejected(
            "expired", f"Code {code} expired at {expired} and cannot be redeemed."
        )
    if grant.status == Status.ENDED:
        ended = grant.ended_at.isoformat() if grant.ended_at else "an earlier time"
        return RedemptionRejected(
            "ended",
            f"Code {code} ended at {ended} when the member left the tier, "
            "so it cannot be redeemed.",
        )
    if grant.status == Status.AWAITING_APPROVAL:
        return RedemptionRejected(
            "awaiting_approval",
            f"Code {code} is waiting for staff approval; it can be redeemed once "
            "it is approved.",
        )
    if grant.status == Status.AWAITING_STOCK:
        return RedemptionRejected(
            "awaiting_stock",
            f"Code {code} is waiting for stock; it can be redeemed once it is issued.",
        )
    if grant.status == Status.REJECTED:
        return RedemptionRejected(
            "rejected", f"Code {code} was rejected by staff and cannot be redeemed."
        )
    if grant.origin == Grant.Origin.ONGOING:
        return RedemptionRejected(
            "not_redeemable",
            f"Code {code} is an ongoing benefit that applies while the member is "
            "in the tier; there is nothing to redeem.",
        )
    valid_from = grant.benefit.valid_from
    if valid_from is not None and now < valid_from:
        return RedemptionRejected(
            "not_yet_valid",
            f"Code {code} can be redeemed from {valid_from.isoformat()} on.",
        )
    return RedemptionRejected(
        "not_redeemable", f"Code {code} cannot be redeemed right now; try again."
    )


def redeem(
    *,
    code: str | None = None,
    grant_id: int | None = None,
    channel: Channel | None = None,
    reference: str = "",
    user: AbstractBaseUser | None = None,
    now: dt.datetime | None = None,
) -> Redemption:
    """Redeem one grant, found by ``code`` or ``grant_id``.

    A channel redemption needs the channel's own ``reference`` for it (an
    order number, say); a staff redemption gives ``user`` instead. Raises
    GrantNotFound, InvalidRedemption, or RedemptionRejected with a message
    that gives the reason and, for a grant redeemed before, the time.
    """
    reference = reference.strip()
    if channel is not None and not reference:
        raise InvalidRedemption(
            "A reference is required for a channel redemption, e.g. the order "
            "number it belongs to."
        )
    if channel is None and user is None:
        raise InvalidRedemption("Give the channel or the staff user that redeems.")
    now = now or timezone.now()
    grant = _find(code, grant_id)

    redeemable = Grant.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now),
        pk=grant.pk,
        status=Status.ISSUED,
    ).exclude(origin=Grant.Origin.ONGOING)
    if grant.benefit.valid_from is not None and now < grant.benefit.valid_from:
        redeemable = redeemable.none()
    redeemed = redeemable.update(
        status=Status.REDEEMED,
        redeemed_at=now,
        redeemed_channel=channel,
        redemption_reference=reference,
        redeemed_by=user,
    )
    grant.refresh_from_db()
    if redeemed:
        # The reference is the channel's free text, so %r escapes line
        # breaks and control characters that would otherwise forge log lines.
        logger.info(
            "grant %d redeemed member_id=%s channel_id=%s reference=%r user_id=%s",
            grant.pk,
            grant.member_id,
            channel.pk if channel else "-",
            reference,
            user.pk if user else "-",
        )
        return Redemption(grant, replayed=False)
    if _same_request(grant, channel, reference, user):
        return Redemption(grant, replayed=True)
    rejection = _rejection(grant, now)
    logger.info(
        "redemption of grant %d rejected: %s member_id=%s channel_id=%s reference=%r",
        grant.pk,
        rejection.code,
        grant.member_id,
        channel.pk if channel else "-",
        reference,
    )
    raise rejection
