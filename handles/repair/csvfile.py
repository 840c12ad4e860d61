"""Reading import files and writing CSV exports, with clear messages for the files people really have.

Import files come from spreadsheets, vendor reports and scripts: a BOM, Windows-1252, semicolons,
stray whitespace, blank lines, an .xlsx renamed to .csv. Every problem that stops the whole file raises
ImportFileError with a sentence saying what to do; problems of one row are that row's `invalid` verdict.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from handles.labels import counted

DELIMITERS = (",", ";", "\t")
_FORMULA_START = "=+-@\t\r"
_FORMULA = re.compile(r"^(=|[+\-@]\s*[A-Za-z_.]+\s*[(|!])")


class ImportFileError(Exception):
    """The file as a whole cannot be read; `message` tells the person what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CsvLayout:
    header: list[str]
    delimiter: str
    encoding: str


def decode(content: bytes, encoding: str) -> str:
    """The file's text. A UTF-8 BOM is dropped; other encodings must be chosen explicitly."""
    if content.startswith(b"PK\x03\x04"):
        raise ImportFileError("This is a spreadsheet workbook (.xlsx or .ods), not a CSV file. "
                              "Save it as \"CSV UTF-8 (comma delimited)\" and upload that.")
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError("This file is UTF-16 text. Save it as \"CSV UTF-8\" and upload that.")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = content.decode(codec)
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        raise ImportFileError(
            f"The file is not valid {encoding} (byte 0x{content[exc.start]:02x} on line {line}). Save it as "
            "\"CSV UTF-8\", or choose the encoding it was saved in (e.g. Windows-1252).") from None
    except LookupError:
        raise ImportFileError(f"Unknown encoding {encoding!r}.") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise ImportFileError(f"Line {line} contains a NUL character: this is not a text CSV file.")
    return text


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _unreadable(line: int, exc: csv.Error) -> ImportFileError:
    if "field larger than field limit" in str(exc):
        return ImportFileError(f"Line {line} has a cell longer than {csv.field_size_limit():,} characters. "
                               "A quote that is opened and never closed makes the rest of the file one cell.")
    return ImportFileError(f"Line {line}: the CSV cannot be read ({exc}).")


def _reader(text: str, delimiter: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _unreadable(reader.line_num, exc) from None
        yield row


# A cell that is a handle (11084/99, hdl:11084/99: real prefixes begin with a digit) or a URL is data,
# never a column name such as "Handle URL" or "Handle/URL".
_DATA_CELL = re.compile(r"^(?:(?:hdl:)?\d[0-9A-Za-z]*(?:\.[0-9A-Za-z]+)*/\S+|https?://\S+)$", re.IGNORECASE)


def _looks_like_data(name: str) -> bool:
    return bool(_DATA_CELL.match(name))


def layout(text: str, delimiter: str = "auto", encoding: str = "utf-8") -> CsvLayout:
    """Read and check the header line: named, distinct columns."""
    first_line = text.split("\n", 1)[0]
    if delimiter == "auto":
        delimiter = _sniff_delimiter(first_line)
    rows = _reader(text, delimiter)
    header = next(rows, None)
    if header is None or not any(cell.strip() for cell in header):
        raise ImportFileError("The file is empty, or its first line (the column names) is blank.")
    names = [cell.strip() for cell in header]
    for position, name in enumerate(names, start=1):
        if _looks_like_data(name):
            raise ImportFileError(
                f"The first line holds data, not column names: column {position} is {name!r}, which looks like "
                f"a {'URL' if name.lower().startswith(('http://', 'https://')) else 'handle'}. The first line must "
                "name the columns (for example: handle,url,external_id,title); add such a line at the top and "
                "upload the file again. Without it the first line's handle would not be imported.")
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            continue
        key = name.casefold()
        if key in seen:
            raise ImportFileError(f"The column name {name!r} appears twice in the header (columns {seen[key]} "
                                  f"and {position}). Rename one of them so the mapping is unambiguous.")
        seen[key] = position
    return CsvLayout(header=names, delimiter=delimiter, encoding=encoding)


def records(text: str, csv_layout: CsvLayout, max_cell: int) -> Iterator[tuple[int, list[str], str]]:
    """(line number, cells stripped and padded to the header's width, problem) for each non-blank row
    after the header.

    `problem` is '' or why the row cannot be used (too many cells, an over-long cell). Line numbers count
    physical lines, so they match what a spreadsheet or editor shows.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=csv_layout.delimiter, strict=False)
    width = len(csv_layout.header)
    padding = [""] * width
    first = True
    while True:
        start_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _unreadable(start_line, exc) from None
        if first:
            first = False
            continue
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        problem = ""
        if len(cells) > width and any(cells[width:]):
            problem = f"{counted(len(cells), 'cell')}, but the header names {counted(width, 'column')}"
        longest = max(map(len, row))
        if longest > max_cell:
            problem = f"a cell is {longest:,} characters long (at most {max_cell:,} are accepted)"
        if len(cells) < width:
            cells += padding[len(cells):]
        yield start_line, cells, problem


def looks_like_formula(value: str) -> bool:
    """A cell a spreadsheet would run as a formula (=cmd|' /C calc'!A0, +SUM(...), @HYPERLINK(...))."""
    return bool(value) and _FORMULA.match(value) is not None


def safe_cell(value: object) -> str:
    """Neutralise spreadsheet formula injection in an exported cell (OWASP): prefix a quote."""
    text = "" if value is None else str(value)
    if text and text[0] in _FORMULA_START:
        return "'" + text
    return text


class _Line:
    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """CSV text line by line (for a streaming response), every cell neutralised."""
    writer = csv.writer(_Line())
    yield "\ufeff" + writer.writerow(header)  # a BOM, so spreadsheets read UTF-8 as UTF-8
    for row in rows:
        yield writer.writerow([safe_cell(cell) for cell in row])
