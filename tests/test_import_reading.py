"""The reading layer: encodings, delimiters, headers and spreadsheet cells."""

from __future__ import annotations

import codecs
import datetime as dt
import io
import zipfile

import openpyxl
import pytest
from django.test import override_settings

from members.importing.columns import MEMBERS, map_headers
from members.importing.csv_reader import decode_csv, read_csv
from members.importing.errors import FileRejected
from members.importing.reading import CSV, XLSX, detect_format, read_table
from members.importing.sizes import megabytes, size_limit_message
from members.importing.text import clean_text, normalize_header, quote_formula
from members.importing.xlsx_reader import read_xlsx


def xlsx_bytes(
    rows: list[list[object]], formats: dict[str, str] | None = None
) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    for coordinate, number_format in (formats or {}).items():
        sheet[coordinate].number_format = number_format
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# Encodings


def test_decode_utf16_with_byte_order_mark():
    for codec in ("utf-16-le", "utf-16-be"):
        mark = codecs.BOM_UTF16_LE if codec.endswith("le") else codecs.BOM_UTF16_BE
        data = mark + "external_id,name\n1,张伟\n".encode(codec)

        text, encoding = decode_csv(data)

        assert text == "external_id,name\n1,张伟\n"
        assert encoding == "utf-16"


def test_decode_utf8_bom_removed():
    text, encoding = decode_csv(codecs.BOM_UTF8 + b"a,b\n")

    assert text == "a,b\n"
    assert encoding == "utf-8-sig"


def test_decode_gbk_detected():
    text, encoding = decode_csv("id,name\n1,张伟\n".encode("gbk"))

    assert encoding == "gb18030"
    assert text == "id,name\n1,张伟\n"


def test_decode_cp1252_detected():
    text, encoding = decode_csv("id,city\n1,München\n2,Köln\n".encode("cp1252"))

    assert encoding == "cp1252"
    assert "München" in text


def test_decode_weak_evidence_asks_for_encoding():
    # Two bytes that read as 你 in GBK and as Äã in Windows-1252.
    data = b"external_id,name\n1,\xc4\xe3\n"

    with pytest.raises(FileRejected) as raised:
        decode_csv(data)

    message = raised.value.message
    assert "GB18030" in message
    assert "Windows-1252" in message
    assert "UTF-8" in message
    assert "Choose the encoding" in message


def test_decode_chosen_encoding_overrides_detection():
    text, encoding = decode_csv(b"external_id,name\n1,\xc4\xe3\n", "gb18030")

    assert encoding == "gb18030"
    assert text.endswith("你\n")


def test_decode_never_replaces_bad_bytes():
    with pytest.raises(FileRejected, match="not valid UTF-8"):
        decode_csv(b"a\n\xff\xfe\xfa\n", "utf-8")


def test_decode_unknown_encoding_name():
    with pytest.raises(FileRejected, match="Unknown encoding 'klingon'"):
        decode_csv(b"a\n", "klingon")


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (bytes(range(256)) * 8, None),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500, None),
        (b"external_id,name\n1,Ann\x00\n", None),
        (b"id\x01\x02\x03\n", "gb18030"),
        ("id,name\n\x00\x01".encode("utf-16"), None),
    ],
)
def test_decode_binary_is_not_text(data, encoding):
    with pytest.raises(FileRejected, match=r"not readable text \(CSV\)"):
        decode_csv(data, encoding)


def test_decode_allows_cell_line_breaks():
    # FileMaker writes a vertical tab for a line break inside a cell.
    text, _encoding = decode_csv(b"id,note\n1,two\x0blines\n")

    assert "two\x0blines" in text


# Delimiters and lines


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_sniffed(delimiter):
    data = delimiter.join(["external_id", "name", "phone"]) + "\n"
    data += delimiter.join(["0001", "Ann", "013800000001"]) + "\n"

    table = read_csv(data.encode())

    assert table.delimiter == delimiter
    assert table.rows[0].cells == ("0001", "Ann", "013800000001")


def test_semicolon_file_with_decimal_commas():
    table = read_csv(b"id;amount\nA;12,50\nB;1.234,56\n")

    assert table.delimiter == ";"
    assert [row.cells for row in table.rows] == [("A", "12,50"), ("B", "1.234,56")]


def test_line_numbers_count_file_lines():
    data = b'id,note\r\n1,"two\r\nlines"\r\n\r\n2,plain\r\n'

    table = read_csv(data)

    assert [(row.line, row.cells) for row in table.rows] == [
        (2, ("1", "two\r\nlines")),
        (5, ("2", "plain")),
    ]


@override_settings(CRM_IMPORT_MAX_ROWS=2)
def test_too_many_rows_rejected():
    with pytest.raises(FileRejected, match="more than 2 data rows"):
        read_csv(b"id\n1\n2\n3\n")


@override_settings(CRM_IMPORT_MAX_BYTES=10)
def test_too_large_file_rejected():
    with pytest.raises(FileRejected, match="limit"):
        read_table(b"id,name\n1,Ann\n", CSV)


@override_settings(CRM_IMPORT_MAX_BYTES=50 * 1024 * 1024)
def test_size_limit_message_in_megabytes():
    assert size_limit_message(50 * 1024 * 1024) is None
    assert size_limit_message(50 * 1024 * 1024 + 1) == (
        "The file is 50.1 MB, more than the 50 MB limit. Split it into smaller "
        "files and import each one."
    )


