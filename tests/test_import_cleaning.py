"""Cleaning of amounts, dates, quantities and phones, and plausibility checks."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.test import override_settings

from members.importing.amounts import (
    DECIMAL_COMMA,
    DECIMAL_POINT,
    decide_decimal_mark,
    parse_amount,
)
from members.importing.cleaning import clean_phone, clean_quantity, phone_e164
from members.importing.dates import (
    DAY_FIRST,
    MONTH_FIRST,
    decide_date_order,
    parse_date,
    parse_datetime,
)
from members.importing.errors import FileRejected, InvalidValue
from members.importing.plausibility import (
    check_amount,
    check_joined_on,
    check_occurred_at,
    check_quantity,
)
from members.models import ActivityKind
from tests.conftest import local

UTC = dt.UTC


@pytest.mark.parametrize(
    ("text", "decimal_mark", "expected"),
    [
        ("12.50", None, "12.50"),
        ("¥1,234.50", None, "1234.50"),
        ("￥88.00", None, "88.00"),
        ("RMB 20", None, "20.00"),
        ("CNY 20", None, "20.00"),
        ("20元", None, "20.00"),
        ("(12.50)", None, "-12.50"),
        ("-¥5", None, "-5.00"),
        ("¥-5", None, "-5.00"),
        ("\u221212.5", None, "-12.50"),
        ("１２.５０", None, "12.50"),
        ("12,50", DECIMAL_COMMA, "12.50"),
        ("1.234,56", DECIMAL_COMMA, "1234.56"),
        ("-3,00", DECIMAL_COMMA, "-3.00"),
        ("1 234,56", DECIMAL_COMMA, "1234.56"),
        ("12.500", None, "12.50"),
        ("2.500", DECIMAL_POINT, "2.50"),
        ("2.500", DECIMAL_COMMA, "2500.00"),
        ("1,234", DECIMAL_POINT, "1234.00"),
        ("1,234,567", None, "1234567.00"),
    ],
)
def test_parse_amount(text, decimal_mark, expected):
    assert parse_amount(text, decimal_mark=decimal_mark) == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("12.5O", "is not a valid amount"),
        ("$15.00", "is in USD, but amounts must be in the store currency CNY"),
        ("15 USD", "is in USD"),
        ("€3,50", "is in EUR"),
        ("£2", "is in GBP"),
        ("1.234", "more than 2 decimal places"),
        ("1,2,3", "not a valid amount"),
        ("--5", "not a valid amount"),
        ("(-5)", "negative twice"),
        ("abc", "not a valid amount"),
        ("1" * 13, "too large"),
    ],
)
def test_parse_amount_rejects(text, reason):
    with pytest.raises(InvalidValue, match=reason.replace("(", r"\(")):
        parse_amount(text)


@override_settings(CRM_CURRENCY="USD")
def test_store_currency_follows_setting():
    assert parse_amount("$15.00") == Decimal("15.00")
    with pytest.raises(InvalidValue, match="is in CNY"):
        parse_amount("¥15")


def test_numeric_cell_amount_is_plain():
    assert parse_amount("59.9", numeric=True) == Decimal("59.90")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["12,50", "3"], DECIMAL_COMMA),
        (["1.234,56"], DECIMAL_COMMA),
        (["1,234.50", "12.5"], DECIMAL_POINT),
        (["1,234.50"], DECIMAL_POINT),
        (["12.50", "2.500"], DECIMAL_POINT),
        (["1.234", "2,5"], DECIMAL_COMMA),
        (["1234.500"], DECIMAL_POINT),
        (["5", "1,234,567"], None),
        ([], None),
    ],
)
def test_decide_decimal_mark(values, expected):
    assert decide_decimal_mark(values) == expected


def test_mixed_decimal_marks_reject_file():
    with pytest.raises(FileRejected, match="mixes decimal commas"):
        decide_decimal_mark(["12,50", "12.50"])


@pytest.mark.parametrize("values", [["1.234", "2.500"], ["1,234", "5"], ["0.500"]])
def test_unproven_decimal_mark_rejects_file(values):
    with pytest.raises(FileRejected) as raised:
        decide_decimal_mark(values)

    message = raised.value.message
    assert "Column amount is ambiguous (decimal point or comma)" in message
    assert "Choose the decimal mark" in message


def test_ambiguity_message_gives_both_readings():
    with pytest.raises(
        FileRejected, match="'2.500' is 2.5 with a decimal point but 2500"
    ):
        decide_decimal_mark(["2.500"])


@pytest.mark.parametrize("chosen", [DECIMAL_POINT, DECIMAL_COMMA])
def test_decimal_mark_choice_settles_ambiguity(chosen):
    assert decide_decimal_mark(["1.234", "2.500"], chosen) == chosen


def test_decimal_mark_choice_against_evidence_rejected():
    with pytest.raises(FileRejected, match="'12,50' that use a decimal comma"):
        decide_decimal_mark(["12,50"], DECIMAL_POINT)


def test_amount_message_names_known_mark():
    with pytest.raises(InvalidValue) as unknown:
        parse_amount("1.234.567")
    with pytest.raises(InvalidValue) as known:
        parse_amount("1.234.567", decimal_mark=DECIMAL_POINT)

    assert "decimal points" not in unknown.value.reason
    assert "choose decimal comma" in unknown.value.reason
    assert "amounts in this file use a decimal point" in known.value.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-31 23:30:00", local(2024, 3, 31, 23, 30)),
        ("2024-03-31T23:30", local(2024, 3, 31, 23, 30)),
        ("2024-03-31", local(2024, 3, 31)),
        ("2024/4/1", local(2024, 4, 1)),
        ("2024年4月1日 10:00", local(2024, 4, 1, 10, 0)),
        ("20240131", local(2024, 1, 31)),
        ("31.01.2024 18:05", local(2024, 1, 31, 18, 5)),
        ("2024-03-31T16:30:00Z", dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)),
        ("2024-04-01 00:30:00 +0800", dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)),
        ("2024-03-31 12:30:00 -0400", dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)),
        ("2024-03-31T12:30:00-04:00", dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)),
        ("2024-03-31 12:30:00.250", local(2024, 3, 31, 12, 30, 0, 250000)),
    ],
)
def test_parse_datetime(text, expected):
    assert parse_datetime(text) == expected


def test_parse_datetime_uses_column_order():
    assert parse_datetime("03/04/2024", order=DAY_FIRST) == local(2024, 4, 3)
    assert parse_datetime("03/04/2024", order=MONTH_FIRST) == local(2024, 3, 4)


@pytest.mark.parametrize(
    ("serial", "expected"),
    [
        ("45292", local(2024, 1, 1)),
        ("45337.75", local(2024, 2, 15, 18, 0)),
        ("45361.60416666666", local(2024, 3, 10, 14, 30)),
    ],
)
def test_parse_excel_serial(serial, expected):
    assert parse_datetime(serial, numeric=True) == expected


@pytest.mark.parametrize(
    "text", ["31/31/2024", "2024-02-30", "yesterday", "45292", "24:00"]
)
def test_parse_datetime_rejects(text):
    with pytest.raises(InvalidValue):
        parse_datetime(text)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01 00:00",
        "9999-12-31 23:59-10:00",
        "0001-01-01 10:00+14:00",
        "0000-01-01",
        "9999-12-31T20:00:00Z",
    ],
)
def test_parse_datetime_out_of_range(text):
    with pytest.raises(InvalidValue, match="^is out of range$"):
        parse_datetime(text)


def test_parse_date_out_of_range():
    with pytest.raises(InvalidValue, match="is out of range"):
        parse_date("0001-01-01")


@pytest.mark.parametrize(
    ("text", "numeric"), [("0.5", True), ("0", True), ("14:30", False)]
)
def test_time_without_date_rejected(text, numeric):
    with pytest.raises(InvalidValue, match="is a time of day without a date"):
        parse_datetime(text, numeric=numeric)


@pytest.mark.parametrize("serial", ["-1", "2958465.5", "nan", "inf"])
def test_excel_serial_outside_calendar(serial):
    with pytest.raises(InvalidValue, match="is not a valid Excel date"):
        parse_datetime(serial, numeric=True)


def test_parse_date_takes_store_day():
    assert parse_date("2024-03-31T16:30:00Z") == dt.date(2024, 4, 1)


def test_date_order_from_evidence():
    values = ["03/04/2024 10:00", "15/04/2024 11:00", "2024-04-20 09:15"]

    assert decide_date_order(values, "occurred_at", None) == DAY_FIRST
    assert decide_date_order(["04/15/2024"], "occurred_at", None) == MONTH_FIRST
    assert decide_date_order(["2024-04-20"], "occurred_at", None) is None
    assert decide_date_order(["05/05/2024"], "occurred_at", None) is None


def test_date_order_ambiguous_column_rejected():
    with pytest.raises(FileRejected, match="Column joined_at .* ambiguous"):
        decide_date_order(["03/04/2024", "05/06/2024"], "joined_at", None)


def test_date_order_choice_wins():
    assert decide_date_order(["03/04/2024"], "occurred_at", MONTH_FIRST) == MONTH_FIRST


def test_date_order_mixed_column_rejected():
    with pytest.raises(FileRejected, match="mixes day-first"):
        decide_date_order(["15/04/2024", "04/15/2024"], "occurred_at", None)


def test_date_order_choice_against_evidence_rejected():
    with pytest.raises(FileRejected, match="fit only the day-first order"):
        decide_date_order(["15/04/2024", "03/04/2024"], "occurred_at", MONTH_FIRST)


# Quantities and plausibility


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", 3), ("+2", 2), ("-1", -1), ("０７", 7), ("0" * 5000, 0)],
)
def test_clean_quantity(text, expected):
    assert clean_quantity(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9" * 5000, "is too large for a quantity"),
        ("-" + "9" * 5000, "is too large for a quantity"),
        ("2147483648", "is too large for a quantity (at most 2,147,483,647)"),
        ("1.5", "is not a whole number"),
    ],
)
def test_clean_quantity_rejects(text, reason):
    with pytest.raises(InvalidValue, match=re.escape(reason)):
        clean_quantity(text)


def test_occurred_at_bounds():
    now = local(2026, 12, 5, 0, 10)

    assert check_occurred_at(local(1990, 1, 1), now) == local(1990, 1, 1)
    assert check_occurred_at(now + dt.timedelta(hours=23), now)
    with pytest.raises(InvalidValue, match="is before 1990-01-01"):
        check_occurred_at(local(1989, 12, 31, 23, 59), now)
    with pytest.raises(InvalidValue, match=r"future \(it is now 2026-12-05 00:10"):
        check_occurred_at(now + dt.timedelta(days=1, minutes=1), now)


def test_joined_on_bounds():
    today = dt.date(2026, 12, 5)

    assert check_joined_on(dt.date(1900, 1, 1), today) == dt.date(1900, 1, 1)
    assert check_joined_on(today, today) == today
    with pytest.raises(InvalidValue, match="is before 1900-01-01"):
        check_joined_on(dt.date(1899, 12, 31), today)
    with pytest.raises(InvalidValue, match="is in the future"):
        check_joined_on(dt.date(2026, 12, 6), today)


@pytest.mark.parametrize(
    ("role", "quantity", "allowed"),
    [
        ("purchase", 1, True),
        ("purchase", 0, False),
        ("refund", 0, True),
        ("refund", -1, False),
        ("visit", 0, True),
        ("other", -3, False),
    ],
)
def test_check_quantity_by_role(role, quantity, allowed):
    kind = ActivityKind(code=role, name=role, role=role)

    if allowed:
        assert check_quantity(quantity, kind) == quantity
    else:
        with pytest.raises(InvalidValue):
            check_quantity(quantity, kind)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("purchase", True),
        ("refund", True),
        ("other", True),
        ("visit", False),
        ("review", False),
        ("referral", False),
    ],
)
def test_check_amount_by_role(role, allowed):
    kind = ActivityKind(code=role, name=role, role=role)

    assert check_amount(Decimal("0.00"), kind) == Decimal("0.00")
    if allowed:
        assert check_amount(Decimal("5.00"), kind) == Decimal("5.00")
    else:
        with pytest.raises(InvalidValue, match=f"must be 0 for kind {role}"):
            check_amount(Decimal("5.00"), kind)


@pytest.mark.parametrize(
    ("text", "phone", "e164"),
    [
        ("１３８００００１４１４", "13800001414", "+8613800001414"),
        ("+49 151 0000 0000", "+4915100000000", "+4915100000000"),
        ("138-0000-0001", "13800000001", "+8613800000001"),
        ("12345", "12345", ""),
    ],
)
def test_phone_kept_as_given_with_e164(text, phone, e164):
    assert clean_phone(text) == phone
    assert phone_e164(phone) == e164
