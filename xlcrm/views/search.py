"""Find a customer however it is typed: the engine behind the ribbon's 顧客検索 and `xlcrm search`.

Staff type ひらがな or カタカナ, full- or half-width, a phone number with or without hyphens, part of
a company name, a place, or words from an activity.  The query is folded the way the index
(:mod:`xlcrm.store.searchindex`) folded the values.  One- and two-character queries (too short for
trigrams) take exact and prefix matches from the B-tree indexes and scan only when those do not fill
a page, from the index of character pairs for two characters.  Ranking is computed in SQL with the same formula as in Python (``_score``), so ``LIMIT``
keeps the best rows without pulling thousands into Python.  rapidfuzz catches typos when few rows
match.

Every ribbon click starts a fresh Python process: this module must stay free of pandas/pandera, and
rapidfuzz is imported only when a fuzzy pass runs.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.normalize import company_key
from xlcrm.schema import Lang, Schema
from xlcrm.store.db import ACTIVE, format_id
from xlcrm.store.searchindex import (
    BIGRAM_TABLE,
    COMPANY_KEY,
    FREE_TEXT_TYPES,
    FTS_TABLE,
    IDENTIFIER_TYPES,
    INDEXED_ENTITIES,
    ROWS_TABLE,
    TEXT_BIGRAM_TABLE,
    TEXT_FTS_TABLE,
    TEXT_TABLE,
    VOCAB_TABLE,
    IndexedColumn,
    build_index,
    chunks,
    fold_company,
    fold_digits,
    fold_text,
    index_is_current,
    indexed_columns,
    pair_column,
    pair_columns,
    pair_term,
    quote_name,
    sql_marks,
    survivors,
    table_columns,
)

_COMPANY_KEY_LABEL = {"ja": "会社名（法人格を除く）", "en": "Company name (without legal form)"}

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
_PHONE_QUERY = re.compile(r"^\+?[0-9().]+$")  # after fold_search: no spaces/hyphens, ASCII ()
_ID_QUERY = re.compile(r"^([a-z])-?0*(\d{1,9})$")


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
    text = fold_text(query)
    digits = ""
    if _PHONE_QUERY.match(text) and any("0" <= ch <= "9" for ch in text):
        digits = fold_digits(query)  # 03-1234-5678 == 0312345678 == ０３（１２３４）５６７８ == +81 3 1234 5678
    return _Query(query, text, fold_company(query) or text, digits)


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
        c = quote_name(ic.key)
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
    mine = fold_text(me) if me else ""

    def own(h: SearchHit) -> bool:
        o = fold_text(h.owner)
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
    cid = quote_name(cust.id_column.key)
    conds: list[str] = []
    params: dict[str, Any] = {}
    if owner and owner.strip():
        if not cust.has("owner"):
            raise XlcrmError("--owner: this firm's customers have no 担当営業 column")
        params["f_owner"] = fold_text(owner).replace("%", "").replace("_", "")
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
    cid = quote_name(schema.entity("customers").id_column.key)
    out: set[str] = set()
    for chunk in chunks(sorted(ids)):
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
            folded = (fold_digits(v) if ic.digits else fold_text(v)) if v is not None else ""
            if folded:
                wanted.setdefault(folded, []).append(key)
        for chunk in chunks(list(wanted)):
            for cid, value in conn.execute(f"SELECT customer_id, {quote_name(ic.key)} FROM {ROWS_TABLE} WHERE entity = "
                                           f"'customers' AND {quote_name(ic.key)} IN ({sql_marks(chunk)})", chunk):
                for key in wanted.get(value, ()):
                    if (ic.key, cid) not in out.setdefault(key, []):
                        out[key].append((ic.key, cid))
    return out


# --- words in activities, deals and TODOs -----------------------------------------------------------------

def _text_hits(conn: sqlite3.Connection, q: _Query, limit: int, allowed: _Filter | None) -> list[_Candidate]:
    """Customers with an activity, deal or TODO whose text holds the query (two characters and more;
    not for phone numbers or IDs): one per customer, the first matching record found."""
    needle = q.text
    if len(needle) < 2 or q.digits or _ID_QUERY.match(needle) or not table_columns(conn, TEXT_TABLE):
        return []
    params: dict[str, Any] = {"n": needle, "lim": 5 * limit + 50}
    t = TEXT_TABLE
    source, where = t, f"instr({t}.text, :n) > 0"
    if len(needle) >= 3 and table_columns(conn, TEXT_FTS_TABLE):
        params["m"] = " AND ".join(_fts_term(g) for g in _cover_trigrams(needle))
        where = f"{t}.rowid IN (SELECT rowid FROM {TEXT_FTS_TABLE} WHERE {TEXT_FTS_TABLE} MATCH :m) AND {where}"
    elif pair_term(needle) and _substring_index(conn):
        pairs = _pairs_where(conn, TEXT_TABLE, "text", [needle], params, "m")
        where = f"{pairs} AND {where}" if pairs else where
    elif pair_term(needle) and table_columns(conn, TEXT_BIGRAM_TABLE):
        # The records holding the pair, in rowid order as a scan finds them, read as the join goes: a
        # common word (見積) stops at the limit after a few hundred.
        params["m"] = _fts_term(needle)
        source = f"{TEXT_BIGRAM_TABLE} CROSS JOIN {t} ON {t}.rowid = {TEXT_BIGRAM_TABLE}.rowid"
        where = f"{TEXT_BIGRAM_TABLE} MATCH :m AND {where}"
    if allowed:
        params.update(allowed.params)
        where = f"({where}) AND {t}.customer_id IN ({allowed.sql})"
    out: dict[str, _Candidate] = {}
    # No ORDER BY: SQLite stops at the limit instead of collecting every match of a common word.
    sql = (f"SELECT {t}.entity, {t}.record_id, {t}.customer_id, {t}.text FROM {source} WHERE {where} "
           f"{_found_order(conn)}LIMIT :lim")
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
        conds.append("(" + " OR ".join(f"instr({quote_name(ic.key)}, :k{j}) > 0" for _, ic in kana_cols) + ")")
    for j, part in enumerate(name_parts):
        params[f"m{j}"] = part
        conds.append("(" + " OR ".join(f"instr({quote_name(ic.key)}, :m{j}) > 0" for _, ic in name_cols) + ")")
    where = " AND ".join(conds)
    longest = max(kana_parts, key=len)
    grams = list(dict.fromkeys(p[i:i + 2] for p in (*kana_parts, *name_parts) for i in range(len(p) - 1)))
    if len(longest) >= 3 and table_columns(conn, FTS_TABLE):
        params["match"] = _fts_match({longest: [ic.key for _, ic in kana_cols]})
        where = f"rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match) AND {where}"
    elif grams and all(map(pair_term, grams)) and all(pair_column(ic) == "keyed" for _, ic in (*kana_cols, *name_cols)):
        # Short parts (山崎ホー): a row holding every part holds every pair of characters of each.
        pairs = _pairs_where(conn, pair_columns(columns, "keyed"), "keyed", grams, params, "pairs")
        where = f"{pairs} AND {where}" if pairs else where
    if allowed:
        params.update(allowed.params)
        where = f"({where}) AND customer_id IN ({allowed.sql})"
    cols = ", ".join(quote_name(c.key) for c in columns)
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

    sql = f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE {where} {_found_order(conn)}LIMIT :lim"
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
        if not table_columns(conn, entity.key):
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
    has_fts = bool(table_columns(conn, FTS_TABLE))

    cols = ", ".join(quote_name(c.key) for c in columns)

    if allowed:
        params.update(allowed.params)

    def run(where: str, ordered: bool = True) -> list[_Candidate]:
        if allowed:
            where = f"({where}) AND customer_id IN ({allowed.sql})"
        # Unordered (free text: every hit scores alike), SQLite stops at the limit.
        # coalesce: a customer's own row before its contacts' on either store (NULLs sort apart).
        order = "ORDER BY score DESC, customer_id, coalesce(contact_id, '') " if ordered else _found_order(conn)
        sql = (f"SELECT * FROM (SELECT rowid, entity, customer_id, contact_id, {cols}, {score_sql} AS score "
               f"FROM {ROWS_TABLE} WHERE {where}) AS scored WHERE score > 0 {order}LIMIT :lim")
        out = []
        for r in conn.execute(sql, params):
            score, tier, matched = _best(columns, [r[c.key] for c in columns], q, r["entity"])
            if score > 0:
                out.append(_Candidate(r["customer_id"], r["contact_id"], matched, tier, score, r["entity"]))
        return out

    def prefix_head(items: Sequence[tuple[int, IndexedColumn]]) -> list[_Candidate]:
        # Exact and prefix matches outrank any substring: take them from the B-tree indexes first.
        # A prefix like 山 starts ten thousand names; each index gives its first few hundred in
        # index order (exact matches sort first), enough to fill a page of results.
        params["per"] = max(200, 5 * limit)
        ranges = []
        for i, ic in items:
            if ic.prefix_index:
                needle = q.needle(ic)
                params[f"hi{i}"] = needle[:-1] + chr(ord(needle[-1]) + 1)
                ranges.append(f"SELECT * FROM (SELECT rowid FROM {ROWS_TABLE} WHERE {quote_name(ic.key)} >= :n{i} "
                              f"AND {quote_name(ic.key)} < :hi{i} ORDER BY {quote_name(ic.key)}, rowid LIMIT :per) AS p{i}")
        return run(f"rowid IN ({' UNION ALL '.join(ranges)})") if ranges else []

    def pairs_first(group: str, items: Sequence[tuple[int, IndexedColumn]]) -> str:
        """``instr`` tests of these columns, limited to the rows the pair index names when it holds
        them all and the needle is a pair (else a scan; rowids come in the scan's order either way)."""
        where = " OR ".join(f"instr({quote_name(ic.key)}, :n{i}) > 0" for i, ic in items)
        needles = list({q.needle(ic) for _, ic in items})
        if len(needles) == 1 and pair_term(needles[0]) and all(pair_column(ic) == group for _, ic in items):
            pairs = _pairs_where(conn, pair_columns(columns, group), group, needles, params, f"pairs_{group}")
            if pairs:
                where = f"{pairs} AND ({where})"
        return where

    def page_full(cands: Sequence[_Candidate]) -> bool:
        return sum(1 for c in cands if c.tier in ("exact", "prefix")) >= limit

    found: list[_Candidate] = []
    # A common word (東京都 in every Tokyo address) matches thousands of rows in the trigram index,
    # each scored before the best are kept; when exact and prefix matches already fill the page, no
    # substring match can make it in, and the trigram index is not read.
    long_prefix = [(i, ic) for i, ic in enumerate(columns) if ic.prefix_index and len(q.needle(ic) or "") >= 3]
    head_long = prefix_head(long_prefix) if long_prefix and has_fts else []
    found += head_long
    if page_full(head_long):
        long_groups = {}
    if long_groups and has_fts:
        params["match"] = _fts_match(long_groups)
        found += run(f"rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match)")
    elif long_groups:
        # No trigram support in this SQLite: the LIKE-only path, a scan (slower, same results).
        long_keys = {k for keys in long_groups.values() for k in keys}
        found += run(" OR ".join(f"instr({quote_name(c.key)}, :n{i}) > 0" for i, c in enumerate(columns)
                                 if c.key in long_keys))
    if short:
        head = prefix_head(short)
        found += head
        if not page_full(head):
            # A one- or two-character needle is someone starting to type a name or number: scan the
            # non-free-text columns.  The company key is inside the name (its prefixes came from the
            # index above); readings and e-mail addresses are not scanned for characters they cannot
            # hold.
            scanned = [(i, ic) for i, ic in short
                       if not ic.free_text and ic.key != COMPANY_KEY and _could_hold(ic, q.needle(ic))]
            if scanned:
                found += run(pairs_first("keyed", scanned))
            # Two characters are a word already (札幌, 新宿, 見積): when names and numbers do not fill
            # the page, look in 住所/備考 too (one character would match half the master on 東 or 山).
            free = [(i, ic) for i, ic in short if ic.free_text and len(q.needle(ic)) >= 2]
            if free and len(found) < limit:
                found += run(pairs_first("free", free), ordered=False)
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
                values.append(fold_company(name) or None)
            elif ic.labels.get(entity) is None:
                values.append(None)
            else:
                raw = row.get(ic.key)
                values.append((fold_digits(raw) if ic.digits else fold_text(raw)) or None)
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
    cols = ", ".join(quote_name(c.key) for c in columns)

    def add(r: sqlite3.Row) -> None:
        if (r["customer_id"], r["contact_id"], None) in seen:
            return
        score, matched, sim = rescore(r["entity"], [r[c.key] for c in columns])
        if score:
            out.append(_Candidate(r["customer_id"], r["contact_id"], matched, "fuzzy", score, r["entity"],
                                  similarity=sim))

    fts = bool(table_columns(conn, FTS_TABLE))
    if fts or _substring_index(conn):
        grams = _rare_trigrams(conn, needles, columns)
        if grams and fts:
            keys = " ".join(ic.key for _, ic in fuzzy_cols)
            match = f"{{{keys}}} : ({' OR '.join(_fts_term(g) for g in grams)})"
            sql = (f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE rowid IN "
                   f"(SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? ORDER BY rank LIMIT ?)")
            for r in conn.execute(sql, (match, _FUZZY_CANDIDATES)):
                add(r)
        elif grams:
            # FTS5 ranks by bm25; here the rows holding the rarest of the trigrams come first (the sum
            # of their inverse document frequencies, as in bm25), then rowid.
            params: dict[str, Any] = {f"g{j}": g for j, g in enumerate(grams)} | {"cap": _FUZZY_CANDIDATES}
            has = [" OR ".join(f"instr({quote_name(ic.key)}, :g{j}) > 0" for _, ic in fuzzy_cols)
                   for j in range(len(grams))]
            total = max(_row_count(conn), 1)
            weight = " + ".join(
                f"(CASE WHEN {h} THEN {max(1e-6, math.log((total - n + 0.5) / (n + 0.5))):.6f} ELSE 0 END)"
                for h, n in zip(has, grams.values(), strict=True))
            sql = (f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE {' OR '.join(has)} "
                   f"ORDER BY {weight} DESC, rowid LIMIT :cap")
            for r in conn.execute(sql, params):
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
                        f"SELECT rowid FROM {ROWS_TABLE} WHERE {quote_name(ic.key)} >= :lo AND {quote_name(ic.key)} < :hi"
                        for _, ic in fuzzy_cols if ic.prefix_index)
                    sql = (f"SELECT entity, customer_id, contact_id, {cols} FROM {ROWS_TABLE} WHERE rowid IN "
                           f"(SELECT rowid FROM ({ranges}) AS starts {_found_order(conn)}LIMIT :cap)")
                    for r in conn.execute(sql, {"lo": lo, "hi": hi, "cap": _FUZZY_CANDIDATES * 5}):
                        add(r)
    else:
        # No trigram index (old SQLite): rapidfuzz picks candidates from the names and readings.
        from rapidfuzz import process

        fetched = conn.execute(f"SELECT rowid, {', '.join(quote_name(ic.key) for _, ic in fuzzy_cols)} "
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


def _pairs_where(conn: sqlite3.Connection, columns: str | Sequence[str], group: str, grams: Sequence[str],
                 params: dict[str, Any], name: str) -> str | None:
    """A condition naming the rows of the search index (``columns``: the keys of ``group``'s columns of
    ``search_rows``, or ``search_text``) that hold every one of these pairs of characters, from the
    pair indexes; None where the store has none (the caller's ``instr`` tests then read every row)."""
    if _substring_index(conn):
        if not getattr(conn, "pair_index", False):
            return None
        for j, g in enumerate(grams):
            params[f"{name}{j}"] = g
        cols = ["text"] if columns == TEXT_TABLE else list(columns)
        return conn.pairs_filter(cols, [f":{name}{j}" for j in range(len(grams))])  # type: ignore[attr-defined]
    table = TEXT_BIGRAM_TABLE if columns == TEXT_TABLE else BIGRAM_TABLE
    if not table_columns(conn, table):
        return None
    terms = " AND ".join(map(_fts_term, grams))
    params[name] = terms if columns == TEXT_TABLE else f"{group} : ({terms})"
    return f"rowid IN (SELECT rowid FROM {table} WHERE {table} MATCH :{name})"


def _found_order(conn: sqlite3.Connection) -> str:
    """The ORDER BY of a query that keeps the first rows found up to a LIMIT: none on SQLite, which
    finds them in rowid order and stops at the limit; rowid order on a server, whose scans and
    hash joins return rows in no set order, so that it keeps the same rows."""
    return "ORDER BY rowid " if _substring_index(conn) else ""


def _substring_index(conn: sqlite3.Connection) -> bool:
    """Whether ``instr(column, needle) > 0`` on the index's columns is served by a trigram index of the
    store (PostgreSQL's pg_trgm: :class:`xlcrm.store.pg.ServerReader`) rather than FTS5's."""
    return bool(getattr(conn, "substring_index", False))


def _row_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {ROWS_TABLE}").fetchone()[0] or 0)


def _rare_trigrams(conn: sqlite3.Connection, needles: Iterable[str],
                   columns: Sequence[IndexedColumn]) -> dict[str, int]:
    """The query's trigrams that occur in the index but in few rows, rarest first (at most 8), with
    the number of rows that hold each.

    A typo breaks the trigrams around it; the others still point at the intended name.  Common
    trigrams (株式会, ショウ) would pull in a third of the master and say nothing, so they are left out.
    Rows per trigram come from FTS5's vocabulary, or are counted (up to the limit) where the store's
    own trigram index serves substring tests.
    """
    grams = sorted({n[i:i + 3] for n in needles for i in range(len(n) - 2)})
    if not grams:
        return {}
    total = _row_count(conn) or 1
    most = max(50, total * _FUZZY_MAX_SHARE)
    if table_columns(conn, VOCAB_TABLE):
        marks = ", ".join("?" * len(grams))
        docs = dict(conn.execute(f"SELECT term, doc FROM {VOCAB_TABLE} WHERE term IN ({marks})", grams))
    elif _substring_index(conn):
        # FTS5's trigrams ignore ASCII case and LIKE does not: the same here, the folded text is lower-case.
        docs = {}
        for g in grams:
            cond = " OR ".join(f"instr({quote_name(ic.key)}, :g) > 0" for ic in columns)
            sql = f"SELECT count(*) FROM (SELECT 1 FROM {ROWS_TABLE} WHERE {cond} LIMIT :cap) AS hits"
            docs[g] = conn.execute(sql, {"g": g, "cap": int(most) + 1}).fetchone()[0]
    else:
        docs = dict.fromkeys(grams, 1)
    rare = sorted((d, g) for g, d in docs.items() if 0 < d <= most)
    return {g: d for d, g in rare[:8]}


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
    if not table_columns(conn, act.key):
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
                if col.type in FREE_TEXT_TYPES and v and q.text in fold_text(v):
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
