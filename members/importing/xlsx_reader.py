"""XLSX reading that refuses zip bombs, XML entity tricks and merged cells.

The archive's directory is checked before any part is inflated. openpyxl
parses XML through defusedxml when that package is installed, which makes
entity declarations ("billion laughs") an error instead of a memory blow-up.
``read_xlsx`` reads bytes held in memory, and ``XlsxStream`` reads a stored
file row by row, any number of times. Both return ``XlsxRow``s, which carry
the workbook's date system and the cells whose formula has no saved result.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO
from xml.etree.ElementTree import Element, ParseError

import openpyxl
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring, iterparse
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from openpyxl.utils.cell import coordinate_to_tuple, range_boundaries
from openpyxl.utils.datetime import WINDOWS_EPOCH
from openpyxl.utils.exceptions import InvalidFileException

from members.importing.errors import FileRejected
from members.importing.table import SourceRow, Table, check_row_count
from members.importing.text import MAX_CELL_CHARS

logger = logging.getLogger(__name__)

NOT_SAFE_MESSAGE = (
    "The file is not a valid or safe Excel file. Open it in Excel, save it "
    "again as .xlsx (or as CSV UTF-8) and import that file."
)
# Errors that openpyxl, zipfile and the XML parsers raise on damaged or
# hostile files. Our own FileRejected is not among them.
_READ_ERRORS = (
    DefusedXmlException,
    ParseError,
    zipfile.BadZipFile,
    zlib.error,
    InvalidFileException,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    AttributeError,
    EOFError,
)
_SHARED_STRINGS_TYPE = (
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
)
# [Content_Types].xml lists one entry per part, so one written by Excel or
# openpyxl is a few KiB.
_MAX_MANIFEST_BYTES = 1024 * 1024
# Parts smaller than this cannot exhaust memory whatever their ratio, and
# small XML parts legitimately compress very well.
_RATIO_CHECK_MIN_BYTES = 1024 * 1024
_ZERO_PADDED_FORMAT = re.compile(r"0{2,}")
# A file with more formula cells without a saved result than this is
# rejected whole, so that the positions kept for them stay small.
MAX_UNSAVED_FORMULAS = 10_000
UNSAVED_FORMULAS_MESSAGE = (
    "The file has more than {count:,} formula cells with no saved result, "
    "which happens when a program other than Excel wrote the file. Open the "
    "file in Excel, save it, and import again."
)


@dataclass(frozen=True)
class XlsxRow(SourceRow):
    """A spreadsheet data row, with what the text of its cells cannot show.

    ``epoch`` is the day that serial number 0 stands for in the workbook's
    date system: 1899-12-30 for the 1900 system, 1904-01-01 for the 1904
    system. ``unsaved_formulas`` contains the indexes of formula cells that
    have no saved result, which openpyxl reads as empty.
    """

    epoch: dt.datetime = WINDOWS_EPOCH
    unsaved_formulas: frozenset[int] = frozenset()


@dataclass
class SheetScan:
    """Merged ranges and unsaved formulas of a sheet, which openpyxl hides.

    ``unsaved_formulas`` maps a line to the 0-based column indexes of its
    formula cells without a saved result.
    """

    merged_ranges: list[str] = field(default_factory=list)
    unsaved_formulas: dict[int, frozenset[int]] = field(default_factory=dict)


def check_archive(archive: zipfile.ZipFile) -> None:
    """Raise FileRejected when the parts would inflate past the settings.

    Sizes come from the zip directory, so nothing is decompressed here.
    zipfile stops reading a part at its declared size, so a directory that
    understates a size cannot be used to get past this check.
    """
    max_total = settings.CRM_XLSX_MAX_UNCOMPRESSED_BYTES
    max_ratio = settings.CRM_XLSX_MAX_COMPRESSION_RATIO
    parts = archive.infolist()
    total = sum(part.file_size for part in parts)
    if total > max_total:
        raise FileRejected(
            f"The Excel file would expand to {total / 2**20:,.0f} MiB when "
            f"opened, more than the {max_total / 2**20:,.0f} MiB limit, so it "
            "was not opened. Split the data into smaller files or save it as CSV."
        )
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size >= _RATIO_CHECK_MIN_BYTES and ratio > max_ratio:
            raise FileRejected(
                f"The Excel file's part {part.filename} expands {ratio:,.0f} times "
                f"(the limit is {max_ratio}), the size pattern of a zip bomb, so it "
                "was not opened. Save the data again from Excel or as CSV."
            )
    _check_shared_strings(archive)


def _shared_string_parts(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Return the parts that [Content_Types].xml declares as shared-string tables.

    openpyxl 3.1 finds the table the same way, by its content type, so a
    table stored under another name is found too.
    """
    try:
        manifest = archive.getinfo("[Content_Types].xml")
    except KeyError:
        return []
    if manifest.file_size > _MAX_MANIFEST_BYTES:
        raise FileRejected(NOT_SAFE_MESSAGE)
    try:
        root = fromstring(archive.read(manifest))
    except (DefusedXmlException, ParseError, zipfile.BadZipFile, zlib.error):
        raise FileRejected(NOT_SAFE_MESSAGE) from None
    names = {
        element.get("PartName", "").lstrip("/")
        for element in root.iter()
        if element.tag.rsplit("}", 1)[-1] == "Override"
        and element.get("ContentType") == _SHARED_STRINGS_TYPE
    }
    return [part for part in archive.infolist() if part.filename in names]


