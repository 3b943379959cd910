"""The reader: tolerant of what people do to workbooks, one clear line for what it cannot read."""

from __future__ import annotations

import gc
import io
import zipfile
from datetime import date
from pathlib import Path

import openpyxl
import pytest
from helpers import libreoffice_convert
from hypothesis import given, settings
from hypothesis import strategies as st

from xlcrm.errors import UnreadableWorkbook
from xlcrm.intake.template import write_team_workbook
from xlcrm.schema import META_SHEET
from xlcrm.xlsx import reader
from xlcrm.xlsx.cells import column_letter
from xlcrm.xlsx.reader import read_workbook

ACME = {"kind": "corporate", "name": "株式会社アクメ", "phone": "03-1234-5678", "owner": "佐藤"}


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 51, 52, 701, 702)] == ["A", "Z", "AA", "AZ", "BA", "ZZ", "AAA"]


def test_reads_template_rows_with_addresses(make_book, schema) -> None:
    path = make_book({"customers": [ACME, {"kind": "individual", "name": "山田 花子", "owner": "佐藤"}],
                      "activities": [{"date": date(2024, 4, 1), "customer": "株式会社アクメ", "type": "call",
                                      "content": "挨拶", "handled_by": "佐藤"}]}, owner="佐藤")
    wb = read_workbook(path, schema)
    assert wb.meta.owner == "佐藤" and wb.meta.lang == "ja" and wb.meta.schema_version == schema.version
    cust = wb.sheets["customers"]
    assert cust.sheet_name == "顧客"
    assert list(cust.frame.index) == [2, 3]
    assert cust.frame.at[2, "name"] == "株式会社アクメ"
    assert cust.frame.at[2, "phone"] == "03-1234-5678"  # text cell: leading zero kept
    assert cust.cell("phone", 2) == f"{cust.letters['phone']}2"
    assert cust.letters["customer_id"] == "A"
    assert wb.sheets["activities"].frame.at[2, "date"] == date(2024, 4, 1)
    assert wb.rows_read == {"customers": 2, "contacts": 0, "activities": 1, "deals": 0, "todos": 0}


def test_blank_rows_and_rows_typed_below_the_table(make_book, schema) -> None:
    path = make_book({"customers": [ACME]})
    book = openpyxl.load_workbook(path)
    ws = book["顧客"]
    name_col = [c.value for c in ws[1]].index("顧客名") + 1
    kind_col = [c.value for c in ws[1]].index("区分") + 1
    ws.cell(40, name_col, "下に打った会社  ")  # far below the table, trailing spaces
    ws.cell(40, kind_col, "法人")
    book.save(path)
    frame = read_workbook(path, schema).sheets["customers"].frame
    assert list(frame.index) == [2, 40]
    assert frame.at[40, "name"] == "下に打った会社  "  # raw: trimming is normalisation's job


def test_english_headers_reordered_extra_column_and_title_row(tmp_path: Path, schema) -> None:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for e in schema:
        ws = book.create_sheet(e.en)
        ws.append(["Customer list 2024"] if e.key == "customers" else [])
        cols = list(reversed(e.columns))
        ws.append([f" {c.en} " for c in cols] + ["Favourite colour"])
        if e.key == "customers":
            values = {"kind": "Company", "name": "Acme", "owner": "Tanaka", "phone": "0312345678"}
            ws.append([values.get(c.key) for c in cols] + ["blue"])
    path = tmp_path / "english.xlsx"
    book.save(path)
    wb = read_workbook(path, schema)
    assert wb.meta.lang == "en" and not wb.meta.has_meta_sheet
    cust = wb.sheets["customers"]
    assert cust.header_row == 2
    assert list(cust.frame.index) == [3]
    assert cust.frame.at[3, "name"] == "Acme" and cust.frame.at[3, "kind"] == "Company"
    assert cust.letters["customer_id"] == column_letter(len(schema["customers"].columns) - 1)
    assert [(text) for _, text, _ in cust.extra_headers] == ["Favourite colour"]


def _clear_header(ws) -> None:
    ws.tables.clear()  # openpyxl would write the table's column names back into the header
    for cell in ws[1]:
        cell.value = None


