"""Money, count and date formatting for member-facing pages.

Both page languages (Simplified Chinese and English) group thousands with a
comma and write the currency symbol before the amount, so money and counts do
not depend on the active language. Dates do, because their format strings are
translated ("2 Jan 2025" in English, "2025年1月2日" in Chinese).
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import dateformat
from django.utils.translation import pgettext

from tiers.models import MONEY_METRICS

CURRENCY_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}
CENT = Decimal("0.01")


def currency_symbol(currency: str | None = None) -> str:
    """Return the symbol for an ISO 4217 code, or the code itself if it has none.

    ``currency`` defaults to ``settings.CRM_CURRENCY``.
    """
    code = (currency or settings.CRM_CURRENCY).upper()
    return CURRENCY_SYMBOLS.get(code, code)


def format_money(
    amount: Decimal | int,
    currency: str | None = None,
    *,
    rounding: str = ROUND_HALF_UP,
) -> str:
    """Format an amount as "¥1,240" when it is whole, or "¥1,240.50" otherwise.

    The amount is first rounded to cents with ``rounding``. A code without a
    symbol is followed by a space ("CHF 1,240"), and a negative amount puts
    the minus sign before the symbol ("-¥40").
    """
    cents = Decimal(amount).quantize(CENT, rounding=rounding)
    if cents == cents.to_integral_value():
        digits = f"{abs(cents):,.0f}"
    else:
        digits = f"{abs(cents):,.2f}"
    symbol = currency_symbol(currency)
    if symbol.isalpha():
        symbol += " "
    sign = "-" if cents < 0 else ""
    return f"{sign}{symbol}{digits}"


def format_count(value: Decimal | int, *, rounding: str = ROUND_FLOOR) -> str:
    """Format a count as a whole number with thousands separators ("1,240").

    Growth value can carry fractions of a point. Callers round down what a
    member has, and round up a target or a shortfall.
    """
    whole = Decimal(value).to_integral_value(rounding=rounding)
    return f"{whole:,.0f}"


def format_metric_value(
    metric: str,
    value: Decimal | int,
    *,
    round_up: bool = False,
    currency: str | None = None,
) -> str:
    """Format a metric's value as money for money metrics, else as a count.

    ``round_up`` suits targets and shortfalls, which must never be shown
    smaller than they are.
    """
    if metric in MONEY_METRICS:
        rounding = ROUND_CEILING if round_up else ROUND_HALF_UP
        return format_money(value, currency, rounding=rounding)
    return format_count(value, rounding=ROUND_CEILING if round_up else ROUND_FLOOR)


def local_date(value: dt.date | dt.datetime) -> dt.date:
    """Return the calendar date of ``value`` in the program's time zone.

    Raises ValueError for a naive datetime, because its zone is unknown.
    """
    if not isinstance(value, dt.datetime):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{value!r} is naive. Pass an aware datetime.")
    return value.astimezone(ZoneInfo(settings.TIME_ZONE)).date()


def format_date(value: dt.date | dt.datetime) -> str:
    """Format a date with its year in the active language: "2 Jan 2025"."""
    # Translators: a django.utils.dateformat format string for a full date,
    # e.g. "Y年n月j日". Letters are format codes.
    date_format = pgettext("date format with year", "j M Y")
    return dateformat.format(local_date(value), date_format)


def format_day_month(value: dt.date | dt.datetime) -> str:
    """Format a date without its year in the active language: "31 December"."""
    # Translators: a django.utils.dateformat format string for a day and a
    # month, e.g. "n月j日". Letters are format codes.
    date_format = pgettext("date format without year", "j F")
    return dateformat.format(local_date(value), date_format)
