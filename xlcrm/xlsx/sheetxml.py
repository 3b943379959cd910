"""Pre-rendered ``<sheetData>`` and a fast shared-strings part for XlsxWriter, byte-identical to its own.

Why: XlsxWriter keeps every cell as a namedtuple until ``close()`` and then writes it through a chain of
generic helpers (dimension checks, attribute lists, escaping, ``A1`` conversion); for the master
workbook (3.8 million cells, 1.2 million distinct strings) that is 22 s of a 24 s write.
:func:`xlcrm.xlsx.writer.write_table` therefore renders its table rows straight into XML text (a
:class:`Region` of the sheet) while registering the strings in XlsxWriter's own shared-string table,
and this module makes ``close()`` emit that text in place of the cells, so XlsxWriter still writes
everything else (styles, tables, validation, protection, packaging).

The output is the same bytes XlsxWriter writes for the same per-cell calls (``tests/test_writer_fast.py``
compares them member by member).  Two things XlsxWriter only settles at ``close()`` need care:

* **Style numbers** (``s="N"``): a format gets its index when the sheet XML first meets it, in sheet,
  row and column order.  Rows are rendered with indices assigned in that order as far as it is known
  when they are written (:func:`prewalk`); at close :func:`finalize` replays the exact order XlsxWriter
  would use (:func:`xf_walk`) and, in the rare case the guess was wrong (a new format written later
  into an earlier sheet or into the header row), renumbers the rendered text.
* **Row spans** of the 16-row blocks the region shares with other rows (the header row): checked and
  corrected at close.

Anything else that touches the region's rows after it was rendered (a per-cell write into a data row,
``set_row``, a comment, a column format that blank-format cells relied on) turns the region back into
XlsxWriter cells (:func:`materialize`), so the result is still what XlsxWriter alone would write.

Deflate (2.4 s for the master) runs on one worker thread while the rows are rendered (zlib releases
the GIL): each rendered chunk and the shared strings become sync-flushed pieces of their part's
deflate stream (:class:`Stream`), and :func:`write_package` writes the zip container with them.  The
members inflate to the same bytes; the container itself differs from zipfile's (flush points).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from io import StringIO
from typing import IO, Any
from zipfile import LargeZipFile

from xlsxwriter.format import Format
from xlsxwriter.packager import Packager
from xlsxwriter.sharedstrings import SharedStrings
from xlsxwriter.utility import _preserve_whitespace, xl_col_to_name
from xlsxwriter.worksheet import CellBooleanTuple, CellNumberTuple, CellStringTuple, Worksheet
from xlsxwriter.xmlwriter import XMLwriter

#: Rows of 16 (XlsxWriter's span block) per stored text chunk.
BLOCKS_PER_CHUNK = 64
#: zlib level of the parts.  Measured on the master (198 MB of XML): level 6 (zipfile's and
#: XlsxWriter's default) 25.9 MB in 2.2 s of CPU, level 4 28.1 MB in 1.0 s, level 1 32.9 MB in 0.6 s.
#: 4: the deflate worker shares the second core with merge's search index build (xlcrm.store.snapshot), so
#: half the CPU is worth 8% more bytes; the parts inflate to the same XML at any level.
DEFLATE_LEVEL = 4


@dataclass(eq=False)
class Region:
    """Table rows already rendered as ``<row>`` elements, with what close() needs to check them."""

    first_row: int = -1  # first and last row holding a rendered cell (0-based)
    last_row: int = -1
    first_col: int = -1
    last_col: int = -1
    #: The rendered text in chunks of BLOCKS_PER_CHUNK blocks: the first chunk (all of them without a
    #: deflate worker), the middle ones already deflated by the worker, the last one.
    head: list[str] = field(default_factory=list)
    body: Stream | None = None
    tail: list[str] = field(default_factory=list)
    #: Each format the rendered cells use, at its first cell, in sheet order: the order in which
    #: XlsxWriter's close() would first meet them.
    firsts: list[Format] = field(default_factory=list)
    #: id(format) -> (format, style index written into the text)
    rendered: dict[int, tuple[Format, int]] = field(default_factory=dict)
    #: column -> column format that cells without a format of their own were rendered with (or None)
    none_cols: dict[int, Format | None] = field(default_factory=dict)
    #: column -> column format that format-less *numbers* were rendered with, in a column whose
    #: strings carry that same format explicitly (a "@" column); told apart again by materialize().
    ambiguous: dict[int, Format] = field(default_factory=dict)
    #: block -> (span text rendered, lowest and highest column of the region's own cells in it), for
    #: the first and last block, the only ones the region can share with other rows.
    edges: dict[int, tuple[str, int, int]] = field(default_factory=dict)

    def add_chunk(self, text: str, pool: ThreadPoolExecutor | None) -> None:
        # The first and the last chunk stay text: close() may correct their row spans.
        if not self.head or pool is None:
            self.head.append(text)
            return
        if self.tail:
            if self.body is None:
                self.body = Stream(pool)
            self.body.add(self.tail.pop())
        self.tail.append(text)

    def texts(self) -> list[str]:
        """All chunks as text (inflating the deflated ones): for the rare rewrites at close."""
        middle = self.body.texts() if self.body is not None else []
        return [*self.head, *middle, *self.tail]

    def set_texts(self, texts: list[str]) -> None:
        self.head, self.body, self.tail = texts, None, []

    def style(self, fmt: Format | None) -> str:
        """`` s="N"`` for a cell with ``fmt`` (first use assigns the index), or "" without one."""
        if fmt is None:
            return ""
        seen = self.rendered.get(id(fmt))
        if seen is None:
            seen = self.rendered[id(fmt)] = (fmt, fmt._get_xf_index())
            self.firsts.append(fmt)
        return f' s="{seen[1]}"'


def plain_rows(ws: Worksheet) -> bool:
    """Do rows without their own settings get a bare ``<row r= spans=>`` tag on this sheet?"""
    return ws.default_row_height == ws.original_row_height and ws.excel_version != 2010


# --- the order XlsxWriter assigns style indices in ---------------------------------------------------

def _cell_format(ws: Worksheet, cell: Any, row_format: Format | None, col: int) -> Format | None:
    # Worksheet._write_cell: the cell's format, else the row's, else the column's.
    if cell.format:
        return cell.format
    if row_format:
        return row_format
    info = ws.col_info.get(col)
    if info is not None and info.column_format is not None:
        return info.column_format
    return None


def _normal_rows(ws: Worksheet) -> list[int]:
    """Rows XlsxWriter writes from its own cell table (cells, row settings or comments), in order."""
    if ws.dim_rowmin is None:
        return []
    lo, hi = ws.dim_rowmin, ws.dim_rowmax
    rows = {r for r, cells in ws.table.items() if cells}
    rows.update(ws.row_info)
    rows.update(ws.comments)
    return sorted(r for r in rows if lo <= r <= hi)


def _row_formats(ws: Worksheet, row: int, cells: dict[int, Any]) -> Iterator[Format]:
    info = ws.row_info.get(row)
    row_format = info.row_format if info is not None else None
    if row_format:
        yield row_format
    for col in sorted(cells):
        fmt = _cell_format(ws, cells[col], row_format, col)
        if fmt is not None:
            yield fmt


def _col_formats(ws: Worksheet) -> Iterator[Format]:
    for col in sorted(ws.col_info):
        fmt = ws.col_info[col].column_format
        if fmt:
            yield fmt


def xf_walk(ws: Worksheet) -> Iterator[Format]:
    """Formats in the order XlsxWriter's close() calls ``_get_xf_index`` on them for this sheet."""
    yield from _col_formats(ws)
    region: Region | None = getattr(ws, "_region", None)
    pending = region is not None
    for row in _normal_rows(ws):
        if pending and region is not None and row > region.last_row:
            yield from region.firsts
            pending = False
        yield from _row_formats(ws, row, ws.table.get(row) or {})
    if pending and region is not None:
        yield from region.firsts


