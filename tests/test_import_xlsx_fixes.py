"""XLSX reading and cleaning: date systems, formulas, long numbers, huge cells.

Every test runs both the in-memory import and the streamed import, because
they read XLSX files through different code paths. The x0N case files were
written by openpyxl the way other tools write them: a 1904 date system,
formulas without a saved result, and a 20-digit reference saved as a number.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from django.db import transaction
from openpyxl.utils.datetime import CALENDAR_MAC_1904

from members.importing.cleaning import (
    TOO_LONG_NUMBER_REASON,
    UNSAVED_FORMULA_REASON,
    RowIssue,
)
from members.importing.dates import program_zone
from members.importing.report import ImportReport, issues_csv
from members.importing.service import import_data, import_file
from members.importing.streaming import import_path
from members.importing.text import MAX_CELL_CHARS, MAX_SHOWN_CHARS
from members.models import Activity, ChannelIdentity, Member
from tests.conftest import CASES

ACTIVITY_HEADER = [
    "external_id",
    "occurred_at",
    "amount",
    "channel",
    "kind",
    "reference",
]
MEMBER_HEADER = ["external_id", "name", "phone", "email", "channel", "joined_at"]


@pytest.fixture
def base(db) -> None:
    report = import_file(CASES / "base_members.csv", "members")
    assert report.created == 4


def workbook_bytes(header: list[str], rows: list[list], *, mac_1904=False) -> bytes:
    workbook = openpyxl.Workbook()
    if mac_1904:
        workbook.epoch = CALENDAR_MAC_1904
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def patch_sheet(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace XML in the first sheet, for what openpyxl cannot write."""
    patched = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for part in source.infolist():
            content = source.read(part.filename)
            if part.filename == "xl/worksheets/sheet1.xml":
                assert old in content
                content = content.replace(old, new)
            target.writestr(part.filename, content)
    return patched.getvalue()


def run_both(data: bytes, kind: str, tmp_path: Path) -> list[tuple]:
    """Import ``data`` in memory and streamed, each rolled back afterwards.

    Returns for each path (refused, counts, issues as (line, column, value,
    reason), stored activities or members).
    """
    path = tmp_path / "upload.xlsx"
    path.write_bytes(data)
    outcomes = []
    for streamed in (False, True):
        with transaction.atomic():
            if streamed:
                report = import_path(path, kind, chunk_rows=1, keep_issues=True)
                issues = list(report.issues.rejections()) if report.issues else []
                if report.issues:
                    report.issues.close()
            else:
                report = import_data(data, kind, file_name=path.name)
                issues = report.rejections
            counts = {str(status): n for status, n in report.counts.items() if n}
            rows = [(i.line, i.column, i.value, i.reason) for i in issues]
            outcomes.append((report.refused, counts, sorted(rows), stored(kind)))
            transaction.set_rollback(True)
    return outcomes


def stored(kind: str) -> list[tuple]:
    if kind == "activities":
        return sorted(
            Activity.objects.values_list("reference", "occurred_at", "amount")
        )
    return sorted(
        Member.objects.values_list("identities__external_id", "name", "phone")
    )


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=program_zone())


# 1904 date system


def test_1904_case_file_serial_dates(base):
    report = import_file(
        CASES / "x01_transactions_1904_serial_dates.xlsx", "activities"
    )

    assert report.created == 2
    occurred = dict(Activity.objects.values_list("reference", "occurred_at"))
    assert occurred["E4-1"] == local(2024, 1, 1)
    assert occurred["E4-2"] == local(2024, 1, 1)


def test_1904_serial_read_from_workbook_epoch(base, tmp_path):
    data = workbook_bytes(
        ACTIVITY_HEADER,
        [["M0001", 43830.75, 10, "store-xuhui", "purchase", "MAC-1"]],
        mac_1904=True,
    )

    for refused, counts, issues, activities in run_both(data, "activities", tmp_path):
        assert refused is None
        assert issues == []
        assert counts == {"created": 1}
        assert activities[0][1] == local(2024, 1, 1, 18, 0)


def test_1900_serial_still_read_from_1899(base, tmp_path):
    data = workbook_bytes(
        ACTIVITY_HEADER, [["M0001", 45292, 10, "store-xuhui", "purchase", "WIN-1"]]
    )

    for _refused, _counts, _issues, activities in run_both(
        data, "activities", tmp_path
    ):
        assert activities[0][1] == local(2024, 1, 1)


