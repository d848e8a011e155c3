"""Date and time parsing for import columns.

Naive times are read in the program's time zone (settings.TIME_ZONE).
Whether "03/04/2024" is 3 April or 4 March is decided once per column. A
first number above 12 proves day-first, and a second number above 12 proves
month-first. A column where every value fits both orders is rejected unless
staff chose the order.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from django.conf import settings

from members.importing.errors import FileRejected, InvalidValue
from members.importing.text import fold_width

DAY_FIRST = "day_first"
MONTH_FIRST = "month_first"
DATE_ORDER_CHOICES = (
    (DAY_FIRST, "Day first (31/12/2024)"),
    (MONTH_FIRST, "Month first (12/31/2024)"),
)
_ORDER_NAMES = {DAY_FIRST: "day-first", MONTH_FIRST: "month-first"}

_TIME = (
    r"(?:(?:[ T]+|日\s*)(?P<hour>\d{1,2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,6}))?)?)?"
    r"\s*(?P<offset>Z|[+-]\d{2}:?\d{2})?"
)
_YEAR_FIRST = re.compile(
    r"(?P<year>\d{4})[-/.](?P<month>\d{1,2})[-/.](?P<day>\d{1,2})" + _TIME
)
_CHINESE = re.compile(
    r"(?P<year>\d{4})年(?P<month>\d{1,2})月(?P<day>\d{1,2})日?" + _TIME
)
_COMPACT = re.compile(r"(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})")
_TIME_ONLY = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?")
# dd.mm.yyyy is the German and Russian convention and is never month-first.
_DOTTED = re.compile(r"(?P<day>\d{1,2})\.(?P<month>\d{1,2})\.(?P<year>\d{4})" + _TIME)
_SLASHED = re.compile(
    r"(?P<part1>\d{1,2})[/-](?P<part2>\d{1,2})[/-](?P<year>\d{4})" + _TIME
)
# Excel's 1900 date system counts days from 1899-12-30. Serials below 61
# are off by one day because Excel counts a 29 February 1900, which does
# not matter for ledger dates. Workbooks in the 1904 date system (older Mac
# Excel, <workbookPr date1904="1"/>) count from 1904-01-01 instead.
EXCEL_1900_EPOCH = dt.datetime(1899, 12, 30)  # noqa: DTZ001 - a naive calendar origin
EXCEL_1904_EPOCH = dt.datetime(1904, 1, 1)  # noqa: DTZ001 - a naive calendar origin
_LAST_EXCEL_DAY = dt.datetime(9999, 12, 31)  # noqa: DTZ001 - a naive calendar day
_FORMATS_HELP = "use YYYY-MM-DD HH:MM, DD.MM.YYYY or DD/MM/YYYY"
_OUT_OF_RANGE = "is out of range"
_TIME_WITHOUT_DATE = "is a time of day without a date"


def program_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


class DateOrderEvidence:
    """What a column's slash dates show about their day/month order.

    Values are added one at a time, so a file can be read in chunks. Only
    the first example of each kind is kept, so memory does not grow with
    the number of values.
    """

    def __init__(self, column: str) -> None:
        self.column = column
        self.examples: dict[str, str] = {}
        self.ambiguous: str | None = None

    def add(self, text: str) -> None:
        match = _SLASHED.fullmatch(text)
        if match is None:
            return
        first, second = int(match["part1"]), int(match["part2"])
        if first > 12 >= second:
            self.examples.setdefault(DAY_FIRST, text)
        elif second > 12 >= first:
            self.examples.setdefault(MONTH_FIRST, text)
        elif first != second:
            self.ambiguous = self.ambiguous or text

    def decide(self, chosen: str | None) -> str | None:
        """Return the order for the column, or None if it has no slash dates.

        A ``chosen`` order wins unless a date fits only the other order.
        Raises FileRejected in that case, when the values disagree, or when
        all of them are ambiguous and nothing was chosen.
        """
        column, examples = self.column, self.examples
        if len(examples) == 2:
            raise FileRejected(
                f"Column {column} mixes day-first ({examples[DAY_FIRST]!r}) and "
                f"month-first ({examples[MONTH_FIRST]!r}) dates. Use one order in "
                "the whole file and import again."
            )
        if chosen:
            (other,) = {DAY_FIRST, MONTH_FIRST} - {chosen}
            if other in examples:
                raise FileRejected(
                    f"Column {column} has dates such as {examples[other]!r} that "
                    f"fit only the {_ORDER_NAMES[other]} order, but "
                    f"{_ORDER_NAMES[chosen]} was chosen. Choose "
                    f"{_ORDER_NAMES[other]} or let the import detect the order, "
                    "and import again."
                )
            return chosen
        if examples:
            return next(iter(examples))
        if self.ambiguous:
            raise FileRejected(
                f"Column {column} has dates such as {self.ambiguous!r} that are "
                "ambiguous (day/month): every date in it fits both day-first and "
                "month-first. Choose the date order (day first or month first) "
                "and import again."
            )
        return None


def decide_date_order(
    values: Iterable[str], column: str, chosen: str | None
) -> str | None:
    """Return the day/month order for a column's slash dates, or None if unused.

    See ``DateOrderEvidence.decide`` for the rules and the errors raised.
    """
    evidence = DateOrderEvidence(column)
    for text in values:
        evidence.add(text)
    return evidence.decide(chosen)


def _offset(text: str | None) -> dt.tzinfo:
    if not text:
        return program_zone()
    if text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    delta = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt.timezone(sign * delta)


def _check_in_range(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` if it exists in UTC and in the program's time zone.

    0001-01-01 00:00 in UTC+8 is in year 0 in UTC, which datetime cannot
    represent, so saving or converting it would raise OverflowError.
    """
    try:
        moment.astimezone(dt.UTC)
        moment.astimezone(program_zone())
    except OverflowError:
        raise InvalidValue(_OUT_OF_RANGE) from None
    return moment


