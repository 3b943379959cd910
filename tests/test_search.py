"""Search on a real master database (the fixture master), the index lifecycle and `xlcrm search`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from fixtures_master import CONTACTS, CUSTOMERS, build_master
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.errors import XlcrmError
from xlcrm.master.resolve import combine_customers
from xlcrm.normalize import fold_search, phone_digits
from xlcrm.schema import DEFAULT_SCHEMA, Schema, build_schema
from xlcrm.store import db
from xlcrm.store.searchindex import (
    BIGRAM_TABLE,
    COMPANY_KEY,
    FTS_TABLE,
    ROWS_TABLE,
    TEXT_BIGRAM_TABLE,
    TEXT_TABLE,
    VOCAB_TABLE,
    build_index,
    digits_many,
    fold_column,
    fold_company,
    fold_many,
    index_is_current,
    indexed_columns,
    pair_docs,
    trigram_available,
    update_index,
)
from xlcrm.views.search import SearchHit, search

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


def test_two_character_words_are_looked_up_not_scanned(tmp_path: Path) -> None:
    """A word of two characters that no name holds (電話 is in activities only, ぜぜ nowhere) is looked
    up in the index of character pairs: the whole search runs fewer SQLite instructions than one pass
    over the index rows (a scan of names, 住所/備考 and the records' text runs several)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_search import write_master

    conn = db.connect(db.db_path_for(write_master(tmp_path, 2000)))
    try:
        build_index(conn, S)

        def steps(work: Callable[[], object]) -> int:
            n = [0]
            conn.set_progress_handler(lambda: n.__setitem__(0, n[0] + 1), 100)
            try:
                work()
            finally:
                conn.set_progress_handler(None, 0)
            return n[0]

        one_pass = steps(lambda: conn.execute(f"SELECT count(*) FROM {ROWS_TABLE} WHERE instr(name, 'ぜぜ') > 0 "
                                              "OR instr(address, 'ぜぜ') > 0").fetchone())
        assert search(conn, S, "ぜぜ") == [] and steps(lambda: search(conn, S, "ぜぜ")) < one_pass / 4
        assert len(search(conn, S, "電話")) == 20 and steps(lambda: search(conn, S, "電話")) < one_pass
    finally:
        conn.close()


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
    # one character looks at names, readings, numbers and e-mail, not inside 住所/備考; two characters
    # are a word (a place name like 港区, 札幌, 新宿) and are looked for there too
    assert "C-000009" not in {h.customer_id for h in search(conn, S, "港")}
    assert "C-000009" in {h.customer_id for h in search(conn, S, "港区")}
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
    code = ("import sys, xlcrm.views.search, xlcrm.views.history; "
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


# --- batch folding: the index build folds whole columns, equal to value-by-value --------------------

# Characters where folding is subtle: the batch separators and their full-width forms, kana of every
# width, voiced marks, hyphen look-alikes, ー around digits, whitespace of every kind, the invisible
# characters text() drops, combining marks (some compose, U+0338 with < = >), case oddities.
_TRICKY = ("|`^~｜｀＾～<=>+81０１２３-‐－−ー 　\t\n\xa0\x00\x1b\x7f\u200b\ufeff\u0301\u0308\u0338\u3099\u309a"
           "ｶﾞﾊﾟｰｧあぁゔゝゞアヴヵ山田製作所㈱(株)株式会社ßİﬁΣσς①ǰAaZz09.,@_")
_text = st.text(alphabet=st.sampled_from(_TRICKY), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_text, max_size=8))
def test_batch_folding_equals_fold_search(values: list[str]) -> None:
    assert fold_many(values) == [fold_search(v) for v in values]
    assert digits_many(values) == [phone_digits(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), _text, st.integers(-10**6, 10**12), st.floats(allow_nan=True)), max_size=8))
def test_fold_column_equals_value_by_value(values: list[object]) -> None:
    def one(fn: object, v: object) -> str | None:
        return None if v is None else (fn(v) or None)  # type: ignore[operator]

    assert fold_column(values, "fold") == [one(fold_search, v) for v in values]
    assert fold_column(values, "digits") == [one(phone_digits, v) for v in values]
    assert fold_column(values, "company") == [one(fold_company, v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_text, st.text(max_size=12)), max_size=8))
