"""The standard team workbook, checked on the real files (openpyxl, the sheet XML, LibreOffice)."""

from __future__ import annotations

import csv
import datetime as dt
import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from defusedxml import ElementTree
from helpers import libreoffice_convert
from openpyxl.utils import column_index_from_string, get_column_letter, range_boundaries

from xlcrm import __version__
from xlcrm.errors import XlcrmError
from xlcrm.intake.template import (
    CUSTOMER_NAMES,
    TEMPLATE_CREATED,
    TEMPLATE_FILES,
    VALIDATION_ROWS,
    build_template,
    list_defined_name,
    regenerate_templates,
    write_team_workbook,
    xlsx_members,
)
from xlcrm.schema import (
    DEFAULT_SCHEMA,
    LANGS,
    LISTS_SHEET,
    META_KEYS,
    META_SHEET,
    OWNER_DEFAULTED,
    Schema,
    build_schema,
)

REPO = Path(__file__).resolve().parents[1]
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
      "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships"}
REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
CUSTOM = build_schema({"sheets": {"顧客": {"columns": [{"label": "紹介者", "type": "text"}], "disable": ["FAX"]}}})


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("templates")
    return {lang: build_template(d / f"t_{lang}.xlsx", DEFAULT_SCHEMA, owner="佐藤", lang=lang) for lang in LANGS}


def sheet_xml(path: Path, sheet: str) -> Any:
    """The <worksheet> element of ``sheet``, found through workbook.xml and its relationships."""
    with zipfile.ZipFile(path) as zf:
        wb = ElementTree.fromstring(zf.read("xl/workbook.xml"))
        rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
        rid = next(s.get(f"{{{NS['r']}}}id") for s in wb.iterfind(".//m:sheet", NS) if s.get("name") == sheet)
        target = next(r.get("Target") for r in rels.iter(f"{REL_NS}Relationship") if r.get("Id") == rid)
        return ElementTree.fromstring(zf.read("xl/" + target.lstrip("/").removeprefix("xl/")))


def validations(ws: Any) -> dict[str, Any]:
    """Data validations by column letter (each column has exactly one)."""
    out: dict[str, Any] = {}
    for dv in ws.data_validations.dataValidation:
        for rng in dv.sqref.ranges:
            letter = get_column_letter(rng.min_col)
            assert rng.min_col == rng.max_col and letter not in out
            out[letter] = dv
    return out


def columns(ws: Any) -> dict[str, Any]:
    """Column dimensions by letter; openpyxl files identical neighbours under the first letter only."""
    out = {}
    for dim in ws.column_dimensions.values():
        for i in range(dim.min, dim.max + 1):
            out[get_column_letter(i)] = dim
    return out


def letter(schema: Schema, entity: str, key: str) -> str:
    return get_column_letter(schema.entity(entity).keys.index(key) + 1)


@pytest.mark.parametrize("lang", LANGS)
def test_sheets_headers_and_tables(books: dict[str, Path], lang: str) -> None:
    wb = openpyxl.load_workbook(books[lang])
    assert wb.sheetnames == [e.label(lang) for e in DEFAULT_SCHEMA] + [LISTS_SHEET, META_SHEET]  # type: ignore[arg-type]
    for e in DEFAULT_SCHEMA:
        ws = wb[e.label(lang)]  # type: ignore[arg-type]
        assert ws.sheet_state == "visible" and not ws.protection.sheet  # tables must be able to grow
        assert [c.value for c in ws[1]] == [c.label(lang) for c in e.columns]  # type: ignore[arg-type]
        table = ws.tables[e.table_name(lang)]  # type: ignore[arg-type]
        assert table.ref == f"A1:{get_column_letter(len(e.columns))}2"
        assert table.tableStyleInfo.name == "TableStyleMedium2" and table.autoFilter is not None
        assert ws.freeze_panes == "A2"
        dims = columns(ws)
        for i, c in enumerate(e.columns, start=1):
            assert dims[get_column_letter(i)].width >= c.width


