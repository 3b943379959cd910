"""Find a customer however it is typed: the engine behind the ribbon's 顧客検索 and `xlcrm search`.

Staff type ひらがな or カタカナ, full- or half-width, a phone number with or without hyphens, or part
of a company name.  Every indexed value and every query therefore goes through the same folding
(``xlcrm.normalize.fold_search``; phone-type columns keep digits only; plus the company key), and
matching is substring matching on folded text, which works for Japanese where word splitting does not.
The columns come from the schema (``search=True`` on customers and contacts), custom ones included.

Storage, inside the master database: ``search_rows`` (one row per active customer and contact
person, values already folded, a B-tree index on every column but free text) and ``search_fts``, an
FTS5 index over it with the trigram tokenizer, so any substring of three characters or more is an
index lookup.  The first merge builds it (:func:`build_index`); every later merge calls
:func:`update_index`, which rewrites only the rows of records the run changed.  One- and two-character queries (too short for trigrams) take exact and prefix matches
from the B-tree indexes and scan only when those do not fill a page.  Ranking is computed in SQL with
the same formula as in Python (``_score``), so ``LIMIT`` keeps the best rows without pulling thousands
into Python.  rapidfuzz catches typos when few rows match.

Every ribbon click starts a fresh Python process: this module must stay free of pandas/pandera, and
rapidfuzz is imported only when a fuzzy pass runs.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

from xlcrm import normalize as _nz
from xlcrm.db import ACTIVE, format_id, transaction
from xlcrm.errors import XlcrmError
from xlcrm.normalize import company_key, company_key_of_stored, fold_search, phone_digits
from xlcrm.schema import Column, Lang, Schema

#: The index tables inside the master database.
ROWS_TABLE = "search_rows"
FTS_TABLE = "search_fts"
VOCAB_TABLE = "search_vocab"
#: Not detail=full (smaller, faster to build); not detail=none (column filters are needed).
FTS_DETAIL = "column"
#: Synthetic indexed column: the company name without 株式会社 and friends (matches (株)山田 and 山田).
COMPANY_KEY = "company_key"
_COMPANY_KEY_LABEL = {"ja": "会社名（法人格を除く）", "en": "Company name (without legal form)"}
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

# Score bases: one tier per band of 10, the in-tier bonus (< 7) never crosses into the next band.
SCORE_ID = 100.0
SCORE_IDENTIFIER = 90.0
SCORE_EXACT = 80.0
SCORE_PREFIX = 70.0
SCORE_SUBSTRING = 50.0
SCORE_RECORD = 40.0  # words from an activity, deal or TODO: below any match on the customer itself
SCORE_FUZZY = 30.0  # + similarity / 10 (similarity >= _FUZZY_CUTOFF)
_FUZZY_CUTOFF = 70.0
#: A fuzzy pass runs when the exact/prefix/substring passes found fewer hits than this.
_FEW_HITS = 3
#: Candidates handed from the trigram index to rapidfuzz.
_FUZZY_CANDIDATES = 400
#: Trigrams in more than this share of rows are too common to find a misspelt name by.
_FUZZY_MAX_SHARE = 0.02
#: Only these column types take part in the typo-tolerant pass (names, readings, company key).
_FUZZY_TYPES = frozenset({"name", "kana"})
#: Rank inside a tier: lower ranks first.  Derived from the column *type*, never from a key list.
_TYPE_RANK = {"id": 0, "phone": 1, "corporate_number": 1, "email": 1, "name": 2, "kana": 3}
_DEFAULT_RANK = 5  # address, notes, custom text
_COMPANY_KEY_RANK = 2

_PHONE_QUERY = re.compile(r"^\+?[0-9().]+$")  # after fold_search: no spaces/hyphens, ASCII ()
_ID_QUERY = re.compile(r"^([a-z])-?0*(\d{1,9})$")


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


@dataclass
class SearchHit:
    """One result row: a customer, or a contact person and the customer it belongs to."""

    customer_id: str | None
    contact_id: str | None
    name: str | None
    kana: str | None
    owner: str | None
    phone: str | None
    last_contact: str | None  # ISO date of the latest activity
    matched: str  # column key that matched (``company_key`` for the synthetic company key)
    why: str  # human-readable, in the requested language
    score: float
    contact_name: str | None = None
    #: ``master`` or ``workbook`` (a caller's not-yet-merged row passed as ``extra_rows``).
    source: str = "master"
    #: For workbook rows: the caller's own locator (``_ref`` of the extra row), e.g. ``顧客!A12``.
    ref: str | None = None
    #: When the words were found in an activity, deal or TODO: its ID and the text around them.
    record_id: str | None = None
    snippet: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- folding ----------------------------------------------------------------------------------------

def _fold(value: Any) -> str:
    """Folded comparison text (no whitespace, no hyphens): 'ヤマダ タロウ' finds 'やまだたろう'."""
    return fold_search(value) or ""


def _digits(value: Any) -> str:
    """Digits only (+81 folded to 0), for phone and 法人番号 columns and phone-looking queries."""
    return phone_digits(value) or ""


def _company_fold(name: Any) -> str:
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


def _q(name: str) -> str:
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


def _fold_many(values: Sequence[Any]) -> list[str]:
    """``[fold_search(v) for v in values]``, at C speed.

    text()'s whitespace collapsing is skipped: every whitespace character is dropped at the end anyway,
    and a space never separates a digit from ー differently than a run of them would.
    """
    got = _joined(values) if values else None
    if got is None:
        return [_fold(v) for v in values]
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
    return parts if parts is not None else [_fold(v) for v in values]


def _digits_many(values: Sequence[Any]) -> list[str]:
    """``[phone_digits(v) for v in values]``, at C speed (+81 numbers fixed one by one)."""
    got = _joined(values) if values else None
    if got is None:
        return [_digits(v) for v in values]
    sep, j = got
    parts = _split(_NOT_DIGITS[sep].sub("", j), sep, len(values))
    if parts is None:
        return [_digits(v) for v in values]
    if "+81" in j:
        for i, raw in enumerate(j.split(sep)):
            if raw.lstrip().startswith("+81"):
                d = parts[i][2:]
                parts[i] = d if d.startswith("0") else "0" + d
    return parts


def _fold_column(values: Sequence[Any], how: str) -> list[str | None]:
    """One indexed column of a batch of rows, folded; "" is stored as NULL.

    Text columns fold in one batch, duplicates included: deduplicating first costs more than the C-speed
    folding of the repeats.  The company key has no batch form (its legal-form stripping is a loop of
    regexes per name): it runs once per distinct name, through normalize's fold for values already in
    stored form (half the time of company_key).
    """
    if how == "company":
        memo: dict[Any, str | None] = {
            v: (company_key_of_stored(v) if type(v) is str else _company_fold(v)) or None
            for v in dict.fromkeys(values) if v is not None}
        memo[None] = None
        return list(map(memo.__getitem__, values))
    text = [v if v is not None else "" for v in values]
    folded = _digits_many(text) if how == "digits" else _fold_many(text)
    return [f or None for f in folded]


def _index_columns(conn: sqlite3.Connection, entity: str, key_cols: Sequence[str],
                   columns: Sequence[IndexedColumn], where: str = "",
                   params: Sequence[Any] = ()) -> list[Sequence[Any]]:
    """Column-wise: [key column..., folded indexed column...] for the active rows of ``entity``;
    ``where`` is an extra condition built here from schema keys, never from user text."""
    have = _table_columns(conn, entity)
    plan = _row_plan(entity, columns)
    sources = [k for k in dict.fromkeys([*key_cols, *(src for src, _ in plan if src)]) if k in have]
    pos = {k: i for i, k in enumerate(sources)}
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: several times faster than sqlite3.Row for a bulk read
    data = cur.execute(f'SELECT {", ".join(_q(k) for k in sources)} FROM {_q(entity)} '
                       f'WHERE {ACTIVE} {where}', params).fetchall()
    if not data:
        return [()] * (len(key_cols) + len(plan))
    by_col = list(zip(*data, strict=True))
    out: list[Sequence[Any]] = [by_col[pos[k]] for k in key_cols]
    nothing = (None,) * len(data)
    for src, how in plan:
        i = pos.get(src, -1)
        out.append(_fold_column(by_col[i], how) if i >= 0 else nothing)
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
#: Host parameters per IN (...) list.  Large: FTS5 pays per statement (5,000 rows re-indexed in chunks
#: of 500 took 0.7 s, in chunks of 2,000 0.4 s); SQLite before 3.32 allows only 999.
_CHUNK = 2000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 900


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(chunk: Sequence[Any]) -> str:
    return ", ".join("?" * len(chunk))


def _last_run(conn: sqlite3.Connection) -> int:
    """The newest run in the database (0 without runs): what a full build has seen."""
    if not _table_columns(conn, "runs"):
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
    if not _table_columns(conn, "customers"):
        raise XlcrmError("the master database has no customers table; run `xlcrm merge` first")
    rows = _customer_rows(conn, schema, columns)
    live = {r[1] for r in rows}
    rows += _contact_rows(conn, schema, columns, live.__contains__)

    col_sql = ", ".join(_q(c.key) for c in columns)
    trigram = trigram_available()
    stmts = [f"DROP TABLE IF EXISTS {VOCAB_TABLE}", f"DROP TABLE IF EXISTS {FTS_TABLE}",
             f"DROP TABLE IF EXISTS {ROWS_TABLE}",
             f"CREATE TABLE {ROWS_TABLE} (rowid INTEGER PRIMARY KEY, entity TEXT NOT NULL, "
             f"customer_id TEXT NOT NULL, contact_id TEXT, "
             f"{', '.join(f'{_q(c.key)} TEXT' for c in columns)})"]
    after = [f"CREATE INDEX {ROWS_TABLE}_{c.key} ON {ROWS_TABLE}({_q(c.key)})" for c in columns if c.prefix_index]
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
    meta = {"search_index_columns": json.dumps([c.key for c in columns]),
            "search_index_rows": str(len(rows)), "search_index_trigram": "1" if trigram else "0",
            "search_index_run": str(_last_run(conn)), "search_text_columns": _text_spec(schema)}
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
    if not _table_columns(conn, "contacts"):
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
        if not _table_columns(conn, ekey):
            continue
        entity = schema.entity(ekey)
        idk, ref = entity.id_column.key, entity.ref_column.key  # type: ignore[union-attr]
        if ids is None:
            batches: list[tuple[str, Sequence[Any]]] = [("", ())]
        else:
            batches = [(f"AND {_q(idk)} IN ({_marks(chunk)})", chunk) for chunk in _chunks(ids.get(ekey, []))]
        for where, params in batches:
            rids, refs, *folded = _index_columns(conn, ekey, [idk, ref], ics, where, params)
            for rid, owner, *parts in zip(rids, refs, *folded, strict=True):
                owner = survivor.get(owner, owner)
                text = " ".join(p for p in parts if p)
                if text and owner is not None and is_live(owner):
                    out.append((ekey, rid, owner, text))
    return out


def _insert_texts(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    conn.executemany(f"INSERT INTO {TEXT_TABLE} (entity, record_id, customer_id, text) VALUES (?, ?, ?, ?)",
                     rows)


def _update_texts(conn: sqlite3.Connection, schema: Schema, since: int, customers: Iterable[str]) -> int:
    """Re-index the records changed since run ``since`` and those of the customers given (merged,
    deleted or new ones take their records along): old rows out, current rows in."""
    if not _table_columns(conn, TEXT_TABLE):
        return 0
    ids: dict[str, list[str]] = {}
    cust_ids = list(customers)
    for ekey in dict.fromkeys(next(iter(ic.labels)) for ic in text_columns(schema)):
        if not _table_columns(conn, ekey):
            continue
        entity = schema.entity(ekey)
        idk, ref = _q(entity.id_column.key), _q(entity.ref_column.key)  # type: ignore[union-attr]
        found = dict.fromkeys(r[0] for r in conn.execute(f"SELECT {idk} FROM {_q(ekey)} WHERE _updated_run >= ?",
                                                         (since,)))
        for chunk in _chunks(cust_ids):
            found.update(dict.fromkeys(r[0] for r in conn.execute(
                f"SELECT {idk} FROM {_q(ekey)} WHERE {ref} IN ({_marks(chunk)})", chunk)))
        if found:
            ids[ekey] = list(found)
    if not ids:
        return 0
    fts = bool(_table_columns(conn, TEXT_FTS_TABLE))
    old: list[int] = []
    for ekey, rids in ids.items():
        for chunk in _chunks(rids):
            old += [r[0] for r in conn.execute(f"SELECT rowid FROM {TEXT_TABLE} WHERE record_id IN "
                                               f"({_marks(chunk)}) AND entity = ?", [*chunk, ekey])]
    for chunk in _chunks(old):
        if fts:
            conn.execute(f"INSERT INTO {TEXT_FTS_TABLE}({TEXT_FTS_TABLE}, rowid, text) SELECT 'delete', rowid, "
                         f"text FROM {TEXT_TABLE} WHERE rowid IN ({_marks(chunk)})", chunk)
        conn.execute(f"DELETE FROM {TEXT_TABLE} WHERE rowid IN ({_marks(chunk)})", chunk)
    cid = schema.entity("customers").id_column.key
    live = _LiveCustomers(conn, cid, set())
    new = _text_rows(conn, schema, live, ids)
    first = int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {TEXT_TABLE}").fetchone()[0]) + 1
    _insert_texts(conn, new)
    if fts and new:
        conn.execute(f"INSERT INTO {TEXT_FTS_TABLE}(rowid, text) SELECT rowid, text FROM {TEXT_TABLE} "
                     "WHERE rowid >= ?", (first,))
    return len(old) + len(new)


def _insert_rows(conn: sqlite3.Connection, columns: Sequence[IndexedColumn],
                 rows: Iterable[Sequence[Any]]) -> None:
    col_sql = ", ".join(_q(c.key) for c in columns)
    conn.executemany(f"INSERT INTO {ROWS_TABLE} (entity, customer_id, contact_id, {col_sql}) "
                     f"VALUES ({', '.join('?' * (3 + len(columns)))})", rows)


def _set_meta(conn: sqlite3.Connection, meta: Mapping[str, str]) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta.items())


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def update_index(conn: sqlite3.Connection, schema: Schema, run_id: int) -> int:
    """Bring the search index up to date after run ``run_id``: re-index only the records it changed.

    Every change to a record stamps ``_updated_run`` (xlcrm.db), so the records to look at are those
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
    stamp = _meta(conn, "search_index_run")
    assert stamp is not None
    since = min(int(stamp) + 1, run_id)
    columns = indexed_columns(schema)
    cid = schema.entity("customers").id_column.key
    has_contacts = bool(_table_columns(conn, "contacts"))
    changed_customers = {r[0]: r[1] for r in conn.execute(
        f'SELECT {_q(cid)}, {ACTIVE} FROM customers WHERE _updated_run >= ?', (since,))}
    changed_contacts: list[str] = []
    if has_contacts:
        pid = schema.entity("contacts").id_column.key
        changed_contacts = [r[0] for r in conn.execute(
            f'SELECT {_q(pid)} FROM contacts WHERE _updated_run >= ?', (since,))]
    indexed = int(_meta(conn, "search_index_rows") or 0)
    written = 0

    def work() -> None:
        nonlocal written
        old = _old_rows(conn, columns, "entity = 'customers' AND customer_id", list(changed_customers))
        was_indexed = {r[2] for r in old}
        # A contact is shown under the end of its customer's merge chain while that one is active.  Only
        # a changed customer that is not "active before and after" (new, merged away, deleted, active
        # again) can change that for an unchanged contact: the contacts whose customer is it, or whose
        # chain runs through it, are looked at again, together with every changed contact.
        moved = [c for c, active in changed_customers.items() if not (active and c in was_indexed)]
        contacts = dict.fromkeys(changed_contacts)
        if moved and has_contacts:
            refs = _chained_into(_merge_links(conn, cid), moved)
            contacts.update(dict.fromkeys(_contacts_pointing_to(conn, schema, refs)))
        stamped = set(changed_contacts)
        old += _old_rows(conn, columns, "entity = 'contacts' AND contact_id", list(contacts))

        new = _customer_rows(conn, schema, columns, "AND _updated_run >= ?", (since,))
        if has_contacts and contacts:
            live = _LiveCustomers(conn, cid, {r[1] for r in new})
            survivor = survivors(conn, cid)
            new += _contact_rows(conn, schema, columns, live, "AND _updated_run >= ?", (since,), survivor)
            pid_q = _q(schema.entity("contacts").id_column.key)
            for chunk in _chunks([p for p in contacts if p not in stamped]):
                new += _contact_rows(conn, schema, columns, live, f"AND {pid_q} IN ({_marks(chunk)})", chunk,
                                     survivor)
        added, changed, dropped = _apply(conn, columns, old, new)
        texts = _update_texts(conn, schema, since, moved)
        _set_meta(conn, {"search_index_rows": str(indexed - dropped + added),
                         "search_index_run": str(max(int(stamp), run_id))})
        written = added + changed + dropped + texts

    _in_transaction(conn, work)
    return written


