"""Masking of members' personal data for staff without the permission.

Staff who lack ``members.view_personal_data`` see phones as ``138****5678``,
e-mails as ``a***@example.com`` and names as ``张*``. Every surface that shows
a member (admin, exports, API responses, logs) goes through these helpers.
"""

from __future__ import annotations

import re

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin

PERSONAL_DATA_PERMISSION = "members.view_personal_data"

MASK = "****"
_DIGITS = re.compile(r"\d")


def can_view_personal_data(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Return whether ``user`` may see members' personal data unmasked."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if not isinstance(user, PermissionsMixin):
        return False
    return user.has_perm(PERSONAL_DATA_PERMISSION)


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
