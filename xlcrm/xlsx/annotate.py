"""The annotated copy written by patching the .xlsx package, without loading it into openpyxl.

Why: ``xlcrm merge`` writes one annotated copy per team workbook, and an openpyxl load + save of a
10,000-row workbook costs seconds of CPU only to colour ~50 cells.  Here every zip member nobody needs
to touch is copied as it is stored, still compressed (:class:`_ZipWriter`); the worksheets holding
findings are edited at byte level (only the ``s`` style index of the affected ``<c>`` elements, plus
cells inserted for blank required fields); styles, content types, relationships and workbook.xml are
small and edited as text (re-serialising them with ElementTree would rename namespace prefixes and drop
declarations that ``mc:Ignorable`` refers to, which Excel reports as a damaged file).  Small parts are
*read* with defusedxml; large sheets are never parsed into a tree.

A workbook annotated before (an error workbook sent in again, or a handout carrying its owner's rejected
rows, :mod:`xlcrm.master.distribute`) is annotated afresh: its findings sheet and xlcrm's own comments are
rewritten in place (a cell fixed since keeps its fill, without a comment).  Anything unexpected
(prefixed SpreadsheetML, a sheet with comments someone else wrote, rows without ``r`` attributes ...)
raises :class:`FastPathUnsupported`, and :func:`xlcrm.intake.validate.annotate` falls back to the openpyxl
path for that workbook.

The findings sheet is inserted as the FIRST sheet (the way the openpyxl path does it, so people see it
on opening).  Sheet-local defined names (``localSheetId``: print titles, print areas, filters) index
sheets by position, so each is shifted by one, as are ``activeTab``/``firstSheet``; every other sheet's
``tabSelected`` flag is cleared, or Excel would open with the sheets grouped.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import operator
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from xml.sax.saxutils import escape, quoteattr

from defusedxml import ElementTree as DET

from xlcrm.errors import XlcrmError
from xlcrm.normalize import display_text
from xlcrm.schema import META_SHEET
from xlcrm.xlsx.cells import column_index, ooxml_text, sheet_ref
from xlcrm.xlsx.marks import ERROR, FILLS, SUMMARY_SHEET, severity_label, summary_headings
from xlcrm.xlsx.reader import is_macro_part
from xlcrm.xlsx.sheetxml import DEFLATE_LEVEL

if TYPE_CHECKING:
    from xlcrm.intake.validate import Finding, ValidationResult

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_T_WORKSHEET = REL_NS + "/worksheet"
_T_COMMENTS = REL_NS + "/comments"
_T_VML = REL_NS + "/vmlDrawing"
_CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_CT_COMMENTS = "application/vnd.openxmlformats-officedocument.spreadsheetml.comments+xml"
_CT_VML = "application/vnd.openxmlformats-officedocument.vmlDrawing"
_CT_MAIN = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"

#: CT_Worksheet children that must come after <legacyDrawing> (ECMA-376 Part 1, 18.3.1.99).
_AFTER_LEGACY_DRAWING = frozenset({b"legacyDrawingHF", b"drawingHF", b"picture", b"oleObjects", b"controls",
                                   b"webPublishItems", b"tableParts", b"extLst"})
#: Refuse to inflate a single part beyond this (the reader has already refused decompression bombs).
_MAX_PART = 1024**3

# A start or end tag; quoted attribute values may legally contain ">".
_TAG = re.compile(rb"<(/?)([A-Za-z_][\w.:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>")
_ROW_OPEN = re.compile(rb"<row\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>")
_CELL_OPEN = re.compile(rb"<c\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>")
_CELL_REF = re.compile(r"^([A-Z]{1,3})([1-9]\d{0,6})$")


class FastPathUnsupported(XlcrmError):
    """The workbook has a structure the byte-level path does not handle; use openpyxl instead."""


@functools.cache
def _attr_pattern(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"(?:^|\s)" + re.escape(name) + rb"\s*=\s*(\"([^\"]*)\"|'([^']*)')")


def _attr(tag_attrs: bytes, name: bytes) -> bytes | None:
    m = _attr_pattern(name).search(tag_attrs)
    if not m:
        return None
    return m.group(2) if m.group(2) is not None else m.group(3)


def _set_attr(tag_attrs: bytes, name: bytes, value: bytes) -> bytes:
    pattern = re.compile(rb"(\s)" + re.escape(name) + rb"\s*=\s*(\"[^\"]*\"|'[^']*')")
    if pattern.search(tag_attrs):
        return pattern.sub(lambda m: m.group(1) + name + b'="' + value + b'"', tag_attrs, count=1)
    return b" " + name + b'="' + value + b'"' + tag_attrs


def _drop_attr(tag_attrs: bytes, name: bytes) -> bytes:
    return re.sub(rb"\s" + re.escape(name) + rb"\s*=\s*(\"[^\"]*\"|'[^']*')", b"", tag_attrs)


def _xml_text(text: str) -> str:
    """Escape for element text: OOXML's _xHHHH_ form for characters XML 1.0 cannot carry."""
    return escape(ooxml_text(text))


# --- package bookkeeping --------------------------------------------------------------------------

@dataclass
class _Sheet:
    name: str
    part: str  # zip member name, e.g. xl/worksheets/sheet1.xml
    cells: dict[str, list[Finding]] = field(default_factory=dict)


def _read_small(zin: zipfile.ZipFile, name: str) -> bytes:
    info = zin.getinfo(name)
    if info.file_size > 64 * 1024**2:
        raise FastPathUnsupported(f"part {name} is unexpectedly large")
    return zin.read(info)


def _parse(data: bytes, part: str) -> Any:
    try:
        return DET.fromstring(data)
    except Exception as exc:  # defusedxml refusals and parse errors alike
        raise FastPathUnsupported(f"{part}: {exc}") from exc


def _rels_path(part: str) -> str:
    d, base = posixpath.split(part)
    return posixpath.join(d, "_rels", base + ".rels")


def _resolve(base_part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_part), target))


def _require_unprefixed_root(data: bytes, local: bytes, part: str) -> None:
    m = re.search(rb"<([A-Za-z_][\w.:-]*)[\s>/]", data)  # the first element (declarations are <? or <!)
    if not m or m.group(1) != local:
        raise FastPathUnsupported(f"{part}: root element is not an unprefixed <{local.decode()}>")


