"""The master copied onto PostgreSQL (`xlcrm store copy`) and searched there: `xlcrm search` and
`xlcrm history` on the server give what they give on master.db, through the CLI against a real server
(tests/pgserver.py)."""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures_master import TODAY, build_master
from pgserver import PgServer

from xlcrm.cli import run
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.store import db, pg
from xlcrm.store.searchindex import ROWS_TABLE, TEXT_TABLE
from xlcrm.store.url import StoreURL


def xlcrm(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_master(tmp_path_factory.mktemp("pgmaster"))


@pytest.fixture(scope="module")
def copied(master: Path, pg_server: PgServer) -> str:
    """A database holding the fixture master, copied by `xlcrm store copy`."""
    name = "search_utf8"  # LC_CTYPE C.UTF-8: pg_trgm counts kanji and kana as letters
    pg_server.execute(f"CREATE DATABASE {name} TEMPLATE template0 LC_CTYPE 'C.UTF-8' LC_COLLATE 'C.UTF-8'")
    url = pg_server.url(name)
    code, out, err = xlcrm("store", "copy", "--master", master, "--db", url)
    assert code == 0, err
    assert "rows copied" in out and "LC_CTYPE" not in out
    return url


def sqlite_rows(master: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db.db_path_for(master)) as conn:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        return sorted(conn.execute(f'SELECT {", ".join(map(pg._quote, cols))} FROM "{table}"').fetchall(),
                      key=repr)


def server_rows(url: str, master: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db.db_path_for(master)) as conn:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(f'SELECT {", ".join(map(pg._quote, cols))} FROM "{table}"').fetchall(),  # type: ignore[arg-type]
                      key=repr)


def test_copy_puts_every_record_and_the_search_index_on_the_server_and_again_replaces_them(
        copied: str, master: Path) -> None:
    tables = [*pg.master_tables(DEFAULT_SCHEMA), ROWS_TABLE, TEXT_TABLE]
    for table in tables:
        if table == "meta":
            continue
        assert server_rows(copied, master, table) == sqlite_rows(master, table), table
    assert server_rows(copied, master, "customers")  # the fixture's customers are there
    # Again (and after a change on the server): the same rows, none doubled.
    with psycopg.connect(copied) as conn:
        conn.execute("DELETE FROM customers WHERE customer_id = 'C-000002'")
        conn.execute("INSERT INTO history(run_id, at, entity, record_id, field, how) VALUES (1, 'x', 'y', 'z', 'w', 'merge')")
    code, out, err = xlcrm("store", "copy", "--master", master, "--db", copied, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows"]["customers"] == len(sqlite_rows(master, "customers"))
    for table in tables:
        if table != "meta":
            assert server_rows(copied, master, table) == sqlite_rows(master, table), table
    with psycopg.connect(copied) as conn:  # a new history row gets the next number, not a clash
        conn.execute("INSERT INTO history(run_id, at, entity, record_id, field, how) VALUES (1, 'x', 'y', 'z', 'w', 'merge')")


QUERIES = ["山田", "やまだ", "ﾔﾏﾀﾞ", "yamada", "03-1234-5678", "0312345678", "info@yamada-ss.co.jp", "C-000001",
           "c7", "サクラ", "株式会社", "田中", "東京", "精密", "梅田", "P-000001", "スズキ電機", "やまだ製作所",
           "山田精作所", "スズキ電器", "さくら不動庵",
           # two characters in no name: 住所 (天神), 備考 (定期), a record's text (電話, 納品), nowhere (ぜぜ)
           "天神", "定期", "電話", "納品", "ぜぜ"]


@pytest.mark.parametrize("query", QUERIES)
def test_search_on_the_server_finds_what_master_db_finds(copied: str, master: Path, query: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XLCRM_DB", raising=False)
    code, out, err = xlcrm("search", query, "--master", master, "--json")
    assert code == 0, err
    on_sqlite = json.loads(out)
    monkeypatch.setenv("XLCRM_DB", copied)
    code, out, err = xlcrm("search", query, "--master", master, "--json")
    assert code == 0, err
    on_server = json.loads(out)
    assert on_server == on_sqlite
    if query in ("山田", "やまだ", "ﾔﾏﾀﾞ", "03-1234-5678", "info@yamada-ss.co.jp", "C-000001"):
        assert on_sqlite and on_sqlite[0]["customer_id"] in ("C-000001", "C-000002"), query


def test_two_character_queries_read_the_pair_indexes_on_the_server(copied: str) -> None:
    # pg_trgm finds no trigram in a pattern of two characters (LIKE '%天神%' reads every row): the copy
    # indexes the arrays of character pairs, and a two-character query is answered from them.
    with psycopg.connect(copied) as conn:
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename IN (%s, %s)",
                                            (ROWS_TABLE, TEXT_TABLE))}
        assert {f"{ROWS_TABLE}__keyed_pairs", f"{ROWS_TABLE}__free_pairs", f"{TEXT_TABLE}__pairs"} <= names
        conn.execute("SET enable_seqscan = off")  # a few rows: the planner would read them all anyway
        plan = " ".join(r[0] for r in conn.execute(
            f"EXPLAIN SELECT rowid FROM {ROWS_TABLE} WHERE {pg.pairs_expression(['address', 'notes'])} @> ARRAY['天神']"))
        assert "free_pairs" in plan, plan
        assert conn.execute(f"SELECT customer_id FROM {ROWS_TABLE} WHERE {pg.pairs_expression(['address', 'notes'])} "
                            "@> ARRAY['天神']").fetchall() == [("C-000006",)]
    reader = pg.reader(StoreURL(copied, "--db"))
    try:
        assert reader.pair_index
    finally:
        reader.close()


