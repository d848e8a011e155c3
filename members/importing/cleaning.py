"""Cleaning rows of text into typed member and activity records.

A value that cannot be cleaned becomes a RowIssue naming the line, the
column and the value, and so does a value that parses but cannot be true
(see ``plausibility``). The rest of the file is still cleaned. Problems
that concern a whole column (an ambiguous date order or decimal mark, mixed
decimal marks) raise FileRejected before any row is cleaned.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import TypeVar

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from members.importing.amounts import DecimalMarkEvidence, parse_amount
from members.importing.columns import ACTIVITIES, MEMBERS, ColumnMap
from members.importing.dates import (
    EXCEL_1900_EPOCH,
    DateOrderEvidence,
    parse_date,
    parse_datetime,
)
from members.importing.errors import InvalidValue
from members.importing.plausibility import (
    AMOUNT_ROLES,
    check_joined_on,
    check_occurred_at,
    check_quantity,
    signed_amount,
)
from members.importing.table import SourceRow, Table
from members.importing.text import clean_text, fold_width, shorten
from members.importing.xlsx_reader import XlsxRow
from members.models import ActivityKind

# Maximum lengths of the model fields the values are stored in.
MAX_LENGTHS = {
    "external_id": 64,
    "channel": 64,
    "name": 200,
    "phone": 40,
    "email": 254,
    "reference": 100,
}
T = TypeVar("T")
_PHONE_SEPARATORS = str.maketrans("", "", " -\u2010\u2011\u2012\u2013\u2014\t")
_QUANTITY = re.compile(r"[-+]?\d+")
# Activity.quantity is an IntegerField: a signed 32-bit integer.
_MAX_QUANTITY = 2**31 - 1
_MAX_QUANTITY_DIGITS = len(str(_MAX_QUANTITY))
# Excel keeps at most 15 significant digits of a number, so a longer id
# typed as a number has lost its last digits: 12345678901234567890 is read
# back as 12345678901234569216.
_MAX_EXACT_DIGITS = 15
_IDENTIFIER_COLUMNS = frozenset({"external_id", "reference", "phone"})
UNSAVED_FORMULA_REASON = (
    "contains a formula with no saved result; open the file in Excel, save "
    "it, and import again"
)
TOO_LONG_NUMBER_REASON = (
    "is a number too long for Excel to keep exactly; format the column as "
    "text in the export and export again"
)


def _significant_digits(number: str) -> int:
    """Return the significant digits of a number cell's text ("0012.50": 3)."""
    digits = number.lstrip("+-").replace(".", "").lstrip("0")
    if "." in number:
        digits = digits.rstrip("0")
    return sum(character.isdigit() for character in digits)


@dataclass(frozen=True)
class RowIssue:
    """Why a line was not saved: the column and value at fault, in plain words."""

    line: int
    column: str
    value: str
    reason: str

    def __post_init__(self) -> None:
        # Every message, report and error CSV shows the value from here, so
        # a huge cell is shortened once for all of them.
        object.__setattr__(self, "value", shorten(self.value))

    @property
    def message(self) -> str:
        if self.column:
            return f"Line {self.line}, column {self.column} ({self.value!r}): {self.reason}."
        return f"Line {self.line}: {self.reason}."


@dataclass
class MemberRecord:
    """A cleaned member row. ``fields`` holds only the columns given a value."""

    line: int
    channel: str
    external_id: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass
class ActivityRecord:
    """A cleaned activity row, with refunds already negative."""

    line: int
    channel: str
    external_id: str
    occurred_at: dt.datetime
    amount: Decimal
    kind: ActivityKind
    reference: str
    quantity: int = 1


@dataclass(frozen=True)
class CleaningOptions:
    """Choices staff made for the file where its values leave a doubt.

    ``date_order`` is the day/month order of slash dates and
    ``decimal_mark`` ("point" or "comma") the decimal mark of amounts.
    """

    date_order: str | None = None
    decimal_mark: str | None = None


