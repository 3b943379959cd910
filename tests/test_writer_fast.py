"""The rendered table rows (xlcrm.xlsx.sheetxml) against XlsxWriter writing the same cells one by one.

Every test builds the same workbook twice, with ``fast_tables=True`` (rows rendered as XML, shared
strings written in batches, parts deflated on a worker) and ``fast_tables=False`` (the per-cell
reference: XlsxWriter alone), and requires every zip member to be byte-identical.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import random
import zipfile
import zlib
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest
import python_calamine
from fixtures_master import build_master
from helpers import libreoffice_convert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from python_calamine import CalamineWorkbook
from xlsxwriter.sharedstrings import SharedStrings
from xlsxwriter.utility import _preserve_whitespace

from xlcrm.errors import XlcrmError
from xlcrm.intake.template import add_standard_sheets
from xlcrm.master import masterbook
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.store import db
from xlcrm.xlsx import sheetxml
from xlcrm.xlsx.writer import (
    FAST_XLSXWRITER,
    MAX_TEXT,
    TableColumn,
    XlcrmWorkbook,
    XlcrmWorksheet,
    close_workbook,
    write_table,
    write_text,
)

pytestmark = pytest.mark.skipif(not FAST_XLSXWRITER, reason="rendered rows need XlsxWriter 3.3")

CREATED = dt.datetime(2026, 1, 1)
Build = Callable[[XlcrmWorkbook], list[XlcrmWorksheet]]

SPECIAL_TEXT = ["=1+1", "+81-3", "-5", "@x", "＝１", "\t=1", " =1", "\u3000=1", " lead", "trail ", " ",
                "\u3000", "a&b<c>d", '"quoted"', "_x0041_", "_x00zz_", "a_x0009_b", "\x00nul", "\x01", "\x1f",
                "\x0b", "tab\tin", "line\nbreak", "ends\n", "\ufffe", "\uffff", "絵文字😀", "ｶﾀｶﾅ", "&amp;",
                "x" * 300, "E=mc2", "03-1234-5678", "0", "TRUE"]



def assert_like_xlsxwriter(strings: list[str]) -> None:
    reference = PlainSharedStrings()
    reference.fh = io.StringIO()
    for s in strings:
        reference._write_si(s)
    fast = io.StringIO()
    sheetxml.write_si(fast, strings)
    assert fast.getvalue() == reference.fh.getvalue()


class PlainSharedStrings(SharedStrings):
    """XlsxWriter's shared-strings writer without its rich-text shortcut: the reference for xlcrm's."""

    def _write_si(self, string: str) -> None:
        string = self._escape_control_characters(string)
        attributes = [("xml:space", "preserve")] if _preserve_whitespace(string) else []
        self._xml_si_element(string, attributes)

def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {n: zf.read(n) for n in zf.namelist()}


def _build(tmp_path: Path, build: Build, fast: bool, name: str) -> tuple[Path, list[XlcrmWorksheet], list[bool]]:
    path = tmp_path / f"{name}_{'fast' if fast else 'ref'}.xlsx"
    wb = XlcrmWorkbook(path, created=CREATED, title="t", fast_tables=fast)
    sheets = build(wb)
    rendered = [ws._region is not None for ws in sheets]
    close_workbook(wb)
    return path, sheets, rendered


def assert_identical(tmp_path: Path, build: Build, name: str = "book", *, back_to_cells: bool = False) -> Path:
    """Build twice; every member must be the same bytes.  Returns the fast file.

    ``build`` returns the sheets whose rows must have been rendered (else the comparison would prove
    nothing); ``back_to_cells`` says whether close() had to turn them back into XlsxWriter cells.
    """
    fast_path, sheets, rendered = _build(tmp_path, build, True, name)
    assert all(rendered), "expected rendered rows"
    assert [ws._region is None for ws in sheets] == [back_to_cells] * len(sheets)
    ref_path, _, _ = _build(tmp_path, build, False, name)
    fast, ref = _members(fast_path), _members(ref_path)
    assert list(fast) == list(ref)
    for member, data in ref.items():
        if fast[member] != data:
            at = next((i for i, (a, b) in enumerate(zip(fast[member], data, strict=False)) if a != b),
                      min(len(data), len(fast[member])))
            raise AssertionError(f"{member} differs at byte {at}: fast {fast[member][at - 80:at + 80]!r} "
                                 f"reference {data[at - 80:at + 80]!r}")
    return fast_path


@pytest.fixture(params=[64, 1], ids=["chunks-1024-rows", "chunks-16-rows"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Scenario tests run with the real chunk size and with 16-row chunks (deflated middle pieces)."""
    monkeypatch.setattr(sheetxml, "BLOCKS_PER_CHUNK", request.param)
    return int(request.param)


