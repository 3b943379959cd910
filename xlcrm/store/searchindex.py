"""The search index inside the master database: its layout from the schema, its folding, and how
merges build and keep it current.  :mod:`xlcrm.views.search` asks it questions.

Every indexed value and every query go through the same folding (``xlcrm.normalize.fold_search``;
phone-type columns keep digits only; plus the company key), so matching is substring matching on
folded text, which works for Japanese where word splitting does not.  The columns come from the
schema (``search=True`` on customers and contacts), custom ones included.

Storage: ``search_rows`` (one row per active customer and contact person, values already folded, a
B-tree index on every column but free text) and ``search_fts``, an FTS5 index over it with the
trigram tokenizer, so any substring of three characters or more is an index lookup; ``search_text``
and ``search_text_fts`` hold the free text of activities, deals and TODOs the same way.  Two-character
substrings (札幌, 電話, 見積), which trigrams cannot serve, are looked up in ``search_bigrams`` and
``search_text_bigrams``: FTS5 indexes of every pair of adjacent characters of those rows.  The first
merge builds them (:func:`build_index`); every later merge calls :func:`update_index`, which
rewrites only the rows of records the run changed.

Kept free of pandas/pandera: the ribbon's search imports it on every click.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

from xlcrm import normalize as _nz
from xlcrm.errors import XlcrmError
from xlcrm.normalize import company_key, company_key_of_stored, fold_search, phone_digits
from xlcrm.schema import Column, Schema
from xlcrm.store.db import ACTIVE, transaction

#: The index tables inside the master database.
ROWS_TABLE = "search_rows"
FTS_TABLE = "search_fts"
VOCAB_TABLE = "search_vocab"
#: Not detail=full (smaller, faster to build); not detail=none (column filters are needed).
FTS_DETAIL = "column"
#: Synthetic indexed column: the company name without 株式会社 and friends (matches (株)山田 and 山田).
COMPANY_KEY = "company_key"
#: Entities whose rows are indexed; a contact hit points to its customer.
INDEXED_ENTITIES = ("customers", "contacts")
#: Column types stored as digits only, so 03-1234-5678 == 0312345678 == ０３（１２３４）５６７８.
DIGIT_TYPES = frozenset({"phone", "corporate_number"})
#: Column types whose exact match is as good as an ID (a phone number names one customer).
IDENTIFIER_TYPES = frozenset({"phone", "corporate_number", "email"})
#: Free-text column types (住所, 備考, custom notes): a match at their start is no better than inside,
#: so a note that happens to begin with 花子 does not outrank the customer named 田中 花子.
FREE_TEXT_TYPES = frozenset({"text"})
#: The record-text index: one row per activity, deal and TODO (every entity that belongs to a customer
#: but contacts), its free-text columns (内容, 対応内容, 案件名, 商品 …) folded, and an FTS5 trigram index
#: over it (detail=none: substring matches are verified with instr()).
TEXT_TABLE = "search_text"
TEXT_FTS_TABLE = "search_text_fts"
#: Trigram tokenizer arrived in SQLite 3.34.0.
TRIGRAM_MIN_SQLITE = (3, 34, 0)
#: Pairs of adjacent characters, for two-character queries: one FTS5 row per ``search_rows`` row (same
#: rowid) with two columns, ``keyed`` (the pairs of the columns a short query is looked for in: names,
#: readings, custom ones; see :func:`pair_column`) and ``free`` (住所, 備考: free text), and one per
#: ``search_text`` row.  Each document is the row's pairs separated by spaces ("ab bc cd" for abcd);
#: the ascii tokenizer keeps every non-ASCII character and, told so, every ASCII punctuation mark
#: inside a token, so each pair is one token (folded values hold no whitespace, the only separator
#: left).  Contentless: the pairs are not stored twice; deleting a row re-derives its document from
#: the folded values it had.
BIGRAM_TABLE = "search_bigrams"
TEXT_BIGRAM_TABLE = "search_text_bigrams"
#: meta: the run the pair indexes were last brought up to date with (as ``search_index_run``).
_PAIRS_RUN = "search_pairs_run"
_PAIR_CHARS = "".join(ch for ch in map(chr, range(0x21, 0x7F)) if not ch.isalnum())
_PAIR_TOKENIZER = "ascii tokenchars '" + _PAIR_CHARS.replace("'", "''") + "'"

#: Rank inside a tier: lower ranks first.  Derived from the column *type*, never from a key list.
_TYPE_RANK = {"id": 0, "phone": 1, "corporate_number": 1, "email": 1, "name": 2, "kana": 3}
_DEFAULT_RANK = 5  # address, notes, custom text
_COMPANY_KEY_RANK = 2



@dataclass(frozen=True)
class IndexedColumn:
    """One column of the search index: its key, the schema column it comes from, how it is folded."""

    key: str
    type: str
    rank: int
    digits: bool
    labels: Mapping[str, Column | None]  # entity key -> schema column (None: not on that entity)

    @property
    def free_text(self) -> bool:
        return self.type in FREE_TEXT_TYPES

    @property
    def prefix_index(self) -> bool:
        """Every column but free text gets a B-tree index: short queries and typos look there first."""
        return not self.free_text


# --- folding ----------------------------------------------------------------------------------------

def fold_text(value: Any) -> str:
    """Folded comparison text (no whitespace, no hyphens): 'ヤマダ タロウ' finds 'やまだたろう'."""
    return fold_search(value) or ""


def fold_digits(value: Any) -> str:
    """Digits only (+81 folded to 0), for phone and 法人番号 columns and phone-looking queries."""
    return phone_digits(value) or ""


def fold_company(name: Any) -> str:
    """The company key is already width/case/kana-folded and has no spaces: it needs no second pass."""
    if not name:
        return ""
    return company_key(str(name)) or ""


# --- index layout derived from the schema -------------------------------------------------------------

def indexed_columns(schema: Schema) -> list[IndexedColumn]:
    """Union of the customers' and contacts' ``search=True`` columns (schema order), then the company key.

    Custom columns an admin flags ``search = true`` in xlcrm.toml flow in here with no code change.
    """
    order: list[str] = []
    by_key: dict[str, dict[str, Column]] = {}
    for ekey in INDEXED_ENTITIES:
        for col in schema.entity(ekey).columns:
            if not col.search or col.key == COMPANY_KEY:
                continue
            if col.key not in by_key:
                order.append(col.key)
                by_key[col.key] = {}
            by_key[col.key][ekey] = col
    out = []
    for key in order:
        cols = by_key[key]
        first = next(iter(cols.values()))
        labels: dict[str, Column | None] = {e: cols.get(e) for e in INDEXED_ENTITIES}
        out.append(IndexedColumn(key, first.type, _TYPE_RANK.get(first.type, _DEFAULT_RANK),
                                 first.type in DIGIT_TYPES, labels))
    out.append(IndexedColumn(COMPANY_KEY, "name", _COMPANY_KEY_RANK, False,
                             dict.fromkeys(INDEXED_ENTITIES)))
    return out


def text_columns(schema: Schema) -> list[IndexedColumn]:
    """The free-text columns of the entities that belong to a customer (activities, deals, TODOs,
    custom text columns included), as index columns labelled with their entity."""
    out = []
    for e in schema:
        if e.key in INDEXED_ENTITIES or e.ref_column is None:
            continue
        out += [IndexedColumn(c.key, c.type, _DEFAULT_RANK, False, {e.key: c})
                for c in e.columns if c.type in FREE_TEXT_TYPES]
    return out


def pair_column(ic: IndexedColumn) -> str | None:
    """The column of :data:`BIGRAM_TABLE` holding ``ic``'s pairs of characters; None for the columns
    left out (digits only: a pair of digits is in most phone numbers; e-mail: ASCII, a fifth of all
    pairs; the company key: part of the name).  A query that must look in one of those scans."""
    if ic.free_text:
        return "free"
    if ic.digits or ic.type == "email" or ic.key == COMPANY_KEY:
        return None
    return "keyed"


def pair_term(needle: str) -> bool:
    """Whether ``needle`` is one token of the pair indexes (two characters, none an ASCII space or
    control character), i.e. the rows holding it are those the pair index names."""
    return len(needle) == 2 and all(not ch.isascii() or ch.isalnum() or ch in _PAIR_CHARS for ch in needle)


#: The pairs are made in UTF-32 (four bytes a character, whatever the character), in the machine's order.
_UTF32 = "utf-32-le" if sys.byteorder == "little" else "utf-32-be"


def pair_docs(texts: Sequence[str]) -> list[str]:
    """The pair document of each text: every two adjacent characters, space-separated ("ab bc cd" for
    abcd), with the text's first and last character as one-character tokens too, which no query
    looks up.  The tokens of a text's document depend on that text alone, so the document a row was
    indexed with is made again, to take it out, from the same text in any batch.

    At C speed, for all texts at once: joined with tabs (folded text holds no whitespace but spaces),
    encoded as UTF-32 and seen as an array of code points, the pairs are three strided copies (first
    characters, second characters, spaces) into one buffer, decoded and split again where a tab
    ends one pair and starts the next.  Half the time of joining the pairs text by text in Python.
    """
    if not texts:
        return []
    if any("\t" in t for t in texts):
        texts = [t.replace("\t", " ") for t in texts]
    joined = "\t" + "\t".join(texts) + "\t"
    n = len(joined) - 1
    chars = memoryview(joined.encode(_UTF32, "surrogatepass")).cast("I")
    out = bytearray(chars.nbytes * 3 - 12)
    view = memoryview(out).cast("I")
    view[0::3] = chars[:-1]
    view[1::3] = chars[1:]
    view[2::3] = memoryview((" " * n).encode(_UTF32)).cast("I")
    return [doc.strip(" \t") for doc in out.decode(_UTF32, "surrogatepass").split("\t \t")]


def _joined_values(rows: Sequence[Sequence[Any]], positions: Sequence[int]) -> list[str]:
    """Per row, the (folded, text) values at these positions, space-separated."""
    if not positions:
        return [""] * len(rows)
    if len(positions) == 1:
        return [row[positions[0]] or "" for row in rows]
    get = itemgetter(*positions)
    return [" ".join(filter(None, get(row))) for row in rows]


def pair_columns(columns: Sequence[IndexedColumn], group: str) -> list[str]:
    """The keys of the columns whose pairs ``group`` ("keyed" or "free") holds, in index order."""
    return [ic.key for ic in columns if pair_column(ic) == group]


def _pair_docs(columns: Sequence[IndexedColumn], offset: int, rows: Sequence[Sequence[Any]]) -> list[tuple[str, str]]:
    """(keyed, free) pair documents of index rows whose folded values start at position ``offset``."""
    keyed = [offset + i for i, ic in enumerate(columns) if pair_column(ic) == "keyed"]
    free = [offset + i for i, ic in enumerate(columns) if pair_column(ic) == "free"]
    return list(zip(pair_docs(_joined_values(rows, keyed)), pair_docs(_joined_values(rows, free)), strict=True))


def _text_spec(schema: Schema) -> str:
    return json.dumps([[next(iter(ic.labels)), ic.key] for ic in text_columns(schema)])


def trigram_available() -> bool:
    """The FTS5 trigram tokenizer needs SQLite >= 3.34 (and FTS5 compiled in)."""
    if sqlite3.sqlite_version_info < TRIGRAM_MIN_SQLITE:
        return False
    try:
        probe = sqlite3.connect(":memory:")
        try:
            probe.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")
        finally:
            probe.close()
    except sqlite3.OperationalError:
        return False
    return True


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _row_plan(entity: str, columns: Sequence[IndexedColumn]) -> list[tuple[str, str]]:
    """Per indexed column: (source column key, how to fold) for one entity; "" source: always empty."""
    plan = []
    for ic in columns:
        if ic.key == COMPANY_KEY:
            plan.append(("name" if entity == "customers" else "", "company"))
        elif ic.labels.get(entity) is None:
            plan.append(("", ""))
        else:
            plan.append((ic.key, "digits" if ic.digits else "fold"))
    return plan


# --- folding whole columns at once (the index build) -------------------------------------------------
#
# Folding value by value costs a few microseconds of Python per call, 2-3 s for a 100,000-customer
# master.  The same string operations (NFKC, casefold, translate, regex removal) run at C speed on one
# long string, so a column's values are joined with a separator, folded in one go and split again.  Every step is either per character or a regex whose context (digits around ー) never spans a
# separator, so the result equals ``fold_search`` / ``phone_digits`` value by value; tests check that
# on random text.  The character tables are normalize's own, so the two cannot drift apart.

#: Tried in order; one that occurs in no value of the column (nor appears through NFKC, e.g. ｜) is used.
#: ASCII punctuation that NFKC, casefold and the drop pattern leave alone, no combining mark composes
#: with, and that is printable, so the cheap isprintable()/isascii() guards keep working.
_SEPARATORS = ("|", "`", "^", "~")
_HYPHEN_CHARS = re.compile("[" + "".join(re.escape(chr(c)) for c in _nz._HYPHEN_TABLE) + "]")
_HIRAGANA = re.compile("[" + "".join(map(chr, _nz._HIRA_TO_KATA)) + "]+")
_NOT_DIGITS = {sep: re.compile(f"[^0-9{re.escape(sep)}]+") for sep in _SEPARATORS}


def _to_kata(m: re.Match[str]) -> str:
    return m.group().translate(_nz._HIRA_TO_KATA)


def _dashes(m: re.Match[str]) -> str:
    return "-" * len(m.group())


def _joined(values: Sequence[Any]) -> tuple[str, str] | None:
    """(separator, the values joined and put through ``normalize.text``'s drop + NFKC); None when a
    value is not text (a number in a custom column) or every separator occurs in the values."""
    for sep in _SEPARATORS:
        try:
            j = sep.join(values)
        except TypeError:
            return None
        if j.count(sep) == len(values) - 1 and chr(ord(sep) + 0xFEE0) not in j:  # ｜ folds to |
            break
    else:
        return None
    if not j.isprintable():  # as text(): every dropped character is non-printable
        j = j.translate(_nz._DROP)
    if not j.isascii():
        j = unicodedata.normalize("NFKC", j)
    return sep, j


def _split(j: str, sep: str, n: int) -> list[str] | None:
    parts = j.split(sep)
    return parts if len(parts) == n else None


def fold_many(values: Sequence[Any]) -> list[str]:
    """``[fold_search(v) for v in values]``, at C speed.

    text()'s whitespace collapsing is skipped: every whitespace character is dropped at the end anyway,
    and a space never separates a digit from ー differently than a run of them would.
    """
    got = _joined(values) if values else None
    if got is None:
        return [fold_text(v) for v in values]
    sep, j = got
    if not j.isascii():  # code(): hyphen look-alikes, and ー between digits, become "-"
        if _HYPHEN_CHARS.search(j):
            j = j.translate(_nz._HYPHEN_TABLE)
        if "ー" in j:
            j = _nz._CHOON_BETWEEN_DIGITS.sub(_dashes, j)
    j = j.casefold()
    if not j.isascii():
        j = unicodedata.normalize("NFKC", j)
        if _HIRAGANA.search(j):
            j = _HIRAGANA.sub(_to_kata, j)
    j = j.replace(" ", "").replace("-", "")
    if not j.isprintable():  # other whitespace (tabs, line breaks, U+3000 is gone with NFKC)
        j = _nz._SEARCH_DROP.sub("", j)
    if not j.isascii():
        if "ー" in j:
            j = _nz._CHOON_BETWEEN_DIGITS.sub("", j)
        j = unicodedata.normalize("NFKC", j)
    parts = _split(j, sep, len(values))
    return parts if parts is not None else [fold_text(v) for v in values]


def digits_many(values: Sequence[Any]) -> list[str]:
    """``[phone_digits(v) for v in values]``, at C speed (+81 numbers fixed one by one)."""
    got = _joined(values) if values else None
    if got is None:
        return [fold_digits(v) for v in values]
    sep, j = got
    parts = _split(_NOT_DIGITS[sep].sub("", j), sep, len(values))
    if parts is None:
        return [fold_digits(v) for v in values]
    if "+81" in j:
        for i, raw in enumerate(j.split(sep)):
            if raw.lstrip().startswith("+81"):
                d = parts[i][2:]
                parts[i] = d if d.startswith("0") else "0" + d
    return parts


def fold_column(values: Sequence[Any], how: str) -> list[str | None]:
    """One indexed column of a batch of rows, folded; "" is stored as NULL.

    Text columns fold in one batch, duplicates included: deduplicating first costs more than the C-speed
    folding of the repeats.  The company key has no batch form (its legal-form stripping is a loop of
    regexes per name): it runs once per distinct name, through normalize's fold for values already in
    stored form (half the time of company_key).
    """
    if how == "company":
        memo: dict[Any, str | None] = {
            v: (company_key_of_stored(v) if type(v) is str else fold_company(v)) or None
            for v in dict.fromkeys(values) if v is not None}
        memo[None] = None
        return list(map(memo.__getitem__, values))
    text = [v if v is not None else "" for v in values]
    folded = digits_many(text) if how == "digits" else fold_many(text)
    return [f or None for f in folded]


def _index_columns(conn: sqlite3.Connection, entity: str, key_cols: Sequence[str],
                   columns: Sequence[IndexedColumn], where: str = "",
                   params: Sequence[Any] = ()) -> list[Sequence[Any]]:
    """Column-wise: [key column..., folded indexed column...] for the active rows of ``entity``;
    ``where`` is an extra condition built here from schema keys, never from user text."""
    have = table_columns(conn, entity)
    plan = _row_plan(entity, columns)
    sources = [k for k in dict.fromkeys([*key_cols, *(src for src, _ in plan if src)]) if k in have]
    pos = {k: i for i, k in enumerate(sources)}
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: several times faster than sqlite3.Row for a bulk read
    data = cur.execute(f'SELECT {", ".join(quote_name(k) for k in sources)} FROM {quote_name(entity)} '
                       f'WHERE {ACTIVE} {where}', params).fetchall()
    if not data:
        return [()] * (len(key_cols) + len(plan))
    by_col = list(zip(*data, strict=True))
    out: list[Sequence[Any]] = [by_col[pos[k]] for k in key_cols]
    nothing = (None,) * len(data)
    for src, how in plan:
        i = pos.get(src, -1)
        out.append(fold_column(by_col[i], how) if i >= 0 else nothing)
    return out


# --- building and updating the index -------------------------------------------------------------------

#: FTS5 keeps this much pending index data in memory before writing a segment.  The default (1 MB)
#: writes a hundred small segments for 100,000 customers and merges them as it goes; one large
#: in-memory batch writes one segment: 40 % faster to build, and queries read one segment.
_FTS_HASHSIZE = 64 * 1024 * 1024
#: update_index falls back to a full build when a run changed more than this share of the indexed
#: rows: per-row FTS5 deletes and B-tree updates then cost more than building afresh (measured, see
#: benchmarks/README.md).
FULL_BUILD_SHARE = 0.4
_BY_CUSTOMER = f"{ROWS_TABLE}__customer"
_BY_CONTACT = f"{ROWS_TABLE}__contact"
#: Host parameters per IN (...) list.  Large: FTS5 pays per statement (chunks of 2,000 re-index rows in
#: about half the time chunks of 500 take); SQLite before 3.32 allows only 999.
_CHUNK = 2000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 900


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def sql_marks(chunk: Sequence[Any]) -> str:
    return ", ".join("?" * len(chunk))


def _last_run(conn: sqlite3.Connection) -> int:
    """The newest run in the database (0 without runs): what a full build has seen."""
    if not table_columns(conn, "runs"):
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(run_id), 0) FROM runs").fetchone()[0])


def _in_transaction(conn: sqlite3.Connection, work: Callable[[], None]) -> None:
    """Inside merge's transaction nothing is committed here; alone, the work is its own transaction."""
    if conn.in_transaction:
        work()
    else:
        with transaction(conn):
            work()


def build_index(conn: sqlite3.Connection, schema: Schema) -> int:
    """(Re)build the search index from the active customers and contacts; returns rows indexed.

    For the first merge, a changed schema (an admin added a search column) and :func:`search` when the
    index is missing; after a re-merge :func:`update_index` touches only what the run changed.  Called
    inside merge's transaction nothing is committed here, so a failed merge takes the index along.
    """
    columns = indexed_columns(schema)
    if not table_columns(conn, "customers"):
        raise XlcrmError("the master database has no customers table; run `xlcrm merge` first")
    rows = _customer_rows(conn, schema, columns)
    live = {r[1] for r in rows}
    rows += _contact_rows(conn, schema, columns, live.__contains__)

    col_sql = ", ".join(quote_name(c.key) for c in columns)
    trigram = trigram_available()
    stmts = [f"DROP TABLE IF EXISTS {VOCAB_TABLE}", f"DROP TABLE IF EXISTS {FTS_TABLE}",
             f"DROP TABLE IF EXISTS {ROWS_TABLE}",
             f"CREATE TABLE {ROWS_TABLE} (rowid INTEGER PRIMARY KEY, entity TEXT NOT NULL, "
             f"customer_id TEXT NOT NULL, contact_id TEXT, "
             f"{', '.join(f'{quote_name(c.key)} TEXT' for c in columns)})"]
    after = [f"CREATE INDEX {ROWS_TABLE}_{c.key} ON {ROWS_TABLE}({quote_name(c.key)})" for c in columns if c.prefix_index]
    # For update_index: the index row of a given customer or contact.
    after += [f"CREATE INDEX {_BY_CUSTOMER} ON {ROWS_TABLE}(customer_id)",
              f"CREATE INDEX {_BY_CONTACT} ON {ROWS_TABLE}(contact_id) WHERE contact_id IS NOT NULL"]
    if trigram:
        # Not detail=full: smaller and faster to build; substring queries AND the needle's trigrams and
        # verify with instr() (see _fts_match), so no phrase queries are needed.
        after.append(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5({col_sql}, content='{ROWS_TABLE}', "
                     f"content_rowid='rowid', tokenize='trigram', detail={FTS_DETAIL})")
        after.append(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('hashsize', {_FTS_HASHSIZE})")
        after.append(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
        after.append(f"CREATE VIRTUAL TABLE {VOCAB_TABLE} USING fts5vocab({FTS_TABLE}, 'row')")
    stmts += [f"DROP TABLE IF EXISTS {BIGRAM_TABLE}", f"DROP TABLE IF EXISTS {TEXT_BIGRAM_TABLE}"]
    if trigram:
        after += [f"CREATE VIRTUAL TABLE {BIGRAM_TABLE} USING fts5(keyed, free, content='', detail=column, "
                  f"columnsize=0, tokenize={_sql_text(_PAIR_TOKENIZER)})",
                  f"CREATE VIRTUAL TABLE {TEXT_BIGRAM_TABLE} USING fts5(pairs, content='', detail=none, "
                  f"columnsize=0, tokenize={_sql_text(_PAIR_TOKENIZER)})"]
        after += [f"INSERT INTO {t}({t}, rank) VALUES ('hashsize', {_FTS_HASHSIZE})"
                  for t in (BIGRAM_TABLE, TEXT_BIGRAM_TABLE)]
    meta = {"search_index_columns": json.dumps([c.key for c in columns]),
            "search_index_rows": str(len(rows)), "search_index_trigram": "1" if trigram else "0",
            "search_index_run": str(_last_run(conn)), "search_text_columns": _text_spec(schema)}
    if trigram:
        meta[_PAIRS_RUN] = meta["search_index_run"]
    texts = _text_rows(conn, schema, live.__contains__)
    stmts += [f"DROP TABLE IF EXISTS {TEXT_FTS_TABLE}", f"DROP TABLE IF EXISTS {TEXT_TABLE}",
              f"CREATE TABLE {TEXT_TABLE} (rowid INTEGER PRIMARY KEY, entity TEXT NOT NULL, "
              "record_id TEXT NOT NULL, customer_id TEXT NOT NULL, text TEXT NOT NULL)"]
    after.append(f"CREATE INDEX {TEXT_TABLE}__record ON {TEXT_TABLE}(record_id)")
    if trigram:
        after += [f"CREATE VIRTUAL TABLE {TEXT_FTS_TABLE} USING fts5(text, content='{TEXT_TABLE}', "
                  "content_rowid='rowid', tokenize='trigram', detail=none)",
                  f"INSERT INTO {TEXT_FTS_TABLE}({TEXT_FTS_TABLE}, rank) VALUES ('hashsize', {_FTS_HASHSIZE})",
                  f"INSERT INTO {TEXT_FTS_TABLE}({TEXT_FTS_TABLE}) VALUES ('rebuild')"]

    def work() -> None:
        for stmt in stmts:
            conn.execute(stmt)
        _insert_rows(conn, columns, rows)
        _insert_texts(conn, texts)
        for stmt in after:
            conn.execute(stmt)
        if trigram:  # the tables were created empty just above: their rowids are 1, 2, ... in list order
            _insert_pairs(conn, BIGRAM_TABLE, ((n, *d) for n, d in enumerate(_pair_docs(columns, 3, rows), 1)),
                          ordered=True)
            _insert_pairs(conn, TEXT_BIGRAM_TABLE, enumerate(pair_docs([r[3] for r in texts]), 1), ordered=True)
        _set_meta(conn, meta)

    _in_transaction(conn, work)
    return len(rows)


def _customer_rows(conn: sqlite3.Connection, schema: Schema, columns: Sequence[IndexedColumn],
                   where: str = "", params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Index rows (entity, customer id, contact id, folded values...) of the active customers."""
    cid = schema.entity("customers").id_column.key
    ids, *folded = _index_columns(conn, "customers", [cid], columns, where, params)
    n = len(ids)
    return list(zip(repeat("customers", n), ids, repeat(None, n), *folded, strict=True))


def _contact_rows(conn: sqlite3.Connection, schema: Schema, columns: Sequence[IndexedColumn],
                  is_live: Callable[[str], bool], where: str = "", params: Sequence[Any] = (),
                  survivor: Mapping[str, str] | None = None) -> list[tuple[Any, ...]]:
    """Index rows of the active contacts, under the customer each belongs to now: a merged-away
    customer's contacts show under its survivor, a deleted customer's not at all."""
    if not table_columns(conn, "contacts"):
        return []
    cont = schema.entity("contacts")
    cid, pid = schema.entity("customers").id_column.key, cont.id_column.key
    ref = cont.ref_column.key if cont.ref_column else "customer"
    ids, refs, *folded = _index_columns(conn, "contacts", [pid, ref], columns, where, params)
    if not ids:
        return []
    if survivor is None:
        survivor = survivors(conn, cid)
    owners = [survivor.get(r, r) for r in refs]
    return [("contacts", owner, *rest) for owner, *rest in zip(owners, ids, *folded, strict=True)
            if owner is not None and is_live(owner)]


def _text_rows(conn: sqlite3.Connection, schema: Schema, is_live: Callable[[str], bool],
               ids: Mapping[str, Sequence[str]] | None = None) -> list[tuple[str, str, str, str]]:
    """(entity, record id, customer id, folded text) of the active activities, deals and TODOs of
    live customers (``ids``: only these records, per entity); records with no text are left out."""
    cols_of: dict[str, list[IndexedColumn]] = {}
    for ic in text_columns(schema):
        cols_of.setdefault(next(iter(ic.labels)), []).append(ic)
    cid = schema.entity("customers").id_column.key
    survivor = survivors(conn, cid)
    out: list[tuple[str, str, str, str]] = []
    for ekey, ics in cols_of.items():
        if not table_columns(conn, ekey):
            continue
        entity = schema.entity(ekey)
        idk, ref = entity.id_column.key, entity.ref_column.key  # type: ignore[union-attr]
        if ids is None:
            batches: list[tuple[str, Sequence[Any]]] = [("", ())]
        else:
            batches = [(f"AND {quote_name(idk)} IN ({sql_marks(chunk)})", chunk) for chunk in chunks(ids.get(ekey, []))]
        for where, params in batches:
            rids, refs, *folded = _index_columns(conn, ekey, [idk, ref], ics, where, params)
            for rid, owner, *parts in zip(rids, refs, *folded, strict=True):
                owner = survivor.get(owner, owner)
                text = " ".join(p for p in parts if p)
                if text and owner is not None and is_live(owner):
                    out.append((ekey, rid, owner, text))
    return out


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _insert_pairs(conn: sqlite3.Connection, table: str, docs: Iterable[Sequence[Any]], delete: bool = False,
                  ordered: bool = False) -> None:
    """Index (rowid, document...) rows in a pair table, or (``delete``) take out rows indexed with
    exactly these documents (a contentless FTS5 table cannot look them up itself).

    In rowid order (sorted here unless ``ordered``): FTS5 writes its pending data out as a new segment
    whenever a rowid is not above the last one, so 3,000 deletes in record order cost 50 ms and leave
    hundreds of small segments, in rowid order 5 ms and one.
    """
    cols = "keyed, free" if table == BIGRAM_TABLE else "pairs"
    n = cols.count(",") + 1
    head, marks = (f"{table}, rowid, {cols}", "'delete', ?") if delete else (f"rowid, {cols}", "?")
    conn.executemany(f"INSERT INTO {table}({head}) VALUES ({marks}{', ?' * n})",
                     docs if ordered else sorted(docs, key=itemgetter(0)))


def _insert_texts(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    conn.executemany(f"INSERT INTO {TEXT_TABLE} (entity, record_id, customer_id, text) VALUES (?, ?, ?, ?)",
                     rows)


def _update_texts(conn: sqlite3.Connection, schema: Schema, since: int, customers: Iterable[str]) -> int:
    """Re-index the records changed since run ``since`` and those of the customers given (merged,
    deleted or new ones take their records along): old rows out, current rows in."""
    if not table_columns(conn, TEXT_TABLE):
        return 0
    ids: dict[str, list[str]] = {}
    cust_ids = list(customers)
    for ekey in dict.fromkeys(next(iter(ic.labels)) for ic in text_columns(schema)):
        if not table_columns(conn, ekey):
            continue
        entity = schema.entity(ekey)
        idk, ref = quote_name(entity.id_column.key), quote_name(entity.ref_column.key)  # type: ignore[union-attr]
        found = dict.fromkeys(r[0] for r in conn.execute(f"SELECT {idk} FROM {quote_name(ekey)} WHERE _updated_run >= ?",
                                                         (since,)))
        for chunk in chunks(cust_ids):
            found.update(dict.fromkeys(r[0] for r in conn.execute(
                f"SELECT {idk} FROM {quote_name(ekey)} WHERE {ref} IN ({sql_marks(chunk)})", chunk)))
        if found:
            ids[ekey] = list(found)
    if not ids:
        return 0
    fts = bool(table_columns(conn, TEXT_FTS_TABLE))
    bigrams = bool(table_columns(conn, TEXT_BIGRAM_TABLE))
    old_texts: list[tuple[int, str]] = []
    for ekey, rids in ids.items():
        for chunk in chunks(rids):
            old_texts += conn.execute(f"SELECT rowid, text FROM {TEXT_TABLE} WHERE record_id IN "
                                      f"({sql_marks(chunk)}) AND entity = ?", [*chunk, ekey]).fetchall()
    old = [r[0] for r in old_texts]
    if bigrams:
        _insert_pairs(conn, TEXT_BIGRAM_TABLE, zip([r[0] for r in old_texts], pair_docs([r[1] for r in old_texts]),
                                                   strict=True), delete=True)
    for chunk in chunks(old):
        if fts:
            conn.execute(f"INSERT INTO {TEXT_FTS_TABLE}({TEXT_FTS_TABLE}, rowid, text) SELECT 'delete', rowid, "
                         f"text FROM {TEXT_TABLE} WHERE rowid IN ({sql_marks(chunk)})", chunk)
        conn.execute(f"DELETE FROM {TEXT_TABLE} WHERE rowid IN ({sql_marks(chunk)})", chunk)
    cid = schema.entity("customers").id_column.key
    live = _LiveCustomers(conn, cid, set())
    new = _text_rows(conn, schema, live, ids)
    first = int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {TEXT_TABLE}").fetchone()[0]) + 1
    _insert_texts(conn, new)  # rowids first, first + 1, ... in list order
    if fts and new:
        conn.execute(f"INSERT INTO {TEXT_FTS_TABLE}(rowid, text) SELECT rowid, text FROM {TEXT_TABLE} "
                     "WHERE rowid >= ?", (first,))
    if bigrams:
        _insert_pairs(conn, TEXT_BIGRAM_TABLE, enumerate(pair_docs([r[3] for r in new]), first))
    return len(old) + len(new)


def _insert_rows(conn: sqlite3.Connection, columns: Sequence[IndexedColumn],
                 rows: Iterable[Sequence[Any]]) -> None:
    col_sql = ", ".join(quote_name(c.key) for c in columns)
    conn.executemany(f"INSERT INTO {ROWS_TABLE} (entity, customer_id, contact_id, {col_sql}) "
                     f"VALUES ({', '.join('?' * (3 + len(columns)))})", rows)


def _set_meta(conn: sqlite3.Connection, meta: Mapping[str, str]) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta.items())


def index_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def update_index(conn: sqlite3.Connection, schema: Schema, run_id: int) -> int:
    """Bring the search index up to date after run ``run_id``: re-index only the records it changed.

    Every change to a record stamps ``_updated_run`` (xlcrm.store.db), so the records to look at are those
    stamped after the index was last brought up to date, this run's included (calling it twice in one
    run is harmless).  A changed customer or contact gets its index row rewritten where its folded
    values changed (an edit of 担当営業 or 更新日 costs no index write), added, or dropped (merged away,
    deleted).  A customer that left the index takes the contacts shown under it along (they move to
    its survivor or leave), one that entered it (new, or active again) brings the contacts that point
    to it.  Falls back to :func:`build_index` when the index is missing, was built for other columns
    or by an older xlcrm, or when the run changed more than :data:`FULL_BUILD_SHARE` of it.  Like
    build_index it joins the caller's transaction.  Returns the index rows added, rewritten or dropped
    (after a full build: the rows indexed).
    """
    if full_build_due(conn, schema, run_id):
        return build_index(conn, schema)
    stamp = index_meta(conn, "search_index_run")
    assert stamp is not None
    since = min(int(stamp) + 1, run_id)
    columns = indexed_columns(schema)
    cid = schema.entity("customers").id_column.key
    has_contacts = bool(table_columns(conn, "contacts"))
    changed_customers = {r[0]: r[1] for r in conn.execute(
        f'SELECT {quote_name(cid)}, {ACTIVE} FROM customers WHERE _updated_run >= ?', (since,))}
    changed_contacts: list[str] = []
    if has_contacts:
        pid = schema.entity("contacts").id_column.key
        changed_contacts = [r[0] for r in conn.execute(
            f'SELECT {quote_name(pid)} FROM contacts WHERE _updated_run >= ?', (since,))]
    indexed = int(index_meta(conn, "search_index_rows") or 0)
    written = 0

    def work() -> None:
        nonlocal written
        old = _old_rows(conn, columns, "entity = 'customers' AND customer_id", list(changed_customers))
        was_indexed = {r[2] for r in old}
        # A contact (an activity, deal, TODO) is shown under the end of its customer's merge chain while
        # that one is active.  Only a changed customer that is not "active before and after" (new,
        # merged away, deleted, active again) can change that for an unchanged record: the records
        # whose customer is it, or whose chain runs through it, are looked at again, together with
        # every changed record.
        moved = [c for c, active in changed_customers.items() if not (active and c in was_indexed)]
        refs = _chained_into(_merge_links(conn, cid), moved) if moved else []
        contacts = dict.fromkeys(changed_contacts)
        if refs and has_contacts:
            contacts.update(dict.fromkeys(_contacts_pointing_to(conn, schema, refs)))
        stamped = set(changed_contacts)
        old += _old_rows(conn, columns, "entity = 'contacts' AND contact_id", list(contacts))

        new = _customer_rows(conn, schema, columns, "AND _updated_run >= ?", (since,))
        if has_contacts and contacts:
            live = _LiveCustomers(conn, cid, {r[1] for r in new})
            survivor = survivors(conn, cid)
            new += _contact_rows(conn, schema, columns, live, "AND _updated_run >= ?", (since,), survivor)
            pid_q = quote_name(schema.entity("contacts").id_column.key)
            for chunk in chunks([p for p in contacts if p not in stamped]):
                new += _contact_rows(conn, schema, columns, live, f"AND {pid_q} IN ({sql_marks(chunk)})", chunk,
                                     survivor)
        added, changed, dropped = _apply(conn, columns, old, new)
        texts = _update_texts(conn, schema, since, refs)
        meta = {"search_index_rows": str(indexed - dropped + added), "search_index_run": str(max(int(stamp), run_id))}
        if table_columns(conn, BIGRAM_TABLE):
            meta[_PAIRS_RUN] = meta["search_index_run"]
        _set_meta(conn, meta)
        written = added + changed + dropped + texts

    _in_transaction(conn, work)
    return written


def full_build_due(conn: sqlite3.Connection, schema: Schema, run_id: int) -> bool:
    """Whether :func:`update_index` after run ``run_id`` rebuilds the whole index (seconds on a large
    master: merge then builds it while a second process writes the workbook) rather than patching it."""
    stamp = index_meta(conn, "search_index_run") if index_is_current(conn, schema) else None
    if stamp is None or not _has_lookup_indexes(conn):
        return True
    since = min(int(stamp) + 1, run_id)
    changed = conn.execute("SELECT COUNT(*) FROM customers WHERE _updated_run >= ?", (since,)).fetchone()[0]
    if table_columns(conn, "contacts"):
        changed += conn.execute("SELECT COUNT(*) FROM contacts WHERE _updated_run >= ?", (since,)).fetchone()[0]
    return bool(changed > FULL_BUILD_SHARE * max(int(index_meta(conn, "search_index_rows") or 0), 1000))


def _has_lookup_indexes(conn: sqlite3.Connection) -> bool:
    """An index built before update_index existed lacks the by-record lookups: rebuild it once."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                        (ROWS_TABLE,))}
    return {_BY_CUSTOMER, _BY_CONTACT} <= names


def _old_rows(conn: sqlite3.Connection, columns: Sequence[IndexedColumn], cond: str,
              ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """(rowid, entity, customer id, contact id, values...) of the index rows where ``cond`` (ending in
    a column) is one of ``ids``."""
    cur = conn.cursor()
    cur.row_factory = None
    cols = ", ".join(quote_name(c.key) for c in columns)
    out: list[tuple[Any, ...]] = []
    for chunk in chunks(ids):
        out += cur.execute(f"SELECT rowid, entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} "
                           f"WHERE {cond} IN ({sql_marks(chunk)})", chunk).fetchall()
    return out


def _merge_links(conn: sqlite3.Connection, cid: str) -> dict[str, str]:
    """Merged-away customer ID -> the customer it was merged into (one step)."""
    return {r[0]: r[1] for r in conn.execute(
        f"SELECT {quote_name(cid)}, _merged_into FROM customers WHERE _state = 'merged' AND _merged_into IS NOT NULL")}


def _chained_into(links: Mapping[str, str], targets: Iterable[str]) -> list[str]:
    """``targets`` and every customer whose merge chain runs through one of them."""
    into: dict[str, list[str]] = {}
    for m, s in links.items():
        into.setdefault(s, []).append(m)
    seen = dict.fromkeys(targets)
    todo = list(seen)
    while todo:
        for m in into.get(todo.pop(), ()):
            if m not in seen:
                seen[m] = None
                todo.append(m)
    return list(seen)


def _contacts_pointing_to(conn: sqlite3.Connection, schema: Schema, refs: Sequence[str]) -> list[str]:
    """Active contacts whose customer is one of ``refs``."""
    cont = schema.entity("contacts")
    ref = cont.ref_column.key if cont.ref_column else "customer"
    out: list[str] = []
    for chunk in chunks(refs):
        out += [r[0] for r in conn.execute(
            f"SELECT {quote_name(cont.id_column.key)} FROM contacts WHERE {quote_name(ref)} IN ({sql_marks(chunk)}) AND {ACTIVE}",
            chunk)]
    return out


class _LiveCustomers:
    """Is this customer active (so its contacts are indexed)?  Known ones first, the rest asked once."""

    def __init__(self, conn: sqlite3.Connection, cid: str, known: set[str]) -> None:
        self.conn, self.cid, self.known = conn, cid, dict.fromkeys(known, True)

    def __call__(self, customer_id: str) -> bool:
        hit = self.known.get(customer_id)
        if hit is None:
            row = self.conn.execute(f"SELECT 1 FROM customers WHERE {quote_name(self.cid)} = ? AND {ACTIVE}",
                                    (customer_id,)).fetchone()
            self.known[customer_id] = hit = row is not None
        return hit


def _record_key(entity: str, customer_id: str, contact_id: str | None) -> tuple[str, str | None]:
    return (entity, contact_id if entity == "contacts" else customer_id)


def _apply(conn: sqlite3.Connection, columns: Sequence[IndexedColumn], old: Sequence[tuple[Any, ...]],
           new: Sequence[tuple[Any, ...]]) -> tuple[int, int, int]:
    """Turn the index rows ``old`` (with rowids) into ``new`` for the same records: (added, rewritten,
    dropped).

    A row whose values did not change is left alone; a changed one is rewritten in place, only its
    changed columns, so SQLite maintains only the B-tree indexes on those.  The external-content FTS5
    index is told the old values of every changed or dropped row, then indexes the new ones; one
    statement per few hundred rows (FTS5 pays about 0.15 ms per statement: a row-by-row executemany of
    5,000 deletes takes 0.9 s, this 0.15 s).
    """
    before = {_record_key(*r[1:4]): r for r in old}
    added: list[tuple[Any, ...]] = []
    changed: dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
    for row in new:
        o = before.pop(_record_key(*row[:3]), None)
        if o is None:
            added.append(row)
        elif o[1:] != row:
            changed[o[0]] = (o, row)
    dropped = [o[0] for o in before.values()]
    fts = bool(table_columns(conn, FTS_TABLE))
    names = ["entity", "customer_id", "contact_id", *(c.key for c in columns)]
    col_sql = ", ".join(quote_name(c.key) for c in columns)
    if fts:
        for chunk in chunks([*changed, *dropped]):
            conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {col_sql}) SELECT 'delete', rowid, "
                         f"{col_sql} FROM {ROWS_TABLE} WHERE rowid IN ({sql_marks(chunk)})", chunk)
    for chunk in chunks(dropped):
        conn.execute(f"DELETE FROM {ROWS_TABLE} WHERE rowid IN ({sql_marks(chunk)})", chunk)
    by_columns: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
    for rowid, (o, row) in changed.items():
        diff = tuple(i for i, (a, b) in enumerate(zip(o[1:], row, strict=True)) if a != b)
        by_columns.setdefault(diff, []).append((*(row[i] for i in diff), rowid))
    for diff, params in by_columns.items():
        sets = ", ".join(f"{quote_name(names[i])} = ?" for i in diff)
        conn.executemany(f"UPDATE {ROWS_TABLE} SET {sets} WHERE rowid = ?", params)
    first = int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {ROWS_TABLE}").fetchone()[0]) + 1
    _insert_rows(conn, columns, added)  # rowids first, first + 1, ... in list order
    if table_columns(conn, BIGRAM_TABLE):
        # Pair documents from the folded values: the old ones out, the new ones in; a rewrite that
        # leaves both documents as they were (a phone number, the company key) costs nothing here.
        olds = {o[0]: o for o in old}
        gone_ids = [*changed, *dropped]
        gone = list(zip(gone_ids, _pair_docs(columns, 4, [olds[rowid] for rowid in gone_ids]), strict=True))
        came = list(zip([*changed, *range(first, first + len(added))],
                        _pair_docs(columns, 3, [*(row for _, row in changed.values()), *added]), strict=True))
        n = len(changed)  # the changed rows come first in both
        keep = {g[0] for g, c in zip(gone[:n], came[:n], strict=True) if g == c}
        _insert_pairs(conn, BIGRAM_TABLE, [(rowid, *d) for rowid, d in gone if rowid not in keep], delete=True)
        _insert_pairs(conn, BIGRAM_TABLE, [(rowid, *d) for rowid, d in came if rowid not in keep])
    if fts:
        for chunk in chunks(list(changed)):
            conn.execute(f"INSERT INTO {FTS_TABLE}(rowid, {col_sql}) SELECT rowid, {col_sql} FROM {ROWS_TABLE} "
                         f"WHERE rowid IN ({sql_marks(chunk)})", chunk)
        if added:
            conn.execute(f"INSERT INTO {FTS_TABLE}(rowid, {col_sql}) SELECT rowid, {col_sql} FROM {ROWS_TABLE} "
                         "WHERE rowid >= ?", (first,))
    return len(added), len(changed), len(dropped)


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def survivors(conn: sqlite3.Connection, cid: str) -> dict[str, str]:
    """Merged-away customer ID -> the active survivor (following chains A -> B -> C)."""
    direct = _merge_links(conn, cid)
    out = {}
    for start in direct:
        cur, seen = start, {start}
        while cur in direct and direct[cur] not in seen:
            cur = direct[cur]
            seen.add(cur)
        out[start] = cur
    return out


def index_is_current(conn: sqlite3.Connection, schema: Schema) -> bool:
    """Present and built for today's schema columns (an admin may have added a search column)."""
    if not table_columns(conn, ROWS_TABLE):
        return False
    row = conn.execute("SELECT value FROM meta WHERE key = 'search_index_columns'").fetchone()
    if row is None or json.loads(row[0]) != [c.key for c in indexed_columns(schema)]:
        return False
    if index_meta(conn, "search_text_columns") != _text_spec(schema):
        return False
    tri = conn.execute("SELECT value FROM meta WHERE key = 'search_index_trigram'").fetchone()
    if tri is None or tri[0] == "0":
        return True
    # The pair indexes were brought up to date with the rest (an older xlcrm's merge leaves them behind).
    return all(table_columns(conn, t) for t in (FTS_TABLE, BIGRAM_TABLE, TEXT_BIGRAM_TABLE)) and \
        index_meta(conn, _PAIRS_RUN) == index_meta(conn, "search_index_run")
