"""The master on PostgreSQL: `xlcrm store init` and `xlcrm store roles` against a real server
(tests/pgserver.py), logins of the roles trying to read what their role hides, and a server that cannot
be reached ending every command in one line before anything is written."""

from __future__ import annotations

import io
import socket
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import pytest
from merge_fixtures import activity, book, customer
from pgserver import PgServer

from xlcrm.cli import run
from xlcrm.schema import DEFAULT_SCHEMA, MASKED_IN_TEXT, build_schema, text_hidden_with
from xlcrm.store import db, pg
from xlcrm.views.export import visible_columns


def xlcrm(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tables(url: str) -> dict[str, dict[str, str]]:
    """Table -> column -> data type, as the server has them."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        out.setdefault(table, {})[column] = kind
    return out


def privileges(url: str, prefix: str) -> set[tuple[Any, ...]]:
    """Every table and column privilege granted to the roles of ``prefix``."""
    with psycopg.connect(url) as conn:
        cols = conn.execute("SELECT grantee, table_name, column_name, privilege_type FROM "
                            "information_schema.column_privileges WHERE grantee LIKE %s", (prefix + "%",)).fetchall()
        tabs = conn.execute("SELECT grantee, table_name, privilege_type FROM information_schema.table_privileges "
                            "WHERE grantee LIKE %s", (prefix + "%",)).fetchall()
    return set(cols) | set(tabs)


def login(server: PgServer, url: str, name: str, role: str) -> str:
    """A person's login, member of ``role``; its URL for the same database."""
    server.execute(f'DROP ROLE IF EXISTS "{name}"; CREATE ROLE "{name}" LOGIN IN ROLE "{role}"')
    return url.replace("postgresql://postgres@", f"postgresql://{name}@")


def test_init_creates_the_masters_tables_from_the_schema(pg_server: PgServer, pg_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "xlcrm.toml"
    config.write_text(f'[store]\nurl = "{pg_url}"\n', encoding="utf-8")
    code, out, err = xlcrm("store", "init", "--config", config)
    assert code == 0, err
    assert "21 tables created, 0 already there" in out
    have = tables(pg_url)
    assert set(have) == set(pg.master_tables(DEFAULT_SCHEMA)) == {
        "meta", "runs", "history", "workbooks", "origins", "duplicates", "conflicts", "conflict_values",
        "deletions", "rejected_rows", "import_log", *(k for e in DEFAULT_SCHEMA for k in (e.key, f"bases_{e.key}"))}
    for entity in DEFAULT_SCHEMA:  # the columns db.py gives SQLite, in PostgreSQL's types
        assert list(have[entity.key]) == [k for k, _ in db.entity_columns(entity)]
        assert set(have[db.base_table(entity)]) == {k for k, _ in db.base_columns(entity)}
    assert have["deals"]["amount"] == "double precision" and have["deals"]["quantity"] == "bigint"
    assert have["customers"]["customer_id"] == "text" and have["runs"]["run_id"] == "bigint"
    with psycopg.connect(pg_url) as conn:
        # run_id numbers itself, as SQLite's INTEGER PRIMARY KEY does
        conn.execute("INSERT INTO runs(started) VALUES ('2024-06-01')")
        assert conn.execute("SELECT run_id FROM runs").fetchone() == (1,)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == \
            (DEFAULT_SCHEMA.version,)

    # Again, through XLCRM_DB and the server's Unix socket, with a column added in xlcrm.toml: nothing
    # created twice, the column added.
    config.write_text('[sheets."顧客"]\ncolumns = [{ label = "会員ランク", type = "text" }]\n', encoding="utf-8")
    monkeypatch.setenv("XLCRM_DB", pg_server.socket_url(pg_url.rsplit("/", 1)[1]))
    code, out, err = xlcrm("store", "init", "--config", config)
    assert code == 0, err
    assert "0 tables created, 21 already there" in out and "customers." in out
    added = set(tables(pg_url)["customers"]) - {k for k, _ in db.entity_columns(DEFAULT_SCHEMA["customers"])}
    assert len(added) == 1


def test_init_refuses_another_applications_database(pg_server: PgServer, pg_url: str) -> None:
    pg_server.execute("CREATE TABLE customers (id int, name text)", pg_url.rsplit("/", 1)[1])
    code, _, err = xlcrm("store", "init", "--db", pg_url)
    assert code == 2
    assert "no xlcrm master" in one_line(err) and "customers" in err
    assert set(tables(pg_url)) == {"customers"}
    code, _, err = xlcrm("store", "roles", "--db", pg_url)
    assert code == 2 and "run `xlcrm store init` first" in one_line(err)


def test_a_staff_login_cannot_select_a_column_its_role_hides(pg_server: PgServer, pg_url: str) -> None:
    assert xlcrm("store", "init", "--db", pg_url)[0] == 0
    code, out, err = xlcrm("store", "roles", "--db", pg_url)
    assert code == 0, err
    assert "xlcrm_admin" in out and "xlcrm_analyst" in out and "xlcrm_sales" in out
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO customers(customer_id, name, phone, email, notes, status) VALUES "
                     "('C-000001', '株式会社青空商事', '03-1111-2222', 'info@aozora.example', "
                     "'社長直通 090-1234-5678', 'active')")
        conn.execute("INSERT INTO history(run_id, at, entity, record_id, field, old, new, how) VALUES "
                     "(1, '2024-06-01', 'customers', 'C-000001', 'phone', '03-0000-0000', '03-1111-2222', 'edit'), "
                     "(1, '2024-06-01', 'customers', 'C-000001', 'status', 'prospect', 'active', 'edit'), "
                     "(1, '2024-06-01', 'customers', 'C-000001', NULL, NULL, NULL, 'new')")

    staff = login(pg_server, pg_url, "tanaka", "xlcrm_analyst")
    with psycopg.connect(staff, autocommit=True) as conn:
        assert conn.execute("SELECT customer_id, name, status FROM customers").fetchall() == [
            ("C-000001", "株式会社青空商事", "active")]
        for column in ("phone", "email", "notes"):  # notes: free text, where exports mask numbers
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(f"SELECT {column} FROM customers")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("SELECT * FROM customers")
        # The change history, without the changes of the columns it hides (a row policy of the role).
        assert conn.execute("SELECT field, old, new FROM history ORDER BY history_id").fetchall() == [
            ("status", "prospect", "active"), (None, None, None)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM bases_customers")  # the bases hold every column's values
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE customers SET status = 'lost'")  # staff read only
        # What the server lets the role read is what `xlcrm export --role analyst` writes, less the
        # free-text columns it masks.
        analyst = DEFAULT_SCHEMA.role("analyst")
        masked = text_hidden_with(analyst)
        assert masked == set(MASKED_IN_TEXT)
        for entity in DEFAULT_SCHEMA:
            readable = {c for c, in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND "
                "table_name = %s AND has_column_privilege(%s, column_name, 'SELECT')", (entity.key, entity.key))}
            expected = {c.key for c in visible_columns(DEFAULT_SCHEMA, analyst)[entity.key] if c.type != "text"}
            assert readable == expected | {k for k, _ in db.BOOKKEEPING}, entity.key

    admin = login(pg_server, pg_url, "owner_login", "xlcrm_admin")
    with psycopg.connect(admin) as conn:
        assert conn.execute("SELECT phone, email, notes FROM customers").fetchone() == (
            "03-1111-2222", "info@aozora.example", "社長直通 090-1234-5678")
        conn.execute("SELECT * FROM history").fetchall()
        conn.execute("INSERT INTO runs(started) VALUES ('2024-06-01')")

    for command in ("init", "roles"):  # a staff login cannot change the master or the roles
        code, _, err = xlcrm("store", command, "--db", staff)
        assert code == 2 and "refused by the server" in one_line(err) and "nothing was changed" in err

    sales = login(pg_server, pg_url, "sato", "xlcrm_sales")  # own customers only: none without a 担当営業
    with psycopg.connect(sales) as conn:
        assert conn.execute("SELECT customer_id FROM customers").fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM conflicts")


def test_roles_twice_same_grants_and_a_role_that_hides_more_loses_the_column(
        pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    config = tmp_path / "xlcrm.toml"
    config.write_text('[roles."経理"]\nhide = ["customers.phone"]\n', encoding="utf-8")
    assert xlcrm("store", "init", "--db", pg_url)[0] == 0
    assert xlcrm("store", "roles", "--db", pg_url, "--config", config, "--prefix", "t4_")[0] == 0
    first = privileges(pg_url, "t4_")
    code, _, err = xlcrm("store", "roles", "--db", pg_url, "--config", config, "--prefix", "t4_")
    assert code == 0, err
    assert privileges(pg_url, "t4_") == first
    assert ("t4_経理", "customers", "phone", "SELECT") not in first
    assert ("t4_経理", "customers", "fax", "SELECT") in first  # hides only the one column it names

    keeper = login(pg_server, pg_url, "suzuki", "t4_経理")
    with psycopg.connect(keeper, autocommit=True) as conn:
        conn.execute("SELECT owner, notes, fax FROM customers")
        config.write_text('[roles."経理"]\nhide = ["customers.phone", "owner"]\n', encoding="utf-8")
        assert xlcrm("store", "roles", "--db", pg_url, "--config", config, "--prefix", "t4_")[0] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT owner FROM customers")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT owner FROM deals")  # `owner` names the column on every sheet
        conn.execute("SELECT notes, fax FROM customers")


def test_store_commands_refuse_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = xlcrm("store", "init")
    assert code == 2 and "no PostgreSQL master given" in one_line(err)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = xlcrm("store", "roles", "--db", f"postgresql://admin:s3cret@127.0.0.1:{port}/crm")
    assert code == 2 and "cannot connect" in one_line(err)
    assert "s3cret" not in err and "admin:***@127.0.0.1" in err
    monkeypatch.setenv("XLCRM_DB", "mysql://db/crm")
    code, _, err = xlcrm("store", "init")
    assert code == 2 and "XLCRM_DB" in one_line(err) and "not a PostgreSQL URL" in err
    bad = tmp_path / "xlcrm.toml"
    bad.write_text('[store]\nurl = "postgresql://x/y"\nuser = "me"\n', encoding="utf-8")
    code, _, err = xlcrm("store", "init", "--config", bad)
    assert code == 2 and "[store] has unknown keys ['user']" in one_line(err)


def test_a_postgresql_master_that_cannot_be_reached_ends_in_one_line(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No server needed: the connection is made before any file is written."""
    team = tmp_path / "team"
    book(team / "sato.xlsx", {"customers": [customer("株式会社青空商事", phone="03-1111-2222")],
                              "activities": [activity("株式会社青空商事", "訪問")]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("XLCRM_DB", f"postgresql://xlcrm:pw@127.0.0.1:{port}/crm")
    code, out, err = xlcrm("merge", team, "--master", master)
    line = one_line(err)
    assert code == 2 and out == ""
    assert line.startswith(f"xlcrm: XLCRM_DB: cannot connect to postgresql://xlcrm:***@127.0.0.1:{port}/crm")
    assert not master.parent.exists()  # nothing written, no master.db beside it

    monkeypatch.delenv("XLCRM_DB")
    config = tmp_path / "xlcrm.toml"
    config.write_text(f'[store]\nurl = "postgresql://127.0.0.1:{port}/crm"\n', encoding="utf-8")
    for args in (("merge", team, "--master", master),
                 ("report", tmp_path / "r.xlsx", "--master", master),
                 ("import", team / "sato.xlsx", "--out", tmp_path / "imp", "--master", master)):
        code, _, err = xlcrm(*args, "--config", config)
        assert code == 2 and "[store] url: cannot connect" in one_line(err), args
    assert not (tmp_path / "r.xlsx").exists() and not (tmp_path / "imp").exists()
    # the demo writes a master.db of its own: with a server configured it says so rather than use it
    code, _, err = xlcrm("demo", tmp_path / "demo", "--config", config)
    assert code == 2 and "demo" in one_line(err) and "[store] url" in err


def test_the_store_modules_translation_keeps_db_py_layout() -> None:
    """Every table statement of db.py reaches PostgreSQL with no SQLite-only word left."""
    for statement in db.bookkeeping_ddl():
        text = pg.to_postgres(statement)
        assert "WITHOUT ROWID" not in text and " REAL" not in text and "INTEGER" not in text, text
    assert pg.to_postgres("run_id INTEGER PRIMARY KEY, n INTEGER") == \
        "run_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT"
    assert [(p.role, p.access, p.own_only) for p in pg.plan_roles(DEFAULT_SCHEMA)] == [
        ("admin", "admin", False), ("sales", "read", True), ("analyst", "read", False)]
    # An admin role that xlcrm.toml limits is limited in the database too.
    limited = build_schema({"roles": {"admin": {"hide": ["birthday"]}}})
    plan = next(p for p in pg.plan_roles(limited) if p.role == "admin")
    assert plan.access == "read" and plan.withheld == {"customers": ("birthday",)}