# --- columns and values -----------------------------------------------------------------------------

LABELS = {"a": "エー", "b": "=B", "c": " c "}
COLUMN_KINDS: list[dict[str, Any]] = [
    {}, {"num_format": "@"}, {"num_format": "yyyy/mm/dd"}, {"num_format": "#,##0"}, {"system": True},
    {"labels": LABELS}, {"locked": False}, {"num_format": "@", "system": True}, {"num_format": "0.00%"},
]


def _columns(kinds: list[int]) -> list[TableColumn]:
    return [TableColumn(header=f"列{i}", width=10 + i, **COLUMN_KINDS[k]) for i, k in enumerate(kinds)]


texts = st.one_of(st.sampled_from(SPECIAL_TEXT), st.sampled_from(sorted(LABELS)),
                  st.text(st.characters(exclude_categories=("Cs",)), max_size=12))
values = st.one_of(
    st.none(), texts, st.just(""), st.integers(-(10**17), 10**17),
    st.floats(allow_nan=True, allow_infinity=False), st.sampled_from([0.1, 1e20, -0.0, 5e-324, 1.7976931348623157e308,
                                                                     123456789.123456789, 1 / 3]),
    st.dates(dt.date(1900, 1, 1), dt.date(9999, 12, 31)),
    st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(9999, 12, 31)),
    st.booleans(), st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**6, max_value=10**6),
)


def _table_book(columns: list[TableColumn], rows: list[list[Any]], name: str = "tbl_t") -> Build:
    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        ws = wb.add_worksheet("表")
        write_table(wb, ws, name, columns, rows, validation_rows=3)
        return [ws] if any(v not in (None, "") and v == v for row in rows for v in row) else []
    return build


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.integers(0, len(COLUMN_KINDS) - 1), min_size=1, max_size=6),
       data=st.data())
def test_random_tables_are_byte_identical(tmp_path: Path, kinds: list[int], data: st.DataObject) -> None:
    columns = _columns(kinds)
    rows = data.draw(st.lists(st.lists(values, min_size=len(kinds), max_size=len(kinds)), max_size=40))
    assert_identical(tmp_path, _table_book(columns, rows))


def _random_rows(rnd: random.Random, ncols: int, nrows: int) -> list[list[Any]]:
    pool = [*SPECIAL_TEXT, *LABELS, *(f"顧客{i}" for i in range(50))]

    def value() -> Any:
        k = rnd.random()
        if k < 0.15:
            return None
        if k < 0.55:
            return rnd.choice(pool) if rnd.random() < 0.5 else f"text {rnd.randrange(10**6)}"
        if k < 0.7:
            return rnd.randrange(-10**9, 10**9)
        if k < 0.8:
            return rnd.uniform(-1e6, 1e6)
        if k < 0.9:
            return dt.date(2000, 1, 1) + dt.timedelta(days=rnd.randrange(10_000))
        return dt.datetime(2020, 1, 1) + dt.timedelta(seconds=rnd.randrange(10**8))

    return [[value() for _ in range(ncols)] for _ in range(nrows)]


@pytest.mark.parametrize("blocks_per_chunk", [1, 3, 64])
def test_many_rows_in_several_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocks_per_chunk: int) -> None:
    # Chunks of 16 rows exercise the deflate worker's pieces, the spliced member and the last-chunk text.
    monkeypatch.setattr(sheetxml, "BLOCKS_PER_CHUNK", blocks_per_chunk)
    rnd = random.Random(blocks_per_chunk)
    rows = _random_rows(rnd, 9, 700)
    rows[0] = [None] * 9  # an empty first row: the table's first block starts later
    rows[-1][8] = "last column, last row"
    assert_identical(tmp_path, _table_book(_columns(list(range(9))), rows))