@pytest.mark.parametrize("lang", LANGS)
def test_every_column_has_its_validation_over_2000_rows(books: dict[str, Path], lang: str) -> None:
    wb = openpyxl.load_workbook(books[lang])
    for e in DEFAULT_SCHEMA:
        dvs = validations(wb[e.label(lang)])  # type: ignore[arg-type]
        for i, c in enumerate(e.columns, start=1):
            dv = dvs[get_column_letter(i)]
            (rng,) = dv.sqref.ranges
            assert (rng.min_row, rng.max_row) == (2, 1 + VALIDATION_ROWS), c.key
            if c.system:
                assert dv.type is None and "xlcrm" in dv.prompt
                continue
            if c.type == "choice":
                assert dv.type == "list" and dv.formula1 == list_defined_name(c.list_name)
            elif c.type == "ref":
                assert dv.type == "list" and dv.formula1 == CUSTOMER_NAMES and dv.errorStyle == "warning"
            elif c.type == "date":
                assert dv.type == "date" and dv.formula1 == "1"  # 1900-01-01
            elif c.type in ("int", "decimal"):
                assert dv.type == ("whole" if c.type == "int" else "decimal")
                assert float(dv.formula1) == c.min and float(dv.formula2) == c.max
            elif c.max_length:
                assert dv.type == "textLength" and dv.operator == "lessThanOrEqual"
                assert int(dv.formula1) == c.max_length
            else:
                assert dv.type is None  # "any": carries the IME mode and the input message
            if dv.type is not None and c.type != "ref":
                assert dv.errorStyle in (None, "stop") and dv.showErrorMessage and dv.error and dv.errorTitle
            if c.required and c.key != OWNER_DEFAULTED.get(e.key):
                assert ("必須" if lang == "ja" else "Required") in dv.prompt
            if c.type in ("phone", "postal", "email", "kana", "corporate_number") or dv.type is not None:
                assert dv.prompt, c.key  # every typed or constrained column explains itself
            if dv.prompt:
                assert dv.promptTitle == c.label(lang)  # type: ignore[arg-type]


def test_specific_rules(books: dict[str, Path]) -> None:
    wb = openpyxl.load_workbook(books["ja"])
    s = DEFAULT_SCHEMA
    deals = validations(wb["取引"])
    assert (deals[letter(s, "deals", "probability")].formula1, deals[letter(s, "deals", "probability")].formula2) \
        == ("0", "100")
    activities = validations(wb["活動履歴"])
    assert activities[letter(s, "activities", "date")].formula2 == "TODAY()+1"  # NotFuture rule
    customers = validations(wb["顧客"])
    assert customers[letter(s, "customers", "owner")].prompt == "空欄ならこのブックの担当者（佐藤）になります。"
    assert "顧客ID" in customers["A"].prompt or "C-000001" in customers["A"].prompt
    assert "一覧" in customers[letter(s, "customers", "industry")].error


def test_lists_sheet_and_defined_names(books: dict[str, Path]) -> None:
    for lang, path in books.items():
        wb = openpyxl.load_workbook(path)
        lists = wb[LISTS_SHEET]
        assert lists.sheet_state == "hidden" and lists.protection.sheet
        for name, choices in DEFAULT_SCHEMA.choice_lists().items():
            dn = wb.defined_names[list_defined_name(name)]
            ((sheet, ref),) = list(dn.destinations)
            assert sheet == LISTS_SHEET
            cells = [c.value for row in lists[ref.replace("$", "")] for c in row]
            assert cells == [c.label(lang) for c in choices]  # type: ignore[arg-type]
        customers = DEFAULT_SCHEMA.entity("customers")
        # The customer dropdown lists one label per 顧客 row (the name, qualified when two rows share it).
        ((sheet, ref),) = list(wb.defined_names[CUSTOMER_NAMES].destinations)
        assert sheet == LISTS_SHEET
        cells = [c for row in lists[ref.replace("$", "")] for c in row]
        assert len(cells) == VALIDATION_ROWS
        col = letter(DEFAULT_SCHEMA, "customers", "name")
        label = customers.label(lang)  # type: ignore[arg-type]
        assert f"COUNTIF({label}!${col}$2:${col}${1 + VALIDATION_ROWS},{label}!{col}2)" in cells[0].value


