"""xlcrm.xlsx.writer: formula-safe text, IME modes on validations, atomic and reproducible writes."""

from __future__ import annotations

import datetime as dt
import math
import os
import stat
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from defusedxml import ElementTree

from xlcrm.errors import XlcrmError
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.xlsx.writer import (
    MAX_TEXT,
    TableColumn,
    XlcrmWorkbook,
    atomic_write,
    close_workbook,
    entity_rows,
    fit_text,
    looks_like_formula,
    open_workbook,
    safe_text,
    write_table,
    write_text,
)

NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
# ECMA-376 Part 1, CT_DataValidation, attribute declaration order.
ECMA_DV_ORDER = ["type", "errorStyle", "imeMode", "operator", "allowBlank", "showDropDown",
                 "showInputMessage", "showErrorMessage", "errorTitle", "error", "promptTitle", "prompt",
                 "sqref"]


def first_sheet_xml(path: Path) -> ElementTree.Element:
    with zipfile.ZipFile(path) as zf:
        return ElementTree.fromstring(zf.read("xl/worksheets/sheet1.xml"))


def one_column_book(path: Path, values: list, **col: object) -> Path:
    wb = open_workbook(path, created=dt.datetime(2026, 1, 1))
    ws = wb.add_worksheet("S")
    write_table(wb, ws, "tbl_s", [TableColumn(header="V", **col)], [[v] for v in values])  # type: ignore[arg-type]
    close_workbook(wb)
    return path


@pytest.mark.parametrize(("text", "risky"), [
    ("=1+1", True), ("@SUM(A1)", True), ("-2", True), ("+81-3-1234-5678", True),
    ("  =HYPERLINK(\"x\")", True), ("\u3000=1", True), ("\t1", True), ("\r=1", True),
    ("＝１＋１", True), ("－5", True),
    ("03-1234-5678", False), ("株式会社=テスト", False), ("a-b", False), ("", False), ("   ", False),
    ("E=mc2", False),
])
def test_looks_like_formula(text: str, risky: bool) -> None:
    assert looks_like_formula(text) is risky


def test_safe_text_keeps_text_and_renders_other_values() -> None:
    assert safe_text("=1+1") == "=1+1"  # unchanged: neutralised by the cell style, not the text
    assert safe_text(None) == ""
    assert safe_text(3.0) == "3"
    assert safe_text(3.5) == "3.5"
    assert safe_text(dt.date(2024, 4, 1)) == "2024-04-01"
    assert safe_text(True) == "TRUE"


def test_formula_like_text_is_stored_as_a_quote_prefixed_string(tmp_path: Path) -> None:
    values = ["=1+1", "@SUM(A1)", "-2", " =cmd|' /C calc'!A0", "\t=1", "plain", "03-1234-5678"]
    path = one_column_book(tmp_path / "f.xlsx", values)
    ws = openpyxl.load_workbook(path)["S"]
    for row, expected in enumerate(values, start=2):
        cell = ws.cell(row, 1)
        assert cell.data_type == "s", expected
        assert cell.value == expected
        assert bool(cell.quotePrefix) is looks_like_formula(expected), expected
    # No formula element anywhere in the sheet.
    root = first_sheet_xml(path)
    assert root.findall(".//m:f", NS) == []
    assert len(root.findall(".//m:c[@t='s']", NS)) == len(values) + 1  # + header


