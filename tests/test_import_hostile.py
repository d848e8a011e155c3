"""Imports of files with values that are unclear, implausible or hostile.

Each section is one kind of fault: the file is refused when a whole column
is unclear, a row is rejected (naming its column and value) when one value
is wrong, and nothing crashes.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from decimal import Decimal

import openpyxl
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from members.importing.report import ImportReport
from members.importing.service import import_file
from members.models import Activity, ActivityKind, Member
from tests.conftest import CASES, local

ACTIVITY_HEADER = "external_id,occurred_at,amount,channel,kind,reference,quantity"
MEMBER_HEADER = "external_id,name,channel,joined_at"


@pytest.fixture
def base(db) -> None:
    import_file(CASES / "base_members.csv", "members")


def csv_bytes(header: str, *lines: str, delimiter: str = ",") -> bytes:
    rows = [header.replace(",", delimiter), *lines]
    return ("\n".join(rows) + "\n").encode()


def activities(*lines: str, **options: str) -> ImportReport:
    return import_file(
        csv_bytes(ACTIVITY_HEADER, *lines), "activities", file_name="a.csv", **options
    )


def members(*lines: str) -> ImportReport:
    return import_file(csv_bytes(MEMBER_HEADER, *lines), "members", file_name="m.csv")


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def issue_for(report, line: int):
    (issue,) = [issue for issue in report.rejections if issue.line == line]
    return issue


def soon(**delta: float) -> str:
    """Return a program-zone time ``delta`` from now as file text."""
    moment = timezone.localtime() + dt.timedelta(**delta)
    return f"{moment:%Y-%m-%d %H:%M}"


# Decimal mark without evidence

SEMICOLON_AMBIGUOUS = csv_bytes(
    "external_id,occurred_at,amount,channel,kind,reference",
    "M0001;2024-05-01 10:00;1.234;store-xuhui;purchase;EU-1",
    "M0002;2024-05-01 11:00;2.500;tmall;purchase;EU-2",
    delimiter=";",
)


def test_ambiguous_decimal_mark_refuses_file(base):
    report = import_file(SEMICOLON_AMBIGUOUS, "activities", file_name="eu.csv")

    assert report.refused is not None
    assert "Column amount is ambiguous (decimal point or comma)" in report.refused
    assert "Choose the decimal mark" in report.refused
    assert Activity.objects.count() == 0


def test_chosen_decimal_comma_reads_thousands(base):
    report = import_file(
        SEMICOLON_AMBIGUOUS, "activities", file_name="eu.csv", decimal_mark="comma"
    )

    assert report.created == 2
    amounts = dict(Activity.objects.values_list("reference", "amount"))
    assert amounts == {"EU-1": Decimal("1234.00"), "EU-2": Decimal("2500.00")}


def test_chosen_decimal_point_reads_decimals(base):
    report = import_file(
        SEMICOLON_AMBIGUOUS, "activities", file_name="eu.csv", decimal_mark="point"
    )

    assert Activity.objects.get(reference="EU-2").amount == Decimal("2.50")
    issue = issue_for(report, 2)
    assert (issue.column, issue.value) == ("amount", "1.234")
    assert "more than 2 decimal places" in issue.reason


def test_decimal_evidence_decides_other_values(base):
    report = activities(
        "M0001,2024-05-01 10:00,12.50,store-xuhui,purchase,P-1,1",
        "M0002,2024-05-01 11:00,2.500,tmall,purchase,P-2,1",
        'M0003,2024-05-01 12:00,"1,234.50",wechat-mini,purchase,P-3,1',
    )

    assert report.refused is None
    amounts = dict(Activity.objects.values_list("reference", "amount"))
    assert amounts["P-2"] == Decimal("2.50")
    assert amounts["P-3"] == Decimal("1234.50")


def test_thousands_comma_with_point_still_works(base):
    report = activities(
        'M0001,2024-05-01 10:00,"1,234.50",store-xuhui,purchase,P-1,1',
    )

    assert report.created == 1
    assert Activity.objects.get().amount == Decimal("1234.50")


def test_chosen_mark_contradicted_by_values(base):
    report = activities(
        "M0001,2024-05-01 10:00,12.50,store-xuhui,purchase,P-1,1",
        decimal_mark="comma",
    )

    assert report.refused is not None
    assert "'12.50'" in report.refused
    assert "decimal comma was chosen" in report.refused
    assert Activity.objects.count() == 0


def test_unproven_mark_not_claimed_in_message(base):
    report = activities("M0001,2024-05-01 10:00,1.234.567,store-xuhui,purchase,P-1,1")

    issue = issue_for(report, 2)
    assert issue.column == "amount"
    assert "the file uses decimal points" not in issue.reason
    assert "choose decimal comma" in issue.reason


def test_import_command_decimal_mark_option(base, tmp_path):
    path = tmp_path / "eu.csv"
    path.write_bytes(SEMICOLON_AMBIGUOUS)

    with pytest.raises(CommandError, match="ambiguous"):
        call_command("import_activities", str(path))
    call_command("import_activities", str(path), "--decimal-mark", "comma")

    assert Activity.objects.get(reference="EU-2").amount == Decimal("2500.00")


def test_unknown_decimal_mark_argument(base):
    with pytest.raises(ValueError, match="Unknown decimal mark 'dot'"):
        import_file(SEMICOLON_AMBIGUOUS, "activities", decimal_mark="dot")


def test_chosen_date_order_contradicted_by_dates(base):
    report = activities(
        "M0001,15/04/2024 10:00,10.00,store-xuhui,purchase,P-1,1",
        "M0002,03/04/2024 10:00,10.00,tmall,purchase,P-2,1",
        date_order="month_first",
    )

    assert report.refused is not None
    assert "'15/04/2024 10:00'" in report.refused
    assert "month-first was chosen" in report.refused
    assert Activity.objects.count() == 0


# Implausible values


def test_activity_far_in_future_rejected(base):
    report = activities(
        f"M0001,{soon(hours=12)},10.00,store-xuhui,purchase,P-1,1",
        f"M0002,{soon(days=2)},10.00,tmall,purchase,P-2,1",
    )

    assert list(Activity.objects.values_list("reference", flat=True)) == ["P-1"]
    issue = issue_for(report, 3)
    assert issue.column == "occurred_at"
    assert issue.value == soon(days=2)
    assert "more than 1 day in the future" in issue.reason


def test_activity_before_1990_rejected(base):
    report = activities(
        "M0001,1990-01-01 00:00,10.00,store-xuhui,purchase,P-1,1",
        "M0002,1989-12-31 23:59,10.00,tmall,purchase,P-2,1",
    )

    assert Activity.objects.get().occurred_at == local(1990, 1, 1)
    issue = issue_for(report, 3)
    assert (issue.column, issue.value) == ("occurred_at", "1989-12-31 23:59")
    assert "is before 1990-01-01" in issue.reason


def test_xlsx_time_only_number_rejected(base):
    data = xlsx_bytes(
        [
            ACTIVITY_HEADER.split(","),
            ["M0001", 0.5, 10, "store-xuhui", "purchase", "X-1", 1],
            ["M0002", 45292.5, 10, "tmall", "purchase", "X-2", 1],
        ]
    )

    report = import_file(data, "activities", file_name="times.xlsx")

    assert Activity.objects.get().reference == "X-2"
    issue = issue_for(report, 2)
    assert (issue.column, issue.value) == ("occurred_at", "0.5")
    assert "time of day without a date" in issue.reason


def test_xlsx_time_cell_rejected(base):
    data = xlsx_bytes(
        [
            ACTIVITY_HEADER.split(","),
            ["M0001", dt.time(14, 30), 10, "store-xuhui", "purchase", "X-1", 1],
        ]
    )

    report = import_file(data, "activities", file_name="times.xlsx")

    issue = issue_for(report, 2)
    assert issue.column == "occurred_at"
    assert "time of day without a date" in issue.reason


def test_joined_at_out_of_bounds_rejected(base):
    tomorrow = timezone.localdate() + dt.timedelta(days=1)

    report = members(
        "J-1,Old,store-xuhui,1900-01-01",
        "J-2,Older,store-xuhui,1899-12-31",
        f"J-3,Future,store-xuhui,{tomorrow.isoformat()}",
        f"J-4,Today,store-xuhui,{timezone.localdate().isoformat()}",
    )

    assert report.created == 2
    assert (issue_for(report, 3).column, issue_for(report, 3).value) == (
        "joined_at",
        "1899-12-31",
    )
    assert "is before 1900-01-01" in issue_for(report, 3).reason
    assert issue_for(report, 4).value == tomorrow.isoformat()
    assert "is in the future" in issue_for(report, 4).reason


@pytest.mark.parametrize(
    ("kind", "quantity", "reason"),
    [
        ("purchase", "0", "must be at least 1 for a purchase"),
        ("purchase", "-2", "is negative"),
        ("refund", "-1", "is negative"),
        ("visit", "-1", "is negative"),
    ],
)
def test_impossible_quantity_rejected(base, kind, quantity, reason):
    amounts = {"purchase": "10.00", "refund": "-10.00", "visit": "0"}
    amount = amounts[kind]

    report = activities(
        f"M0001,2024-05-01 10:00,{amount},store-xuhui,{kind},Q-1,{quantity}"
    )

    assert Activity.objects.count() == 0
    issue = issue_for(report, 2)
    assert (issue.column, issue.value) == ("quantity", quantity)
    assert reason in issue.reason


def test_zero_quantity_allowed_on_refund(base):
    report = activities("M0001,2024-05-01 10:00,-10.00,store-xuhui,refund,R-1,0")

    assert report.created == 1


@pytest.mark.parametrize("kind", ["visit", "review", "referral"])
def test_amount_on_kind_without_money_rejected(base, kind):
    report = activities(
        f"M0001,2024-05-01 10:00,5.00,store-xuhui,{kind},K-1,1",
        f"M0002,2024-05-01 10:00,0,tmall,{kind},K-2,1",
    )

    assert list(Activity.objects.values_list("reference", flat=True)) == ["K-2"]
    issue = issue_for(report, 2)
    assert (issue.column, issue.value) == ("amount", "5.00")
    assert f"must be 0 for kind {kind}" in issue.reason


def test_amount_allowed_on_kind_with_role_other(base):
    ActivityKind.objects.create(code="top-up", name="Top-up", role="other")

    report = activities("M0001,2024-05-01 10:00,50.00,store-xuhui,top-up,T-1,1")

    assert report.created == 1
    assert Activity.objects.get().amount == Decimal("50.00")


# Dates outside what datetime can store


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01 00:00",
        "9999-12-31 23:59-10:00",
        "0001-01-01 10:00+14:00",
        "0000-06-01 10:00",
    ],
)
def test_out_of_range_time_rejected(base, text):
    report = activities(
        f"M0001,{text},10.00,store-xuhui,purchase,O-1,1",
        "M0002,2024-05-01 10:00,10.00,tmall,purchase,O-2,1",
    )

    assert list(Activity.objects.values_list("reference", flat=True)) == ["O-2"]
    issue = issue_for(report, 2)
    assert (issue.column, issue.value) == ("occurred_at", text)
    assert issue.reason == "is out of range"


def test_out_of_range_joined_at_rejected(base):
    report = members("J-1,Ann,store-xuhui,0001-01-01", "J-2,Bo,store-xuhui,2020-01-01")

    assert report.created == 1
    issue = issue_for(report, 2)
    assert (issue.column, issue.value) == ("joined_at", "0001-01-01")
    assert issue.reason == "is out of range"


def test_xlsx_year_one_dates_rejected(base):
    activity_data = xlsx_bytes(
        [
            ACTIVITY_HEADER.split(","),
            ["M0001", dt.datetime(1, 1, 1), 10, "store-xuhui", "purchase", "X-1", 1],
            ["M0002", dt.datetime(2024, 5, 1), 10, "tmall", "purchase", "X-2", 1],
        ]
    )
    member_data = xlsx_bytes(
        [MEMBER_HEADER.split(","), ["J-1", "Ann", "store-xuhui", dt.date(1, 1, 1)]]
    )

    activity_report = import_file(activity_data, "activities", file_name="a.xlsx")
    member_report = import_file(member_data, "members", file_name="m.xlsx")

    assert Activity.objects.get().reference == "X-2"
    assert issue_for(activity_report, 2).column == "occurred_at"
    assert issue_for(activity_report, 2).reason == "is out of range"
    assert issue_for(member_report, 2).column == "joined_at"
    assert issue_for(member_report, 2).reason == "is out of range"


# Numbers too long or too precise


def test_huge_quantity_rejected(base):
    digits = "9" * 5000

    report = activities(
        f"M0001,2024-05-01 10:00,10.00,store-xuhui,purchase,N-1,{digits}",
        "M0002,2024-05-01 10:00,10.00,tmall,purchase,N-2,2",
    )

    assert list(Activity.objects.values_list("reference", flat=True)) == ["N-2"]
    issue = issue_for(report, 2)
    assert issue.column == "quantity"
    assert "is too large for a quantity" in issue.reason


def test_quantity_with_many_leading_zeros_is_read(base):
    report = activities(
        f"M0001,2024-05-01 10:00,10.00,store-xuhui,purchase,N-1,{'0' * 5000}3"
    )

    assert report.created == 1
    assert Activity.objects.get().quantity == 3


def test_quantity_above_integer_field_rejected(base):
    report = activities(
        "M0001,2024-05-01 10:00,10.00,store-xuhui,purchase,N-1,2147483648"
    )

    assert "is too large for a quantity" in issue_for(report, 2).reason


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("9" * 5000, "is too large for an amount"),
        ("0." + "0" * 4999 + "1", "has more than 2 decimal places"),
        ("1000000000000", "is too large for an amount"),
        ("12.5000000000000000000000000000001", "has more than 2 decimal places"),
    ],
)
def test_amount_beyond_column_rejected(base, amount, reason):
    report = activities(f"M0001,2024-05-01 10:00,{amount},store-xuhui,purchase,A-1,1")

    assert Activity.objects.count() == 0
    issue = issue_for(report, 2)
    assert issue.column == "amount"
    assert reason in issue.reason


def test_largest_amount_fits_column(base, settings):
    # A program that raises the per-activity limit to the column's size.
    settings.CRM_MAX_ACTIVITY_AMOUNT = 10**12
    report = activities(
        "M0001,2024-05-01 10:00,999999999999.99,store-xuhui,purchase,A-1,1"
    )

    assert report.created == 1
    assert Activity.objects.get().amount == Decimal("999999999999.99")


def test_amount_above_limit_rejected(base):
    report = activities("M0001,2024-05-01 10:00,1000000.01,store-xuhui,purchase,A-1,1")

    assert report.created == 0
    assert "CRM_MAX_ACTIVITY_AMOUNT" in report.rejections[0].reason


def test_xlsx_amount_beyond_column_rejected(base):
    data = xlsx_bytes(
        [
            ACTIVITY_HEADER.split(","),
            ["M0001", "2024-05-01 10:00", 1.5e20, "store-xuhui", "purchase", "X-1", 1],
            ["M0002", "2024-05-01 10:00", 0.001, "tmall", "purchase", "X-2", 1],
        ]
    )

    report = import_file(data, "activities", file_name="big.xlsx")

    assert Activity.objects.count() == 0
    assert "is too large for an amount" in issue_for(report, 2).reason
    assert "more than 2 decimal places" in issue_for(report, 3).reason


# Files that are not CSV, empty or too large


def test_binary_file_is_not_readable_text(base):
    data = random.Random(7).randbytes(4000)

    report = import_file(data, "members", file_name="photo.csv")

    assert report.refused is not None
    assert "not readable text (CSV)" in report.refused
    assert "Required" not in report.refused


def test_binary_file_with_chosen_encoding(base):
    data = random.Random(8).randbytes(4000)

    report = import_file(data, "members", file_name="photo.csv", encoding="cp1252")

    assert "not readable text (CSV)" in report.refused


def test_utf16_without_byte_order_mark_needs_choice(base):
    data = (MEMBER_HEADER + "\nJ-1,Ann,store-xuhui,2020-01-01\n").encode("utf-16-le")

    refused = import_file(data, "members", file_name="u.csv").refused
    report = import_file(data, "members", file_name="u.csv", encoding="utf-16-le")

    assert "not readable text (CSV)" in refused
    assert "UTF-16" in refused
    assert report.created == 1


@pytest.mark.parametrize(
    "data",
    [
        (ACTIVITY_HEADER + "\n").encode(),
        (ACTIVITY_HEADER + "\n,,,,,,\n\n").encode(),
        xlsx_bytes([ACTIVITY_HEADER.split(",")]),
    ],
)
def test_header_only_file_refused(base, data):
    report = import_file(data, "activities", file_name="empty")

    assert report.refused is not None
    assert report.refused.startswith("The file has no data rows")


@override_settings(
    CRM_IMPORT_MAX_BYTES=2 * 1024 * 1024,
    CRM_IMPORT_STREAMING_MAX_BYTES=2 * 1024 * 1024,
)
def test_size_limit_in_megabytes(base, tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * (2 * 1024 * 1024 + 1))

    with pytest.raises(CommandError) as raised:
        call_command("import_members", str(path))

    message = str(raised.value)
    assert "The file is 2.1 MB, more than the 2 MB limit." in message


def test_huge_cell_named_with_limit(base):
    data = csv_bytes(MEMBER_HEADER, "J-1,Ann,store-xuhui,2020-01-01")
    data += b'J-2,"' + b"x" * 200_000 + b'",store-xuhui,2020-01-01\n'

    report = import_file(data, "members", file_name="huge.csv")

    assert report.refused is not None
    assert "A cell in line 3 is longer than 131,072 characters" in report.refused
    assert "field limit" not in report.refused
    assert Member.objects.count() == 4