def test_ime_modes_in_the_sheet_xml(books: dict[str, Path]) -> None:
    for lang, path in books.items():
        for e in DEFAULT_SCHEMA:
            root = sheet_xml(path, e.label(lang))  # type: ignore[arg-type]
            got = {re.match(r"[A-Z]+", dv.get("sqref")).group(): dv.get("imeMode")  # type: ignore[union-attr]
                   for dv in root.iterfind(".//m:dataValidation", NS)}
            want = {get_column_letter(i): (c.ime if c.ime != "noControl" else None)
                    for i, c in enumerate(e.columns, start=1)}
            assert got == want
    customers = DEFAULT_SCHEMA.entity("customers")
    modes = {c.key: c.ime for c in customers.columns}
    assert modes["kana"] == "fullKatakana" and modes["phone"] == modes["email"] == "halfAlpha"
    assert modes["postal_code"] == modes["corporate_number"] == "halfAlpha" and modes["name"] == "hiragana"


def test_text_format_on_code_columns(books: dict[str, Path]) -> None:
    wb = openpyxl.load_workbook(books["ja"])
    for e in DEFAULT_SCHEMA:
        dims = columns(wb[e.ja])
        for i, c in enumerate(e.columns, start=1):
            fmt = dims[get_column_letter(i)].number_format
            if c.type in ("phone", "postal", "corporate_number", "id"):
                assert fmt == "@", (e.key, c.key)
            elif c.type == "date":
                assert fmt == "yyyy/mm/dd"
    assert {c.key for c in DEFAULT_SCHEMA.entity("contacts").columns if c.number_format == "@"} >= {
        "phone", "mobile", "contact_id"}


def test_system_columns_look_different(books: dict[str, Path]) -> None:
    ws = openpyxl.load_workbook(books["ja"])["顧客"]
    system = {i for i, c in enumerate(DEFAULT_SCHEMA.entity("customers").columns, start=1) if c.system}
    assert system  # 顧客ID and 更新日
    for i in range(1, ws.max_column + 1):
        fill = ws.cell(1, i).fill.fgColor.rgb
        assert (fill == "FFD9D9D9") is (i in system)


def test_meta_sheet_is_very_hidden(tmp_path: Path) -> None:
    created = dt.datetime(2026, 3, 4, 5, 6, 7)
    path = write_team_workbook(tmp_path / "m.xlsx", DEFAULT_SCHEMA, owner="鈴木", lang="en",
                               workbook_id="wb-42", created=created)
    wb = openpyxl.load_workbook(path)
    meta = wb[META_SHEET]
    assert meta.sheet_state == "veryHidden" and meta.protection.sheet
    rows = [tuple(r) for r in meta.iter_rows(values_only=True)]
    assert [r[0] for r in rows] == list(META_KEYS)
    assert dict(rows) == {"schema_version": DEFAULT_SCHEMA.version, "owner": "鈴木", "lang": "en",
                          "created": "2026-03-04T05:06:07", "workbook_id": "wb-42",
                          "generator": f"xlcrm {__version__}"}
    assert wb.properties.created == created


def test_custom_and_disabled_columns_flow_in(tmp_path: Path) -> None:
    path = build_template(tmp_path / "custom.xlsx", CUSTOM, lang="ja")
    ws = openpyxl.load_workbook(path)["顧客"]
    headers = [c.value for c in ws[1]]
    assert headers == [c.ja for c in CUSTOM.entity("customers").columns]
    assert headers[-1] == "紹介者" and "FAX" not in headers
    dv = validations(ws)[get_column_letter(len(headers))]
    assert dv.imeMode == "hiragana"  # a custom text column is free text: IME on
    # 担当者 keeps its FAX-less sibling columns untouched.
    assert [c.value for c in openpyxl.load_workbook(path)["担当者"][1]] == [
        c.ja for c in CUSTOM.entity("contacts").columns]


