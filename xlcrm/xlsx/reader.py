"""Read a team workbook into one DataFrame of raw values per entity, remembering every cell's address.

Tolerant of what people do to spreadsheets (blank rows between data, rows typed below the table,
headers in either language or reordered, extra columns, a title row above the header) and strict about
what cannot be read safely: every refusal is one :class:`UnreadableWorkbook` line naming the file, the
reason and what to do.  Values are read with python-calamine (fast, values only); formulas are found
with one byte scan of the sheet XML, parsed through defusedxml only when a sheet contains any.

Values stay raw here (float 312345678.0 stays a float): judging them is validation's job, so the
reader never repairs anything silently.
"""

from __future__ import annotations

import difflib
import gc
import io
import itertools
import re
import struct
import threading
import zipfile
import zlib
from array import array
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import python_calamine

from xlcrm.errors import UnreadableWorkbook
from xlcrm.schema import LANGS, META_KEYS, META_SHEET, Entity, Lang, Schema, fold_header
from xlcrm.xlsx.cells import column_letter

#: Refuse archives that would inflate beyond this (a decompression bomb or a sheet nobody can use).
MAX_UNCOMPRESSED = 2 * 1024**3
#: ... or whose members inflate more than this ratio while being large.
MAX_RATIO = 250
#: Excel's own row limit; more rows than this is not a workbook a person typed.
MAX_ROWS = 1_048_576
#: What a refusal of a list in another layout adds: the command that brings it in.
IMPORT_HINT = "`xlcrm import FILE --out DIR` brings such a list in as standard workbooks"
#: The header must be within the first rows (a title row or two above it is common).
HEADER_SCAN_ROWS = 10
#: calamine holds every cell of the rectangle from a sheet's first to its last filled cell (32 bytes
#: each), so a sheet is read as it is only when that rectangle is at most this many cells or at most
#: AREA_PER_CELL times its filled cells; cells farther away are left out and reported (stray cells).
AREA_FLOOR = 4_000_000
AREA_PER_CELL = 3
#: Columns without a single filled cell that end the table: a cell beyond such a gap is a stray.
COLUMN_GAP = 26
#: A sheet with more stray cells than this is refused rather than listed cell by cell.
MAX_STRAY = 1000