def test_special_values_and_foreign_types(tmp_path: Path) -> None:
    rows = [[t, t] for t in SPECIAL_TEXT]
    rows += [[math.nan, float("nan")], [np.int64(7), np.float64(2.5)], [np.float64("nan"), pd.NA],
             [Decimal("1.10"), True], [False, pd.Timestamp("2024-02-29 13:45")], [pd.NaT, np.bool_(True)],
             [dt.time(12, 30), dt.timedelta(days=2)], [1e20, -0.0], [10**16 + 1, 2**53 + 1], ["a", "b"],
             [dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.date(1900, 2, 28)], [dt.date(1900, 3, 1), None],
             [type("S", (str,), {})("=sub"), type("S", (str,), {})("plain sub")]]
    assert_identical(tmp_path, _table_book(_columns([5, 1]), rows))


def test_several_sheets_share_strings_with_cells_written_one_by_one(tmp_path: Path, chunking: int) -> None:
    rnd = random.Random(7)
    rows_a, rows_b = _random_rows(rnd, 5, 120), _random_rows(rnd, 4, 90)

    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        first = wb.add_worksheet("前")  # cell by cell, before the tables, with formats of its own
        first.write_string(0, 0, "顧客0", wb.fmt(italic=True))
        first.write_string(3, 2, "text 5", wb.fmt(bold=True, num_format="@"))
        write_text(first, 5, 1, "=danger", wb)
        a = wb.add_worksheet("A")
        write_table(wb, a, "tbl_a", _columns([0, 1, 2, 4, 5]), rows_a)
        b = wb.add_worksheet("B")
        write_table(wb, b, "tbl_b", _columns([3, 6, 7, 8]), rows_b)
        last = wb.add_worksheet("後")  # and after them, reusing their strings and formats
        for r, row in enumerate(rows_a[:30]):
            for c, v in enumerate(row):
                if isinstance(v, str) and v:
                    last.write_string(r, c, v, wb.fmt(quote_prefix=True) if c % 2 else None)
        return [a, b]

    assert_identical(tmp_path, build)


