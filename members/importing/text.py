"""Text normalisation shared by headers, values and exports."""

from __future__ import annotations

import re
import unicodedata

# Zero-width space, non-joiner and joiner, byte order mark and word joiner:
# invisible in a spreadsheet, so they are never meant as part of a value.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\ufeff\u2060"))
_HEADER_SEPARATORS = re.compile(r"[\s\-]+")
# A leading single quote before these characters is how our exports keep a
# spreadsheet from reading text as a formula, so imports remove it again.
FORMULA_PREFIXES = frozenset("=+-@")
# Characters that make a spreadsheet start a formula or break a cell.
_EXPORT_QUOTED_PREFIXES = frozenset("=+-@\t\r")
# Maximum characters in one cell of an import file. It is the default of
# Python's csv.field_size_limit(), which the CSV reader keeps, and the XLSX
# reader applies the same number.
MAX_CELL_CHARS = 131_072
# Maximum characters of a file's value quoted in a message, report or
# error CSV, so that one huge cell cannot flood them.
MAX_SHOWN_CHARS = 200


def strip_invisible(text: str) -> str:
    """Remove zero-width characters and surrounding whitespace.

    ``str.strip`` also removes no-break spaces and the ideographic space
    U+3000, which Chinese spreadsheets often leave around values.
    """
    return text.translate(_ZERO_WIDTH).strip()


def fold_width(text: str) -> str:
    """Apply NFKC, which turns full-width digits, letters and signs into ASCII."""
    return unicodedata.normalize("NFKC", text)


def normalize_header(text: str) -> str:
    """Return the comparable form of a header: trimmed, NFKC, case-folded.

    Runs of spaces and hyphens become one underscore, so "External ID" and
    "external-id" compare equal to "external_id".
    """
    folded = fold_width(strip_invisible(text)).strip().casefold()
    return _HEADER_SEPARATORS.sub("_", folded)


def is_quoted_formula(text: str) -> bool:
    """Return whether text is one or more single quotes before a formula character."""
    quotes = len(text) - len(text.lstrip("'"))
    return 0 < quotes < len(text) and text[quotes] in FORMULA_PREFIXES


def unquote_formula(text: str) -> str:
    """Remove the single quote that an export put before a formula character."""
    return text[1:] if is_quoted_formula(text) else text


def clean_text(text: str) -> str:
    """Trim a cell and undo the export's formula quoting."""
    return unquote_formula(strip_invisible(text))


def quote_formula(text: str) -> str:
    """Prefix a single quote to text that a spreadsheet would run as a formula.

    Text that already looks quoted ("'=x") gets one more quote, so that
    ``unquote_formula`` gives it back unchanged on import.
    """
    if text and (text[0] in _EXPORT_QUOTED_PREFIXES or is_quoted_formula(text)):
        return "'" + text
    return text


def shorten(text: str, max_chars: int = MAX_SHOWN_CHARS) -> str:
    """Cut text to ``max_chars`` characters, ending with "…" when it was cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…"
