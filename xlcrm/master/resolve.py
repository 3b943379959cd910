"""Apply the decisions typed into the master workbook's review sheets, and merge two customers.

Decisions are read at the start of every merge and by ``xlcrm resolve``:

* 重複候補 統合 (merge): the two customers become one (:func:`combine_customers`); 別 (different): the
  pair is never suggested again; 保留 (later): stays on the sheet.
* 競合: マスタ keeps the master's value, 候補N (or just N) takes that competing value, and a value
  typed into 採用 itself or into 採用する値 is checked like a cell of that column and applied.
* 削除候補 削除: the record is marked deleted (kept in the database with its history, hidden from
  the sheets), a customer together with everything attached to it; 残す (keep): the question is
  closed and the record stays.

**Merging two customers** keeps the older ID (the smaller number) as the survivor, so IDs printed on
earlier lists keep working through ``_merged_into``.  Everything attached to the other customer is
re-pointed to the survivor.  Empty fields of the survivor are filled from the other record.  Where both
have a different phone, FAX, mobile or e-mail, the other one is kept in 備考 as
"[統合 C-000123] 電話番号: 03-...", so no way of reaching the customer is lost (a second phone number
is not a FAX number, so it does not go into the FAX column).  DM consent keeps the strictest answer:
不可 wins; otherwise a confirmed 可 beats 未確認 (the person was asked).  The merged-away record keeps its
row (``_state = 'merged'``) and its history; nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from xlcrm import normalize as nz
from xlcrm.errors import XlcrmError
from xlcrm.schema import Column, Lang, Schema
from xlcrm.store import db

CONTACT_TYPES = frozenset({"phone", "email"})


@dataclass
class ResolveReport:
    master: str = ""
    applied: int = 0
    merged: int = 0
    different: int = 0
    conflicts_resolved: int = 0
    deleted: int = 0
    kept: int = 0
    warnings: list[str] = field(default_factory=list)
    duplicates_pending: int = 0
    conflicts_pending: int = 0
    deletions_pending: int = 0
    #: The admin's record edits taken from the workbook (a file report), if it held any.
    edits: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _id_number(rid: str) -> tuple[int, str]:
    tail = rid.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 60, rid)


def survivor_of(conn: sqlite3.Connection, schema: Schema, entity_key: str, rid: str) -> tuple[str, str]:
    """Follow ``_merged_into``; returns (id, state)."""
    entity = schema.entity(entity_key)
    seen: set[str] = set()
    while rid not in seen:
        seen.add(rid)
        rec = db.record(conn, entity, rid)
        if rec is None:
            return rid, "missing"
        if rec["_state"] == "merged" and rec["_merged_into"]:
            rid = rec["_merged_into"]
            continue
        return rid, rec["_state"]
    return rid, "missing"


def combine_dm(a: Any, b: Any) -> Any:
    """Strictest DM consent: 不可 (no) wins; a confirmed 可 (yes) beats 未確認 / blank."""
    values = {a, b}
    if "no" in values:
        return "no"
    if "yes" in values:
        return "yes"
    return a if a is not None else b


def combine_customers(conn: sqlite3.Connection, schema: Schema, a_id: str, b_id: str, *, run_id: int,
                      at: str, who: str, how: str = "merge", lang: Lang = "ja", entity_key: str = "customers") -> str:
    """Merge customers ``a_id`` and ``b_id`` into the older one; returns the survivor's id.

    ``entity_key="contacts"`` merges two contact persons the same way (empty fields filled, the other's
    phone and e-mail kept in 備考); the rows attached to a customer follow only a customer, and the rows
    of the customer that name the other person (活動履歴.担当者) name the one kept."""
    entity = schema.entity(entity_key)
    a_id, _ = survivor_of(conn, schema, entity_key, a_id)
    b_id, _ = survivor_of(conn, schema, entity_key, b_id)
    if a_id == b_id:
        return a_id
    keep, other = sorted((a_id, b_id), key=_id_number)
    s = db.record(conn, entity, keep)
    o = db.record(conn, entity, other)
    if s is None or o is None:
        raise XlcrmError(f"cannot merge {a_id} and {b_id}: one of them is not in the master")
    history: list[tuple[Any, ...]] = []
    changes: list[tuple[str, str, Any]] = []
    extra: list[str] = []
    notes_col = "notes" if entity.has("notes") else None
    for col in entity.columns[1:]:
        if col.system:
            continue
        sv, ov = s.get(col.key), o.get(col.key)
        new = sv
        if col.key == "dm_consent":
            new = combine_dm(sv, ov)
        elif sv is None and ov is not None:
            new = ov
        elif sv is not None and ov is not None and sv != ov and col.type in CONTACT_TYPES:
            extra.append(f"{col.label(lang)}: {ov}")
        if new != sv:
            changes.append((keep, col.key, new))
            history.append((run_id, at, entity.key, keep, col.key, sv, new, None, who, how))
            s[col.key] = new
    if extra and notes_col:
        tag = "統合" if lang == "ja" else "merged"
        line = f"[{tag} {other}] " + " / ".join(extra)
        old = s.get(notes_col)
        new_notes = f"{old}\n{line}" if old else line
        changes.append((keep, notes_col, new_notes))
        history.append((run_id, at, entity.key, keep, notes_col, old, new_notes, None, who, how))
    if entity.has("updated_at"):
        changes.append((keep, "updated_at", at[:10]))
    db.update_fields(conn, entity, changes, run_id=run_id)
    db.set_state(conn, entity, other, "merged", keep, run_id=run_id)
    history.append((run_id, at, entity.key, other, "_merged_into", None, keep, None, who, how))
    for child in schema if entity_key == "customers" else ():
        if child.key == "customers" or child.ref_column is None:
            continue
        for cid in db.repoint(conn, child, other, keep, run_id=run_id):
            history.append((run_id, at, child.key, cid, child.ref_column.key, other, keep, None, who, how))
    if entity_key != "customers" and entity.ref_column is not None:
        history += _rename_person(conn, schema, {s.get(entity.ref_column.key), o.get(entity.ref_column.key)},
                                  o.get("name"), s.get("name"), run_id=run_id, at=at, who=who, how=how)
    db.repoint_duplicates(conn, entity_key, other, keep)
    db.repoint_conflicts(conn, entity_key, other, keep)
    db.add_history(conn, history)
    return keep


def _rename_person(conn: sqlite3.Connection, schema: Schema, customer_ids: set[Any], old_name: Any, new_name: Any,
                   *, run_id: int, at: str, who: str, how: str) -> list[tuple[Any, ...]]:
    """The rows of ``customer_ids`` whose 担当者 (a contact person's name, ``contact``) is ``old_name``
    however spaced or written (the person folds of duplicate matching) now read ``new_name``; their
    history rows."""
    from xlcrm.master.match import contact_keys

    folded = contact_keys({"name": old_name}).name
    ids = [c for c in customer_ids if c is not None]
    if not folded or not new_name or not ids:
        return []
    history: list[tuple[Any, ...]] = []
    for child in schema:
        if child.ref_column is None or not child.has("contact"):
            continue
        idc, ref = child.id_column.key, child.ref_column.key
        rows = [(rid, name) for rid, name in conn.execute(
            f'SELECT "{idc}", "contact" FROM "{child.key}" WHERE "{ref}" IN ({", ".join("?" * len(ids))}) '
            f"AND {db.ACTIVE}", ids)
            if name is not None and name != new_name and contact_keys({"name": name}).name == folded]
        db.update_fields(conn, child, [(rid, "contact", new_name) for rid, _ in rows], run_id=run_id)
        history += [(run_id, at, child.key, rid, "contact", name, new_name, None, who, how) for rid, name in rows]
    return history


def _names_a_choice(choice: str, candidates: int, words: set[str]) -> bool:
    """Whether what was typed into 採用 is one of its words (マスタ, 保留), a candidate (候補2, 2), or a
    候補 that does not exist; anything else there is the value to keep."""
    from xlcrm.master.masterbook import CANDIDATE

    word = choice.strip().casefold()
    if word in words:
        return True
    if word.isdigit():
        return 1 <= int(word) <= candidates
    return any(word.startswith(p.strip().casefold()) and word[len(p.strip()):].strip().isdigit()
               for p in CANDIDATE)


def parse_typed(col: Column, raw: Any) -> tuple[Any, str | None]:
    """A value typed into 採用する値, checked like a cell of ``col``: (stored value, problem code)."""
    if col.type == "choice":
        s = nz.text(raw)
        if s is None:
            return None, None
        key = col.choice_lookup().get(s.casefold())
        return (key, None) if key is not None else (None, "choice")
    if col.type in ("text", "name", "ref", "id"):
        return nz.text(raw), None
    parser = nz.PARSERS.get(col.type)
    if parser is None:
        return nz.text(raw), None
    value, problem = parser(raw)
    if problem is not None:
        return None, problem.code
    return db.to_db(col, value), None


def apply_decisions(conn: sqlite3.Connection, schema: Schema, decisions: Any, *, run_id: int,
                    now: dt.datetime, lang: Lang = "ja") -> ResolveReport:
    """Apply :class:`xlcrm.master.masterbook.Decisions` inside the caller's transaction."""
    from xlcrm.master.masterbook import CANDIDATE, KEEP_MASTER, LATER, admin_name

    rep = ResolveReport()
    at = now.isoformat(timespec="seconds")
    who = admin_name(lang)
    pairs = {p["pair_id"]: p for p in db.duplicates(conn)}
    for pair_id, action in sorted(decisions.duplicates.items()):
        p = pairs.get(pair_id)
        if p is None:
            continue  # decided before, or no longer pending
        if action == "merge":
            combine_customers(conn, schema, p["a_id"], p["b_id"], run_id=run_id, at=at, who=who,
                              how="decision", lang=lang, entity_key=p["entity"])
            db.decide_duplicate(conn, pair_id, "merged", run_id=run_id, at=at)
            rep.merged += 1
            # the merged-away record's other pairs now name the survivor, or closed (a group's pairs)
            pairs = {p["pair_id"]: p for p in db.duplicates(conn)}
        elif action == "different":
            db.decide_duplicate(conn, pair_id, "different", run_id=run_id, at=at)
            rep.different += 1
    items = {c["conflict_id"]: c for c in db.conflicts(conn)}
    keep_words = {w.casefold() for w in KEEP_MASTER}
    later_words = {w.casefold() for w in LATER}
    for cid, (choice, typed) in sorted(decisions.conflicts.items()):
        c = items.get(cid)
        if c is None:
            continue
        entity = schema.entity(c["entity"])
        if not entity.has(c["field"]):
            continue
        col = entity.column(c["field"])
        rid, state = survivor_of(conn, schema, c["entity"], c["record_id"])
        if state != "active":
            db.decide_conflict(conn, cid, "moot", None, run_id=run_id, at=at)
            continue
        if typed is None and choice is not None and not _names_a_choice(choice, len(c["values"]),
                                                                           keep_words | later_words):
            typed = choice  # a value typed into 採用 itself is the value to keep
        if typed is not None:
            value, problem = parse_typed(col, typed)
            if problem is not None:
                rep.warnings.append(f"競合 {cid}: {typed!r} is not a valid {col.label(lang)} ({problem}); "
                                    "left pending")
                continue
        elif choice is not None:
            word = choice.strip().casefold()
            if word in later_words:
                continue
            if word in keep_words:
                db.decide_conflict(conn, cid, "resolved", c["master_value"], run_id=run_id, at=at)
                rep.conflicts_resolved += 1
                continue
            n = None
            for prefix in CANDIDATE:
                p = prefix.strip().casefold()
                if word.startswith(p) and word[len(p):].strip().isdigit():
                    n = int(word[len(p):].strip())
            if word.isdigit():
                n = int(word)
            if n is None or not 1 <= n <= len(c["values"]):
                rep.warnings.append(f"競合 {cid}: {choice!r} names no candidate; left pending")
                continue
            value = c["values"][n - 1]["value"]
        else:
            continue
        current = (db.record(conn, entity, rid) or {}).get(col.key)
        if value != current:
            db.update_fields(conn, entity, [(rid, col.key, value)], run_id=run_id)
            if entity.has("updated_at"):
                db.update_fields(conn, entity, [(rid, "updated_at", at[:10])], run_id=run_id)
            db.add_history(conn, [(run_id, at, entity.key, rid, col.key, current, value, None, who, "decision")])
        db.decide_conflict(conn, cid, "resolved", value, run_id=run_id, at=at)
        rep.conflicts_resolved += 1
    dels = {d["deletion_id"]: d for d in db.deletions(conn)}
    for did, action in sorted(decisions.deletions.items()):
        d = dels.get(did)
        if d is None:
            continue
        if action == "delete":
            entity = schema.entity(d["entity"])
            rec = db.record(conn, entity, d["record_id"])
            if rec is not None and rec["_state"] == "active":
                db.set_state(conn, entity, d["record_id"], "deleted", run_id=run_id)
                db.add_history(conn, [(run_id, at, entity.key, d["record_id"], "_state", "active", "deleted",
                                       d["source_file"], who, "delete")])
                if entity.key == "customers":
                    _delete_attached(conn, schema, d["record_id"], run_id=run_id, at=at,
                                     source_file=d["source_file"], who=who)
            db.decide_deletion(conn, did, "deleted", run_id=run_id, at=at)
            rep.deleted += 1
        elif action == "keep":
            db.decide_deletion(conn, did, "kept", run_id=run_id, at=at)
            rep.kept += 1
    rep.applied = rep.merged + rep.different + rep.conflicts_resolved + rep.deleted + rep.kept
    return rep


def _delete_attached(conn: sqlite3.Connection, schema: Schema, customer_id: str, *, run_id: int, at: str,
                     source_file: str | None, who: str) -> None:
    """A customer's contacts, activities, deals and TODOs go with it: deleting a customer row in a
    workbook leaves its activities pointing at it, and they are decided together on 削除候補."""
    for entity in schema:
        if entity.key == "customers" or entity.ref_column is None:
            continue
        idk = entity.id_column.key
        for r in db.attached_records(conn, entity, [customer_id]):
            db.set_state(conn, entity, r[idk], "deleted", run_id=run_id)
            db.add_history(conn, [(run_id, at, entity.key, r[idk], "_state", "active", "deleted", source_file,
                                   who, "delete")])