def full_build_due(conn: sqlite3.Connection, schema: Schema, run_id: int) -> bool:
    """Whether :func:`update_index` after run ``run_id`` rebuilds the whole index (seconds on a large
    master: merge then builds it while a second process writes the workbook) rather than patching it."""
    stamp = _meta(conn, "search_index_run") if index_is_current(conn, schema) else None
    if stamp is None or not _has_lookup_indexes(conn):
        return True
    since = min(int(stamp) + 1, run_id)
    changed = conn.execute("SELECT COUNT(*) FROM customers WHERE _updated_run >= ?", (since,)).fetchone()[0]
    if _table_columns(conn, "contacts"):
        changed += conn.execute("SELECT COUNT(*) FROM contacts WHERE _updated_run >= ?", (since,)).fetchone()[0]
    return bool(changed > FULL_BUILD_SHARE * max(int(_meta(conn, "search_index_rows") or 0), 1000))


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
    cols = ", ".join(_q(c.key) for c in columns)
    out: list[tuple[Any, ...]] = []
    for chunk in _chunks(ids):
        out += cur.execute(f"SELECT rowid, entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} "
                           f"WHERE {cond} IN ({_marks(chunk)})", chunk).fetchall()
    return out


def _merge_links(conn: sqlite3.Connection, cid: str) -> dict[str, str]:
    """Merged-away customer ID -> the customer it was merged into (one step)."""
    return {r[0]: r[1] for r in conn.execute(
        f"SELECT {_q(cid)}, _merged_into FROM customers WHERE _state = 'merged' AND _merged_into IS NOT NULL")}


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
    for chunk in _chunks(refs):
        out += [r[0] for r in conn.execute(
            f"SELECT {_q(cont.id_column.key)} FROM contacts WHERE {_q(ref)} IN ({_marks(chunk)}) AND {ACTIVE}",
            chunk)]
    return out


