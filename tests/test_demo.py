"""The demo team: real workbooks, read back with openpyxl, checked against the documented plants."""

from __future__ import annotations

import importlib.util
import io
from datetime import date
from pathlib import Path

import openpyxl
import pytest
from rich.console import Console

from xlcrm.demo import (
    PLANTED_MISTAKES,
    SHARED_CUSTOMERS,
    TEAM,
    UNKNOWN_CUSTOMER,
    TeamPlan,
    generate_team,
    plan_team,
    run_demo,
    write_plan,
)
from xlcrm.demo.fakedata import corporate_check_digit, spoil_check_digit, to_fullwidth, to_wareki
from xlcrm.schema import DEFAULT_SCHEMA, build_schema

TODAY = date(2025, 6, 15)
REF_ENTITIES = ("contacts", "activities", "deals", "todos")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[TeamPlan, list[Path]]:
    plan = plan_team(DEFAULT_SCHEMA, seed=7, today=TODAY)
    return plan, write_plan(plan, tmp_path_factory.mktemp("team"), DEFAULT_SCHEMA)


@pytest.fixture(scope="module")
def team(written: tuple[TeamPlan, list[Path]]) -> list[Path]:
    return written[1]


@pytest.fixture(scope="module")
def plan(written: tuple[TeamPlan, list[Path]]) -> TeamPlan:
    return written[0]


def sheet_rows(path: Path, lang: str, entity_key: str) -> tuple[dict[str, int], list[tuple[int, dict]]]:
    """(column key -> column index, [(excel row, {key: cell})]) located by the header labels."""
    entity = DEFAULT_SCHEMA.entity(entity_key)
    ws = openpyxl.load_workbook(path)[entity.label(lang)]
    header = [c.value for c in ws[1]]
    by_label = {c.label(lang): c.key for c in entity.columns}
    cols = {by_label[h]: i for i, h in enumerate(header) if h in by_label}
    rows = []
    for r in range(2, ws.max_row + 1):
        cells = {k: ws.cell(r, i + 1) for k, i in cols.items()}
        if any(c.value is not None for c in cells.values()):
            rows.append((r, cells))
    return cols, rows


def read_all(paths: list[Path]) -> list[list[tuple]]:
    out = []
    for p in paths:
        wb = openpyxl.load_workbook(p)
        for ws in wb.worksheets:
            out.append([ws.title, *ws.iter_rows(values_only=True)])
    return out


def test_four_workbooks_in_their_languages(team: list[Path]) -> None:
    assert [p.name for p in team] == [f"{s.file}.xlsx" for s in TEAM]
    langs = [s.lang for s in TEAM]
    assert langs.count("ja") == 3 and langs.count("en") == 1
    for path, staff in zip(team, TEAM, strict=True):
        names = openpyxl.load_workbook(path).sheetnames
        for e in DEFAULT_SCHEMA:
            assert e.label(staff.lang) in names, (path.name, e.label(staff.lang))
        other = "en" if staff.lang == "ja" else "ja"
        assert DEFAULT_SCHEMA.entity("customers").label(other) not in names


def test_realistic_content(team: list[Path], plan: TeamPlan) -> None:
    phases: set[str] = set()
    for wb in plan.workbooks:
        rows = wb.rows
        assert 25 <= len(rows["customers"]) <= 40
        kinds = {r["kind"] for r in rows["customers"]}
        assert kinds == {"corporate", "individual"}
        assert all(rows[e] for e in REF_ENTITIES), wb.staff.file
        acts = rows["activities"]
        for kind in ("call", "inquiry", "complaint"):
            assert any(a["type"] == kind for a in acts), (wb.staff.file, kind)
        # Complaints and inquiries carry the response given (except the planted ones).
        planted = {(pc.plant.entity, pc.plant.index) for pc in wb.planted}
        for i, a in enumerate(acts):
            if a["type"] in ("inquiry", "complaint") and ("activities", i) not in planted:
                assert a.get("category") and a.get("response"), a
            if isinstance(a["date"], date):
                assert a["date"] <= TODAY
        for d in rows["deals"]:
            phases.add(d["phase"])
            if d["phase"] in ("won", "lost"):
                assert d["closed_on"] <= TODAY
            else:
                assert d["expected_close"] > TODAY
        todos = rows["todos"]
        assert any(t["status"] == "done" and t.get("done_on") for t in todos)
        for t in todos:
            if t["status"] == "done" and t.get("done_on"):
                assert t["done_on"] <= TODAY
        companies = [c for c in rows["customers"] if c["kind"] == "corporate"]
        numbers = [c["corporate_number"] for c in companies if c.get("corporate_number")]
        good = [n for n in numbers if corporate_check_digit(n[1:]) == int(n[0])]
        assert len(good) >= 0.7 * len(companies)
    assert phases == {"lead", "proposal", "quote", "negotiation", "won", "lost"}
    overdue = [t for wb in plan.workbooks for t in wb.rows["todos"]
               if t["status"] != "done" and t["due"] < TODAY]
    assert overdue


