"""What an owner reads in the report says exactly what was counted: boundary days (exactly 90 and 365
days count), calendar days for stale customers, a deleted customer's sales, 業種 for companies only,
charts that show a top N say so, and typed decisions not applied yet are announced.

The expected figures are worked out here from the dates planted, not with ``xlcrm.views.analysis``.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import openpyxl
import pytest
from fixtures_report import build_master, insert
from merge_fixtures import activity, book, customer, delete_rows, edit_cells
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db
from xlcrm.views.report import make_report

pytestmark = pytest.mark.usefixtures("store")

AS_OF = date(2025, 6, 15)
runner = CliRunner()
_register()


def _days(n: int) -> str:
    return (AS_OF - timedelta(days=n)).isoformat()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = tmp_path_factory.mktemp("wording") / "master.xlsx"
    conn = db.connect(db.db_path_for(m), create=True)
    db.create_tables(conn, S)
    conn.execute("BEGIN")
    base = {"kind": "corporate", "owner": "佐藤", "dm_consent": "yes", "status": "active",
            "industry": "it", "prefecture": "東京都", "updated_at": _days(10)}
    rows = [
        # no-contact boundary: exactly 90 days counts, 89 does not
        ("C-000001", "九十日商事株式会社", {}),
        ("C-000002", "八十九日商事株式会社", {}),
        # lapsed boundary: last purchase exactly 365 days ago counts, 364 does not
        ("C-000003", "一年前物産株式会社", {}),
        ("C-000004", "一年弱物産株式会社", {}),
        # a person has no 業種; a company without one is missing it
        ("C-000005", "山田 太郎", {"kind": "individual", "industry": None}),
        ("C-000006", "業種なし工業株式会社", {"industry": None}),
        # stale: updated exactly 365 calendar days ago, in the afternoon
        ("C-000007", "古い情報株式会社", {"updated_at": None}),
    ]
    for cid, name, extra in rows:
        insert(conn, "customers", {**base, "customer_id": cid, "name": name, **extra})
    insert(conn, "customers", {**base, "customer_id": "C-000008", "name": "削除済み製作所株式会社",
                               "industry": "manufacturing", "_state": "deleted"})
    acts = {"C-000001": 90, "C-000002": 89, "C-000003": 1, "C-000004": 1, "C-000005": 1, "C-000006": 1,
            "C-000007": 1}
    for i, (cid, days) in enumerate(acts.items(), start=1):
        insert(conn, "activities", {"activity_id": f"A-{i:06d}", "date": _days(days), "customer": cid,
                                    "type": "call", "content": "電話"})
    sales = [("C-000003", 365, 100_000), ("C-000004", 364, 100_000), ("C-000001", 30, 50_000),
             ("C-000008", 20, 2_880_000)]
    for i, (cid, days, amount) in enumerate(sales, start=1):
        insert(conn, "deals", {"deal_id": f"D-{i:06d}", "customer": cid, "title": "受注", "amount": amount,
                               "phase": "won", "closed_on": _days(days)})
    insert(conn, "deals", {"deal_id": "D-000099", "customer": "C-000008", "title": "提案中", "amount": 1_000,
                           "phase": "proposal", "expected_close": _days(-5)})
    insert(conn, "todos", {"todo_id": "T-000001", "due": _days(3), "customer": "C-000008",
                           "content": "削除した顧客へ連絡", "assignee": "佐藤", "status": "todo"})
    conn.execute("INSERT INTO history(run_id, at, entity, record_id, field, old, new, who, how) VALUES "
                 "(1, ?, 'customers', 'C-000007', 'phone', NULL, '03-0000-0000', '佐藤', 'edit')",
                 (f"{_days(365)}T15:30:00",))
    conn.execute("COMMIT")
    conn.close()
    return m


@pytest.fixture(scope="module")
def wb(master: Path, tmp_path_factory: pytest.TempPathFactory) -> openpyxl.Workbook:
    out = tmp_path_factory.mktemp("out") / "report.xlsx"
    res = runner.invoke(app, ["report", str(out), "--master", str(master), "--as-of", AS_OF.isoformat()])
    assert res.exit_code == 0, res.output
    return openpyxl.load_workbook(out)


def _table(wb: openpyxl.Workbook, name: str) -> list[list[object]]:
    for ws in wb.worksheets:
        if name in ws.tables:
            rows = [[c.value for c in r] for r in ws[ws.tables[name].ref]]
            return [r for r in rows[1:] if any(v is not None for v in r)]
    raise AssertionError(name)


def _text(wb: openpyxl.Workbook) -> str:
    return "\n".join(str(c.value) for ws in wb.worksheets for r in ws.iter_rows() for c in r if c.value)


def test_no_contact_counts_exactly_90_days(wb: openpyxl.Workbook) -> None:
    ids = {r[0] for r in _table(wb, "rpt_followup_no_contact")}
    assert "C-000001" in ids and "C-000002" not in ids
    assert "90日以上接触のない顧客" in _text(wb)


def test_lapsed_counts_exactly_365_days_and_says_以上_everywhere(wb: openpyxl.Workbook) -> None:
    ids = {r[0] for r in _table(wb, "rpt_lapsed")}
    assert "C-000003" in ids and "C-000004" not in ids
    text = _text(wb)
    assert "365日超" not in text and "365 日以上" in text and "長期未購入の顧客（365日以上）" in text
    # one word per meaning: 休眠 is the status only, never the RFM segment or the lapsed list
    assert "休眠顧客" not in text


def test_stale_counts_calendar_days(wb: openpyxl.Workbook) -> None:
    stale = {r[0]: r for r in _table(wb, "rpt_quality_stale")}
    assert "C-000007" in stale and stale["C-000007"][4] == 365


def test_deleted_customer_is_in_no_figure(wb: openpyxl.Workbook) -> None:
    # its records are still active here, as in a master from before deletion took them along
    top = _table(wb, "rpt_top_customers")
    assert [r[1] for r in top] == ["C-000003", "C-000004", "C-000001"]
    assert all(r[2] for r in top)  # never a blank name
    by_industry = {r[0]: r[1] for r in _table(wb, "rpt_sales_by_industry")}
    assert by_industry == {"情報通信業": 50_000}  # last 12 months; no 製造業, no (未設定)
    assert sum(r[1] for r in _table(wb, "rpt_sales_monthly")) == 250_000
    assert all(r[1] != "D-000099" for r in _table(wb, "rpt_pipeline_deals"))
    assert all(r[0] != "T-000001" for r in _table(wb, "rpt_followup_overdue"))
    assert all(r[0] != "C-000008" for r in _table(wb, "rpt_rfm_customers"))


def test_industry_missing_counts_companies_only(wb: openpyxl.Workbook) -> None:
    row = next(r for r in _table(wb, "rpt_quality_missing") if r[1] == "業種")
    assert (row[3], row[4]) == (1, 6)  # C-000006 of the six companies; the person is not counted
    assert "法人" in str(row[2])


def test_top_n_charts_say_so(tmp_path: Path) -> None:
    m = build_master(tmp_path)
    res = make_report(m, tmp_path / "r.xlsx", S, as_of=AS_OF)
    titles = {spec.key: spec.title for spec, _ in res.report.charts()}
    assert titles["top_customers"].endswith("（上位10件）")
    assert not titles["sales_monthly"].endswith("件）")


def test_report_warns_about_typed_decisions_not_applied(tmp_path: Path) -> None:
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    seed = book(tmp_path / "team" / "sato.xlsx", {
        "customers": [customer("株式会社青空商事", phone="03-1111-2222"), customer("緑山工業株式会社")],
        "activities": [activity("株式会社青空商事", "初回訪問")]})
    assert runner.invoke(app, ["merge", str(seed), "--master", str(master), "--today", "2024-06-01"]).exit_code == 0
    res = runner.invoke(app, ["distribute", "--master", str(master), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    handout = next((tmp_path / "out").glob("*.xlsx"))
    assert delete_rows(handout, "顧客", {"顧客名": "緑山工業株式会社"}) == 1
    assert runner.invoke(app, ["merge", str(handout), "--master", str(master), "--today", "2024-06-02"]).exit_code in (0, 1)
    clean = runner.invoke(app, ["report", str(tmp_path / "r1.xlsx"), "--master", str(master)])
    assert clean.exit_code == 0 and "warning" not in clean.stderr
    assert edit_cells(master, "削除候補", {"ID": "C-000002"}, {"判断": "削除"}) == 1
    res = runner.invoke(app, ["report", str(tmp_path / "r2.xlsx"), "--master", str(master)])
    assert res.exit_code == 0, res.output
    assert "未反映の判断が 1 件" in res.stderr and "xlcrm resolve" in res.stderr
    summary = openpyxl.load_workbook(tmp_path / "r2.xlsx").worksheets[0]
    assert any("未反映の判断" in str(c.value) for r in summary.iter_rows() for c in r if c.value)
