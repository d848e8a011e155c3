"""Signed, expiring links to a member's own progress page.

A token is ``<public_id hex>:<timestamp>:<signature>``, made by Django's
``TimestampSigner`` with SECRET_KEY and a salt used for nothing else. The
signature covers the member's random ``public_id`` and the signing time, so
changing any character makes the token invalid. The database pk never appears
in a link. Changing a member's ``public_id`` revokes every link issued to them.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.core import signing
from django.urls import reverse

from members.models import Member

SALT = "members.links.member-page"


class MemberLinkError(Exception):
    """Base class for member page links that cannot be used."""


class InvalidMemberLink(MemberLinkError):
    """Raised for a forged, edited or garbled token, or one whose member is gone."""


class ExpiredMemberLink(MemberLinkError):
    """Raised for a correctly signed token older than the configured max age."""


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def max_link_age() -> dt.timedelta:
    """Return how long a link stays valid (CRM_MEMBER_LINK_MAX_AGE_DAYS)."""
    return dt.timedelta(days=settings.CRM_MEMBER_LINK_MAX_AGE_DAYS)


def member_token(member: Member) -> str:
    """Sign a token for ``member``'s page, valid from now for max_link_age()."""
    return _signer().sign(member.public_id.hex)


def member_page_url(member: Member) -> str:
    """Return the site-relative URL of ``member``'s page, e.g. "/m/<token>/".

    The caller adds the scheme and host, for example with
    ``request.build_absolute_uri()``.
    """
    return reverse("members:page", args=[member_token(member)])


def member_from_token(token: str) -> Member:
    """Return the member a token was signed for, with the tier pre-joined.

    Raises ExpiredMemberLink when the signature is valid but older than
    max_link_age(), and InvalidMemberLink for anything else that fails. The
    signature is checked before the age, so a forged token is never reported
    as expired.
    """
    try:
        value = _signer().unsign(token, max_age=max_link_age())
    except signing.SignatureExpired as error:
        raise ExpiredMemberLink(str(error)) from None
    except signing.BadSignature as error:
        raise InvalidMemberLink(str(error)) from None

    try:
        public_id = uuid.UUID(hex=value)
    except ValueError:
        # Reached only if other code signs a non-UUID value with this salt.
        raise InvalidMemberLink(f"Signed value {value!r} is not a UUID.") from None

    try:
        return Member.objects.select_related("tier").get(public_id=public_id)
    except Member.DoesNotExist:
        raise InvalidMemberLink(
            "No member has this link's public_id. The member was deleted or the "
            "link was revoked."
        ) from None