@pytest.mark.parametrize(
    ("size", "round_up", "expected"),
    [
        (50 * 1024 * 1024, False, "50"),
        (52_428_800 + 1, True, "50.1"),
        (52_428_800 + 1, False, "50"),
        (1536 * 1024, False, "1.5"),
        (3 * 1024**3, False, "3,072"),
    ],
)
def test_megabytes(size, round_up, expected):
    assert megabytes(size, round_up=round_up) == expected


def test_header_only_file_has_no_data_rows():
    with pytest.raises(FileRejected, match="^The file has no data rows"):
        read_table(b"external_id,channel\n\n,\n", CSV)


def test_huge_cell_message_names_line():
    data = b'id,note\n1,ok\n2,"' + b"x" * 140_000 + b'"\n'

    with pytest.raises(FileRejected) as raised:
        read_csv(data)

    assert raised.value.message.startswith(
        "A cell in line 3 is longer than 131,072 characters"
    )


def test_detect_format_by_signature():
    assert detect_format(xlsx_bytes([["id"]])) == XLSX
    assert detect_format(b"id\n1\n", "members.csv") == CSV


# Headers and values


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (" External_ID ", "external_id"),
        ("Name\u3000", "name"),
        ("PHONE\xa0", "phone"),
        ("ｅｍａｉｌ", "email"),
        ("\u200bchannel", "channel"),
        ("External ID", "external_id"),
        ("joined-at", "joined_at"),
    ],
)
def test_normalize_header(header, expected):
    assert normalize_header(header) == expected


def test_chinese_headers_map_to_columns():
    headers = ["会员编号", "姓名", "手机号", "邮箱", "渠道", "注册日期"]

    columns = map_headers(headers, MEMBERS)

    assert columns.positions == {
        "external_id": 0,
        "name": 1,
        "phone": 2,
        "email": 3,
        "channel": 4,
        "joined_at": 5,
    }


def test_missing_required_column_named():
    with pytest.raises(FileRejected, match="Required column channel not found"):
        map_headers(["external_id", "name"], MEMBERS)


def test_two_headers_for_one_column_rejected():
    with pytest.raises(FileRejected, match="both mean column phone"):
        map_headers(["external_id", "channel", "手机", "电话"], MEMBERS)


def test_unknown_headers_listed_as_ignored():
    columns = map_headers(["external_id", "channel", "notes"], MEMBERS)

    assert columns.ignored == ("notes",)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("\u00a0 Ann\u3000", "Ann"),
        ("\u200b0007\u2060", "0007"),
        ("'=1+1", "=1+1"),
        ("'+8613800000001", "+8613800000001"),
        ("'-2+3", "-2+3"),
        ("'@SUM(1)", "@SUM(1)"),
        ("'quoted", "'quoted"),
    ],
)
def test_clean_text(cell, expected):
    assert clean_text(cell) == expected


@pytest.mark.parametrize(
    "text", ["=1+1", "+86", "-2", "@x", "'=x", "''@x", "plain", "'plain", "'"]
)
def test_quote_formula_round_trips(text):
    assert clean_text(quote_formula(text)) == text


# XLSX cells


def test_xlsx_numbers_become_text_without_float_noise():
    data = xlsx_bytes(
        [
            ["external_id", "phone", "amount", "big"],
            [1001, 13800001111, 59.9, 123456789012345],
            [1002.0, 7700900123, 0.00001, 1.5e20],
        ],
        formats={"B3": "00000000000"},
    )

    table = read_xlsx(data)

    assert table.rows[0].cells == ("1001", "13800001111", "59.9", "123456789012345")
    assert table.rows[1].cells == (
        "1002",
        "07700900123",
        "0.00001",
        "150000000000000000000",
    )
    assert table.rows[0].numeric == frozenset({0, 1, 2, 3})


def test_xlsx_date_cells_become_iso_text():
    data = xlsx_bytes(
        [
            ["joined_at", "occurred_at"],
            [dt.datetime(2024, 1, 8), dt.datetime(2024, 3, 10, 14, 30)],
        ]
    )

    table = read_xlsx(data)

    assert table.rows[0].cells == ("2024-01-08", "2024-03-10 14:30:00")
    assert table.rows[0].numeric == frozenset()


def test_xlsx_blank_rows_skipped():
    data = xlsx_bytes([["id"], ["1"], [None], ["2"]])

    table = read_xlsx(data)

    assert [(row.line, row.cells) for row in table.rows] == [(2, ("1",)), (4, ("2",))]


def test_xlsx_merged_cells_rejected_with_range():
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["external_id", "channel"])
    sheet.append(["1", "tmall"])
    sheet.append(["2", None])
    sheet.merge_cells("B2:B3")
    buffer = io.BytesIO()
    workbook.save(buffer)

    with pytest.raises(FileRejected, match=r"B2:B3 \(column channel\)"):
        read_xlsx(buffer.getvalue())


def test_not_a_zip_rejected_as_unsafe():
    with pytest.raises(FileRejected, match="not a valid or safe Excel file"):
        read_xlsx(b"PK\x03\x04 definitely not a zip")


@override_settings(CRM_XLSX_MAX_COMPRESSION_RATIO=5)
def test_high_compression_ratio_rejected():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b" " * (2 * 1024 * 1024))

    with pytest.raises(FileRejected, match="zip bomb"):
        read_xlsx(buffer.getvalue())


def test_detect_format_prefers_zip_signature():
    assert detect_format(xlsx_bytes([["id"]]), "members.csv", CSV) == XLSX
    assert detect_format(b"id\n1\n", "members.xlsx", CSV) == CSV
    assert detect_format(b"id\n1\n", "members.xlsx") == XLSX
