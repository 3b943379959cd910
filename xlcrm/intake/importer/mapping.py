"""Where the table starts and which schema column each source column feeds.

The vocabulary is the schema's: every column's labels, ``aliases`` and ``parts`` (pieces joined into
one column, such as 住所1 + 住所2).  A source is one of three shapes, judged from its headers:

* ``customers`` -- a customer list or business-card list: 顧客 rows, plus 担当者 rows when a person's
  name column sits beside the company name;
* ``activities`` -- a visit, inquiry or complaint log: 活動履歴 rows;
* ``deals`` -- a sales ledger or invoice list: 取引 rows (won deals).

A column whose header says nothing (blank, 列1, Column1) is judged by what its values look like.  A
column nothing matches goes to the row's notes as ``元の列名: 値``.  The mapping is written to
``import-map.toml`` and can be given back with ``--map``, edited or not.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xlcrm.errors import XlcrmError
from xlcrm.intake.importer.reading import SourceTable
from xlcrm.schema import Entity, Schema, fold_header
from xlcrm.xlsx.cells import column_letter

Shape = Literal["customers", "activities", "deals"]
SHAPES: tuple[Shape, ...] = ("customers", "activities", "deals")
#: Target of a column kept as ``元の列名: 値`` in the row's notes.
NOTES = "notes"
#: Target of a column left out on purpose (only ever set by a person editing the map file).
IGNORE = "ignore"
#: Rows searched for the header (title rows and blank rows often sit above it).
HEADER_SCAN_ROWS = 30
#: Values judged when a header says nothing.
SHAPE_SAMPLE = 200

_NOTHING_HEADER = re.compile(r"^(?:列|項目|column|col|field|f|unnamed:?)\s*\d*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_POSTAL = re.compile(r"^〒?\s*\d{3}[-‐－ー−]?\d{4}$")
_PHONE = re.compile(r"^\+?[\d\-‐－ー−() ]+$")
_DATE_TEXT = re.compile(r"^(?:\d{4}[/\-.年]\d{1,2}[/\-.月]\d{1,2}日?|(?:令和|平成|昭和|[RHS])\s*\d{1,2}[./年]"
                        r"\s*\d{1,2}[./月]\s*\d{1,2}日?)")
_MAP_VERSION = 1


@dataclass
class ColumnMap:
    """One source column: where it goes and why."""

    index: int
    header: str
    #: ``entity.column`` (e.g. ``customers.name``), :data:`NOTES` or :data:`IGNORE`.
    target: str
    why: str
    #: Position among the pieces joined into the target (0 when not a piece).
    part: int = 0

    @property
    def letter(self) -> str:
        return column_letter(self.index)

    @property
    def entity(self) -> str | None:
        return self.target.split(".", 1)[0] if "." in self.target else None

    @property
    def key(self) -> str | None:
        return self.target.split(".", 1)[1] if "." in self.target else None


@dataclass
class SourceMap:
    """How one table is read: header row (1-based), shape and one :class:`ColumnMap` per column."""

    file: str
    sheet: str | None
    header_row: int
    shape: Shape
    columns: list[ColumnMap]
    #: Remarks for the report (a mapped header missing from the file, the prefecture split ...).
    notes: list[str] = field(default_factory=list)
    from_map_file: bool = False
    #: Split 都道府県 off the start of the address (customer lists without a 都道府県 column).
    prefecture_from_address: bool = False
    #: Headers the map file names that this file does not have (a person checks the export).
    missing_columns: list[str] = field(default_factory=list)

    def targets(self, entity: str) -> list[ColumnMap]:
        return [c for c in self.columns if c.entity == entity]

    def has(self, target: str) -> bool:
        return any(c.target == target for c in self.columns)


class NoCustomerColumn(XlcrmError):
    """The headers name no customer (no 顧客名, 会社名, 得意先 ... and no person's name)."""


# --- vocabulary --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Vocab:
    lookup: dict[str, dict[str, str]]  # entity -> folded header -> column key
    parts: dict[str, dict[str, tuple[str, int]]]
    company_words: frozenset[str]
    person_words: frozenset[str]
    all_words: frozenset[str]


def _importable(e: Entity) -> Entity:
    from dataclasses import replace

    return replace(e, columns=tuple(c for c in e.columns if not c.system))


def vocabulary(schema: Schema) -> _Vocab:
    lookup = {e.key: _importable(e).header_lookup() for e in schema}
    parts = {e.key: e.part_lookup() for e in schema}
    customers, contacts = schema.entity("customers"), schema.entity("contacts")
    person = {k for k, v in lookup["contacts"].items() if v == "name"}
    company = {k for k, v in lookup["customers"].items() if v == "name"} - person
    company |= {k for k, v in lookup["contacts"].items() if v == "customer"}
    words = set().union(*(set(v) for v in lookup.values()), *(set(v) for v in parts.values()))
    del customers, contacts
    return _Vocab(lookup, parts, frozenset(company), frozenset(person), frozenset(words))


def header_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


_REMARK = re.compile(r"[(（【\[<＜][^)）】\]>＞]*[)）】\]>＞]|[※*＊].*$")
_BRACKETS = re.compile(r"[()（）【】\[\]<>＜＞]")


def known_header(header: str, vocab: _Vocab) -> str:
    """The folded header; else the header without its brackets when that is known (氏名（カナ） ->
    氏名カナ, the person's フリガナ); else what is left of it without a bracketed or ※ remark when
    only that is known (会社名（正式名称） -> 会社名, TEL※代表 -> TEL)."""
    f = fold_header(header)
    if f in vocab.all_words or not f:
        return f
    joined = fold_header(_BRACKETS.sub("", header))
    if joined in vocab.all_words:
        return joined
    bare = fold_header(_REMARK.sub("", header))
    return bare if bare in vocab.all_words else f


def says_nothing(header: str) -> bool:
    """A header that names nothing: blank, 列1, Column3, Unnamed: 4."""
    f = fold_header(header)
    return not f or bool(_NOTHING_HEADER.match(f))


# --- the header row ------------------------------------------------------------------------------------

def header_cells(table: SourceTable, row: int) -> list[str]:
    """Header texts of 0-based ``row``, as many as the table's widest row has cells (a column right of
    the header is blank-headed); a merged header cell names every column it spans."""
    cells = list(table.rows[row]) if row < len(table.rows) else []
    width = table.width
    cells += [None] * (width - len(cells))
    for r1, c1, r2, c2 in table.merged:
        if r1 <= row <= r2 and c1 < width:
            top = table.rows[r1][c1] if c1 < len(table.rows[r1]) else None
            for c in range(c1, min(c2 + 1, width)):
                if cells[c] is None:
                    cells[c] = top
    return [header_text(v) for v in cells]


def find_header(table: SourceTable, schema: Schema) -> int | None:
    """0-based row of the header: the first of the top rows that most cells recognise (two at least,
    or one naming the customer)."""
    vocab = vocabulary(schema)
    best, best_hits = None, 0
    for i in range(min(HEADER_SCAN_ROWS, len(table.rows))):
        folded = [known_header(h, vocab) for h in header_cells(table, i) if h]
        hits = sum(1 for f in folded if f in vocab.all_words)
        names = any(f in vocab.company_words or f in vocab.person_words for f in folded)
        if hits > best_hits and (hits >= 2 or names):
            best, best_hits = i, hits
    return best


# --- value shapes --------------------------------------------------------------------------------------

def value_shape(values: Sequence[Any]) -> tuple[str, int, int] | None:
    """("phone" | "email" | "postal" | "date", matching, judged) when 80 % of the values look alike."""
    sample = [v for v in values if v is not None][:SHAPE_SAMPLE]
    if not sample:
        return None
    counts = {"email": 0, "postal": 0, "phone": 0, "date": 0}
    for v in sample:
        if isinstance(v, dt.date | dt.datetime):
            counts["date"] += 1
            continue
        s = unicodedata.normalize("NFKC", str(v)).strip()
        if _EMAIL.match(s):
            counts["email"] += 1
        elif _POSTAL.match(s):
            counts["postal"] += 1
        elif _PHONE.match(s) and 10 <= sum(ch.isdigit() for ch in s) <= 11 and s.lstrip("+(")[:1] == "0":
            counts["phone"] += 1
        elif _DATE_TEXT.match(s):
            counts["date"] += 1
    kind, n = max(counts.items(), key=lambda kv: kv[1])
    return (kind, n, len(sample)) if n and n * 5 >= len(sample) * 4 else None


# --- inferring a mapping ----------------------------------------------------------------------------

def infer_map(table: SourceTable, schema: Schema, header_idx: int, *, shape: Shape | None = None) -> SourceMap:
    """The mapping of one table whose header is at 0-based ``header_idx``."""
    vocab = vocabulary(schema)
    headers = header_cells(table, header_idx)
    folded = [known_header(h, vocab) for h in headers]
    body = table.rows[header_idx + 1:]
    shape = shape or _judge_shape(folded, vocab)
    # Fields right of the header row's last cell (a text row with more fields than the header) are
    # no column of the source: their cells go to the notes, whatever they look like.
    beyond = len(table.rows[header_idx]) if table.encoding is not None else len(headers)
    judged = [h if j < beyond else None for j, h in enumerate(folded)]
    if shape == "customers":
        columns = _map_customers(headers, judged, body, vocab, schema)
    else:
        columns = _map_child(shape, headers, judged, body, vocab, schema)
    smap = SourceMap(table.path.name, table.sheet, header_idx + 1, shape, columns)
    smap.prefecture_from_address = _splits_prefecture(smap)
    check_customer_column(smap, table, schema)
    return smap


def _splits_prefecture(smap: SourceMap) -> bool:
    return smap.shape == "customers" and smap.has("customers.address") and not smap.has("customers.prefecture")


def check_customer_column(smap: SourceMap, table: SourceTable, schema: Schema) -> None:
    need = ("customers.name", "contacts.name") if smap.shape == "customers" else (f"{smap.shape}.customer",)
    if not any(smap.has(t) for t in need):
        found = ", ".join(c.header or f"(blank {c.letter})" for c in smap.columns) or "(none)"
        entity = schema.entity(smap.shape)
        label = entity.column("name" if smap.shape == "customers" else "customer").ja
        raise NoCustomerColumn(
            f"{table.label}: no customer column among the headers of row {smap.header_row} ({found}); "
            f"rename the customer column to {label}, or map it in import-map.toml "
            f"(to = \"{need[0]}\") and pass --map")


def _judge_shape(folded: Sequence[str], vocab: _Vocab) -> Shape:
    deals = {vocab.lookup["deals"].get(f) for f in folded} | {vocab.parts["deals"].get(f, ("",))[0]
                                                              for f in folded}
    acts = {vocab.lookup["activities"].get(f) for f in folded} | {vocab.parts["activities"].get(f, ("",))[0]
                                                                  for f in folded}
    has_customer_ref = "customer" in deals
    if has_customer_ref and len(deals & {"quantity", "unit_price", "amount", "product"}) >= 1 \
            and not any(f in vocab.person_words for f in folded):
        return "deals"
    if "customer" in acts and "date" in acts and acts & {"content", "response", "type"}:
        return "activities"
    return "customers"


def _column_values(body: Sequence[Sequence[Any]], j: int) -> list[Any]:
    return [r[j] for r in body if j < len(r)]


def _why_header(header: str, entity: Entity, key: str) -> str:
    col = entity.column(key)
    if fold_header(header) in (fold_header(col.ja), fold_header(col.en), fold_header(col.key)):
        return f"header {header}"
    return f"header {header} = {col.ja}"


def _map_customers(headers: list[str], folded: list[str | None], body: Sequence[Sequence[Any]], vocab: _Vocab,
                   schema: Schema) -> list[ColumnMap]:
    cust, cont = vocab.lookup["customers"], vocab.lookup["contacts"]
    cparts, pparts = vocab.parts["customers"], vocab.parts["contacts"]
    has_company = any(f in vocab.company_words for f in folded)
    has_person = any(f in vocab.person_words or pparts.get(f, ("",))[0] == "name" for f in folded)
    people = has_company and has_person
    out: list[ColumnMap] = []
    used: set[str] = set()
    customers, contacts = schema.entity("customers"), schema.entity("contacts")

    def put(j: int, target: str, why: str, part: int = 0) -> None:
        ent, key = target.split(".")
        col = schema.entity(ent).column(key)
        joinable = part or (col.type == "text" and (col.max_length or 0) >= 1000)
        if target in used and not joinable and _same_header(out, target, headers[j]):
            # One header over several columns (a merged cell): its pieces are joined in order.
            pieces = [c for c in out if c.target == target]
            if pieces[0].part == 0:
                pieces[0].part = 1
            out.append(ColumnMap(j, headers[j], target, f"part {len(pieces) + 1} of {col.ja} (same header, "
                                 "joined)", len(pieces) + 1))
            return
        if target in used and not joinable:
            out.append(ColumnMap(j, headers[j], NOTES, f"{col.ja} already comes from another column → 備考"))
            return
        used.add(target)
        out.append(ColumnMap(j, headers[j], target, why, part))

    for j, f in enumerate(folded):
        h = headers[j]
        if f is None:
            out.append(ColumnMap(j, h, NOTES, "right of the header row → 備考"))
            continue
        if not f or says_nothing(h):
            shape = value_shape(_column_values(body, j))
            if shape is None:
                out.append(ColumnMap(j, h, NOTES, "header says nothing and the values have no known shape "
                                     "→ 備考" if f else "blank header → 備考"))
                continue
            kind, n, total = shape
            why = f"values look like {_SHAPE_WORD[kind]} ({n} of {total})"
            options = {"phone": ["customers.phone", "contacts.mobile" if people else "customers.fax"],
                       "email": ["contacts.email" if people else "customers.email", "customers.email"],
                       "postal": ["customers.postal_code"], "date": []}[kind]
            free = next((t for t in options if t not in used), None)
            if free is None:
                out.append(ColumnMap(j, h, NOTES, why + " → 備考"))
            else:
                put(j, free, why)
            continue
        if f in cparts:
            key, pos = cparts[f]
            put(j, f"customers.{key}", f"part {pos + 1} of {customers.column(key).ja} (joined)", pos + 1)
            continue
        if f in pparts:
            key, pos = pparts[f]
            ent = "contacts" if people else "customers"
            label = schema.entity(ent).column(key).ja
            put(j, f"{ent}.{key}", f"part {pos + 1} of {label} (joined)", pos + 1)
            continue
        if f in vocab.company_words:
            put(j, "customers.name", _why_header(h, customers, "name"))
            continue
        if f in vocab.person_words:
            if people:
                put(j, "contacts.name", _why_header(h, contacts, "name"))
            else:
                put(j, "customers.name", _why_header(h, customers, "name") + " (a person: 個人)")
            continue
        c_key, p_key = cust.get(f), cont.get(f)
        if c_key and p_key:
            to_contact = people and (
                p_key == "email"
                or (p_key == "kana" and j > 0 and out and out[-1].target in ("contacts.name",)))
            if to_contact:
                put(j, f"contacts.{p_key}", _why_header(h, contacts, p_key) + " (the person's)")
            else:
                put(j, f"customers.{c_key}", _why_header(h, customers, c_key))
        elif c_key:
            put(j, f"customers.{c_key}", _why_header(h, customers, c_key))
        elif p_key and p_key != "customer":
            if people:
                put(j, f"contacts.{p_key}", _why_header(h, contacts, p_key))
            elif p_key in ("mobile", "phone") and "customers.phone" not in used:
                put(j, "customers.phone", _why_header(h, contacts, p_key) + " (a person: 個人)")
            else:
                out.append(ColumnMap(j, h, NOTES, f"{contacts.column(p_key).ja} of a person without a "
                                     "company → 備考"))
        else:
            out.append(ColumnMap(j, h, NOTES, _unmapped_why(h, schema)))
    return out


def _same_header(out: Sequence[ColumnMap], target: str, header: str) -> bool:
    return any(c.target == target and c.header == header for c in out)


_SHAPE_WORD = {"phone": "phone numbers", "email": "e-mail addresses", "postal": "postal codes",
               "date": "dates"}


def _unmapped_why(header: str, schema: Schema) -> str:
    f = fold_header(header)
    if "日" in f and any(w in f for w in ("訪問", "取引", "接触", "連絡", "受注")):
        return "no matching column → 備考 (a date alone does not make an activity: 種別 and 内容 are missing)"
    return "no matching column → 備考"


def _map_child(shape: Shape, headers: list[str], folded: list[str | None], body: Sequence[Sequence[Any]],
               vocab: _Vocab, schema: Schema) -> list[ColumnMap]:
    entity = schema.entity(shape)
    lookup, parts = vocab.lookup[shape], vocab.parts[shape]
    date_key = "date" if shape == "activities" else "closed_on"
    out: list[ColumnMap] = []
    used: set[str] = set()
    for j, f in enumerate(folded):
        h = headers[j]
        if f is None:
            out.append(ColumnMap(j, h, NOTES, "right of the header row → " + _fallback_label(entity)))
            continue
        key: str | None = None
        why = ""
        part = 0
        if f in parts:
            key, pos = parts[f]
            part = pos + 1
            why = f"part {part} of {entity.column(key).ja} (joined)"
        elif f and not says_nothing(h) and f in lookup:
            key = lookup[f]
            why = _why_header(h, entity, key)
        elif not f or says_nothing(h):
            shape_ = value_shape(_column_values(body, j))
            if shape_ is not None and shape_[0] == "date" and date_key not in used:
                key = date_key
                why = f"values look like dates ({shape_[1]} of {shape_[2]})"
        if key is None:
            out.append(ColumnMap(j, h, NOTES, "no matching column → " + _fallback_label(entity)))
            continue
        col = entity.column(key)
        joinable = part or (col.type == "text" and (col.max_length or 0) >= 1000)
        if f"{shape}.{key}" in used and not joinable and _same_header(out, f"{shape}.{key}", h):
            pieces = [c for c in out if c.target == f"{shape}.{key}"]
            if pieces[0].part == 0:
                pieces[0].part = 1
            out.append(ColumnMap(j, h, f"{shape}.{key}", f"part {len(pieces) + 1} of {col.ja} (same header, "
                                 "joined)", len(pieces) + 1))
            continue
        if f"{shape}.{key}" in used and not joinable:
            out.append(ColumnMap(j, h, NOTES, f"{col.ja} already comes from another column → "
                                 + _fallback_label(entity)))
            continue
        used.add(f"{shape}.{key}")
        out.append(ColumnMap(j, h, f"{shape}.{key}", why, part))
    return out


def fallback_column(entity: Entity) -> str:
    """The column that keeps ``元の列名: 値`` of unmapped cells: 備考, else the longest free text."""
    if entity.has("notes"):
        return "notes"
    texts = [c for c in entity.columns if c.type == "text" and not c.system]
    return max(texts, key=lambda c: c.max_length or 0).key


def _fallback_label(entity: Entity) -> str:
    return entity.column(fallback_column(entity)).ja


# --- the map file -------------------------------------------------------------------------------------

def dump_maps(maps: Sequence[SourceMap]) -> str:
    """``import-map.toml``: one [[sources]] table per table read, editable by hand."""
    lines = [
        "# xlcrm import mapping: edit `to` and run `xlcrm import ... --map import-map.toml` again.",
        '# to = "customers.name" (sheet.column key, see `xlcrm schema`), "notes" (kept in 備考 as',
        '# 元の列名: 値) or "ignore" (left out, listed in the report). shape = customers, activities or deals.',
        "# prefecture_from_address = true splits 都道府県 off the start of 住所; part = N joins columns in order.",
        f"version = {_MAP_VERSION}",
        "",
    ]
    for m in maps:
        lines.append("[[sources]]")
        lines.append(f"file = {_q(m.file)}")
        if m.sheet is not None:
            lines.append(f"sheet = {_q(m.sheet)}")
        lines.append(f"header_row = {m.header_row}")
        lines.append(f"shape = {_q(m.shape)}")
        if m.shape == "customers":
            lines.append(f"prefecture_from_address = {'true' if m.prefecture_from_address else 'false'}")
        lines.append("columns = [")
        for c in m.columns:
            part = f", part = {c.part}" if c.part else ""
            lines.append(f"  {{ column = {_q(c.letter)}, header = {_q(c.header)}, to = {_q(c.target)}{part}, "
                         f"why = {_q(c.why)} }},")
        lines.append("]")
        lines.append("")
    return "\n".join(lines)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def load_maps(path: Path, schema: Schema) -> list[dict[str, Any]]:
    """The [[sources]] of a map file, checked: every ``to`` names a column of the schema."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XlcrmError(f"{path}: map file not found; check the --map path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise XlcrmError(f"{path}: not valid TOML ({exc}); fix the file or run the import without --map"
                         ) from None
    sources = data.get("sources")
    if not isinstance(sources, list):
        raise XlcrmError(f"{path}: no [[sources]] tables; write the map with `xlcrm import --out DIR` first")
    for i, s in enumerate(sources, start=1):
        where = f"{path}: [[sources]] #{i}"
        if not isinstance(s, Mapping) or "file" not in s:
            raise XlcrmError(f"{where}: needs file = \"...\"")
        if s.get("shape", "customers") not in SHAPES:
            raise XlcrmError(f"{where}: shape {s.get('shape')!r}; use one of {list(SHAPES)}")
        for c in s.get("columns", []):
            to = str(c.get("to", ""))
            if to in (NOTES, IGNORE):
                continue
            ent, _, key = to.partition(".")
            try:
                col = schema.entity(ent).column(key)
            except KeyError:
                raise XlcrmError(f"{where}: column {c.get('header', c.get('column'))!r}: to = {to!r} is not "
                                 "a column; use sheet.column keys from `xlcrm schema --json`, \"notes\" or "
                                 "\"ignore\"") from None
            if col.system:
                raise XlcrmError(f"{where}: to = {to!r} is filled by xlcrm and cannot be imported")
    return sources


def saved_map_for(table: SourceTable, saved: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The map entry for ``table``: its file pattern and sheet match, or else (next month's export under
    another name) its header row holds exactly the headers the entry maps."""
    for s in saved:
        if fnmatch.fnmatch(table.path.name, str(s["file"])) and (
                s.get("sheet") is None or table.sheet is None or str(s.get("sheet")) == table.sheet):
            return s
    for s in saved:
        row = int(s.get("header_row", 1)) - 1
        if row >= len(table.rows) or not s.get("columns"):
            continue
        want = [fold_header(str(c.get("header", ""))) for c in s["columns"]]
        have = [fold_header(h) for h in header_cells(table, row)]
        while have and not have[-1]:
            have.pop()
        while want and not want[-1]:
            want.pop()
        if want == have:
            return s
    return None


def apply_saved(table: SourceTable, saved: Mapping[str, Any], schema: Schema) -> SourceMap:
    """The mapping a map file gives for ``table``; columns it does not name are mapped as usual."""
    header_idx = int(saved.get("header_row", 1)) - 1
    shape: Shape = saved.get("shape", "customers")
    inferred = infer_map(table, schema, header_idx, shape=shape) if header_idx < len(table.rows) else None
    if inferred is None:
        raise XlcrmError(f"{table.label}: the map's header_row {header_idx + 1} is past the end of the file")
    by_header: dict[str, list[Mapping[str, Any]]] = {}
    for c in saved.get("columns", []):
        by_header.setdefault(fold_header(str(c.get("header", ""))), []).append(c)
    notes: list[str] = []
    columns: list[ColumnMap] = []
    for c in inferred.columns:
        entries = by_header.get(fold_header(c.header)) or []
        entry = next((e for e in entries if e.get("column") == c.letter), entries[0] if entries else None)
        if entry is None:
            columns.append(c)
            notes.append(f"column {c.letter} ({c.header or 'blank'}) is not in the map: {c.why}")
            continue
        entries.remove(entry)
        columns.append(ColumnMap(c.index, c.header, str(entry["to"]), "import-map.toml",
                                 int(entry.get("part", 0))))
    missing: list[str] = []
    for rest in by_header.values():
        for e in rest:
            missing.append(f"mapped column {e.get('header')!r} ({e.get('column')}) is not in this file")
    smap = SourceMap(table.path.name, table.sheet, header_idx + 1, shape, columns, notes + missing,
                     from_map_file=True, missing_columns=missing)
    smap.prefecture_from_address = bool(saved.get("prefecture_from_address", _splits_prefecture(smap)))
    check_customer_column(smap, table, schema)
    return smap