def test_cells_written_into_the_table_sheet_before_and_after(tmp_path: Path, chunking: int) -> None:
    rows = _random_rows(random.Random(3), 4, 60)
    rows[4][1] = "table value"

    def note(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        # A note in row 0 beyond the header (the master's change history does this) widens the first
        # block's spans; a cell written before the table where the table writes is replaced by it.
        ws = wb.add_worksheet("S")
        ws.write_string(5, 1, "before: replaced by the table", wb.fmt(bold=True))
        write_table(wb, ws, "tbl_s", _columns([0, 1, 2, 5]), rows)
        write_text(ws, 0, 6, "note beyond the header", wb, italic=True)
        return [ws]

    assert_identical(tmp_path, note, "note")

    def beside(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        ws = wb.add_worksheet("S")
        ws.write_string(6, 7, "before: beside the table")
        write_table(wb, ws, "tbl_s", _columns([0, 1, 2, 5]), rows)
        return [ws]

    assert_identical(tmp_path, beside, "beside", back_to_cells=True)

    def after(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        ws = wb.add_worksheet("S")
        write_table(wb, ws, "tbl_s", _columns([0, 1, 2, 5]), rows)
        ws.write_string(10, 2, "after: a new format in a data row", wb.fmt(font_color="#FF0000"))
        ws.write_number(10, 3, 42)
        return [ws]

    assert_identical(tmp_path, after, "after", back_to_cells=True)

    def below(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        ws = wb.add_worksheet("S")
        write_table(wb, ws, "tbl_s", _columns([0, 1, 2, 5]), rows)
        ws.write_number(62, 5, 42)  # in the table's last block, one column further right
        ws.write_string(80, 0, "far below")
        return [ws]

    assert_identical(tmp_path, below, "below")


def test_row_and_column_settings_after_the_table(tmp_path: Path, chunking: int) -> None:
    rows = _random_rows(random.Random(5), 4, 50)
    for row in rows:
        row[1] = 12345 if row[1] is None else row[1]  # numbers in the "@" column take its format

    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        ws = wb.add_worksheet("S")
        write_table(wb, ws, "tbl_s", _columns([0, 1, 3, 5]), rows)
        ws.set_row(8, 30, wb.fmt(bg_color="#FFFF00"))
        ws.set_column(0, 1, 20, wb.fmt(bg_color="#00FF00"))
        return [ws]

    assert_identical(tmp_path, build, back_to_cells=True)


def test_a_format_first_written_later_into_an_earlier_sheet(tmp_path: Path, chunking: int) -> None:
    # The style numbers guessed while rendering turn out wrong: close() must renumber the rows.
    rows = _random_rows(random.Random(9), 5, 300)

    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        early = wb.add_worksheet("早")
        ws = wb.add_worksheet("S")
        write_table(wb, ws, "tbl_s", _columns([0, 2, 4, 7, 8]), rows)
        early.write_string(0, 0, "written last", wb.fmt(bold=True, font_color="#123456"))
        early.write_number(1, 0, 3, wb.fmt(num_format="0.000"))
        return [ws]

    assert_identical(tmp_path, build)


def test_empty_and_blank_tables(tmp_path: Path) -> None:
    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        early = wb.add_worksheet("早")
        for name, rows in (("空", []), ("空白", [[None, "", None], [math.nan, None, ""]] * 20)):
            ws = wb.add_worksheet(name)
            write_table(wb, ws, f"tbl_{len(rows)}", _columns([0, 5, 4]), rows, validation_rows=5)
        # No rows were rendered, but the style numbers were guessed: a format written later into an
        # earlier sheet must still come first.
        early.write_string(0, 0, "written last", wb.fmt(bold=True, font_color="#654321"))
        return []

    assert_identical(tmp_path, build)


def test_zip64_workbooks_keep_xlsxwriters_packaging(tmp_path: Path) -> None:
    rows = _random_rows(random.Random(11), 3, 100)

    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        wb.use_zip64()
        ws = wb.add_worksheet("S")
        write_table(wb, ws, "tbl_s", _columns([0, 2, 5]), rows)
        assert wb._deflate_pool is None
        return [ws]

    assert_identical(tmp_path, build)


def test_team_workbook_is_byte_identical(tmp_path: Path, chunking: int) -> None:
    rnd = random.Random(2)
    customers = DEFAULT_SCHEMA.entity("customers")
    rows = []
    for i in range(300):
        row: dict[str, Any] = {"customer_id": f"C-{i:06d}", "name": rnd.choice(SPECIAL_TEXT) + str(i),
                               "kind": rnd.choice(["corporate", "individual", "unknown-key"]),
                               "employees": rnd.choice([None, 5, 2.5, "many"]),
                               "updated_at": dt.date(2025, 1, 1) + dt.timedelta(days=i)}
        rows.append({k: v for k, v in row.items() if customers.has(k)})

    def build(wb: XlcrmWorkbook) -> list[XlcrmWorksheet]:
        sheets = add_standard_sheets(wb, DEFAULT_SCHEMA, lang="ja", owner="佐藤", rows={"customers": rows},
                                     validation_rows=100, protect=True)
        return [sheets["customers"]]

    assert_identical(tmp_path, build)


def test_master_workbook_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunking: int) -> None:
    # write_master streams database tuples (no dict per record); the reference writes the same cell
    # by cell.  Two history rows shown of six: the note beside the header widens the first spans.
    rnd = random.Random(4)
    extra = [{"customer_id": f"C-{i:06d}", "kind": rnd.choice(["corporate", "individual"]),
              "name": rnd.choice(SPECIAL_TEXT) + f" {i}", "employees": rnd.choice([None, i, i / 7]),
              "updated_at": rnd.choice(["2024-02-29", "2024-13-01", None, "1900-03-01"]),
              "status": rnd.choice(["active", "prospect"]), "owner": rnd.choice(["佐藤 花子", "=x"])}
             for i in range(100, 700)]
    master = build_master(tmp_path, index=False, extra_customers=extra)
    monkeypatch.setattr(masterbook, "HISTORY_SHEET_ROWS", 2)
    conn = db.connect(db.db_path_for(master))
    out = {}
    try:
        active = db.count_active(conn, DEFAULT_SCHEMA.entity("customers"))
        for fast in (True, False):
            monkeypatch.setattr(masterbook, "open_workbook", partial(XlcrmWorkbook, fast_tables=fast))
            out[fast] = tmp_path / f"master_{fast}.xlsx"
            masterbook.write_master(conn, out[fast], DEFAULT_SCHEMA, lang="ja", wb_id="x", created=CREATED)
    finally:
        conn.close()
    fast_members, ref_members = _members(out[True]), _members(out[False])
    assert fast_members == ref_members
    got = python_calamine.CalamineWorkbook.from_path(str(out[True])).get_sheet_by_name("顧客").to_python()
    assert len(got) == 1 + active and active > 600
    assert got[1 + active - 600][2] == extra[0]["name"]


# --- the file reads back --------------------------------------------------------------------------

def test_values_read_back_with_calamine_and_openpyxl(tmp_path: Path) -> None:
    columns = [TableColumn("文字"), TableColumn("選択", labels=LABELS), TableColumn("数", num_format="#,##0"),
               TableColumn("日付", num_format="yyyy/mm/dd"), TableColumn("番号", num_format="@")]
    rows = [[" 空白 ", "a", 12, dt.date(2024, 2, 29), 3.5], ["=式", "c", -0.0, dt.date(1900, 3, 1), "0123"],
            ["a&b<c>", None, 1e20, dt.datetime(2024, 1, 2, 3, 4, 5), None], ["tab\there", "zz", 0.1, None, 7]]
    path = assert_identical(tmp_path, _table_book(columns, rows))
    got = python_calamine.CalamineWorkbook.from_path(str(path)).get_sheet_by_name("表").to_python()
    assert got[0] == ["文字", "選択", "数", "日付", "番号"]
    assert got[1] == [" 空白 ", "エー", 12, dt.date(2024, 2, 29), 3.5]
    assert got[2][:3] == ["=式", " c ", 0] and got[2][4] == "0123"
    assert got[3][:3] == ["a&b<c>", "", 1e20] and got[3][3] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert got[4][:3] == ["tab\there", "zz", 0.1]
    ws = openpyxl.load_workbook(path)["表"]
    assert ws["A3"].value == "=式" and ws["A3"].data_type == "s" and ws["A3"].quotePrefix
    assert ws["D2"].number_format == "yyyy/mm/dd" and ws["C4"].value == 1e20
    assert ws.tables["tbl_t"].ref == "A1:E5"


def test_libreoffice_reads_the_spliced_deflate_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 16-row chunks: the sheet member is the prefix, ~20 worker-deflated pieces and the suffix.
    monkeypatch.setattr(sheetxml, "BLOCKS_PER_CHUNK", 1)
    rows = [[f"顧客{i}", i * 1.5, dt.date(2024, 1, 1) + dt.timedelta(days=i)] for i in range(330)]
    columns = [TableColumn("名前"), TableColumn("数"), TableColumn("日付", num_format="yyyy-mm-dd")]
    path = assert_identical(tmp_path, _table_book(columns, rows))
    csv_path = libreoffice_convert(path, tmp_path / "lo", "csv:Text - txt - csv (StarCalc):44,34,76")
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 331
    assert lines[1] == "顧客0,0,2024-01-01" and lines[330] == "顧客329,493.5,2024-11-25"


def test_errors_name_the_cell(tmp_path: Path) -> None:
    for rows, message in (([["ok"], ["x" * (MAX_TEXT + 1)]], r"cell A3: text longer"),
                          ([[1], [math.inf]], r"cell A3: infinite number"),
                          ([[1], [Decimal("-Infinity")]], r"cell A3: infinite number")):
        wb = XlcrmWorkbook(io.BytesIO(), created=CREATED)
        ws = wb.add_worksheet("S")
        with pytest.raises(XlcrmError, match=message):
            write_table(wb, ws, "tbl_s", [TableColumn("V")], rows)
    wb = XlcrmWorkbook(io.BytesIO(), created=CREATED)
    with pytest.raises(ValueError, match="2 values for 1 columns"):
        write_table(wb, wb.add_worksheet("S"), "tbl_s", [TableColumn("V")], [[1, 2]])


# --- shared strings and the container ---------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([*SPECIAL_TEXT, "<r>rich</r>", "<r>", "", "\x00"]),
                          st.text(st.characters(exclude_categories=("Cs",)), max_size=8)), max_size=30))
