"""Turn mapped source rows into rows of the standard sheets, and tie every child row to its customer.

Customer-shaped sources go first: each row is one 顧客 row, or, when the source also names a person
(a business-card list), one 担当者 row under the customer its company key (:func:`company_key`) finds
among the customers already brought in.  Activity logs and sales ledgers come after: each row finds
its customer by name -- exactly as typed first, then by company key when only one customer has it --
among every customer of this import and, with a master, among the master's customers (the row then
carries the customer's ID).  A name that finds nothing creates the customer; one that finds several
is listed with its candidates.  Each row lands in the workbook of its customer's owner.

Values stay as typed: judging and normalising them is ``xlcrm validate``'s job.  Nothing is lost:
a cell either lands in its mapped column, or in the row's notes as ``元の列名: 値``, or its row is
skipped (a totals row) and listed with its address.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xlcrm.intake.importer.mapping import IGNORE, NOTES, SourceMap, fallback_column, vocabulary
from xlcrm.intake.importer.reading import SourceTable
from xlcrm.normalize import company_key, has_legal_form
from xlcrm.schema import PERSON_OR_COMPANY_HEADERS, PREFECTURES_JA, Schema, fold_header

Row = dict[str, Any]

#: Words that mark a totals row when they fill a row's first cells (合計, 小計, 総計, Total ...).
_TOTALS = re.compile(r"^(?:合計|小計|総計|総合計|計|累計|total|subtotal|grand\s*total|sum)[\s:：]*$", re.I)


@dataclass
class Customer:
    """A customer of this import (``row`` set) or of the master (``id`` set)."""

    name: str
    owner: str
    row: Row | None = None
    id: str | None = None
    origin: str = ""

    @property
    def ref(self) -> str:
        return self.id or self.name


@dataclass
class Attention:
    """A row or column that needs a person, with where it came from."""

    where: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what}


@dataclass
class SourceCounts:
    """Per table: rows read (non-blank below the header) = rows written + rows skipped."""

    label: str
    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0
    skipped: list[Attention] = field(default_factory=list)
    samples: list[dict[str, Row]] = field(default_factory=list)


@dataclass
class Shaped:
    """Everything an import writes: rows per owner and entity, plus what the report lists."""

    default_owner: str
    rows: dict[str, dict[str, list[Row]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    attention: list[Attention] = field(default_factory=list)
    created: list[Attention] = field(default_factory=list)
    matched: dict[tuple[str, str], int] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)


class Registry:
    """Every customer the import knows, found by name as typed or by company key."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Customer]] = defaultdict(list)
        self.by_key: dict[str, list[Customer]] = defaultdict(list)
        self._keys: dict[str, str] = {}

    def key(self, name: str) -> str:
        k = self._keys.get(name)
        if k is None:
            k = self._keys[name] = company_key(name)
        return k

    def add(self, c: Customer) -> None:
        self.by_name[c.name].append(c)
        k = self.key(c.name)
        if k:
            self.by_key[k].append(c)

    def find(self, name: str) -> list[Customer]:
        """Candidates for ``name``: its exact spelling if unique, else every customer of its key."""
        exact = self.by_name.get(name, [])
        if len(exact) == 1:
            return exact
        k = self.key(name)
        return list(self.by_key.get(k, [])) if k else exact


# --- cells --------------------------------------------------------------------------------------------

def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dt.datetime) and v.time() == dt.time(0):
        return f"{v:%Y/%m/%d}"
    if isinstance(v, dt.date):
        return f"{v:%Y/%m/%d}"
    return str(v)


def _joined(pieces: list[tuple[int, Any]], multiline: bool) -> Any:
    if len(pieces) == 1:
        return pieces[0][1]
    sep = "\n" if multiline else " "
    return sep.join(_text(v).strip() for _, v in sorted(pieces, key=lambda p: p[0]))


_BLANK, _TOTALS_ROW, _DATA = range(3)


#: First characters a totals word can start with (before NFKC: full-width letters, spaces too).
_TOTALS_FIRST = frozenset("合小総計累tTsSgGｔＴｓＳｇＧ \u3000\t")


def row_kind(cells: Sequence[Any]) -> int:
    """Blank row, totals row (its first non-empty cell says 合計 / 小計 / Total) or a data row."""
    for v in cells:
        if v is not None:
            if type(v) is str and len(v) < 20 and v[0] in _TOTALS_FIRST \
                    and _TOTALS.match(unicodedata.normalize("NFKC", v).strip()):
                return _TOTALS_ROW
            return _DATA
    return _BLANK