class _LiveCustomers:
    """Is this customer active (so its contacts are indexed)?  Known ones first, the rest asked once."""

    def __init__(self, conn: sqlite3.Connection, cid: str, known: set[str]) -> None:
        self.conn, self.cid, self.known = conn, cid, dict.fromkeys(known, True)

    def __call__(self, customer_id: str) -> bool:
        hit = self.known.get(customer_id)
        if hit is None:
            row = self.conn.execute(f"SELECT 1 FROM customers WHERE {_q(self.cid)} = ? AND {ACTIVE}",
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
    5,000 deletes took 0.9 s where this takes 0.15 s).
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
    fts = bool(_table_columns(conn, FTS_TABLE))
    names = ["entity", "customer_id", "contact_id", *(c.key for c in columns)]
    col_sql = ", ".join(_q(c.key) for c in columns)
    if fts:
        for chunk in _chunks([*changed, *dropped]):
            conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {col_sql}) SELECT 'delete', rowid, "
                         f"{col_sql} FROM {ROWS_TABLE} WHERE rowid IN ({_marks(chunk)})", chunk)
    for chunk in _chunks(dropped):
        conn.execute(f"DELETE FROM {ROWS_TABLE} WHERE rowid IN ({_marks(chunk)})", chunk)
    by_columns: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
    for rowid, (o, row) in changed.items():
        diff = tuple(i for i, (a, b) in enumerate(zip(o[1:], row, strict=True)) if a != b)
        by_columns.setdefault(diff, []).append((*(row[i] for i in diff), rowid))
    for diff, params in by_columns.items():
        sets = ", ".join(f"{_q(names[i])} = ?" for i in diff)
        conn.executemany(f"UPDATE {ROWS_TABLE} SET {sets} WHERE rowid = ?", params)
    first = int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {ROWS_TABLE}").fetchone()[0]) + 1
    _insert_rows(conn, columns, added)
    if fts:
        for chunk in _chunks(list(changed)):
            conn.execute(f"INSERT INTO {FTS_TABLE}(rowid, {col_sql}) SELECT rowid, {col_sql} FROM {ROWS_TABLE} "
                         f"WHERE rowid IN ({_marks(chunk)})", chunk)
        if added:
            conn.execute(f"INSERT INTO {FTS_TABLE}(rowid, {col_sql}) SELECT rowid, {col_sql} FROM {ROWS_TABLE} "
                         "WHERE rowid >= ?", (first,))
    return len(added), len(changed), len(dropped)


def _table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
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
    if not _table_columns(conn, ROWS_TABLE):
        return False
    row = conn.execute("SELECT value FROM meta WHERE key = 'search_index_columns'").fetchone()
    if row is None or json.loads(row[0]) != [c.key for c in indexed_columns(schema)]:
        return False
    if _meta(conn, "search_text_columns") != _text_spec(schema):
        return False
    tri = conn.execute("SELECT value FROM meta WHERE key = 'search_index_trigram'").fetchone()
    return tri is None or tri[0] == "0" or bool(_table_columns(conn, FTS_TABLE))


# --- the query ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Query:
    raw: str
    text: str  # folded, no spaces: compared with text columns
    company: str  # folded company key of the query: compared with the company_key column
    digits: str  # digits only when the query looks like a phone number, else ""

    def needle(self, ic: IndexedColumn) -> str:
        if ic.digits:
            return self.digits
        if ic.key == COMPANY_KEY:
            return self.company
        return self.text


def _parse_query(query: str) -> _Query:
    text = _fold(query)
    digits = ""
    if _PHONE_QUERY.match(text) and any("0" <= ch <= "9" for ch in text):
        digits = _digits(query)  # 03-1234-5678 == 0312345678 == ０３（１２３４）５６７８ == +81 3 1234 5678
    return _Query(query, text, _company_fold(query) or text, digits)


def _score(ic: IndexedColumn, value: str, needle: str) -> tuple[float, str]:
    """(score, tier) of one folded value; (0, "") when it does not contain the needle.

    The SQL in :func:`_sql_score` computes exactly this, so SQL ``LIMIT`` keeps the rows Python ranks
    best.  Tiers: identifier equality (phone, e-mail, 法人番号), other equality, prefix, substring.
    """
    if not needle or not value:
        return 0.0, ""
    bonus = (5 - ic.rank) + len(needle) / len(value)
    if value == needle:
        if ic.type in IDENTIFIER_TYPES:
            return SCORE_IDENTIFIER + bonus, "exact"
        return SCORE_EXACT + bonus, "exact"
    if value.startswith(needle) and ic.type not in FREE_TEXT_TYPES:
        return SCORE_PREFIX + bonus, "prefix"
    if needle in value:
        return SCORE_SUBSTRING + bonus, "substring"
    return 0.0, ""