def test_dates_follow_today() -> None:
    later = date(2031, 3, 1)
    p = plan_team(DEFAULT_SCHEMA, seed=7, today=later)
    dates = [a["date"] for wb in p.workbooks for a in wb.rows["activities"] if isinstance(a["date"], date)]
    assert max(dates) <= later and min(dates) >= date(2029, 12, 1)


def test_shared_customers_in_several_workbooks(team: list[Path]) -> None:
    by_file = {p.stem: p for p in team}
    lang = {s.file: s.lang for s in TEAM}
    for sc in SHARED_CUSTOMERS:
        assert len(sc.variants) >= 2
        for file, variant in sc.variants.items():
            _, rows = sheet_rows(by_file[file], lang[file], "customers")
            match = [cells for _, cells in rows if cells["name"].value == variant["name"]]
            assert len(match) == 1, (sc.key, file)
            for key in ("phone", "email", "corporate_number", "kana"):
                want = variant.get(key, sc.common.get(key))
                if want is not None:
                    assert match[0][key].value == want, (sc.key, file, key)
    # The variations really are variations: raw values differ between copies.
    yamada = next(sc for sc in SHARED_CUSTOMERS if sc.key == "yamada_seiki")
    assert len({v["name"] for v in yamada.variants.values()}) == 3
    assert len({v["phone"] for v in yamada.variants.values()}) == 3


def test_planted_mistakes_at_documented_rows(team: list[Path], plan: TeamPlan) -> None:
    assert len(plan.planted) == len(PLANTED_MISTAKES)  # all apply to the built-in schema
    for staff in TEAM:
        assert 3 <= sum(p.file == staff.file for p in PLANTED_MISTAKES) <= 5
    by_file = {p.stem: p for p in team}
    for wb, pc in plan.planted:
        p = pc.plant
        assert pc.row == p.index + 2  # header in row 1
        _cols, rows = sheet_rows(by_file[wb.staff.file], wb.staff.lang, p.entity)
        cell = dict(rows)[pc.row][p.column] if pc.row in dict(rows) else None
        assert cell is not None, p
        assert cell.value == pc.value, (p, cell.value, pc.value)
        if pc.value is None:
            continue
        assert type(cell.value) is type(pc.value), p
        if p.kind == "phone.leading_zero":
            assert isinstance(cell.value, int) and cell.data_type == "n"
            assert not str(cell.value).startswith("0")
        elif p.kind == "text.formula_like":
            assert cell.data_type == "s" and cell.value.startswith("=")
            assert cell.quotePrefix
        elif p.kind == "date.wareki":
            assert cell.value[0] in "RHS" and cell.data_type == "s"
        elif p.kind == "date.impossible":
            assert cell.value.endswith("/2/30")
        elif p.kind == "phone.fullwidth":
            assert "－" in cell.value and not cell.value.isascii()
        elif p.kind == "corporate_number.check_digit":
            assert corporate_check_digit(cell.value[1:]) != int(cell.value[0])


def test_references_name_customers_of_the_same_workbook(team: list[Path]) -> None:
    unknown_seen = []
    planted_ref = {(p.file, p.entity, p.index + 2) for p in PLANTED_MISTAKES if p.kind == "ref.unknown"}
    for path, staff in zip(team, TEAM, strict=True):
        _, customers = sheet_rows(path, staff.lang, "customers")
        names = {c["name"].value for _, c in customers if c["name"].value}
        for e in REF_ENTITIES:
            _, rows = sheet_rows(path, staff.lang, e)
            assert rows, (path.name, e)
            for r, cells in rows:
                ref = cells["customer"].value
                if ref not in names:
                    assert (staff.file, e, r) in planted_ref, (path.name, e, r, ref)
                    assert ref == UNKNOWN_CUSTOMER
                    unknown_seen.append(ref)
    assert len(unknown_seen) == len(planted_ref) == 1


def test_deterministic_for_a_seed(team: list[Path], tmp_path: Path) -> None:
    again = generate_team(tmp_path / "a", DEFAULT_SCHEMA, seed=7, today=TODAY)
    other = generate_team(tmp_path / "b", DEFAULT_SCHEMA, seed=8, today=TODAY)
    assert read_all(again) == read_all(team)
    assert read_all(other) != read_all(team)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in team]


def test_schema_driven(tmp_path: Path) -> None:
    """A firm that switched off FAX and 分類 and added a required column still gets a consistent demo."""
    schema = build_schema({"sheets": {"顧客": {"disable": ["fax"],
                                              "columns": [{"label": "地区", "type": "choice",
                                                           "choices": ["北", "南"], "required": True}]},
                                      "活動履歴": {"disable": ["category"]}}})
    p = plan_team(schema, seed=3, today=TODAY)
    assert not any(pc.plant.kind == "inquiry.no_category" for _, pc in p.planted)
    for wb in p.workbooks:
        assert all("fax" not in r for r in wb.rows["customers"])
        custom = schema.entity("customers").columns[-1].key
        assert all(r[custom] == "北" for r in wb.rows["customers"])
    paths = generate_team(tmp_path, schema, seed=3, today=TODAY)
    header = [c.value for c in openpyxl.load_workbook(paths[0])["顧客"][1]]
    assert "FAX" not in header and "地区" in header