def _check_shared_strings(archive: zipfile.ZipFile) -> None:
    """Raise FileRejected when the shared-string table exceeds its own limit.

    openpyxl reads the whole table into memory even in read-only mode
    (about 6.6 bytes of memory per byte of XML for short strings), while it
    streams worksheets.
    """
    max_bytes = settings.CRM_XLSX_MAX_SHARED_STRINGS_BYTES
    for part in _shared_string_parts(archive):
        if part.file_size > max_bytes:
            raise FileRejected(
                f"The Excel file's shared-string table is "
                f"{part.file_size / 2**20:,.1f} MiB, more than the "
                f"{max_bytes / 2**20:,.0f} MiB limit, so it was not opened. Save "
                "the data as CSV UTF-8 and import that file: CSV files have no "
                "such limit."
            )


def _has_no_saved_result(cell: Element) -> bool:
    """Return whether a <c> element is a formula without a saved result.

    Excel saves the last result in <v>. A missing <v> means no result, and
    so does an empty one unless the cell's type is "str" (a formula that
    returned empty text). openpyxl writes formulas with an empty <v/>.
    """
    formula = value = None
    for child in cell:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "f":
            formula = child
        elif tag == "v":
            value = child
    if formula is None:
        return False
    if value is None:
        return True
    return not value.text and cell.get("t") != "str"


def scan_sheet(archive: zipfile.ZipFile, sheet_path: str) -> SheetScan:
    """Stream a sheet's XML once for merged ranges and unsaved formulas.

    openpyxl's read-only mode ignores merges and, with ``data_only``,
    returns None for a formula without a saved result. The sheet is parsed
    through defusedxml, and row elements are dropped as they end. Raises
    FileRejected when more than MAX_UNSAVED_FORMULAS cells lack a result.
    """
    scan = SheetScan()
    unsaved: dict[int, set[int]] = {}
    unsaved_count = 0
    line = 0
    column = 0
    with archive.open(sheet_path) as source:
        for event, element in iterparse(source, events=("start", "end")):
            tag = element.tag.rsplit("}", 1)[-1]
            if event == "start":
                if tag == "row":
                    line = int(element.get("r") or line + 1)
                    column = 0
                continue
            if tag == "c":
                reference = element.get("r")
                if reference:
                    column = coordinate_to_tuple(reference)[1]
                else:
                    column += 1
                if _has_no_saved_result(element):
                    unsaved_count += 1
                    if unsaved_count > MAX_UNSAVED_FORMULAS:
                        raise FileRejected(
                            UNSAVED_FORMULAS_MESSAGE.format(count=MAX_UNSAVED_FORMULAS)
                        )
                    unsaved.setdefault(line, set()).add(column - 1)
            elif tag == "mergeCell" and element.get("ref"):
                scan.merged_ranges.append(element.get("ref"))
            elif tag == "row":
                element.clear()
    scan.unsaved_formulas = {
        line: frozenset(columns) for line, columns in unsaved.items()
    }
    return scan