def _unique_name(existing: set[str], pattern: str) -> str:
    """A part name not yet used; OPC part names compare case-insensitively, so ``existing`` is lower case."""
    n = 1
    while pattern.format(n).lower() in existing:
        n += 1
    name = pattern.format(n)
    existing.add(name.lower())
    return name


def _new_rid(used: set[str]) -> str:
    n = len(used) + 1
    while f"rId{n}" in used:
        n += 1
    rid = f"rId{n}"
    used.add(rid)
    return rid


# --- styles ---------------------------------------------------------------------------------------

class _Styles:
    """styles.xml edited as text: appended fills, fonts and cellXfs, existing indexes untouched."""

    def __init__(self, data: bytes) -> None:
        _require_unprefixed_root(data, b"styleSheet", "xl/styles.xml")
        self.data = data
        self.xfs = self._children(b"cellXfs", b"xf")
        fonts = self._children(b"fonts", b"font")
        fills = self._children(b"fills", b"fill")
        if not self.xfs or not fonts or not fills:
            raise FastPathUnsupported("xl/styles.xml has no cellXfs, fonts or fills")
        self.base_font = fonts[0]
        self.n_fonts, self.n_fills = len(fonts), len(fills)
        self.new_fonts: list[bytes] = []
        self.new_fills: list[bytes] = []
        self.new_xfs: list[bytes] = []
        self._clones: dict[tuple[int, str], int] = {}
        self._fill_ids: dict[str, int] = {}

    def _children(self, container: bytes, child: bytes) -> list[bytes]:
        m = re.search(rb"<" + container + rb"\b[^>]*?(/?)>", self.data)
        if not m or m.group(1):
            return []
        end = self.data.find(b"</" + container + b">", m.end())
        if end < 0:
            raise FastPathUnsupported(f"xl/styles.xml: unterminated <{container.decode()}>")
        out: list[bytes] = []
        depth, start = 0, -1
        for t in _TAG.finditer(self.data, m.end(), end):
            closing, name, selfclose = t.group(1), t.group(2), t.group(4)
            if depth == 0 and not closing:
                if name != child:
                    raise FastPathUnsupported(f"xl/styles.xml: unexpected <{name.decode()}>")
                if selfclose:
                    out.append(t.group(0))
                else:
                    start, depth = t.start(), 1
            elif not selfclose:
                depth += -1 if closing else 1
                if depth == 0:
                    out.append(self.data[start:t.end()])
        return out

    def fill_id(self, rgb: str) -> int:
        if rgb not in self._fill_ids:
            self.new_fills.append(f'<fill><patternFill patternType="solid"><fgColor rgb="FF{rgb}"/>'
                                  f'<bgColor indexed="64"/></patternFill></fill>'.encode())
            self._fill_ids[rgb] = self.n_fills + len(self.new_fills) - 1
        return self._fill_ids[rgb]

    def _add_xf(self, xf: bytes) -> int:
        self.new_xfs.append(xf)
        return len(self.xfs) + len(self.new_xfs) - 1

    def with_fill(self, xf_id: int, rgb: str) -> int:
        """Index of a clone of cellXfs[xf_id] (number format, font, borders kept) with a solid fill."""
        key = (xf_id, rgb)
        if key not in self._clones:
            if not 0 <= xf_id < len(self.xfs):
                raise FastPathUnsupported(f"style index {xf_id} is not in cellXfs")
            m = re.match(rb"<xf\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>", self.xfs[xf_id])
            assert m is not None
            attrs = _set_attr(_set_attr(m.group(1), b"fillId", str(self.fill_id(rgb)).encode()),
                              b"applyFill", b"1")
            self._clones[key] = self._add_xf(b"<xf" + attrs + m.group(2) + b">" + self.xfs[xf_id][m.end():])
        return self._clones[key]

    def font(self, extra: bytes, drop: tuple[bytes, ...]) -> int:
        body = self.base_font
        for name in drop:
            body = re.sub(rb"<" + name + rb"\b[^>]*/>|<" + name + rb"\b[^>]*>.*?</" + name + rb">", b"", body,
                          flags=re.S)
        m = re.match(rb"<font\b[^>]*?(/?)>", body)
        assert m is not None
        body = b"<font>" + extra + b"</font>" if m.group(1) else body[:m.end()] + extra + body[m.end():]
        self.new_fonts.append(body)
        return self.n_fonts + len(self.new_fonts) - 1

    def plain_xf(self, font_id: int = 0, fill_id: int = 0, quote: bool = False) -> int:
        attrs = f'numFmtId="0" fontId="{font_id}" fillId="{fill_id}" borderId="0" xfId="0"'
        if font_id:
            attrs += ' applyFont="1"'
        if fill_id:
            attrs += ' applyFill="1"'
        if quote:
            attrs += ' quotePrefix="1"'
        return self._add_xf(f"<xf {attrs}/>".encode())

    def render(self) -> bytes:
        data = self.data
        for container, items, total in ((b"fonts", self.new_fonts, self.n_fonts),
                                        (b"fills", self.new_fills, self.n_fills),
                                        (b"cellXfs", self.new_xfs, len(self.xfs))):
            if not items:
                continue
            m = re.search(rb"<" + container + rb"\b([^>]*)>", data)
            assert m is not None
            attrs = _set_attr(m.group(1), b"count", str(total + len(items)).encode())
            data = data[:m.start()] + b"<" + container + attrs + b">" + data[m.end():]
            end = data.find(b"</" + container + b">")
            data = data[:end] + b"".join(items) + data[end:]
        return data


# --- worksheets -----------------------------------------------------------------------------------

def _top_level_tags(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int]]:
    """(local name, offset) of each element directly inside <worksheet> between start and end."""
    depth = 0
    for t in _TAG.finditer(data, start, end):
        closing, name, selfclose = t.group(1), t.group(2), t.group(4)
        if closing:
            depth -= 1
            continue
        if depth == 0:
            yield name, t.start()
        if not selfclose:
            depth += 1


