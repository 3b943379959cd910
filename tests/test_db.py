"""The master database module on real SQLite files: layout from the schema, stored forms, transactions,
IDs, record states and the review queues, and one-line refusals for a missing or broken file."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from xlcrm.errors import XlcrmError
from xlcrm.schema import DEFAULT_SCHEMA, build_schema
from xlcrm.store import db

S = DEFAULT_SCHEMA
CUST = S.entity("customers")


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = db.connect(tmp_path / "master.db", create=True)
    db.create_tables(c, S)
    return c


def row(**kw: object) -> tuple[object, ...]:
    return tuple(kw.get(k) for k in CUST.keys)


def test_layout_follows_the_schema(conn: sqlite3.Connection) -> None:
    for e in S:
        cols = db.table_columns(conn, e.key)
        assert set(e.keys) <= cols and {"_state", "_merged_into", "_created_run", "_updated_run"} <= cols
    for t in ("runs", "history", "workbooks", "duplicates", "conflicts", "deletions", "meta"):
        assert db.table_exists(conn, t), t
    # a column an admin adds later is added to the existing table, nothing dropped
    custom = build_schema({"sheets": {"顧客": {"columns": [{"key": "rank", "ja": "ランク", "type": "text"}]}}})
    db.create_tables(conn, custom)
    assert "rank" in db.table_columns(conn, "customers") and "fax" in db.table_columns(conn, "customers")


def test_stored_forms_round_trip() -> None:
    day = CUST.column("updated_at") if CUST.has("updated_at") else None
    emp = CUST.column("employees")
    assert db.to_db(emp, 12.0) == 12 and db.to_db(emp, float("nan")) is None
    if day is not None:
        assert db.to_db(day, dt.date(2024, 4, 1)) == "2024-04-01"
        assert db.from_db(day, "2024-04-01") == dt.date(2024, 4, 1)
    assert db.to_db(CUST.column("name"), "") is None
    assert db.decode_value(db.encode_value({"a": "値"})) == {"a": "値"}


def test_transaction_is_all_or_nothing(conn: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError), db.transaction(conn):
        run = db.start_run(conn, "merge", [], "2024-06-01T10:00:00")
        db.insert_records(conn, CUST, [row(customer_id="C-000001", kind="corporate", name="甲社")], run_id=run,
                          source="a.xlsx")
        raise RuntimeError("merge failed")
    assert db.count_active(conn, CUST) == 0 and db.history_count(conn) == 0
    with db.transaction(conn):
        run = db.start_run(conn, "merge", [], "2024-06-01T10:00:00")
        db.insert_records(conn, CUST, [row(customer_id="C-000001", kind="corporate", name="甲社")], run_id=run,
                          source="a.xlsx")
    assert db.count_active(conn, CUST) == 1


def test_ids_states_and_fields(conn: sqlite3.Connection) -> None:
    assert db.format_id(CUST, 12) == "C-000012"
    with db.transaction(conn):
        run = db.start_run(conn, "merge", [], "2024-06-01T10:00:00")
        db.insert_records(conn, CUST, [row(customer_id="C-000001", kind="corporate", name="甲社"),
                                       row(customer_id="C-000002", kind="corporate", name="乙社")],
                          run_id=run, source="a.xlsx")
        db.set_first_free_number(conn, CUST, 3)
        db.update_fields(conn, CUST, [("C-000001", "phone", "03-1111-2222")], run_id=run)
        db.set_state(conn, CUST, "C-000002", "merged", "C-000001", run_id=run)
        with pytest.raises(KeyError):
            db.update_fields(conn, CUST, [("C-000001", "no_such_field", 1)], run_id=run)
    assert db.first_free_number(conn, CUST) == 3
    assert db.record(conn, CUST, "C-000001")["phone"] == "03-1111-2222"
    assert db.record_state(conn, CUST, "C-000002") == "merged"
    assert [r[0] for r in db.fetch_active(conn, CUST)] == ["C-000001"]


def test_review_queues(conn: sqlite3.Connection) -> None:
    with db.transaction(conn):
        run = db.start_run(conn, "merge", [], "2024-06-01T10:00:00")
        db.add_duplicate(conn, "customers", "C-000002", "C-000001", score=0.9, kind="name",
                         evidence=["社名が一致"], run_id=run)
    pending = db.duplicates(conn)
    assert len(pending) == 1 and {pending[0]["a_id"], pending[0]["b_id"]} == {"C-000001", "C-000002"}
    with db.transaction(conn):
        db.decide_duplicate(conn, pending[0]["pair_id"], "distinct", run_id=run, at="2024-06-02T09:00:00")
    assert db.duplicates(conn) == [] and len(db.duplicates(conn, pending_only=False)) == 1


def test_missing_or_broken_database_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match="no master database here") as e:
        db.connect(tmp_path / "none.db")
    assert "\n" not in str(e.value)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(XlcrmError, match="not a readable master database"):
        c = db.connect(broken)
        c.execute("SELECT 1 FROM customers")
    assert db.db_path_for(Path("x/master.xlsx")) == Path("x/master.db")