def _rewrite(path: Path, edit) -> Path:
    book = openpyxl.load_workbook(path)
    edit(book)
    book.save(path)
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda b: b.remove(b["取引"]), "sheet 取引 (Deals) is missing"),
        (lambda b: b["顧客"].cell(1, 3, "会社名称"), "required column 顧客名 (Name) is missing"),
        (lambda b: b["顧客"].cell(1, 4, "顧客名"), "column 顧客名 appears twice"),
        (lambda b: b[META_SHEET].cell(1, 2, "9.0"), "made for schema version 9.0"),
        (lambda b: _clear_header(b["顧客"]), "sheet 顧客: no header row found"),
    ],
)
def test_structural_refusals(make_book, schema, edit, expected: str) -> None:
    path = _rewrite(make_book({"customers": [ACME]}), edit)
    with pytest.raises(UnreadableWorkbook) as exc:
        read_workbook(path, schema)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_renamed_header_hint(make_book, schema) -> None:
    path = _rewrite(make_book(), lambda b: b["顧客"].cell(1, 3, "顧客名（正式）"))
    with pytest.raises(UnreadableWorkbook, match=r"is C1 .顧客名（正式）. the renamed 顧客名"):
        read_workbook(path, schema)


def _bytes_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.xlsx", b"", "the file is empty"),
        ("csv.xlsx", "顧客名,電話番号\nアクメ,03-1234-5678\n".encode("cp932"), "a text/CSV file renamed"),
        ("html.xlsx", b"<html><table><tr><td>1</td></tr></table></html>", "an HTML/XML file renamed"),
        ("random.xlsx", bytes(range(256)) * 4, "not an Excel workbook"),
    ],
)
def test_not_a_workbook(tmp_path: Path, schema, name: str, data: bytes, expected: str) -> None:
    with pytest.raises(UnreadableWorkbook, match=expected):
        read_workbook(_bytes_file(tmp_path, name, data), schema)


def test_missing_file_and_folder(tmp_path: Path, schema) -> None:
    with pytest.raises(UnreadableWorkbook, match="file not found"):
        read_workbook(tmp_path / "nope.xlsx", schema)
    with pytest.raises(UnreadableWorkbook, match="is a folder"):
        read_workbook(tmp_path, schema)