def test_shared_strings_match_xlsxwriter(strings: list[str]) -> None:
    assert_like_xlsxwriter(strings)


def test_shared_strings_in_batches_match_xlsxwriter() -> None:
    # 10,000 strings: whole plain batches, batches with a few strings needing escapes, sub-batches.
    rnd = random.Random(6)
    strings = [f"顧客{i}" if rnd.random() > 0.002 else rnd.choice([*SPECIAL_TEXT, "<r>x</r>"])
               for i in range(10_000)]
    assert_like_xlsxwriter(strings)


def test_text_shaped_like_rich_xml_stays_text(tmp_path: Path) -> None:
    # XlsxWriter itself writes "<r>...</r>" into sharedStrings.xml as raw XML: a cell typed that way in
    # a team workbook would turn into markup in the master.  xlcrm's writer escapes it like any text.
    evil = '<r><t>x</t></r><si><t>injected</t></si><r>'
    shaped = "<r>rich</r>"
    for fast_tables in (True, False):
        path = tmp_path / f"rich-{fast_tables}.xlsx"
        wb = XlcrmWorkbook(path, fast_tables=fast_tables)
        write_table(wb, wb.add_worksheet("S"), "tbl_s", [TableColumn("V")], [[evil], [shaped], ["next"]])
        close_workbook(wb)
        with zipfile.ZipFile(path) as z:
            assert "injected</t></si>" not in z.read("xl/sharedStrings.xml").decode()
        book = CalamineWorkbook.from_path(str(path))
        assert book.get_sheet_by_name("S").to_python() == [["V"], [evil], [shaped], ["next"]]