def test_custom_choice_column_gets_its_own_list(tmp_path: Path) -> None:
    schema = build_schema({"sheets": {"customers": {"columns": [
        {"label": "ランク", "key": "rank", "type": "choice", "choices": ["A", "B", "C"]}]}}})
    wb = openpyxl.load_workbook(build_template(tmp_path / "rank.xlsx", schema))
    dv = validations(wb["顧客"])[letter(schema, "customers", "rank")]
    assert dv.formula1 == "list_rank"
    ((_, ref),) = list(wb.defined_names["list_rank"].destinations)
    assert [c.value for row in wb[LISTS_SHEET][ref.replace("$", "")] for c in row] == ["A", "B", "C"]


def test_rows_are_written_as_typed_labelled_values(tmp_path: Path) -> None:
    rows = {
        "customers": [
            {"customer_id": "C-000001", "kind": "corporate", "name": "株式会社テスト", "phone": "0312345678",
             "postal_code": "001-0010", "industry": "it", "employees": 12, "dm_consent": "no",
             "prefecture": "東京都", "updated_at": dt.date(2025, 1, 31), "notes": "=1+1"},
            {"kind": "individual", "name": "@SUM(A1)", "address": "-2", "birthday": dt.date(1980, 2, 29)},
        ],
        "deals": [{"customer": "C-000001", "title": "案件", "quantity": 3, "unit_price": 1000.5,
                   "phase": "won", "closed_on": dt.date(2025, 2, 1)}],
    }
    path = write_team_workbook(tmp_path / "rows.xlsx", DEFAULT_SCHEMA, owner="佐藤", rows=rows,
                               validation_rows=50)
    wb = openpyxl.load_workbook(path)
    ws = wb["顧客"]
    s = DEFAULT_SCHEMA

    def cell(key: str, row: int, sheet: Any = ws, entity: str = "customers") -> Any:
        return sheet[f"{letter(s, entity, key)}{row}"]

    assert ws.tables["tbl_customers"].ref == f"A1:{get_column_letter(ws.max_column)}3"
    assert cell("kind", 2).value == "法人" and cell("kind", 3).value == "個人"
    assert cell("industry", 2).value == "情報通信業" and cell("dm_consent", 2).value == "不可"
    assert (cell("phone", 2).value, cell("phone", 2).data_type, cell("phone", 2).number_format) == (
        "0312345678", "s", "@")
    assert cell("postal_code", 2).value == "001-0010"
    assert cell("employees", 2).value == 12 and cell("employees", 2).data_type == "n"
    assert cell("updated_at", 2).value == dt.datetime(2025, 1, 31)
    assert cell("updated_at", 2).number_format == "yyyy/mm/dd" and cell("updated_at", 2).is_date
    assert cell("birthday", 3).value == dt.datetime(1980, 2, 29)
    for key, row, text in (("notes", 2, "=1+1"), ("name", 3, "@SUM(A1)"), ("address", 3, "-2")):
        c = cell(key, row)
        assert (c.value, c.data_type, c.quotePrefix) == (text, "s", True)
    assert sheet_xml(path, "顧客").findall(".//m:f", NS) == []
    # Validation follows the data: 2 rows + 50 below; the customer dropdown covers the same stretch.
    (rng,) = validations(ws)["B"].sqref.ranges
    assert (rng.min_row, rng.max_row) == (2, 1 + 2 + 50)
    ((_, ref),) = list(wb.defined_names[CUSTOMER_NAMES].destinations)
    assert range_boundaries(ref.replace("$", ""))[3] == 1 + 2 + 50
    deals = wb["取引"]
    assert cell("customer", 2, deals, "deals").value == "C-000001"
    assert cell("phase", 2, deals, "deals").value == "受注"
    assert cell("unit_price", 2, deals, "deals").value == 1000.5


