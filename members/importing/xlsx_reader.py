"""XLSX reading that refuses zip bombs, XML entity tricks and merged cells.

The archive's directory is checked before any part is inflated. openpyxl
parses XML through defusedxml when that package is installed, which makes
entity declarations ("billion laughs") an error instead of a memory blow-up.
``read_xlsx`` reads bytes held in memory, and ``XlsxStream`` reads a stored
file row by row, any number of times.
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
from decimal import Decimal
from typing import BinaryIO
from xml.etree.ElementTree import ParseError

import openpyxl
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from openpyxl.utils.cell import range_boundaries
from openpyxl.utils.exceptions import InvalidFileException

from members.importing.errors import FileRejected
from members.importing.table import SourceRow, Table, check_row_count

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
# Parts smaller than this cannot exhaust memory whatever their ratio, and
# small XML parts legitimately compress very well.
_RATIO_CHECK_MIN_BYTES = 1024 * 1024
_ZERO_PADDED_FORMAT = re.compile(r"0{2,}")


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


def find_merged_ranges(archive: zipfile.ZipFile, sheet_path: str) -> list[str]:
    """Return the merged ranges of a sheet ("E2:E4"), read from its XML.

    openpyxl's read-only mode ignores merges, so the sheet is streamed
    through defusedxml once more and row elements are dropped as they end.
    """
    ranges = []
    with archive.open(sheet_path) as source:
        for _event, element in iterparse(source, events=("end",)):
            tag = element.tag.rsplit("}", 1)[-1]
            if tag == "mergeCell" and element.get("ref"):
                ranges.append(element.get("ref"))
            elif tag == "row":
                element.clear()
    return ranges


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


def _row_cells(row: tuple) -> tuple[tuple[str, ...], frozenset[int]]:
    cells = []
    numeric = set()
    for index, cell in enumerate(row):
        text, is_number = cell_text(cell.value, getattr(cell, "number_format", None))
        cells.append(text)
        if is_number:
            numeric.add(index)
    while cells and not cells[-1].strip():
        cells.pop()
    return tuple(cells), frozenset(numeric)


def _read_rows(rows: Iterator[tuple]) -> Table:
    table: Table | None = None
    count = 0
    for line, row in enumerate(rows, start=1):
        cells, numeric = _row_cells(row)
        if table is None:
            table = Table(headers=list(cells))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        count += 1
        check_row_count(count)
        table.rows.append(SourceRow(line=line, cells=cells, numeric=numeric))
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
                table = _read_rows(sheet.iter_rows())
                # NOTE: _worksheet_path is private in openpyxl 3.1; it is the
                # zip path of the sheet that was just read.
                ranges = find_merged_ranges(archive, sheet._worksheet_path)
            finally:
                workbook.close()
        except _READ_ERRORS as error:
            logger.info("xlsx rejected as unreadable error=%r", error)
            raise FileRejected(NOT_SAFE_MESSAGE) from None
    _reject_merged_cells(ranges, table.headers)
    return table


def _data_rows(rows: Iterator[tuple]) -> Iterator[SourceRow]:
    """Yield the non-blank rows after the header, turning read errors into
    FileRejected."""
    try:
        for line, row in enumerate(rows, start=2):
            cells, numeric = _row_cells(row)
            if any(cell.strip() for cell in cells):
                yield SourceRow(line=line, cells=cells, numeric=numeric)
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
    memory in proportion to them; CSV streams without that limit.
    """

    encoding = None
    delimiter = None

    def __init__(self, open_file: Callable[[], BinaryIO]) -> None:
        _require_defusedxml()
        self._open = open_file
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
                    ranges = find_merged_ranges(archive, self._sheet_path)
                except _READ_ERRORS as error:
                    logger.info("xlsx rejected as unreadable error=%r", error)
                    raise FileRejected(NOT_SAFE_MESSAGE) from None
        _reject_merged_cells(ranges, headers)

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
                headers = list(_row_cells(first)[0]) if first is not None else []
                yield headers, _data_rows(rows)
            finally:
                workbook.close()