def _col_styles(head: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in re.finditer(rb"<col\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)/?>", head):
        lo, hi, style = _attr(m.group(1), b"min"), _attr(m.group(1), b"max"), _attr(m.group(1), b"style")
        if lo and hi and style:
            for c in range(int(lo), min(int(hi), 16384) + 1):
                out[c] = int(style)
    return out


def _clear_tab_selected(data: bytes) -> bytes:
    """Drop tabSelected from the sheet views (they come before <sheetData>, so only the head is read)."""
    head_end = data.find(b"<sheetData")
    if head_end < 0:
        head_end = len(data)
    head = data[:head_end]
    new_head = re.sub(rb"\stabSelected\s*=\s*(\"[^\"]*\"|'[^']*')", b"", head)
    return data if new_head == head else new_head + data[head_end:]


#: Any ``<row``, with its number when written the way Excel, XlsxWriter, openpyxl and LibreOffice write
#: it (``r`` first, double quotes); b"" otherwise.
_ROW_R = re.compile(rb'<row(?: r="([1-9][0-9]*)")?')

#: (row number, offset, the row's <row> tag match, or None with the offset a new row goes before)
_RowPlace = tuple[int, int, re.Match[bytes] | None]


class _RowIndex:
    """Where the rows of one sheet's XML are, found without a regex match per row of the sheet.

    Why: walking 30,000 rows with :data:`_ROW_OPEN` and an attribute lookup each costs ~3 µs a row,
    twice per sheet (styles, then patch), to find the few rows holding findings.  When every ``<row``
    in the range is written ``<row r="N"`` with N strictly ascending (checked by one findall, shared
    by both passes), a row is found by ``bytes.find`` of its exact tag start, searching on from the
    previous one.  Otherwise :meth:`places` returns None and the caller walks the rows one by one
    (:func:`_rows_walk`), with the same result.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._rows: tuple[int, int, list[int] | None] | None = None

    def rows(self, start: int, end: int) -> list[int] | None:
        """The row numbers in data[start:end], or None when not all written the plain way, ascending."""
        if self._rows is not None:
            s, e, rows = self._rows
            # The same rows when no "<row" starts between the two starts (the <sheetData> tag).
            if e == end and self.data.find(b"<row", min(s, start), max(s, start) + 3) < 0:
                return rows
        found = _ROW_R.findall(self.data, start, end)
        rows = list(map(int, found)) if b"" not in found else None
        if rows is not None and not all(map(operator.lt, rows, rows[1:])):
            rows = None
        self._rows = (start, end, rows)
        return rows

    def places(self, start: int, end: int, wanted: list[int]) -> list[_RowPlace] | None:
        """Where each of the ``wanted`` rows (ascending) is or would go; None: walk the rows instead."""
        rows = self.rows(start, end)
        if rows is None:
            return None
        out: list[_RowPlace] = []
        at = start
        for r in wanted:
            i = bisect.bisect_left(rows, r)
            if i == len(rows):
                out.append((r, end, None))
                continue
            at = self.data.find(b'<row r="%d"' % rows[i], at, end)
            if at < 0:
                return None
            if rows[i] != r:
                out.append((r, at, None))
                continue
            m = _ROW_OPEN.match(self.data, at, end)
            if m is None:
                return None
            out.append((r, at, m))
        return out


def _rows_walk(data: bytes, start: int, end: int, wanted: list[int], part: str) -> Iterator[_RowPlace]:
    """:meth:`_RowIndex.places` for any layout: every row tag parsed, order checked up to the last wanted row."""
    pending = list(wanted)
    last_r = 0
    for m in _ROW_OPEN.finditer(data, start, end):
        r_attr = _attr(m.group(1), b"r")
        if r_attr is None:
            raise FastPathUnsupported(f"{part}: a <row> without an r attribute")
        r = int(r_attr)
        if r <= last_r:
            raise FastPathUnsupported(f"{part}: rows out of order")
        last_r = r
        while pending and pending[0] < r:
            yield pending.pop(0), m.start(), None
        if not pending:
            return
        if pending[0] == r:
            yield pending.pop(0), m.start(), m
    for r in pending:
        yield r, end, None


def _patch_sheet(data: bytes, cells: dict[str, int], legacy_rid: str | None, part: str,
                 index: _RowIndex | None = None) -> bytes:
    """Set the style of ``cells`` (ref -> xf index), inserting missing cells/rows; add <legacyDrawing>
    (``legacy_rid`` None: the sheet has xlcrm's own, whose comments are rewritten)."""
    _require_unprefixed_root(data, b"worksheet", part)
    sd = re.search(rb"<sheetData\b[^>]*?(/?)>", data)
    if not sd:
        raise FastPathUnsupported(f"{part}: no <sheetData>")
    if sd.group(1):
        body_start, body_end, tail_start = sd.end(), sd.end(), sd.end()
        open_tag, close_tag = b"<sheetData>", b"</sheetData>"
    else:
        body_start = sd.end()
        body_end = data.find(b"</sheetData>", body_start)
        if body_end < 0:
            raise FastPathUnsupported(f"{part}: unterminated <sheetData>")
        tail_start = body_end + len(b"</sheetData>")
        open_tag, close_tag = data[sd.start():sd.end()], b"</sheetData>"
    head, tail = data[:sd.start()], data[tail_start:]
    if legacy_rid is not None and (re.search(rb"<legacyDrawing\b", tail) or re.search(rb"<legacyDrawing\b", head)):
        raise FastPathUnsupported(f"{part}: the sheet already has comments or a legacy drawing")

    by_row: dict[int, dict[int, tuple[str, int]]] = {}
    for ref, xf in cells.items():
        m = _CELL_REF.match(ref)
        if not m:
            raise FastPathUnsupported(f"{part}: unexpected cell reference {ref!r}")
        by_row.setdefault(int(m.group(2)), {})[column_index(m.group(1)) + 1] = (ref, xf)

    pieces: list[bytes] = []
    pos = body_start
    wanted = sorted(by_row)
    places = (index or _RowIndex(data)).places(body_start, body_end, wanted)
    for r, at, m in places if places is not None else _rows_walk(data, body_start, body_end, wanted, part):
        if m is None:  # a row that does not exist yet goes before the next higher one
            pieces += [data[pos:at], _new_row(r, by_row[r])]
            pos = at
            continue
        if m.group(2):
            row_end = m.end()
            content = b""
        else:
            row_end = data.find(b"</row>", m.end(), body_end)
            if row_end < 0:
                raise FastPathUnsupported(f"{part}: unterminated <row>")
            content = data[m.end():row_end]
            row_end += len(b"</row>")
        attrs = m.group(1)
        new_content = _patch_row(content, by_row[r], part)
        attrs = _drop_attr(attrs, b"spans")  # a hint only; a new cell may fall outside it
        pieces += [data[pos:m.start()], b"<row" + attrs + b">" + new_content + b"</row>"]
        pos = row_end
    pieces.append(data[pos:body_end])
    if legacy_rid is None:
        return b"".join([_clear_tab_selected(head), open_tag, *pieces, close_tag, tail])

    # <legacyDrawing> goes before the first element that the schema puts after it.
    stripped = tail.rstrip()
    if not stripped.endswith(b"</worksheet>"):
        raise FastPathUnsupported(f"{part}: does not end with </worksheet>")
    insert_at = len(stripped) - len(b"</worksheet>")
    for name, offset in _top_level_tags(tail, 0, insert_at):
        if name in _AFTER_LEGACY_DRAWING:
            insert_at = offset
            break
        if b":" in name:  # mc:AlternateContent (controls, OLE objects): its place in the order is unclear
            raise FastPathUnsupported(f"{part}: <{name.decode()}> after the cells")
    prefix = _rel_prefix(head)
    if prefix is None:
        head = re.sub(rb"<worksheet\b", b'<worksheet xmlns:xlr="' + REL_NS.encode() + b'"', head, count=1)
        prefix = b"xlr"
    legacy = b"<legacyDrawing " + prefix + b':id="' + legacy_rid.encode() + b'"/>'
    tail = tail[:insert_at] + legacy + tail[insert_at:]
    return b"".join([_clear_tab_selected(head), open_tag, *pieces, close_tag, tail])


def _rel_prefix(head: bytes) -> bytes | None:
    root = re.search(rb"<worksheet\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)>", head)
    if not root:
        return None
    for m in re.finditer(rb"xmlns:([\w.-]+)\s*=\s*(\"([^\"]*)\"|'([^']*)')", root.group(1)):
        if (m.group(3) or m.group(4) or b"").decode() == REL_NS:
            return m.group(1)
    return None


def _new_cell(ref: str, xf: int) -> bytes:
    return f'<c r="{ref}" s="{xf}"/>'.encode()


def _new_row(r: int, cells: dict[int, tuple[str, int]]) -> bytes:
    return f'<row r="{r}">'.encode() + b"".join(_new_cell(*cells[c]) for c in sorted(cells)) + b"</row>"


def _patch_row(content: bytes, targets: dict[int, tuple[str, int]], part: str) -> bytes:
    out: list[bytes] = []
    pos = 0
    pending = sorted(targets)
    for m in _CELL_OPEN.finditer(content):
        ref = _attr(m.group(1), b"r")
        cm = _CELL_REF.match(ref.decode()) if ref else None
        if cm is None:
            raise FastPathUnsupported(f"{part}: a <c> without a usable r attribute")
        c = column_index(cm.group(1)) + 1
        while pending and pending[0] < c:
            out += [content[pos:m.start()], _new_cell(*targets[pending[0]])]
            pos = m.start()
            pending.pop(0)
        if pending and pending[0] == c:
            pending.pop(0)
            _, xf = targets[c]
            out += [content[pos:m.start()],
                    b"<c" + _set_attr(m.group(1), b"s", str(xf).encode()) + m.group(2) + b">"]
            pos = m.end()
        if not pending:
            break
    out.append(content[pos:])
    # cells after the last existing one: before any trailing <extLst> of the row
    tail_cells = b"".join(_new_cell(*targets[c]) for c in pending)
    if tail_cells:
        last = out.pop()
        ext = last.rfind(b"<extLst")
        out.append(last[:ext] + tail_cells + last[ext:] if ext >= 0 else last + tail_cells)
    return b"".join(out)


def _existing_styles(data: bytes, refs: set[str], part: str,
                     index: _RowIndex | None = None) -> dict[str, int | None]:
    """Current xf index of each ref (None when the cell does not exist) and, for missing cells, the
    row's or column's style, which Excel would give a value typed there."""
    out: dict[str, int | None] = dict.fromkeys(refs)
    want: dict[int, set[str]] = {}
    for ref in refs:
        m = _CELL_REF.match(ref)
        if not m:
            raise FastPathUnsupported(f"{part}: unexpected cell reference {ref!r}")
        want.setdefault(int(m.group(2)), set()).add(ref)
    sd = data.find(b"<sheetData")
    end = data.find(b"</sheetData>")
    if sd < 0:
        raise FastPathUnsupported(f"{part}: no <sheetData>")
    col_styles = _col_styles(data[:sd])
    found: dict[str, int] = {}
    row_styles: dict[int, int] = {}
    if end > sd:
        places = (index or _RowIndex(data)).places(sd, end, sorted(want))
        rows = [(r, m) for r, _, m in places if m is not None] if places is not None else _first_rows(
            data, sd, end, set(want), part)
        for r, m in rows:
            if _attr(m.group(1), b"customFormat") in (b"1", b"true") and _attr(m.group(1), b"s"):
                row_styles[r] = int(_attr(m.group(1), b"s") or 0)
            if not m.group(2):
                row_end = data.find(b"</row>", m.end(), end)
                for c in _CELL_OPEN.finditer(data, m.end(), row_end):
                    ref = (_attr(c.group(1), b"r") or b"").decode()
                    if ref in want[r]:
                        found[ref] = int(_attr(c.group(1), b"s") or 0)
    for ref in refs:
        if ref in found:
            out[ref] = found[ref]
        else:
            m = _CELL_REF.match(ref)
            assert m is not None
            r, c = int(m.group(2)), column_index(m.group(1)) + 1
            out[ref] = row_styles.get(r, col_styles.get(c, 0))
    return out


def _first_rows(data: bytes, start: int, end: int, remaining: set[int], part: str) -> list[tuple[int, re.Match[bytes]]]:
    """The first <row> tag of each row number in ``remaining``, in sheet order, for any layout."""
    out: list[tuple[int, re.Match[bytes]]] = []
    for m in _ROW_OPEN.finditer(data, start, end):
        r_attr = _attr(m.group(1), b"r")
        if r_attr is None:
            raise FastPathUnsupported(f"{part}: a <row> without an r attribute")
        r = int(r_attr)
        if r not in remaining:
            continue
        remaining.discard(r)
        out.append((r, m))
        if not remaining:
            break
    return out


# --- new parts ------------------------------------------------------------------------------------

def _comments_xml(cells: dict[str, list[Finding]]) -> bytes:
    items = []
    for ref, fs in cells.items():
        text = "\n".join(f"• {f.message}" for f in fs)
        items.append(f'<comment ref="{ref}" authorId="0"><text><t xml:space="preserve">{_xml_text(text)}'
                     f"</t></text></comment>")
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<comments xmlns="{MAIN_NS}">'
            f"<authors><author>xlcrm</author></authors><commentList>{''.join(items)}</commentList>"
            f"</comments>").encode()


def _vml_xml(cells: dict[str, list[Finding]], block: int) -> bytes:
    shapes = []
    for i, (ref, fs) in enumerate(cells.items(), 1):
        m = _CELL_REF.match(ref)
        assert m is not None
        row, col = int(m.group(2)) - 1, column_index(m.group(1))
        shapes.append(
            f'<v:shape id="_x0000_s{block * 1024 + i}" type="#_x0000_t202" style="position:absolute; '
            f'margin-left:59.25pt;margin-top:1.5pt;width:320px;height:{40 + 40 * len(fs)}px;z-index:{i};'
            f'visibility:hidden" fillcolor="#ffffe1" o:insetmode="auto"><v:fill color2="#ffffe1"/>'
            f'<v:shadow color="black" obscured="t"/><v:path o:connecttype="none"/>'
            f'<v:textbox style="mso-direction-alt:auto"><div style="text-align:left"></div></v:textbox>'
            f'<x:ClientData ObjectType="Note"><x:MoveWithCells/><x:SizeWithCells/>'
            f"<x:AutoFill>False</x:AutoFill><x:Row>{row}</x:Row><x:Column>{col}</x:Column>"
            f"</x:ClientData></v:shape>")
    return ('<xml xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
            'xmlns:x="urn:schemas-microsoft-com:office:excel">'
            f'<o:shapelayout v:ext="edit"><o:idmap v:ext="edit" data="{block}"/></o:shapelayout>'
            '<v:shapetype id="_x0000_t202" coordsize="21600,21600" o:spt="202" '
            'path="m,l,21600r21600,l21600,xe"><v:stroke joinstyle="miter"/>'
            '<v:path gradientshapeok="t" o:connecttype="rect"/></v:shapetype>'
            + "".join(shapes) + "</xml>").encode()


def _summary_xml(result: ValidationResult, styles: _Styles) -> bytes:
    from xlcrm.xlsx.writer import looks_like_formula

    lang = result.workbook.lang
    heads = summary_headings(lang)
    bold = styles.plain_xf(font_id=styles.font(b"<b/>", (b"b",)))
    link = styles.plain_xf(font_id=styles.font(b'<u/><color rgb="FF0563C1"/>', (b"u", b"color")))
    sev_xf = {k: styles.plain_xf(fill_id=styles.fill_id(v)) for k, v in FILLS.items()}
    quoted = styles.plain_xf(quote=True)

    def cell(ref: str, text: str, xf: int | None = None) -> str:
        if xf is None and looks_like_formula(text):
            xf = quoted
        s = f' s="{xf}"' if xf else ""
        if text == "":
            return f'<c r="{ref}"{s}/>' if s else ""
        return f'<c r="{ref}"{s} t="inlineStr"><is><t xml:space="preserve">{_xml_text(text)}</t></is></c>'

    rows = ['<row r="1">' + "".join(cell(f"{c}1", h, bold) for c, h in zip("ABCDEF", heads, strict=True))
            + "</row>"]
    links = []
    for r, f in enumerate(result.findings, 2):
        rows.append(f'<row r="{r}">' + cell(f"A{r}", severity_label(f.severity, lang), sev_xf[f.severity])
                    + cell(f"B{r}", f.sheet) + cell(f"C{r}", f.cell, link if f.cell else None)
                    + cell(f"D{r}", f.column) + cell(f"E{r}", display_text(f.value)) + cell(f"F{r}", f.message)
                    + "</row>")
        if f.cell:
            links.append(f'<hyperlink ref="C{r}" location={quoteattr(sheet_ref(f.sheet, f.cell))} '
                         f"display={quoteattr(f.cell)}/>")
    widths = "".join(f'<col min="{i}" max="{i}" width="{w}" customWidth="1"/>'
                     for i, w in enumerate((8, 12, 8, 16, 24, 90), 1))
    last = len(result.findings) + 1
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN_NS}" '
            f'xmlns:r="{REL_NS}"><dimension ref="A1:F{last}"/><sheetViews><sheetView tabSelected="1" '
            'workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
            '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>'
            f'<sheetFormatPr defaultRowHeight="15"/><cols>{widths}</cols><sheetData>{"".join(rows)}'
            f'</sheetData>{"<hyperlinks>" + "".join(links) + "</hyperlinks>" if links else ""}'
            '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
            "</worksheet>").encode()


