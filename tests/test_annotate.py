"""The zip-patching annotated copy matches the openpyxl one, on real team workbooks with planted errors."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from defusedxml import ElementTree as DET
from helpers import libreoffice_convert
from openpyxl.comments import Comment

from xlcrm.annotate import FastPathUnsupported, annotate_fast, col_index
from xlcrm.validate import Finding, _annotate_openpyxl, annotate, validate_workbook

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
                    cols = [col_index("".join(ch for ch in c.get("r") if ch.isalpha())) for c in r]
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

    from xlcrm.validate import _annotate_openpyxl, validate_workbook

    path = make_book({"customers": [{"kind": "corporate", "name": "株式会社アクメ", "phone": 312345678}]})
    out = _annotate_openpyxl(validate_workbook(path, schema), tmp_path / "fallback.xlsx")
    book = openpyxl.load_workbook(out)
    assert [ws.title for ws in book.worksheets if ws.sheet_view.tabSelected] == ["エラー一覧"]