def test_1904_joined_at_serial(base, tmp_path):
    data = workbook_bytes(
        MEMBER_HEADER,
        [["M0101", "Wu Lei", "13800000101", "", "store-xuhui", 43830]],
        mac_1904=True,
    )
    path = tmp_path / "members.xlsx"
    path.write_bytes(data)

    import_path(path, "members")

    member = Member.objects.get(identities__external_id="M0101")
    assert member.joined_on == dt.date(2024, 1, 1)


# Formulas without a saved result


def test_unsaved_formula_case_file_rejected(base):
    report = import_file(CASES / "x02_members_unsaved_formulas.xlsx", "members")

    assert report.created == 0
    assert report.rejected == 1
    columns = {issue.column for issue in report.rejections}
    assert columns == {"name", "phone"}
    assert all(issue.reason == UNSAVED_FORMULA_REASON for issue in report.rejections)
    assert not ChannelIdentity.objects.filter(external_id="9101").exists()


def test_unsaved_formula_rejects_row_both_paths(base, tmp_path):
    data = workbook_bytes(
        ACTIVITY_HEADER,
        [
            ["M0001", "2024-03-01 10:00", 10, "store-xuhui", "purchase", '=A2&"-1"'],
            ["M0002", "2024-03-01 11:00", 20, "store-xuhui", "purchase", "OK-2"],
        ],
    )

    for refused, counts, issues, activities in run_both(data, "activities", tmp_path):
        assert refused is None
        assert counts == {"created": 1, "rejected": 1}
        assert issues == [(2, "reference", "", UNSAVED_FORMULA_REASON)]
        assert [activity[0] for activity in activities] == ["OK-2"]


def test_row_of_only_unsaved_formulas_kept(base, tmp_path):
    data = workbook_bytes(
        MEMBER_HEADER, [['="M"&"9"', '="x"', None, None, '="c"', None]]
    )

    for _refused, counts, issues, _members in run_both(data, "members", tmp_path):
        assert counts == {"rejected": 1}
        assert {issue[1] for issue in issues} == {"external_id", "name", "channel"}


def test_formula_with_saved_result_accepted(base, tmp_path):
    # An empty <v> on a "str" cell is a formula that returned empty text.
    data = workbook_bytes(MEMBER_HEADER, [["M0102", "Ma Li", "", "", "tmall", ""]])
    data = patch_sheet(
        data,
        b'<c r="B2" t="inlineStr"><is><t>Ma Li</t></is></c>',
        b'<c r="B2" t="str"><f>"Ma"&amp;" Li"</f><v>Ma Li</v></c>'
        b'<c r="C2" t="str"><f>""</f><v></v></c>',
    )

    for refused, counts, issues, members in run_both(data, "members", tmp_path):
        assert refused is None
        assert issues == []
        assert counts == {"created": 1}
        assert ("M0102", "Ma Li", "") in members


# Long numbers in identifier columns


def test_long_numeric_reference_case_file(base):
    report = import_file(
        CASES / "x03_transactions_long_numeric_references.xlsx", "activities"
    )

    rejected = [(i.line, i.column, i.reason) for i in report.rejections]
    assert (3, "reference", TOO_LONG_NUMBER_REASON) in rejected
    references = set(Activity.objects.values_list("reference", flat=True))
    assert "1002" in references
    assert "12345678901234569216" not in references


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("external_id", 1234567890123456),
        ("external_id", 12345678901234567890),
        ("phone", 1.2345678901234567e19),
    ],
)
def test_long_number_identifier_rejected(base, tmp_path, column, value):
    row = {"external_id": "M0103", "name": "Gao", "channel": "tmall"}
    row[column] = value
    data = workbook_bytes(MEMBER_HEADER, [[row.get(name) for name in MEMBER_HEADER]])

    for _refused, counts, issues, _members in run_both(data, "members", tmp_path):
        assert counts == {"rejected": 1}
        assert [(issue[1], issue[3]) for issue in issues] == [
            (column, TOO_LONG_NUMBER_REASON)
        ]


