"""Channel tokens: issuing them, and authenticating event API requests with them.

A token reads ``<prefix>.<secret>``. The prefix is 12 hexadecimal characters
that find the ChannelToken row, and the secret is 43 URL-safe characters
(256 random bits). Only the SHA-256 hash of the whole token is stored. A
fast hash is enough because the secret is random, not chosen by a person, so
there is nothing to guess from a dictionary.

Clients send ``Authorization: Bearer <token>``. Only views that list
ChannelTokenAuthentication accept it: the event API and the member tier
endpoint. The admin and the other APIs do not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from members.models import Channel, ChannelToken

logger = logging.getLogger(__name__)

KEYWORD = "Bearer"
PREFIX_BYTES = 6
SECRET_BYTES = 32
# last_used_at is written at most this often per token, so a busy till does
# not turn every request into an UPDATE of the same row.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
# Compared against when no token has the prefix, so that an unknown prefix
# costs the same hash and comparison as a wrong secret.
_NO_MATCH_HASH = "0" * 64


def hash_token(token: str) -> str:
    """Return the hexadecimal SHA-256 of a token, the form stored in the database."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(channel: Channel, name: str) -> tuple[ChannelToken, str]:
    """Create a token for ``channel``; return the row and the token itself.

    The caller shows the token once: it cannot be recovered from the row.
    """
    prefix = secrets.token_hex(PREFIX_BYTES)
    token = f"{prefix}.{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ChannelToken.objects.create(
        channel=channel, name=name, prefix=prefix, token_hash=hash_token(token)
    )
    logger.info(
        "channel token created token_id=%s channel_id=%s prefix=%s",
        row.pk,
        channel.pk,
        prefix,
    )
    return row, token


def revoke_tokens(tokens: QuerySet[ChannelToken]) -> int:
    """Revoke the tokens in ``tokens`` that are still active; return how many."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


def _find_token(token: str) -> ChannelToken | None:
    """Return the active or revoked row whose hash matches ``token``, or None."""
    prefix, dot, secret = token.partition(".")
    row = None
    if dot and prefix and secret:
        row = (
            ChannelToken.objects.select_related("channel").filter(prefix=prefix).first()
        )
    expected = row.token_hash if row is not None else _NO_MATCH_HASH
    if not hmac.compare_digest(expected, hash_token(token)):
        return None
    return row


def _touch(row: ChannelToken) -> None:
    """Record that the token was used, at most once per LAST_USED_RESOLUTION."""
    now = timezone.now()
    if row.last_used_at is not None and now - row.last_used_at < LAST_USED_RESOLUTION:
        return
    # Runs in autocommit before the view opens its transaction, so the row
    # lock is released at once and parallel requests do not queue on it.
    ChannelToken.objects.filter(pk=row.pk).update(last_used_at=now)
    row.last_used_at = now


class ChannelTokenAuthentication(BaseAuthentication):
    """Authenticate ``Authorization: Bearer <token>`` as a channel token.

    On success ``request.auth`` is the ChannelToken and ``request.user`` is
    AnonymousUser, because a channel is no staff user and gets none of a
    user's permissions. Returns None without a Bearer header, so the view
    responds with 401 and a WWW-Authenticate header.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed(
                _(
                    "Invalid Authorization header. Send 'Bearer <token>' with the "
                    "token as create_channel_token printed it."
                )
            )
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed(
                _("Invalid token: a channel token contains only ASCII characters.")
            ) from None

        row = _find_token(token)
        if row is None:
            logger.info("event API rejected an unknown or wrong token")
            raise AuthenticationFailed(_("Invalid token."))
        if row.is_revoked:
            logger.info("event API rejected a revoked token token_id=%s", row.pk)
            raise AuthenticationFailed(
                _("This token was revoked. Ask the CRM team for a new one.")
            )
        _touch(row)
        return AnonymousUser(), row

    def authenticate_header(self, request: Request) -> str:
        return f'{KEYWORD} realm="api"'


class HasChannelToken(BasePermission):
    """Allow requests authenticated by an active channel token, and no others."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ChannelToken) and not request.auth.is_revoked


def token_of(request: Request) -> ChannelToken:
    """Return the channel token that authenticated ``request``.

    Call it only in views guarded by HasChannelToken.
    """
    token = request.auth
    if not isinstance(token, ChannelToken):
        raise TypeError("The request was not authenticated by a channel token.")
    return token


class ChannelTokenScheme(OpenApiAuthenticationExtension):
    """Describes ChannelTokenAuthentication in the OpenAPI schema."""

    target_class = "members.api_auth.ChannelTokenAuthentication"
    name = "channelToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A channel token from `manage.py create_channel_token`. It acts "
                "for its channel only."
            ),
        }
