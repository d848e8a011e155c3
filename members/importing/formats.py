"""django-import-export formats for CSV and XLSX built on the reading layer.

Import: the admin calls ``create_dataset`` before it has the choices staff
made in the import form (encoding, date order). So the formats hand the raw
bytes to the resource in an ``UploadedFile``, and the resource reads them
through ``members.importing.service`` with those choices.

Export: text cells that a spreadsheet would run as a formula get a leading
single quote in CSV, and are written as string cells (never formulas) in
XLSX. Numbers stay numbers, so an amount of -12.50 is never quoted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import tablib
from import_export.formats.base_formats import Format
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from members.importing.reading import CSV, XLSX
from members.importing.text import is_quoted_formula, quote_formula

_NUMBER_TYPES = (int, float, Decimal)


@dataclass(frozen=True)
class UploadedFile:
    """An uploaded file's bytes and format, read later by a resource."""

    data: bytes
    file_format: str

    def __len__(self) -> int:
        # The admin rejects an empty dataset with "No valid data to import".
        return len(self.data)


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, _NUMBER_TYPES):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return quote_formula(str(value))


def write_csv(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """Return a UTF-8 CSV with a byte order mark, which Excel needs to read UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([quote_formula(str(header)) for header in headers])
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row])
    return buffer.getvalue().encode("utf-8-sig")


def _xlsx_cell(sheet: object, value: object) -> object:
    if value is None or isinstance(value, bool) or isinstance(value, _NUMBER_TYPES):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    text = str(value)
    if is_quoted_formula(text):
        # Keep a leading quote that the data really has through a re-import.
        text = "'" + text
    cell = WriteOnlyCell(sheet, value=text)
    # openpyxl turns text starting with "=" into a formula; force a string.
    cell.data_type = "s"
    if quote_formula(text) != text:
        # Excel's own marker for "text typed after an apostrophe": the cell
        # shows the text and stays text when someone edits it.
        cell.quotePrefix = True
    return cell


def write_xlsx(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """Return an XLSX workbook with one sheet; text cells are string cells."""
    return write_workbook([("Sheet", headers, rows)])


def write_workbook(
    sheets: Iterable[tuple[str, Sequence[str], Iterable[Sequence[object]]]],
) -> bytes:
    """Return an XLSX workbook with one sheet per (title, headers, rows)."""
    workbook = Workbook(write_only=True)
    for title, headers, rows in sheets:
        sheet = workbook.create_sheet(title)
        sheet.append([_xlsx_cell(sheet, header) for header in headers])
        for row in rows:
            sheet.append([_xlsx_cell(sheet, value) for value in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


class _FileFormat(Format):
    file_format = ""
    content_type = "application/octet-stream"

    def __init__(self, encoding: str | None = None) -> None:
        # The admin passes its default encoding on confirm. CSV decoding
        # uses the encoding chosen in the import form instead.
        self.encoding = encoding

    def get_title(self) -> str:
        return self.file_format

    def create_dataset(self, in_stream: bytes | str, **kwargs: object) -> UploadedFile:
        if isinstance(in_stream, str):
            raise TypeError("Import formats read bytes; open the file in binary mode.")
        return UploadedFile(bytes(in_stream), self.file_format)

    def is_binary(self) -> bool:
        return True

    def get_read_mode(self) -> str:
        return "rb"

    def get_extension(self) -> str:
        return self.file_format

    def get_content_type(self) -> str:
        return self.content_type

    def can_import(self) -> bool:
        return True

    def can_export(self) -> bool:
        return True


class CSVFormat(_FileFormat):
    file_format = CSV
    content_type = "text/csv"

    def export_data(self, dataset: tablib.Dataset, **kwargs: object) -> bytes:
        return write_csv(dataset.headers or [], dataset)


class XLSXFormat(_FileFormat):
    file_format = XLSX
    content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    def export_data(self, dataset: tablib.Dataset, **kwargs: object) -> bytes:
        return write_xlsx(dataset.headers or [], dataset)


FORMATS = [CSVFormat, XLSXFormat]
