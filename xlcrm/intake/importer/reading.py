"""Read a source file of any shape into plain rows of cells: the first step of ``xlcrm import``.

Excel files (.xlsx, .xlsm, .xls, .xlsb) are read with python-calamine, one table per sheet, values as
typed (dates as dates, numbers as numbers).  Text files (.csv, .tsv, .txt) are decoded after detecting
the encoding: a byte-order mark, else strict UTF-8, else charset-normalizer on the first 64 KB (what
Excel's 「CSV (コンマ区切り)」 writes on a Japanese Windows is CP932); the whole file must then decode
with that encoding, or it holds mixed encodings and is refused.  The delimiter comes from
``csv.Sniffer``; broken quoting is refused rather than guessed at.

Every refusal is a :class:`SourceError`: one line naming the file and what to do.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import python_calamine

from xlcrm.errors import XlcrmError

EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".xlsb")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
SUFFIXES = EXCEL_SUFFIXES + TEXT_SUFFIXES
#: Bytes of a text file that charset-normalizer looks at (the whole file is then decoded strictly).
SNIFF_BYTES = 64 * 1024
#: Everything an import reports, one line each, for a person to work through in Excel; written beside
#: the workbooks, passed over by merge and validate (:data:`xlcrm.intake.inputs.QUIET_NAMES`) and by import.
REPORT_FILE = "import-report.csv"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_DELIMITERS = ",\t;|"


class SourceError(XlcrmError):
    """A source that cannot be brought in (unreadable, encrypted, empty, not a table)."""


@dataclass
class SourceTable:
    """One sheet (or one text file) as rows of raw cells, row 0 being the file's row 1.

    Blank cells are ``None``.  ``merged`` holds merged ranges as 0-based (row1, col1, row2, col2).
    """

    path: Path
    sheet: str | None
    rows: list[list[Any]]
    encoding: str | None = None
    delimiter: str | None = None
    merged: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: A hidden sheet (Excel's Unhide lists it): often the lists behind a workbook's dropdowns.
    hidden: bool = False

    @cached_property
    def width(self) -> int:
        """Cells of the longest row (a text file's rows can be longer than its header)."""
        return max((len(r) for r in self.rows), default=0)

    @property
    def label(self) -> str:
        return f"{self.path.name} [{self.sheet}]" if self.sheet else self.path.name


def expand_sources(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the files of a readable kind inside (lock files skipped)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in SUFFIXES
                           and not q.name.startswith(("~$", ".")) and q.name != REPORT_FILE)
            if not found:
                raise SourceError(f"{p}: no .xlsx/.xls/.xlsb/.csv/.tsv/.txt files in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out


def read_source(path: Path, *, password: str | None = None) -> list[SourceTable]:
    """Every table of one file; raise :class:`SourceError` (one line) when it cannot be read."""
    data = _load(path)
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [read_text(path, data)]
    if suffix not in EXCEL_SUFFIXES:
        raise SourceError(f"{path}: not a file import reads; save it as .xlsx or .csv "
                          f"(readable: {', '.join(SUFFIXES)})")
    return read_excel(path, data, password=password)


def _load(path: Path) -> bytes:
    if not path.exists():
        raise SourceError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise SourceError(f"{path}: is a folder")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror}); close it in other programs and "
                          "try again") from None
    if not data.strip():
        raise SourceError(f"{path}: the file is empty; nothing to import")
    return data


# --- Excel -------------------------------------------------------------------------------------------

def read_excel(path: Path, data: bytes, *, password: str | None = None) -> list[SourceTable]:
    head = data[:1024].lstrip()
    if head.startswith((b"<", b"\xef\xbb\xbf<")):
        raise SourceError(f"{path}: this is a web page (HTML) saved with an Excel name, not a workbook; "
                          "open it in Excel and save it as Excel Workbook (.xlsx), then import that")
    if data[:8] == _OLE and "EncryptedPackage".encode("utf-16-le") in data:
        if password is None:
            raise SourceError(f"{path}: the file is password-protected; give its password with "
                              "--password (or XLCRM_PASSWORD)")
        from xlcrm.xlsx.crypto import decrypt_bytes

        data = decrypt_bytes(data, password, path=path)
    try:
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        if "password" in text.lower() or "encrypt" in text.lower():
            raise SourceError(f"{path}: the file is password-protected; open it in Excel, remove the "
                              "password (File > Info > Protect Workbook) and save") from None
        raise SourceError(f"{path}: cannot be read as an Excel file ({text}); open it in Excel and "
                          "save it again as Excel Workbook (.xlsx)") from None
    tables: list[SourceTable] = []
    for meta in book.sheets_metadata:
        visible = str(getattr(meta, "visible", "")).lower()
        if visible.endswith("veryhidden") or "chart" in str(getattr(meta, "typ", "")).lower():
            continue
        try:
            sheet = book.get_sheet_by_name(meta.name)
            rows = sheet.to_python(skip_empty_area=False)
            merged_raw = sheet.merged_cell_ranges or []
        except Exception as exc:
            raise SourceError(f"{path}: sheet {meta.name} cannot be read ({str(exc)[:120]}); open it in "
                              "Excel and save it again") from None
        merged = [(a[0], a[1], b[0], b[1]) for a, b in merged_raw]
        cells = [[None if v == "" or (type(v) is str and v.isspace()) else v for v in r] for r in rows]
        tables.append(SourceTable(path, meta.name, cells, merged=merged, hidden=visible.endswith("hidden")))
    return tables