def test_history_on_the_server_is_the_history_on_master_db(copied: str, master: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XLCRM_DB", raising=False)
    args = ("history", "C-000007", "--master", master, "--json", "--today", TODAY.isoformat())
    code, out, err = xlcrm(*args)
    assert code == 0, err
    on_sqlite = json.loads(out)
    assert on_sqlite["timeline"] and on_sqlite["customer_id"] == "C-000001"
    monkeypatch.setenv("XLCRM_DB", copied)
    code, out, err = xlcrm(*args)
    assert code == 0, err
    assert json.loads(out) == on_sqlite
    code, out, err = xlcrm("history", "山田商事", "--master", master, "--json", "--today", TODAY.isoformat())
    assert code == 0, err
    assert json.loads(out)["customer_id"] == "C-000002"


def test_search_on_a_database_without_a_copy_is_refused_in_one_line(pg_url: str, master: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLCRM_DB", pg_url)
    code, _out, err = xlcrm("search", "山田", "--master", master)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "xlcrm store copy" in lines[0], err


def test_a_database_whose_ctype_has_no_japanese_letters_is_searched_the_same_and_the_copy_says_so(
        pg_url: str, master: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = xlcrm("store", "copy", "--master", master, "--db", pg_url)  # the test server: locale C
    assert code == 0, err
    assert "LC_CTYPE" in out and "C.UTF-8" in out
    monkeypatch.setenv("XLCRM_DB", pg_url)
    code, out, err = xlcrm("search", "山田製作", "--master", master, "--json")
    assert code == 0, err
    assert [h["customer_id"] for h in json.loads(out)][:1] == ["C-000001"]


def test_an_admin_login_searches_and_a_login_in_no_role_is_told_in_one_line(
        pg_server: PgServer, copied: str, master: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _out, err = xlcrm("store", "roles", "--db", copied, "--prefix", "s_")
    assert code == 0, err
    pg_server.execute('DROP ROLE IF EXISTS "boss1"; CREATE ROLE "boss1" LOGIN IN ROLE "s_admin"')
    monkeypatch.delenv("XLCRM_DB", raising=False)
    code, on_sqlite, err = xlcrm("search", "山田", "--master", master, "--json")
    monkeypatch.setenv("XLCRM_DB", copied.replace("postgresql://postgres@", "postgresql://boss1@"))
    code, out, err = xlcrm("search", "山田", "--master", master, "--json")
    assert code == 0 and json.loads(out) == json.loads(on_sqlite), err  # the search index is granted too
    code, _out, err = xlcrm("store", "copy", "--master", master, "--db", copied)  # and stays granted
    code, out, err = xlcrm("search", "山田", "--master", master, "--json")
    assert code == 0 and json.loads(out) == json.loads(on_sqlite), err
    pg_server.execute('DROP ROLE IF EXISTS "reader1"; CREATE ROLE "reader1" LOGIN')  # in no xlcrm role
    monkeypatch.setenv("XLCRM_DB", copied.replace("postgresql://postgres@", "postgresql://reader1@"))
    code, out, err = xlcrm("search", "山田", "--master", master, "--json")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and "refused" in lines[0], err
    assert "xlcrm store user" in lines[0]
