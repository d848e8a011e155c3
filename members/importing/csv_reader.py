"""CSV reading: encoding detection, delimiter sniffing and line numbers.

Every value stays text: nothing here converts a cell to a number, so ids
and phones keep their leading zeros and plus signs. ``read_csv`` reads
bytes held in memory. ``CsvStream`` reads a file block by block, any
number of times, for imports too large to hold in memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import BinaryIO

import charset_normalizer

from members.importing.errors import FileRejected
from members.importing.table import SourceRow, Table, check_row_count
from members.importing.text import MAX_CELL_CHARS

logger = logging.getLogger(__name__)

# Encodings staff can choose when detection is not sure, with their labels.
ENCODING_CHOICES = (
    ("utf-8", "UTF-8"),
    ("gb18030", "GB18030 (Chinese Excel, also reads GBK and GB2312)"),
    ("cp1252", "Windows-1252 (Western European Excel)"),
    ("utf-16", "UTF-16 (Excel 'Unicode text')"),
)
_LABELS = dict(ENCODING_CHOICES)
# UTF-32 marks come first because the UTF-32 LE mark starts with the UTF-16
# LE mark. The "utf-16" and "utf-32" codecs read the mark and drop it.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Files that are not UTF-8 come from Chinese Excel (GB18030 and its subsets)
# or Western European Excel (Windows-1252). Both decode most byte strings, so
# charset-normalizer's mess ratio ("chaos", 0 = clean text) decides, and only
# a clear winner is accepted.
_LEGACY_ENCODINGS = ("gb18030", "cp1252")
# NOTE: both limits were tuned on the GBK and Windows-1252 sample files in
# tests/cases/import. There the right encoding scores below 0.09 and the
# wrong one scores 0.15 or is discarded, so other files may need other values.
_MAX_CHAOS = 0.1
_MIN_CHAOS_MARGIN = 0.05
_DELIMITERS = (",", ";", "\t")
_SNIFF_CHARS = 64 * 1024
_SNIFF_ROWS = 50
# C0 control characters and DEL, except tab, line feed, carriage return,
# and the vertical tab and form feed that some programs write for a line
# break inside a cell. Text files hold almost none of them, while binary
# files (.xls, PDF, images) have many and usually a NUL.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
# More control characters than this share of the sample means binary data.
# NOTE: 1% is a judgement, not tuned on real files. Random bytes have about
# 10%, and a text file with a stray control character far less than 1%.
_MAX_CONTROL_SHARE = 0.01
NOT_TEXT_MESSAGE = (
    "The file is not readable text (CSV): it contains binary data. It may be "
    "an Excel .xls, a PDF or another kind of file saved with a .csv name. Save "
    "the data as CSV UTF-8 or as Excel .xlsx and import that file. If it is "
    "Unicode text saved as UTF-16, choose the UTF-16 encoding."
)


def _label(encoding: str) -> str:
    return _LABELS.get(encoding, encoding)


def _choices_text() -> str:
    return ", ".join(label.split(" (")[0] for label in _LABELS.values())


def _reject_binary(sample: str) -> None:
    """Raise FileRejected when text has a NUL or many control characters."""
    controls = _CONTROL_CHARACTERS.findall(sample)
    if "\x00" in controls or len(controls) > len(sample) * _MAX_CONTROL_SHARE:
        logger.info("csv rejected as binary control_characters=%d", len(controls))
        raise FileRejected(NOT_TEXT_MESSAGE)


def _is_ascii_compatible(encoding: str) -> bool:
    return "a,;\t\r\n".encode(encoding) == b"a,;\t\r\n"


def _invalid_encoding_message(encoding: str, position: int) -> str:
    return (
        f"The file is not valid {_label(encoding)}: the bytes at position "
        f"{position} cannot be read in that encoding. Choose the encoding the "
        f"file was saved in ({_choices_text()}) and import again."
    )


def _decode_strict(data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise FileRejected(_invalid_encoding_message(encoding, error.start)) from None
    return text.removeprefix("\ufeff")


def _detect_legacy_encoding(data: bytes) -> str:
    matches = charset_normalizer.from_bytes(data, cp_isolation=list(_LEGACY_ENCODINGS))
    chaos = {match.encoding: match.chaos for match in matches}
    ranked = sorted(chaos.items(), key=lambda item: item[1])
    if ranked:
        best, best_chaos = ranked[0]
        runner_up_chaos = ranked[1][1] if len(ranked) > 1 else 1.0
        if (
            best_chaos <= _MAX_CHAOS
            and runner_up_chaos - best_chaos >= _MIN_CHAOS_MARGIN
        ):
            return best
    logger.info("csv encoding undecided chaos=%s", chaos)
    raise FileRejected(
        "The file's encoding could not be detected: it is not UTF-8, and "
        "reading it as GB18030 (Chinese) or Windows-1252 (Western European) "
        "gives no clear answer. Choose the encoding the file was saved in "
        f"({_choices_text()}) and import again."
    )


def _named_encoding(head: bytes, encoding: str | None) -> str | None:
    """Return the codec name of an explicit ``encoding`` or of a byte order mark.

    ``head`` is the start of the file. Returns None when neither names one.
    """
    if encoding:
        try:
            return codecs.lookup(encoding).name
        except LookupError:
            raise FileRejected(
                f"Unknown encoding {encoding!r}. Choose one of {_choices_text()}."
            ) from None
    marked = (found for mark, found in _BYTE_ORDER_MARKS if head.startswith(mark))
    return next(marked, None)


def decode_csv(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode CSV bytes and return the text and the encoding used.

    Order: an explicit ``encoding``; a byte order mark; strict UTF-8; then
    GB18030 or Windows-1252 when the evidence clearly favours one. Raises
    FileRejected rather than guess, never replaces undecodable bytes, and
    rejects binary data before trying any encoding on it.
    """
    name = _named_encoding(data[:_SNIFF_CHARS], encoding)
    if name is None or _is_ascii_compatible(name):
        # Bytes below 0x20 are the same control characters in UTF-8, GB18030
        # and Windows-1252, and Latin-1 maps every byte to one character.
        _reject_binary(data[:_SNIFF_CHARS].decode("latin-1"))
    if name is not None:
        text = _decode_strict(data, name)
        _reject_binary(text[:_SNIFF_CHARS])
        return text, name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    name = _detect_legacy_encoding(data)
    return _decode_strict(data, name), name


