"""The zip-patching annotated copy matches the openpyxl one, on real team workbooks with planted errors."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import python_calamine
from defusedxml import ElementTree as DET
from helpers import libreoffice_convert
from openpyxl.comments import Comment

from xlcrm.intake.validate import Finding, _annotate_openpyxl, annotate, validate_workbook
from xlcrm.xlsx.annotate import (
    FastPathUnsupported,
    _existing_styles,
    _patch_sheet,
    _RowIndex,
    annotate_fast,
)
from xlcrm.xlsx.cells import column_index
from xlcrm.xlsx.sheetxml import DEFLATE_LEVEL

TODAY = date(2026, 11, 23)
CO = {"kind": "corporate", "name": "株式会社アクメ", "owner": "佐藤"}
PERSON = {"kind": "individual", "name": "山田 花子", "owner": "佐藤"}
NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def planted(make_book, lang: str = "ja") -> Path:
    return make_book({
        "customers": [
            dict(CO, phone=312345678, email="bad@", corporate_number="7000012050003", birthday=date(1990, 1, 1)),
            dict(PERSON, postal_code="12345", employees=-3, industry="=1+1"),
            {"kind": "法人", "owner": "佐藤", "kana": "カブシキガイシャエックス"},  # blank required 顧客名
            dict(CO, name="A&B <C>", industry="x\"y'&"),
        ],
        "activities": [
            {"date": "2024/2/30", "customer": "株式会社アクメ", "type": "call", "content": "x"},
            {"date": date(2026, 11, 30), "customer": "株式会社アクメ", "type": "complaint", "content": "遅延"},
            {"date": date(2024, 4, 1), "customer": "アクメ", "type": "inquiry", "content": "q"},
        ],
        "deals": [{"customer": "株式会社アクメ", "title": "A", "quantity": 2, "unit_price": 1000,
                   "amount": 3000, "phase": "won"}],  # blank required 成約日 in a date column
        "todos": [{"due": date(2026, 1, 1), "customer": "株式会社アクメ", "content": "x", "status": "完了"}],
    }, lang=lang)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def marks(path: Path) -> dict[str, Any]:
    """Everything the annotation adds, as openpyxl sees it (ARGB alpha and link form normalised)."""
    book = openpyxl.load_workbook(path)
    out: dict[str, Any] = {"sheets": book.sheetnames, "active": book.active.title,
                           "selected": [ws.sheet_view.tabSelected for ws in book.worksheets]}
    for ws in book.worksheets[1:]:
        for row in ws.iter_rows(min_row=2):
            for c in row:
                if c.fill.fill_type == "solid" and c.fill.fgColor.rgb[-6:] in ("FFC7CE", "FFEB9C"):
                    out[f"{ws.title}!{c.coordinate} fill"] = c.fill.fgColor.rgb[-6:]
                if c.comment:
                    out[f"{ws.title}!{c.coordinate} comment"] = (c.comment.text, c.comment.author)
    summary = book.worksheets[0]
    out["rows"] = [tuple("" if v is None else v for v in r) for r in summary.iter_rows(values_only=True)]
    out["links"] = [(c.coordinate, c.hyperlink.location or (c.hyperlink.target or "").lstrip("#"))
                    for r in summary.iter_rows() for c in r if c.hyperlink]
    out["row fills"] = [summary.cell(r, 1).fill.fgColor.rgb[-6:] for r in range(2, summary.max_row + 1)]
    out["bold header"] = [c.font.b for c in summary[1]]
    out["freeze"] = summary.freeze_panes
    out["widths"] = {k: v.width for k, v in summary.column_dimensions.items() if k in "ABCDEF"}
    out["print titles"] = {ws.title: ws.print_title_rows for ws in book.worksheets if ws.print_title_rows}
    return out


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_fast_copy_matches_openpyxl_copy(make_book, schema, tmp_path: Path, lang: str) -> None:
    path = planted(make_book, lang)
    result = validate_workbook(path, schema, today=TODAY)
    assert len(result.findings) >= 15
    fast = annotate_fast(result, tmp_path / "fast.xlsx")
    slow = _annotate_openpyxl(result, tmp_path / "slow.xlsx")
    got, want = marks(fast), marks(slow)
    selected = got.pop("selected")
    want.pop("selected")  # openpyxl leaves the old sheet selected too (grouped sheets); checked below
    assert got == want
    assert got["sheets"][0] == ("エラー一覧" if lang == "ja" else "Errors") and got["active"] == got["sheets"][0]
    # Exactly one selected tab: Excel would otherwise open with the sheets grouped.
    assert [bool(s) for s in selected] == [True] + [False] * (len(got["sheets"]) - 1)
    # Sheet-local names (print titles) follow their sheet although every sheet moved one place right.
    assert got["print titles"] == dict.fromkeys(got["sheets"][1:6], "$1:$1")
    n_cells = len({(f.sheet, f.cell) for f in result.findings if f.cell})
    assert sum(k.endswith(" fill") for k in got if isinstance(k, str)) == n_cells


def test_blank_required_cells_are_created_filled_and_keep_the_column_format(make_book, schema,
                                                                          tmp_path: Path) -> None:
    path = planted(make_book)
    result = validate_workbook(path, schema, today=TODAY)
    blank = {(f.sheet, f.cell): f for f in result.findings if f.value is None and f.rule.startswith("required")}
    assert ("顧客", "C4") in blank and any(s == "取引" for s, _ in blank)
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    book = openpyxl.load_workbook(out)
    for (sheet, cell), f in blank.items():
        c = book[sheet][cell]
        assert c.value is None and c.fill.fgColor.rgb.endswith("FFC7CE"), (sheet, cell)
        assert f.message in c.comment.text
    deal_date = next(cell for s, cell in blank if s == "取引")
    assert book["取引"][deal_date].number_format == "yyyy/mm/dd"  # typed later, still a date
    # Inserted cells keep SpreadsheetML order: rows ascending, cells ascending within a row.
    with zipfile.ZipFile(out) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/sheet"):
                rows = DET.fromstring(z.read(name)).find(f"{NS}sheetData")
                rs = [int(r.get("r")) for r in rows]
                assert rs == sorted(set(rs)), name
                for r in rows:
                    cols = [column_index("".join(ch for ch in c.get("r") if ch.isalpha())) for c in r]
                    assert cols == sorted(set(cols)), (name, r.get("r"))


def test_cells_in_missing_rows_and_after_the_last_cell_are_inserted(make_book, schema, tmp_path: Path) -> None:
    path = make_book({"customers": [dict(CO, phone=312345678)]})
    result = validate_workbook(path, schema, today=TODAY)
    extra = [("U2", 2), ("B9", 9), ("A40", 40), ("T9", 9)]  # after R2; rows 9 and 40 do not exist
    for cell, row in extra:
        result.findings.append(dataclasses.replace(result.findings[0], cell=cell, row=row, rule="x",
                                                   severity="warning", message=f"note {cell}"))
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    ws = openpyxl.load_workbook(out)["顧客"]
    for cell, _ in extra:
        assert ws[cell].fill.fgColor.rgb.endswith("FFEB9C") and ws[cell].comment.text == f"• note {cell}"
    assert ws["C2"].value == "株式会社アクメ" and ws["C2"].fill.fill_type is None  # neighbours untouched
    # A cell that did not exist takes its column's style, as a value typed there in Excel would.
    assert ws["U2"].number_format == openpyxl.load_workbook(path)["顧客"].column_dimensions["U"].number_format


def test_annotated_copy_revalidates_to_the_same_findings(make_book, schema, tmp_path: Path) -> None:
    path = planted(make_book)
    result = validate_workbook(path, schema, today=TODAY)
    again = validate_workbook(annotate_fast(result, tmp_path / "fast.xlsx"), schema, today=TODAY)
    assert [(f.address, f.rule, f.message) for f in again.findings] == \
        [(f.address, f.rule, f.message) for f in result.findings]


def test_original_is_untouched_and_other_parts_are_copied_verbatim(make_book, schema, tmp_path: Path) -> None:
    path = planted(make_book)
    before = _sha(path)
    result = validate_workbook(path, schema, today=TODAY)
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    assert _sha(path) == before
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(out) as b:
        changed = {n for n in a.namelist() if a.read(n) != b.read(n)}
        assert set(a.namelist()) < set(b.namelist())
    assert "xl/theme/theme1.xml" not in changed and "xl/sharedStrings.xml" not in changed
    assert {"xl/workbook.xml", "xl/styles.xml", "[Content_Types].xml"} <= changed
    assert not any(n.startswith("xl/tables/") for n in changed)


def test_formula_like_text_stays_text(make_book, schema, tmp_path: Path) -> None:
    path = planted(make_book)
    result = validate_workbook(path, schema, today=TODAY)
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    ws = openpyxl.load_workbook(out).worksheets[0]
    cells = [r[4] for r in ws.iter_rows(min_row=2) if r[4].value == "=1+1"]
    assert cells and all(c.data_type == "s" and c.quotePrefix for c in cells)
    assert any(r[4].value == "x\"y'&" for r in ws.iter_rows(min_row=2))  # escaped, read back exactly
    with zipfile.ZipFile(out) as z:
        assert b"<f>" not in z.read(z.namelist()[-1]) and b"<f " not in z.read(z.namelist()[-1])


def test_libreoffice_opens_the_copy(make_book, schema, tmp_path: Path) -> None:
    path = planted(make_book)
    result = validate_workbook(path, schema, today=TODAY)
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    pdf = libreoffice_convert(out, tmp_path / "pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    # Round-trip through LibreOffice: it really read the comments, fills and the findings sheet.
    back = openpyxl.load_workbook(libreoffice_convert(out, tmp_path / "xlsx", "xlsx"))
    f = next(f for f in result.findings if f.cell == "C4")
    assert back.sheetnames[0] == "エラー一覧" and back.worksheets[0].max_row == len(result.findings) + 1
    assert f.message in back[f.sheet][f.cell].comment.text
    assert back[f.sheet][f.cell].fill.fgColor.rgb.endswith("FFC7CE")


def test_sheet_with_comments_falls_back_to_openpyxl(make_book, schema, tmp_path: Path) -> None:
    path = make_book({"customers": [dict(CO, phone=312345678)]})
    book = openpyxl.load_workbook(path)
    book["顧客"]["T2"].comment = Comment("担当者のメモ", "佐藤")
    book.save(path)
    result = validate_workbook(path, schema, today=TODAY)
    with pytest.raises(FastPathUnsupported):
        annotate_fast(result, tmp_path / "fast.xlsx")
    assert not (tmp_path / "fast.xlsx").exists()
    out = annotate(result, tmp_path / "out.xlsx")  # the public entry point still delivers
    ws = openpyxl.load_workbook(out)["顧客"]
    assert ws["T2"].comment.text == "担当者のメモ"
    assert "先頭の0" in ws[result.findings[0].cell].comment.text


def test_annotating_an_annotated_copy_replaces_the_findings_sheet(make_book, schema, tmp_path: Path) -> None:
    path = make_book({"customers": [dict(CO, phone=312345678)]})
    first = annotate(validate_workbook(path, schema, today=TODAY), tmp_path / "a1.xlsx")
    second = annotate(validate_workbook(first, schema, today=TODAY), tmp_path / "a2.xlsx")
    book = openpyxl.load_workbook(second)
    assert book.sheetnames.count("エラー一覧") == 1 and book.worksheets[0].max_row == 2


def test_findings_without_a_cell_only_go_to_the_list(make_book, schema, tmp_path: Path) -> None:
    path = make_book({"customers": [dict(CO, phone=312345678)]})
    result = validate_workbook(path, schema, today=TODAY)
    result.findings.append(Finding(str(path), "顧客", "", 0, "", "", "customers", None, "x", "warning", "全体"))
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    ws = openpyxl.load_workbook(out).worksheets[0]
    assert [r[5] for r in ws.iter_rows(min_row=2, values_only=True)][-1] == "全体"
    assert ws.cell(3, 3).hyperlink is None


def test_workbooks_saved_by_openpyxl_and_libreoffice_are_patched_too(make_book, schema, tmp_path: Path) -> None:
    """Other producers lay the XML out differently (attribute order, row styles, rels, dimension)."""
    path = planted(make_book)
    book = openpyxl.load_workbook(path)
    book.save(tmp_path / "openpyxl.xlsx")
    sources = [tmp_path / "openpyxl.xlsx", libreoffice_convert(path, tmp_path / "lo", "xlsx")]
    for src in sources:
        result = validate_workbook(src, schema, today=TODAY)
        assert any(f.cell == "C4" and f.sheet == "顧客" for f in result.findings)
        got = marks(annotate_fast(result, tmp_path / f"fast-{src.parent.name}.xlsx"))
        want = marks(_annotate_openpyxl(result, tmp_path / f"slow-{src.parent.name}.xlsx"))
        got.pop("selected"), want.pop("selected")
        assert got == want, src


def test_openpyxl_fallback_selects_only_the_list(make_book, schema, tmp_path) -> None:
    """Two selected tabs open grouped in Excel (typing edits both), so only エラー一覧 is selected."""
    import openpyxl

    from xlcrm.intake.validate import _annotate_openpyxl, validate_workbook

    path = make_book({"customers": [{"kind": "corporate", "name": "株式会社アクメ", "phone": 312345678}]})
    out = _annotate_openpyxl(validate_workbook(path, schema), tmp_path / "fallback.xlsx")
    book = openpyxl.load_workbook(out)
    assert [ws.title for ws in book.worksheets if ws.sheet_view.tabSelected] == ["エラー一覧"]


# --- the zip container: unchanged members are copied as they are stored ------------------------------

class _NoSeek:
    """A write-only stream: zipfile then writes every member with a data descriptor (flag bit 3)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def write(self, data: bytes) -> int:
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _rezip(src: Path, dst: Path, *, stored: bool = False, streamed: bool = False,
           other: dict[str, int] | None = None) -> Path:
    """The same members with the same dates and attributes, stored / streamed / compressed otherwise."""
    with zipfile.ZipFile(src) as zin, open(dst, "wb") as raw:
        members = [(i, zin.read(i)) for i in zin.infolist()]
        with zipfile.ZipFile(_NoSeek(raw) if streamed else raw, "w") as zout:
            for n, (info, data) in enumerate(members):
                target = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                target.external_attr = info.external_attr
                target.compress_type = zipfile.ZIP_DEFLATED
                if stored and (n % 2 == 0 or info.filename == "xl/sharedStrings.xml"):
                    target.compress_type = zipfile.ZIP_STORED
                target.compress_type = (other or {}).get(info.filename, target.compress_type)
                zout.writestr(target, data)
    return dst