def _build(match: re.Match[str], year: str, month: str, day: str) -> dt.datetime:
    fields = match.groupdict()
    fraction = (fields.get("fraction") or "").ljust(6, "0")
    if int(year) < dt.MINYEAR:
        raise InvalidValue(_OUT_OF_RANGE)
    try:
        moment = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(fields.get("hour") or 0),
            int(fields.get("minute") or 0),
            int(fields.get("second") or 0),
            int(fraction),
            tzinfo=_offset(fields.get("offset")),
        )
    except ValueError:
        raise InvalidValue("is not a valid date or time") from None
    return _check_in_range(moment)


def _from_excel_serial(text: str, epoch: dt.datetime) -> dt.datetime:
    if _COMPACT.fullmatch(text):
        return _parse_text(text, None)
    try:
        serial = float(text)
    except ValueError:
        raise InvalidValue("is not a valid Excel date") from None
    if 0 <= serial < 1:
        # Excel stores a time typed without a date as a fraction of a day.
        raise InvalidValue(f"{_TIME_WITHOUT_DATE} (a spreadsheet number below 1)")
    if not 1 <= serial <= (_LAST_EXCEL_DAY - epoch).days:
        raise InvalidValue("is not a valid Excel date")
    naive = epoch + dt.timedelta(seconds=round(serial * 86400))
    return _check_in_range(naive.replace(tzinfo=program_zone()))


def _parse_slashed(match: re.Match[str], order: str | None) -> dt.datetime:
    first, second = match["part1"], match["part2"]
    if order is None:
        if first != second:
            raise InvalidValue("is ambiguous (day/month); choose the date order")
        order = DAY_FIRST
    if order == DAY_FIRST:
        return _build(match, match["year"], second, first)
    return _build(match, match["year"], first, second)


def _parse_text(text: str, order: str | None) -> dt.datetime:
    for pattern in (_YEAR_FIRST, _CHINESE, _COMPACT):
        match = pattern.fullmatch(text)
        if match:
            return _build(match, match["year"], match["month"], match["day"])
    match = _DOTTED.fullmatch(text)
    if match:
        return _build(match, match["year"], match["month"], match["day"])
    match = _SLASHED.fullmatch(text)
    if match:
        return _parse_slashed(match, order)
    if _TIME_ONLY.fullmatch(text):
        raise InvalidValue(f"{_TIME_WITHOUT_DATE}; {_FORMATS_HELP}")
    raise InvalidValue(f"is not a date and time; {_FORMATS_HELP}")


def parse_datetime(
    text: str,
    *,
    order: str | None = None,
    numeric: bool = False,
    epoch: dt.datetime = EXCEL_1900_EPOCH,
) -> dt.datetime:
    """Parse an aware datetime; raise InvalidValue for text that is not one.

    ``order`` is the column's day/month order for slash dates and
    ``numeric`` marks a spreadsheet number cell, read as an Excel serial
    counted in days from ``epoch``, the workbook's day 0.
    """
    text = fold_width(text).strip()
    if numeric:
        return _from_excel_serial(text, epoch)
    return _parse_text(text, order)


def parse_date(
    text: str,
    *,
    order: str | None = None,
    numeric: bool = False,
    epoch: dt.datetime = EXCEL_1900_EPOCH,
) -> dt.date:
    """Parse a calendar date, taking the day in the program's time zone."""
    moment = parse_datetime(text, order=order, numeric=numeric, epoch=epoch)
    return moment.astimezone(program_zone()).date()
