"""Reading an uploaded file into rows of text with their file line numbers."""

from __future__ import annotations

from django.conf import settings

from members.importing.csv_reader import read_csv
from members.importing.errors import FileRejected
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
    FileRejected for a file that is too large, unreadable or unsafe.
    """
    max_bytes = settings.CRM_IMPORT_MAX_BYTES
    if len(data) > max_bytes:
        raise FileRejected(
            f"The file is {len(data) / 1_000_000:.1f} MB, more than the "
            f"{max_bytes / 1_000_000:.1f} MB limit. Split it into smaller files."
        )
    if file_format == XLSX:
        table = read_xlsx(data)
    elif file_format == CSV:
        table = read_csv(data, encoding)
    else:
        raise ValueError(f"Unknown file format {file_format!r}; use csv or xlsx.")
    if not table.headers or not any(header.strip() for header in table.headers):
        raise FileRejected("The file is empty: the first line must be a header row.")
    return table
