"""Amount parsing: currency symbols, separators and negative notations.

The decimal mark (point or comma) is decided once per file from the whole
amount column. "12.50" and "1.234,56" show their mark, but "2.500" reads as
2.5 with a decimal point and as 2500 with a decimal comma. A column whose
only separators are of that kind is rejected unless staff chose the mark.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from django.conf import settings

from members.importing.errors import FileRejected, InvalidValue
from members.importing.text import fold_width, shorten

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
_WHITESPACE = re.compile(r"\s")
_CENT = Decimal("0.01")

DECIMAL_POINT = "point"
DECIMAL_COMMA = "comma"
DECIMAL_MARK_CHOICES = (
    (DECIMAL_POINT, "Decimal point (1,234.50)"),
    (DECIMAL_COMMA, "Decimal comma (1.234,50)"),
)
MARK_NAMES = {DECIMAL_POINT: "decimal point", DECIMAL_COMMA: "decimal comma"}
# Digits with optional thousands separators and decimal part, in each style.
_STYLES = {
    DECIMAL_POINT: re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"),
    DECIMAL_COMMA: re.compile(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:,\d+)?"),
}


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


def _number_reading(number: str, mark: str) -> Decimal | None:
    """Return the value of digits and separators read with ``mark``, or None."""
    if not _STYLES[mark].fullmatch(number):
        return None
    if mark == DECIMAL_COMMA:
        return Decimal(number.replace(".", "").replace(",", "."))
    return Decimal(number.replace(",", ""))


def _ambiguous_readings(number: str) -> tuple[Decimal, Decimal] | None:
    """Return the two values of a number that reads differently with each mark.

    Only one separator followed by three digits does that: "2.500" is 2.5
    with a decimal point and 2500 with a decimal comma.
    """
    with_point = _number_reading(number, DECIMAL_POINT)
    with_comma = _number_reading(number, DECIMAL_COMMA)
    if with_point is None or with_comma is None or with_point == with_comma:
        return None
    return with_point, with_comma


def _shown_mark(number: str) -> str | None:
    """Return the decimal mark that a number proves, or None if it proves none.

    A number proves a mark when it is valid with that mark only. One
    separator repeated without the other ("1,234,567") proves nothing,
    because the number has no decimal part.
    """
    commas, points = number.count(","), number.count(".")
    if not commas and not points:
        return None
    if (commas > 1 and not points) or (points > 1 and not commas):
        return None
    fits = [mark for mark in MARK_NAMES if _number_reading(number, mark) is not None]
    return fits[0] if len(fits) == 1 else None


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


class DecimalMarkEvidence:
    """What an amount column's values show about its decimal mark.

    Values are added one at a time, so a file can be read in chunks. Only
    the first example of each kind is kept, so memory does not grow with
    the number of values.
    """

    def __init__(self) -> None:
        self.examples: dict[str, str] = {}
        self.ambiguous: tuple[str, Decimal, Decimal] | None = None

    def add(self, text: str) -> None:
        try:
            _negative, number, _markers = _split(text)
        except InvalidValue:
            return
        number = _WHITESPACE.sub("", number)
        readings = _ambiguous_readings(number)
        # The examples are quoted in messages, so a huge cell is shortened.
        if readings is not None:
            self.ambiguous = self.ambiguous or (shorten(text), *readings)
            return
        mark = _shown_mark(number)
        if mark is not None:
            self.examples.setdefault(mark, shorten(text))

    def decide(self, chosen: str | None) -> str | None:
        """Return the column's decimal mark, or None if no value needs one.

        A ``chosen`` mark wins unless a value shows the other mark. Raises
        FileRejected when values show both marks ("12,50" and "12.50"), when
        a value contradicts the chosen mark, or when nothing was chosen and
        the only values with a separator read differently with each mark
        ("2.500").
        """
        examples = self.examples
        if len(examples) == 2:
            raise FileRejected(
                f"Column amount mixes decimal commas ({examples[DECIMAL_COMMA]!r}) "
                f"and decimal points ({examples[DECIMAL_POINT]!r}). Use one style "
                "in the whole file and import again."
            )
        if chosen:
            (other,) = set(MARK_NAMES) - {chosen}
            if other in examples:
                raise FileRejected(
                    f"Column amount has values such as {examples[other]!r} that "
                    f"use a {MARK_NAMES[other]}, but {MARK_NAMES[chosen]} was "
                    f"chosen. Choose {MARK_NAMES[other]} or let the import detect "
                    "the mark, and import again."
                )
            return chosen
        if examples:
            return next(iter(examples))
        if self.ambiguous:
            text, with_point, with_comma = self.ambiguous
            raise FileRejected(
                f"Column amount is ambiguous (decimal point or comma). No value in "
                f"it shows which decimal mark the file uses, and {text!r} is "
                f"{shorten(_plain(with_point))} with a decimal point but "
                f"{shorten(_plain(with_comma))} with a decimal comma. Choose the decimal "
                "mark (point or comma) and import again."
            )
        return None


def decide_decimal_mark(values: Iterable[str], chosen: str | None = None) -> str | None:
    """Return the decimal mark of an amount column, or None if no value needs one.

    See ``DecimalMarkEvidence.decide`` for the rules and the errors raised.
    """
    evidence = DecimalMarkEvidence()
    for text in values:
        evidence.add(text)
    return evidence.decide(chosen)


def _to_decimal(number: str, decimal_mark: str | None) -> Decimal:
    number = _WHITESPACE.sub("", number)
    value = _number_reading(number, decimal_mark or DECIMAL_POINT)
    if value is not None:
        return value
    if decimal_mark is not None:
        raise InvalidValue(
            f"is not a valid amount (amounts in this file use a "
            f"{MARK_NAMES[decimal_mark]})"
        )
    if _number_reading(number, DECIMAL_COMMA) is not None:
        # No value showed the mark, so the point was assumed for this one.
        raise InvalidValue(
            "is not a valid amount with a decimal point. If the file uses "
            "decimal commas, choose decimal comma and import again"
        )
    raise InvalidValue("is not a valid amount")


def _check_size(amount: Decimal) -> None:
    # Check the size first, because quantize() raises InvalidOperation for
    # values with more digits than the decimal context's precision (28).
    if abs(amount) >= Decimal(10) ** MAX_INTEGER_DIGITS:
        raise InvalidValue("is too large for an amount")
    # An exact comparison, so "12.500" passes and "12.5000001" does not.
    if amount != amount.quantize(_CENT):
        raise InvalidValue(f"has more than {MAX_DECIMAL_PLACES} decimal places")


def parse_amount(
    text: str, *, decimal_mark: str | None = None, numeric: bool = False
) -> Decimal:
    """Parse an amount in the store currency; raise InvalidValue otherwise.

    ``decimal_mark`` is the column's mark from ``decide_decimal_mark``, and
    None reads the value with a decimal point. ``numeric`` marks a spreadsheet
    number cell, whose text is always plain decimal-point notation. The
    result always has two decimal places.
    """
    if numeric:
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise InvalidValue("is not a valid amount") from None
    else:
        negative, number, markers = _split(text)
        _check_currency(markers)
        amount = _to_decimal(number, decimal_mark)
        if negative:
            amount = -amount
    if not amount.is_finite():
        raise InvalidValue("is not a valid amount")
    _check_size(amount)
    return amount.quantize(_CENT)