# --- workbook.xml, rels, content types ------------------------------------------------------------

def _patch_workbook(data: bytes, title: str, rid: str, rel_prefix: bytes) -> bytes:
    """Insert the findings sheet first; shift everything that indexes sheets by position."""
    used_ids = [int(x) for x in re.findall(rb"<sheet\b[^>]*?\ssheetId\s*=\s*[\"'](\d+)[\"']", data)]
    sheet_id = max(used_ids, default=0) + 1
    new_sheet = (f'<sheet name={quoteattr(title)} sheetId="{sheet_id}" '.encode()
                 + rel_prefix + f':id="{rid}"/>'.encode())
    m = re.search(rb"<sheets\b[^>]*>", data)
    if not m or data[m.end() - 2:m.end()] == b"/>":
        raise FastPathUnsupported("xl/workbook.xml: no <sheets>")
    data = data[:m.end()] + new_sheet + data[m.end():]
    data = _meta_very_hidden(data)
    data = re.sub(rb"(<definedName\b[^>]*?\slocalSheetId\s*=\s*[\"'])(\d+)([\"'])",
                  lambda d: d.group(1) + str(int(d.group(2)) + 1).encode() + d.group(3), data)
    views = re.search(rb"<workbookView\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>", data)
    if views:
        attrs = _drop_attr(_set_attr(views.group(1), b"activeTab", b"0"), b"firstSheet")
        data = data[:views.start()] + b"<workbookView" + attrs + views.group(2) + b">" + data[views.end():]
    else:
        at = data.find(b"<sheets")
        data = data[:at] + b'<bookViews><workbookView activeTab="0"/></bookViews>' + data[at:]
    return data