class _RowReader:
    """Cleaned access to one row's cells, collecting the issues it finds."""

    def __init__(self, row: SourceRow, columns: ColumnMap) -> None:
        self.row = row
        self.columns = columns
        self.issues: list[RowIssue] = []

    def text(self, column: str) -> str:
        position = self.columns.positions.get(column)
        if position is None or position >= len(self.row.cells):
            return ""
        return clean_text(self.row.cells[position])

    def is_numeric(self, column: str) -> bool:
        return self.columns.positions.get(column) in self.row.numeric

    @property
    def epoch(self) -> dt.datetime:
        """Return day 0 of the Excel serial numbers in this row's cells."""
        if isinstance(self.row, XlsxRow):
            return self.row.epoch
        return EXCEL_1900_EPOCH

    def _spreadsheet_problem(self, column: str, text: str) -> str | None:
        """Return why a spreadsheet cell cannot be trusted, or None if it can."""
        position = self.columns.positions.get(column)
        if isinstance(self.row, XlsxRow) and position in self.row.unsaved_formulas:
            return UNSAVED_FORMULA_REASON
        if (
            column in _IDENTIFIER_COLUMNS
            and self.is_numeric(column)
            and _significant_digits(text) > _MAX_EXACT_DIGITS
        ):
            return TOO_LONG_NUMBER_REASON
        return None

    def reject(self, column: str, value: str, reason: str) -> None:
        self.issues.append(RowIssue(self.row.line, column, value, reason))

    def clean(
        self, column: str, cleaner: Callable[[str], T], *, required: bool
    ) -> T | None:
        """Return the cleaned value, or None when it is empty or invalid."""
        text = self.text(column)
        problem = self._spreadsheet_problem(column, text)
        if problem is not None:
            self.reject(column, text, problem)
            return None
        if not text:
            if required:
                self.reject(column, text, "is required but empty")
            return None
        try:
            return cleaner(text)
        except InvalidValue as error:
            self.reject(column, text, error.reason)
            return None

    def check(self, column: str, check: Callable[[], object]) -> bool:
        """Run a check on a cleaned value and reject the row if it raises."""
        try:
            check()
        except InvalidValue as error:
            self.reject(column, self.text(column), error.reason)
            return False
        return True


def _check_row_shape(reader: _RowReader, width: int) -> None:
    extra = [cell for cell in reader.row.cells[width:] if cell.strip()]
    if extra:
        reader.reject(
            "",
            ", ".join(extra),
            f"the line has {len(reader.row.cells)} values but the header has "
            f"{width} columns; check for an unquoted comma or delimiter",
        )
    for cell in reader.row.cells:
        if "\ufffd" in cell:
            reader.reject(
                "",
                cell,
                "contains the replacement character \ufffd, a sign that the "
                "file was saved with the wrong encoding",
            )
            break


def _identifier(column: str) -> Callable[[str], str]:
    def clean(text: str) -> str:
        value = fold_width(text).strip()
        if len(value) > MAX_LENGTHS[column]:
            raise InvalidValue(f"is longer than {MAX_LENGTHS[column]} characters")
        return value

    return clean


def _limited(column: str) -> Callable[[str], str]:
    def clean(text: str) -> str:
        if len(text) > MAX_LENGTHS[column]:
            raise InvalidValue(f"is longer than {MAX_LENGTHS[column]} characters")
        return text

    return clean


def clean_phone(text: str) -> str:
    """Return the phone as given, with full-width digits, spaces and dashes folded."""
    phone = fold_width(text).translate(_PHONE_SEPARATORS)
    if len(phone) > MAX_LENGTHS["phone"]:
        raise InvalidValue(f"is longer than {MAX_LENGTHS['phone']} characters")
    return phone