def is_totals_row(cells: Sequence[Any]) -> bool:
    """A row whose first non-empty cell says 合計 / 小計 / Total (the sums at the bottom of a list)."""
    return row_kind(cells) == _TOTALS_ROW


_PREFECTURES = frozenset(PREFECTURES_JA)
_PREFECTURE_LENGTHS = sorted({len(p) for p in PREFECTURES_JA}, reverse=True)


def split_prefecture(address: Any) -> tuple[str, str] | None:
    """(都道府県, rest) when a text address starts with a prefecture name."""
    if not isinstance(address, str):
        return None
    s = address.strip()
    for n in _PREFECTURE_LENGTHS:
        if s[:n] in _PREFECTURES:
            return s[:n], s[n:].lstrip(" \u3000")
    return None


def above_header(table: SourceTable, smap: SourceMap) -> list[str]:
    """One remark per non-empty row above the header (a title, a date stamp): not imported, but named."""
    out: list[str] = []
    for i in range(min(smap.header_row - 1, len(table.rows))):
        values = [_text(v) for v in table.rows[i] if v is not None]
        if values:
            out.append(f"row {i + 1} is above the header row {smap.header_row}, not imported: "
                       + ", ".join(values)[:200])
    return out


def spread_merged(table: SourceTable, smap: SourceMap) -> list[str]:
    """Give each row a vertically merged cell below the header spans its value (one company cell merged
    over its people's rows); return one remark per range for the report.

    Excel keeps the value in the range's top cell only; the rows below would otherwise lose their
    company (and a person would become a customer of their own).  A range across columns only is
    left as it is: its value belongs to its first column.
    """
    from xlcrm.xlsx.cells import column_letter

    notes: list[str] = []
    for r1, c1, r2, c2 in sorted(table.merged):
        if r1 < smap.header_row or r2 <= r1 or r1 >= len(table.rows):
            continue
        top = table.rows[r1][c1] if c1 < len(table.rows[r1]) else None
        if top is None:
            continue
        for r in range(r1 + 1, min(r2 + 1, len(table.rows))):
            row = table.rows[r]
            if c1 < len(row) and row[c1] is None:
                row[c1] = top
        span = f"{column_letter(c1)}{r1 + 1}:{column_letter(c2)}{r2 + 1}"
        notes.append(f"merged cells {span}: {_text(top)!r} taken for each of its rows {r1 + 1}-{r2 + 1}")
    return notes


