"""引き継ぎ: reassignment in one transaction with history, and the book the new owner reads."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

import openpyxl
import pytest
from fixtures_report import OWNERS, build_master

from xlcrm.errors import XlcrmError
from xlcrm.master.handover import handover
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db

pytestmark = pytest.mark.usefixtures("store")

NOW = datetime(2025, 6, 16, 9, 30)
SRC, DST = OWNERS[0], "田中 新人"


def q(master: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(db.db_path_for(master)) as conn:
        return conn.execute(sql, params).fetchall()


def test_handover_reassigns_open_work_and_records_history(tmp_path: Path) -> None:
    m = build_master(tmp_path)
    before_cust = {r[0] for r in q(m, "SELECT customer_id FROM customers WHERE _state='active' AND owner=?", SRC)}
    open_deals = {r[0] for r in q(m, "SELECT deal_id FROM deals WHERE _state='active' AND owner=? AND phase IN "
                                     "('lead','proposal','quote','negotiation') AND customer IN (SELECT customer_id "
                                     "FROM customers WHERE _state='active' AND owner=?)", SRC, SRC)}
    closed_deals = {r[0] for r in q(m, "SELECT deal_id FROM deals WHERE _state='active' AND owner=? AND phase IN "
                                       "('won','lost')", SRC)}
    open_todos = {r[0] for r in q(m, "SELECT todo_id FROM todos WHERE _state='active' AND assignee=? AND "
                                     "status != 'done' AND customer IN (SELECT customer_id FROM customers "
                                     "WHERE _state='active' AND owner=?)", SRC, SRC)}
    others = q(m, "SELECT customer_id, owner FROM customers WHERE owner != ? ORDER BY 1", SRC)
    assert before_cust and closed_deals and open_todos

    out = tmp_path / "book.xlsx"
    res = handover(m, S, SRC, DST, new_owner=True, out=out, who="管理者", now=NOW)

    assert set(res.customers) == before_cust
    assert {r[0] for r in q(m, "SELECT customer_id FROM customers WHERE owner=?", DST)} == before_cust
    assert not q(m, "SELECT 1 FROM customers WHERE _state='active' AND owner=?", SRC)
    assert {r[0] for r in q(m, "SELECT deal_id FROM deals WHERE owner=?", DST)} == open_deals
    assert {r[0] for r in q(m, "SELECT deal_id FROM deals WHERE owner=? AND phase IN ('won','lost')", SRC)} == \
        closed_deals  # who won a deal stays on record
    assert {r[0] for r in q(m, "SELECT todo_id FROM todos WHERE assignee=?", DST)} == open_todos
    assert q(m, "SELECT customer_id, owner FROM customers WHERE owner != ? AND owner != ? ORDER BY 1", SRC, DST) == \
        [o for o in others if o[1] != DST]

    hist = q(m, "SELECT run_id, at, entity, record_id, field, old, new, who, how FROM history WHERE how='handover'")
    assert len(hist) == len(res.changes) == len(before_cust) + len(open_deals) + len(open_todos)
    assert {h[3] for h in hist if h[2] == "customers"} == before_cust
    assert all(h[5] == SRC and h[6] == DST and h[7] == "管理者" and h[0] == res.run_id for h in hist)
    assert {h[4] for h in hist} <= {"owner", "assignee"}
    assert q(m, "SELECT command, status FROM runs WHERE run_id=?", res.run_id) == [("handover", "done")]
    assert q(m, "SELECT DISTINCT updated_at FROM customers WHERE owner=?", DST) == [(NOW.date().isoformat(),)]

    # The book: an index with a link per customer and one sheet per customer with its story.
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames[0] == "引き継ぎ一覧"
    assert sorted(wb.sheetnames[1:]) == sorted(before_cust)
    index = wb["引き継ぎ一覧"]
    links = {c.value: c.hyperlink.location for row in index.iter_rows() for c in row if c.hyperlink}
    assert set(links) == before_cust and all(v == f"'{k}'!A1" for k, v in links.items())
    for cid in before_cust:
        ws = wb[cid]
        text = {str(c.value) for row in ws.iter_rows() for c in row if c.value is not None}
        for (did,) in q(m, "SELECT deal_id FROM deals WHERE customer=? AND owner=? AND _state='active'", cid, DST):
            assert did in text
        for (tid,) in q(m, "SELECT todo_id FROM todos WHERE customer=? AND status!='done' AND _state='active'", cid):
            assert tid in text
        for aid, resp in q(m, "SELECT activity_id, response FROM activities WHERE customer=? AND type='complaint' "
                              "AND _state='active'", cid):
            assert aid in text and (resp is None or resp in text)
        for (name,) in q(m, "SELECT name FROM contacts WHERE customer=? AND _state='active'", cid):
            assert name in text
        assert not any(t.startswith("A-999999") for t in text)  # merged activity not shown


def test_handover_of_selected_customers_and_refusals(tmp_path: Path) -> None:
    m = build_master(tmp_path, customers=12)
    mine = [r[0] for r in q(m, "SELECT customer_id FROM customers WHERE _state='active' AND owner=? ORDER BY 1", SRC)]
    res = handover(m, S, SRC, DST, new_owner=True, customers=[mine[0]], now=NOW)
    assert res.customers == [mine[0]] and res.workbook is None
    assert q(m, "SELECT owner FROM customers WHERE customer_id=?", mine[1]) == [(SRC,)]

    history = q(m, "SELECT COUNT(*) FROM history")
    someone_else = q(m, "SELECT customer_id FROM customers WHERE owner=? LIMIT 1", OWNERS[1])[0][0]
    with pytest.raises(XlcrmError, match=f"{someone_else} belongs to {OWNERS[1]}"):
        handover(m, S, SRC, DST, new_owner=True, customers=[mine[1], someone_else], now=NOW)
    with pytest.raises(XlcrmError, match="C-900002 is merged into C-000001"):
        handover(m, S, OWNERS[1], DST, new_owner=True, customers=["C-900002"], now=NOW)
    with pytest.raises(XlcrmError, match="does not exist"):
        handover(m, S, SRC, DST, new_owner=True, customers=["C-123456"], now=NOW)
    with pytest.raises(XlcrmError, match="same person"):
        handover(m, S, SRC, f" {SRC} ", now=NOW)
    with pytest.raises(XlcrmError, match="known: "):
        handover(m, S, "退職者", DST, now=NOW)
    # All or nothing: refused hand-overs changed nothing.
    assert q(m, "SELECT COUNT(*) FROM history") == history
    assert q(m, "SELECT owner FROM customers WHERE customer_id=?", mine[1]) == [(SRC,)]


def test_failed_book_write_rolls_back_the_reassignment(tmp_path: Path) -> None:
    m = build_master(tmp_path, customers=6)
    before = q(m, "SELECT customer_id, owner FROM customers ORDER BY 1")
    with pytest.raises(XlcrmError):
        handover(m, S, SRC, DST, new_owner=True, out=tmp_path / "no-such-folder" / "book.xlsx", now=NOW)
    assert q(m, "SELECT customer_id, owner FROM customers ORDER BY 1") == before
    assert q(m, "SELECT COUNT(*) FROM history WHERE how='handover'") == [(0,)]
    assert not list(tmp_path.glob(".*.lock"))


def test_master_workbook_is_rewritten_when_untouched(tmp_path: Path) -> None:
    masterbook = pytest.importorskip("xlcrm.master.masterbook")
    from python_calamine import CalamineWorkbook

    m = build_master(tmp_path, customers=6)
    masterbook.export_master(m, S)
    res = handover(m, S, SRC, DST, new_owner=True, now=NOW)
    assert res.master_rewritten and not res.notes
    rows = CalamineWorkbook.from_path(str(m)).get_sheet_by_name("顧客").to_python()
    owner_col = rows[0].index("担当営業")
    owners = {r[0]: r[owner_col] for r in rows[1:] if r[0]}
    assert all(owners[c] == DST for c in res.customers)
    # Only its file time changed (a copy, a restore, a sync): the same content, rewritten as usual.
    os.utime(m, (1, 1))
    assert handover(m, S, DST, SRC, now=NOW).master_rewritten
    # Saved by a person since written (its content changed): left alone, with a note.
    wb = openpyxl.load_workbook(m)
    wb.save(m)
    res2 = handover(m, S, SRC, DST, new_owner=True, now=NOW)
    assert not res2.master_rewritten and res2.notes and "not rewritten" in res2.notes[0]
