"""Reading an uploaded file into rows of text with their file line numbers.

``read_table`` reads a file held in memory into a Table. ``open_stream``
prepares a stored file to be read row by row, any number of times, for
imports too large to hold in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol

from django.conf import settings

from members.importing.csv_reader import CsvStream, read_csv
from members.importing.errors import FileRejected
from members.importing.sizes import size_limit_message
from members.importing.table import SourceRow, Table
from members.importing.xlsx_reader import XlsxStream, read_xlsx

CSV = "csv"
XLSX = "xlsx"
FORMATS = (CSV, XLSX)
_ZIP_SIGNATURE = b"PK\x03\x04"
# Defaults of the streamed import's limits. Streaming keeps memory flat, so
# they bound the length of one import's transaction rather than memory.
# NOTE: judgement values, not measured limits: the benchmark imports 1M
# activity rows (about 60 MB) in one transaction.
STREAMING_MAX_ROWS = 2_000_000
STREAMING_MAX_BYTES = 1024 * 1024 * 1024


def detect_format(data: bytes, file_name: str = "", chosen: str | None = None) -> str:
    """Return ``xlsx`` for a zip archive, else the chosen format or the name's.

    A zip archive is read as XLSX even when CSV was chosen, because no CSV
    starts with the zip signature.
    """
    if data.startswith(_ZIP_SIGNATURE):
        return XLSX
    if chosen:
        return chosen
    return XLSX if file_name.lower().endswith(".xlsx") else CSV


def read_table(data: bytes, file_format: str, encoding: str | None = None) -> Table:
    """Read CSV or XLSX bytes into a Table.

    ``encoding`` applies to CSV only and overrides detection. Raises
    FileRejected for a file that is too large, unreadable or unsafe, and for
    one without data rows.
    """
    too_large = size_limit_message(len(data))
    if too_large:
        raise FileRejected(too_large)
    if file_format == XLSX:
        table = read_xlsx(data)
    elif file_format == CSV:
        table = read_csv(data, encoding)
    else:
        raise ValueError(f"Unknown file format {file_format!r}; use csv or xlsx.")
    if not table.headers or not any(header.strip() for header in table.headers):
        raise FileRejected("The file is empty: the first line must be a header row.")
    if not table.rows:
        raise FileRejected(
            "The file has no data rows: there is nothing below the header row. "
            "Add the rows to import and import again."
        )
    return table


def streaming_max_rows() -> int:
    """Return the maximum number of data rows a streamed import accepts.

    Set by CRM_IMPORT_STREAMING_MAX_ROWS; CRM_IMPORT_MAX_ROWS limits files
    read into memory.
    """
    return int(getattr(settings, "CRM_IMPORT_STREAMING_MAX_ROWS", STREAMING_MAX_ROWS))


def streaming_max_bytes() -> int:
    """Return the maximum file size in bytes a streamed import accepts.

    Set by CRM_IMPORT_STREAMING_MAX_BYTES; CRM_IMPORT_MAX_BYTES limits files
    read into memory and uploads to the admin import form.
    """
    return int(getattr(settings, "CRM_IMPORT_STREAMING_MAX_BYTES", STREAMING_MAX_BYTES))


class RowStream(Protocol):
    """A stored file that can be read row by row any number of times."""

    @property
    def encoding(self) -> str | None: ...

    @property
    def delimiter(self) -> str | None: ...

    def rows(
        self,
    ) -> AbstractContextManager[tuple[list[str], Iterator[SourceRow]]]: ...


def open_stream(
    open_file: Callable[[], BinaryIO],
    size: int,
    file_format: str,
    encoding: str | None = None,
) -> RowStream:
    """Check a stored file and return it ready to be read row by row.

    ``open_file`` opens the file in binary mode and is called once per
    reading pass. ``encoding`` applies to CSV only and overrides detection.
    Raises FileRejected for a file that is too large, unreadable or unsafe.
    """
    too_large = size_limit_message(size, streaming_max_bytes())
    if too_large:
        raise FileRejected(too_large)
    if file_format == XLSX:
        return XlsxStream(open_file)
    if file_format == CSV:
        return CsvStream(open_file, size, encoding)
    raise ValueError(f"Unknown file format {file_format!r}; use csv or xlsx.")