def test_fakedata_helpers() -> None:
    assert corporate_check_digit("000012050002") == 7  # 国税庁's own 法人番号 7000012050002
    assert spoil_check_digit("7000012050002") == "8000012050002"
    assert to_wareki(date(2024, 4, 1)) == "R6.4.1"
    assert to_wareki(date(2019, 4, 30), "kanji") == "平成31年4月30日"
    assert to_wareki(date(2019, 5, 1), "kanji") == "令和元年5月1日"
    assert to_fullwidth("03-1234-5678") == "０３－１２３４－５６７８"


def test_validation_reports_exactly_the_planted_errors(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_demo(tmp_path, DEFAULT_SCHEMA, today=TODAY, console=Console(file=out, width=200))
    errors = {(path.stem, f.entity, f.row, f.key) for path, res in result.validation.items()
              for f in res.findings if f.severity == "error"}
    expected = {(wb.staff.file, pc.plant.entity, pc.row, pc.plant.column)
                for wb, pc in result.plan.planted if pc.plant.expect == "error"}
    assert errors == expected
    fine = {(wb.staff.file, pc.plant.entity, pc.row, pc.plant.column)
            for wb, pc in result.plan.planted if pc.plant.expect == "fine"}
    findings = {(path.stem, f.entity, f.row, f.key) for path, res in result.validation.items()
                for f in res.findings}
    assert not fine & findings
    text = out.getvalue()
    assert str(tmp_path.resolve()) in text.replace("\n", "")
    assert "validate" in dict(result.steps) and "merge" in dict(result.steps)


def _make_data():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_data", Path(__file__).resolve().parents[1] / "benchmarks" / "make_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_data_generator_small(tmp_path: Path) -> None:
    """The benchmark generator keeps working (tiny sizes here; the real run is on demand)."""
    from xlcrm.xlsx.reader import read_workbook

    md = _make_data()
    info = md.make_large_workbook(tmp_path / "large.xlsx", n_customers=300, n_activities=900, seed=2)
    book = read_workbook(tmp_path / "large.xlsx", DEFAULT_SCHEMA)
    assert book.rows_read["customers"] == 300 and book.rows_read["activities"] == 900
    phones = book.sheets["customers"].frame["phone"].dropna()
    assert phones.nunique() == len(phones)  # distinct values, as in a real list
    assert info["planted"]  # variants were planted
    paths = md.make_team(tmp_path / "team", n_files=3, total_customers=300, total_activities=900, seed=2)
    books = [read_workbook(p, DEFAULT_SCHEMA) for p in paths]
    assert [b.meta.lang for b in books] == ["ja", "ja", "en"]
    n_customers = sum(b.rows_read["customers"] for b in books)
    assert n_customers == 300  # 291 originals + 9 copies typed by a second person
    assert sum(b.rows_read["activities"] for b in books) in range(898, 903)
    corp = [set(b.sheets["customers"].frame["corporate_number"].dropna()) for b in books]
    assert corp[0] & corp[1] or corp[0] & corp[2] or corp[1] & corp[2]  # shared customers across files


def test_run_demo_runs_the_whole_team_loop(tmp_path: Path, schema) -> None:
    """`xlcrm demo`: validate, merge (a probable duplicate left for a person), distribute, search, report."""
    import io

    import openpyxl
    from rich.console import Console

    from xlcrm.demo import run_demo

    result = run_demo(tmp_path / "demo", schema, today=date(2026, 11, 23), console=Console(file=io.StringIO()))
    steps = dict(result.steps)
    assert result.master is not None and result.master.exists()
    assert (tmp_path / "demo" / "report.xlsx").exists()
    assert len(list((tmp_path / "demo" / "handout").glob("*.xlsx"))) == 4
    assert "1 possible duplicates" in steps["merge"]
    assert "株式会社山田精機" in steps["search"]
    # The legacy list came in through `xlcrm import` and was merged with the team's workbooks.
    assert "5 rows read = 4 written + 1 skipped" in steps["import"]
    assert [p.name for p in result.imported] == ["佐藤_健一.xlsx"]
    master = openpyxl.load_workbook(result.master, read_only=True)
    legacy = {row[2] for row in master["顧客"].iter_rows(min_row=2, values_only=True)}
    assert {"瑞穂精工株式会社", "(株)白鷺ロジテック", "琴平醸造合資会社", "紅葉木材有限会社"} <= legacy
    dup_sheet = master["重複候補"]
    names = {str(v) for row in dup_sheet.iter_rows(min_row=2, values_only=True) for v in row if v}
    assert {"北斗電機株式会社", "ホクト電機"} <= names