def _number_text(value: int | float, number_format: str | None) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer():
            value = int(value)
    if isinstance(value, int):
        text = str(value)
        # Excel shows 7700900123 with format 00000000000 as 07700900123.
        if (
            number_format
            and _ZERO_PADDED_FORMAT.fullmatch(number_format)
            and value >= 0
        ):
            text = text.zfill(len(number_format))
        return text
    # repr gives the shortest text that reads back as the same float, and
    # Decimal's "f" format writes it without an exponent.
    return format(Decimal(repr(value)), "f")


def _datetime_text(value: dt.datetime) -> str:
    # openpyxl keeps milliseconds of the serial's float error, e.g.
    # 14:29:59.999 for 14:30, so round to the second.
    if value.microsecond >= 500_000:
        value += dt.timedelta(seconds=1)
    value = value.replace(microsecond=0)
    if value.time() == dt.time.min:
        return value.date().isoformat()
    return value.isoformat(sep=" ")


def cell_text(value: object, number_format: str | None) -> tuple[str, bool]:
    """Return a cell's value as text, and whether the cell held a number."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE"), False
    if isinstance(value, dt.datetime):
        return _datetime_text(value), False
    if isinstance(value, dt.date | dt.time):
        return value.isoformat(), False
    if isinstance(value, int | float):
        return _number_text(value, number_format), True
    return str(value), False


def _too_long_message(line: int, column: int) -> str:
    return (
        f"The cell in line {line}, column {column + 1} is longer than "
        f"{MAX_CELL_CHARS:,} characters, the maximum for one cell. Fix the "
        "cell and import again."
    )


def _row_cells(row: tuple, line: int) -> tuple[tuple[str, ...], frozenset[int]]:
    """Return the text of a row's cells and the indexes of its number cells.

    Raises FileRejected for a cell longer than MAX_CELL_CHARS, the limit
    that the CSV reader applies too.
    """
    cells = []
    numeric = set()
    for index, cell in enumerate(row):
        text, is_number = cell_text(cell.value, getattr(cell, "number_format", None))
        if len(text) > MAX_CELL_CHARS:
            raise FileRejected(_too_long_message(line, index))
        cells.append(text)
        if is_number:
            numeric.add(index)
    while cells and not cells[-1].strip():
        cells.pop()
    return tuple(cells), frozenset(numeric)


def _data_row(
    line: int, row: tuple, epoch: dt.datetime, scan: SheetScan
) -> XlsxRow | None:
    """Return a data row, or None when it is blank.

    A row whose only values are formulas without a saved result is kept,
    so that the cleaner can reject it by column.
    """
    cells, numeric = _row_cells(row, line)
    unsaved = scan.unsaved_formulas.get(line, frozenset())
    if not unsaved and not any(cell.strip() for cell in cells):
        return None
    return XlsxRow(
        line=line,
        cells=cells,
        numeric=numeric,
        epoch=epoch,
        unsaved_formulas=unsaved,
    )


def _read_rows(rows: Iterator[tuple], epoch: dt.datetime, scan: SheetScan) -> Table:
    table: Table | None = None
    count = 0
    for line, row in enumerate(rows, start=1):
        if table is None:
            table = Table(headers=list(_row_cells(row, line)[0]))
            continue
        data_row = _data_row(line, row, epoch, scan)
        if data_row is None:
            continue
        count += 1
        check_row_count(count)
        table.rows.append(data_row)
    return table or Table(headers=[])


def _reject_merged_cells(ranges: list[str], headers: list[str]) -> None:
    if not ranges:
        return
    described = []
    for cell_range in ranges[:5]:
        min_column = range_boundaries(cell_range)[0]
        header = headers[min_column - 1].strip() if min_column <= len(headers) else ""
        described.append(f"{cell_range} (column {header})" if header else cell_range)
    raise FileRejected(
        f"The sheet has merged cells: {', '.join(described)}. Only the first "
        "cell of a merged range holds a value, so the other rows would be "
        "imported empty. Unmerge the cells, fill in every row and import again."
    )


def _require_defusedxml() -> None:
    if not openpyxl.DEFUSEDXML:
        raise ImproperlyConfigured(
            "XLSX import needs the defusedxml package (and OPENPYXL_DEFUSEDXML "
            "not set to False) so that openpyxl rejects XML entity expansion."
        )


def read_xlsx(data: bytes) -> Table:
    """Read the active sheet of an XLSX file into a Table of text cells.

    Raises FileRejected for a damaged, hostile or oversized file and for a
    sheet with merged cells.
    """
    _require_defusedxml()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise FileRejected(NOT_SAFE_MESSAGE) from None
    with archive:
        check_archive(archive)
        try:
            workbook = openpyxl.load_workbook(
                io.BytesIO(data), read_only=True, data_only=True
            )
            try:
                sheet = workbook.active
                # Without this, every row is padded to the width that the
                # sheet's <dimension> claims, which can be 16,384 columns.
                sheet.reset_dimensions()
                # NOTE: _worksheet_path is private in openpyxl 3.1; it is the
                # zip path of the active sheet.
                scan = scan_sheet(archive, sheet._worksheet_path)
                table = _read_rows(sheet.iter_rows(), workbook.epoch, scan)
            finally:
                workbook.close()
        except _READ_ERRORS as error:
            logger.info("xlsx rejected as unreadable error=%r", error)
            raise FileRejected(NOT_SAFE_MESSAGE) from None
    _reject_merged_cells(scan.merged_ranges, table.headers)
    return table


def _data_rows(
    rows: Iterator[tuple], epoch: dt.datetime, scan: SheetScan
) -> Iterator[SourceRow]:
    """Yield the non-blank rows after the header, turning read errors into
    FileRejected."""
    try:
        for line, row in enumerate(rows, start=2):
            data_row = _data_row(line, row, epoch, scan)
            if data_row is not None:
                yield data_row
    except _READ_ERRORS as error:
        logger.info("xlsx rejected as unreadable error=%r", error)
        raise FileRejected(NOT_SAFE_MESSAGE) from None


class XlsxStream:
    """The active sheet of a stored XLSX file, read row by row any number of times.

    The archive's sizes and the sheet's merged cells are checked once, when
    the object is made, with the same rules as ``read_xlsx``.

    NOTE: memory is flat in the rows only for cells stored inline or as
    numbers. openpyxl 3.1 loads the workbook's whole shared-string table,
    so a sheet of distinct text cells (unique references, names) takes
    memory in proportion to them, up to CRM_XLSX_MAX_SHARED_STRINGS_BYTES.
    CSV streams without that limit.
    """

    encoding = None
    delimiter = None

    def __init__(self, open_file: Callable[[], BinaryIO]) -> None:
        _require_defusedxml()
        self._open = open_file
        # Empty until the scan below; the first rows() call reads only the
        # header row, which needs no scan.
        self._scan = SheetScan()
        with open_file() as stream:
            try:
                archive = zipfile.ZipFile(stream)
            except zipfile.BadZipFile:
                raise FileRejected(NOT_SAFE_MESSAGE) from None
            with archive:
                check_archive(archive)
                with self.rows() as (headers, _rows):
                    pass
                try:
                    self._scan = scan_sheet(archive, self._sheet_path)
                except _READ_ERRORS as error:
                    logger.info("xlsx rejected as unreadable error=%r", error)
                    raise FileRejected(NOT_SAFE_MESSAGE) from None
        _reject_merged_cells(self._scan.merged_ranges, headers)

    @contextmanager
    def rows(self) -> Iterator[tuple[list[str], Iterator[SourceRow]]]:
        """Open the file and return its header row and an iterator of data rows.

        Blank rows are skipped, and the file closes when the block ends.
        """
        with self._open() as stream:
            try:
                workbook = openpyxl.load_workbook(
                    stream, read_only=True, data_only=True
                )
                sheet = workbook.active
            except _READ_ERRORS as error:
                logger.info("xlsx rejected as unreadable error=%r", error)
                raise FileRejected(NOT_SAFE_MESSAGE) from None
            try:
                # See read_xlsx: without this, rows are padded to the width
                # the sheet claims.
                sheet.reset_dimensions()
                # NOTE: _worksheet_path is private in openpyxl 3.1.
                self._sheet_path = sheet._worksheet_path
                rows = sheet.iter_rows()
                try:
                    first = next(rows, None)
                except _READ_ERRORS as error:
                    logger.info("xlsx rejected as unreadable error=%r", error)
                    raise FileRejected(NOT_SAFE_MESSAGE) from None
                headers = list(_row_cells(first, 1)[0]) if first is not None else []
                yield headers, _data_rows(rows, workbook.epoch, self._scan)
            finally:
                workbook.close()
