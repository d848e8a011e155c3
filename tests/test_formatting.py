"""Money, count and date formatting for member pages. No database needed."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import translation

from tiers.formatting import (
    currency_symbol,
    format_count,
    format_date,
    format_day_month,
    format_metric_value,
    format_money,
    local_date,
)


@pytest.mark.parametrize(
    ("code", "symbol"),
    [
        ("CNY", "¥"),
        ("USD", "$"),
        ("EUR", "€"),
        ("GBP", "£"),
        ("cny", "¥"),
        ("CHF", "CHF"),
    ],
)
def test_currency_symbol_by_code(code, symbol):
    assert currency_symbol(code) == symbol


def test_currency_symbol_defaults_to_setting(settings):
    settings.CRM_CURRENCY = "GBP"

    assert currency_symbol() == "£"
    assert format_money(Decimal("12")) == "£12"


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("1240"), "¥1,240"),
        (Decimal("1240.00"), "¥1,240"),
        (Decimal("1240.0000"), "¥1,240"),
        (Decimal("1240.5"), "¥1,240.50"),
        (Decimal("1234567.89"), "¥1,234,567.89"),
        (Decimal("0"), "¥0"),
        (Decimal("0.05"), "¥0.05"),
        (Decimal("-40"), "-¥40"),
        (Decimal("-1240.25"), "-¥1,240.25"),
        (Decimal("0.005"), "¥0.01"),
        (Decimal("999.999"), "¥1,000"),
        (5000, "¥5,000"),
    ],
)
def test_money_in_yuan(amount, expected):
    assert format_money(amount, "CNY") == expected


def test_money_other_symbols():
    assert format_money(Decimal("1240"), "USD") == "$1,240"
    assert format_money(Decimal("1240.5"), "EUR") == "€1,240.50"
    assert format_money(Decimal("99"), "GBP") == "£99"


def test_money_code_without_symbol():
    assert format_money(Decimal("1240"), "CHF") == "CHF 1,240"
    assert format_money(Decimal("-3.5"), "CHF") == "-CHF 3.50"


def test_money_rounding_up():
    assert format_money(Decimal("0.001"), "CNY", rounding=ROUND_CEILING) == "¥0.01"
    assert format_money(Decimal("3760.001"), "CNY", rounding=ROUND_CEILING) == (
        "¥3,760.01"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (3, "3"),
        (Decimal("3.00"), "3"),
        (1240, "1,240"),
        (Decimal("1234567"), "1,234,567"),
        (Decimal("99.9"), "99"),
    ],
)
def test_count_whole_number(value, expected):
    assert format_count(value) == expected


def test_count_rounding_up():
    assert format_count(Decimal("99.1"), rounding=ROUND_CEILING) == "100"
    assert format_count(Decimal("99"), rounding=ROUND_CEILING) == "99"


def test_metric_value_money_or_count(settings):
    settings.CRM_CURRENCY = "CNY"

    assert format_metric_value("net_spend", Decimal("1240.0000")) == "¥1,240"
    assert format_metric_value("orders", Decimal("6.00")) == "6"
    assert format_metric_value("growth_value", Decimal("1500.75")) == "1,500"
    assert format_metric_value("growth_value", Decimal("99.25"), round_up=True) == (
        "100"
    )
    assert format_metric_value("net_spend", Decimal("0.001"), round_up=True) == (
        "¥0.01"
    )


def test_local_date_uses_program_zone(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    late_utc = dt.datetime(2025, 12, 31, 20, 0, tzinfo=dt.UTC)

    assert local_date(late_utc) == dt.date(2026, 1, 1)
    assert local_date(dt.date(2025, 3, 14)) == dt.date(2025, 3, 14)


def test_local_date_rejects_naive():
    with pytest.raises(ValueError, match="naive"):
        local_date(dt.datetime(2025, 3, 14, 12, 0))


def test_dates_in_english():
    with translation.override("en"):
        assert format_date(dt.date(2025, 1, 2)) == "2 Jan 2025"
        assert format_day_month(dt.date(2025, 12, 31)) == "31 December"


def test_dates_in_chinese():
    with translation.override("zh-hans"):
        assert format_date(dt.date(2025, 1, 2)) == "2025年1月2日"
        assert format_day_month(dt.date(2025, 12, 31)) == "12月31日"


def test_date_of_aware_datetime_in_program_zone(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    # 16:30 UTC on 13 March is 00:30 on 14 March in Shanghai.
    moment = dt.datetime(2025, 3, 13, 16, 30, tzinfo=ZoneInfo("UTC"))

    with translation.override("en"):
        assert format_date(moment) == "14 Mar 2025"