def test_english_workbook_uses_english_labels(tmp_path: Path) -> None:
    path = write_team_workbook(tmp_path / "en.xlsx", DEFAULT_SCHEMA, owner="Sato", lang="en",
                               rows={"customers": [{"kind": "corporate", "name": "ACME", "status": "won"}]})
    ws = openpyxl.load_workbook(path)["Customers"]
    assert ws[f"{letter(DEFAULT_SCHEMA, 'customers', 'kind')}2"].value == "Company"
    # An unknown key passes through unchanged rather than being dropped.
    assert ws[f"{letter(DEFAULT_SCHEMA, 'customers', 'status')}2"].value == "won"
    dv = validations(ws)[letter(DEFAULT_SCHEMA, "customers", "owner")]
    assert dv.prompt == "Left blank: this workbook's owner (Sato)."


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match="unknown language"):
        build_template(tmp_path / "x.xlsx", DEFAULT_SCHEMA, lang="fr")  # type: ignore[arg-type]
    with pytest.raises(XlcrmError, match="unknown sheet"):
        write_team_workbook(tmp_path / "x.xlsx", DEFAULT_SCHEMA, owner="a", rows={"clients": []})
    assert not (tmp_path / "x.xlsx").exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_round_trip_through_openpyxl(books: dict[str, Path], tmp_path: Path) -> None:
    src = books["ja"]
    wb = openpyxl.load_workbook(src)
    wb.save(tmp_path / "saved.xlsx")
    again = openpyxl.load_workbook(tmp_path / "saved.xlsx")
    assert again.sheetnames == wb.sheetnames
    assert again[META_SHEET].sheet_state == "veryHidden"
    for e in DEFAULT_SCHEMA:
        before, after = validations(wb[e.ja]), validations(again[e.ja])
        assert {k: (v.type, v.formula1, v.imeMode) for k, v in before.items()} == {
            k: (v.type, v.formula1, v.imeMode) for k, v in after.items()}
        assert after and again[e.ja].tables[e.table_name("ja")].ref == wb[e.ja].tables[e.table_name("ja")].ref


def test_committed_templates_match_the_generator(tmp_path: Path) -> None:
    fresh = regenerate_templates(tmp_path)
    for path in fresh:
        committed = REPO / "workbook_templates" / path.name
        assert committed.exists(), f"{committed} missing: run python -m xlcrm.intake.template workbook_templates"
        want, got = xlsx_members(path), xlsx_members(committed)
        assert sorted(got) == sorted(want)
        stale = [name for name in want if want[name] != got[name]]
        assert not stale, (f"{committed.name} is stale in {stale}; regenerate with "
                           "`python -m xlcrm.intake.template workbook_templates`")
    assert {p.name for p in fresh} == set(TEMPLATE_FILES.values())
    with zipfile.ZipFile(fresh[0]) as zf:
        assert TEMPLATE_CREATED.strftime("%Y-%m-%dT%H:%M:%SZ").encode() in zf.read("docProps/core.xml")


@pytest.mark.parametrize("lang", LANGS)
def test_libreoffice_opens_the_committed_templates(lang: str, tmp_path: Path) -> None:
    pdf = libreoffice_convert(REPO / "workbook_templates" / TEMPLATE_FILES[lang], tmp_path)  # type: ignore[index]
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000


def test_libreoffice_reads_formula_like_text_as_text(tmp_path: Path) -> None:
    rows = {"customers": [{"kind": "corporate", "name": "=1+1", "phone": "0312345678",
                           "employees": 7, "notes": "@SUM(A1)"}]}
    book = write_team_workbook(tmp_path / "lo.xlsx", DEFAULT_SCHEMA, owner="佐藤", rows=rows)
    out = libreoffice_convert(book, tmp_path, "csv:Text - txt - csv (StarCalc):44,34,76")
    with out.open(encoding="utf-8") as fh:
        header, first = list(csv.reader(fh))[:2]
    values = dict(zip(header, first, strict=False))
    assert values["顧客名"] == "=1+1" and values["備考"] == "@SUM(A1)"  # not evaluated to 2 / an error
    assert values["電話番号"] == "0312345678" and values["従業員数"] == "7"
    assert column_index_from_string(letter(DEFAULT_SCHEMA, "customers", "name")) == header.index("顧客名") + 1
