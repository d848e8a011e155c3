"""Rows of text read from a file, before any column is interpreted."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from members.importing.errors import FileRejected


@dataclass(frozen=True)
class SourceRow:
    """One non-blank data row: its line in the file and its cells as text.

    ``numeric`` contains the indexes of cells that were numbers in a
    spreadsheet, which matters for dates stored as Excel serial numbers.
    """

    line: int
    cells: tuple[str, ...]
    numeric: frozenset[int] = frozenset()


@dataclass
class Table:
    """A file's header row and data rows, with how the file was decoded."""

    headers: list[str]
    rows: list[SourceRow] = field(default_factory=list)
    encoding: str | None = None
    delimiter: str | None = None


def check_row_count(count: int, max_rows: int | None = None) -> None:
    """Raise FileRejected once a file has more data rows than ``max_rows``.

    The limit defaults to settings.CRM_IMPORT_MAX_ROWS, the limit of files
    read into memory.
    """
    if max_rows is None:
        max_rows = settings.CRM_IMPORT_MAX_ROWS
    if count > max_rows:
        raise FileRejected(
            f"The file has more than {max_rows:,} data rows. "
            "Split it into smaller files."
        )