def _delimiter_score(sample: str, delimiter: str) -> tuple[bool, float, int]:
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    rows = [row for row in islice(reader, _SNIFF_ROWS) if row]
    if not rows:
        return (False, 0.0, 0)
    width = len(rows[0])
    body = rows[1:]
    consistent = sum(len(row) == width for row in body) / len(body) if body else 1.0
    return (width > 1, consistent, width)


def sniff_delimiter(text: str) -> str:
    """Pick the delimiter among comma, semicolon and tab.

    The winner splits the header into more than one column and gives the
    most rows the header's width. A one-column file falls back to a comma.
    """
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS:
        # Drop the last, probably cut, line of the sample.
        sample = sample[: sample.rfind("\n") + 1] or sample
    scores = {
        delimiter: _delimiter_score(sample, delimiter) for delimiter in _DELIMITERS
    }
    best = max(_DELIMITERS, key=lambda delimiter: scores[delimiter])
    return best if scores[best][0] else ","


def _csv_error_message(error: csv.Error, line: int) -> str:
    # The csv module reports an oversized cell only through its message.
    if str(error).startswith("field larger than field limit"):
        return (
            f"A cell in line {line} is longer than {csv.field_size_limit():,} "
            "characters, often because a quote is never closed. Fix the line "
            "and import again."
        )
    return (
        f"Line {line} cannot be read as CSV ({error}). Fix the line, for "
        "example an unclosed quote, and import again."
    )


def iter_csv_records(
    lines: Iterable[str], delimiter: str
) -> Iterator[tuple[int, list[str]]]:
    """Yield each CSV record with the file line it starts on.

    ``lines`` must keep their line endings, as ``io.StringIO(text,
    newline="")`` gives them, so quoted cells can span lines. Raises
    FileRejected naming the line of a record that cannot be read.
    """
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        start_line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise FileRejected(_csv_error_message(error, start_line)) from None
        yield start_line, record


def _is_blank(record: list[str]) -> bool:
    return not any(cell.strip() for cell in record)


def _parse(text: str, delimiter: str) -> Table:
    records = iter_csv_records(io.StringIO(text, newline=""), delimiter)
    first = next(records, None)
    if first is None:
        return Table(headers=[], delimiter=delimiter)
    table = Table(headers=first[1], delimiter=delimiter)
    count = 0
    for line, record in records:
        if _is_blank(record):
            continue
        count += 1
        check_row_count(count)
        table.rows.append(SourceRow(line=line, cells=tuple(record)))
    return table


def read_csv(data: bytes, encoding: str | None = None) -> Table:
    """Read CSV bytes into a Table of text cells (see ``decode_csv``)."""
    text, used = decode_csv(data, encoding)
    table = _parse(text, sniff_delimiter(text))
    table.encoding = used
    return table


# Bytes read from the file at a time when streaming: large enough that the
# per-block work is negligible, small enough to keep memory flat.
_BLOCK_BYTES = 1024 * 1024
# The maximum length of a line, in characters: 16 cells of MAX_CELL_CHARS.
# Longer text is rejected as it arrives, so one huge line cannot fill memory.
MAX_LINE_CHARS = 16 * MAX_CELL_CHARS
# A streamed file that is not UTF-8 is matched against the legacy encodings
# on at most this many bytes: the whole file when it is smaller, else its
# lines that contain bytes above 0x7F.
_DETECTION_SAMPLE_BYTES = 4 * 1024 * 1024