def _sql_score(columns: Sequence[IndexedColumn], q: _Query, params: dict[str, Any]) -> str:
    parts = []
    for i, ic in enumerate(columns):
        needle = q.needle(ic)
        if not needle:
            continue
        p = f"n{i}"
        params[p] = needle
        params[f"l{i}"] = len(needle)
        c = _q(ic.key)
        exact = SCORE_IDENTIFIER if ic.type in IDENTIFIER_TYPES else SCORE_EXACT
        bonus = f"({5 - ic.rank} + :l{i} * 1.0 / length({c}))"
        prefix = "" if ic.type in FREE_TEXT_TYPES else \
            f"WHEN substr({c}, 1, :l{i}) = :{p} THEN {SCORE_PREFIX} + {bonus} "
        parts.append(f"(CASE WHEN {c} IS NULL THEN 0 WHEN {c} = :{p} THEN {exact} + {bonus} {prefix}"
                     f"WHEN instr({c}, :{p}) > 0 THEN {SCORE_SUBSTRING} + {bonus} ELSE 0 END)")
    if not parts:
        return "0"
    return parts[0] if len(parts) == 1 else f"max({', '.join(parts)})"


def _could_hold(ic: IndexedColumn, needle: str) -> bool:
    """False when a column's canonical values cannot contain ``needle`` (kanji in フリガナ, kana in e-mail)."""
    if ic.type == "email":
        return needle.isascii()
    if ic.type == "kana":
        return all("\u30a0" <= ch <= "\u30ff" or ch.isascii() for ch in needle)
    return True


