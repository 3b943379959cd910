"""Search on a real master database (the fixture master), the index lifecycle and `xlcrm search`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_master import CONTACTS, CUSTOMERS, build_master
from typer.testing import CliRunner

from xlcrm import db
from xlcrm.cli import _register, app
from xlcrm.errors import XlcrmError
from xlcrm.schema import DEFAULT_SCHEMA, Schema, build_schema
from xlcrm.search import (
    COMPANY_KEY,
    FTS_TABLE,
    ROWS_TABLE,
    SearchHit,
    build_index,
    index_is_current,
    indexed_columns,
    search,
    trigram_available,
)

S = DEFAULT_SCHEMA


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_master(tmp_path_factory.mktemp("master"))


@pytest.fixture
def conn(master: Path) -> Iterator[sqlite3.Connection]:
    c = db.connect(db.db_path_for(master))
    yield c
    c.close()


def ids(hits: list[SearchHit]) -> list[tuple[str | None, str | None]]:
    return [(h.customer_id, h.contact_id) for h in hits]


def top(conn: sqlite3.Connection, query: str, **kw: object) -> SearchHit:
    hits = search(conn, S, query, **kw)  # type: ignore[arg-type]
    assert hits, f"no hit for {query!r}"
    return hits[0]


# --- the index ---------------------------------------------------------------------------------------

def test_trigram_supported_here() -> None:
    # The machine's SQLite decides between the FTS5 path and the LIKE-only fallback; say which.
    assert trigram_available() == (sqlite3.sqlite_version_info >= (3, 34, 0)), sqlite3.sqlite_version


def test_indexed_columns_come_from_the_schema() -> None:
    keys = [c.key for c in indexed_columns(S)]
    expected = [c.key for e in ("customers", "contacts") for c in S.entity(e).columns if c.search]
    assert keys == [*dict.fromkeys(expected), COMPANY_KEY]
    assert {"name", "kana", "phone", "fax", "mobile", "email", "address", "notes", "corporate_number"} <= set(keys)
    assert "owner" not in keys and "customer" not in keys


def test_build_index_counts_active_customers_and_their_contacts(master: Path, conn: sqlite3.Connection) -> None:
    n = build_index(conn, S)
    active = [c for c in CUSTOMERS if c.get("_state", "active") == "active"]
    live_ids = {c["customer_id"] for c in active} | {"C-000007"}  # merged: its contacts move to C-000001
    contacts = [p for p in CONTACTS if p["customer"] in live_ids]
    assert n == len(active) + len(contacts)
    assert conn.execute(f"SELECT count(*) FROM {ROWS_TABLE}").fetchone()[0] == n
    # Values are stored folded: phone digits only, kana as katakana, lower case.
    row = conn.execute(f"SELECT phone, email, company_key FROM {ROWS_TABLE} WHERE customer_id = 'C-000001' "
                       "AND contact_id IS NULL").fetchone()
    assert tuple(row) == ("0312345678", "info@yamadass.co.jp", "山田製作所")  # hyphens folded away too


def test_index_rebuilt_when_missing(tmp_path: Path) -> None:
    master = build_master(tmp_path, index=False)
    conn = db.connect(db.db_path_for(master))
    try:
        assert not index_is_current(conn, S)
        assert top(conn, "山田製作所").customer_id == "C-000001"
        assert index_is_current(conn, S)
        conn.execute(f"DROP TABLE {FTS_TABLE}")
        conn.execute(f"DROP TABLE {ROWS_TABLE}")
        assert top(conn, "やまだしょうじ").customer_id == "C-000002"
        assert index_is_current(conn, S)
    finally:
        conn.close()


def test_missing_index_on_a_read_only_master_is_a_clear_error(tmp_path: Path) -> None:
    master = build_master(tmp_path, index=False)
    ro = sqlite3.connect(f"file:{db.db_path_for(master)}?mode=ro", uri=True)
    ro.row_factory = sqlite3.Row
    try:
        with pytest.raises(XlcrmError, match="search index"):
            search(ro, S, "山田")
    finally:
        ro.close()


def test_build_index_inside_a_callers_transaction(tmp_path: Path) -> None:
    # Merge calls build_index inside its own transaction; a rollback must take the index along.
    master = build_master(tmp_path)
    conn = db.connect(db.db_path_for(master))
    try:
        with pytest.raises(RuntimeError), db.transaction(conn):
            conn.execute("UPDATE customers SET name = '株式会社ロールバック' WHERE customer_id = 'C-000005'")
            build_index(conn, S)
            assert top(conn, "ロールバック").customer_id == "C-000005"
            raise RuntimeError("merge failed")
        assert search(conn, S, "ロールバック") == []
        assert top(conn, "スズキ電機").customer_id == "C-000005"
    finally:
        conn.close()


def test_custom_search_column_flows_into_the_index(tmp_path: Path) -> None:
    schema: Schema = build_schema({"sheets": {"顧客": {"columns": [
        {"label": "社内コード", "key": "internal_code", "search": True}]}}})
    master = build_master(tmp_path, schema, extra_customers=[
        {"customer_id": "C-000011", "kind": "corporate", "name": "株式会社カスタム", "owner": "佐藤 花子",
         "internal_code": "ZX-9001"}])
    conn = db.connect(db.db_path_for(master))
    try:
        hit = search(conn, schema, "zx9001")[0]
        assert (hit.customer_id, hit.matched) == ("C-000011", "internal_code")
        assert "社内コード" in hit.why
        assert search(conn, S, "zx9001") == []  # the default schema does not search that column
        # ... and its index is stale for the custom schema, which rebuilds it.
        assert not index_is_current(conn, schema)
        assert search(conn, schema, "ＺＸ－９００１")[0].customer_id == "C-000011"
    finally:
        conn.close()


# --- matching ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["やまだせいさくしょ", "ヤマダセイサクショ", "ﾔﾏﾀﾞｾｲｻｸｼｮ", "ﾔﾏﾀﾞ ｾｲｻｸｼｮ"])
def test_kana_and_width_insensitive(conn: sqlite3.Connection, query: str) -> None:
    hit = top(conn, query)
    assert (hit.customer_id, hit.matched) == ("C-000001", "kana")


@pytest.mark.parametrize("query", ["ＡＢＣ", "abc", "Abc トレーディング", "ａｂｃとれーでぃんぐ"])
def test_case_and_width_insensitive_latin(conn: sqlite3.Connection, query: str) -> None:
    assert top(conn, query).customer_id == "C-000003"


@pytest.mark.parametrize("query", ["0312345678", "03-1234-5678", "０３（１２３４）５６７８", "03 1234 5678",
                                   "+81 3-1234-5678", "０３－１２３４－５６７８", "(03)1234-5678"])
def test_phone_in_any_format(conn: sqlite3.Connection, query: str) -> None:
    hits = search(conn, S, query)
    assert ids(hits)[0] == ("C-000001", None)
    assert hits[0].matched == "phone" and "03-1234-5678" in hits[0].why
    # The contact whose number merely starts the same way is not an exact match and ranks after.
    assert all(h.score < hits[0].score for h in hits[1:])


def test_partial_phone_finds_customer_and_contacts(conn: sqlite3.Connection) -> None:
    hits = search(conn, S, "03-1234-56")
    assert set(ids(hits)) == {("C-000001", None), ("C-000001", "P-000001"), ("C-000001", "P-000003")}


def test_mobile_of_a_contact(conn: sqlite3.Connection) -> None:
    hit = top(conn, "08055556666")
    assert (hit.customer_id, hit.contact_id, hit.matched) == ("C-000002", "P-000002", "mobile")
    assert hit.phone == "080-5555-6666"


@pytest.mark.parametrize(("query", "expected"), [
    ("製作所", "C-000001"), ("商事", "C-000002"), ("不動産", "C-000006"), ("(株)山田製作所", "C-000001"),
    ("山田製作所㈱", "C-000001"), ("ｻｸﾗ不動産", "C-000006"), ("東京システム", "C-000009"),
])
def test_partial_company_names(conn: sqlite3.Connection, query: str, expected: str) -> None:
    assert top(conn, query).customer_id == expected


def test_email_exact_and_partial(conn: sqlite3.Connection) -> None:
    hit = top(conn, "INFO@Yamada-SS.co.jp")
    assert (hit.customer_id, hit.matched, hit.score >= 90) == ("C-000001", "email", True)
    assert {h.customer_id for h in search(conn, S, "yamada")} == {"C-000001", "C-000002"}


def test_one_and_two_character_queries(conn: sqlite3.Connection) -> None:
    assert top(conn, "電機").customer_id == "C-000005"
    assert {"C-000001", "C-000002"} <= {h.customer_id for h in search(conn, S, "山")}
    assert top(conn, "ｽｽﾞ").customer_id == "C-000005"  # 3 chars after folding: ス ズ ... -> index
    assert top(conn, "すず").customer_id == "C-000005"  # 2 chars: scan
    assert search(conn, S, "鱧") == []
    # 1-2 characters look at names, readings, numbers and e-mail, not inside 住所/備考
    assert "C-000009" not in {h.customer_id for h in search(conn, S, "港区")}
    assert top(conn, "港区芝").customer_id == "C-000009"


def test_typo_tolerance(conn: sqlite3.Connection) -> None:
    hit = top(conn, "山田製作書")
    assert (hit.customer_id, hit.matched) == ("C-000001", COMPANY_KEY)
    assert "似ている" in hit.why and hit.score < 50
    assert top(conn, "ヤマダセイサクジョ").customer_id == "C-000001"
    assert top(conn, "さくら不動算").customer_id == "C-000006"
    assert search(conn, S, "まったく無関係な文字列") == []


def test_ranking_order(conn: sqlite3.Connection) -> None:
    # exact company key > substring in another customer's notes
    hits = search(conn, S, "山田製作所")
    assert ids(hits)[:2] == [("C-000001", None), ("C-000009", None)]
    assert hits[1].matched == "notes"
    # exact ID beats everything; a phone query ranks the exact number before prefixes
    assert top(conn, "c-000003").customer_id == "C-000003"
    tiers = [h.score for h in search(conn, S, "山田")]
    assert tiers == sorted(tiers, reverse=True)
    # a note beginning with the words is no better than a substring: the name still ranks first
    hits = search(conn, S, "花子様")
    assert ids(hits) == [("C-000004", "P-000005")] and hits[0].matched == "notes"
    hits = search(conn, S, "タナカ")
    assert ids(hits)[:2] == [("C-000004", None), ("C-000004", "P-000005")]


def test_ranking_tiers_across_kinds(conn: sqlite3.Connection) -> None:
    exact_id = top(conn, "C-000001").score
    exact_phone = top(conn, "03-1234-5678").score
    exact_name = top(conn, "山田製作所").score
    prefix = top(conn, "山田製").score
    substring = top(conn, "製作").score
    fuzzy = top(conn, "山田製作書").score
    assert exact_id > exact_phone > exact_name > prefix > substring > fuzzy


def test_ids_of_any_entity_lead_to_the_customer(conn: sqlite3.Connection) -> None:
    assert top(conn, "D-000005").customer_id == "C-000002"
    assert (top(conn, "P-000001").customer_id, top(conn, "P-000001").contact_id) == ("C-000001", "P-000001")
    merged = top(conn, "C-000007")  # merged-away duplicate: its survivor
    assert merged.customer_id == "C-000001" and "C-000007" in merged.why
    assert search(conn, S, "C-000008") == []  # deleted
    assert search(conn, S, "C-999999") == []


def test_contact_hits_point_to_their_customer(conn: sqlite3.Connection) -> None:
    hit = top(conn, "たかはし")
    assert (hit.customer_id, hit.contact_id, hit.contact_name) == ("C-000001", "P-000001", "高橋 一郎")
    assert hit.name == "株式会社山田製作所" and hit.owner == "佐藤 花子" and hit.last_contact == "2024-05-25"
    assert "担当者" in hit.why
    # a contact of the merged duplicate points to the survivor
    hit = top(conn, "木村")
    assert (hit.customer_id, hit.contact_id) == ("C-000001", "P-000003")


def test_inactive_records_are_not_found(conn: sqlite3.Connection) -> None:
    assert search(conn, S, "削除済") == []
    assert search(conn, S, "森 誠") == []
    assert all(h.customer_id != "C-000007" for h in search(conn, S, "山田製作所"))


def test_hit_fields_and_languages(conn: sqlite3.Connection) -> None:
    ja = top(conn, "さくら")
    en = top(conn, "さくら", lang="en")
    assert ja.customer_id == en.customer_id == "C-000006"
    assert ja.phone == "0120-123-456" and ja.owner == "高橋 健"
    assert ja.last_contact is None
    assert "で始まる" in ja.why and "starts with" in en.why
    assert set(ja.to_dict()) >= {"customer_id", "contact_id", "name", "kana", "owner", "phone",
                                 "last_contact", "matched", "why", "score"}


def test_limit_and_empty_query(conn: sqlite3.Connection) -> None:
    assert len(search(conn, S, "株式会社", limit=2)) == 2
    assert len(search(conn, S, "株式会社", limit=20)) >= 4
    with pytest.raises(XlcrmError):
        search(conn, S, "   ")
    with pytest.raises(XlcrmError):
        search(conn, S, "山田", limit=0)


def test_fts_special_characters_are_data(conn: sqlite3.Connection) -> None:
    for q in ['"山田', "山田 OR 東京", "NEAR(a b)", "*", "a'b", "{name}:x", "100%"]:
        search(conn, S, q)  # must not raise an FTS syntax error


def test_extra_rows_searched_in_memory(conn: sqlite3.Connection) -> None:
    extra = [
        {"name": "株式会社未登録商店", "kana": "ミトウロクショウテン", "phone": "03-9999-8888", "_ref": "顧客!A5"},
        {"_entity": "contacts", "customer": "株式会社未登録商店", "name": "未登録 太郎", "_ref": "担当者!A3"},
        # already merged row edited in the workbook: one result, not two
        {"customer_id": "C-000005", "name": "有限会社スズキ電機", "phone": "052-987-6543", "_ref": "顧客!A6"},
    ]
    hits = search(conn, S, "みとうろく", extra_rows=extra)
    assert [(h.source, h.ref, h.customer_id) for h in hits] == [("workbook", "顧客!A5", None)]
    hits = search(conn, S, "未登録", extra_rows=extra)
    assert {h.ref for h in hits} == {"顧客!A5", "担当者!A3"}
    contact = next(h for h in hits if h.ref == "担当者!A3")
    assert contact.contact_name == "未登録 太郎" and contact.name == "株式会社未登録商店"
    assert top(conn, "0399998888", extra_rows=extra).ref == "顧客!A5"
    assert len([h for h in search(conn, S, "スズキ電機", extra_rows=extra) if h.customer_id == "C-000005"]) == 1
    with pytest.raises(XlcrmError):
        search(conn, S, "x", extra_rows=[{"_entity": "deals"}])


# --- process and CLI ---------------------------------------------------------------------------------

def test_search_and_history_do_not_import_pandas() -> None:
    code = ("import sys, xlcrm.search, xlcrm.history; "
            "print(sorted(m for m in ('pandas', 'pandera', 'numpy', 'openpyxl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pandas" not in out and "pandera" not in out, out


runner = CliRunner()
_register()


def test_cli_search_json(master: Path) -> None:
    res = runner.invoke(app, ["search", "--master", str(master), "03-1234-5678", "--json", "--lang", "en"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert isinstance(data, list) and data[0]["customer_id"] == "C-000001"
    assert data[0]["matched"] == "phone" and data[0]["why"].startswith("Phone")


def test_cli_search_table_and_limit(master: Path) -> None:
    res = runner.invoke(app, ["search", "--master", str(master), "株式会社", "--limit", "1", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 1
    res = runner.invoke(app, ["search", "--master", str(master), "スズキ"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "C-000005" in res.stdout and "有限会社スズキ電機" in res.stdout
    res = runner.invoke(app, ["search", "--master", str(master), "該当なしの語"])
    assert res.exit_code == 0 and "該当する顧客はありません" in res.stdout


def test_cli_search_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--master", str(tmp_path / "none.xlsx"), "山田"])
    assert res.exit_code == 2
    assert "none.db" in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["search", "--master", str(tmp_path / "none.xlsx"), "山田", "--limit", "0"])
    assert res.exit_code == 2  # typer's own usage error


def test_cli_search_subprocess(master: Path) -> None:
    res = subprocess.run([sys.executable, "-c", "from xlcrm.cli import main; main()", "search",
                          "--master", str(master), "ヤマダ", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert {h["customer_id"] for h in json.loads(res.stdout)} >= {"C-000001", "C-000002"}