def _decode_blocks(stream: BinaryIO, encoding: str) -> Iterator[str]:
    """Yield a binary stream's text block by block, decoded strictly.

    Raises FileRejected with the byte position of the first invalid byte.
    A byte order mark at the start is dropped.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    consumed = 0
    first = True
    while True:
        block = stream.read(_BLOCK_BYTES)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as error:
            position = consumed - pending + error.start
            raise FileRejected(_invalid_encoding_message(encoding, position)) from None
        consumed += len(block)
        if first and text:
            text = text.removeprefix("\ufeff")
            first = False
        if text:
            yield text
        if not block:
            return


def _split_lines(blocks: Iterable[str]) -> Iterator[str]:
    """Yield the lines of text given in blocks, each with its line ending.

    Lines split as ``io.StringIO(text, newline="")`` splits them, at LF,
    CR and CR LF. The last line of each block waits for the next block,
    because it may continue there (a CR may be followed by an LF).
    """
    # Parts of the unfinished line, joined only once a line end arrives, so
    # a very long line costs linear time.
    pending: list[str] = []
    pending_chars = 0
    lines_done = 0
    for block in blocks:
        if "\n" not in block and "\r" not in block:
            pending.append(block)
            pending_chars += len(block)
            if pending_chars > MAX_LINE_CHARS:
                raise FileRejected(_long_line_message(lines_done + 1))
            continue
        lines = io.StringIO("".join(pending) + block, newline="").readlines()
        last = lines.pop()
        pending = [last]
        pending_chars = len(last)
        lines_done += len(lines)
        yield from lines
    yield from io.StringIO("".join(pending), newline="")


def _long_line_message(line: int) -> str:
    return (
        f"Line {line} is longer than {MAX_LINE_CHARS:,} characters without a "
        "line break, so the file was rejected. Check that it is a CSV file with "
        "one row per line, or save it again from Excel as CSV UTF-8."
    )


def _is_utf8(stream: BinaryIO) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        while block := stream.read(_BLOCK_BYTES):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _detection_sample(stream: BinaryIO, size: int) -> bytes:
    """Return the bytes to detect a legacy encoding on (see the limit above)."""
    if size <= _DETECTION_SAMPLE_BYTES:
        return stream.read()
    sample = bytearray()
    # Splitting at LF is safe: no multi-byte GB18030 or Windows-1252
    # character contains the byte 0x0A.
    for line in stream:
        if not line.isascii():
            sample += line
            if len(sample) >= _DETECTION_SAMPLE_BYTES:
                break
    return bytes(sample)


class CsvStream:
    """A CSV file read from storage block by block, any number of times.

    The encoding and delimiter are decided once, when the object is made,
    by the same rules as ``decode_csv`` and ``sniff_delimiter``. A file that
    is not UTF-8 is read once more to check it, and its legacy encoding is
    detected on a sample (see ``_DETECTION_SAMPLE_BYTES``).
    """

    def __init__(
        self,
        open_file: Callable[[], BinaryIO],
        size: int,
        encoding: str | None = None,
    ) -> None:
        self._open = open_file
        self.encoding = self._decide_encoding(size, encoding)
        self.delimiter = sniff_delimiter(self._head_text())

    def _decide_encoding(self, size: int, encoding: str | None) -> str:
        with self._open() as stream:
            head = stream.read(_SNIFF_CHARS)
        name = _named_encoding(head, encoding)
        if name is None or _is_ascii_compatible(name):
            _reject_binary(head.decode("latin-1"))
        if name is not None:
            return name
        with self._open() as stream:
            if _is_utf8(stream):
                return "utf-8"
        with self._open() as stream:
            sample = _detection_sample(stream, size)
        return _detect_legacy_encoding(sample)

    def _head_text(self) -> str:
        """Return the first characters of the text, enough to sniff the delimiter.

        One character past the sniffing sample lets ``sniff_delimiter`` see
        that the text goes on.
        """
        head = ""
        with self._open() as stream:
            for block in _decode_blocks(stream, self.encoding):
                head += block
                if len(head) > _SNIFF_CHARS:
                    break
        _reject_binary(head[:_SNIFF_CHARS])
        return head[: _SNIFF_CHARS + 1]

    @contextmanager
    def rows(self) -> Iterator[tuple[list[str], Iterator[SourceRow]]]:
        """Open the file and return its header row and an iterator of data rows.

        Blank rows are skipped. The file closes when the block ends. Reading
        raises FileRejected for bytes invalid in the encoding and for lines
        that are not valid CSV.
        """
        with self._open() as stream:
            lines = _split_lines(_decode_blocks(stream, self.encoding))
            records = iter_csv_records(lines, self.delimiter)
            first = next(records, None)
            headers = first[1] if first is not None else []
            yield (
                headers,
                (
                    SourceRow(line=line, cells=tuple(record))
                    for line, record in records
                    if not _is_blank(record)
                ),
            )