def _fts_term(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _cover_trigrams(needle: str) -> list[str]:
    """Trigrams that together cover the needle (every third, plus the last): fewer doclists to read.

    With ``detail=column`` FTS5 has no phrase queries; rows holding all of these trigrams in the column
    are candidates, and ``instr()`` in the scoring SQL keeps only real substring matches.
    """
    starts = list(range(0, len(needle) - 2, 3))
    if starts[-1] != len(needle) - 3:
        starts.append(len(needle) - 3)
    return list(dict.fromkeys(needle[i:i + 3] for i in starts))


def _fts_match(groups: Mapping[str, Sequence[str]]) -> str:
    """FTS5 query: for each needle (>= 3 chars), its columns must hold all its covering trigrams."""
    return " OR ".join(
        f"{{{' '.join(keys)}}} : ({' AND '.join(_fts_term(g) for g in _cover_trigrams(n))})"
        for n, keys in groups.items())


def search(conn: sqlite3.Connection, schema: Schema, query: str, *, limit: int = 20,
           extra_rows: Iterable[Mapping[str, Any]] | None = None, lang: Lang = "ja",
           me: str | None = None, owner: str | None = None, status: str | None = None,
           prefecture: str | None = None) -> list[SearchHit]:
    """Customers and contact persons matching ``query``, best first (at most ``limit``).

    ``extra_rows``: the caller's own rows not merged yet (the ribbon passes the open workbook's
    customers and contacts), as mappings keyed by column key, plus ``_entity`` (``customers`` default
    or ``contacts``) and an optional ``_ref`` (where the row lives, echoed in ``SearchHit.ref``).
    They are searched in memory with the same folding and ranking.

    Ranking: an ID, then identifiers (phone, e-mail, 法人番号), then exact, prefix and substring
    matches (a reading typed half in kana and half in kanji, やまだ精機, counts as a prefix or substring
    match of both parts), then typos.  Within a tier a company comes before its own contact persons,
    and ``me``'s customers (the person searching, by 担当営業) before colleagues'.

    Filters (``owner`` 担当営業, ``status`` ステータス, ``prefecture`` 都道府県, as typed: a label, a
    key or, for people and prefectures, the start of the name) keep only the customers they name; with
    a filter the query may be empty, which lists those customers by フリガナ.
    """
    if limit <= 0:
        raise XlcrmError(f"--limit must be 1 or more, got {limit}")
    q = _parse_query(query)
    allowed = _customer_filter(schema, owner=owner, status=status, prefecture=prefecture)
    if not q.text and not q.digits and allowed is None:
        raise XlcrmError("empty search: type part of a name, フリガナ, phone number or e-mail")
    if not index_is_current(conn, schema):
        try:
            build_index(conn, schema)
        except sqlite3.OperationalError as exc:  # read-only share, or a merge holds the lock
            raise XlcrmError(f"the master's search index is missing or outdated and cannot be rebuilt "
                             f"now ({exc}); ask the admin to run `xlcrm merge` or retry in a moment") from None
    columns = indexed_columns(schema)

    found: dict[tuple[str | None, str | None, str | None], _Candidate] = {}

    def keep(c: _Candidate) -> None:
        k = c.key
        if k not in found or c.score > found[k].score:
            found[k] = c

    extras = [] if allowed else _extra_candidates(schema, columns, extra_rows)
    if not q.text and not q.digits:
        for c in _listed(conn, schema, allowed, limit):  # type: ignore[arg-type]
            keep(c)
    else:
        for c in _id_hits(conn, schema, q):
            keep(c)
        for c in _index_hits(conn, columns, q, limit, allowed):
            keep(c)
        for c in _mixed_hits(conn, columns, q, limit, allowed, extras):
            keep(c)
        # Words in records rank below any match on the customer itself: when the customers found
        # already fill the page, no record can make it in, and the record index is not read.
        if sum(1 for c in found.values() if c.score >= SCORE_RECORD + 10) < limit:
            for c in _text_hits(conn, q, limit, allowed):
                keep(c)
        for c in _scan_extras(extras, columns, q):
            keep(c)
        sure = any(c.score >= SCORE_EXACT for c in found.values())
        if len(found) < _FEW_HITS and not sure and len(q.company or q.text) >= 3 and not q.digits \
                and "@" not in q.text:
            for c in _fuzzy_hits(conn, columns, q, extras, set(found)):
                keep(c)
        if allowed:
            ok = _allowed_ids(conn, schema, allowed, {c.customer_id for c in found.values() if c.customer_id})
            found = {k: c for k, c in found.items() if c.customer_id in ok}
    best = sorted(found.values(), key=lambda c: (-c.score, c.customer_id or "~", c.contact_id or ""))
    # A few more than asked: putting one's own customers first may lift one from below the cut.
    hits = _hydrate(conn, schema, best[:limit + 20] if me else best[:limit], q, lang)
    return _arrange(hits, me)[:limit]


def _tier(score: float) -> int:
    """Hits of one tier are equally relevant (scores are banded by tens, see ``SCORE_*``)."""
    return int(score // 10)


def _arrange(hits: list[SearchHit], me: str | None) -> list[SearchHit]:
    """Within a tier, ``me``'s customers first, companies before contact persons; and a company before
    its own contact persons wherever both matched (its row moves up to just before its first contact)."""
    mine = _fold(me) if me else ""

    def own(h: SearchHit) -> bool:
        o = _fold(h.owner)
        return bool(mine) and bool(o) and (o == mine or (len(mine) >= 2 and o.startswith(mine)))

    order = sorted(range(len(hits)), key=lambda i: (-_tier(hits[i].score), not own(hits[i]),
                                                     hits[i].contact_id is not None, i))
    ranked = [hits[i] for i in order]
    out: list[SearchHit] = []
    placed: set[int] = set()
    company_at = {h.customer_id: i for i, h in enumerate(ranked) if h.contact_id is None and h.customer_id}
    for i, h in enumerate(ranked):
        if i in placed:
            continue
        j = company_at.get(h.customer_id) if h.contact_id is not None else None
        if j is not None and j > i and j not in placed:
            out.append(ranked[j])
            placed.add(j)
        out.append(h)
        placed.add(i)
    return out


# --- filters -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Filter:
    """A condition on the customers table, as ``SELECT customer_id ...`` SQL and its parameters."""

    sql: str
    params: dict[str, Any]


def _customer_filter(schema: Schema, *, owner: str | None, status: str | None,
                     prefecture: str | None) -> _Filter | None:
    cust = schema.entity("customers")
    cid = _q(cust.id_column.key)
    conds: list[str] = []
    params: dict[str, Any] = {}
    if owner and owner.strip():
        if not cust.has("owner"):
            raise XlcrmError("--owner: this firm's customers have no 担当営業 column")
        params["f_owner"] = _fold(owner).replace("%", "").replace("_", "")
        conds.append("replace(replace(\"owner\", ' ', ''), '　', '') LIKE :f_owner || '%'")
    for key, typed in (("status", status), ("prefecture", prefecture)):
        if not typed or not typed.strip():
            continue
        if not cust.has(key):
            raise XlcrmError(f"--{key}: this firm's customers have no {key} column")
        col = cust.column(key)
        lookup = col.choice_lookup()
        want = typed.strip()
        keys = {lookup[want.casefold()]} if want.casefold() in lookup else {
            c.key for c in col.choices if c.ja.startswith(want) or c.en.casefold().startswith(want.casefold())}
        if not keys:
            shown = "、".join(c.ja for c in col.choices[:12])
            raise XlcrmError(f"--{key} {want!r}: no such {col.label('ja')}; use one of {shown}"
                             + (" …" if len(col.choices) > 12 else ""))
        marks = []
        for i, k in enumerate(sorted(keys)):
            params[f"f_{key}{i}"] = k
            marks.append(f":f_{key}{i}")
        conds.append(f'"{key}" IN ({", ".join(marks)})')
    if not conds:
        return None
    return _Filter(f"SELECT {cid} FROM customers WHERE {ACTIVE} AND {' AND '.join(conds)}", params)


def _allowed_ids(conn: sqlite3.Connection, schema: Schema, allowed: _Filter, ids: set[str]) -> set[str]:
    """Which of these customer IDs the filter keeps."""
    cid = _q(schema.entity("customers").id_column.key)
    out: set[str] = set()
    for chunk in _chunks(sorted(ids)):
        params = dict(allowed.params)
        params.update({f"id{i}": v for i, v in enumerate(chunk)})
        marks = ", ".join(f":id{i}" for i in range(len(chunk)))
        out.update(r[0] for r in conn.execute(f"SELECT {cid} FROM customers WHERE {cid} IN ({marks}) "
                                              f"AND {cid} IN ({allowed.sql})", params))
    return out


def _listed(conn: sqlite3.Connection, schema: Schema, allowed: _Filter, limit: int) -> list[_Candidate]:
    """No query, only filters: the customers they keep, by フリガナ then name."""
    cust = schema.entity("customers")
    order = ", ".join(f'"{k}"' for k in ("kana", "name") if cust.has(k)) or "1"
    cid = cust.id_column.key
    sql = (f'SELECT "{cid}" FROM customers WHERE "{cid}" IN ({allowed.sql}) ORDER BY {order}, "{cid}" '
           "LIMIT :lim")
    rows = conn.execute(sql, {**allowed.params, "lim": limit})
    return [_Candidate(r[0], None, "filter", "filter", SCORE_SUBSTRING, "customers") for r in rows]


# --- identifiers: is this new customer already in the master? ---------------------------------------------

def customers_by_identifier(conn: sqlite3.Connection, schema: Schema,
                            rows: Mapping[Any, Mapping[str, Any]]) -> dict[Any, list[tuple[str, str]]]:
    """For rows of new customers (any key -> {column key: value}), the master customers that share an
    identifier with them (phone, FAX, e-mail, 法人番号, folded as the index folds them): row key ->
    [(column key, customer ID)], in column order.  Uses the search index's B-tree indexes."""
    if not rows or not index_is_current(conn, schema):
        return {}
    cust = schema.entity("customers")
    out: dict[Any, list[tuple[str, str]]] = {}
    for ic in indexed_columns(schema):
        if ic.type not in IDENTIFIER_TYPES or ic.labels.get("customers") is None or not cust.has(ic.key):
            continue
        wanted: dict[str, list[Any]] = {}
        for key, row in rows.items():
            v = row.get(ic.key)
            folded = (_digits(v) if ic.digits else _fold(v)) if v is not None else ""
            if folded:
                wanted.setdefault(folded, []).append(key)
        for chunk in _chunks(list(wanted)):
            for cid, value in conn.execute(f"SELECT customer_id, {_q(ic.key)} FROM {ROWS_TABLE} WHERE entity = "
                                           f"'customers' AND {_q(ic.key)} IN ({_marks(chunk)})", chunk):
                for key in wanted.get(value, ()):
                    if (ic.key, cid) not in out.setdefault(key, []):
                        out[key].append((ic.key, cid))
    return out


# --- words in activities, deals and TODOs -----------------------------------------------------------------

def _text_hits(conn: sqlite3.Connection, q: _Query, limit: int, allowed: _Filter | None) -> list[_Candidate]:
    """Customers with an activity, deal or TODO whose text holds the query (two characters and more;
    not for phone numbers or IDs): one per customer, the first matching record found."""
    needle = q.text
    if len(needle) < 2 or q.digits or _ID_QUERY.match(needle) or not _table_columns(conn, TEXT_TABLE):
        return []
    params: dict[str, Any] = {"n": needle, "lim": 5 * limit + 50}
    where = "instr(text, :n) > 0"
    if len(needle) >= 3 and _table_columns(conn, TEXT_FTS_TABLE):
        params["m"] = " AND ".join(_fts_term(g) for g in _cover_trigrams(needle))
        where = f"rowid IN (SELECT rowid FROM {TEXT_FTS_TABLE} WHERE {TEXT_FTS_TABLE} MATCH :m) AND {where}"
    if allowed:
        params.update(allowed.params)
        where = f"({where}) AND customer_id IN ({allowed.sql})"
    out: dict[str, _Candidate] = {}
    # No ORDER BY: SQLite stops at the limit instead of collecting every match of a common word.
    sql = f"SELECT entity, record_id, customer_id, text FROM {TEXT_TABLE} WHERE {where} LIMIT :lim"
    for r in conn.execute(sql, params):
        if r["customer_id"] in out:
            continue
        score = SCORE_RECORD + len(needle) / max(len(r["text"]), 1)
        out[r["customer_id"]] = _Candidate(r["customer_id"], None, r["entity"], "record", score, r["entity"],
                                           record_id=r["record_id"])
    return list(out.values())


def _snippet(value: str, typed: str, folded: str, width: int = 60) -> str:
    """The record's text around the words found (as typed; else the start of the text)."""
    text = " ".join(value.split())
    at = text.find(typed) if typed else -1
    if at < 0:
        at = text.casefold().find(typed.casefold()) if typed else -1
    if at < 0 or len(text) <= width:
        return _short(text, width)
    start = max(0, at - width // 3)
    piece = text[start:start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


# --- readings typed half in kana ------------------------------------------------------------------------

_KANA_RUN = re.compile("[\u30a1-\u30fa\u30fc]+")


def _mixed_parts(text: str) -> tuple[list[str], list[str]] | None:
    """A folded query with both katakana (the folded form of any kana typed) and other characters
    (やまだ精機 -> ヤマダ / 精機): its kana runs and its other runs; None when it is not mixed."""
    kana = _KANA_RUN.findall(text)
    if not kana:
        return None
    rest = [r for r in _KANA_RUN.split(text) if r]
    if not rest:
        return None
    return kana, rest


def _mixed_hits(conn: sqlite3.Connection, columns: Sequence[IndexedColumn], q: _Query, limit: int,
                allowed: _Filter | None, extras: Sequence[_ExtraRow]) -> list[_Candidate]:
    """Rows whose reading holds every kana part and whose name holds every other part."""
    parts = _mixed_parts(q.text)
    if parts is None:
        return []
    kana_parts, name_parts = parts
    kana_cols = [(i, ic) for i, ic in enumerate(columns) if ic.type == "kana"]
    name_cols = [(i, ic) for i, ic in enumerate(columns) if ic.type == "name" and ic.key != COMPANY_KEY]
    if not kana_cols or not name_cols:
        return []
    params: dict[str, Any] = {"lim": limit + 10}
    conds = []
    for j, part in enumerate(kana_parts):
        params[f"k{j}"] = part
        conds.append("(" + " OR ".join(f"instr({_q(ic.key)}, :k{j}) > 0" for _, ic in kana_cols) + ")")
    for j, part in enumerate(name_parts):
        params[f"m{j}"] = part
        conds.append("(" + " OR ".join(f"instr({_q(ic.key)}, :m{j}) > 0" for _, ic in name_cols) + ")")
    where = " AND ".join(conds)
    longest = max(kana_parts, key=len)
    if len(longest) >= 3 and _table_columns(conn, FTS_TABLE):
        params["match"] = _fts_match({longest: [ic.key for _, ic in kana_cols]})
        where = f"rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match) AND {where}"
    if allowed:
        params.update(allowed.params)
        where = f"({where}) AND customer_id IN ({allowed.sql})"
    cols = ", ".join(_q(c.key) for c in columns)
    out = []

    def judge(entity: str, values: Sequence[str | None]) -> tuple[float, str]:
        kana = [values[i] or "" for i, ic in kana_cols if ic.labels.get(entity) is not None]
        names = [values[i] or "" for i, ic in name_cols if ic.labels.get(entity) is not None]
        if not all(any(p in v for v in kana) for p in kana_parts) or \
                not all(any(p in v for v in names) for p in name_parts):
            return 0.0, ""
        starts = any(v.startswith(kana_parts[0]) for v in kana) if q.text.startswith(kana_parts[0]) else \
            any(v.startswith(name_parts[0]) for v in names)
        return (SCORE_PREFIX if starts else SCORE_SUBSTRING) + 2 + len(q.text) / max(len(max(names, key=len)), 1), \
            "prefix" if starts else "substring"

    sql = f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE {where} LIMIT :lim"
    matched = next(ic.key for _, ic in kana_cols)
    for r in conn.execute(sql, params):
        score, tier = judge(r["entity"], [r[c.key] for c in columns])
        if score:
            out.append(_Candidate(r["customer_id"], r["contact_id"], matched, tier, score, r["entity"],
                                  mixed=True))
    for x in extras:
        score, tier = judge(x.entity, x.values)
        if score:
            out.append(_Candidate(x.customer_id, x.contact_id, matched, tier, score, x.entity, extra=x.row,
                                  mixed=True))
    return out


# --- candidates --------------------------------------------------------------------------------------

@dataclass
class _Candidate:
    customer_id: str | None
    contact_id: str | None
    matched: str
    tier: str
    score: float
    entity: str  # customers / contacts / the entity whose ID was typed
    similarity: float = 0.0
    record_id: str | None = None  # for ID hits on activities/deals/todos
    extra: Mapping[str, Any] | None = None  # the caller's row for workbook hits
    mixed: bool = False  # matched a query typed half in kana, half in kanji (reading + name)

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        """Master and workbook rows with the same ID are one result; ID-less workbook rows stay apart."""
        own_id = self.contact_id if self.entity == "contacts" else self.customer_id
        if self.extra is None or own_id:
            return (self.customer_id, self.contact_id, None)
        return (self.customer_id, self.contact_id, str(self.extra.get("_ref") or id(self.extra)))


def _best(columns: Sequence[IndexedColumn], values: Sequence[str | None], q: _Query,
          entity: str) -> tuple[float, str, str]:
    score, tier, matched = 0.0, "", ""
    for ic, v in zip(columns, values, strict=True):
        if ic.labels.get(entity) is None and ic.key != COMPANY_KEY:
            continue
        s, t = _score(ic, v or "", q.needle(ic))
        if s > score:
            score, tier, matched = s, t, ic.key
    return score, tier, matched


def _id_hits(conn: sqlite3.Connection, schema: Schema, q: _Query) -> list[_Candidate]:
    """C-000012 (or c12): that customer; P-...: that contact; A-/D-/T-...: the record's customer."""
    m = _ID_QUERY.match(q.text)
    if not m:
        return []
    prefix, number = m.group(1).upper(), int(m.group(2))
    out = []
    cid = schema.entity("customers").id_column.key
    surv: dict[str, str] | None = None
    for entity in schema:
        if entity.id_prefix.upper() != prefix:
            continue
        rid = format_id(entity, number)
        idk = entity.id_column.key
        if not _table_columns(conn, entity.key):
            continue
        if entity.key == "customers":
            row = conn.execute(f'SELECT "{idk}", _state, _merged_into FROM customers WHERE "{idk}" = ?',
                               (rid,)).fetchone()
            if row is None:
                continue
            target = row[0]
            if row["_state"] == "merged":
                surv = surv if surv is not None else survivors(conn, cid)
                target = surv.get(row[0], row["_merged_into"])
            elif row["_state"] != "active":
                continue
            out.append(_Candidate(target, None, idk, "id", SCORE_ID + 6, "customers", record_id=rid))
            continue
        ref = entity.ref_column
        if ref is None:
            continue
        row = conn.execute(f'SELECT "{ref.key}" FROM "{entity.key}" WHERE "{idk}" = ? AND {ACTIVE}',
                           (rid,)).fetchone()
        if row is None or not row[0]:
            continue
        surv = surv if surv is not None else survivors(conn, cid)
        target = surv.get(row[0], row[0])
        contact = rid if entity.key == "contacts" else None
        out.append(_Candidate(target, contact, idk, "id", SCORE_ID + 5, entity.key, record_id=rid))
    return out


def _index_hits(conn: sqlite3.Connection, columns: Sequence[IndexedColumn], q: _Query,
                limit: int, allowed: _Filter | None = None) -> list[_Candidate]:
    """Rows containing a needle, best first, via the trigram index (>= 3 chars) or, for 1-2 chars,
    the B-tree prefix indexes and then, only when those give fewer than ``limit``, a scan."""
    params: dict[str, Any] = {"lim": limit + 10}
    score_sql = _sql_score(columns, q, params)
    long_groups: dict[str, list[str]] = {}
    short: list[tuple[int, IndexedColumn]] = []
    for i, ic in enumerate(columns):
        needle = q.needle(ic)
        if needle:
            if len(needle) >= 3:
                long_groups.setdefault(needle, []).append(ic.key)
            else:
                short.append((i, ic))
    has_fts = bool(_table_columns(conn, FTS_TABLE))

    cols = ", ".join(_q(c.key) for c in columns)

    if allowed:
        params.update(allowed.params)

    def run(where: str, ordered: bool = True) -> list[_Candidate]:
        if allowed:
            where = f"({where}) AND customer_id IN ({allowed.sql})"
        # Unordered (free text: every hit scores alike), SQLite stops at the limit.
        order = "ORDER BY score DESC, customer_id, contact_id " if ordered else ""
        sql = (f"SELECT * FROM (SELECT entity, customer_id, contact_id, {cols}, {score_sql} AS score "
               f"FROM {ROWS_TABLE} WHERE {where}) WHERE score > 0 {order}LIMIT :lim")
        out = []
        for r in conn.execute(sql, params):
            score, tier, matched = _best(columns, [r[c.key] for c in columns], q, r["entity"])
            if score > 0:
                out.append(_Candidate(r["customer_id"], r["contact_id"], matched, tier, score, r["entity"]))
        return out

    found: list[_Candidate] = []
    if long_groups and has_fts:
        params["match"] = _fts_match(long_groups)
        found += run(f"rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match)")
    elif long_groups:
        # No trigram support in this SQLite: the LIKE-only path, a scan (slower, same results).
        long_keys = {k for keys in long_groups.values() for k in keys}
        found += run(" OR ".join(f"instr({_q(c.key)}, :n{i}) > 0" for i, c in enumerate(columns)
                                 if c.key in long_keys))
    if short:
        # Exact and prefix matches outrank any substring: take them from the B-tree indexes first.
        # A prefix like 山 starts ten thousand names; each index gives its first few hundred in
        # index order (exact matches sort first), enough to fill a page of results.
        params["per"] = max(200, 5 * limit)
        ranges = []
        for i, ic in short:
            if ic.prefix_index:
                needle = q.needle(ic)
                params[f"hi{i}"] = needle[:-1] + chr(ord(needle[-1]) + 1)
                ranges.append(f"SELECT * FROM (SELECT rowid FROM {ROWS_TABLE} WHERE {_q(ic.key)} >= :n{i} "
                              f"AND {_q(ic.key)} < :hi{i} ORDER BY {_q(ic.key)} LIMIT :per)")
        head = run(f"rowid IN ({' UNION ALL '.join(ranges)})") if ranges else []
        found += head
        if sum(1 for c in head if c.tier in ("exact", "prefix")) < limit:
            # A one- or two-character needle is someone starting to type a name or number: scan the
            # non-free-text columns.  The company key is inside the name (its prefixes came from the
            # index above); readings and e-mail addresses are not scanned for characters they cannot
            # hold.
            conds = [f"instr({_q(ic.key)}, :n{i}) > 0" for i, ic in short
                     if not ic.free_text and ic.key != COMPANY_KEY and _could_hold(ic, q.needle(ic))]
            if conds:
                found += run(" OR ".join(conds))
            # Two characters are a word already (札幌, 新宿, 見積): when names and numbers do not fill
            # the page, look in 住所/備考 too (one character would match half the master on 東 or 山).
            free = [f"instr({_q(ic.key)}, :n{i}) > 0" for i, ic in short
                    if ic.free_text and len(q.needle(ic)) >= 2]
            if free and len(found) < limit:
                found += run(" OR ".join(free), ordered=False)
    return found


@dataclass
class _ExtraRow:
    entity: str
    customer_id: str | None
    contact_id: str | None
    values: list[str | None]
    row: Mapping[str, Any]


def _extra_candidates(schema: Schema, columns: Sequence[IndexedColumn],
                      extra_rows: Iterable[Mapping[str, Any]] | None) -> list[_ExtraRow]:
    if not extra_rows:
        return []
    cust, cont = schema.entity("customers"), schema.entity("contacts")
    is_customer_id = re.compile(rf"^{re.escape(cust.id_prefix)}-\d+$", re.IGNORECASE)
    out = []
    for row in extra_rows:
        entity = str(row.get("_entity") or "customers")
        if entity not in INDEXED_ENTITIES:
            raise XlcrmError(f"extra row with _entity={entity!r}: only customers and contacts are searched")
        if entity == "customers":
            cid, pid, name = row.get(cust.id_column.key), None, row.get("name")
        else:
            ref = cont.ref_column.key if cont.ref_column else "customer"
            cid, pid, name = row.get(ref), row.get(cont.id_column.key), None
            if cid and not is_customer_id.match(str(cid).strip()):
                cid = None  # the 顧客 cell holds a name (a customer not merged yet): no ID to point to
        values: list[str | None] = []
        for ic in columns:
            if ic.key == COMPANY_KEY:
                values.append(_company_fold(name) or None)
            elif ic.labels.get(entity) is None:
                values.append(None)
            else:
                raw = row.get(ic.key)
                values.append((_digits(raw) if ic.digits else _fold(raw)) or None)
        out.append(_ExtraRow(entity, str(cid) if cid else None, str(pid) if pid else None, values, row))
    return out


def _scan_extras(extras: Sequence[_ExtraRow], columns: Sequence[IndexedColumn],
                 q: _Query) -> list[_Candidate]:
    out = []
    for x in extras:
        score, tier, matched = _best(columns, x.values, q, x.entity)
        if score > 0:
            out.append(_Candidate(x.customer_id, x.contact_id, matched, tier, score, x.entity, extra=x.row))
    return out


def _fuzzy_hits(conn: sqlite3.Connection, columns: Sequence[IndexedColumn], q: _Query,
                extras: Sequence[_ExtraRow], seen: set[tuple[str | None, str | None, str | None]],
                ) -> list[_Candidate]:
    """Typos: trigram candidates (any shared trigram) re-scored with rapidfuzz on names and readings."""
    from rapidfuzz import fuzz  # imported here: most searches never need it

    fuzzy_cols = [(i, ic) for i, ic in enumerate(columns)
                  if (ic.type in _FUZZY_TYPES or ic.key == COMPANY_KEY) and not ic.digits]
    if not fuzzy_cols:
        return []
    needles = {q.text, q.company} - {""}

    def similarity(value: str, needle: str) -> float:
        if not value:
            return 0.0
        s = fuzz.ratio(needle, value)
        if len(value) > len(needle):
            s = max(s, fuzz.partial_ratio(needle, value) - 5)  # part of a longer name, slightly less
        return s

    def rescore(entity: str, values: Sequence[str | None]) -> tuple[float, str, float]:
        best, matched = 0.0, ""
        for i, ic in fuzzy_cols:
            if ic.labels.get(entity) is None and ic.key != COMPANY_KEY:
                continue
            for n in needles:
                s = similarity(values[i] or "", n)
                if s > best:
                    best, matched = s, ic.key
        if best < _FUZZY_CUTOFF:
            return 0.0, "", best
        rank = next(ic.rank for _, ic in fuzzy_cols if ic.key == matched)
        return SCORE_FUZZY + best / 10 + (5 - rank) / 10, matched, best

    out: list[_Candidate] = []
    cols = ", ".join(_q(c.key) for c in columns)

    def add(r: sqlite3.Row) -> None:
        if (r["customer_id"], r["contact_id"], None) in seen:
            return
        score, matched, sim = rescore(r["entity"], [r[c.key] for c in columns])
        if score:
            out.append(_Candidate(r["customer_id"], r["contact_id"], matched, "fuzzy", score, r["entity"],
                                  similarity=sim))

    if _table_columns(conn, FTS_TABLE):
        grams = _rare_trigrams(conn, needles)
        if grams:
            keys = " ".join(ic.key for _, ic in fuzzy_cols)
            match = f"{{{keys}}} : ({' OR '.join(_fts_term(g) for g in grams)})"
            sql = (f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE rowid IN "
                   f"(SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? ORDER BY rank LIMIT ?)")
            for r in conn.execute(sql, (match, _FUZZY_CANDIDATES)):
                add(r)
        if not out:
            # A typo inside a short name breaks all its trigrams (青書食品 for 青葉食品): try the names
            # that start like the query instead, from the B-tree indexes.
            for n in sorted(needles, key=len, reverse=True):
                for plen in (2, 1):
                    if len(n) <= plen or out:
                        continue
                    lo = n[:plen]
                    hi = lo[:-1] + chr(ord(lo[-1]) + 1)
                    ranges = " UNION ".join(
                        f"SELECT rowid FROM {ROWS_TABLE} WHERE {_q(ic.key)} >= :lo AND {_q(ic.key)} < :hi"
                        for _, ic in fuzzy_cols if ic.prefix_index)
                    sql = (f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE rowid IN "
                           f"(SELECT rowid FROM ({ranges}) LIMIT :cap)")
                    for r in conn.execute(sql, {"lo": lo, "hi": hi, "cap": _FUZZY_CANDIDATES * 5}):
                        add(r)
    else:
        # No trigram index (old SQLite): rapidfuzz picks candidates from the names and readings.
        from rapidfuzz import process

        fetched = conn.execute(f"SELECT rowid, {', '.join(_q(ic.key) for _, ic in fuzzy_cols)} "
                               f"FROM {ROWS_TABLE}").fetchall()
        choices = {(r[0], j): v for r in fetched for j, v in enumerate(r[1:]) if v}
        rowids: set[int] = set()
        for n in needles:
            for _, _, key in process.extract(n, choices, scorer=fuzz.ratio, limit=_FUZZY_CANDIDATES,
                                             score_cutoff=_FUZZY_CUTOFF - 10):
                rowids.add(key[0])
        for rid in sorted(rowids):
            add(conn.execute(f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} "
                             "WHERE rowid = ?", (rid,)).fetchone())
    for x in extras:
        score, matched, sim = rescore(x.entity, x.values)
        if score:
            out.append(_Candidate(x.customer_id, x.contact_id, matched, "fuzzy", score, x.entity,
                                  similarity=sim, extra=x.row))
    return out


def _rare_trigrams(conn: sqlite3.Connection, needles: Iterable[str]) -> list[str]:
    """The query's trigrams that occur in the index but in few rows, rarest first (at most 8).

    A typo breaks the trigrams around it; the others still point at the intended name.  Common
    trigrams (株式会, ショウ) would pull in a third of the master and say nothing, so they are left out.
    """
    grams = sorted({n[i:i + 3] for n in needles for i in range(len(n) - 2)})
    if not grams:
        return []
    total = conn.execute(f"SELECT count(*) FROM {ROWS_TABLE}").fetchone()[0] or 1
    if _table_columns(conn, VOCAB_TABLE):
        marks = ", ".join("?" * len(grams))
        docs = dict(conn.execute(f"SELECT term, doc FROM {VOCAB_TABLE} WHERE term IN ({marks})", grams))
    else:
        docs = dict.fromkeys(grams, 1)
    rare = sorted((d, g) for g, d in docs.items() if 0 < d <= max(50, total * _FUZZY_MAX_SHARE))
    return [g for _, g in rare[:8]]


# --- results -----------------------------------------------------------------------------------------

_WHY = {
    "ja": {"id": "{label}が一致: {value}", "child_id": "{label} {value} の顧客",
           "exact": "{label}が一致: {value}", "prefix": "{label}が「{q}」で始まる: {value}",
           "substring": "{label}に「{q}」を含む: {value}", "fuzzy": "{label}が似ている（{pct}%）: {value}",
           "contact": "担当者の{label}", "filter": "絞り込み条件に一致",
           "record": "{label}に「{q}」（{id}）: {value}",
           "mixed": "{kana_label}に「{kana}」、{name_label}に「{name}」: {value}"},
    "en": {"id": "{label} matches: {value}", "child_id": "Customer of {label} {value}",
           "exact": "{label} matches: {value}", "prefix": "{label} starts with \"{q}\": {value}",
           "substring": "{label} contains \"{q}\": {value}", "fuzzy": "{label} is similar ({pct}%): {value}",
           "contact": "{label} (contact)", "filter": "Matches the filters",
           "record": "{label} has \"{q}\" ({id}): {value}",
           "mixed": "{kana_label} has \"{kana}\", {name_label} has \"{name}\": {value}"},
}


def _short(value: Any, width: int = 60) -> str:
    s = "" if value is None else str(value)
    s = " ".join(s.split())
    return s if len(s) <= width else s[: width - 1] + "…"


def _fetch(conn: sqlite3.Connection, table: str, idk: str, ids: Iterable[str]) -> dict[str, sqlite3.Row]:
    ids = sorted(set(ids))
    out: dict[str, sqlite3.Row] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ", ".join("?" * len(chunk))
        for r in conn.execute(f'SELECT * FROM "{table}" WHERE "{idk}" IN ({marks})', chunk):
            out[r[idk]] = r
    return out


def last_contacts(conn: sqlite3.Connection, schema: Schema, customer_ids: Iterable[str]) -> dict[str, str]:
    """Customer ID -> ISO date of its latest active activity (uses the activities(customer) index)."""
    act = schema.entity("activities")
    ref = act.ref_column.key if act.ref_column else "customer"
    if not _table_columns(conn, act.key):
        return {}
    out: dict[str, str] = {}
    ids = sorted(set(customer_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ", ".join("?" * len(chunk))
        for r in conn.execute(f'SELECT "{ref}", MAX("date") FROM "{act.key}" WHERE "{ref}" IN ({marks}) '
                              f'AND {ACTIVE} GROUP BY "{ref}"', chunk):
            if r[1]:
                out[r[0]] = str(r[1])
    return out


def _get(row: Mapping[str, Any] | sqlite3.Row | None, key: str) -> Any:
    if row is None:
        return None
    try:
        return row[key]
    except (KeyError, IndexError):
        return None


def _hydrate(conn: sqlite3.Connection, schema: Schema, cands: Sequence[_Candidate], q: _Query,
             lang: Lang) -> list[SearchHit]:
    cust, cont = schema.entity("customers"), schema.entity("contacts")
    customers = _fetch(conn, "customers", cust.id_column.key, [c.customer_id for c in cands if c.customer_id])
    contacts = _fetch(conn, "contacts", cont.id_column.key,
                      [c.contact_id for c in cands if c.contact_id and c.extra is None])
    last = last_contacts(conn, schema, customers)
    words = _WHY.get(lang, _WHY["en"])
    records: dict[tuple[str, str], Any] = {}
    for ekey in {c.entity for c in cands if c.tier == "record"}:
        idk = schema.entity(ekey).id_column.key
        got = _fetch(conn, ekey, idk, [c.record_id for c in cands if c.tier == "record" and c.entity == ekey])
        records.update({(ekey, k): v for k, v in got.items()})
    hits = []
    for c in cands:
        crow: Mapping[str, Any] | sqlite3.Row | None = customers.get(c.customer_id or "")
        prow: Mapping[str, Any] | sqlite3.Row | None = contacts.get(c.contact_id or "")
        name = None
        if c.extra is not None:
            if c.entity == "customers":
                crow = c.extra
            else:
                prow = c.extra
                if crow is None:  # a new contact whose 顧客 cell names a customer not merged yet
                    ref = cont.ref_column.key if cont.ref_column else "customer"
                    name = _str(c.extra.get(ref))
        matched_row = prow if c.entity == "contacts" else crow
        snippet = None
        if c.tier == "record":
            ent = schema.entity(c.entity)
            rec = records.get((c.entity, c.record_id or ""))
            label, snippet = ent.label(lang), ""
            for col in ent.columns:
                v = _get(rec, col.key)
                if col.type in FREE_TEXT_TYPES and v and q.text in _fold(v):
                    label = f"{ent.label(lang)}の{col.label(lang)}" if lang == "ja" else \
                        f"{ent.label(lang)} {col.label(lang)}"
                    snippet = _snippet(str(v), q.raw.strip(), q.text)
                    break
            why = words["record"].format(label=label, q=_short(q.raw.strip(), 30), value=snippet,
                                         id=c.record_id)
        elif c.tier == "filter":
            why = words["filter"]
        elif c.mixed:
            ent = schema.entity(c.entity)
            kana_parts, name_parts = _mixed_parts(q.text) or ([], [])
            why = words["mixed"].format(
                kana_label=ent.column("kana").label(lang) if ent.has("kana") else "kana",
                name_label=ent.column("name").label(lang) if ent.has("name") else "name",
                kana="・".join(kana_parts), name="・".join(name_parts),
                value=_short(_get(matched_row, "name")))
        elif c.tier == "id":
            entity = schema.entity(c.entity)
            label = entity.id_column.label(lang)
            template = "id" if c.entity in INDEXED_ENTITIES else "child_id"
            why = words[template].format(label=label, value=c.record_id)
        else:
            if c.matched == COMPANY_KEY:
                label = _COMPANY_KEY_LABEL[lang]
                value: Any = company_key(str(_get(crow, "name") or "")) or _get(crow, "name")
            else:
                col = schema.entity(c.entity).column(c.matched)
                label = col.label(lang)
                if c.entity == "contacts":
                    label = words["contact"].format(label=label)
                value = _get(matched_row, c.matched)
            col_digits = any(ic.digits for ic in indexed_columns(schema) if ic.key == c.matched)
            shown_q = q.digits if col_digits and q.digits else q.raw.strip()
            why = words[c.tier].format(label=label, value=_short(value), q=_short(shown_q, 30),
                                       pct=round(c.similarity))
        phone = None
        if prow is not None:
            phone = _get(prow, "phone") or _get(prow, "mobile")
        phone = phone or _get(crow, "phone")
        hits.append(SearchHit(
            customer_id=c.customer_id, contact_id=c.contact_id,
            name=_str(_get(crow, "name")) or name, kana=_str(_get(crow, "kana")),
            owner=_str(_get(crow, "owner")),
            phone=_str(phone), last_contact=last.get(c.customer_id or ""), matched=c.matched, why=why,
            score=round(c.score, 3), contact_name=_str(_get(prow, "name")),
            source="master" if c.extra is None else "workbook",
            ref=None if c.extra is None else _str(c.extra.get("_ref")),
            record_id=c.record_id if c.tier == "record" else None, snippet=snippet or None))
    return hits


def _str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