def _activate(data: bytes, position: int) -> bytes:
    """workbook.xml with the sheet at ``position`` (the rewritten findings sheet) as the one shown."""
    views = re.search(rb"<workbookView\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>", data)
    if not views:
        return data
    attrs = _drop_attr(_set_attr(views.group(1), b"activeTab", str(position).encode()), b"firstSheet")
    return data[:views.start()] + b"<workbookView" + attrs + views.group(2) + b">" + data[views.end():]


def _own_comments(zin: zipfile.ZipFile, part: str, rel_map: dict[str, tuple[str, str]],
                  name_set: set[str]) -> tuple[str, str] | bool | None:
    """A sheet's comments: None when it has none; (comments part, VML part) when xlcrm wrote them
    (an earlier annotation); False when someone else did (kept: the openpyxl path merges them)."""
    comments = [_resolve(part, t) for typ, t in rel_map.values() if typ == _T_COMMENTS]
    vml = [_resolve(part, t) for typ, t in rel_map.values() if typ == _T_VML]
    if not comments and not vml:
        return None
    if len(comments) != 1 or len(vml) != 1 or comments[0] not in name_set or vml[0] not in name_set:
        return False
    authors = re.findall(rb"<author>([^<]*)</author>", _read_small(zin, comments[0]))
    return (comments[0], vml[0]) if authors == [b"xlcrm"] else False