def prewalk(wb: Any, ws: Worksheet, header: dict[int, Format | None]) -> None:
    """Assign style indices as close() will, up to the first data row of the table about to be written.

    ``header`` is the row-0 cells add_table() will write (column -> header format).  A wrong guess
    costs only a renumbering pass at close (see :func:`finalize`).
    """
    for other in wb.worksheets():
        if other is ws:
            break
        if not other.is_chartsheet:
            for fmt in xf_walk(other):
                fmt._get_xf_index()
    for fmt in _col_formats(ws):
        fmt._get_xf_index()
    row0: dict[int, Any] = dict(ws.table.get(0) or {})
    for col, fmt in header.items():
        row0[col] = CellStringTuple(0, fmt)
    if row0 or 0 in ws.row_info:
        for fmt in _row_formats(ws, 0, row0):
            fmt._get_xf_index()


# --- close ----------------------------------------------------------------------------------------

def _needs_cells(ws: Worksheet, region: Region) -> bool:
    lo, hi = region.first_row, region.last_row
    if any(lo <= r <= hi for r, cells in ws.table.items() if cells):
        return True
    if any(lo <= r <= hi for r in ws.row_info) or any(lo <= r <= hi for r in ws.comments):
        return True
    if not plain_rows(ws):
        return True
    for col, fmt in region.none_cols.items():
        info = ws.col_info.get(col)
        if (info.column_format if info is not None else None) is not fmt:
            return True
    return False


