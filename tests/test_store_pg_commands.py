"""Every command on a PostgreSQL master (tests/pgserver.py, a real server), as an admin runs them: the
same weekly loop on master.db and on the server gives the same master and the same files; `store copy`
there and back loses nothing; two admins merging at once both land; a merge killed while writing
leaves the server as it was; a server that cannot be used ends in one line with nothing written."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from merge_fixtures import activity, book, customer
from pgserver import PgServer
from python_calamine import CalamineWorkbook

from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db
from xlcrm.store.url import StoreURL
from xlcrm.store.working import copy_out

TODAY = "2026-12-01"
#: A time of day inside a cell: when the file was written, which two runs never share.
_CLOCK = re.compile(r"\d{4}[-/]\d{1,2}[-/]\d{1,2}[ T]\d{1,2}:\d{2}(?::\d{2})?|\d{8}-\d{6}")


def xlcrm(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    if env is not None and not env.get("XLCRM_DB"):
        full.pop("XLCRM_DB", None)
    return subprocess.run([sys.executable, "-m", "xlcrm", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=600, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's team workbooks and legacy list (made on master.db: the demo writes its own master)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = xlcrm("demo", out, env={"XLCRM_DB": ""})
    assert proc.returncode == 0, proc.stderr
    return out


def _rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in columns)
    return sorted((tuple(r) for r in conn.execute(f'SELECT {names} FROM "{table}"')), key=repr)


def master_content(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """What a master holds that two runs of the same commands share: every record with its state, the
    history without its times, the review queues' decisions, the rejected rows, the import log."""
    out = {}
    for entity in S:
        out[entity.key] = _rows(conn, entity.key, [*entity.keys, "_state", "_merged_into"])
    out["history"] = _rows(conn, "history", ["entity", "record_id", "field", "old", "new", "how"])
    out["duplicates"] = _rows(conn, "duplicates", ["entity", "a_id", "b_id", "status"])
    out["conflicts"] = _rows(conn, "conflicts", ["entity", "record_id", "field", "status"])
    out["deletions"] = _rows(conn, "deletions", ["entity", "record_id", "status"])
    out["rejected_rows"] = _rows(conn, "rejected_rows", ["owner", "entity", "seq"])
    # the two tables without a key, which the server gets whole when they change
    out["conflict_values"] = _rows(conn, "conflict_values", ["conflict_id", "value", "who", "run_id"])
    out["import_log"] = _rows(conn, "import_log", ["run_id", "entity", "status", "rows_read", "new", "updated",
                                                   "unchanged", "linked", "rejected", "conflicts"])
    return out


def cells(path: Path, root: Path) -> dict[str, list[list[Any]]]:
    """Every sheet's values, times of day and the run's folder blanked (they differ between runs)."""
    book = CalamineWorkbook.from_path(str(path))

    def same(v: Any) -> Any:
        return _CLOCK.sub("<time>", v.replace(str(root), "<root>")) if isinstance(v, str) else v

    return {name: [[same(v) for v in row]
                   for row in book.get_sheet_by_name(name).to_python()]
            for name in book.sheet_names if not name.startswith("_")}


