"""Amount parsing: currency symbols, separators and negative notations.

Whether a comma is the decimal mark is decided once per file from the whole
amount column, because "1.234" alone could be either convention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from django.conf import settings

from members.importing.errors import FileRejected, InvalidValue
from members.importing.text import fold_width

# Markers of each currency as they appear next to amounts, compared after
# NFKC (which turns the full-width ￥ into ¥) and upper-casing. The "¥" sign
# also means yen, but this table reads it as yuan (CNY).
CURRENCY_MARKERS = {
    "CNY": ("¥", "RMB", "CNY", "元", "RMB¥"),
    "USD": ("$", "US$", "USD"),
    "EUR": ("€", "EUR"),
    "GBP": ("£", "GBP"),
    "HKD": ("HK$", "HKD"),
    "JPY": ("JPY", "円"),
    "TWD": ("NT$", "TWD"),
    "SGD": ("S$", "SGD"),
    "AUD": ("A$", "AUD"),
    "CAD": ("C$", "CAD"),
    "KRW": ("₩", "KRW"),
    "INR": ("₹", "INR"),
    "CHF": ("CHF",),
}
MAX_DECIMAL_PLACES = 2
# Activity.amount is DecimalField(max_digits=14, decimal_places=2).
MAX_INTEGER_DIGITS = 12

_AMOUNT = re.compile(
    r"(?P<sign1>[-+]?)\s*(?P<prefix>[^\d\s+\-.,()]*)\s*(?P<sign2>[-+]?)\s*"
    r"(?P<number>\d(?:[\d.,\s]*\d)?)\s*(?P<suffix>[^\d\s+\-.,()]*)"
)
_PARENTHESES = re.compile(r"\((?P<inner>.*)\)")
_POINT_STYLE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_COMMA_STYLE = re.compile(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:,\d+)?")


def _currency_of(marker: str) -> str | None:
    store = settings.CRM_CURRENCY
    if marker in CURRENCY_MARKERS.get(store, ()) or marker == store:
        return store
    for code, markers in CURRENCY_MARKERS.items():
        if marker in markers:
            return code
    return None


def _split(text: str) -> tuple[bool, str, list[str]]:
    """Return (negative, digits with separators, currency markers) of an amount."""
    value = fold_width(text).strip().replace("\u2212", "-")
    negative = False
    parenthesised = _PARENTHESES.fullmatch(value)
    if parenthesised:
        negative = True
        value = parenthesised["inner"].strip()
    match = _AMOUNT.fullmatch(value)
    if match is None or (match["sign1"] and match["sign2"]):
        raise InvalidValue("is not a valid amount")
    if "-" in (match["sign1"], match["sign2"]):
        if negative:
            raise InvalidValue("is not a valid amount: it is negative twice")
        negative = True
    markers = [m.upper() for m in (match["prefix"], match["suffix"]) if m]
    return negative, match["number"], markers


def _check_currency(markers: list[str]) -> None:
    store = settings.CRM_CURRENCY
    for marker in markers:
        currency = _currency_of(marker)
        if currency is None:
            raise InvalidValue("is not a valid amount")
        if currency != store:
            raise InvalidValue(
                f"is in {currency}, but amounts must be in the store currency "
                f"{store}. Convert it or leave the row out"
            )


def _separator_evidence(number: str) -> str | None:
    """Return "comma" or "point" when the number shows its decimal mark."""
    number = re.sub(r"\s", "", number)
    last_comma, last_point = number.rfind(","), number.rfind(".")
    if last_comma < 0 and last_point < 0:
        return None
    last = max(last_comma, last_point)
    both = last_comma >= 0 and last_point >= 0
    # One kind of separator followed by exactly three digits reads the same
    # as a thousands separator in either convention.
    if not both and len(number) - last - 1 == 3:
        return None
    return "comma" if last == last_comma else "point"


def decide_decimal_comma(values: Iterable[str]) -> bool:
    """Decide from a column's values whether the comma is the decimal mark.

    Raises FileRejected when some values prove a decimal comma ("12,50",
    "1.234,56") and others a decimal point ("12.50", "1,234.50").
    """
    examples: dict[str, str] = {}
    for text in values:
        try:
            _negative, number, _markers = _split(text)
        except InvalidValue:
            continue
        evidence = _separator_evidence(number)
        if evidence:
            examples.setdefault(evidence, text)
    if len(examples) == 2:
        raise FileRejected(
            f"Column amount mixes decimal commas ({examples['comma']!r}) and "
            f"decimal points ({examples['point']!r}). Use one style in the whole "
            "file and import again."
        )
    return "comma" in examples


def _to_decimal(number: str, decimal_comma: bool) -> Decimal:
    number = re.sub(r"\s", "", number)
    if decimal_comma:
        if not _COMMA_STYLE.fullmatch(number):
            raise InvalidValue("is not a valid amount (the file uses decimal commas)")
        number = number.replace(".", "").replace(",", ".")
    else:
        if not _POINT_STYLE.fullmatch(number):
            raise InvalidValue("is not a valid amount (the file uses decimal points)")
        number = number.replace(",", "")
    return Decimal(number)


def _check_size(amount: Decimal) -> None:
    # normalize() drops trailing zeros, so "12.500" counts one decimal place.
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise InvalidValue(f"has more than {MAX_DECIMAL_PLACES} decimal places")
    if abs(amount) >= Decimal(10) ** MAX_INTEGER_DIGITS:
        raise InvalidValue("is too large for an amount")


def parse_amount(
    text: str, *, decimal_comma: bool = False, numeric: bool = False
) -> Decimal:
    """Parse an amount in the store currency; raise InvalidValue otherwise.

    ``numeric`` marks a spreadsheet number cell, whose text is always plain
    decimal-point notation. The result always has two decimal places.
    """
    if numeric:
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise InvalidValue("is not a valid amount") from None
    else:
        negative, number, markers = _split(text)
        _check_currency(markers)
        amount = _to_decimal(number, decimal_comma)
        if negative:
            amount = -amount
    if not amount.is_finite():
        raise InvalidValue("is not a valid amount")
    _check_size(amount)
    return amount.quantize(Decimal("0.01"))