def test_pair_documents_hold_every_pair_and_depend_on_the_text_alone(texts: list[str]) -> None:
    docs = pair_docs(texts)
    # The document a row was indexed with is made again from its text alone to take it out.
    assert docs == [pair_docs([t])[0] for t in texts]
    for text, doc in zip(texts, docs, strict=True):
        tokens = doc.split()
        pairs = [text[i:i + 2] for i in range(len(text) - 1)]
        assert {p for p in pairs if not any(ch.isspace() for ch in p)} <= set(tokens)
        assert all(len(t) <= 2 and t in text for t in tokens)


def test_batch_folding_on_realistic_values() -> None:
    values = ["株式会社 山田製作所", "ﾔﾏﾀﾞ ｾｲｻｸｼｮ", "やまだ　たろう", "03ー1234ー5678", "ＩＮＦＯ@Example.CO.JP",
              "千代田区丸の内1-2-3 丸の内ビル5F", "スーパー", "", "＋８１ ３-1234-5678", "a|b"]
    assert fold_many(values) == [fold_search(v) for v in values]
    assert digits_many(values) == [phone_digits(v) for v in values]


# --- incremental update: the same index as a full rebuild ------------------------------------------

_QUERIES = ("山田", "ヤマダ", "やまだせいさくしょ", "03-1234", "0312345678", "商事", "たなか", "タカハシ", "木村",
            "C-000001", "C-000007", "P-000003", "abc", "製作", "ｽｽﾞｷ", "不動産", "新規", "ﾐﾄﾞﾘ", "090", "花子様",
            "山田製作書", "info@")


