"""Cleaning of amounts, dates, phones and whole rows into records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.test import override_settings

from members.importing.amounts import decide_decimal_comma, parse_amount
from members.importing.cleaning import clean_phone, phone_e164
from members.importing.dates import (
    DAY_FIRST,
    MONTH_FIRST,
    decide_date_order,
    parse_date,
    parse_datetime,
)
from members.importing.errors import FileRejected, InvalidValue
from tests.conftest import local

UTC = dt.UTC


@pytest.mark.parametrize(
    ("text", "decimal_comma", "expected"),
    [
        ("12.50", False, "12.50"),
        ("¥1,234.50", False, "1234.50"),
        ("￥88.00", False, "88.00"),
        ("RMB 20", False, "20.00"),
        ("CNY 20", False, "20.00"),
        ("20元", False, "20.00"),
        ("(12.50)", False, "-12.50"),
        ("-¥5", False, "-5.00"),
        ("¥-5", False, "-5.00"),
        ("\u221212.5", False, "-12.50"),
        ("１２.５０", False, "12.50"),
        ("12,50", True, "12.50"),
        ("1.234,56", True, "1234.56"),
        ("-3,00", True, "-3.00"),
        ("1 234,56", True, "1234.56"),
        ("12.500", False, "12.50"),
    ],
)
def test_parse_amount(text, decimal_comma, expected):
    assert parse_amount(text, decimal_comma=decimal_comma) == Decimal(expected)


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
        (["12,50", "3"], True),
        (["1.234,56"], True),
        (["1,234.50", "12.5"], False),
        (["1,234", "5"], False),
        ([], False),
    ],
)
def test_decide_decimal_comma(values, expected):
    assert decide_decimal_comma(values) is expected


def test_mixed_decimal_marks_reject_file():
    with pytest.raises(FileRejected, match="mixes decimal commas"):
        decide_decimal_comma(["12,50", "12.50"])


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