_CELL_RE = re.compile(r"^([A-Z]{1,3})(\d+)$")
_FORMULA_RE = re.compile(rb"<(?:\w+:)?f[\s>/]")
_PREFIXED = re.compile(rb":(?:c|row)[\s/>]")
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[0x20, 0x09, 0x0A, 0x0D]] = True
_LETTER = np.zeros(256, dtype=bool)
_LETTER[np.r_[0x41:0x5B, 0x61:0x7B]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[0x30:0x3A] = True


@dataclass(frozen=True)
class WorkbookMeta:
    """What the very hidden meta sheet says; legacy workbooks have none and get inferred values."""

    schema_version: str = ""
    owner: str = ""
    lang: Lang = "ja"
    created: str = ""
    workbook_id: str = ""
    generator: str = ""
    has_meta_sheet: bool = False


@dataclass
class SheetData:
    entity: Entity
    sheet_name: str
    #: Raw values, columns = column keys present, index = Excel row number (1-based).
    frame: pd.DataFrame
    #: Column key -> Excel column letter (so a cell is f"{letters[key]}{row}").
    letters: dict[str, str]
    header_row: int
    #: Headers that match no column: (cell address, header text, closest known label or "").
    extra_headers: list[tuple[str, str, str]] = field(default_factory=list)
    #: Cells holding a formula: address -> formula text.
    formulas: dict[str, str] = field(default_factory=dict)
    #: Filled cells far outside the table, left out of ``frame``: (cell address, value as written).
    stray_cells: list[tuple[str, str]] = field(default_factory=list)

    def cell(self, key: str, row: int) -> str:
        return f"{self.letters[key]}{row}"


@dataclass
class TeamWorkbook:
    path: Path
    meta: WorkbookMeta
    sheets: dict[str, SheetData]
    warnings: list[str] = field(default_factory=list)
    #: The package holds a VBA project (an .xlsm); xlcrm never runs it and copies never carry it.
    has_macros: bool = False

    @property
    def lang(self) -> Lang:
        return self.meta.lang

    @property
    def rows_read(self) -> dict[str, int]:
        return {k: len(s.frame) for k, s in self.sheets.items()}


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while a workbook is read and validated.

    Reading hands over one list per row (300,000 at once) and validation makes a tuple per distinct
    value; those allocations trigger full collections, and each full collection walks every object
    pandas and pandera keep (50-80 ms apiece, about 1 s of CPU over ten 40,000-row workbooks).  The work
    makes no reference cycles worth collecting meanwhile; whatever the collector would have found is
    collected after.  Nested and concurrent uses share one pause: it ends with the last of them, and
    the collector is enabled again only if it was enabled when the first began.
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


def read_workbook(path: str | Path, schema: Schema, *, password: str | None = None,
                  max_rows: int = MAX_ROWS) -> TeamWorkbook:
    """Read and check a team workbook; raise :class:`UnreadableWorkbook` with one clear line."""
    path = Path(path)
    data = _load_bytes(path, password)
    assert data is not None
    archive = _open_zip(path, data)
    try:
        with paused_gc():
            return _parse(path, data, archive, schema, max_rows)
    except MemoryError:
        raise UnreadableWorkbook("refused: reading the workbook needs more memory than this computer has; "
                                 "delete empty rows and columns or split the file", path=str(path)) from None
    except UnreadableWorkbook:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise UnreadableWorkbook(f"the workbook is damaged and cannot be read ({_short(exc)}); open it in "
                                 "Excel, which may offer to repair it, save a copy and try again",
                                 path=str(path)) from None


def check_readable(path: str | Path, *, password: str | None = None) -> None:
    """Raise :class:`UnreadableWorkbook` for what :func:`read_workbook` refuses before it parses a sheet:
    a missing or unreadable file, not an .xlsx, damaged, a decompression bomb, encrypted without a
    password.  Cheap (the zip's directory only): merge checks every input with it before writing."""
    path = Path(path)
    data = _load_bytes(path, password, decrypt=False)
    if data is not None:
        _open_zip(path, data).close()


def _parse(path: Path, data: bytes, archive: zipfile.ZipFile, schema: Schema, max_rows: int) -> TeamWorkbook:
    sheet_paths = _sheet_xml_paths(archive)
    infos = {i.filename: i for i in archive.infolist()}
    lookup = schema.sheet_lookup()
    wanted = {m for name, m in sheet_paths.items()
              if m in infos and (name == META_SHEET or lookup.get(fold_header(name)) is not None)}
    # Every part calamine could read inflates to no more than it claims: checked as it streams, before
    # calamine (which believes the sizes) sees it.  The sheets' XML is kept for the checks below.
    with ThreadPoolExecutor(max_workers=1) as pool:
        raws = {m: pool.submit(_inflate, path, data, infos[m], True) for m in sorted(wanted)}
        for info in infos.values():
            if info.filename not in wanted and not info.is_dir():
                _inflate(path, data, info, False)
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        views = _SheetViews(path, data, archive, book, sheet_paths, raws)
        warnings: list[str] = []
        lock = path.with_name("~$" + path.name)
        if lock.exists():
            warnings.append(f"{path.name} is open in Excel (lock file {lock.name}); reading the last saved "
                            "version — unsaved edits are not included")

        meta = _read_meta(views, path, schema)
        sheet_lookup = schema.sheet_lookup()
        found: dict[str, str] = {}
        for name in book.sheet_names:
            key = sheet_lookup.get(fold_header(name))
            if key is not None and key not in found:
                found[key] = name
        missing = [e for e in schema if e.key not in found]
        if missing and not found:
            sheets = ", ".join(book.sheet_names[:5]) + (" ..." if len(book.sheet_names) > 5 else "")
            raise UnreadableWorkbook(f"not an xlcrm team workbook (its sheets: {sheets}; none is "
                                     f"{schema.entities[0].ja}, {schema.entities[1].ja} ...); {IMPORT_HINT}",
                                     path=str(path))
        if missing:
            labels = "、".join(f"{e.ja} ({e.en})" for e in missing)
            raise UnreadableWorkbook(f"sheet {labels} is missing; the workbook must have every sheet of the "
                                     "standard template — copy the sheet from a fresh `xlcrm template` or "
                                     "rename the sheet back", path=str(path))
        if not meta.has_meta_sheet:
            # A legacy or hand-made workbook: take the language from its sheet names.
            ja_hits = sum(1 for e in schema if found[e.key] == e.ja)
            meta = WorkbookMeta(lang="ja" if ja_hits * 2 >= len(found) else "en")

        # The formula scan of each sheet's XML runs on the second core while calamine (which holds
        # the GIL) parses the sheets.
        sheets: dict[str, SheetData] = {}
        scans = {}
        for entity in schema:
            name = found[entity.key]
            sheet, strays = views.sheet(name)
            scans[entity.key] = pool.submit(_formulas, views.raw(name))
            sheets[entity.key] = _read_sheet(sheet, name, entity, path, max_rows)
            sheets[entity.key].stray_cells = strays
            views.done(name)
        for key, scan in scans.items():
            sheets[key].formulas = scan.result()
    has_macros = any(is_macro_part(n) for n in infos)
    return TeamWorkbook(path, meta, sheets, warnings, has_macros)


def is_macro_part(name: str) -> bool:
    """Parts of a VBA project (the project, its signatures, ActiveX/VBA data) in an Excel package."""
    low = name.lower()
    base = low.rsplit("/", 1)[-1]
    return base.startswith(("vbaproject", "vbadata")) or (low.endswith(".bin") and "vba" in base)


class _SheetViews:
    """calamine's view of each sheet, never larger than the sheet's filled cells warrant.

    A sheet whose filled cells span a rectangle much larger than they are (one cell typed at XFD1048576
    beside a table at A1:U40) would make calamine allocate that whole rectangle.  Such a sheet is
    scanned cell by cell, the cells far from the table are left out of a copy of the sheet that
    calamine reads instead, and are reported (``stray_cells``).
    """

    def __init__(self, path: Path, data: bytes, archive: zipfile.ZipFile,
                 book: python_calamine.CalamineWorkbook, members: dict[str, str],
                 raws: dict[str, Any]) -> None:
        self.path, self.data, self.archive, self.book = path, data, archive, book
        self.members, self.raws = members, raws

    def raw(self, name: str) -> bytes | None:
        job = self.raws.get(self.members.get(name, ""))
        return None if job is None else job.result()

    def done(self, name: str) -> None:
        self.raws.pop(self.members.get(name, ""), None)

    def sheet(self, name: str) -> tuple[python_calamine.CalamineSheet, list[tuple[str, str]]]:
        raw = self.raw(name)
        if raw is None:
            # calamine would read a part these checks never saw.
            raise UnreadableWorkbook(f"sheet {name}: its part cannot be found through xl/workbook.xml and its "
                                     "relationships; save the workbook again from Excel", path=str(self.path))
        if not _maybe_far(raw):
            return self.book.get_sheet_by_name(name), []
        trimmed, strays = _trim_sheet(self.path, name, raw)
        if trimmed is None:
            return self.book.get_sheet_by_name(name), []
        member = self.members[name]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
            for info in self.archive.infolist():
                if info.is_dir():
                    continue
                body = trimmed if info.filename == member else self.archive.read(info.filename)
                copy.writestr(info.filename, body)
        out.seek(0)
        return python_calamine.CalamineWorkbook.from_filelike(out).get_sheet_by_name(name), strays


def _maybe_far(raw: bytes) -> bool:
    """Whether the sheet's cells may span more than AREA_FLOOR (then it is scanned cell by cell).

    Vectorised byte tests over ``<sheetData>`` instead of a parse (a regex costs 5x more), so the sheets
    Excel and xlcrm write are answered in a few milliseconds; anything unusual (cells without their ``r``
    first, namespace prefixes, rich inline text, an attribute spelled otherwise than ``name="value"``:
    calamine also reads ``r = 'A1'`` and takes the last of two ``r``) is answered by the scan itself.  A
    row without ``r`` follows the previous one, so more than 99,999 rows is the only way rows without
    one reach far.
    """
    lo = raw.find(b"<sheetData")
    hi = raw.rfind(b"</sheetData>")
    if lo < 0 or hi < lo:
        return lo >= 0 or raw.find(b"sheetData") >= 0
    if _PREFIXED.search(raw, lo, hi) is not None:
        return True
    a = np.frombuffer(raw, dtype=np.uint8, count=hi - lo + 16, offset=lo)
    # Every element starting "<c" is a cell spelled <c r="...; at most 99,999 rows.
    tag = np.flatnonzero(a[:-16] == 0x3C)
    second = a[tag + 1]
    cells = tag[second == 0x63]
    if not ((a[cells + 2] == 0x20) & (a[cells + 3] == 0x72) & (a[cells + 4] == 0x3D)
            & (a[cells + 5] == 0x22)).all():
        return True
    rows = tag[second == 0x72]
    if np.count_nonzero((a[rows + 2] == 0x6F) & (a[rows + 3] == 0x77)) > 99_999:
        return True
    # Every "=" between a name and a double quote, with no space around it.
    eq = np.flatnonzero(a[:-16] == 0x3D)
    eq = eq[eq >= 2]
    after = a[eq + 1]
    if (after != 0x22).any() or _SPACE[a[eq - 1]].any():
        return True
    # The values of attributes named r: references within A1:Z99999 (one letter, at most 5 digits).
    v = eq[(a[eq - 1] == 0x72) & _SPACE[a[eq - 2]]] + 2
    c0, c1 = a[v], a[v + 1]
    if (_LETTER[c0] & _LETTER[c1]).any():
        return True
    start = v + _LETTER[c0]
    six = _DIGIT[a[start]]
    for k in range(1, 6):
        six &= _DIGIT[a[start + k]]
    return bool(six.any())


def _inflate(path: Path, data: bytes, info: zipfile.ZipInfo, keep: bool) -> bytes | None:
    """The member's bytes (or None when not ``keep``), refusing one that inflates beyond its stated size.

    calamine inflates a part until its data ends, whatever size the archive states; a part that states
    a few kilobytes and inflates to gigabytes would be read whole.  Inflating here stops one chunk past
    the stated size, so the check costs at most a chunk of memory.
    """
    def damaged(what: str) -> UnreadableWorkbook:
        return UnreadableWorkbook(f"refused: part {info.filename} {what} (a damaged or crafted file); save "
                                  "it again from Excel", path=str(path))

    off = info.header_offset
    if data[off:off + 4] != b"PK\x03\x04":
        raise damaged("is not where the archive says")
    name_len, extra_len = struct.unpack_from("<HH", data, off + 26)
    start = off + 30 + name_len + extra_len
    comp = memoryview(data)[start:start + info.compress_size]
    limit = info.file_size
    if info.compress_type == zipfile.ZIP_STORED:
        if len(comp) > limit:
            raise damaged(f"holds more than the {limit:,} bytes it states")
        return bytes(comp) if keep else None
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise damaged(f"uses compression method {info.compress_type}, which Excel does not write")
    chunk = 1 << 20
    inflater = zlib.decompressobj(-15)
    pieces: list[bytes] = []
    produced = 0
    pos = 0
    pending: bytes | memoryview = b""
    try:
        while True:
            if not pending:
                if pos >= len(comp) or inflater.eof:
                    break
                pending = comp[pos:pos + chunk]
                pos += chunk
            piece = inflater.decompress(pending, chunk)
            pending = inflater.unconsumed_tail
            produced += len(piece)
            if produced > limit:
                raise damaged(f"inflates to more than the {limit:,} bytes it states")
            if keep:
                pieces.append(piece)
            if inflater.eof:
                break
    except zlib.error as exc:
        raise damaged(f"cannot be inflated ({_short(exc)})") from None
    return b"".join(pieces) if keep else None


def _trim_sheet(path: Path, name: str, raw: bytes) -> tuple[bytes | None, list[tuple[str, str]]]:
    """The sheet's XML without its stray cells (None when it has none) and those cells.

    Cells are found as calamine places them: at their ``r`` reference, or after the previous cell of
    their row (and rows after the previous row) when they have none; only cells holding a value count.
    When every cell carries its reference first the scan is vectorised, otherwise expat parses.
    """
    fast = _filled_cells_fast(raw)
    if fast is not None:
        r, c, spans = fast
    else:
        rows, cols, found_spans = _filled_cells(path, name, raw)
        r, c = np.frombuffer(rows, dtype=np.int64), np.frombuffer(cols, dtype=np.int64)
        spans = np.frombuffer(found_spans, dtype=np.int64)
    n = len(r)
    if not n:
        return None, []
    budget = max(AREA_FLOOR, AREA_PER_CELL * n)
    if (int(r.max()) - int(r.min()) + 1) * (int(c.max()) - int(c.min()) + 1) <= budget:
        return None, []
    # The table: columns from the first filled one up to a gap of COLUMN_GAP empty columns, then rows
    # from the first filled one while the rectangle stays within the budget.
    used_cols = np.unique(c)
    gaps = np.flatnonzero(np.diff(used_cols) > COLUMN_GAP)
    col_lo = int(used_cols[0])
    col_hi = int(used_cols[gaps[0]]) if len(gaps) else int(used_cols[-1])
    in_cols = (c >= col_lo) & (c <= col_hi)
    width = col_hi - col_lo + 1
    row_lo = int(r[in_cols].min()) if in_cols.any() else int(r.min())
    row_hi = row_lo + budget // width - 1
    inside = in_cols & (r >= row_lo) & (r <= row_hi)
    stray = np.flatnonzero(~inside)
    if len(stray) > MAX_STRAY:
        raise UnreadableWorkbook(
            f"sheet {name}: its {n:,} filled cells are spread over {int(r.max()) - int(r.min()) + 1:,} rows "
            f"x {int(c.max()) - int(c.min()) + 1:,} columns, {len(stray):,} of them beyond "
            f"{column_letter(col_hi)}{row_hi + 1} — too sparse to read safely (at most {budget:,} cells "
            "per sheet); delete the rows and columns outside the table, or split the list into several "
            "workbooks, and save again", path=str(path))
    order = stray[np.lexsort((c[stray], r[stray]))]
    found = [(f"{column_letter(int(c[i]))}{int(r[i]) + 1}", _cell_text(raw[spans[2 * i]:spans[2 * i + 1]]))
             for i in order]
    drop = sorted((spans[2 * i], spans[2 * i + 1]) for i in stray)
    parts, at = [], 0
    for lo, hi in drop:
        parts.append(raw[at:lo])
        at = hi
    parts.append(raw[at:])
    return b"".join(parts), found


_TEXT_RE = re.compile(rb"<(?:[\w.-]+:)?[vt](?:\s[^>]*)?>([^<]*)<")


def _cell_text(span: bytes) -> str:
    """The value as written in a cell's XML (a shared string's number for shared strings)."""
    import html

    texts = [html.unescape(m.group(1).decode("utf-8", "replace")) for m in _TEXT_RE.finditer(span)]
    text = "".join(texts)
    if re.search(rb"""\st\s*=\s*["']s["']""", span.split(b">", 1)[0]):
        return f"(shared string {text})"
    return text[:80]


def _filled_cells(path: Path, name: str, raw: bytes) -> tuple[array, array, array]:
    """Row and column (0-based) of each cell holding a value, and its byte span in ``raw``."""
    import xml.parsers.expat

    rows, cols, spans = array("q"), array("q"), array("q")
    state = {"row": -1, "col": -1, "cell": None, "filled": False, "depth": 0}

    def local(tag: str) -> str:
        return tag.rsplit(":", 1)[-1]

    def start(tag: str, attrs: dict[str, str]) -> None:
        tag = local(tag)
        if tag == "row":
            ref = attrs.get("r")
            state["row"] = int(ref) - 1 if ref and ref.strip().isdigit() else state["row"] + 1
            state["col"] = -1
        elif tag == "c":
            pos = _ref(attrs.get("r"))
            if pos is None:
                state["col"] += 1
                pos = (state["row"], state["col"])
            else:
                state["col"] = pos[1]
            state["cell"] = (pos, parser.CurrentByteIndex)
            state["filled"] = False
        elif state["cell"] is not None and tag in ("v", "is"):
            state["filled"] = True if tag == "is" else state["filled"]
            state["v"] = tag == "v"

    def text(data: str) -> None:
        if state["cell"] is not None and state.get("v") and data.strip():
            state["filled"] = True

    def end(tag: str) -> None:
        tag = local(tag)
        if tag == "v":
            state["v"] = False
        elif tag == "c" and state["cell"] is not None:
            (row, col), lo = state["cell"]
            state["cell"] = None
            if state["filled"]:
                at = parser.CurrentByteIndex
                hi = raw.index(b">", at) + 1 if at > lo else _tag_end(raw, lo)
                rows.append(row)
                cols.append(col)
                spans.append(lo)
                spans.append(hi)

    def no_dtd(*_args: Any) -> None:
        raise UnreadableWorkbook(f"sheet {name}: its XML declares a document type, which Excel never "
                                 "writes (a crafted file); save it again from Excel", path=str(path))

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = no_dtd
    parser.EntityDeclHandler = no_dtd
    parser.buffer_text = True
    try:
        parser.Parse(raw, True)
    except xml.parsers.expat.ExpatError as exc:
        raise UnreadableWorkbook(f"sheet {name}: the sheet's XML is damaged ({exc}); open it in Excel, "
                                 "which may offer to repair it, and save again", path=str(path)) from None
    return rows, cols, spans


def _filled_cells_fast(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """What :func:`_filled_cells` finds, vectorised (10x faster), for a sheet whose every cell is spelled
    ``<c r="A1"...>`` with no other ``r`` attribute; None for any other sheet (expat answers it)."""
    lo = raw.find(b"<sheetData")
    hi = raw.rfind(b"</sheetData>")
    a = np.frombuffer(raw, dtype=np.uint8)
    n = len(a)
    lt = np.flatnonzero(a[lo:hi] == 0x3C) + lo
    cells = lt[a[lt + 1] == 0x63]
    if not ((a[cells + 2] == 0x20) & (a[cells + 3] == 0x72) & (a[cells + 4] == 0x3D)
            & (a[cells + 5] == 0x22)).all():
        return None
    # calamine takes the last r of a start tag: every r attribute must be a cell's first or a row's.
    rows = lt[(a[lt + 1] == 0x72) & (a[lt + 2] == 0x6F) & (a[lt + 3] == 0x77) & (a[lt + 4] == 0x20)
              & (a[lt + 5] == 0x72) & (a[lt + 6] == 0x3D)]
    eq = np.flatnonzero(a[lo:hi] == 0x3D) + lo
    if np.count_nonzero((a[eq - 1] == 0x72) & _SPACE[a[eq - 2]]) != len(cells) + len(rows):
        return None
    # The reference: up to 3 letters, then up to 7 digits, then the closing quote.
    v = cells + 6
    col = np.zeros(len(v), dtype=np.int64)
    k = np.zeros(len(v), dtype=np.int64)
    for _ in range(3):
        ch = a[np.minimum(v + k, n - 1)]
        is_l = _LETTER[ch]
        col = np.where(is_l, col * 26 + ((ch | 0x20).astype(np.int64) - 0x60), col)
        k += is_l
    if (k == 0).any():
        return None
    row = np.zeros(len(v), dtype=np.int64)
    j = np.zeros(len(v), dtype=np.int64)
    for _ in range(7):
        ch = a[np.minimum(v + k + j, n - 1)]
        is_d = _DIGIT[ch] & (j < 7)
        row = np.where(is_d, row * 10 + (ch.astype(np.int64) - 0x30), row)
        j += is_d
    if (j == 0).any() or (a[np.minimum(v + k + j, n - 1)] != 0x22).any():
        return None
    # The start tag ends at the first ">" after the reference (s and t values hold none).
    gt = np.flatnonzero(a[lo:hi] == 0x3E) + lo
    end_tag = gt[np.searchsorted(gt, v + k + j)]
    closed = a[end_tag - 1] == 0x2F  # <c .../>: no value
    # First child: <v>x (filled unless empty), <is (filled), anything else: treat as filled.
    c1, c2, c3, c4 = a[end_tag + 1], a[end_tag + 2], a[end_tag + 3], a[end_tag + 4]
    empty_v = ((c1 == 0x3C) & (c2 == 0x76) & (c3 == 0x3E) & (c4 == 0x3C)) | ((c1 == 0x3C) & (c2 == 0x2F))
    filled = ~closed & ~empty_v
    # The span ends at the "</c>" after the start tag.
    close = lt[(a[lt + 1] == 0x2F) & (a[lt + 2] == 0x63) & (a[lt + 3] == 0x3E)]
    stop = np.where(closed, end_tag + 1, close[np.minimum(np.searchsorted(close, end_tag), len(close) - 1)] + 4)
    keep = np.flatnonzero(filled)
    spans = np.empty(2 * len(keep), dtype=np.int64)
    spans[0::2] = cells[keep]
    spans[1::2] = stop[keep]
    return row[keep] - 1, col[keep] - 1, spans


def _tag_end(raw: bytes, start: int) -> int:
    """The end of the element ``<c .../>`` that starts at ``start`` (a ">" may sit in an attribute)."""
    at = start
    quote = 0
    while True:
        ch = raw[at]
        if quote:
            if ch == quote:
                quote = 0
        elif ch in (0x22, 0x27):
            quote = ch
        elif ch == 0x3E:
            return at + 1
        at += 1


def _ref(ref: str | None) -> tuple[int, int] | None:
    """A cell reference as (row, column), 0-based: XFD1048576 -> (1048575, 16383); None if unreadable."""
    if not ref:
        return None
    m = _CELL_RE.match(ref.strip().upper())
    if not m:
        return None
    col = 0
    for ch in m.group(1):
        col = col * 26 + ord(ch) - 64
    return int(m.group(2)) - 1, col - 1


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def _load_bytes(path: Path, password: str | None, *, decrypt: bool = True) -> bytes | None:
    """The file's bytes (decrypted); None for an encrypted file when ``decrypt`` is false."""
    if not path.exists():
        raise UnreadableWorkbook("file not found; check the path", path=str(path))
    if path.is_dir():
        raise UnreadableWorkbook("is a folder, not a workbook", path=str(path))
    try:
        data = path.read_bytes()
    except PermissionError:
        raise UnreadableWorkbook("permission denied; close it in other programs or ask for read access",
                                 path=str(path)) from None
    except OSError as exc:
        raise UnreadableWorkbook(f"cannot be read ({exc.strerror}); copy it to a local folder and try "
                                 "again", path=str(path)) from None
    if not data:
        raise UnreadableWorkbook("the file is empty (0 bytes); it was not saved completely — save it "
                                 "again from Excel", path=str(path))
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        if "EncryptedPackage".encode("utf-16-le") in data:
            if password is None:
                raise UnreadableWorkbook("the workbook is password-protected; give the password "
                                         "(--password or XLCRM_PASSWORD) or remove it in Excel "
                                         "(File > Info > Protect Workbook) and save", path=str(path))
            if not decrypt:
                return None
            from xlcrm.xlsx.crypto import decrypt_bytes

            return decrypt_bytes(data, password, path=path)
        raise UnreadableWorkbook("this is an old .xls (Excel 97-2003) file; open it in Excel and save it "
                                 f"as Excel Workbook (.xlsx), or if it is a list of another layout, {IMPORT_HINT}",
                                 path=str(path))
    if data[:4] != b"PK\x03\x04":
        head = data[:512]
        if head.lstrip().startswith((b"<", b"\xef\xbb\xbf<")):
            what = "an HTML/XML file renamed to .xlsx"
        elif _looks_like_text(head):
            if path.suffix.lower() in (".csv", ".tsv", ".txt"):
                raise UnreadableWorkbook(f"a {path.suffix.lstrip('.').upper()} file, not a team workbook; "
                                         f"{IMPORT_HINT}", path=str(path))
            what = "a text/CSV file renamed to .xlsx"
        else:
            what = "not an Excel workbook"
        raise UnreadableWorkbook(f"{what}; open it in Excel and save it as Excel Workbook (.xlsx), or "
                                 f"{IMPORT_HINT}", path=str(path))
    return data


def _looks_like_text(head: bytes) -> bool:
    for enc in ("utf-8", "cp932"):
        try:
            head.decode(enc)
            return True
        except UnicodeDecodeError:
            continue
    return False


def _open_zip(path: Path, data: bytes) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, OSError, zlib.error) as exc:
        raise UnreadableWorkbook(f"the file is damaged or incomplete ({_short(exc)}); copy it again or "
                                 "save it again from Excel", path=str(path)) from None
    names = {i.filename for i in infos}
    if "xl/workbook.bin" in names:
        raise UnreadableWorkbook(f"an Excel binary workbook (.xlsb), not a team workbook; save it as Excel "
                                 f"Workbook (.xlsx) in Excel, or {IMPORT_HINT}", path=str(path))
    if "xl/workbook.xml" not in names:
        what = "a Word/PowerPoint file" if any(n.startswith(("word/", "ppt/")) for n in names) else \
            "a zip archive, not an Excel workbook"
        raise UnreadableWorkbook(f"{what}; save the customer list as Excel Workbook (.xlsx)", path=str(path))
    total = sum(i.file_size for i in infos)
    if total > MAX_UNCOMPRESSED:
        raise UnreadableWorkbook(f"refused: the workbook would expand to {total / 1024**3:.1f} GB "
                                 "(a decompression bomb or not a customer list)", path=str(path))
    for i in infos:
        if i.file_size > 50 * 1024**2 and i.file_size > MAX_RATIO * max(i.compress_size, 1):
            ratio = i.file_size // max(i.compress_size, 1)
            raise UnreadableWorkbook(f"refused: part {i.filename} expands {ratio}x (a decompression bomb)",
                                     path=str(path))
    return archive


def _read_meta(views: _SheetViews, path: Path, schema: Schema) -> WorkbookMeta:
    if META_SHEET not in views.book.sheet_names:
        return WorkbookMeta()
    values: dict[str, str] = {}
    for row in views.sheet(META_SHEET)[0].to_python():
        if len(row) >= 2 and isinstance(row[0], str) and row[0] in META_KEYS:
            values[row[0]] = "" if row[1] is None else str(row[1]).strip()
    version = values.get("schema_version", "")
    if version and version.split(".")[0] != schema.version.split(".")[0]:
        raise UnreadableWorkbook(f"made for schema version {version}, this xlcrm reads {schema.version}; "
                                 "ask the admin for a fresh workbook (`xlcrm distribute`)", path=str(path))
    lang = values.get("lang", "ja")
    return WorkbookMeta(
        schema_version=version,
        owner=values.get("owner", ""),
        lang=lang if lang in LANGS else "ja",  # type: ignore[arg-type]
        created=values.get("created", ""),
        workbook_id=values.get("workbook_id", ""),
        generator=values.get("generator", ""),
        has_meta_sheet=True,
    )


def _sheet_xml_paths(archive: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name -> zip member of its XML, from workbook.xml and its relationships."""
    from defusedxml import ElementTree as ET

    ns_main = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    ns_rel = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
    try:
        wb = ET.fromstring(archive.read("xl/workbook.xml"))
        rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except Exception:
        return {}
    targets = {r.get("Id"): r.get("Target", "") for r in rels}
    out: dict[str, str] = {}
    for sheet in wb.iter(f"{ns_main}sheet"):
        target = targets.get(sheet.get(f"{ns_rel}id"), "")
        if not target:
            continue
        member = target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)
        out[sheet.get("name", "")] = member
    return out


_AFTER_F = frozenset(b" \t\n\r\f\v>/")  # what the regex's [\s>/] matches in bytes
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _has_formula(raw: bytes) -> bool:
    """Whether ``_FORMULA_RE`` matches anywhere in ``raw``.

    The regex stops at each of the millions of "<" of a big sheet.  Every match holds an "f" after "<"
    or after a namespace prefix's ":", and a sheet of numbers and shared strings has a few dozen "f"
    (``<formula1>`` of its data validations): bytes.find jumps between them at memchr speed and each
    is checked the way the regex would.  A sheet full of "f" (inline text) goes to the regex.
    """
    find = raw.find
    i = find(b"f", 1)
    budget = 10_000
    while i >= 0:
        budget -= 1
        if not budget:
            return _FORMULA_RE.search(raw) is not None
        after = raw[i + 1:i + 2]
        if after and after[0] in _AFTER_F:
            before = raw[i - 1]
            if before == 0x3C:  # "<f"
                return True
            if before == 0x3A:  # "<prefix:f": the prefix is word characters after a "<"
                j = i - 1
                while j > 0 and raw[j - 1] in _WORD:
                    j -= 1
                if 0 < j < i - 1 and raw[j - 1] == 0x3C:
                    return True
        i = find(b"f", i + 1)
    return False


def _formulas(raw: bytes | None) -> dict[str, str]:
    """Cells that hold a formula. One byte scan; parse only when the sheet has any formula at all."""
    if not raw or not _has_formula(raw):
        return {}
    from defusedxml import ElementTree as ET

    out: dict[str, str] = {}
    for _event, elem in ET.iterparse(io.BytesIO(raw), events=("end",)):
        if elem.tag.endswith("}c"):
            f = next((ch for ch in elem if ch.tag.endswith("}f")), None)
            if f is not None:
                out[elem.get("r", "")] = (f.text or "(shared formula)")
            elem.clear()
    return out


def _read_sheet(sheet: python_calamine.CalamineSheet, name: str, entity: Entity, path: Path,
                max_rows: int) -> SheetData:
    # calamine's `end` is the last used (row, col), 0-based; total_height is one short of the row count.
    last_row = sheet.end[0] + 1 if sheet.end else 0
    if last_row > max_rows:
        raise UnreadableWorkbook(f"sheet {name} has {last_row:,} rows (limit {max_rows:,}); "
                                 "delete the empty rows at the bottom or split the file", path=str(path))
    rows = sheet.to_python(skip_empty_area=True)
    start_row, start_col = sheet.start or (0, 0)
    lookup = entity.header_lookup()

    header_idx = _find_header(rows, lookup)
    if header_idx is None:
        raise UnreadableWorkbook(f"sheet {name}: no header row found in the first {HEADER_SCAN_ROWS} rows; "
                                 f"the first row must hold the column names ({entity.columns[2].ja}, ...) — "
                                 "copy them from a fresh template", path=str(path))
    header_row = start_row + header_idx + 1
    headers = rows[header_idx]
    positions: dict[str, int] = {}
    extra: list[tuple[str, str, str]] = []
    labels = [c.ja for c in entity.columns] + [c.en for c in entity.columns]
    for j, h in enumerate(headers):
        if h is None or (isinstance(h, str) and not h.strip()):
            continue
        text = str(h).strip()
        key = lookup.get(fold_header(text))
        addr = f"{column_letter(start_col + j)}{header_row}"
        if key is None:
            close = difflib.get_close_matches(text, labels, n=1, cutoff=0.5)
            extra.append((addr, text, close[0] if close else ""))
            continue
        if key in positions:
            first = column_letter(start_col + positions[key])
            raise UnreadableWorkbook(f"sheet {name}: column {text} appears twice ({first}{header_row} and "
                                     f"{addr}); delete or rename one of them", path=str(path))
        positions[key] = j
    for col in entity.columns:
        needed = col.required or col.type == "ref"
        if needed and col.key not in positions:
            hint = next((f" — is {a} ({t}) the renamed {col.ja}?" for a, t, c in extra
                         if c in (col.ja, col.en)), "")
            raise UnreadableWorkbook(f"sheet {name}: required column {col.ja} ({col.en}) is missing from "
                                     f"the header row {header_row}{hint}; restore the header text",
                                     path=str(path))

    body = rows[header_idx + 1:]
    width = len(headers)
    arr = _cells(body, width)
    blank = arr == ""
    # Blank rows (between blocks, or left by deleting) are skipped: they hold nothing to lose.  A row
    # with text only under an extra header is kept, so the test spans every column, not only the known.
    keep = ~blank.all(axis=1) if len(arr) else np.zeros(0, dtype=bool)
    first = start_row + header_idx + 2
    index = np.flatnonzero(keep) + first
    # One copy of the known columns of the kept rows, which pandas takes as its block (copy=False):
    # building the frame column by column made it copy every cell twice more.
    cols = list(positions.values())
    pick: Any = (slice(None), cols) if keep.all() else np.ix_(keep, cols)
    kept = arr[pick]
    kept[blank[pick]] = None
    frame = pd.DataFrame(kept, columns=pd.Index(list(positions)),
                         index=pd.Index(index, name="row", dtype="int64"), dtype=object, copy=False)
    letters = {key: column_letter(start_col + j) for key, j in positions.items()}
    return SheetData(entity, name, frame, letters, header_row, extra)


def _cells(body: list[list[Any]], width: int) -> np.ndarray:
    """The rows as one 2-D object array."""
    if not body:
        return np.empty((0, width), dtype=object)
    lengths = set(map(len, body))
    if len(lengths) == 1:
        # Calamine's rows are all as wide as the sheet; fromiter fills the array in one pass, where
        # np.array first walks every row to find the shape (half the cost of this step).
        n, m = len(body), lengths.pop()
        return np.fromiter(itertools.chain.from_iterable(body), dtype=object, count=n * m).reshape(n, m)
    # ragged rows never come from calamine, but never trust a file
    return np.array([list(r) + [""] * (width - len(r)) for r in body], dtype=object)


def _find_header(rows: list[list[Any]], lookup: Mapping[str, str]) -> int | None:
    best, best_hits = None, 0
    for i, row in enumerate(rows[:HEADER_SCAN_ROWS]):
        hits = sum(1 for v in row if isinstance(v, str) and fold_header(v) in lookup)
        if hits > best_hits:
            best, best_hits = i, hits
    return best if best_hits >= 2 else None
