"""Decisions on the review sheets (xlcrm.master.resolve): combining two customers, DM consent, typed values
checked like cells, and 統合 / 別 / 削除 / 残す applied through the CLI on a real master."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from merge_fixtures import activity, book, connect, customer, edit_cells, records, sheet_rows
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.master.resolve import combine_customers, combine_dm, parse_typed
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db

pytestmark = pytest.mark.usefixtures("store")

runner = CliRunner()
_register()
CUST = S.entity("customers")


@pytest.mark.parametrize(("a", "b", "out"), [
    ("yes", "no", "no"), ("no", None, "no"), ("unknown", "yes", "yes"), (None, "unknown", "unknown"),
    (None, None, None),
])
def test_strictest_dm_consent_wins(a: str | None, b: str | None, out: str | None) -> None:
    assert combine_dm(a, b) == out == combine_dm(b, a)


def test_typed_values_are_checked_like_cells() -> None:
    assert parse_typed(CUST.column("phone"), "０３−１２３４−５６７８") == ("03-1234-5678", None)
    assert parse_typed(CUST.column("status"), "取引中") == ("active", None)
    assert parse_typed(CUST.column("status"), "ねている") == (None, "choice")
    value, problem = parse_typed(CUST.column("email"), "not an e-mail")
    assert value is None and problem is not None


def test_combine_keeps_the_older_id_and_everything_attached(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "m.db", create=True)
    db.create_tables(conn, S)

    def row(**kw: object) -> tuple[object, ...]:
        return tuple(kw.get(k) for k in CUST.keys)

    with db.transaction(conn):
        run = db.start_run(conn, "test", [], "2024-06-01T10:00:00")
        db.insert_records(conn, CUST, [
            row(customer_id="C-000001", kind="corporate", name="山田精機", phone="03-1111-1111", dm_consent="yes"),
            row(customer_id="C-000002", kind="corporate", name="山田精機株式会社", phone="03-2222-2222",
                fax="03-2222-2223", dm_consent="no")], run_id=run, source="a.xlsx")
        act = S.entity("activities")
        db.insert_records(conn, act, [tuple({"activity_id": "A-000001", "customer": "C-000002", "type": "call",
                                             "content": "電話", "date": "2024-05-01"}.get(k) for k in act.keys)],
                          run_id=run, source="a.xlsx")
        keep = combine_customers(conn, S, "C-000002", "C-000001", run_id=run, at="2024-06-01T10:00:00", who="admin")
    assert keep == "C-000001"
    survivor = db.record(conn, CUST, "C-000001")
    assert survivor["fax"] == "03-2222-2223" and survivor["dm_consent"] == "no"
    assert "03-2222-2222" in survivor["notes"]  # the other phone is kept
    assert db.record(conn, CUST, "C-000002")["_merged_into"] == "C-000001"
    assert db.record(conn, S.entity("activities"), "A-000001")["customer"] == "C-000001"
    conn.close()


def _seed(tmp_path: Path) -> tuple[Path, Path]:
    a = book(tmp_path / "team" / "sato.xlsx", {
        "customers": [customer("株式会社青空商事", phone="03-1111-2222", address="千代田区1-1-1", prefecture="東京都"),
                      customer("緑山工業株式会社")],
        "activities": [activity("株式会社青空商事", "初回訪問")]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert runner.invoke(app, ["merge", str(a), "--master", str(master), "--today", "2024-06-01"]).exit_code == 0
    assert runner.invoke(app, ["distribute", "--master", str(master), "--out", str(tmp_path / "out")]).exit_code == 0
    return master, next((tmp_path / "out").glob("*.xlsx"))


def test_resolve_applies_a_deletion_decision_and_clears_the_sheet(tmp_path: Path) -> None:
    from merge_fixtures import delete_rows

    master, handout = _seed(tmp_path)
    assert delete_rows(handout, "顧客", {"顧客名": "緑山工業株式会社"}) == 1
    assert runner.invoke(app, ["merge", str(handout), "--master", str(master)]).exit_code == 0
    listed = sheet_rows(master, "削除候補")
    assert [r["名称"] for r in listed] == ["緑山工業株式会社"]
    edit_cells(master, "削除候補", {"番号": listed[0]["番号"]}, {"判断": "削除"})
    res = runner.invoke(app, ["resolve", "--master", str(master)])
    assert res.exit_code == 0, res.output
    assert sheet_rows(master, "削除候補") == []
    assert {r["name"] for r in records(master).values()} == {"株式会社青空商事"}
    conn: sqlite3.Connection = connect(master)
    try:
        assert any(h["how"] == "delete" for h in db.history_of(conn, "customers", ["C-000002"]))
    finally:
        conn.close()