# --- text ---------------------------------------------------------------------------------------------

def detect_encoding(data: bytes) -> str:
    """The text encoding of ``data`` (a Python codec name), or raise ValueError when none fits."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    sample = data[:SNIFF_BYTES]
    cut = sample.rfind(b"\n")
    if len(data) > SNIFF_BYTES and cut > 0:
        sample = sample[:cut + 1]
    best = charset_normalizer.from_bytes(sample).best()
    guesses = [best.encoding] if best is not None else []
    # Shift_JIS as Windows writes it is CP932 (NEC and IBM extensions: ①, ㈱, 髙).  charset-normalizer
    # can find nothing in a file of mostly digits with a few Japanese words; Japanese Excel's CP932
    # and EUC-JP are then tried on the whole file.
    guesses = ["cp932" if g in ("shift_jis", "shift_jis_2004", "shift_jisx0213") else g for g in guesses]
    for enc in [*guesses, "cp932", "euc_jp"]:
        try:
            data.decode(enc)
            return enc
        except (UnicodeDecodeError, LookupError):
            continue
    raise ValueError("unknown")


def mixed_line(data: bytes) -> int | None:
    """The first line whose bytes are UTF-8 when the earlier non-ASCII lines are not, or the reverse.

    Japanese text in CP932 is practically never valid UTF-8, so a file whose non-ASCII lines disagree
    about it holds two encodings.  A file that is UTF-8 as a whole is never mixed.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    first: bool | None = None
    for n, line in enumerate(data.split(b"\n"), start=1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            utf8 = True
        except UnicodeDecodeError:
            utf8 = False
        if first is None:
            first = utf8
        elif utf8 != first:
            return n
    return None


def read_text(path: Path, data: bytes) -> SourceTable:
    mixed = mixed_line(data)
    if mixed is not None:
        raise SourceError(f"{path}: line {mixed} is in another encoding than the lines before it (mixed "
                          "encodings, e.g. UTF-8 rows pasted into a Shift_JIS file); open the file in Excel "
                          "and save it as 「CSV UTF-8 (コンマ区切り)」")
    try:
        encoding = detect_encoding(data)
    except ValueError:
        raise SourceError(f"{path}: the text encoding cannot be recognised; save it from Excel as "
                          "「CSV UTF-8 (コンマ区切り)」 and import that") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SourceError(f"{path}: line {line} is not {encoding} like the lines before it (mixed "
                          "encodings); open the file in Excel and save it as 「CSV UTF-8 (コンマ区切り)」"
                          ) from None
    if text.lstrip().lower().startswith(("<!doctype html", "<html", "<table")):
        raise SourceError(f"{path}: this is a web page (HTML), not a CSV; open it in Excel and save "
                          "it as Excel Workbook (.xlsx), then import that")
    delimiter = _delimiter(text, path)
    rows: list[list[Any]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for rec in reader:
            # A cell of spaces only is blank; most cells start with a visible character and skip the test.
            rows.append([c if c and ((c[0] > " " and c[0] != "\u3000") or not c.isspace()) else None for c in rec])
    except csv.Error as exc:
        raise SourceError(f"{path}: row {reader.line_num}: broken quoting ({exc}); a \" inside a value "
                          "must be doubled (\"\") — fix that row or save the file again from Excel"
                          ) from None
    if not any(any(c is not None for c in r) for r in rows):
        raise SourceError(f"{path}: the file holds no values; nothing to import")
    return SourceTable(path, None, rows, encoding=encoding, delimiter=delimiter)


def _delimiter(text: str, path: Path) -> str:
    lines = [ln for ln in text.splitlines()[:30] if ln.strip()]
    sample = "\n".join(lines)
    fallback = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        found = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        found = fallback
    # The sniffer can pick a character that happens to repeat inside Japanese text; trust it only
    # when it splits the first line at least as well as the file kind's usual delimiter does.
    if found != fallback and lines and lines[0].count(found) < lines[0].count(fallback):
        return fallback
    return found
