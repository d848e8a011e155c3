"""The import cases in tests/cases/import/CASES.md, one test per expected outcome.

Start state for every test: the four members of base_members.csv.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import tracemalloc
import zipfile
from decimal import Decimal

import openpyxl
import pytest
from django.db.models import Sum

from members.importing.formats import CSVFormat, XLSXFormat
from members.importing.service import import_file
from members.models import Activity, Channel, ChannelIdentity, Member
from members.resources import ActivityResource, MemberResource
from tests.conftest import CASES, local, publish_spec
from tiers.evaluation import explain_member
from tiers.models import Tier, TierChange
from tiers.rules import Need, TierSpec, VersionSpec

UTC = dt.UTC


@pytest.fixture
def base(db) -> None:
    report = import_file(CASES / "base_members.csv", "members")
    assert report.created == 4


def member(external_id: str) -> Member:
    return Member.objects.get(identities__external_id=external_id)


def spend(external_id: str) -> Decimal:
    total = Activity.objects.filter(member=member(external_id)).aggregate(Sum("amount"))
    return total["amount__sum"] or Decimal("0")


def export_members_csv() -> list[list[str]]:
    data = CSVFormat().export_data(MemberResource().export(Member.objects.all()))
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


# c01: leading zeros in ids and phones


def test_c01_keeps_leading_zeros(base):
    report = import_file(CASES / "c01_members_leading_zeros.csv", "members")

    assert report.created == 3
    assert report.rejected == 0
    assert member("000123").phone == "013800001111"
    assert len(member("000123").phone) == 12
    assert member("0007").phone == "07700900123"
    assert member("00420").phone == "+8613800002222"
    ids = set(ChannelIdentity.objects.values_list("external_id", flat=True))
    assert {"000123", "0007", "00420"} <= ids
    assert not ids & {"123", "7", "420"}


def test_c01_id_7_is_not_member_0007(base):
    import_file(CASES / "c01_members_leading_zeros.csv", "members")
    later = b"external_id,name,channel\n7,Someone Else,store-london\n"

    report = import_file(later, "members", file_name="later.csv")

    assert report.created == 1
    assert report.updated == 0
    assert member("0007").name == "Sun Hao"
    assert member("7").name == "Someone Else"


def test_c01_export_then_reimport_is_identical(base):
    import_file(CASES / "c01_members_leading_zeros.csv", "members")
    before = list(
        Member.objects.order_by("pk").values_list(
            "name", "phone", "phone_e164", "email"
        )
    )
    exported = export_members_csv()

    assert exported[0] == [
        "external_id",
        "name",
        "phone",
        "email",
        "channel",
        "joined_at",
    ]
    rows = {row[0]: row for row in exported[1:]}
    assert rows["000123"][2] == "013800001111"
    assert rows["0007"][2] == "07700900123"
    assert rows["00420"][2] == "'+8613800002222"

    payload = "\r\n".join(",".join(row) for row in exported).encode()
    report = import_file(payload, "members", file_name="export.csv")

    assert report.created == 0
    assert report.updated == 0
    assert report.unchanged == 7
    after = list(
        Member.objects.order_by("pk").values_list(
            "name", "phone", "phone_e164", "email"
        )
    )
    assert after == before


def test_c01_export_imports_into_empty_database(base):
    import_file(CASES / "c01_members_leading_zeros.csv", "members")
    exported = CSVFormat().export_data(MemberResource().export(Member.objects.all()))
    before = set(
        ChannelIdentity.objects.values_list(
            "external_id", "channel__code", "member__phone", "member__joined_on"
        )
    )
    ChannelIdentity.objects.all().delete()
    Member.objects.all().delete()

    report = import_file(exported, "members", file_name="export.csv")

    assert report.created == 7
    after = set(
        ChannelIdentity.objects.values_list(
            "external_id", "channel__code", "member__phone", "member__joined_on"
        )
    )
    assert after == before


# c02: phones and ids typed as numbers in Excel


def test_c02_numbers_become_exact_text(base):
    report = import_file(CASES / "c02_members_phone_as_number.xlsx", "members")

    assert report.created == 3
    assert report.rejected == 0
    assert member("1001").phone == "13800001111"
    assert member("1002").phone == "13800002222"
    assert member("1003").phone == "07700900123"
    assert member("1001").joined_on == dt.date(2024, 1, 8)
    assert member("1002").joined_on == dt.date(2024, 1, 9)
    assert member("1003").joined_on == dt.date(2024, 1, 10)
    ids = set(ChannelIdentity.objects.values_list("external_id", flat=True))
    assert {"1001", "1002", "1003"} <= ids
    phones = set(Member.objects.values_list("phone", flat=True))
    assert not phones & {"13800001111.0", "1.3800001111E10", "7700900123"}


# c04: UTF-8 with byte order mark and CRLF


def test_c04_utf8_bom_header_recognised(base):
    report = import_file(CASES / "c04_members_utf8_bom.csv", "members")

    assert report.created == 3
    assert report.encoding == "utf-8-sig"
    assert member("3001").name == "张伟"
    assert member("3002").name == "José Álvarez"
    assert member("3003").name == "Nguyễn Thị Lan"
    assert ChannelIdentity.objects.get(external_id="3001").channel.code == "门店-静安"


def test_c04_no_byte_order_mark_stored(base):
    import_file(CASES / "c04_members_utf8_bom.csv", "members")

    for row in Member.objects.values_list("name", "phone", "email"):
        assert not any("\ufeff" in value for value in row)
    assert not ChannelIdentity.objects.filter(external_id__contains="\ufeff").exists()
    assert not Channel.objects.filter(code__contains="\ufeff").exists()


# c05: Chinese Excel, GBK without byte order mark


@pytest.mark.parametrize("name", ["c05_members_gbk.csv", "c05_members_gbk.xlsx"])
def test_c05_gbk_file_gives_four_members(base, name):
    report = import_file(CASES / name, "members")

    assert report.created == 4
    names = [member(str(i)).name for i in range(4001, 4005)]
    assert names == ["王芳", "陈喆", "朱镕", "欧阳娜娜"]
    channels = [
        ChannelIdentity.objects.get(external_id=str(i)).channel.code
        for i in range(4001, 4005)
    ]
    assert channels == ["门店-徐汇", "天猫旗舰店", "微信小程序", "抖音直播"]
    joined = [member(str(i)).joined_on for i in range(4001, 4005)]
    assert joined == [dt.date(2024, 4, day) for day in range(1, 5)]


def test_c05_csv_is_read_as_gb18030(base):
    report = import_file(CASES / "c05_members_gbk.csv", "members")

    assert report.encoding == "gb18030"


def test_c05_chosen_gb18030_is_used(base):
    report = import_file(CASES / "c05_members_gbk.csv", "members", encoding="gb18030")

    assert report.created == 4
    assert member("4002").name == "陈喆"


def test_c05_utf8_choice_fails_naming_encoding(base):
    report = import_file(CASES / "c05_members_gbk.csv", "members", encoding="utf-8")

    assert "not valid UTF-8" in report.refused
    assert Member.objects.count() == 4


# c07: European Excel


def test_c07_semicolons_and_decimal_commas(base):
    report = import_file(
        CASES / "c07_transactions_semicolon_decimal_comma.csv", "activities"
    )

    assert report.created == 3
    assert report.encoding == "cp1252"
    first = Activity.objects.get(reference="DE-0001")
    assert first.amount == Decimal("12.50")
    assert first.member == member("M0001")
    assert first.occurred_at == local(2024, 1, 31, 18, 5)
    second = Activity.objects.get(reference="DE-0002")
    assert second.amount == Decimal("1234.56")
    assert second.member == member("M0002")
    assert second.occurred_at == local(2024, 2, 1, 10, 0)
    refund = Activity.objects.get(reference="DE-0003")
    assert refund.amount == Decimal("-3.00")
    assert refund.kind.code == "refund"
    assert refund.occurred_at == local(2024, 2, 2, 11, 30)
    assert first.channel.code == "boutique-münchen"


# c08: currency symbols


def test_c08_currency_symbols_and_foreign_currency(base):
    report = import_file(CASES / "c08_transactions_currency_symbols.csv", "activities")

    amounts = dict(Activity.objects.values_list("reference", "amount"))
    assert amounts == {
        "CN-1001": Decimal("1234.50"),
        "CN-1002": Decimal("88.00"),
        "CN-1003": Decimal("-12.50"),
        "CN-1004": Decimal("20.00"),
        "CN-1005": Decimal("-5.00"),
    }
    assert report.rejected == 1
    (issue,) = report.rejections
    assert issue.line == 7
    assert issue.column == "amount"
    assert issue.value == "$15.00"
    assert "USD" in issue.reason
    assert "CNY" in issue.reason
    assert spend("M0001") == Decimal("1254.50")
    assert spend("M0002") == Decimal("83.00")
    assert spend("M0003") == Decimal("-12.50")
    assert spend("M0004") == Decimal("0")


# c09: Excel serial dates


def test_c09_excel_serials_are_dates(base):
    report = import_file(
        CASES / "c09_transactions_excel_serial_dates.xlsx", "activities"
    )

    assert report.created == 3
    assert report.rejected == 0
    times = dict(Activity.objects.values_list("reference", "occurred_at"))
    assert times["XS-0001"] == local(2024, 1, 1, 0, 0)
    assert times["XS-0002"] == local(2024, 2, 15, 18, 0)
    assert times["XS-0003"] == local(2024, 3, 10, 14, 30)


# c10a and c10b: day/month order


def test_c10a_column_is_day_first(base):
    report = import_file(CASES / "c10a_transactions_dates_day_first.csv", "activities")

    assert report.created == 4
    times = dict(Activity.objects.values_list("reference", "occurred_at"))
    assert times["UK-2001"] == local(2024, 4, 3, 10, 0)
    assert times["UK-2002"] == local(2024, 4, 15, 11, 0)
    assert times["UK-2003"] == local(2024, 2, 28, 12, 0)
    assert times["UK-2004"] == local(2024, 4, 20, 9, 15)


def test_c10b_ambiguous_dates_reject_file(base):
    report = import_file(CASES / "c10b_transactions_dates_ambiguous.csv", "activities")

    assert "occurred_at" in report.refused
    assert "ambiguous" in report.refused
    assert report.created == 0
    assert Activity.objects.count() == 0


@pytest.mark.parametrize(
    ("order", "dates"),
    [
        ("day_first", [(2024, 4, 3), (2024, 6, 5), (2024, 12, 11)]),
        ("month_first", [(2024, 3, 4), (2024, 5, 6), (2024, 11, 12)]),
    ],
)
def test_c10b_chosen_order_is_used(base, order, dates):
    import_file(
        CASES / "c10b_transactions_dates_ambiguous.csv", "activities", date_order=order
    )

    times = [
        Activity.objects.get(reference=reference).occurred_at
        for reference in ("UK-2101", "UK-2102", "UK-2103")
    ]
    assert times == [local(*date) for date in dates]


# c12: header and value variants


def test_c12_header_variants_recognised(base):
    report = import_file(CASES / "c12_members_header_variants.csv", "members")

    assert report.created == 2
    assert report.ignored_columns == []
    first = member("6001")
    assert first.name == "周杰"
    assert first.phone == "13800001414"
    assert first.email == "zhou.jie@example.com"
    assert first.joined_on == dt.date(2024, 6, 1)
    assert member("6002").phone == "+4915100000000"


# c13: blank and formatted-but-empty rows


def test_c13_blank_rows_skipped_quickly(base):
    started = time.perf_counter()
    report = import_file(CASES / "c13_members_trailing_blank_rows.xlsx", "members")
    elapsed = time.perf_counter() - started

    assert report.total_rows == 4
    assert report.created == 4
    assert report.rejected == 0
    assert [outcome.line for outcome in report.sorted_lines()] == [2, 3, 4, 6]
    assert elapsed < 3


# c15: merged cells


def test_c15_merged_cells_reject_file(base):
    report = import_file(CASES / "c15_members_merged_cells.xlsx", "members")

    assert "E2:E4" in report.refused
    assert "channel" in report.refused
    assert Member.objects.count() == 4


# c17: one bad amount


def test_c17_bad_amount_rejects_only_its_line(base):
    report = import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")

    assert report.created == 3
    assert report.rejected == 1
    (issue,) = report.rejections
    assert issue.line == 4
    assert issue.column == "amount"
    assert issue.value == "12.5O"
    assert "12.5O" in issue.message
    assert "amount" in issue.message
    assert spend("M0001") == Decimal("120.00")
    assert spend("M0002") == Decimal("80.00")
    assert spend("M0003") == Decimal("0")
    assert spend("M0004") == Decimal("45.00")


def test_c17_fixed_file_adds_only_fixed_line(base):
    import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")
    fixed = (
        (CASES / "c17_transactions_bad_amount_row.csv")
        .read_bytes()
        .replace(b"12.5O", b"12.50")
    )

    report = import_file(fixed, "activities", file_name="c17_fixed.csv")

    assert report.created == 1
    assert report.already_imported == 3
    assert Activity.objects.get(reference="CN-3003").amount == Decimal("12.50")
    assert Activity.objects.count() == 4
    assert spend("M0003") == Decimal("12.50")
    assert spend("M0001") == Decimal("120.00")


# c18: unknown member


def test_c18_unknown_member_rejected(base):
    report = import_file(
        CASES / "c18_transactions_unknown_member_by_id.csv", "activities"
    )

    assert set(Activity.objects.values_list("reference", flat=True)) == {
        "CN-4001",
        "CN-4003",
    }
    assert Activity.objects.get(reference="CN-4001").member == member("M0001")
    assert Activity.objects.get(reference="CN-4003").member == member("M0003")
    (issue,) = report.rejections
    assert issue.line == 3
    assert issue.column == "external_id"
    assert issue.value == "M0999"
    assert "not a known member" in issue.reason
    assert "Traceback" not in issue.message
    assert not ChannelIdentity.objects.filter(external_id="M0999").exists()
    assert Member.objects.count() == 4


# c20: duplicates in the file, then the same file again


def test_c20_first_import_skips_duplicate_line(base):
    report = import_file(CASES / "c20_transactions_duplicates.csv", "activities")

    assert report.created == 4
    assert report.duplicates == 1
    (issue,) = report.skipped
    assert issue.line == 5
    assert "duplicate of line 3" in issue.reason
    references = sorted(Activity.objects.values_list("reference", flat=True))
    assert references == ["CN-5001", "CN-5002", "TM-88001", "WX-7001"]
    assert spend("M0001") == Decimal("198.00")
    assert spend("M0002") == Decimal("150.00")
    assert spend("M0003") == Decimal("30.00")


def test_c20_second_import_adds_nothing(base, ladder):
    import_file(CASES / "c20_transactions_duplicates.csv", "activities")
    tiers_before = list(
        Member.objects.order_by("pk").values_list("pk", "tier_id", "tier_since")
    )
    changes_before = TierChange.objects.count()

    report = import_file(CASES / "c20_transactions_duplicates.csv", "activities")

    assert report.created == 0
    assert report.updated == 0
    assert report.already_imported == 5
    assert [issue.line for issue in report.skipped] == [2, 3, 4, 5, 6]
    assert all(issue.reason == "already imported" for issue in report.skipped)
    assert Activity.objects.count() == 4
    assert spend("M0001") == Decimal("198.00")
    assert spend("M0002") == Decimal("150.00")
    assert spend("M0003") == Decimal("30.00")
    tiers_after = list(
        Member.objects.order_by("pk").values_list("pk", "tier_id", "tier_since")
    )
    assert tiers_after == tiers_before
    assert TierChange.objects.count() == changes_before


# c21: a refund that cancels a promoting purchase


@pytest.fixture
def spend_ladder(db) -> dict[str, Tier]:
    """A base tier and Gold at lifetime net spend of at least 5,000.00."""
    base_tier = Tier.objects.create(name="Base", rank=0)
    gold = Tier.objects.create(name="Gold", rank=10)
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(base_tier),
                TierSpec(gold, Need("net_spend", "5000", window="lifetime")),
            ]
        )
    )
    return {"base": base_tier, "gold": gold}


def test_c21_refund_cancels_promotion(spend_ladder, base):
    before = member("M0003")
    assert before.tier == spend_ladder["base"]

    report = import_file(CASES / "c21_transactions_refund_pair.csv", "activities")

    assert report.created == 4
    assert spend("M0003") == Decimal("200.00")
    after = member("M0003")
    assert after.tier == spend_ladder["base"]
    assert after.tier_since == before.tier_since
    assert not TierChange.objects.filter(
        member=after, to_tier=spend_ladder["gold"]
    ).exists()
    refunds = Activity.objects.filter(kind__code="refund").values_list(
        "amount", flat=True
    )
    assert sorted(refunds) == [Decimal("-5000.00"), Decimal("-100.00")]


def test_c21_progress_is_200_of_5000(spend_ladder, base):
    import_file(CASES / "c21_transactions_refund_pair.csv", "activities")

    evaluation = explain_member(member("M0003"))

    (gold,) = evaluation.explanation["tiers"]
    (requirement,) = gold["requirements"]
    assert Decimal(requirement["value"]) == Decimal("200.00")
    assert Decimal(requirement["threshold"]) == Decimal("5000.00")
    assert Decimal(requirement["value"]) / Decimal(requirement["threshold"]) == Decimal(
        "0.04"
    )


def test_c21_purchase_alone_would_promote(spend_ladder, base):
    lines = (CASES / "c21_transactions_refund_pair.csv").read_bytes().splitlines()

    import_file(b"\n".join(lines[:2]), "activities", file_name="c21_first_line.csv")

    assert member("M0003").tier == spend_ladder["gold"]


# c22: formula injection


def test_c22_names_stored_as_text(base):
    report = import_file(CASES / "c22_members_formula_injection.csv", "members")

    assert report.created == 5
    assert member("8001").name == '=HYPERLINK("http://example.invalid/x","Click me")'
    assert member("8002").name == "+SUM(1+1)*cmd|' /C calc'!A0"
    assert member("8003").name == "@SUM(1+1)"
    assert member("8004").name == "-2+3"
    assert member("8005").name == "=1+1"


def test_c22_csv_export_quotes_formulas(base):
    import_file(CASES / "c22_members_formula_injection.csv", "members")

    rows = {row[0]: row for row in export_members_csv()[1:]}

    assert rows["8001"][1] == '\'=HYPERLINK("http://example.invalid/x","Click me")'
    assert rows["8002"][1] == "'+SUM(1+1)*cmd|' /C calc'!A0"
    assert rows["8003"][1] == "'@SUM(1+1)"
    assert rows["8004"][1] == "'-2+3"
    assert rows["8005"][1] == "'=1+1"
    assert rows["M0001"][1] == "Lin Xiaoyu"


def test_c22_xlsx_export_has_no_formulas(base):
    import_file(CASES / "c22_members_formula_injection.csv", "members")

    data = XLSXFormat().export_data(MemberResource().export(Member.objects.all()))

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet_xml
    assert "<f " not in sheet_xml
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    names = {row[0].value: row[1] for row in sheet.iter_rows(min_row=2)}
    assert names["8005"].value == "=1+1"
    assert names["8005"].data_type == "s"
    assert names["8001"].data_type == "s"
    assert names["8001"].quotePrefix


def test_c22_negative_amount_exports_as_number(base):
    refund = b"external_id,occurred_at,amount,channel,kind,reference\n" + (
        b"M0001,2024-08-01 10:00,-12.50,store-xuhui,refund,CN-8001\n"
    )
    import_file(refund, "activities", file_name="refund.csv")
    dataset = ActivityResource().export(Activity.objects.all())

    csv_rows = list(
        csv.reader(io.StringIO(CSVFormat().export_data(dataset).decode("utf-8-sig")))
    )
    sheet = openpyxl.load_workbook(io.BytesIO(XLSXFormat().export_data(dataset))).active

    assert csv_rows[1][2] == "-12.50"
    amount_cell = sheet.cell(row=2, column=3)
    assert amount_cell.data_type == "n"
    assert amount_cell.value == -12.5


# c23 and c24: hostile XLSX files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("c23_xlsx_billion_laughs.xlsx", "not a valid or safe Excel file"),
        ("c24_xlsx_zip_bomb.xlsx", "MiB"),
    ],
)
def test_hostile_xlsx_rejected_quickly(base, name, message):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        report = import_file(CASES / name, "members")
        elapsed = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert message in report.refused
    assert elapsed < 2
    assert peak < 100 * 1024 * 1024
    assert Member.objects.count() == 4


# c26: time zones


def test_c26_offsets_give_the_right_instants(base):
    import_file(CASES / "c26_transactions_timezones.csv", "activities")

    times = dict(Activity.objects.values_list("reference", "occurred_at"))
    assert times["TZ-1"] == dt.datetime(2024, 3, 31, 15, 30, tzinfo=UTC)
    assert times["TZ-2"] == dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)
    assert times["TZ-3"] == dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)
    assert times["TZ-4"] == dt.datetime(2024, 3, 31, 16, 30, tzinfo=UTC)
    assert times["TZ-1"].astimezone(local(2024, 1, 1).tzinfo).month == 3
    assert times["TZ-2"].astimezone(local(2024, 1, 1).tzinfo).month == 4


def test_c26_export_reimport_keeps_instants(base):
    import_file(CASES / "c26_transactions_timezones.csv", "activities")
    before = dict(Activity.objects.values_list("reference", "occurred_at"))
    exported = CSVFormat().export_data(
        ActivityResource().export(Activity.objects.all())
    )
    Activity.objects.all().delete()

    report = import_file(exported, "activities", file_name="export.csv")

    assert report.created == 4
    assert dict(Activity.objects.values_list("reference", "occurred_at")) == before