def index_state(conn: sqlite3.Connection) -> dict[str, object]:
    """What "the same index" means: its rows (rowids aside), FTS5 statistics (of the trigram and the
    pair indexes: a pair left behind or missing changes a count), and the row count."""
    conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('integrity-check')")  # raises when corrupt
    cols = ", ".join(f'"{c.key}"' for c in indexed_columns(S))
    rows = sorted((tuple(r) for r in conn.execute(
        f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE}")), key=repr)
    vocab = sorted(tuple(r) for r in conn.execute(f"SELECT term, doc, cnt FROM {VOCAB_TABLE}"))
    pairs = {}
    for table, kind in ((BIGRAM_TABLE, "col"), (TEXT_BIGRAM_TABLE, "row")):
        conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
        conn.execute(f"CREATE VIRTUAL TABLE temp.v_{table} USING fts5vocab(main, {table}, {kind})")
        pairs[table] = sorted(tuple(r) for r in conn.execute(f"SELECT * FROM temp.v_{table}"))
        conn.execute(f"DROP TABLE temp.v_{table}")
    texts = sorted(tuple(r) for r in conn.execute(f"SELECT entity, record_id, customer_id, text FROM {TEXT_TABLE}"))
    count = conn.execute("SELECT value FROM meta WHERE key = 'search_index_rows'").fetchone()[0]
    return {"rows": rows, "vocab": vocab, "pairs": pairs, "texts": texts, "count": int(count)}


def results(conn: sqlite3.Connection, queries: Iterable[str]) -> dict[str, list[dict[str, object]]]:
    return {q: [h.to_dict() for h in search(conn, S, q, limit=50)] for q in queries}


def assert_same_as_rebuild(conn: sqlite3.Connection, queries: Iterable[str] = _QUERIES) -> None:
    """Copy the database, rebuild the copy's index from scratch, compare index and search results."""
    assert not conn.in_transaction
    ref = sqlite3.connect(":memory:", isolation_level=None)
    ref.row_factory = sqlite3.Row
    try:
        conn.backup(ref)
        assert index_is_current(conn, S)
        build_index(ref, S)
        got, want = index_state(conn), index_state(ref)
        assert got["count"] == len(got["rows"])  # type: ignore[arg-type]
        assert got == want
        queries = list(dict.fromkeys(queries))
        assert results(conn, queries) == results(ref, queries)
    finally:
        ref.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A writable copy of the fixture master (index built, no run yet)."""
    c = db.connect(db.db_path_for(build_master(tmp_path)))
    yield c
    c.close()


@pytest.fixture
def full_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts full builds, so a test can tell the incremental path from the fallback."""
    import xlcrm.store.searchindex as search_mod

    calls: list[int] = []
    real = search_mod.build_index

    def counting(conn: sqlite3.Connection, schema: Schema) -> int:
        calls.append(1)
        return real(conn, schema)

    monkeypatch.setattr(search_mod, "build_index", counting)
    return calls


def _run(conn: sqlite3.Connection, work: Callable[[int], None]) -> int:
    """One merge-like run: changes and the index update in one transaction."""
    with db.transaction(conn):
        run_id = db.start_run(conn, "test", [], "2024-06-01T10:00:00")
        work(run_id)
        n = update_index(conn, S, run_id)
    return n


def test_update_index_follows_edits_merges_moves_and_deletions(fresh: sqlite3.Connection,
                                                               full_builds: list[int]) -> None:
    conn = fresh
    cust, cont = S.entity("customers"), S.entity("contacts")

    def edits(run_id: int) -> None:
        db.update_fields(conn, cust, [("C-000002", "name", "株式会社ヤマダ新商事"), ("C-000002", "kana", "やまだしんしょうじ"),
                                      ("C-000005", "phone", "052-000-1111"), ("C-000006", "owner", "佐藤 花子")],
                         run_id=run_id)
        db.update_fields(conn, cont, [("P-000002", "name", "伊藤 新"), ("P-000005", "customer", "C-000006")],
                         run_id=run_id)
        db.insert_records(conn, cust, [tuple({"customer_id": "C-000011", "kind": "corporate", "name": "新規物産株式会社",
                                              "kana": "シンキブッサン", "phone": "03-7777-8888"}.get(k) for k in cust.keys)],
                          run_id=run_id, source="t.xlsx")
        db.insert_records(conn, cont, [tuple({"contact_id": "P-000006", "customer": "C-000011", "name": "新規 次郎",
                                              "mobile": "090-7777-6666"}.get(k) for k in cont.keys)],
                          run_id=run_id, source="t.xlsx")

    # C-000002, C-000005, P-000002, P-000005 rewritten; C-000011, P-000006 added; C-000006 untouched (its
    # 担当営業 is not indexed, so its index row did not change).
    assert _run(conn, edits) == 6
    assert_same_as_rebuild(conn, [*_QUERIES, "ヤマダシン", "新規物産", "ﾀﾅｶ", "伊藤"])
    assert top(conn, "やまだしんしょうじ").customer_id == "C-000002"
    assert (top(conn, "田中 一郎").customer_id, top(conn, "田中 一郎").contact_id) == ("C-000006", "P-000005")

    # A duplicate merged by decision: C-000001 absorbs C-000002; C-000002's contact moves along.
    _run(conn, lambda run_id: combine_customers(conn, S, "C-000001", "C-000002", run_id=run_id,
                                                at="2024-06-01T10:00:00", who="管理者", how="decision"))
    assert_same_as_rebuild(conn, [*_QUERIES, "ヤマダシン", "伊藤"])
    assert (top(conn, "伊藤 新").customer_id, top(conn, "伊藤 新").contact_id) == ("C-000001", "P-000002")

    # The survivor itself merged into the new customer: contacts still pointing at C-000007 (merged
    # into C-000001 long ago) follow the chain to C-000011.
    _run(conn, lambda run_id: combine_customers(conn, S, "C-000011", "C-000001", run_id=run_id,
                                                at="2024-06-01T10:00:00", who="管理者", how="decision"))
    assert_same_as_rebuild(conn)
    assert top(conn, "木村 健太").customer_id in {"C-000001", "C-000011"}

    # A customer deleted after review takes its contacts out; restored, it brings them back.
    _run(conn, lambda run_id: db.set_state(conn, cust, "C-000006", "deleted", run_id=run_id))
    assert search(conn, S, "田中 一郎") == [] and search(conn, S, "サクラフドウサン") == []
    assert_same_as_rebuild(conn)
    _run(conn, lambda run_id: db.set_state(conn, cust, "C-000006", "active", run_id=run_id))
    assert top(conn, "田中 一郎").contact_id == "P-000005"
    assert_same_as_rebuild(conn)
    assert full_builds == []  # every step above took the incremental path


def test_update_index_with_nothing_changed_writes_nothing(fresh: sqlite3.Connection, full_builds: list[int]) -> None:
    before = index_state(fresh)
    assert _run(fresh, lambda run_id: None) == 0
    assert index_state(fresh) == before and full_builds == []


def test_update_index_rolls_back_with_the_callers_transaction(fresh: sqlite3.Connection) -> None:
    before = index_state(fresh)
    with pytest.raises(RuntimeError), db.transaction(fresh):
        run_id = db.start_run(fresh, "test", [], "2024-06-01T10:00:00")
        db.update_fields(fresh, S.entity("customers"), [("C-000005", "name", "株式会社ロールバック")], run_id=run_id)
        update_index(fresh, S, run_id)
        assert top(fresh, "ロールバック").customer_id == "C-000005"
        raise RuntimeError("merge failed")
    assert index_state(fresh) == before
    assert search(fresh, S, "ロールバック") == []


def test_update_index_falls_back_to_a_full_build(fresh: sqlite3.Connection, full_builds: list[int],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cust = S.entity("customers")

    def edit(run_id: int) -> None:
        db.update_fields(fresh, cust, [("C-000003", "name", "ABCトレード合同会社")], run_id=run_id)

    # Index missing.
    fresh.execute(f"DROP TABLE {VOCAB_TABLE}")
    fresh.execute(f"DROP TABLE {FTS_TABLE}")
    fresh.execute(f"DROP TABLE {ROWS_TABLE}")
    _run(fresh, edit)
    assert len(full_builds) == 1
    # Built by an xlcrm before update_index: no record of the run it has seen.
    fresh.execute("DELETE FROM meta WHERE key = 'search_index_run'")
    _run(fresh, edit)
    assert len(full_builds) == 2
    # Updated by an xlcrm without the pair indexes: they were left behind.
    fresh.execute("UPDATE meta SET value = value + 1 WHERE key = 'search_index_run'")
    assert not index_is_current(fresh, S)
    _run(fresh, edit)
    assert len(full_builds) == 3 and index_is_current(fresh, S)
    # A run that changed too much of the master.
    monkeypatch.setattr("xlcrm.store.searchindex.FULL_BUILD_SHARE", 0.0)
    _run(fresh, edit)
    assert len(full_builds) == 4
    assert top(fresh, "ABCトレード").customer_id == "C-000003"
    assert_same_as_rebuild(fresh)


def test_run_not_followed_by_an_update_is_caught_up_by_the_next(fresh: sqlite3.Connection,
                                                                full_builds: list[int]) -> None:
    # A command that changes records without updating the index (e.g. a handover): the next update
    # looks at every record stamped since the index was last brought up to date, not only its own run.
    with db.transaction(fresh):
        run_id = db.start_run(fresh, "handover", [], "2024-06-01T10:00:00")
        db.update_fields(fresh, S.entity("customers"), [("C-000010", "name", "Acme Nippon K.K.")], run_id=run_id)
    _run(fresh, lambda run_id: None)
    assert top(fresh, "acme nippon").customer_id == "C-000010"
    assert_same_as_rebuild(fresh, [*_QUERIES, "acme"])
    assert full_builds == []


# Random sequences of runs: every change the merge, resolve and handover code can make to customers
# and contacts, in any order; after each run the index must equal a rebuild.
_NAMES = ["株式会社山田製作所", "やまだ商事", "ﾔﾏﾀﾞ ﾀﾛｳ", "ABC商事(株)", "さくら不動産", "鈴木 一郎", "山田 花子", None]
_PHONES = ["03-1234-5678", "０３（１２３４）５６７９", "+81 3-1234-0000", "090-1111-2222", None]
_OPS = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 99), st.sampled_from(["name", "kana", "phone", "notes", "owner"]),
              st.sampled_from(_NAMES + _PHONES)),
    st.tuples(st.just("new_customer"), st.sampled_from(_NAMES), st.sampled_from(_PHONES)),
    st.tuples(st.just("new_contact"), st.integers(0, 99), st.sampled_from(_NAMES), st.sampled_from(_PHONES)),
    st.tuples(st.just("edit_contact"), st.integers(0, 99), st.sampled_from(["name", "kana", "mobile", "notes"]),
              st.sampled_from(_NAMES + _PHONES)),
    st.tuples(st.just("move_contact"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("merge"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.integers(0, 99)),
    st.tuples(st.just("restore"), st.integers(0, 99)),
    st.tuples(st.just("delete_contact"), st.integers(0, 99)),
)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return db.db_path_for(build_master(tmp_path_factory.mktemp("template")))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_OPS, min_size=1, max_size=6), min_size=1, max_size=4))
@example(runs=[[("delete", 0)]])  # C-000007's records, shown under C-000001 it was merged into, leave with it
def test_update_index_equals_rebuild_after_random_runs(template_db: Path, runs: list[list[tuple]]) -> None:
    src = sqlite3.connect(template_db)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    src.backup(conn)
    src.close()
    cust, cont = S.entity("customers"), S.entity("contacts")
    counter = iter(range(100, 10_000))

    def ids(table: str, key: str, active: bool = False) -> list[str]:
        where = " WHERE _state = 'active'" if active else ""
        return [r[0] for r in conn.execute(f'SELECT "{key}" FROM "{table}"{where} ORDER BY "{key}"')]

    def apply(op: tuple, run_id: int) -> None:
        kind = op[0]
        customers, contacts = ids("customers", "customer_id"), ids("contacts", "contact_id")
        live = ids("customers", "customer_id", active=True)
        if kind == "edit":
            db.update_fields(conn, cust, [(customers[op[1] % len(customers)], op[2], op[3])], run_id=run_id)
        elif kind == "new_customer":
            row = {"customer_id": f"C-{next(counter):06d}", "kind": "corporate", "name": op[1], "phone": op[2]}
            db.insert_records(conn, cust, [tuple(row.get(k) for k in cust.keys)], run_id=run_id, source="x")
        elif kind == "new_contact":
            row = {"contact_id": f"P-{next(counter):06d}", "customer": customers[op[1] % len(customers)],
                   "name": op[2], "phone": op[3]}
            db.insert_records(conn, cont, [tuple(row.get(k) for k in cont.keys)], run_id=run_id, source="x")
        elif kind == "edit_contact":
            db.update_fields(conn, cont, [(contacts[op[1] % len(contacts)], op[2], op[3])], run_id=run_id)
        elif kind == "move_contact":
            db.update_fields(conn, cont, [(contacts[op[1] % len(contacts)], "customer",
                                           customers[op[2] % len(customers)])], run_id=run_id)
        elif kind == "merge" and len(live) > 1:
            combine_customers(conn, S, live[op[1] % len(live)], live[op[2] % len(live)], run_id=run_id,
                              at="2024-06-01T10:00:00", who="管理者")
        elif kind == "delete":
            db.set_state(conn, cust, customers[op[1] % len(customers)], "deleted", run_id=run_id)
        elif kind == "restore":
            db.set_state(conn, cust, customers[op[1] % len(customers)], "active", run_id=run_id)
        elif kind == "delete_contact":
            db.set_state(conn, cont, contacts[op[1] % len(contacts)], "deleted", run_id=run_id)

    try:
        for ops in runs:
            def work(run_id: int, ops: list[tuple] = ops) -> None:
                for op in ops:
                    apply(op, run_id)

            _run(conn, work)
            assert_same_as_rebuild(conn, [*_QUERIES, *(n for n in _NAMES if n), "1234", "ﾀﾛｳ"])
    finally:
        conn.close()


