"""Reading an uploaded file into rows of text with their file line numbers."""

from __future__ import annotations

from members.importing.csv_reader import read_csv
from members.importing.errors import FileRejected
from members.importing.sizes import size_limit_message
from members.importing.table import Table
from members.importing.xlsx_reader import read_xlsx

CSV = "csv"
XLSX = "xlsx"
FORMATS = (CSV, XLSX)
_ZIP_SIGNATURE = b"PK\x03\x04"


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
