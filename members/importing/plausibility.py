"""Checks on values that parse but cannot be true for a member ledger.

Each check raises InvalidValue with a reason, which the row cleaner turns
into a rejection naming the column and value.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.conf import settings

from members.importing.dates import program_zone
from members.importing.errors import InvalidValue
from members.models import ActivityKind

# Earlier activity dates are typing errors (1924 for 2024) or spreadsheet
# zero dates (1899-12-30), not real events in a member program.
EARLIEST_ACTIVITY_DAY = dt.date(1990, 1, 1)
# Files from stores ahead of the program's time zone, or from a till whose
# clock runs fast, can hold times a few hours ahead of now.
MAX_FUTURE_TIME = dt.timedelta(days=1)
EARLIEST_JOIN_DAY = dt.date(1900, 1, 1)
# Only these roles carry money. Role "other" is in the list because staff
# define such kinds themselves (a top-up, a paid event), and a growth value
# weight per currency unit can apply to any kind.
AMOUNT_ROLES = frozenset(
    {ActivityKind.Role.PURCHASE, ActivityKind.Role.REFUND, ActivityKind.Role.OTHER}
)


def check_occurred_at(moment: dt.datetime, now: dt.datetime) -> dt.datetime:
    """Raise InvalidValue for a time before 1990 or over a day after ``now``."""
    earliest = dt.datetime.combine(EARLIEST_ACTIVITY_DAY, dt.time(), program_zone())
    if moment < earliest:
        raise InvalidValue(f"is before {EARLIEST_ACTIVITY_DAY.isoformat()}")
    if moment > now + MAX_FUTURE_TIME:
        local_now = now.astimezone(program_zone())
        raise InvalidValue(
            f"is more than 1 day in the future (it is now "
            f"{local_now:%Y-%m-%d %H:%M} in {program_zone().key})"
        )
    return moment


def check_joined_on(day: dt.date, today: dt.date) -> dt.date:
    """Raise InvalidValue for a day before 1900 or after ``today``."""
    if day < EARLIEST_JOIN_DAY:
        raise InvalidValue(f"is before {EARLIEST_JOIN_DAY.isoformat()}")
    if day > today:
        raise InvalidValue(f"is in the future (today is {today.isoformat()})")
    return day


def check_quantity(quantity: int, kind: ActivityKind) -> int:
    """Raise InvalidValue for a negative quantity, or 0 on a purchase."""
    if quantity < 0:
        raise InvalidValue("is negative, but a quantity counts items")
    if quantity == 0 and kind.role == ActivityKind.Role.PURCHASE:
        raise InvalidValue("must be at least 1 for a purchase")
    return quantity


def check_amount(amount: Decimal, kind: ActivityKind) -> Decimal:
    """Raise InvalidValue for a non-zero amount on a kind without money, or
    for an amount above CRM_MAX_ACTIVITY_AMOUNT either way."""
    if amount != 0 and kind.role not in AMOUNT_ROLES:
        raise InvalidValue(
            f"must be 0 for kind {kind.code}, because visits, reviews and "
            "referrals carry no amount"
        )
    limit = Decimal(settings.CRM_MAX_ACTIVITY_AMOUNT)
    if abs(amount) > limit:
        raise InvalidValue(
            f"is more than {limit:,} for one activity, which is likely a typing "
            "or export error. Check the value; if it is real, raise "
            "CRM_MAX_ACTIVITY_AMOUNT"
        )
    return amount


def signed_amount(amount: Decimal, kind: ActivityKind) -> Decimal:
    """Return ``amount`` with the sign that ``kind`` stores it with.

    A refund is stored negative whether it is given positive or negative.
    Raises InvalidValue for a non-zero amount on a kind without money and
    for a negative purchase.
    """
    check_amount(amount, kind)
    if kind.role == ActivityKind.Role.REFUND and amount > 0:
        return -amount
    if kind.role == ActivityKind.Role.PURCHASE and amount < 0:
        raise InvalidValue(
            "is negative, but a purchase cannot be; record it with kind refund"
        )
    return amount