def test_truncated_and_foreign_zip(make_book, tmp_path: Path, schema) -> None:
    data = make_book({"customers": [ACME]}).read_bytes()
    with pytest.raises(UnreadableWorkbook, match="damaged or incomplete"):
        read_workbook(_bytes_file(tmp_path, "cut.xlsx", data[: len(data) // 2]), schema)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("word/document.xml", "<w/>")
    with pytest.raises(UnreadableWorkbook, match="a Word/PowerPoint file"):
        read_workbook(_bytes_file(tmp_path, "doc.xlsx", buf.getvalue()), schema)


def test_decompression_bomb_is_refused(make_book, tmp_path: Path, schema) -> None:
    src = make_book({"customers": [ACME]})
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        zout.writestr("xl/media/padding.bin", b"\0" * (60 * 1024 * 1024))
    with pytest.raises(UnreadableWorkbook, match="decompression bomb"):
        read_workbook(bomb, schema)


def test_absurd_row_count(make_book, schema) -> None:
    path = make_book({"customers": [dict(ACME, name=f"会社{i}") for i in range(30)]})
    with pytest.raises(UnreadableWorkbook, match=r"has 31 rows .limit 20."):
        read_workbook(path, schema, max_rows=20)


def test_password_protected_workbook(make_book, tmp_path: Path, schema) -> None:
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = make_book({"customers": [ACME]})
    locked = tmp_path / "locked.xlsx"
    with open(plain, "rb") as src, open(locked, "wb") as dst:
        OOXMLFile(src).encrypt("himitsu", dst)
    with pytest.raises(UnreadableWorkbook, match="password-protected"):
        read_workbook(locked, schema)
    with pytest.raises(UnreadableWorkbook, match="wrong password"):
        read_workbook(locked, schema, password="wrong")
    assert read_workbook(locked, schema, password="himitsu").sheets["customers"].frame.at[2, "name"] == "株式会社アクメ"


def test_old_xls_is_refused(make_book, tmp_path: Path, schema) -> None:
    xls = libreoffice_convert(make_book({"customers": [ACME]}), tmp_path, "xls")
    with pytest.raises(UnreadableWorkbook, match=r"old \.xls .* save it as Excel Workbook"):
        read_workbook(xls, schema)


def test_lock_file_gives_a_warning_not_a_refusal(make_book, schema) -> None:
    path = make_book({"customers": [ACME]})
    (path.parent / f"~${path.name}").write_bytes(b"\0" * 165)
    wb = read_workbook(path, schema)
    assert any("open in Excel" in w for w in wb.warnings)
    assert len(wb.sheets["customers"].frame) == 1


def test_formula_cells_are_found(make_book, schema) -> None:
    path = make_book({"customers": [ACME]})
    _rewrite(path, lambda b: b["顧客"].cell(2, 11, "=CONCAT(\"03\",\"1234\")"))
    sd = read_workbook(path, schema).sheets["customers"]
    assert sd.formulas == {"K2": 'CONCAT("03","1234")'}


def test_english_template_round_trip(tmp_path: Path, schema) -> None:
    path = write_team_workbook(tmp_path / "en.xlsx", schema, owner="Tanaka", lang="en",
                               rows={"customers": [dict(ACME, name="Acme Ltd.", owner="Tanaka")]})
    wb = read_workbook(path, schema)
    assert wb.meta.lang == "en" and wb.sheets["customers"].sheet_name == "Customers"
    assert wb.sheets["customers"].frame.at[2, "kind"] == "Company"


# --- the fast paths: each must answer exactly what the plain code it replaced answers --------------

_XML_BITS = [b"<", b">", b"/", b":", b"f", b"x", b"_", b"9", b" ", b"\t", b"\n", b"\x0b", b"-", b"\xe3\x81\x82",
             b"<f>", b"<x:f ", b"<formula1>", b"<c r=\"A1\">", b"<v>1</v>", b"xmlns:f"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_XML_BITS), max_size=30).map(b"".join))
def test_formula_scan_agrees_with_the_regex(raw: bytes) -> None:
    assert reader._has_formula(raw) == (reader._FORMULA_RE.search(raw) is not None)


@pytest.mark.parametrize("raw", [b"f" * 30_000, b"f" * 30_000 + b"<f>", b"<x:f/" + b"f" * 30_000,
                                 b"f" * 9_998 + b"<a1:f>", b"<:f>", b"<f", b"f>", b"a:f/"])
def test_formula_scan_on_sheets_full_of_f(raw: bytes) -> None:
    """Past 10,000 "f" (inline text) the scan hands over to the regex; the answer is the same."""
    assert reader._has_formula(raw) == (reader._FORMULA_RE.search(raw) is not None)


def test_frame_keeps_rows_with_text_only_under_an_extra_header(tmp_path: Path, schema) -> None:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for e in schema:
        ws = book.create_sheet(e.ja)
        ws.append([c.ja for c in e.columns] + ["好きな色"])
    ws = book["顧客"]
    width = len(schema.entity("customers").columns)
    ws.append(["", "法人", "株式会社アクメ"] + [""] * (width - 3) + ["赤"])
    ws.append([None] * (width + 1))
    ws.append([None] * width + ["青"])  # nothing but the extra column
    ws.append(["", "個人", 312345678.0])
    path = tmp_path / "extra.xlsx"
    book.save(path)
    frame = read_workbook(path, schema).sheets["customers"].frame
    assert list(frame.index) == [2, 4, 5]
    assert list(frame.columns) == schema.entity("customers").keys
    assert frame.dtypes.eq(object).all()
    assert frame.at[2, "name"] == "株式会社アクメ" and frame.at[2, "phone"] is None
    assert frame.loc[4].isna().all()
    assert frame.at[5, "name"] == 312345678.0


def test_paused_gc_nests_and_restores_the_collector() -> None:
    assert gc.isenabled()
    with reader.paused_gc():
        assert not gc.isenabled()
        with reader.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause is still on
    assert gc.isenabled()
    with pytest.raises(RuntimeError), reader.paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with reader.paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