class _Plan:
    """A table's mapping turned into per-row work: target -> [(part, column index)]."""

    def __init__(self, smap: SourceMap, schema: Schema) -> None:
        self.smap = smap
        self.by_target: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.notes: list[tuple[int, str]] = []
        self.ignored: list[int] = []
        self.multiline: dict[str, bool] = {}
        for c in smap.columns:
            if c.target == NOTES:
                self.notes.append((c.index, c.header or c.letter))
            elif c.target == IGNORE:
                self.ignored.append(c.index)
            else:
                self.by_target[c.target].append((c.part, c.index))
                ent, key = c.target.split(".")
                col = schema.entity(ent).column(key)
                self.multiline[c.target] = col.type == "text" and (col.max_length or 0) >= 1000
        self.width = max((c.index for c in smap.columns), default=-1) + 1
        # Columns right of the last one with a header: in a text file, a row with more fields than
        # the header (a comma inside a value without quotes); their cells go to the notes.
        last_named = max((c.index for c in smap.columns if c.header), default=-1)
        self.beyond = [c.index for c in smap.columns if c.index > last_named]
        #: The source header of each target (a 担当者 value without a person goes to 備考 under it).
        self.header = {c.target: c.header or c.letter for c in smap.columns}
        # One column per target is the common case: (entity, key, column) read straight from the row.
        self.single: list[tuple[str, str, int]] = []
        #: Single columns of a date column: an Excel date serial (45390) or 20240401 in a text file is
        #: digits, given to validate as the number Excel would have stored, which it reads as the date.
        self.single_dates: list[tuple[str, str, int]] = []
        self.joined: list[tuple[str, str, list[tuple[int, int]], bool]] = []
        for target, cols in self.by_target.items():
            ent, key = target.split(".")
            if len(cols) == 1:
                is_date = schema.entity(ent).column(key).type == "date"
                (self.single_dates if is_date else self.single).append((ent, key, cols[0][1]))
            else:
                self.joined.append((ent, key, sorted(cols), self.multiline[target]))

    def child_row(self, cells: Sequence[Any], entity: str, id_col: str) -> tuple[Row, list[str]]:
        """The row of a log or ledger (every target on ``entity``) and its ``元の列名: 値`` notes;
        :meth:`values` for one entity, without its dict per entity (a ledger has many rows)."""
        if len(cells) < self.width:
            cells = [*cells, *([None] * (self.width - len(cells)))]
        row: Row = {id_col: None}
        for _ent, key, j in self.single:
            v = cells[j]
            if v is not None:
                row[key] = v
        if self.single_dates or self.joined or self.notes:
            more, notes = self.values(cells, dates_and_joined_only=True)
            row.update(more.get(entity, ()))
            return row, notes
        return row, []

    def values(self, cells: Sequence[Any], *, dates_and_joined_only: bool = False
               ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """entity -> {key: value} of one row, and its ``元の列名: 値`` notes."""
        if len(cells) < self.width:
            cells = [*cells, *([None] * (self.width - len(cells)))]
        out: dict[str, dict[str, Any]] = {}
        for ent, key, j in () if dates_and_joined_only else self.single:
            v = cells[j]
            if v is not None:
                d = out.get(ent)
                if d is None:
                    d = out[ent] = {}
                d[key] = v
        for ent, key, j in self.single_dates:
            v = cells[j]
            if v is not None:
                if type(v) is str and len(v) in (5, 8) and v.isdigit():
                    v = int(v)
                out.setdefault(ent, {})[key] = v
        for ent, key, cols, multiline in self.joined:
            pieces = [(p, cells[j]) for p, j in cols if cells[j] is not None]
            if pieces:
                out.setdefault(ent, {})[key] = _joined(pieces, multiline)
        notes = [f"{h}: {_text(cells[j])}" for j, h in self.notes if cells[j] is not None] if self.notes else []
        return out, notes


def _long_row(plan: _Plan, table: SourceTable, cells: Sequence[Any]) -> bool:
    """A text file's row with values right of the header's last column."""
    return table.encoding is not None and any(j < len(cells) and cells[j] is not None for j in plan.beyond)


def _report_long_rows(rows: list[int], table: SourceTable, shaped: Shaped, fallback: str) -> None:
    if not rows:
        return
    shown = ", ".join(str(n) for n in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    shaped.attention.append(Attention(
        table.label, f"row {shown}: more fields than the header (a comma inside a value without quotes?); "
        f"the extra fields went to {fallback} under their column letter: check these rows"))


def _add_note(row: Row, key: str, lines: list[str], sep: str = "\n") -> None:
    if not lines:
        return
    old = row.get(key)
    row[key] = sep.join(([_text(old)] if old not in (None, "") else []) + lines)


# --- customer-shaped sources -------------------------------------------------------------------------

def shape_customers(table: SourceTable, smap: SourceMap, schema: Schema, registry: Registry,
                    shaped: Shaped, counts: SourceCounts) -> None:
    plan = _Plan(smap, schema)
    cust_entity, cont_entity = schema.entity("customers"), schema.entity("contacts")
    people = bool(plan.by_target.get("contacts.name"))
    company_header = next((c.header for c in smap.columns if c.target == "customers.name"), "")

    vocab = vocabulary(schema)
    company_named = fold_header(company_header) in vocab.company_words and \
        fold_header(company_header) not in {fold_header(a) for a in PERSON_OR_COMPANY_HEADERS}
    kind_mapped = "customers.kind" in plan.by_target
    split_prefecture_off = smap.prefecture_from_address and "customers.prefecture" not in plan.by_target
    cust_keys = set(cust_entity.keys)
    long_rows: list[int] = []
    for i in range(smap.header_row, len(table.rows)):
        cells = table.rows[i]
        kind = row_kind(cells)
        if kind == _BLANK:
            continue
        counts.rows_read += 1
        where = f"{table.label} row {i + 1}"
        if kind == _TOTALS_ROW:
            counts.rows_skipped += 1
            counts.skipped.append(Attention(where, "totals row (合計) skipped: "
                                            + ", ".join(_text(v) for v in cells if v is not None)))
            continue
        values, notes = plan.values(cells)
        if plan.beyond and _long_row(plan, table, cells):
            long_rows.append(i + 1)
        cust = dict(values.get("customers", {}))
        contact = dict(values.get("contacts", {}))
        if contact and contact.get("name") is None:
            # A 部署 or 役職 without a person's name is no 担当者: it stays with the customer, in 備考.
            notes.extend(f"{plan.header[f'contacts.{k}']}: {_text(v)}" for k, v in contact.items())
            contact = {}
        name = cust.get("name")
        if name is not None and not isinstance(name, str):
            name = cust["name"] = _text(name)
        person_only = name is None and contact.get("name") is not None
        if person_only:
            # A card without a company: the person is the customer (個人).
            name = cust["name"] = _text(contact.pop("name"))
            if not kind_mapped:
                cust["kind"] = "individual"
            for k, v in contact.items():
                target_key = "phone" if k == "mobile" else k
                if target_key in cust_keys and cust.get(target_key) is None and k != "customer":
                    cust[target_key] = v
                else:
                    notes.append(f"{cont_entity.column(k).ja}: {_text(v)}")
            contact = {}
        owner = _text(cust["owner"]) if cust.get("owner") is not None else shaped.default_owner
        if split_prefecture_off and "address" in cust:
            split = split_prefecture(cust["address"])
            if split:
                cust["prefecture"], cust["address"] = split[0], split[1] or None
        if not kind_mapped and name and not person_only:
            if company_named or has_legal_form(name):
                cust["kind"] = "corporate"
            elif _person_header(smap, vocab):
                cust["kind"] = "individual"
            else:
                shaped.attention.append(Attention(f"{where}", f"区分 of {name!r} unknown (法人 or 個人): "
                                                  "choose it in the workbook"))
        if name is None:
            shaped.attention.append(Attention(where, "no customer name: the row is written with 顧客名 "
                                              "blank; fill it in or delete the row"))
        target: Customer | None = None
        if people and name and not person_only:
            found = registry.find(name)
            found = [c for c in found if c.row is not None]
            if len(found) == 1:
                target = found[0]
        if target is None:
            row: Row = {"customer_id": None}
            row.update(cust)
            _add_note(row, "notes", notes)
            target = Customer(name or "", owner, row, origin=where)
            if name:
                registry.add(target)
            shaped.rows[owner]["customers"].append(row)
            notes = []
        else:
            # The company is already in: what this row says differently about it goes to the person.
            differ = [f"{cust_entity.column(k).ja}: {_text(v)}" for k, v in cust.items()
                      if k in cust_keys and k not in ("name", "kind", "owner") and target.row is not None
                      and target.row.get(k) not in (None, v)]
            for k, v in cust.items():
                if target.row is not None and target.row.get(k) is None:
                    target.row[k] = v
            notes = differ + notes
            if name != target.name:
                # Another spelling of the company (㈱ for 株式会社 ...): listed with the rows it joined.
                pair = (name, target.name)
                shaped.matched[pair] = shaped.matched.get(pair, 0) + 1
        if contact:
            crow: Row = {"contact_id": None, "customer": target.name or None}
            crow.update(contact)
            _add_note(crow, "notes", notes)
            shaped.rows[target.owner]["contacts"].append(crow)
        elif notes and target.row is not None:
            _add_note(target.row, "notes", notes)
        counts.rows_written += 1
        if len(counts.samples) < 3:
            sample = {"customers": dict(target.row or {})}
            if contact:
                sample["contacts"] = crow
            counts.samples.append(sample)
    _report_long_rows(long_rows, table, shaped, cust_entity.column("notes").ja)


def _person_header(smap: SourceMap, vocab: Any) -> bool:
    return any(fold_header(c.header) in vocab.person_words or c.part
               for c in smap.columns if c.target == "customers.name")


# --- activity logs and ledgers -----------------------------------------------------------------------

def activity_type_from_label(label: str, schema: Schema) -> str | None:
    """The activity type a file or sheet name announces (訪問記録 -> visit, 問い合わせ一覧 -> inquiry)."""
    col = schema.entity("activities").column("type")
    folded = fold_header(label)
    for ch in col.choices:
        for word in (ch.ja, *ch.aliases):
            if len(word) >= 2 and fold_header(word) in folded:
                return ch.key
    return None


def shape_children(table: SourceTable, smap: SourceMap, schema: Schema, registry: Registry,
                   master: Registry | None, shaped: Shaped, counts: SourceCounts) -> None:
    plan = _Plan(smap, schema)
    ekey = smap.shape
    entity = schema.entity(ekey)
    fallback = fallback_column(entity)
    fallback_multiline = (entity.column(fallback).max_length or 0) >= 1000
    owner_key = {"activities": "handled_by", "deals": "owner"}[ekey]
    type_from_label = None
    if ekey == "activities" and "activities.type" not in plan.by_target:
        type_from_label = activity_type_from_label(f"{table.path.stem} {table.sheet or ''}", schema)
        if type_from_label is None:
            shaped.attention.append(Attention(table.label, "no 種別 column and the file name does not say "
                                              "訪問 / 電話 / 問い合わせ ...: choose 種別 in the workbook"))
    seen_titles: dict[tuple[str, str], int] = {}
    id_col = entity.id_column.key
    label = table.label
    found_by_name: dict[str, Customer] = {}
    #: Rows per name typed otherwise than its customer's (listed with the customer it found).
    other_spelling: dict[str, int] = {}
    books = shaped.rows
    long_rows: list[int] = []
    for i in range(smap.header_row, len(table.rows)):
        cells = table.rows[i]
        kind = row_kind(cells)
        if kind == _BLANK:
            continue
        counts.rows_read += 1
        if kind == _TOTALS_ROW:
            where = f"{label} row {i + 1}"
            counts.rows_skipped += 1
            counts.skipped.append(Attention(where, "totals row (合計) skipped: "
                                            + ", ".join(_text(v) for v in cells if v is not None)))
            continue
        row, notes = plan.child_row(cells, ekey, id_col)
        if plan.beyond and _long_row(plan, table, cells):
            long_rows.append(i + 1)
        typed = row.get("customer")
        name = (typed if type(typed) is str else _text(typed)).strip() if typed is not None else ""
        owner_value = row.get(owner_key)
        row_owner = shaped.default_owner if owner_value is None else (
            owner_value if type(owner_value) is str else _text(owner_value))
        customer = found_by_name.get(name)
        if customer is None:
            customer = _find_customer(name, f"{label} row {i + 1}", registry, master, shaped, row_owner, label)
            if customer is not None:
                found_by_name[name] = customer
        if customer is not None:
            row["customer"] = customer.ref
            if customer.name != name:
                other_spelling[name] = other_spelling.get(name, 0) + 1
            book = customer.owner
        else:
            book = row_owner
        if ekey == "deals":
            row.setdefault("phase", "won")
            if row.get("title") is None:
                parts = [_text(row[k]) for k in ("closed_on", "product") if row.get(k) is not None]
                row["title"] = " ".join(parts) or None
            title = row.get("title")
            if title is not None:
                t = (str(row.get("customer")), title if type(title) is str else _text(title))
                n = seen_titles.get(t, 0) + 1
                seen_titles[t] = n
                if n > 1:
                    row["title"] = f"{t[1]} ({n})"
        elif type_from_label and row.get("type") is None:
            row["type"] = type_from_label
        if notes:
            _add_note(row, fallback, notes, "\n" if fallback_multiline else " / ")
        books[book][ekey].append(row)
        counts.rows_written += 1
        if len(counts.samples) < 3:
            counts.samples.append({ekey: dict(row)})
    for name, n in other_spelling.items():
        c = found_by_name[name]
        pair = (name, c.ref if c.id else c.name)
        shaped.matched[pair] = shaped.matched.get(pair, 0) + n
    _report_long_rows(long_rows, table, shaped, entity.column(fallback).ja)


def _find_customer(name: str, where: str, registry: Registry, master: Registry | None, shaped: Shaped,
                   owner: str, label: str) -> Customer | None:
    if not name:
        shaped.attention.append(Attention(where, "no customer name: choose the customer in the workbook"))
        return None
    found = registry.find(name)
    if not found and master is not None:
        found = master.find(name)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        cands = "; ".join(f"{c.id or c.name} ({c.owner or '-'})" for c in found[:5])
        shaped.attention.append(Attention(where, f"customer {name!r} is ambiguous: {cands}; "
                                          "type the customer's ID into the 顧客 cell"))
        return None
    # A name that matches nothing becomes a customer of its own, in the row owner's workbook.
    row: Row = {"customer_id": None, "name": name}
    if has_legal_form(name):
        row["kind"] = "corporate"
    else:
        shaped.attention.append(Attention(where, f"区分 of new customer {name!r} unknown (法人 or 個人): "
                                          "choose it in the workbook"))
    c = Customer(name, owner, row, origin=where)
    registry.add(c)
    shaped.rows[owner]["customers"].append(row)
    shaped.created.append(Attention(where, f"customer {name!r} was not in any list: created from {label}"))
    return c
