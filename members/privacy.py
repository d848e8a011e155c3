"""Masking of members' personal data for staff without the permission.

Staff who lack ``members.view_personal_data`` see phones as ``138****5678``,
e-mails as ``a***@example.com`` and names as ``张*``. Every surface that shows
a member (admin, exports, API responses, logs) goes through these helpers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

# Only types come from django.contrib.auth: the logging filter in
# crm/logging.py imports this module while settings load, before any model.
if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

PERSONAL_DATA_PERMISSION = "members.view_personal_data"

MASK = "****"
_DIGITS = re.compile(r"\d")


def can_view_personal_data(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Return whether ``user`` may see members' personal data unmasked."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    has_perm = getattr(user, "has_perm", None)
    if has_perm is None:
        return False
    return bool(has_perm(PERSONAL_DATA_PERMISSION))


def mask_phone(value: str) -> str:
    """Keep the first three and last four digits of a phone, as in 138****5678.

    A leading country code stays (``+86 138****5678``). A value with fewer
    than eight digits keeps only its last two digits.
    """
    value = (value or "").strip()
    if not value:
        return ""
    prefix = ""
    digits = "".join(_DIGITS.findall(value))
    if value.startswith("+86") and len(digits) > 11:
        prefix, digits = "+86 ", digits[2:]
    elif value.startswith("+"):
        prefix = "+"
    if len(digits) < 8:
        return prefix + MASK + digits[-2:]
    return f"{prefix}{digits[:3]}{MASK}{digits[-4:]}"


def mask_email(value: str) -> str:
    """Keep the first character of the local part and the domain: a***@x.com."""
    value = (value or "").strip()
    if not value:
        return ""
    local, at, domain = value.rpartition("@")
    if not at:
        return value[:1] + "***"
    return f"{local[:1]}***@{domain}"


def mask_name(value: str) -> str:
    """Keep the first character of a name: 张* or J***."""
    value = (value or "").strip()
    if not value:
        return ""
    return value[0] + "*" * min(max(len(value) - 1, 1), 3)


def phone_for(user: AbstractBaseUser | AnonymousUser | None, value: str) -> str:
    return value if can_view_personal_data(user) else mask_phone(value)


def email_for(user: AbstractBaseUser | AnonymousUser | None, value: str) -> str:
    return value if can_view_personal_data(user) else mask_email(value)


def name_for(user: AbstractBaseUser | AnonymousUser | None, value: str) -> str:
    return value if can_view_personal_data(user) else mask_name(value)


# An e-mail address inside free text, such as a log message or a file cell.
_EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

# A phone-like run inside free text: an optional + or 00, then digit groups
# joined by at most one space or hyphen, as in +86 138 1234 5678,
# 010-8888-6666 or (021) 6666 8888. Every group after the first has at
# least three digits, so dates (2026-12-04) do not match. A dot ends a run,
# so seconds with microseconds (56.607607) and amounts stay readable. Letters
# may touch the run (tel13812345678). A run counts as a phone only when it
# contains MIN_PHONE_DIGITS digits or more.
_PHONE_IN_TEXT = re.compile(
    r"(?<![\d+])(?:\+|00)?(?:\(\d+\)|\d+)(?:[ \-]?(?:\(\d{2,}\)|\d{3,}))*(?!\d)"
)
MIN_PHONE_DIGITS = 7


def _mask_phone_match(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(_DIGITS.findall(text)) < MIN_PHONE_DIGITS:
        return text
    return mask_phone(text)


def mask_text(value: str) -> str:
    """Mask every e-mail address and phone-like digit run inside ``value``.

    Used where free text may quote personal data: log messages, rejected
    import values. A number of seven digits or more, such as a large id or
    an amount, is masked as well, because it cannot be distinguished from a
    phone.
    """
    if not value:
        return value
    value = _EMAIL_IN_TEXT.sub(lambda match: mask_email(match.group(0)), value)
    return _PHONE_IN_TEXT.sub(_mask_phone_match, value)


# The mask of each personal field of members.Member.
MEMBER_FIELD_MASKS: dict[str, Callable[[str], str]] = {
    "name": mask_name,
    "phone": mask_phone,
    "phone_e164": mask_phone,
    "email": mask_email,
}


def member_label(name: str, pk: int | None) -> str:
    """Return how a member is named where anyone may read it: 张* #12."""
    masked = mask_name(name)
    if pk is None:
        return masked
    return f"{masked} #{pk}" if masked else f"#{pk}"


# Import columns that hold one personal value each, by the names the import
# maps headers to, with the mask of each.
PERSONAL_COLUMN_MASKS: dict[str, Callable[[str], str]] = {
    "name": mask_name,
    "phone": mask_phone,
    "phone_e164": mask_phone,
    "email": mask_email,
}


def mask_cell(column: str, value: str) -> str:
    """Mask a file's cell by its column: wholly in a personal column.

    A rejected phone or e-mail is often malformed (``135.6666.7777``,
    ``a@@b.cn``), so the patterns of :func:`mask_text` would not find it.
    Other columns go through ``mask_text``.
    """
    mask = PERSONAL_COLUMN_MASKS.get((column or "").strip().lower())
    if mask is not None:
        return mask(value) if value else value
    return mask_text(value)