def phone_e164(phone: str) -> str:
    """Return the E.164 form of a phone, or "" when it is not a valid number.

    Numbers without a country code are read in settings.CRM_PHONE_REGION.
    """
    if not phone:
        return ""
    try:
        number = phonenumbers.parse(phone, settings.CRM_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_valid_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_email(text: str) -> str:
    email = fold_width(text).strip()
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidValue("is not a valid e-mail address") from None
    return email


def _evidence_text(row: SourceRow, position: int | None) -> str | None:
    """Return a cell's text as the column decisions read it, or None to skip it.

    Spreadsheet number cells are skipped: their dates and amounts have no
    day/month order or decimal mark to decide.
    """
    if position is None or position >= len(row.cells) or position in row.numeric:
        return None
    return fold_width(clean_text(row.cells[position]))


class FileEvidence:
    """Evidence gathered from every row for the decisions made once per column.

    A member file decides the day/month order of joined_at. An activity file
    decides the order of occurred_at and the decimal mark of amount. Rows
    can be added in chunks, so a streamed file is read once for evidence
    and once more to import, with the decisions fixed in between.
    """

    def __init__(self, kind: str, columns: ColumnMap) -> None:
        if kind not in (MEMBERS, ACTIVITIES):
            raise ValueError(f"Unknown import kind {kind!r}.")
        date_column = "joined_at" if kind == MEMBERS else "occurred_at"
        self._date_position = columns.positions.get(date_column)
        self._dates = DateOrderEvidence(date_column)
        self._amount_position = (
            columns.positions.get("amount") if kind == ACTIVITIES else None
        )
        self._amounts = DecimalMarkEvidence() if kind == ACTIVITIES else None

    def add_rows(self, rows: Iterable[SourceRow]) -> None:
        for row in rows:
            text = _evidence_text(row, self._date_position)
            if text is not None:
                self._dates.add(text)
            if self._amounts is not None:
                text = _evidence_text(row, self._amount_position)
                if text is not None:
                    self._amounts.add(text)

    def decide(self, options: CleaningOptions) -> CleaningOptions:
        """Return the options to clean every row with, staff's choices applied.

        Raises FileRejected when a column's values contradict each other or
        staff's choice, or leave a decision open that staff did not make.
        """
        date_order = self._dates.decide(options.date_order)
        decimal_mark = None
        if self._amounts is not None:
            decimal_mark = self._amounts.decide(options.decimal_mark)
        return CleaningOptions(date_order=date_order, decimal_mark=decimal_mark)


def decide_options(
    table: Table, kind: str, columns: ColumnMap, options: CleaningOptions
) -> CleaningOptions:
    """Return the options decided from all rows of an in-memory table."""
    evidence = FileEvidence(kind, columns)
    evidence.add_rows(table.rows)
    return evidence.decide(options)


def _joined_on_cleaner(
    order: str | None, numeric: bool, epoch: dt.datetime
) -> Callable[[str], dt.date]:
    today = timezone.localdate()

    def clean(text: str) -> dt.date:
        day = parse_date(text, order=order, numeric=numeric, epoch=epoch)
        return check_joined_on(day, today)

    return clean


def clean_member_rows(
    table: Table, columns: ColumnMap, options: CleaningOptions
) -> tuple[list[MemberRecord], list[RowIssue]]:
    """Clean every row of a member file into records and row issues."""
    decided = decide_options(table, MEMBERS, columns, options)
    return clean_member_chunk(table.rows, columns, len(table.headers), decided)


def clean_member_chunk(
    rows: Iterable[SourceRow],
    columns: ColumnMap,
    width: int,
    decided: CleaningOptions,
) -> tuple[list[MemberRecord], list[RowIssue]]:
    """Clean member rows with options already decided for the whole file.

    ``width`` is the number of headers, and ``decided`` comes from
    ``FileEvidence.decide``.
    """
    joined_order = decided.date_order
    records, issues = [], []
    for row in rows:
        reader = _RowReader(row, columns)
        _check_row_shape(reader, width)
        external_id = reader.clean(
            "external_id", _identifier("external_id"), required=True
        )
        channel = reader.clean("channel", _identifier("channel"), required=True)
        fields: dict[str, object] = {}
        name = reader.clean("name", _limited("name"), required=False)
        if name is not None:
            fields["name"] = name
        phone = reader.clean("phone", clean_phone, required=False)
        if phone is not None:
            fields["phone"] = phone
            fields["phone_e164"] = phone_e164(phone)
        email = reader.clean("email", clean_email, required=False)
        if email is not None:
            fields["email"] = email
        joined_on = reader.clean(
            "joined_at",
            _joined_on_cleaner(
                joined_order, reader.is_numeric("joined_at"), reader.epoch
            ),
            required=False,
        )
        if joined_on is not None:
            fields["joined_on"] = joined_on
        if reader.issues or external_id is None or channel is None:
            issues.extend(reader.issues)
            continue
        records.append(MemberRecord(row.line, channel, external_id, fields))
    return records, issues


def _kind_lookup(kinds: Mapping[str, ActivityKind]) -> Callable[[str], ActivityKind]:
    def clean(text: str) -> ActivityKind:
        kind = kinds.get(fold_width(text).strip().casefold())
        if kind is None:
            codes = sorted({kind.code for kind in kinds.values()})
            raise InvalidValue(
                f"is not a known activity kind; use one of {', '.join(codes)}"
            )
        return kind

    return clean


def kinds_by_label() -> dict[str, ActivityKind]:
    """Return activity kinds keyed by case-folded name and code (one query).

    A code wins over another kind's name that happens to be spelled the same.
    Opening balance kinds are left out, so activity files and the event API
    reject them: only the opening balance import records those.
    """
    kinds = list(ActivityKind.objects.exclude(role=ActivityKind.Role.OPENING))
    labels = {kind.name.casefold(): kind for kind in kinds}
    labels.update({kind.code.casefold(): kind for kind in kinds})
    return labels


def clean_quantity(text: str) -> int:
    value = fold_width(text).strip()
    if not _QUANTITY.fullmatch(value):
        raise InvalidValue("is not a whole number")
    # Counting digits first keeps int() away from text longer than Python's
    # integer string limit (4,300 digits), where it raises ValueError.
    digits = value.lstrip("+-").lstrip("0") or "0"
    if len(digits) > _MAX_QUANTITY_DIGITS or int(digits) > _MAX_QUANTITY:
        raise InvalidValue(f"is too large for a quantity (at most {_MAX_QUANTITY:,})")
    return -int(digits) if value.startswith("-") else int(digits)


def _signed_amount(
    reader: _RowReader, kind: ActivityKind, amount: Decimal
) -> Decimal | None:
    """Return the amount with the sign its kind stores, or None if it has none."""
    try:
        return signed_amount(amount, kind)
    except InvalidValue as error:
        reader.reject("amount", reader.text("amount"), error.reason)
        return None


def _amount_if_empty(reader: _RowReader, kind: ActivityKind) -> Decimal | None:
    """Return 0 for an empty amount on a kind without money, else None.

    Visits, reviews and referrals carry no amount, so an empty cell means 0.
    Other kinds need an amount, and an empty one rejects the row. An amount
    that was given but invalid is already rejected and stays None.
    """
    if reader.text("amount"):
        return None
    if any(issue.column == "amount" for issue in reader.issues):
        return None
    if kind.role in AMOUNT_ROLES:
        reader.reject("amount", "", "is required but empty")
        return None
    return Decimal(0)


def _occurred_at_cleaner(
    order: str | None, numeric: bool, epoch: dt.datetime, now: dt.datetime
) -> Callable[[str], dt.datetime]:
    def clean(text: str) -> dt.datetime:
        moment = parse_datetime(text, order=order, numeric=numeric, epoch=epoch)
        return check_occurred_at(moment, now)

    return clean


def clean_activity_rows(
    table: Table,
    columns: ColumnMap,
    options: CleaningOptions,
    kinds: Mapping[str, ActivityKind],
) -> tuple[list[ActivityRecord], list[RowIssue]]:
    """Clean every row of an activity file into records and row issues."""
    decided = decide_options(table, ACTIVITIES, columns, options)
    return clean_activity_chunk(table.rows, columns, len(table.headers), decided, kinds)


def clean_activity_chunk(
    rows: Iterable[SourceRow],
    columns: ColumnMap,
    width: int,
    decided: CleaningOptions,
    kinds: Mapping[str, ActivityKind],
    now: dt.datetime | None = None,
) -> tuple[list[ActivityRecord], list[RowIssue]]:
    """Clean activity rows with options already decided for the whole file.

    ``now`` is the moment future dates are checked against; a streamed file
    passes the same moment for every chunk.
    """
    date_order = decided.date_order
    decimal_mark = decided.decimal_mark
    now = now or timezone.now()
    records, issues = [], []
    for row in rows:
        reader = _RowReader(row, columns)
        _check_row_shape(reader, width)
        external_id = reader.clean(
            "external_id", _identifier("external_id"), required=True
        )
        channel = reader.clean("channel", _identifier("channel"), required=True)
        reference = reader.clean("reference", _identifier("reference"), required=True)
        occurred_at = reader.clean(
            "occurred_at",
            _occurred_at_cleaner(
                date_order, reader.is_numeric("occurred_at"), reader.epoch, now
            ),
            required=True,
        )
        amount = reader.clean(
            "amount",
            partial(
                parse_amount,
                decimal_mark=decimal_mark,
                numeric=reader.is_numeric("amount"),
            ),
            required=False,
        )
        kind = reader.clean("kind", _kind_lookup(kinds), required=True)
        quantity = reader.clean("quantity", clean_quantity, required=False)
        if kind is not None and amount is None:
            amount = _amount_if_empty(reader, kind)
        if kind is not None and amount is not None:
            amount = _signed_amount(reader, kind, amount)
        if kind is not None:
            reader.check(
                "quantity",
                partial(check_quantity, 1 if quantity is None else quantity, kind),
            )
        if (
            reader.issues
            or external_id is None
            or channel is None
            or reference is None
            or occurred_at is None
            or amount is None
            or kind is None
        ):
            issues.extend(reader.issues)
            continue
        records.append(
            ActivityRecord(
                line=row.line,
                channel=channel,
                external_id=external_id,
                occurred_at=occurred_at,
                amount=amount,
                kind=kind,
                reference=reference,
                quantity=1 if quantity is None else quantity,
            )
        )
    return records, issues