def _meta_very_hidden(data: bytes) -> bytes:
    """The meta sheet back to very hidden: LibreOffice saves it as merely hidden (listed under Unhide)."""
    name = re.escape(META_SHEET.encode())

    def fix(m: re.Match[bytes]) -> bytes:
        return b"<sheet" + _set_attr(m.group(1), b"state", b"veryHidden") + m.group(2) + b">"

    return re.sub(rb"<sheet\b((?=[^>]*\sname\s*=\s*[\"']" + name + rb"[\"'])[^>]*?)(/?)>", fix, data)


def _add_relationships(data: bytes | None, rels: list[tuple[str, str, str]]) -> bytes:
    items = "".join(f'<Relationship Id="{i}" Type="{t}" Target={quoteattr(target)}/>' for i, t, target in rels)
    if data is None:
        return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_REL_NS}">'
                f"{items}</Relationships>").encode()
    if data.rstrip().endswith(b"/>") and b"</Relationships>" not in data:
        data = re.sub(rb"<Relationships\b([^>]*?)/>", rb"<Relationships\1></Relationships>", data, count=1)
    end = data.rfind(b"</Relationships>")
    if end < 0:
        raise FastPathUnsupported("a relationships part has no </Relationships>")
    return data[:end] + items.encode() + data[end:]


def _rel_ids(data: bytes | None, part: str) -> tuple[set[str], dict[str, tuple[str, str]]]:
    if data is None:
        return set(), {}
    root = _parse(data, part)
    ids: set[str] = set()
    by_id: dict[str, tuple[str, str]] = {}
    for rel in root:
        rid = rel.get("Id") or ""
        ids.add(rid)
        by_id[rid] = (rel.get("Type") or "", rel.get("Target") or "")
    return ids, by_id


# --- the zip container ----------------------------------------------------------------------------

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header (30 bytes), then the name
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory entry (46 bytes), then the name
_END = struct.Struct("<IHHHHIIH")  # end of central directory record
#: Flag bits a copied member may carry: 1-2 deflate options (informational), 3 sizes in a data
#: descriptor (the central directory has them too; the copy gets none), 11 UTF-8 name (set again from
#: the name).  Anything else (encryption, patched data ...) is refused.
_COPYABLE_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800
_VERSION = 20  # PKZIP 2.0: deflate and folders, what zipfile writes without ZIP64
#: New parts: a regular file readable by its owner only (they hold the same personal data).
_NEW_ATTR = 0o100600 << 16


