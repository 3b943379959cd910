"""A customer's whole story before picking up the phone: the engine behind 顧客履歴 and `xlcrm history`.

One function reads the master database (all five entities and the change history) and returns a
summary, a newest-first timeline of the customer's activities, deals and TODOs, and the field changes
in their own section, one group per run ("取込: 12 項目") so a first import's dozens of "added" rows
never push today's visit down the page.  The ribbon writes them into a sheet, the CLI prints them or
dumps JSON.  Duplicates merged into the customer contribute their records too, and asking for a
merged-away ID answers with its survivor and says so (:attr:`CustomerHistory.merged_away`), so an
old ID on a printout still works.

Like :mod:`xlcrm.views.search` this runs in a fresh process on every ribbon click: no pandas, no pandera.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.normalize import company_key, fold_search
from xlcrm.schema import CLOSED_PHASES, Entity, Lang, Schema
from xlcrm.store import db
from xlcrm.store.db import format_id
from xlcrm.store.searchindex import COMPANY_KEY, survivors
from xlcrm.views.search import search

_ID_QUERY = re.compile(r"^([a-z])-?0*(\d{1,9})$")
#: How a change-history row came about (merge and resolve write these keys; same labels as the master
#: workbook's 変更履歴 sheet); unknown keys are shown as they are.
_HOW = {
    "new": ("新規", "New"), "edit": ("変更", "Edit"), "link": ("重複リンク", "Duplicate link"),
    "merge": ("統合", "Merge"), "decision": ("判断", "Decision"), "delete": ("削除", "Deleted"),
}
#: Bookkeeping fields that history rows may name: (ja, en) label and value labels.
_BOOKKEEPING_FIELDS = {
    "_merged_into": (("統合先", "Merged into"), {}),
    "_state": (("状態", "State"), {"active": ("有効", "Active"), "merged": ("統合済み", "Merged"),
                                   "deleted": ("削除", "Deleted")}),
}
_KIND_RANK = {"activity": 0, "deal": 1, "todo": 2}
#: What a run of changes is called in its group's title, by how its rows came about; rows read from a
#: staff workbook (new or edited records with a source file) are an import (取込).
_RUN_WORDS = {
    "import": ("取込", "Import"), "new": ("登録", "Added"), "edit": ("変更", "Edit"),
    "link": ("重複リンク", "Duplicate link"), "merge": ("統合", "Merge"), "decision": ("判断", "Decision"),
    "delete": ("削除", "Deleted"), "handover": ("引き継ぎ", "Handover"),
}
_WORDS = {
    "ja": {"overdue": "期限切れ", "amount": "金額", "expected": "受注予定日", "closed": "受注日",
           "due": "期限", "done": "完了日", "response": "対応内容", "from": "取込元",
           "new_record": "{entity}を登録", "arrow": "→", "blank": "（空欄）", "items": "{n} 項目",
           "merged_away": "{old} は {new} に統合されました"},
    "en": {"overdue": "overdue", "amount": "Amount", "expected": "Expected close", "closed": "Closed on",
           "due": "Due", "done": "Done on", "response": "Response", "from": "From",
           "new_record": "{entity} added", "arrow": "->", "blank": "(blank)", "items": "{n} items",
           "merged_away": "{old} was merged into {new}"},
}


@dataclass
class HistorySummary:
    owner: str | None
    status: str | None  # canonical key (``active``)
    status_label: str | None  # in the requested language (取引中)
    dm_consent: str | None
    dm_consent_label: str | None
    won_total: float  # sum of 金額 over deals in the ``won`` phase
    won_deals: int
    open_deals: int
    last_contact: str | None  # ISO date of the latest activity
    open_todos: int
    overdue_todos: int


@dataclass
class TimelineEntry:
    kind: str  # activity / deal / todo / change
    date: str | None  # ISO date the entry is filed under (None: undated, listed last)
    at: str  # sort key: ISO date or date-time
    entity: str
    record_id: str
    title: str
    detail: str | None = None
    who: str | None = None
    status: str | None = None  # label: 結果, フェーズ, 状態 or how a change came about
    overdue: bool = False
    #: Raw stored values (canonical keys, ISO dates); for changes: field, old, new, how, source_file.
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChangeGroup:
    """The field changes one run made to the customer and its records: one line of the history's
    change section ("取込: 12 項目"), its rows (``kind == "change"`` entries) beneath it."""

    run_id: int | None
    date: str | None  # ISO date of the run
    at: str  # sort key: the run's date-time
    title: str  # 取込: 12 項目
    detail: str  # the fields or records it touched, e.g. 電話番号, 住所 / 活動履歴を登録 ×16
    who: str | None
    source_file: str | None
    entries: list[TimelineEntry] = field(default_factory=list)


@dataclass
class CustomerHistory:
    customer_id: str
    name: str | None
    kana: str | None
    state: str  # active / deleted
    summary: HistorySummary
    #: Activities, deals and TODOs, newest first (undated ones last).
    timeline: list[TimelineEntry]
    contacts: list[dict[str, Any]]
    #: Duplicate IDs merged into this customer (their records are part of the timeline).
    merged_ids: list[str]
    #: The ID that was asked for when it was a merged-away duplicate, else None.
    resolved_from: str | None = None
    today: str = ""
    lang: str = "ja"
    #: Field changes grouped per run, newest run first.
    changes: list[ChangeGroup] = field(default_factory=list)
    #: When a merged-away ID was asked for: where it went, in words (「C-000059 は C-000034 に統合されました
    #: (2024-05-01)」), else None.
    merged_away: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- resolving what was typed -------------------------------------------------------------------------

def _label(row: sqlite3.Row) -> str:
    owner = f" ({row['owner']})" if "owner" in row.keys() and row["owner"] else ""  # noqa: SIM118
    return f"{row[0]} {row['name']}{owner}"


def resolve_customer(conn: sqlite3.Connection, schema: Schema, customer: str) -> tuple[str, str | None]:
    """(customer ID, the merged-away ID asked for or None) for an ID or a name; refuses ambiguity.

    IDs of any entity work (a contact's, a deal's: their customer), merged-away customer IDs resolve to
    the survivor.  Names: exact (folded, or the same company key, or the same フリガナ) first, then the
    search engine's name matches if they point to exactly one customer.
    """
    typed = str(customer or "").strip()
    if not typed:
        raise XlcrmError("no customer given: pass a customer ID (C-000001) or a name")
    cust = schema.entity("customers")
    m = _ID_QUERY.match(fold_search(typed))
    if m:
        found = _resolve_id(conn, schema, m.group(1).upper(), int(m.group(2)))
        if found is not None:
            return found
        if m.group(1).upper() in {e.id_prefix.upper() for e in schema}:
            raise XlcrmError(f"{typed}: no such ID in the master; check it or find the customer with "
                             "`xlcrm search`")

    want, want_key = fold_search(typed), company_key(typed)
    rows = db.customer_name_rows(conn, cust)
    exact = [r for r in rows if fold_search(r["name"]) == want
             or (want_key and company_key(r["name"]) == want_key) or (r["kana"] and fold_search(r["kana"]) == want)]
    if len(exact) == 1:
        return exact[0][0], None
    if len(exact) > 1:
        raise XlcrmError(f"{typed!r} names {len(exact)} customers: " + "; ".join(_label(r) for r in exact[:10])
                         + "; give the customer ID instead")

    name_keys = {c.key for c in cust.columns if c.type in ("name", "kana")} | {COMPANY_KEY}
    hits = [h for h in search(conn, schema, typed, limit=10)
            if h.contact_id is None and h.matched in name_keys and h.customer_id]
    ids = list(dict.fromkeys(h.customer_id for h in hits if h.customer_id))
    if len(ids) == 1:
        return ids[0], None
    if not ids:
        raise XlcrmError(f"{typed!r}: no customer with that ID or name in the master; try `xlcrm search`")
    byid = {r[0]: r for r in rows}
    listed = "; ".join(_label(byid[i]) if i in byid else i for i in ids)
    raise XlcrmError(f"{typed!r} could be {len(ids)} customers: {listed}; give the customer ID instead")


def _resolve_id(conn: sqlite3.Connection, schema: Schema, prefix: str,
                number: int) -> tuple[str, str | None] | None:
    cid = schema.entity("customers").id_column.key
    for entity in schema:
        if entity.id_prefix.upper() != prefix:
            continue
        rid = format_id(entity, number)
        if entity.key == "customers":
            state = db.record_state(conn, entity, rid)
            if state is None:
                return None
            if state == "merged":
                survivor = survivors(conn, cid).get(rid)
                if survivor is None:
                    raise XlcrmError(f"{rid} was merged but names no surviving record; ask the admin to "
                                     "check the master")
                return survivor, rid
            return rid, None
        parent = db.parent_id(conn, entity, rid)
        if parent is None:
            return None
        return survivors(conn, cid).get(parent, parent), None
    return None


# --- the history ---------------------------------------------------------------------------------------

def customer_history(conn: sqlite3.Connection, schema: Schema, customer: str, *, today: date | None = None,
                     lang: Lang = "ja") -> CustomerHistory:
    """Summary and newest-first timeline for a customer given by ID or name (see :func:`resolve_customer`)."""
    today = today or date.today()
    cid_value, resolved_from = resolve_customer(conn, schema, customer)
    cust = schema.entity("customers")
    cid = cust.id_column.key
    row = db.record_row(conn, cust, cid_value)
    if row is None:  # a contact/deal pointing to a customer that does not exist
        raise XlcrmError(f"{customer}: refers to customer {cid_value}, which is not in the master")
    merged_ids = sorted(k for k, v in survivors(conn, cid).items() if v == cid_value)
    ids = [cid_value, *merged_ids]
    words = _WORDS.get(lang, _WORDS["en"])

    children: dict[str, list[sqlite3.Row]] = {}
    for entity in schema:
        if entity.key == "customers" or entity.ref_column is None:
            continue
        children[entity.key] = db.attached_records(conn, entity, ids)

    timeline: list[TimelineEntry] = []
    timeline += [_activity(schema.entity("activities"), r, lang, words) for r in children.get("activities", [])]
    timeline += [_deal(schema.entity("deals"), r, lang, words) for r in children.get("deals", [])]
    timeline += [_todo(schema.entity("todos"), r, lang, words, today) for r in children.get("todos", [])]
    record_ids = {"customers": ids} | {k: [r[0] for r in v] for k, v in children.items()}
    changes = _changes(conn, schema, record_ids, lang, words)
    timeline.sort(key=lambda e: (e.at or "", -_KIND_RANK.get(e.kind, 9), e.record_id), reverse=True)
    undated = [e for e in timeline if not e.at]
    timeline = [e for e in timeline if e.at] + undated
    merged_away = None
    if resolved_from:
        when = next((e.date for e in changes if e.record_id == resolved_from
                     and e.data.get("field") == "_merged_into"), None)
        merged_away = words["merged_away"].format(old=resolved_from, new=cid_value) + (f" ({when})" if when else "")

    deals = children.get("deals", [])
    todos = [e for e in timeline if e.kind == "todo"]
    activities = children.get("activities", [])
    won = [d for d in deals if d["phase"] == "won"]
    summary = HistorySummary(
        owner=_get(row, "owner"),
        status=_get(row, "status"),
        status_label=_choice(cust, "status", _get(row, "status"), lang),
        dm_consent=_get(row, "dm_consent"),
        dm_consent_label=_choice(cust, "dm_consent", _get(row, "dm_consent"), lang),
        won_total=float(sum(_num(d["amount"]) for d in won)),
        won_deals=len(won),
        open_deals=sum(1 for d in deals if d["phase"] not in CLOSED_PHASES),
        last_contact=max((str(a["date"]) for a in activities if a["date"]), default=None),
        open_todos=sum(1 for t in todos if t.data.get("status") != "done"),
        overdue_todos=sum(1 for t in todos if t.overdue),
    )
    contacts_entity = schema.entity("contacts")
    contacts = [{k: _get(r, k) for k in contacts_entity.keys if k != "customer"}
                for r in children.get("contacts", [])]
    return CustomerHistory(
        customer_id=cid_value, name=_get(row, "name"), kana=_get(row, "kana"), state=row["_state"],
        summary=summary, timeline=timeline, contacts=contacts, merged_ids=merged_ids,
        resolved_from=resolved_from, today=today.isoformat(), lang=lang,
        changes=group_changes(changes, schema, lang), merged_away=merged_away)


def _get(row: sqlite3.Row, key: str) -> Any:
    return row[key] if key in row.keys() else None  # noqa: SIM118 - sqlite3.Row has no __contains__


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None and v != "" else 0.0
    except (TypeError, ValueError):
        return 0.0


def _choice(entity: Entity, key: str, value: Any, lang: Lang) -> str | None:
    if value is None or not entity.has(key):
        return None if value is None else str(value)
    return entity.column(key).choice_label(str(value), lang)


def _short(s: Any, width: int = 80) -> str:
    t = " ".join(str(s or "").split())
    return t if len(t) <= width else t[: width - 1] + "…"


def _fmt_amount(v: Any) -> str:
    n = _num(v)
    return f"{n:,.0f}" if n == int(n) else f"{n:,.2f}"


def _data(entity: Entity, row: sqlite3.Row) -> dict[str, Any]:
    return {k: _get(row, k) for k in entity.keys}


def _activity(entity: Entity, r: sqlite3.Row, lang: Lang, words: dict[str, str]) -> TimelineEntry:
    kind = _choice(entity, "type", _get(r, "type"), lang) or ""
    day = _get(r, "date")
    contact = _get(r, "contact")
    title = f"{kind}: {_short(_get(r, 'content'))}" if kind else _short(_get(r, "content"))
    if contact:
        title += f" ({contact})"
    response = _get(r, "response")
    return TimelineEntry(
        kind="activity", date=day, at=str(day or ""), entity=entity.key, record_id=r[0], title=title,
        detail=f"{words['response']}: {_short(response, 200)}" if response else None,
        who=_get(r, "handled_by"), status=_choice(entity, "result", _get(r, "result"), lang),
        data=_data(entity, r))


def _deal(entity: Entity, r: sqlite3.Row, lang: Lang, words: dict[str, str]) -> TimelineEntry:
    phase = _get(r, "phase")
    closed, expected = _get(r, "closed_on"), _get(r, "expected_close")
    day = closed or expected
    parts = []
    if _get(r, "amount") is not None:
        parts.append(f"{words['amount']} {_fmt_amount(_get(r, 'amount'))}")
    if closed:
        parts.append(f"{words['closed']} {closed}")
    elif expected:
        parts.append(f"{words['expected']} {expected}")
    title = _short(_get(r, "title"))
    if _get(r, "product"):
        title += f" / {_short(_get(r, 'product'), 40)}"
    return TimelineEntry(
        kind="deal", date=day, at=str(day or ""), entity=entity.key, record_id=r[0], title=title,
        detail=", ".join(parts) or None, who=_get(r, "owner"), status=_choice(entity, "phase", phase, lang),
        data=_data(entity, r))


def _todo(entity: Entity, r: sqlite3.Row, lang: Lang, words: dict[str, str], today: date) -> TimelineEntry:
    status, due, done_on = _get(r, "status"), _get(r, "due"), _get(r, "done_on")
    is_done = status == "done"
    overdue = not is_done and bool(due) and str(due) < today.isoformat()
    day = done_on if is_done and done_on else due
    detail = f"{words['due']} {due}" if due else None
    if is_done and done_on:
        detail = f"{words['done']} {done_on}"
    label = _choice(entity, "status", status, lang)
    if overdue:
        label = f"{label} ({words['overdue']})" if label else words["overdue"]
    return TimelineEntry(
        kind="todo", date=day, at=str(day or ""), entity=entity.key, record_id=r[0],
        title=_short(_get(r, "content")), detail=detail, who=_get(r, "assignee"), status=label,
        overdue=overdue, data=_data(entity, r))


def _changes(conn: sqlite3.Connection, schema: Schema, record_ids: dict[str, Iterable[str]], lang: Lang,
             words: dict[str, str]) -> list[TimelineEntry]:
    out = []
    for ekey, rids in record_ids.items():
        entity = schema.entity(ekey)
        out += [_change(entity, h, lang, words) for h in db.history_of(conn, ekey, rids)]
    return out


def _change(entity: Entity, h: sqlite3.Row, lang: Lang, words: dict[str, str]) -> TimelineEntry:
    how_key = h["how"] or ""
    how = _HOW.get(how_key)
    how_label = (how[0] if lang == "ja" else how[1]) if how else how_key
    fld = h["field"]
    if fld:
        if entity.has(fld):
            col = entity.column(fld)
            flabel = col.label(lang)
            old = col.choice_label(h["old"], lang) if col.type == "choice" else h["old"]
            new = col.choice_label(h["new"], lang) if col.type == "choice" else h["new"]
        elif fld in _BOOKKEEPING_FIELDS:
            (ja, en), values = _BOOKKEEPING_FIELDS[fld]
            flabel = ja if lang == "ja" else en
            old, new = ((values[v][0 if lang == "ja" else 1] if v in values else v) for v in (h["old"], h["new"]))
        else:
            flabel, old, new = fld, h["old"], h["new"]
        title = (f"{entity.label(lang)} {flabel}: {_short(old, 40) if old not in (None, '') else words['blank']} "
                 f"{words['arrow']} {_short(new, 40) if new not in (None, '') else words['blank']}")
    elif how_key == "new":
        title = words["new_record"].format(entity=entity.label(lang))
    else:  # a duplicate linked to this record: merge wrote the evidence into ``new``
        title = f"{entity.label(lang)}: {how_label}" + (f" ({_short(h['new'], 60)})" if h["new"] else "")
    at = str(h["at"] or "")
    return TimelineEntry(
        kind="change", date=at[:10] or None, at=at, entity=entity.key, record_id=h["record_id"], title=title,
        detail=f"{words['from']}: {h['source_file']}" if h["source_file"] else None, who=h["who"],
        status=how_label,
        data={"history_id": h["history_id"], "run_id": h["run_id"], "field": fld, "old": h["old"],
              "new": h["new"], "how": how_key, "source_file": h["source_file"]})


def group_changes(changes: list[TimelineEntry], schema: Schema, lang: Lang) -> list[ChangeGroup]:
    """Change rows grouped by the run (and source file) that wrote them, newest run first; the rows of
    a group keep their order (oldest first, as they were written)."""
    words = _WORDS.get(lang, _WORDS["en"])
    groups: dict[tuple[Any, Any], list[TimelineEntry]] = {}
    for e in sorted(changes, key=lambda e: e.data.get("history_id") or 0):
        groups.setdefault((e.data.get("run_id"), e.data.get("source_file")), []).append(e)
    out = []
    for (run_id, source), rows in groups.items():
        hows = {r.data.get("how") for r in rows}
        if source and hows <= {"new", "edit"}:
            kind = "import"
        else:
            kind = next((h for h in ("merge", "delete", "decision", "handover", "link", "edit", "new") if h in hows),
                        "edit")
        ja, en = _RUN_WORDS[kind]
        what: dict[str, int] = {}
        for r in rows:
            fld = r.data.get("field")
            if fld:
                ent = schema.entity(r.entity)
                label = ent.column(fld).label(lang) if ent.has(fld) else (
                    _BOOKKEEPING_FIELDS[fld][0][0 if lang == "ja" else 1] if fld in _BOOKKEEPING_FIELDS else fld)
            else:
                label = r.title
            what[label] = what.get(label, 0) + 1
        detail = ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in what.items())
        latest = max(rows, key=lambda r: r.at)
        out.append(ChangeGroup(
            run_id=run_id, date=latest.date, at=latest.at,
            title=f"{ja if lang == 'ja' else en}: {words['items'].format(n=len(rows))}", detail=_short(detail, 200),
            who=next((r.who for r in rows if r.who), None), source_file=source, entries=rows))
    out.sort(key=lambda g: (g.at, g.run_id or 0), reverse=True)
    return out