def test_write_text_outside_tables(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    wb = open_workbook(path)
    ws = wb.add_worksheet("S")
    write_text(ws, 0, 0, "=A2", wb)
    write_text(ws, 1, 0, 42, wb, bold=True)
    close_workbook(wb)
    ws2 = openpyxl.load_workbook(path)["S"]
    assert (ws2["A1"].value, ws2["A1"].data_type, ws2["A1"].quotePrefix) == ("=A2", "s", True)
    assert (ws2["A2"].value, ws2["A2"].data_type, ws2["A2"].font.b) == ("42", "s", True)


def test_values_are_typed_by_python_type(tmp_path: Path) -> None:
    values = [dt.date(2024, 4, 1), dt.datetime(2024, 4, 2, 9, 30), 12, 2.5, Decimal("3.25"), None, "",
              math.nan, "0312345678", True]
    path = one_column_book(tmp_path / "v.xlsx", values, num_format="@")
    ws = openpyxl.load_workbook(path)["S"]
    got = [ws.cell(r, 1).value for r in range(2, len(values) + 2)]
    assert got[0] == dt.datetime(2024, 4, 1)
    assert ws.cell(2, 1).number_format == "yyyy/mm/dd"  # a date in a text column still shows as a date
    assert got[1] == dt.datetime(2024, 4, 2, 9, 30)
    assert got[2:5] == [12, 2.5, 3.25]
    assert got[5:8] == [None, None, None]  # None, "" and NaN stay blank
    assert got[8] == "0312345678" and ws.cell(10, 1).number_format == "@"
    assert got[9] is True


def test_choice_labels_replace_keys(tmp_path: Path) -> None:
    path = one_column_book(tmp_path / "c.xlsx", ["yes", "no", "legacy value"],
                           labels={"yes": "可", "no": "不可"})
    ws = openpyxl.load_workbook(path)["S"]
    assert [ws.cell(r, 1).value for r in (2, 3, 4)] == ["可", "不可", "legacy value"]


def test_table_and_validation_cover_the_rows_below(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    wb = open_workbook(path)
    ws = wb.add_worksheet("S")
    cols = [TableColumn(header="A", validation={"validate": "length", "criteria": "<=", "value": 5,
                                                "ime_mode": "fullKatakana"}),
            TableColumn(header="B", system=True)]
    n = write_table(wb, ws, "tbl_s", cols, [["x", "y"]] * 3, validation_rows=100)
    close_workbook(wb)
    assert n == 3
    ws2 = openpyxl.load_workbook(path)["S"]
    assert ws2.tables["tbl_s"].ref == "A1:B4"
    (dv,) = ws2.data_validations.dataValidation
    assert str(dv.sqref) == "A2:A104" and dv.imeMode == "fullKatakana" and dv.formula1 == "5"
    assert ws2.freeze_panes == "A2"


def test_ime_mode_attribute_order_follows_ecma(tmp_path: Path) -> None:
    path = tmp_path / "ime.xlsx"
    wb = open_workbook(path)
    ws = wb.add_worksheet("S")
    ws.data_validation(1, 0, 10, 0, {"validate": "integer", "criteria": ">=", "value": 0,
                                     "error_type": "warning", "ime_mode": "halfAlpha",
                                     "error_title": "t", "error_message": "e", "input_title": "p",
                                     "input_message": "m"})
    ws.data_validation(1, 1, 10, 1, {"validate": "any", "ime_mode": "hiragana"})  # IME only
    ws.data_validation(1, 2, 10, 2, {"validate": "list", "source": ["a", "b"], "ime_mode": "noControl"})
    close_workbook(wb)
    dvs = first_sheet_xml(path).findall(".//m:dataValidation", NS)
    assert [dv.get("imeMode") for dv in dvs] == ["halfAlpha", "hiragana", None]
    for dv in dvs:
        names = list(dv.attrib)
        assert names == sorted(names, key=ECMA_DV_ORDER.index)
    assert dvs[0].get("operator") == "greaterThanOrEqual" and dvs[0].get("errorStyle") == "warning"
    assert dvs[1].get("type") is None and dvs[1].get("prompt") is None  # "any", no placeholder prompt
    assert dvs[1].get("sqref") == "B2:B11"
    opened = openpyxl.load_workbook(path)["S"].data_validations.dataValidation
    assert [dv.imeMode for dv in opened] == ["halfAlpha", "hiragana", None]


def test_invalid_validation_options_raise(tmp_path: Path) -> None:
    wb = open_workbook(tmp_path / "x.xlsx")
    ws = wb.add_worksheet("S")
    with pytest.raises(ValueError, match="ime_mode"):
        ws.data_validation(0, 0, 1, 0, {"validate": "any", "ime_mode": "katakana"})
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="refused"):
        ws.data_validation(0, 0, 1, 0, {"validate": "whole"})  # no criteria
    close_workbook(wb)


def test_fit_text_counts_utf16_units() -> None:
    assert fit_text("顧客名", 32) == "顧客名"
    cut = fit_text("あ" * 40, 32)
    assert len(cut.encode("utf-16-le")) // 2 <= 32 and cut.endswith("…")


def test_too_long_text_is_refused_with_the_cell(tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match=r"S cell A3: text longer"):
        one_column_book(tmp_path / "long.xlsx", ["ok", "x" * (MAX_TEXT + 1)])


def test_entity_rows_refuses_unknown_keys_and_ignores_helpers() -> None:
    customers = DEFAULT_SCHEMA.entity("customers")
    (row,) = entity_rows(customers, [{"name": "A", "_customer_row": 5}])
    assert row[customers.keys.index("name")] == "A" and len(row) == len(customers.columns)
    with pytest.raises(XlcrmError, match="unknown column key"):
        list(entity_rows(customers, [{"nmae": "A"}]))


def test_same_created_time_gives_identical_members(tmp_path: Path) -> None:
    def build(path: Path, created: dt.datetime) -> dict[str, bytes]:
        wb = XlcrmWorkbook(path, created=created, title="t")
        ws = wb.add_worksheet("S")
        write_table(wb, ws, "tbl_s", [TableColumn(header="V", num_format="@")], [["a"], [dt.date(2024, 1, 1)]])
        close_workbook(wb)
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist()}

    first = build(tmp_path / "a.xlsx", dt.datetime(2026, 1, 1))
    second = build(tmp_path / "b.xlsx", dt.datetime(2026, 1, 1))
    third = build(tmp_path / "c.xlsx", dt.datetime(2026, 2, 1))
    assert first == second
    assert [n for n in first if first[n] != third[n]] == ["docProps/core.xml"]
    assert b"2026-01-01T00:00:00Z" in first["docProps/core.xml"]


def test_atomic_write_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "book.xlsx"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and not tmp.name.endswith(".xlsx")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # permissions kept, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["book.xlsx"]


def test_atomic_write_leaves_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "book.xlsx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        wb = open_workbook(tmp)
        wb.add_worksheet("S")
        close_workbook(wb)
        assert tmp.stat().st_size > 0
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["book.xlsx"]


def test_atomic_write_new_file_and_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "new.xlsx"
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    with pytest.raises(XlcrmError, match="does not exist"), atomic_write(tmp_path / "nope" / "a.xlsx"):
        pass


def test_headers_equal_but_for_case_are_refused(tmp_path: Path) -> None:
    wb = open_workbook(tmp_path / "dup.xlsx")
    ws = wb.add_worksheet("顧客")
    with pytest.raises(XlcrmError, match="'FAX' and 'fax'"):
        write_table(wb, ws, "tbl_x", [TableColumn(header="FAX"), TableColumn(header="fax")], [])


def test_unwritable_target_is_a_one_line_refusal(tmp_path: Path) -> None:
    wb = open_workbook(tmp_path / "missing" / "x.xlsx")
    wb.add_worksheet("S")
    with pytest.raises(XlcrmError, match="cannot write the workbook"):
        close_workbook(wb)