def _dos_date_time(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    y, mo, d, h, mi, sec = date_time
    return (y - 1980) << 9 | mo << 5 | d, h << 11 | mi << 5 | sec // 2


class _ZipWriter:
    """The annotated copy's zip container, written here so unchanged members keep their compressed bytes.

    Why: zipfile has no raw copy, and going through it would inflate and deflate again every member
    nobody touched (the shared strings alone are 3.4 MB of XML in a 10,000-customer team file): the
    larger part of the annotation's CPU.  A copied member keeps its compressed bytes, CRC-32, sizes, method
    (stored or deflated), date and attributes; its local header is written anew (sizes in the header,
    no extra fields, no data descriptor).  No ZIP64: a copy that would need it raises
    FastPathUnsupported and goes through openpyxl.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.offset = 0
        self.central: list[bytes] = []

    def _header(self, name: str, flags: int, method: int, date_time: tuple[int, int, int, int, int, int],
                crc: int, csize: int, size: int, system: int, attr: int) -> None:
        if max(csize, size, self.offset) > zipfile.ZIP64_LIMIT or len(self.central) >= 0xFFFF:
            raise FastPathUnsupported("the annotated copy would need ZIP64")
        if name.isascii():
            raw_name = name.encode("ascii")
        else:
            raw_name, flags = name.encode("utf-8"), flags | 0x800
        dos_date, dos_time = _dos_date_time(date_time)
        self.fh.write(_LOCAL.pack(0x04034B50, _VERSION, flags, method, dos_time, dos_date, crc, csize, size,
                                  len(raw_name), 0) + raw_name)
        self.central.append(_CENTRAL.pack(0x02014B50, system << 8 | _VERSION, _VERSION, flags, method, dos_time,
                                          dos_date, crc, csize, size, len(raw_name), 0, 0, 0, 0, attr,
                                          self.offset) + raw_name)
        self.offset += _LOCAL.size + len(raw_name) + csize

    def copy(self, info: zipfile.ZipInfo, src: BinaryIO) -> None:
        """``info``'s member as it is stored in ``src``, located through its local header."""
        src.seek(info.header_offset)
        head = src.read(_LOCAL.size)
        if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
            raise FastPathUnsupported(f"{info.filename}: no local file header at the offset given")
        _, _, local_flags, *_, name_len, extra_len = _LOCAL.unpack(head)
        name = src.read(name_len).decode("utf-8" if local_flags & 0x800 else "cp437")
        if name != info.orig_filename:
            raise FastPathUnsupported(f"{info.filename}: the local header names {name!r}")
        src.seek(extra_len, 1)
        self._header(info.filename, info.flag_bits & 0x6, info.compress_type, info.date_time, info.CRC,
                     info.compress_size, info.file_size, info.create_system, info.external_attr)
        left = info.compress_size
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise FastPathUnsupported(f"{info.filename}: the member is truncated")
            self.fh.write(chunk)
            left -= len(chunk)

    def deflate(self, name: str, payload: bytes, date_time: tuple[int, int, int, int, int, int],
                system: int = 3, attr: int = _NEW_ATTR) -> None:
        """A new or replaced part, deflated at the level of every xlcrm writer (sheetxml.DEFLATE_LEVEL)."""
        co = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
        packed = co.compress(payload) + co.flush()
        self._header(name, 0, zipfile.ZIP_DEFLATED, date_time, zlib.crc32(payload), len(packed), len(payload),
                     system, attr)
        self.fh.write(packed)

    def close(self) -> None:
        directory = b"".join(self.central)
        if self.offset + len(directory) > zipfile.ZIP64_LIMIT:
            raise FastPathUnsupported("the annotated copy would need ZIP64")
        self.fh.write(directory)
        self.fh.write(_END.pack(0x06054B50, 0, 0, len(self.central), len(self.central), len(directory),
                                self.offset, 0))


# --- entry point ----------------------------------------------------------------------------------

def annotate_fast(result: ValidationResult, out: str | Path, *, source: BinaryIO | None = None,
                  password: str | None = None) -> Path:
    """Write the annotated copy of ``result``'s workbook to ``out`` by patching its package.

    ``source``: the workbook's plain bytes in memory (a decrypted input) instead of its file;
    ``password`` encrypts the copy before it reaches the disk (:func:`xlcrm.xlsx.writer.sealed`).
    Raises FastPathUnsupported (nothing written) when the workbook needs the openpyxl path; a
    malformed part met on the way (bad numbers, truncated deflate data ...) counts as such too.
    """
    try:
        return _annotate_fast(result, out, source, password)
    except (ValueError, KeyError, IndexError, AssertionError, UnicodeDecodeError, zlib.error,
            zipfile.BadZipFile, EOFError) as exc:
        raise FastPathUnsupported(f"{result.path}: {type(exc).__name__}: {exc}") from exc


def _annotate_fast(result: ValidationResult, out: str | Path, source: BinaryIO | None,
                   password: str | None) -> Path:
    from xlcrm.xlsx.writer import atomic_write, sealed

    out = Path(out)
    src: Any = result.path if source is None else source
    try:
        zin = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FastPathUnsupported(f"{src}: {exc}") from exc
    with zin:
        names = [i.filename for i in zin.infolist()]
        name_set = set(names)
        lower_names = {n.lower() for n in names}
        if len(name_set) != len(names) or any(i.file_size > _MAX_PART for i in zin.infolist()):
            raise FastPathUnsupported("duplicate or oversized zip members")
        if any(i.flag_bits & 0x1 for i in zin.infolist()):
            raise FastPathUnsupported("encrypted members")
        # Members are copied as stored (see _ZipWriter): only what any reader inflates, and no member
        # counted twice (overlapping members would multiply the copy, a zip bomb of another kind).
        if any(i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or i.flag_bits & ~_COPYABLE_FLAGS
               for i in zin.infolist()):
            raise FastPathUnsupported("members compressed other than stored or deflated, or unusual zip flags")
        size = Path(src).stat().st_size if source is None else len(source.getbuffer())  # type: ignore[attr-defined]
        if sum(i.compress_size for i in zin.infolist()) > size:
            raise FastPathUnsupported("zip members overlap")
        wb_part = "xl/workbook.xml"
        wb_rels_part = _rels_path(wb_part)
        if wb_part not in name_set or wb_rels_part not in name_set or "[Content_Types].xml" not in name_set \
                or "xl/styles.xml" not in name_set:
            raise FastPathUnsupported("not a plain SpreadsheetML package layout")
        wb_xml = _read_small(zin, wb_part)
        _require_unprefixed_root(wb_xml, b"workbook", wb_part)
        wb_root = _parse(wb_xml, wb_part)
        wb_rels = _read_small(zin, wb_rels_part)
        wb_rel_ids, wb_rel_map = _rel_ids(wb_rels, wb_rels_part)
        ct_xml = _read_small(zin, "[Content_Types].xml")
        _require_unprefixed_root(ct_xml, b"Types", "[Content_Types].xml")
        styles = _Styles(_read_small(zin, "xl/styles.xml"))

        sheets: dict[str, _Sheet] = {}
        sheet_parts: list[str] = []
        sheets_el = wb_root.find(f"{{{MAIN_NS}}}sheets")
        if sheets_el is None:
            raise FastPathUnsupported("xl/workbook.xml: no <sheets>")
        for el in sheets_el:
            rid = el.get(f"{{{REL_NS}}}id") or ""
            typ, target = wb_rel_map.get(rid, ("", ""))
            if typ == _T_WORKSHEET:
                part = _resolve(wb_part, target)
                if part not in name_set:
                    raise FastPathUnsupported(f"sheet part {part} is missing")
                sheets[el.get("name") or ""] = _Sheet(el.get("name") or "", part)
                sheet_parts.append(part)
        lang = result.workbook.lang
        title = SUMMARY_SHEET[lang]
        # A findings sheet from an earlier annotation is rewritten where it is.
        old_summary = sheets.pop(title).part if title in sheets else None
        if old_summary is None and title in {el.get("name") for el in sheets_el}:
            raise FastPathUnsupported(f"the workbook already has a {title} sheet")

        for f in result.findings:
            if not f.cell:
                continue
            if f.sheet not in sheets:
                raise FastPathUnsupported(f"finding on unknown or non-worksheet sheet {f.sheet!r}")
            sheets[f.sheet].cells.setdefault(f.cell, []).append(f)

        new_parts: dict[str, bytes] = {}
        replaced: dict[str, bytes] = {}
        overrides: list[tuple[str, str]] = []
        need_vml_default = False
        block = 0
        for sh in sheets.values():
            rels_part = _rels_path(sh.part)
            rels_data = zin.read(rels_part) if rels_part in name_set else None
            used, rel_map = _rel_ids(rels_data, rels_part)
            own = _own_comments(zin, sh.part, rel_map, name_set)
            if not sh.cells:
                if own:  # xlcrm's comments of an earlier annotation: nothing to say any more
                    block += 1
                    replaced[own[0]], replaced[own[1]] = _comments_xml({}), _vml_xml({}, block)
                continue
            if own is False:
                raise FastPathUnsupported(f"{sh.part} already has comments")
            data = zin.read(sh.part)
            index = _RowIndex(data)
            current = _existing_styles(data, set(sh.cells), sh.part, index)
            targets: dict[str, int] = {}
            for ref, fs in sh.cells.items():
                sev = ERROR if any(f.severity == ERROR for f in fs) else "warning"
                targets[ref] = styles.with_fill(current[ref] or 0, FILLS[sev])
            block += 1
            if own:
                replaced[sh.part] = _patch_sheet(data, targets, None, sh.part, index)
                replaced[own[0]], replaced[own[1]] = _comments_xml(sh.cells), _vml_xml(sh.cells, block)
                continue
            comments_part = _unique_name(lower_names, "xl/comments{}.xml")
            vml_part = _unique_name(lower_names, "xl/drawings/vmlDrawing{}.vml")
            rid_comments, rid_vml = _new_rid(used), _new_rid(used)
            replaced[sh.part] = _patch_sheet(data, targets, rid_vml, sh.part, index)
            replaced[rels_part] = _add_relationships(rels_data, [
                (rid_comments, _T_COMMENTS, posixpath.relpath(comments_part, posixpath.dirname(sh.part))),
                (rid_vml, _T_VML, posixpath.relpath(vml_part, posixpath.dirname(sh.part)))])
            if rels_data is None:
                new_parts[rels_part] = replaced.pop(rels_part)
            new_parts[comments_part] = _comments_xml(sh.cells)
            new_parts[vml_part] = _vml_xml(sh.cells, block)
            overrides.append(("/" + comments_part, _CT_COMMENTS))
            need_vml_default = True

        if old_summary is not None:
            replaced[old_summary] = _summary_xml(result, styles)
            position = [el.get("name") for el in sheets_el].index(title)
            replaced[wb_part] = _activate(wb_xml, position)
        else:
            summary_part = _unique_name(lower_names, "xl/worksheets/sheet{}.xml")
            new_parts[summary_part] = _summary_xml(result, styles)
            overrides.append(("/" + summary_part, _CT_WORKSHEET))
            summary_rid = _new_rid(wb_rel_ids)
            replaced[wb_rels_part] = _add_relationships(wb_rels, [
                (summary_rid, _T_WORKSHEET, posixpath.relpath(summary_part, posixpath.dirname(wb_part)))])
            wb_prefix = re.search(rb"xmlns:([\w.-]+)\s*=\s*[\"']" + re.escape(REL_NS.encode()) + rb"[\"']", wb_xml)
            if not wb_prefix:
                raise FastPathUnsupported("xl/workbook.xml does not declare the relationships namespace")
            replaced[wb_part] = _patch_workbook(wb_xml, title, summary_rid, wb_prefix.group(1))
        replaced["xl/styles.xml"] = styles.render()

        # No macros travel: the VBA project, its relationship and the macro-enabled content types go.
        dropped = {n for n in names if is_macro_part(n) or (n.endswith(".rels") and is_macro_part(
            n.replace("_rels/", "").removesuffix(".rels")))}
        if dropped:
            replaced[wb_rels_part] = re.sub(
                rb"<Relationship\b[^>]*?Type=\"[^\"]*/vbaProject\"[^>]*/>", b"", replaced[wb_rels_part])
            ct_xml = re.sub(rb"<(?:Override|Default)\b[^>]*?ContentType=\"application/vnd\.ms-office\.[^\"]*\"[^>]*/>",
                            b"", ct_xml)
            ct_xml = ct_xml.replace(b"application/vnd.ms-excel.sheet.macroEnabled.main+xml", _CT_MAIN.encode()) \
                .replace(b"application/vnd.ms-excel.template.macroEnabled.main+xml", _CT_MAIN.encode())
        ct_root = _parse(ct_xml, "[Content_Types].xml")
        has_vml = any(el.get("Extension", "").lower() == "vml" for el in ct_root)
        items = "".join(f'<Override PartName="{p}" ContentType="{t}"/>' for p, t in overrides)
        if need_vml_default and not has_vml:
            items = f'<Default Extension="vml" ContentType="{_CT_VML}"/>' + items
        end = ct_xml.rfind(b"</Types>")
        if end < 0:
            raise FastPathUnsupported("[Content_Types].xml has no </Types>")
        replaced["[Content_Types].xml"] = ct_xml[:end] + items.encode() + ct_xml[end:]

        # Other sheets lose tabSelected: only the findings sheet is selected.
        for part in sheet_parts:
            if part in replaced:
                continue
            with zin.open(part) as fh:
                head = fh.read(256 * 1024)
            sd = head.find(b"<sheetData")
            if re.search(rb"\stabSelected\s*=\s*[\"'](1|true)[\"']", head[:sd if sd >= 0 else len(head)]):
                replaced[part] = _clear_tab_selected(zin.read(part))

        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as tmp, sealed(tmp, password) as target, \
                (open(src, "rb") if source is None else contextlib.nullcontext(source)) as raw, \
                (open(target, "wb") if isinstance(target, Path) else contextlib.nullcontext(target)) as fh:
            zout = _ZipWriter(fh)
            for info in zin.infolist():
                if info.filename in dropped:
                    continue
                if info.filename in replaced:
                    zout.deflate(info.filename, replaced[info.filename], info.date_time, info.create_system,
                                 info.external_attr)
                else:
                    zout.copy(info, raw)
            for name, payload in new_parts.items():
                zout.deflate(name, payload, (1980, 1, 1, 0, 0, 0))
            zout.close()
    return out