def _source(kind: str, make_book, tmp_path: Path) -> Path:
    path = planted(make_book)
    dst = tmp_path / f"{kind}.xlsx"
    if kind == "openpyxl":
        openpyxl.load_workbook(path).save(dst)
        return dst
    if kind == "stored":
        return _rezip(path, dst, stored=True)
    if kind == "streamed":
        return _rezip(path, dst, streamed=True)
    return path


def _raw(path: Path, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes as stored in the file, found through its local header (not through zipfile)."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
        assert head[:4] == b"PK\x03\x04"
        fh.seek(int.from_bytes(head[26:28], "little") + int.from_bytes(head[28:30], "little"), 1)
        return fh.read(info.compress_size)


def _calamine(path: Path) -> dict[str, list[list[Any]]]:
    book = python_calamine.CalamineWorkbook.from_path(str(path))
    return {name: book.get_sheet_by_name(name).to_python() for name in book.sheet_names}


@pytest.mark.parametrize("kind", ["xlsxwriter", "openpyxl", "stored", "streamed"])
def test_unchanged_members_are_copied_as_stored(make_book, schema, tmp_path: Path, kind: str) -> None:
    src = _source(kind, make_book, tmp_path)
    with zipfile.ZipFile(src) as z:
        infos = z.infolist()
        if kind == "stored":
            assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
        if kind == "streamed":
            assert all(i.flag_bits & 0x08 for i in infos)
        for name in z.namelist():  # the producers' row layout takes the indexed path, not the walk
            if name.startswith("xl/worksheets/sheet"):
                data = z.read(name)
                assert _RowIndex(data).rows(0, len(data)), (kind, name)
    result = validate_workbook(src, schema, today=TODAY)
    out = annotate_fast(result, tmp_path / "fast.xlsx")
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(out) as b:
        assert b.testzip() is None
        got = {i.filename: i for i in b.infolist()}
        assert b.namelist()[:len(infos)] == a.namelist()  # same order, new parts after
        unchanged = []
        for i in a.infolist():
            o = got[i.filename]
            assert (o.date_time, o.external_attr) == (i.date_time, i.external_attr), i.filename
            assert not o.flag_bits & 0x08
            if b.read(o) == a.read(i):
                unchanged.append(i.filename)
                assert (o.compress_type, o.CRC, o.compress_size, o.file_size) == \
                    (i.compress_type, i.CRC, i.compress_size, i.file_size), i.filename
                assert _raw(out, o) == _raw(src, i), i.filename
            else:  # replaced: deflated at the level of every xlcrm writer
                co = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
                assert _raw(out, o) == co.compress(b.read(o)) + co.flush(), i.filename
    infos_names = [i.filename for i in infos]
    assert {"xl/theme/theme1.xml", "docProps/core.xml"} <= set(unchanged)
    assert "xl/sharedStrings.xml" in unchanged or "xl/sharedStrings.xml" not in infos_names  # openpyxl: none
    changed = set(infos_names) - set(unchanged)
    assert {"xl/workbook.xml", "xl/styles.xml", "[Content_Types].xml"} <= changed
    assert all(n.startswith(("xl/worksheets/", "xl/_rels/", "xl/workbook.xml", "xl/styles.xml", "[Content_Types]"))
               for n in changed), changed
    if kind == "stored":
        assert any(got[n].compress_type == zipfile.ZIP_STORED for n in unchanged)
    assert len(infos_names) < len(got)
    # Both readers see the marks and the data: openpyxl as the openpyxl path writes them, calamine
    # the same cell values as in the source plus the findings sheet first.
    fast, slow = marks(out), marks(_annotate_openpyxl(result, tmp_path / "slow.xlsx"))
    fast.pop("selected"), slow.pop("selected")
    assert fast == slow
    values, before = _calamine(out), _calamine(src)
    title = fast["sheets"][0]
    assert list(values) == [title, *before]
    assert [tuple(r) for r in values.pop(title)] == fast["rows"]
    assert values == before


def test_members_compressed_otherwise_go_through_openpyxl(make_book, schema, tmp_path: Path) -> None:
    path = planted(make_book)
    result = validate_workbook(path, schema, today=TODAY)
    bz = _rezip(path, tmp_path / "bzip2.xlsx", other={"xl/theme/theme1.xml": zipfile.ZIP_BZIP2})
    moved = dataclasses.replace(result, workbook=dataclasses.replace(result.workbook, path=bz))
    with pytest.raises(FastPathUnsupported, match="stored or deflated"):
        annotate_fast(moved, tmp_path / "fast.xlsx")
    assert not (tmp_path / "fast.xlsx").exists()
    assert marks(annotate(moved, tmp_path / "out.xlsx"))["sheets"][0] == "エラー一覧"


def test_rows_found_by_index_or_by_walking_give_the_same_sheet(make_book, schema, tmp_path: Path) -> None:
    """The indexed search is a shortcut for the plain row layout; any other layout walks every row."""
    path = make_book({"customers": [dict(CO, phone=312345678, name=f"株式会社{i}") for i in range(6)]})
    with zipfile.ZipFile(path) as z:
        part, data = next((n, z.read(n)) for n in z.namelist()
                          if n.startswith("xl/worksheets/sheet") and b'<row r="7"' in z.read(n))
    # existing cells, a cell after the row's last one, missing rows in the middle and after the end
    targets = {"A1": 11, "B2": 12, "C4": 13, "Z3": 14, "D7": 15, "A9": 16, "B40": 17, "C40": 18}
    quoted = re.sub(rb'<row r="(\d+)"', rb"<row r='\1'", data)
    assert _RowIndex(data).rows(0, len(data)) and _RowIndex(quoted).rows(0, len(quoted)) is None
    plain = _patch_sheet(data, targets, "rId9", part)
    walked = _patch_sheet(quoted, targets, "rId9", part)
    assert re.sub(rb"<row r='(\d+)'", rb'<row r="\1"', walked) == plain
    assert _existing_styles(data, set(targets), part) == _existing_styles(quoted, set(targets), part)
    cells = {c.get("r"): c.get("s") for c in DET.fromstring(plain).iter(f"{NS}c")}
    assert {ref: cells[ref] for ref in targets} == {ref: str(xf) for ref, xf in targets.items()}
    rows = [int(r.get("r")) for r in DET.fromstring(plain).iter(f"{NS}row")]
    assert rows == sorted(set(rows)) and {9, 40} <= set(rows)
    # Rows out of order (here row 2 twice) are not indexed; the walk refuses them.
    swapped = data.replace(b'<row r="3"', b'<row r="2"', 1)
    assert _RowIndex(swapped).rows(0, len(swapped)) is None
    with pytest.raises(FastPathUnsupported, match="out of order"):
        _patch_sheet(swapped, {"B5": 3}, "rId9", part)