def test_crc32_combine() -> None:
    rnd = random.Random(1)
    for _ in range(20):
        a, b = rnd.randbytes(rnd.randrange(0, 3000)), rnd.randbytes(rnd.randrange(0, 3000))
        assert sheetxml.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_plain_formulas_are_stored_as_write_formula_stores_them(tmp_path: Path) -> None:
    """write_plain_formula (the customer-label formulas of every team workbook) gives the same sheet
    XML as XlsxWriter's write_formula; a formula with a function it must mark goes through that."""
    formulas = ['=IFERROR(IF(顧客!C2="","",IF(COUNTIF(顧客!$C$2:$C$9,顧客!C2)<2,顧客!C2,顧客!C2&" ("&'
                'IF(AND(顧客!K2<>"",COUNTIFS(顧客!$C$2:$C$9,顧客!C2,顧客!$K$2:$K$9,顧客!K2)<2),顧客!K2,'
                '"行"&ROW(顧客!C2))&")")),顧客!C2&" (行"&ROW(顧客!C2)&")")', "=SUM(A1:A3)",
                "=XLOOKUP(A1,B1:B3,C1:C3)", "=CONCAT(A1,B1)"]
    books = []
    for plain in (False, True):
        path = tmp_path / f"{plain}.xlsx"
        wb = XlcrmWorkbook(path, created=CREATED)
        ws = wb.add_worksheet("L")
        for i, f in enumerate(formulas):
            (ws.write_plain_formula if plain else ws.write_formula)(i, 0, f, None, f"v{i}")
        wb.close()
        with zipfile.ZipFile(path) as zf:
            books.append(zf.read("xl/worksheets/sheet1.xml"))
    assert books[0] == books[1]
    assert b"_xlfn.XLOOKUP(" in books[1] and b"_xlfn.CONCAT(" not in books[1]