# --- the same with real merges of team workbooks -----------------------------------------------------

def test_index_after_a_sequence_of_real_merges_equals_a_rebuild(tmp_path: Path, full_builds: list[int],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from merge_fixtures import TODAY, book, customer, delete_rows, edit_cells, sheet_rows

    import xlcrm.master.run as merge_mod
    from xlcrm.master.distribute import distribute
    from xlcrm.master.run import merge, resolve

    def incremental(conn: sqlite3.Connection, schema: Schema, *rest: object) -> None:
        update_index(conn, schema, conn.execute("SELECT MAX(run_id) FROM runs").fetchone()[0])

    # What merge does once it calls update_index (harmless if it already does).
    monkeypatch.setattr(merge_mod, "_search_index", incremental, raising=False)
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()

    def check(*queries: str) -> sqlite3.Connection:
        conn = db.connect(db.db_path_for(master))
        assert_same_as_rebuild(conn, [*_QUERIES, *queries])
        return conn

    a = book(tmp_path / "team" / "a.xlsx", {
        "customers": [customer("株式会社青空商事", kana="アオゾラショウジ", phone="03-1111-2222"),
                      customer("緑山工業株式会社", kana="ミドリヤマコウギョウ", phone="045-222-3333"),
                      customer("株式会社山田製作所", kana="ヤマダセイサクショ", prefecture="東京都",
                               address="千代田区丸の内1-2-3", phone="03-1234-5678")],
        "contacts": [{"customer": "株式会社青空商事", "name": "高橋 一郎", "kana": "タカハシ イチロウ"},
                     {"customer": "緑山工業株式会社", "name": "木村 健太", "mobile": "090-1111-2222"}]}, owner="佐藤")
    b = book(tmp_path / "team" / "b.xlsx", {
        "customers": [customer("(株)山田製作所", kana="ヤマダセイサクショ", prefecture="東京都",
                               address="千代田区丸の内1-2-3", phone="03-9999-0000")],
        "contacts": [{"customer": "(株)山田製作所", "name": "伊藤 美咲", "kana": "イトウ ミサキ"}]}, owner="鈴木")
    merge([a, b], master, S, today=TODAY)  # first merge: the index is built
    assert len(full_builds) == 1
    check("青空", "ミドリヤマ", "伊藤")
    ids = {r["顧客名"]: r["顧客ID"] for r in sheet_rows(master, "顧客")}

    # 佐藤 edits name, phone and フリガナ and moves a contact; 高橋 brings new customers and a contact.
    wb = distribute(master, tmp_path / "out", S)[0]
    edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"},
               {"顧客名": "株式会社青空ホールディングス", "電話番号": "03-1111-3333", "フリガナ": "アオゾラホールディングス"})
    edit_cells(wb, "担当者", {"氏名": "木村 健太"}, {"顧客": ids["株式会社青空商事"]})
    c = book(tmp_path / "team" / "c.xlsx", {  # known customers (same name and phone: linked) and a new one
        "customers": [customer("白浜物産株式会社", kana="シラハマブッサン", phone="06-3333-4444"),
                      customer("株式会社山田製作所", phone="03-1234-5678"), customer("緑山工業株式会社", phone="045-222-3333")],
        "contacts": [{"customer": "株式会社山田製作所", "name": "田中 花子", "mobile": "080-5555-6666"},
                     {"customer": "白浜物産株式会社", "name": "森 誠"},
                     {"customer": "緑山工業株式会社", "name": "佐々木 恵", "kana": "ササキ メグミ"}]}, owner="高橋")
    report = merge([wb, c], master, S, today=TODAY)
    assert next(f for f in report.files if Path(f.file).name == "c.xlsx").sheets["contacts"].new == 3
    conn = check("アオゾラホールディングス", "0311113333", "白浜", "田中", "森", "ササキ")
    try:
        assert top(conn, "木村").customer_id == ids["株式会社青空商事"]
        assert top(conn, "あおぞらほーるでぃんぐす").customer_id == ids["株式会社青空商事"]
        assert search(conn, S, "アオゾラショウジ") == []
        assert top(conn, "ササキ").customer_id == ids["緑山工業株式会社"]
    finally:
        conn.close()

    # The probable duplicate, merged by decision: the younger ID leaves, its contact follows.
    pair = sheet_rows(master, "重複候補")[0]
    edit_cells(master, "重複候補", {"候補番号": pair["候補番号"]}, {"判断": "統合"})
    assert resolve(master, S).merged == 1
    conn = check("伊藤 美咲", "0399990000")
    try:
        hit = top(conn, "伊藤 美咲")
        assert hit.customer_id == min(pair["ID (A)"], pair["ID (B)"])
        assert len({h.customer_id for h in search(conn, S, "山田製作所")}) == 1
    finally:
        conn.close()

    # A customer deleted from 佐藤's workbook, confirmed 削除: it and its contact leave the index.
    delete_rows(wb, "顧客", {"顧客名": "緑山工業株式会社"})
    merge([wb, c], master, S, today=TODAY)
    edit_cells(master, "削除候補", {"ID": ids["緑山工業株式会社"]}, {"判断": "削除"})
    assert resolve(master, S).deleted == 1
    conn = check("ミドリヤマ", "緑山", "ササキ")
    try:
        assert search(conn, S, "ミドリヤマコウギョウ") == [] and search(conn, S, "ササキメグミ") == []
    finally:
        conn.close()
    assert len(full_builds) == 1  # every merge after the first updated the index in place
