"""引き継ぎ (handover): when a sales rep leaves or changes territory, their customers move with their story.

``handover`` reassigns 担当営業 from A to B in the master database — the customers, A's open deals on
them and A's open TODOs on them (closed deals keep A: that is who won them) — in one transaction with
a 変更履歴 row per changed field (how = ``handover``), and writes B a workbook that tells each
customer's story: summary, contact persons, open deals, open TODOs, the latest activities and every
complaint with how it was answered.

The master workbook is rewritten in the same transaction when it is exactly as xlcrm wrote it; when
someone has edited it since (decisions or record edits not merged yet) it is left alone — rewriting
it would throw those edits away — and the next merge brings it up to date (the three-way merge sees
担当営業 unchanged in the workbook and keeps the new owner).  An encrypted master is read and rewritten
with ``password`` (the same one that seals the handover book); without it handover refuses up front.
A plain master stays plain: ``--password`` alone only seals the handover book.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.schema import OPEN_PHASES, Entity, Lang, Schema
from xlcrm.store import backup, db, lock, outputs
from xlcrm.xlsx.blocks import Block, Col, cell_value, schema_cols, schema_values, write_block
from xlcrm.xlsx.writer import (
    atomic_write,
    close_workbook,
    open_workbook,
    remove_leftovers,
    sealed,
    stage_beside,
    write_text,
)

HOW = "handover"
#: How many of the latest activities the handover book shows per customer.
LAST_ACTIVITIES = 10


@dataclass
class Change:
    entity: str
    record_id: str
    field: str
    old: str | None
    new: str


@dataclass
class HandoverResult:
    customers: list[str]
    changes: list[Change]
    run_id: int
    workbook: Path | None
    master_rewritten: bool
    notes: list[str] = field(default_factory=list)

    def count(self, entity: str) -> int:
        return len({c.record_id for c in self.changes if c.entity == entity})


def _norm(name: str) -> str:
    return " ".join(name.split())


def handover(master: str | Path, schema: Schema, from_owner: str, to_owner: str, *,
             customers: Sequence[str] | None = None, out: str | Path | None = None, lang: Lang = "ja",
             who: str = "admin", password: str | None = None, now: dt.datetime | None = None,
             rewrite_master: bool = True, force: bool = False, new_owner: bool = False) -> HandoverResult:
    """Move ``from_owner``'s customers (all, or the IDs in ``customers``) to ``to_owner``.

    The handover book ``out`` never replaces the master's files, nor a file xlcrm did not write unless
    ``force`` (a copy is kept beside it): :mod:`xlcrm.store.outputs`.  ``to_owner`` must be a 担当営業 the
    master knows (of a customer, a deal, a TODO or a handed-out workbook), so a typo does not hand
    customers to nobody; ``new_owner`` allows someone new.
    """
    src, dst = _norm(from_owner), _norm(to_owner)
    if not src or not dst:
        raise XlcrmError("--from and --to need the two sales reps' names (担当営業)")
    if src == dst:
        raise XlcrmError(f"--from and --to are the same person ({src}); nothing to hand over")
    master = Path(master)
    if out is not None and Path(out).suffix.lower() != ".xlsx":
        raise XlcrmError(f"{out}: the handover book is an Excel workbook; name it ….xlsx")
    now = now or dt.datetime.now().replace(microsecond=0)
    at = now.isoformat(timespec="seconds")
    outputs.check_master(master)
    with lock.master_lock(master, "handover"):
        if rewrite_master:
            lock.refuse_if_open_in_excel(master)
        claim = outputs.claim(Path(out), "handover", force=force, master=master) if out is not None else None
        master_pw = None
        if rewrite_master:
            from xlcrm.master.masterbook import check_master_password

            # An encrypted master is rewritten with its password; a plain one stays plain.
            master_pw = password if check_master_password(master, password) else None
        # The book is written beside its place first and takes it only once the handover has
        # committed: a handover that fails leaves no book saying it happened.
        if out is not None and claim is not None:
            remove_leftovers(out)  # a killed handover's staged book (the master's lock is ours)
        staged = stage_beside(out) if out is not None and claim is not None else None
        conn = db.connect(db.db_path_for(master))
        try:
            with backup.taken(master, conn) as made, db.rollback_on_error(conn):
                conn.execute("BEGIN IMMEDIATE")
                picked = _pick_customers(conn, schema, src, customers)
                if not new_owner:
                    _check_known(conn, schema, dst)
                run_id = db.start_run(conn, HOW, [src, dst, *picked], at)
                changes = _reassign(conn, schema, picked, src, dst, run_id=run_id, today=now.date())
                db.add_history(conn, [(run_id, at, c.entity, c.record_id, c.field, c.old, c.new, None, who, HOW)
                                      for c in changes])
                db.finish_run(conn, run_id, at)
                from xlcrm.store.searchindex import (
                    update_index,  # 担当営業 may be a search column (xlcrm.toml)
                )

                update_index(conn, schema, run_id)
                if staged is not None:
                    write_handover_book(conn, schema, picked, src, dst, staged, lang=lang, password=password,
                                        at=now)
                rewritten, notes = _commit(conn, master, schema, rewrite_master, master_pw, on_commit=made.committed)
            book = None
            if staged is not None and claim is not None:
                book, placing = Path(out), staged  # type: ignore[arg-type]
                staged = None  # from here on it is the book: kept, under a name the error gives, if it fails
                with claim.write(book):
                    _place(placing, book)
        finally:
            conn.close()
            if staged is not None:
                staged.unlink(missing_ok=True)
    return HandoverResult(picked, changes, run_id, book, rewritten, notes)


def _place(staged: Path, out: Path) -> None:
    try:
        os.replace(staged, out)
    except OSError as exc:
        kept = staged.with_name(f"{out.stem}.{os.getpid()}{out.suffix}")
        try:
            os.replace(staged, kept)
        except OSError:
            kept = staged
        raise XlcrmError(f"the handover was made, but its book could not replace this file ({exc.strerror}); "
                         f"it is in {kept}", path=str(out)) from None


def known_owners(conn: sqlite3.Connection, schema: Schema) -> set[str]:
    """Every 担当営業 the master knows: of its customers, deals and TODOs, and of handed-out workbooks."""
    names: set[str] = set()
    for key, col in (("customers", "owner"), ("deals", "owner"), ("todos", "assignee")):
        if key in {e.key for e in schema} and schema.entity(key).has(col):
            e = schema.entity(key)
            i = e.keys.index(col)
            names.update(_norm(str(r[i])) for r in db.iter_records(conn, e) if r[i])
    names.update(_norm(o) for o in db.owner_langs(conn) if o)
    return names - {""}


def _check_known(conn: sqlite3.Connection, schema: Schema, dst: str) -> None:
    known = known_owners(conn, schema)
    if dst in known:
        return
    from rapidfuzz import process

    close = process.extractOne(dst, sorted(known), score_cutoff=60)
    hint = f"did you mean {close[0]}? " if close else ""
    raise XlcrmError(f"--to {dst} is no 担当営業 in this master; {hint}known: {', '.join(sorted(known)) or '(none)'}"
                     f". To hand over to someone new, add --new-owner")


def _pick_customers(conn: sqlite3.Connection, schema: Schema, src: str, wanted: Sequence[str] | None) -> list[str]:
    e = schema["customers"]
    owned = {r[0]: r for r in db.iter_records(conn, e)
             if _norm(str(r[e.keys.index("owner")] or "")) == src}
    if wanted:
        ids = list(dict.fromkeys(w.strip() for w in wanted if w.strip()))
        problems = []
        for cid in ids:
            if cid in owned:
                continue
            rec = db.record(conn, e, cid)
            if rec is None:
                problems.append(f"{cid} does not exist")
            elif rec["_state"] != "active":
                problems.append(f"{cid} is {rec['_state']}" + (f" into {rec['_merged_into']}"
                                                                if rec.get("_merged_into") else ""))
            else:
                problems.append(f"{cid} belongs to {rec.get('owner') or '(nobody)'}")
        if problems:
            raise XlcrmError(f"cannot hand over from {src}: " + "; ".join(problems))
        return ids
    if not owned:
        owners = sorted({_norm(str(r[e.keys.index("owner")] or "")) for r in db.iter_records(conn, e)} - {""})
        raise XlcrmError(f"no customer has 担当営業 {src!r}; known: {', '.join(owners) or '(none)'}")
    return sorted(owned)


def _reassign(conn: sqlite3.Connection, schema: Schema, ids: list[str], src: str, dst: str, *, run_id: int,
              today: dt.date) -> list[Change]:
    changes: list[Change] = []
    cust = schema["customers"]
    for cid in ids:
        rec = db.record(conn, cust, cid)
        assert rec is not None
        changes.append(Change("customers", cid, "owner", rec.get("owner"), dst))
    db.update_fields(conn, cust, [(c.record_id, "owner", dst) for c in changes], run_id=run_id)
    if cust.has("updated_at"):
        db.update_fields(conn, cust, [(cid, "updated_at", today.isoformat()) for cid in ids], run_id=run_id)
    idset = set(ids)
    for entity, who_col, is_open in ((schema["deals"], "owner", _deal_open), (schema["todos"], "assignee", _todo_open)):
        if not entity.has(who_col):
            continue
        moved = []
        for row in db.iter_records(conn, entity):
            r = dict(zip(entity.keys, row, strict=True))
            if r.get("customer") in idset and _norm(str(r.get(who_col) or "")) == src and is_open(r):
                moved.append(Change(entity.key, r[entity.id_column.key], who_col, r.get(who_col), dst))
        db.update_fields(conn, entity, [(c.record_id, who_col, dst) for c in moved], run_id=run_id)
        changes.extend(moved)
    return changes


def _deal_open(r: dict[str, Any]) -> bool:
    return r.get("phase") in OPEN_PHASES


def _todo_open(r: dict[str, Any]) -> bool:
    return r.get("status") != "done"


def _commit(conn: sqlite3.Connection, master: Path, schema: Schema, rewrite: bool,
            password: str | None = None, on_commit: Callable[[], None] | None = None) -> tuple[bool, list[str]]:
    """Commit; rewrite master.xlsx in the same step when that loses nothing (see the module docstring)."""
    notes: list[str] = []
    if rewrite and master.exists():
        try:
            from xlcrm.master import masterbook
            from xlcrm.master.masterbook import master_lang
        except ImportError:  # pragma: no cover - merge not installed in a stripped build
            masterbook = None  # type: ignore[assignment]
        if masterbook is not None:
            state = masterbook.read_master_state(master, conn, schema, edits=False, password=password)
            if state.decisions is None and not state.warnings:
                masterbook.write_and_commit(conn, master, schema, lang=master_lang(schema), password=password,
                                            on_commit=on_commit)
                return True, notes
            notes.append(f"{master.name} has changes not merged yet, so it was not rewritten; it shows the new "
                         "担当営業 after the next `xlcrm merge` (or `xlcrm export-master` once those changes "
                         "are merged)")
    elif rewrite:
        notes.append(f"{master.name} does not exist; `xlcrm export-master` writes it from the database")
    db.commit(conn)
    if on_commit is not None:
        on_commit()
    return False, notes


# --- the handover book ---------------------------------------------------------------------------------

_W: dict[str, tuple[str, str]] = {
    "title": ("引き継ぎ資料", "Handover"),
    "index": ("引き継ぎ一覧", "Customers"),
    "from_to": ("{src} さんから {dst} さんへ（{date}）", "From {src} to {dst} ({date})"),
    "summary": ("顧客概要", "Summary"),
    "contacts": ("担当者", "Contact persons"),
    "open_deals": ("進行中の案件", "Open deals"),
    "open_todos": ("未完了のTODO", "Open TODOs"),
    "activities": ("最近の活動（新しい順 {n} 件まで）", "Latest activities (up to {n}, newest first)"),
    "complaints": ("クレームと対応", "Complaints and how they were answered"),
    "item": ("項目", "Item"),
    "value": ("内容", "Value"),
    "n_open_deals": ("進行中の案件", "Open deals"),
    "n_open_todos": ("未完了TODO", "Open TODOs"),
    "n_complaints": ("クレーム", "Complaints"),
    "last_contact": ("最終接触日", "Last contact"),
    "sheet": ("シート", "Sheet"),
    "note": ("個人情報を含みます。引き継ぎ後は社外に持ち出さないでください。",
             "Contains personal data: keep it inside the company."),
}


def _w(key: str, lang: Lang, **kw: Any) -> str:
    ja, en = _W[key]
    return (ja if lang == "ja" else en).format(**kw)


def _records(conn: sqlite3.Connection, entity: Entity, customer: str) -> list[dict[str, Any]]:
    ref = entity.ref_column
    assert ref is not None
    return [dict(zip(entity.keys, r, strict=True))
            for r in db.iter_records(conn, entity, where=f'"{ref.key}" = ?', params=(customer,))]


def write_handover_book(conn: sqlite3.Connection, schema: Schema, ids: list[str], src: str, dst: str, out: Path,
                        *, lang: Lang, password: str | None, at: dt.datetime) -> Path:
    cust_e = schema["customers"]
    people = schema["contacts"]
    acts, deals, todos = schema["activities"], schema["deals"], schema["todos"]
    with atomic_write(out) as tmp, sealed(tmp, password) as target:
        wb = open_workbook(target, created=at, title=_w("title", lang))
        index = wb.add_worksheet(_w("index", lang))
        write_text(index, 0, 0, f"{_w('title', lang)} — {_w('from_to', lang, src=src, dst=dst, date=at.date())}",
                   wb, bold=True, font_size=14)
        write_text(index, 1, 0, _w("note", lang), wb, font_color="#C00000")
        index_rows = []
        for cid in ids:
            rec = db.record(conn, cust_e, cid)
            assert rec is not None
            ws = wb.add_worksheet(cid)  # IDs are unique, short and valid sheet names
            sheet_acts = sorted(_records(conn, acts, cid), key=lambda r: (r.get("date") or "", r["activity_id"]),
                                reverse=True)
            open_deals = [r for r in _records(conn, deals, cid) if _deal_open(r)]
            open_todos = sorted((r for r in _records(conn, todos, cid) if _todo_open(r)),
                                key=lambda r: (r.get("due") or "", r["todo_id"]))
            complaints = [r for r in sheet_acts if r.get("type") == "complaint"]
            contacts = _records(conn, people, cid)
            write_text(ws, 0, 0, f"{rec.get('name') or cid}（{cid}）" if lang == "ja" else f"{rec.get('name') or cid} ({cid})",
                       wb, bold=True, font_size=14)
            write_text(ws, 1, 0, _w("from_to", lang, src=src, dst=dst, date=at.date()), wb, font_color="#595959")
            summary_cols = [c for c in cust_e.columns]
            blocks = [
                Block(f"{cid}_summary", _w("summary", lang), [Col(_w("item", lang), width=18), Col(_w("value", lang), width=44)],
                      [[c.label(lang), v] for c, v in zip(summary_cols, schema_values(summary_cols, rec, lang), strict=True)
                       if v is not None], prefix="ho_"),
                _entity_block(f"{cid}_contacts", _w("contacts", lang), people, contacts, lang, skip=("customer",)),
                _entity_block(f"{cid}_deals", _w("open_deals", lang), deals, open_deals, lang, skip=("customer",)),
                _entity_block(f"{cid}_todos", _w("open_todos", lang), todos, open_todos, lang, skip=("customer",)),
                _entity_block(f"{cid}_activities", _w("activities", lang, n=LAST_ACTIVITIES), acts,
                              sheet_acts[:LAST_ACTIVITIES], lang, skip=("customer",)),
                _entity_block(f"{cid}_complaints", _w("complaints", lang), acts, complaints, lang,
                              skip=("customer", "type")),
            ]
            row = 3
            widths: dict[int, float] = {}
            for b in blocks:
                write_text(ws, row, 0, f"{b.title}（{len(b.rows)}）" if lang == "ja" else f"{b.title} ({len(b.rows)})",
                           wb, bold=True, font_size=12)
                write_block(wb, ws, row + 1, b)
                for i, col in enumerate(b.columns):
                    widths[i] = max(widths.get(i, 0), col.width or 12)
                row += max(len(b.rows), 1) + 4
            for i, wdt in widths.items():
                ws.set_column(i, i, min(wdt, 30 if i == 1 else 20))
            ws.set_landscape()
            ws.fit_to_pages(1, 0)
            last = sheet_acts[0].get("date") if sheet_acts else None
            index_rows.append([cid, rec.get("name"), cell_value(schema_values([cust_e.column("status")], rec, lang)[0])
                               if cust_e.has("status") else None, len(open_deals), len(open_todos), len(complaints),
                               dt.date.fromisoformat(last) if last else None])
        idx = Block("index", _w("index", lang),
                    [Col(cust_e.id_column.label(lang), width=12), Col(cust_e.column("name").label(lang), width=30),
                     Col(cust_e.column("status").label(lang) if cust_e.has("status") else "status", width=10),
                     Col(_w("n_open_deals", lang), "int"), Col(_w("n_open_todos", lang), "int"),
                     Col(_w("n_complaints", lang), "int"), Col(_w("last_contact", lang), "date")],
                    index_rows, prefix="ho_")
        write_block(wb, index, 3, idx)
        for i, col in enumerate(idx.columns):
            index.set_column(i, i, col.width or 12)
        for r, cid in enumerate(ids, start=4):  # the ID links to the customer's sheet
            index.write_url(r, 0, f"internal:'{cid}'!A1", string=cid)
        index.set_landscape()
        index.fit_to_pages(1, 0)
        index.activate()
        close_workbook(wb)
    return out


def _entity_block(key: str, title: str, entity: Entity, rows: list[dict[str, Any]], lang: Lang,
                  skip: tuple[str, ...] = ()) -> Block:
    cols = [c for c in entity.columns if c.key not in skip]
    values = [schema_values(cols, r, lang) for r in rows]
    # A reading document, not a data sheet: columns nobody filled for this customer are left out.
    keep = [i for i, c in enumerate(cols) if i == 0 or any(v[i] is not None for v in values)] if values \
        else list(range(min(3, len(cols))))
    cols = [cols[i] for i in keep]
    return Block(key, title, schema_cols(cols, lang), [[v[i] for i in keep] for v in values], prefix="ho_")