class _NumText(str):
    """A number kept as the exact text it was rendered as (``{:.16G}`` gives it back unchanged)."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return str(self)


_CELL = re.compile(r'<c r="([A-Z]+)(\d+)"(?: s="(\d+)")?(?: t="([sb])")?><v>([^<]*)</v></c>')


def materialize(ws: Worksheet) -> None:
    """Turn the rendered region back into XlsxWriter cells (the rare case something else changed it)."""
    region: Region = ws._region  # type: ignore[attr-defined]
    cols = {xl_col_to_name(c): c for c in range(region.first_col, region.last_col + 1)}
    by_index: dict[int, Format] = {}
    for fmt, index in region.rendered.values():
        by_index.setdefault(index, fmt)
    ambiguous = {c: region.rendered[id(f)][1] for c, f in region.ambiguous.items()}
    table = ws.table
    for chunk in region.texts():
        for m in _CELL.finditer(chunk):
            letters, row_text, style, kind, value = m.groups()
            row, col = int(row_text) - 1, cols[letters]
            cells = table[row]
            if col in cells:
                continue  # written cell by cell after the table: the later write wins
            fmt = by_index[int(style)] if style is not None else None
            if kind == "s":
                cells[col] = CellStringTuple(int(value), fmt)
            elif kind == "b":
                cells[col] = CellBooleanTuple(int(value), fmt)
            else:
                if style is not None and ambiguous.get(col) == int(style):
                    fmt = None  # a number that took the column's format, not one of its own
                cells[col] = CellNumberTuple(_NumText(value), fmt)
    ws._region = None  # type: ignore[attr-defined]


def finalize(wb: Any, fixed: set[int]) -> None:
    """Before packaging: settle regions and give every format the index close() would give it.

    ``fixed`` holds the ids of formats whose index was set when they were created (the default one).
    """
    for ws in wb.worksheets():
        region = getattr(ws, "_region", None)
        if region is not None and _needs_cells(ws, region):
            materialize(ws)
    wb.xf_format_indices.clear()
    for fmt in wb.formats:
        if id(fmt) not in fixed:
            fmt.xf_index = None
    for ws in wb.worksheets():
        if not ws.is_chartsheet:
            for fmt in xf_walk(ws):
                fmt._get_xf_index()


_STYLE = re.compile(r' s="(\d+)"')
_ROW_SPANS = re.compile(r'<row r="(\d+)" spans="([^"]*)"')


def _spans(ws: Worksheet, rows: list[int]) -> dict[int, tuple[int, int]]:
    # Worksheet._calculate_spans over the cells XlsxWriter holds itself: block -> (min col, max col).
    out: dict[int, tuple[int, int]] = {}
    for row in rows:
        cols = list(ws.table.get(row) or ())
        cols += list(ws.comments.get(row) or ())
        if cols:
            block = row // 16
            lo, hi = min(cols), max(cols)
            if block in out:
                lo, hi = min(lo, out[block][0]), max(hi, out[block][1])
            out[block] = (lo, hi)
    return out


def _fix_spans(text: str, block: int, span: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if (int(m.group(1)) - 1) // 16 != block:
            return m.group(0)
        return f'<row r="{m.group(1)}" spans="{span}"'
    return _ROW_SPANS.sub(repl, text)


def write_sheet_data(ws: Worksheet) -> None:
    """``<sheetData>``: XlsxWriter's own rows before and after the region, the region's text between.

    The deflated middle of the region is not written to the part's file: its position is noted in
    ``ws._splice`` and :func:`write_package` puts the deflated pieces there.
    """
    region: Region = ws._region  # type: ignore[attr-defined]
    rows = _normal_rows(ws)
    blocks = _spans(ws, rows)
    remap = {index: fmt._get_xf_index() for fmt, index in region.rendered.values()}
    if any(old != new for old, new in remap.items()):
        def restyle(m: re.Match[str]) -> str:
            return f' s="{remap[int(m.group(1))]}"'
        region.set_texts([_STYLE.sub(restyle, c) for c in region.texts()])
    for block, (rendered, lo, hi) in region.edges.items():
        if block in blocks:
            lo, hi = min(lo, blocks[block][0]), max(hi, blocks[block][1])
        blocks[block] = (lo, hi)
        actual = f"{lo + 1}:{hi + 1}"
        if actual != rendered:
            if block == region.first_row // 16:
                region.head[0] = _fix_spans(region.head[0], block, actual)
            if block == region.last_row // 16:
                last = region.tail if region.tail else region.head
                last[-1] = _fix_spans(last[-1], block, actual)
    spans = {b: f"{lo + 1}:{hi + 1}" for b, (lo, hi) in blocks.items()}

    ws._xml_start_tag("sheetData")
    before = [r for r in rows if r < region.first_row]
    for row in before:
        _write_row(ws, row, spans.get(row // 16))
    for text in region.head:
        ws.fh.write(text)
    if region.body is not None:
        ws._splice = (ws.fh.tell(), region.body)  # type: ignore[attr-defined]
    for text in region.tail:
        ws.fh.write(text)
    for row in rows[len(before):]:
        _write_row(ws, row, spans.get(row // 16))
    ws._xml_end_tag("sheetData")


def _write_row(ws: Worksheet, row: int, span: str | None) -> None:
    # One row of Worksheet._write_rows.
    info = ws.row_info.get(row)
    cells = ws.table.get(row)
    if cells:
        ws._write_row(row, span, info)
        for col in sorted(cells):
            ws._write_cell(row, col, cells[col])
        ws._xml_end_tag("row")
    else:
        ws._write_empty_row(row, span, info)


# --- shared strings -------------------------------------------------------------------------------

# What makes a string need XlsxWriter's per-string treatment: control characters (written _xHHHH_),
# literal "_xHHHH_" (escaped again), the non-characters U+FFFE/U+FFFF, XML's & < >.  \x00 is the batch separator and checked by count instead.  Two simple
# searches, because an alternation makes the regex engine try every position.
_SPECIAL_CHAR = re.compile(r"[\x01-\x08\x0b-\x1f&<>\ufffe\uffff]")
_ESCAPE_LIKE = re.compile(r"_x[0-9a-fA-F]{4}_")
# Leading or trailing whitespace (xml:space="preserve"): at the start of the batch or after a
# separator, searched in the batch and in the batch reversed (a literal first char is a fast search).
_SPACE_FIRST = re.compile(r"\s")
_SPACE_AFTER_SEP = re.compile(r"\x00\s")


def _plain_batch(joined: str, n: int) -> bool:
    if joined.count("\x00") != n - 1 or _SPECIAL_CHAR.search(joined):
        return False
    if "_x" in joined and _ESCAPE_LIKE.search(joined):
        return False
    backwards = joined[::-1]
    return not (_SPACE_FIRST.match(joined) or _SPACE_FIRST.match(backwards)
                or _SPACE_AFTER_SEP.search(joined) or _SPACE_AFTER_SEP.search(backwards))


_BATCH = 4096


def _si(string: str) -> str:
    # SharedStrings._write_si, returning the text -- without its rich-text shortcut: XlsxWriter writes
    # a string that starts with "<r>" and ends with "</r>" as raw XML, so a cell typed that way in a
    # team workbook would inject markup into the master (xlcrm never writes rich strings).
    string = XMLwriter._escape_control_characters(string)
    attr = ' xml:space="preserve"' if _preserve_whitespace(string) else ""
    return f"<si><t{attr}>{_XML._escape_data(string)}</t></si>"


_XML = XMLwriter()


def write_si(fh: IO[str], strings: list[str], batch: int = _BATCH) -> None:
    """The ``<si>`` elements of ``strings``: batches of plain strings joined in one go.

    A batch holding a string that needs escaping is retried in batches of 64, and only those
    with such a string go string by string (XlsxWriter's own way).
    """
    for start in range(0, len(strings), batch):
        part = strings[start:start + batch]
        joined = "\x00".join(part)
        if _plain_batch(joined, len(part)):
            fh.write("<si><t>" + joined.replace("\x00", "</t></si><si><t>") + "</t></si>")
        elif batch > 64:
            write_si(fh, part, 64)
        else:
            fh.write("".join([_si(s) for s in part]))


class FastSharedStrings(SharedStrings):
    pool: ThreadPoolExecutor | None = None
    splice: tuple[int, Stream] | None = None

    def _write_sst_strings(self) -> None:
        if self.pool is None:
            write_si(self.fh, self.string_table.string_array)
            return
        stream = Stream(self.pool)
        self.splice = (self.fh.tell(), stream)
        piece = StringIO()
        for start in range(0, len(self.string_table.string_array), _BATCH * 16):
            write_si(piece, self.string_table.string_array[start:start + _BATCH * 16])
            stream.add(piece.getvalue())
            piece = StringIO()


class FastPackager(Packager):
    """XlsxWriter's packager with :class:`FastSharedStrings` for ``xl/sharedStrings.xml``."""

    def _write_shared_strings_file(self) -> None:
        sst = FastSharedStrings()
        sst.string_table = self.workbook.str_table
        sst.pool = getattr(self.workbook, "_deflate_pool", None)
        if not self.workbook.str_table.count:
            return
        sst._set_xml_writer(self._filename("xl/sharedStrings.xml"))
        sst._assemble_xml_file()
        if sst.splice is not None:
            self.workbook._sst_splice = sst.splice


# --- deflate on a worker thread, and the zip container ------------------------------------------------

class Stream:
    """Text pieces deflated in order on the workbook's one worker thread: the middle of a zip member.

    zlib releases the GIL, so the worker compresses rendered rows while the main thread renders the
    next ones (on two cores the 2.4 s of deflate for the master mostly disappears).  Each piece ends
    with a sync flush, so the pieces join into one deflate stream; the CRC runs along in the same
    (single, ordered) worker.  The member's bytes inflate to exactly the text; only the compressed
    bytes differ from what zipfile would write in one go.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self.pieces: list[Future[bytes]] = []
        self.crc = 0
        self.size = 0

    def add(self, text: str) -> None:
        self.pieces.append(self._pool.submit(self._deflate, text))

    def _deflate(self, text: str) -> bytes:
        data = text.encode("utf-8")
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        co = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
        return co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH)

    def texts(self) -> list[str]:
        return [zlib.decompressobj(-15).decompress(f.result()).decode("utf-8") for f in self.pieces]


def _deflate(data: bytes, final: bool) -> bytes:
    co = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, not exposed by Python)."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = [_gf2_times(odd, odd[n]) for n in range(32)]  # two zero bits
    odd = [_gf2_times(even, even[n]) for n in range(32)]  # four zero bits
    while True:
        even = [_gf2_times(odd, odd[n]) for n in range(32)]
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = [_gf2_times(even, even[n]) for n in range(32)]
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


#: zipfile's limit without ZIP64 (XlsxWriter refuses to go beyond it unless use_zip64() was called).
ZIP64_LIMIT = (1 << 31) - 1
_DOS_DATE = (1 << 5) | 1  # 1980-01-01, the date XlsxWriter gives every member


def _member(content: bytes, splice: tuple[int, Stream] | None) -> tuple[list[bytes], int, int]:
    """The deflated pieces, CRC and size of one part, with a stream's pieces at its splice point."""
    if splice is None:
        return [_deflate(content, True)], zlib.crc32(content), len(content)
    pos, stream = splice
    before, after = content[:pos], content[pos:]
    middle = [f.result() for f in stream.pieces]
    crc = crc32_combine(zlib.crc32(before), stream.crc, stream.size)
    crc = crc32_combine(crc, zlib.crc32(after), len(after))
    return [_deflate(before, False), *middle, _deflate(after, True)], crc, len(before) + stream.size + len(after)


def write_package(out: IO[bytes], files: list[tuple[Any, str, bool]],
                  splices: dict[str, tuple[int, Stream]]) -> None:
    """The .xlsx zip container of the packager's parts (in memory), in the packager's order."""
    offset = 0
    central = []
    for part, xml_filename, _binary in files:
        content = part.getvalue()
        if isinstance(content, str):
            content = content.encode("utf-8")
        pieces, crc, size = _member(content, splices.get(xml_filename))
        csize = sum(len(p) for p in pieces)
        name = xml_filename.encode("utf-8")
        flags = 0 if name.isascii() else 0x800
        if max(size, csize, offset) > ZIP64_LIMIT:
            raise LargeZipFile("the workbook would need ZIP64")
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 8, 0, _DOS_DATE, crc, csize, size,
                              len(name), 0) + name)
        for p in pieces:
            out.write(p)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, flags, 8, 0, _DOS_DATE,
                                   crc, csize, size, len(name), 0, 0, 0, 0, 0o100600 << 16, offset) + name)
        offset += 30 + len(name) + csize
    directory = b"".join(central)
    if offset + len(directory) > ZIP64_LIMIT:
        raise LargeZipFile("the workbook would need ZIP64")
    out.write(directory)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0))
