"""Access on the PostgreSQL master, enforced by the server: a salesperson's login that sees only its
own customers (row-level security), an analyst's login whose role hides columns searching and
reading histories without the hidden values, and the ribbon's search and history reading the server.
Through the CLI and the ribbon's openpyxl adapter, against a real server (tests/pgserver.py); one
database for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
from fixtures_master import TODAY, build_master
from pgserver import PgServer
from test_store_pg import one_line, xlcrm

from xlcrm.errors import XlcrmError
from xlcrm.excel.conf import KEY_MASTER, KEY_SCHEMA, write_conf
from xlcrm.excel.openpyxl_adapter import OpenpyxlBook
from xlcrm.excel.ribbon import dispatch

#: sales: own customers only (the built-in role), and here without 誕生日 too.
CONFIG = '[roles.sales]\nown_only = true\nhide = ["birthday"]\n'
SATO = "佐藤 花子"
SATO_CUSTOMERS = {"C-000001", "C-000004", "C-000009"}  # the fixture master's customers of 佐藤 花子


@dataclass
class Site:
    """The fixture master on the server with its roles, and the logins of three people."""

    server: PgServer
    master: Path
    config: Path
    admin_url: str  # the master's owner
    urls: dict[str, str]  # login -> URL

    def as_(self, login: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("XLCRM_DB", self.urls[login])

    def search(self, login: str, query: str, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
        self.as_(login, monkeypatch)
        code, out, err = xlcrm("search", query, "--master", self.master, "--config", self.config, "--json")
        assert code == 0, err
        return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def site(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("pgaccess")
    master = build_master(folder)
    config = folder / "xlcrm.toml"
    config.write_text(CONFIG, encoding="utf-8")
    name = "access_utf8"
    pg_server.execute(f"CREATE DATABASE {name} TEMPLATE template0 LC_CTYPE 'C.UTF-8' LC_COLLATE 'C.UTF-8'")
    url = pg_server.url(name)
    for args in (("store", "copy", "--master", master), ("store", "roles", "--prefix", "a_")):
        code, _out, err = xlcrm(*args, "--db", url, "--config", config)
        assert code == 0, err
    for login in ("sato", "yamada", "boss", "nobody"):
        pg_server.execute(f'DROP ROLE IF EXISTS "{login}"')
    for login, role, owner in (("sato", "sales", SATO), ("yamada", "analyst", None), ("boss", "admin", None)):
        code, out, err = xlcrm("store", "user", login, "--role", role, *(("--owner", owner) if owner else ()),
                               "--prefix", "a_", "--db", url, "--config", config)
        assert code == 0, err
        assert f"postgresql://{login}@127.0.0.1:{pg_server.port}/{name}" in out
    yield Site(pg_server, master, config, url, {u: pg_server.url(name, u) for u in ("sato", "yamada", "boss")})


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


# --- own customers only --------------------------------------------------------------------------------

def test_an_own_only_login_reads_its_customers_and_their_records_and_nothing_of_a_colleagues(site: Site) -> None:
    sato = site.urls["sato"]
    assert {r[0] for r in rows(sato, "SELECT customer_id FROM customers")} == SATO_CUSTOMERS
    assert rows(sato, "SELECT name FROM customers WHERE customer_id = 'C-000002'") == []  # 鈴木's
    assert rows(site.admin_url, "SELECT name FROM customers WHERE customer_id = 'C-000002'") == [("山田商事株式会社",)]
    for table in ("activities", "deals", "contacts"):  # each has records of others' customers too
        mine = {r[0] for r in rows(sato, f"SELECT customer FROM {table}")}
        everyone = {r[0] for r in rows(site.admin_url, f"SELECT customer FROM {table}")}
        assert mine and mine <= SATO_CUSTOMERS and everyone - SATO_CUSTOMERS, table
    assert rows(sato, "SELECT activity_id FROM activities WHERE customer = 'C-000002'") == []
    assert rows(site.admin_url, "SELECT activity_id FROM activities WHERE customer = 'C-000002'") == [("A-000005",)]
    # The change history and the search index hold only its customers' records too.
    assert {r[0] for r in rows(sato, "SELECT record_id FROM history WHERE entity = 'customers'")} == {"C-000001"}
    assert "C-000002" in {r[0] for r in rows(site.admin_url, "SELECT record_id FROM history")}
    assert {r[0] for r in rows(sato, "SELECT customer_id FROM search_rows")} <= SATO_CUSTOMERS
    assert rows(sato, "SELECT * FROM search_text WHERE customer_id = 'C-000002'") == []
    # Its hidden column, the review queues and the bases: refused by the server.
    with psycopg.connect(sato, autocommit=True) as conn:
        for sql in ("SELECT birthday FROM customers", "SELECT * FROM customers", "SELECT * FROM bases_customers",
                    "SELECT * FROM conflicts", "SELECT * FROM logins", "UPDATE customers SET status = 'lost'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)  # type: ignore[arg-type]
        # Not by claiming another's name: the 担当営業 comes from the login, recorded by the admin.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO logins VALUES ('sato', '鈴木 一郎')")


def test_search_and_history_of_an_own_only_login_show_its_customers_only(site: Site,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert {h["customer_id"] for h in site.search("boss", "山田", monkeypatch)} >= {"C-000001", "C-000002"}
    hits = site.search("sato", "山田", monkeypatch)
    assert hits and {h["customer_id"] for h in hits} <= SATO_CUSTOMERS and hits[0]["customer_id"] == "C-000001"
    assert site.search("sato", "06-6123-4567", monkeypatch) == []  # 鈴木's customer's phone number
    assert site.search("sato", "初回の問い合わせ", monkeypatch) == []  # 鈴木's customer's activity
    assert site.search("boss", "初回の問い合わせ", monkeypatch)[0]["customer_id"] == "C-000002"
    args = ("--master", site.master, "--config", site.config, "--json", "--today", TODAY.isoformat())
    site.as_("sato", monkeypatch)
    code, out, err = xlcrm("history", "C-000001", *args)
    assert code == 0, err
    story = json.loads(out)
    assert {e["record_id"] for e in story["timeline"]} >= {"A-000001", "D-000001", "T-000001"}
    code, out, err = xlcrm("history", "C-000002", *args)
    assert code == 2 and out == "" and "C-000002" in one_line(err)

    # A login of the role with no 担当営業 recorded is told so, not shown an empty master.
    site.server.execute('CREATE ROLE "nobody" LOGIN IN ROLE "a_sales"')
    monkeypatch.setenv("XLCRM_DB", site.urls["sato"].replace("sato@", "nobody@"))
    code, out, err = xlcrm("search", "山田", "--master", site.master, "--config", site.config)
    assert code == 2 and "store user nobody" in one_line(err) and "担当営業" in err


def test_store_user_refuses_in_one_line(site: Site) -> None:
    base = ("--db", site.admin_url, "--config", site.config, "--prefix", "a_")
    code, _, err = xlcrm("store", "user", "kato", "--role", "sales", *base)
    assert code == 2 and "--owner" in one_line(err)
    code, _, err = xlcrm("store", "user", "kato", "--role", "boss", *base)
    assert code == 2 and "no such role" in one_line(err)
    code, _, err = xlcrm("store", "user", "postgres", "--role", "analyst", *base)
    assert code == 2 and "superuser" in one_line(err)
    code, _, err = xlcrm("store", "user", "kato", "--role", "analyst", "--db", site.admin_url, "--config",
                         site.config, "--prefix", "zz_")
    assert code == 2 and "store roles" in one_line(err)
    assert rows(site.admin_url, "SELECT 1 FROM pg_roles WHERE rolname = 'kato'") == []  # nothing made


def test_a_login_moved_to_another_role_leaves_the_old_one(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ("--db", site.admin_url, "--config", site.config, "--prefix", "a_")
    monkeypatch.setenv("PW", "s3cret-pw")
    code, out, err = xlcrm("store", "user", "ito", "--role", "sales", "--owner", "鈴木 一郎", "--password-env",
                           "PW", *base, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["customers"] == 2 and report["created"] and "s3cret" not in out
    stored = rows(site.admin_url, "SELECT rolpassword FROM pg_authid WHERE rolname = 'ito'")[0][0]
    assert stored.startswith("SCRAM-SHA-256$")  # hashed before it was sent
    ito = site.urls["sato"].replace("sato@", "ito@")
    assert {r[0] for r in rows(ito, "SELECT customer_id FROM customers WHERE _state = 'active'")} == {"C-000002", "C-000003"}
    code, out, err = xlcrm("store", "user", "ito", "--role", "analyst", *base)
    assert code == 0 and "updated" in out, err
    assert len(rows(ito, "SELECT customer_id FROM customers")) == 10  # every customer, fewer columns
    with psycopg.connect(ito) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT phone FROM customers")


# --- a role that hides columns -------------------------------------------------------------------------

def test_a_role_that_hides_columns_searches_and_reads_histories_without_them(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    hits = site.search("yamada", "山田", monkeypatch)
    assert {"C-000001", "C-000002"} <= {h["customer_id"] for h in hits}
    assert all(h["phone"] is None for h in hits)
    # A query matching only a hidden column finds nothing for the role; the admin finds it.
    for query in ("03-1234-5678", "info@yamada-ss.co.jp", "見積書"):  # phone, e-mail, a TODO's free text
        assert site.search("yamada", query, monkeypatch) == [], query
        assert site.search("boss", query, monkeypatch)[0]["customer_id"] == "C-000001", query
    # The folded copies in the search index are refused to the role by the server, not only skipped.
    with psycopg.connect(site.urls["yamada"], autocommit=True) as conn:
        for sql in ("SELECT phone FROM search_rows", "SELECT email FROM search_rows", "SELECT * FROM search_rows"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)  # type: ignore[arg-type]
        assert conn.execute("SELECT count(*) FROM search_text").fetchone() == (0,)  # all free text: masked
        assert conn.execute("SELECT count(*) FROM history WHERE field = 'phone'").fetchone() == (0,)

    args = ("history", "C-000001", "--master", site.master, "--config", site.config, "--json",
            "--today", TODAY.isoformat())
    site.as_("yamada", monkeypatch)
    code, out, err = xlcrm(*args)
    assert code == 0, err
    shown = json.dumps(json.loads(out), ensure_ascii=False)
    assert "株式会社山田製作所" in shown and "03-1234-5678" not in shown and "03-1234-0000" not in shown
    site.as_("boss", monkeypatch)
    code, out, err = xlcrm(*args)
    assert code == 0 and "03-1234-0000" in out, err


# --- the ribbon ----------------------------------------------------------------------------------------

@pytest.fixture
def staff_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A team workbook on a staff PC with no master path set, only the server (no master.db here)."""
    from xlcrm.intake.template import write_team_workbook
    from xlcrm.schema import DEFAULT_SCHEMA

    monkeypatch.delenv(KEY_MASTER, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user xlcrm.conf
    return write_team_workbook(tmp_path / "sato.xlsx", DEFAULT_SCHEMA, owner=SATO, lang="ja", rows={
        "customers": [{"customer_id": "C-000001", "kind": "corporate", "name": "株式会社山田製作所",
                       "kana": "ヤマダセイサクショ", "owner": SATO}]})


def sheet(path: Path, name: str) -> list[list[Any]]:
    return [[c.value for c in row] for row in openpyxl.load_workbook(path)[name].iter_rows()]


def test_the_ribbons_search_and_history_read_the_server_named_in_the_staff_pcs_xlcrm_toml(
        site: Site, staff_book: Path) -> None:
    config = staff_book.parent / "xlcrm.toml"
    config.write_text(CONFIG + f'[store]\nurl = "{site.urls["sato"]}"\n', encoding="utf-8")
    write_conf(staff_book.parent / "xlcrm.conf", {KEY_SCHEMA: str(config)})
    msg = dispatch("search", OpenpyxlBook(staff_book), query="山田", today=TODAY)
    assert msg is None
    found = sheet(staff_book, "検索結果")
    head = next(i for i, r in enumerate(found) if r[0] == "顧客ID")
    ids = {r[0] for r in found[head + 1:] if r[0]}
    assert "C-000001" in ids and ids <= SATO_CUSTOMERS  # 山田商事 (鈴木's) is not shown
    book = OpenpyxlBook(staff_book)
    book.select("顧客", 2, 3)
    assert dispatch("history", book, today=TODAY) is None
    story = sheet(staff_book, "顧客履歴")
    assert story[0][:2] == ["顧客ID", "C-000001"]
    assert any("postgresql://sato@" in str(r[0]) for r in story if r and r[0])  # made from the server
    msg = dispatch("refresh", OpenpyxlBook(staff_book), today=TODAY)
    assert msg is not None and "検索結果" in msg and "顧客履歴" in msg


def test_the_ribbon_as_a_login_whose_role_hides_phones_through_xlcrm_db(
        site: Site, staff_book: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site.as_("yamada", monkeypatch)
    assert dispatch("search", OpenpyxlBook(staff_book), query="山田", today=TODAY) is None
    found = sheet(staff_book, "検索結果")
    head = next(i for i, r in enumerate(found) if r[0] == "顧客ID")
    body = [r for r in found[head + 1:] if r[0]]
    assert {"C-000001", "C-000002"} <= {r[0] for r in body}
    phone = found[head].index("電話番号")
    assert all(r[phone] is None for r in body)
    msg = dispatch("search", OpenpyxlBook(staff_book), query="03-1234-5678", today=TODAY)
    assert msg is not None and "見つかりません" in msg


def test_the_ribbons_validate_warns_of_a_customer_already_on_the_server_that_the_login_may_see(
        site: Site, make_book: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_MASTER, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    site.as_("sato", monkeypatch)
    path = make_book({"customers": [
        {"kind": "corporate", "name": "東京システム", "phone": "03-5555-0001", "owner": SATO},  # C-000009, 佐藤's
        {"kind": "corporate", "name": "梅田商事", "phone": "06-6123-4567", "owner": SATO}]})  # C-000002, 鈴木's
    msg = dispatch("validate", OpenpyxlBook(path), today=TODAY)
    assert msg is not None and "警告 1 件" in msg, msg
    listed = " ".join(str(v) for r in sheet(path, "エラー一覧") for v in r if v)
    assert "C-000009" in listed and "C-000002" not in listed


def test_the_ribbons_search_and_history_on_the_server_import_no_pandas(site: Site, staff_book: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from xlcrm.excel.ribbon import dispatch\n"
        "from xlcrm.excel.openpyxl_adapter import OpenpyxlBook\n"
        f"b = OpenpyxlBook(Path({str(staff_book)!r}))\n"
        "assert dispatch('search', b, query='山田') is None\n"
        "b.select('顧客', 2, 3)\n"
        "assert dispatch('history', b) is None\n"
        "print(sorted(m for m in ('pandas', 'pandera') if m in sys.modules))\n")
    env = {**os.environ, "XLCRM_DB": site.urls["yamada"]}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert "C-000002" in {r[0] for r in sheet(staff_book, "検索結果")}


def test_installing_the_add_in_with_a_server_in_xlcrm_toml_needs_no_master_path(tmp_path: Path) -> None:
    from xlcrm.excel.install import plan_install

    config = tmp_path / "xlcrm.toml"
    config.write_text('[store]\nurl = "postgresql://sato@dbserver/crm"\n', encoding="utf-8")
    plan = plan_install(config=config, platform="win32", home=tmp_path, interpreter=r"C:\Python312\python.exe")
    assert plan.conf[KEY_SCHEMA] == str(config.resolve())
    assert not any("--master" in w for w in plan.warnings), plan.warnings
    assert any("--master" in w for w in plan_install(platform="win32", home=tmp_path).warnings)
    config.write_text('[store]\nurl = "mysql://dbserver/crm"\n', encoding="utf-8")
    with pytest.raises(XlcrmError, match="not a PostgreSQL URL"):
        plan_install(config=config, platform="win32", home=tmp_path)