def test_fifteen_digit_number_id_kept(base, tmp_path):
    data = workbook_bytes(
        MEMBER_HEADER, [[123456789012345, "Gao", 13800000104, None, "tmall", None]]
    )

    for _refused, counts, _issues, members in run_both(data, "members", tmp_path):
        assert counts == {"created": 1}
        assert ("123456789012345", "Gao", "13800000104") in members


# Huge cells


def test_xlsx_cell_over_limit_refuses_file(base, tmp_path):
    # openpyxl cuts strings it writes to Excel's 32,767 characters, so the
    # long cell is put into the XML afterwards.
    data = workbook_bytes(MEMBER_HEADER, [["M0105", "LONG", "", "", "tmall", ""]])
    data = patch_sheet(data, b">LONG<", b">" + b"x" * (MAX_CELL_CHARS + 1) + b"<")

    for refused, _counts, _issues, members in run_both(data, "members", tmp_path):
        assert refused is not None
        assert "line 2, column 2" in refused
        assert f"{MAX_CELL_CHARS:,} characters" in refused
        assert len(refused) < 300
        assert len(members) == 4


def test_xlsx_cell_at_limit_read(base, tmp_path):
    data = workbook_bytes(MEMBER_HEADER, [["M0106", "LONG", "", "", "tmall", ""]])
    data = patch_sheet(data, b">LONG<", b">" + b"y" * MAX_CELL_CHARS + b"<")

    for refused, counts, issues, _members in run_both(data, "members", tmp_path):
        assert refused is None
        # The name is far longer than the 200 characters Member.name keeps.
        assert counts == {"rejected": 1}
        assert len(issues[0][2]) == MAX_SHOWN_CHARS


def test_issue_value_shortened_everywhere():
    issue = RowIssue(7, "amount", "9" * 100_000, "is not a valid amount")

    assert len(issue.value) == MAX_SHOWN_CHARS
    assert issue.value.endswith("\u2026")
    assert len(issue.message) < 300
    report = ImportReport(kind="activities", file_name="f.csv", dry_run=True)
    report.reject([issue])
    assert len(issues_csv(report)) < 400


def test_short_issue_value_unchanged():
    issue = RowIssue(7, "amount", "12.5O", "is not a valid amount")

    assert issue.value == "12.5O"


def test_huge_amount_in_file_message_shortened(base):
    # The huge value proves a decimal comma and the next one a decimal point,
    # so the file is refused with both quoted.
    huge = "1" + "0" * 5000 + ",5"
    data = (
        ",".join(ACTIVITY_HEADER)
        + f'\nM0001,2024-03-01 10:00,"{huge}",tmall,purchase,H-1'
        + "\nM0001,2024-03-01 11:00,12.50,tmall,purchase,H-2\n"
    ).encode()

    report = import_data(data, "activities", file_name="huge.csv")

    assert report.refused is not None
    assert "mixes decimal commas" in report.refused
    assert len(report.refused) < 1000


# Empty amounts


def test_empty_amount_on_visit_is_zero(base, tmp_path):
    data = (
        ",".join(ACTIVITY_HEADER) + "\n"
        "M0002,2024-05-01 17:00,,tmall,visit,RF-8\n"
        "M0002,2024-05-01 15:00,,tmall,purchase,RF-6\n"
        "M0002,2024-05-01 16:00,,tmall,refund,RF-9\n"
    ).encode()
    path = tmp_path / "visits.csv"
    path.write_bytes(data)

    for streamed in (False, True):
        with transaction.atomic():
            if streamed:
                report = import_path(path, "activities", keep_issues=True)
                issues = list(report.issues.rejections())
                report.issues.close()
            else:
                report = import_data(data, "activities", file_name="visits.csv")
                issues = report.rejections
            rejected = sorted((i.line, i.column, i.reason) for i in issues)
            assert rejected == [
                (3, "amount", "is required but empty"),
                (4, "amount", "is required but empty"),
            ]
            visit = Activity.objects.get(reference="RF-8")
            assert visit.amount == Decimal("0.00")
            transaction.set_rollback(True)


def test_nonzero_amount_on_visit_still_rejected(base):
    data = (
        ",".join(ACTIVITY_HEADER) + "\nM0002,2024-05-01 16:00,5.00,tmall,visit,RF-7\n"
    ).encode()

    report = import_data(data, "activities", file_name="visit.csv")

    assert report.rejected == 1
    assert report.rejections[0].column == "amount"