def weekly_loop(demo: Path, root: Path, url: str | None) -> dict[str, Any]:
    """merge, resolve, distribute, the handouts merged back, handover, export-master, report, export,
    mailing-list and import --master, each through the CLI; what they wrote."""
    env = {"XLCRM_DB": url or ""}
    team = root / "team"
    team.mkdir(parents=True)
    for name in ("sato.xlsx", "suzuki.xlsx", "takahashi.xlsx", "tanaka.xlsx"):
        shutil.copy(demo / name, team / name)
    master = root / "m" / "master.xlsx"

    def run(*args: object, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        proc = xlcrm(*args, env=env, cwd=root)
        assert proc.returncode in ok, (args, proc.stderr)
        return proc

    run("merge", team, "--master", master, "--today", TODAY)
    run("resolve", "--master", master)
    run("distribute", "--master", master, "--out", root / "handout")
    handouts = sorted((root / "handout").glob("*.xlsx"))
    run("merge", root / "handout", "--master", master, "--today", TODAY)
    run("handover", root / "handover.xlsx", "--master", master, "--from", "佐藤 健一", "--to", "鈴木 美咲")
    (master.parent / "master.xlsx").unlink()
    run("export-master", "--master", master)
    run("report", root / "report.xlsx", "--master", master, "--as-of", TODAY)
    run("export", root / "export.xlsx", "--master", master, "--role", "admin")
    run("mailing-list", root / "dm.xlsx", "--master", master)
    run("import", demo / "legacy", "--out", root / "imported", "--master", master, "--owner", "佐藤 健一",
        ok=(0, 1))
    files = {p.relative_to(root).as_posix(): cells(p, root) for p in
             [*handouts, root / "handover.xlsx", root / "report.xlsx", root / "export.xlsx", root / "dm.xlsx",
              master, *sorted((root / "imported").glob("*.xlsx"))]}
    return {"files": files, "master": master}


def test_the_weekly_loop_on_the_server_gives_what_master_db_gives(demo: Path, tmp_path: Path,
                                                                   pg_server: PgServer) -> None:
    url = pg_server.url(pg_server.database())
    on_file = weekly_loop(demo, tmp_path / "file", None)
    on_server = weekly_loop(demo, tmp_path / "server", url)

    server_master = on_server["master"]
    assert not db.db_path_for(server_master).exists()  # the server is the store: no master.db beside
    backups = sorted((server_master.parent / "backups").rglob("*.db"))
    assert backups, "the server's state before each change is kept as a master.db in backups/"

    copy = tmp_path / "server.db"
    copy_out(StoreURL(url, "test"), S, copy)
    with db.connect(db.db_path_for(on_file["master"])) as a, db.connect(copy) as b:
        want, got = master_content(a), master_content(b)
    assert sum(len(v) for v in want.values()) > 1500
    for table in want:
        assert got[table] == want[table], table

    assert on_server["files"].keys() == on_file["files"].keys()
    for name, sheets in on_file["files"].items():
        assert on_server["files"][name] == sheets, name


def table_rows(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a master.db has (SQLite's own FTS5 indexes aside: the copy builds them
    anew), values with their types."""
    tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    virtual = [name for name, sql in tables if sql.startswith("CREATE VIRTUAL")]
    names = [name for name, _ in tables if not name.startswith("sqlite")
             and not any(name == v or name.startswith(f"{v}_") for v in virtual)]
    out = {}
    for name in names:
        rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
        out[name] = sorted((tuple((type(v).__name__, v) for v in r) for r in rows), key=repr)
    return out


def test_store_copy_there_and_back_keeps_every_row(demo: Path, tmp_path: Path, pg_url: str) -> None:
    master = demo / "master" / "master.xlsx"
    there = xlcrm("store", "copy", "--master", master, "--db", pg_url, env={})
    assert there.returncode == 0, there.stderr
    back = tmp_path / "back" / "master.db"
    proc = xlcrm("store", "copy", "--from", pg_url, "--to", back, env={})
    assert proc.returncode == 0, proc.stderr
    assert "rows copied" in proc.stdout
    with db.connect(db.db_path_for(master)) as a, db.connect(back) as b:
        want, got = table_rows(a), table_rows(b)
    want.pop("meta"), got.pop("meta")  # the copy notes it was on a server (search_rows_copied)
    assert sum(len(v) for v in want.values()) > 3000
    assert got == want
    # The copy is a master on its own: search it with master.db's FTS5 index, as before the move.
    shutil.copy(master, back.with_suffix(".xlsx"))
    hits = xlcrm("search", "山田", "--master", back.with_suffix(".xlsx"), "--json", env={})
    want_hits = xlcrm("search", "山田", "--master", master, "--json", env={})
    assert hits.returncode == 0 and hits.stdout == want_hits.stdout
    # ... and is refused as a target once it holds a master (a copy over it needs --force)
    again = xlcrm("store", "copy", "--from", pg_url, "--to", back, env={})
    assert again.returncode == 2 and "--force" in one_line(again)


def _team(folder: Path, owner: str, names: list[str]) -> Path:
    book(folder / f"{owner}.xlsx", {"customers": [customer(n, phone=f"03-{4000 + i:04d}-{len(owner):04d}")
                                                  for i, n in enumerate(names)],
                                    "activities": [activity(names[0], f"{owner}の訪問")]}, owner=owner)
    return folder


def _server_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _holding_a_table_lock(url: str) -> psycopg.Connection[Any]:
    """A session holding every master table's write lock: a command reaching its write waits for it."""
    conn = psycopg.connect(url)
    conn.execute("LOCK TABLE customers, activities, history, meta IN SHARE MODE")
    return conn


def _waiting_on(url: str, what: str, timeout: float = 120) -> None:
    """Until a session of xlcrm waits for ``what`` (Lock: a table lock; advisory: the master's lock)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = _server_rows(url, "SELECT application_name, wait_event_type, wait_event FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'xlcrm %'")
        if any(r[1] == "Lock" and r[2] == what for r in rows):
            return
        time.sleep(0.2)
    raise AssertionError(f"no xlcrm session waited for {what}")


def test_two_admins_merging_at_once_both_land_the_second_says_it_waited(tmp_path: Path, pg_url: str) -> None:
    master = tmp_path / "m" / "master.xlsx"
    first = xlcrm("merge", _team(tmp_path / "tokyo", "佐藤", ["株式会社青空商事"]), "--master", master,
                  env={"XLCRM_DB": pg_url})
    assert first.returncode == 0, first.stderr
    tokyo = _team(tmp_path / "tokyo2", "田中", [f"東京商事{i}株式会社" for i in range(30)])
    osaka = _team(tmp_path / "osaka", "鈴木", [f"大阪物産{i}株式会社" for i in range(30)])
    env = {**os.environ, "XLCRM_DB": pg_url}
    blocker = _holding_a_table_lock(pg_url)  # holds the first merge in its write, the lock taken
    try:
        a = subprocess.Popen([sys.executable, "-m", "xlcrm", "merge", str(tokyo), "--master", str(master)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _waiting_on(pg_url, "relation")
        b = subprocess.Popen([sys.executable, "-m", "xlcrm", "merge", str(osaka), "--master",
                              str(tmp_path / "osaka-office" / "master.xlsx")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _waiting_on(pg_url, "advisory")
    finally:
        blocker.close()
    _, err_a = a.communicate(timeout=300)
    _, err_b = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    assert "waited" not in err_a
    assert "waited" in err_b and "`xlcrm merge` of postgres" in err_b
    names = {r[0] for r in _server_rows(pg_url, "SELECT name FROM customers WHERE _state = 'active'")}
    assert names == {"株式会社青空商事", *(f"東京商事{i}株式会社" for i in range(30)),
                     *(f"大阪物産{i}株式会社" for i in range(30))}
    ids = [r[0] for r in _server_rows(pg_url, "SELECT customer_id FROM customers")]
    assert len(ids) == len(set(ids)) == 61
    runs = _server_rows(pg_url, "SELECT count(*) FROM runs WHERE status = 'done'")[0][0]
    assert runs == 3


def test_a_merge_killed_while_writing_to_the_server_leaves_it_as_it_was(tmp_path: Path, pg_url: str) -> None:
    master = tmp_path / "m" / "master.xlsx"
    assert xlcrm("merge", _team(tmp_path / "a", "佐藤", ["株式会社青空商事"]), "--master", master,
                 env={"XLCRM_DB": pg_url}).returncode == 0
    tables = ("customers", "activities", "history", "runs", "meta", "search_rows")
    before = {t: sorted(map(repr, _server_rows(pg_url, f"SELECT * FROM {t}"))) for t in tables}
    workbook = master.read_bytes()
    blocker = _holding_a_table_lock(pg_url)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "xlcrm", "merge",
                                 str(_team(tmp_path / "b", "鈴木", ["緑山工業株式会社"])), "--master", str(master)],
                                env={**os.environ, "XLCRM_DB": pg_url}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        _waiting_on(pg_url, "relation")  # inside its write to the server
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        blocker.close()
    after = {t: sorted(map(repr, _server_rows(pg_url, f"SELECT * FROM {t}"))) for t in tables}
    assert after == before
    assert master.read_bytes() == workbook
    again = xlcrm("merge", tmp_path / "b", "--master", master, env={"XLCRM_DB": pg_url})
    assert again.returncode == 0, again.stderr
    names = {r[0] for r in _server_rows(pg_url, "SELECT name FROM customers")}
    assert names == {"株式会社青空商事", "緑山工業株式会社"}


def test_a_server_that_cannot_be_used_ends_in_one_line_with_nothing_written(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    team = _team(tmp_path / "team", "佐藤", ["株式会社青空商事"])
    master = tmp_path / "m" / "master.xlsx"
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url, says in ((f"postgresql://admin:s3cret@127.0.0.1:{port}/crm", "cannot connect"),
                      (pg_server.url(pg_server.database(), user="no_such_login_for_xlcrm"), "cannot connect"),
                      (pg_server.url("no_such_database"), "cannot connect")):
        proc = xlcrm("merge", team, "--master", master, env={"XLCRM_DB": url})
        line = one_line(proc)
        assert proc.returncode == 2 and says in line and "s3cret" not in line, line
        assert not master.parent.exists()

    # a login that may connect but not change the master (a staff login on an admin's PC)
    pg_server.execute("DROP ROLE IF EXISTS xlcrm_test_staff; CREATE ROLE xlcrm_test_staff LOGIN")
    proc = xlcrm("merge", team, "--master", master,
                 env={"XLCRM_DB": pg_url.replace("postgres@", "xlcrm_test_staff@")})
    line = one_line(proc)
    assert proc.returncode == 2 and "refused this login" in line and "--role admin" in line, line
    assert not master.parent.exists()

    # a master of another schema version
    assert xlcrm("merge", team, "--master", master, env={"XLCRM_DB": pg_url}).returncode == 0
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE meta SET value = '2.0' WHERE key = 'schema_version'")
    before = sorted(p.name for p in master.parent.rglob("*"))
    for args in (("merge", team, "--master", master), ("report", tmp_path / "r.xlsx", "--master", master)):
        proc = xlcrm(*args, env={"XLCRM_DB": pg_url})
        line = one_line(proc)
        assert proc.returncode == 2 and "schema version 2.0" in line, line
    assert sorted(p.name for p in master.parent.rglob("*")) == before
    assert not (tmp_path / "r.xlsx").exists()

    # the same master.xlsx without the server configured (another shell, a colleague's PC setting)
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE meta SET value = '1.0' WHERE key = 'schema_version'")
    proc = xlcrm("merge", team, "--master", master, env={"XLCRM_DB": ""})
    line = one_line(proc)
    assert proc.returncode == 2 and f"belongs to the master on {pg_url}" in line and "XLCRM_DB" in line
    assert sorted(p.name for p in master.parent.rglob("*")) == before  # no master.db started beside it

    # an empty server and an existing master.xlsx: its records are in a master.db, to be copied first
    proc = xlcrm("resolve", "--master", master, env={"XLCRM_DB": pg_server.url(pg_server.database())})
    assert proc.returncode == 2 and "store copy" in one_line(proc)


def test_each_pc_keeps_a_copy_and_reads_the_server_again_once_another_changed_it(tmp_path: Path,
                                                                                  pg_url: str) -> None:
    """Two admins' PCs (their own state folders): each works on the copy it keeps, and a change made
    from the other PC is read from the server before the next command."""
    pcs = {name: {"XLCRM_DB": pg_url, "XLCRM_STATE_DIR": str(tmp_path / f"state-{name}")} for name in "ab"}
    master = {name: tmp_path / f"office-{name}" / "master.xlsx" for name in "ab"}

    def merge(pc: str, owner: str, names: list[str]) -> dict[str, Any]:
        import json

        proc = xlcrm("merge", _team(tmp_path / f"{pc}-{owner}", owner, names), "--master", master[pc], "--json",
                     env=pcs[pc])
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first = merge("a", "佐藤", ["株式会社青空商事"])
    again = merge("a", "佐藤", ["株式会社青空商事", "緑山工業株式会社"])
    kept = next((tmp_path / "state-a" / "servers").glob("*/master.db"))
    assert kept.stat().st_mode & 0o077 == 0  # personal data: its owner's only
    other = merge("b", "鈴木", ["大阪物産株式会社"])  # PC b reads the server: a's customers are there
    assert other["timings"]["server_read"] > 0 and "server_write" in other["timings"]
    assert first["records_created"]["customers"] == 1 and again["records_created"]["customers"] == 1
    last = merge("a", "佐藤", ["株式会社青空商事", "緑山工業株式会社", "北斗電機株式会社"])
    assert last["records_created"]["customers"] == 1  # b's customer was read, nothing created twice
    names = sorted(r[0] for r in _server_rows(pg_url, "SELECT name FROM customers WHERE _state = 'active'"))
    assert names == sorted(["株式会社青空商事", "緑山工業株式会社", "北斗電機株式会社", "大阪物産株式会社"])
    version = _server_rows(pg_url, "SELECT value FROM meta WHERE key = 'server_version'")
    export = tmp_path / "export.xlsx"
    proc = xlcrm("export", export, "--master", master["a"], "--role", "admin", env=pcs["a"])
    assert proc.returncode == 0, proc.stderr
    # an export changes nothing on the server: every PC's kept copy stays current
    assert _server_rows(pg_url, "SELECT value FROM meta WHERE key = 'server_version'") == version
    sheet = cells(export, tmp_path)["顧客"]
    col = sheet[0].index("顧客名")
    assert sorted(row[col] for row in sheet[1:]) == names
    # A master put on the server by other means gets a new version (as `store copy` gives it): read anew.
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE customers SET name = '北斗電機工業株式会社' WHERE name = '北斗電機株式会社'")
        conn.execute("UPDATE meta SET value = 'restored' WHERE key = 'server_version'")
    proc = xlcrm("export", export, "--master", master["a"], "--role", "admin", "--force", env=pcs["a"])
    assert proc.returncode == 0, proc.stderr
    sheet = cells(export, tmp_path)["顧客"]
    assert "北斗電機工業株式会社" in {row[col] for row in sheet[1:]}


def test_a_database_without_pg_trgm_for_this_login_ends_in_one_line(demo: Path, tmp_path: Path,
                                                                   pg_server: PgServer) -> None:
    """A login that may create the master's tables (its own schema) but not the search extension."""
    name = pg_server.database()
    pg_server.execute("DROP ROLE IF EXISTS noext; CREATE ROLE noext LOGIN; "
                      "ALTER ROLE noext SET search_path = crm")
    pg_server.execute("CREATE SCHEMA crm AUTHORIZATION noext", database=name)
    url = pg_server.url(name, user="noext")
    team = _team(tmp_path / "team", "佐藤", ["株式会社青空商事"])
    master = tmp_path / "m" / "master.xlsx"
    for args in (("store", "copy", "--from", demo / "master" / "master.db", "--to", url),
                 ("merge", team, "--master", master)):
        proc = xlcrm(*args, env={"XLCRM_DB": url})
        line = one_line(proc)
        assert proc.returncode == 2 and "no pg_trgm extension" in line and "CREATE EXTENSION pg_trgm" in line, line
    assert not master.parent.exists()
    assert _server_rows(pg_server.url(name), "SELECT count(*) FROM pg_tables WHERE schemaname = 'crm'") == [(0,)]


def test_a_master_moved_to_the_server_is_not_changed_on_the_master_db_left_behind(demo: Path, tmp_path: Path,
                                                                                pg_url: str) -> None:
    """After `store copy` the master.db beside master.xlsx is a stale copy: a command that would change
    it, run without the server configured (XLCRM_DB forgotten in one shell), is refused until the
    master is moved back; a mistyped server URL names the option it came from."""
    folder = tmp_path / "顧客"
    shutil.copytree(demo / "master", folder)
    master, db_file = folder / "master.xlsx", folder / "master.db"
    off = {"XLCRM_DB": ""}
    half = xlcrm("store", "copy", "--from", pg_url, env=off)
    assert half.returncode == 2 and "give --to master.db" in one_line(half)
    wrong = xlcrm("store", "copy", "--from", db_file, "--to", pg_url.rsplit(":", 1)[0] + ":1/crm", env=off)
    assert wrong.returncode == 2 and one_line(wrong).startswith("xlcrm: --to: cannot connect")
    assert xlcrm("store", "copy", "--from", db_file, "--to", pg_url, env=off).returncode == 0
    before = db_file.read_bytes()
    for args in (("merge", demo / "handout", "--master", master), ("resolve", "--master", master),
                 ("report", tmp_path / "r.xlsx", "--master", master)):
        proc = xlcrm(*args, env=off)
        line = one_line(proc)
        assert proc.returncode == 2 and f"belongs to the master on {pg_url}" in line and "--force" in line, line
    assert db_file.read_bytes() == before and not (tmp_path / "r.xlsx").exists()
    assert xlcrm("search", "山田", "--master", master, env=off).returncode == 0  # reading it is no harm
    # on the server it works; moved back, master.db is the master again
    assert xlcrm("report", tmp_path / "r.xlsx", "--master", master, env={"XLCRM_DB": pg_url}).returncode == 0
    back = xlcrm("store", "copy", "--from", pg_url, "--to", db_file, "--force", env=off)
    assert back.returncode == 0, back.stderr
    assert xlcrm("resolve", "--master", master, env=off).returncode == 0
