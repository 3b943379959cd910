"""Hand each salesperson a fresh workbook from the master: their customers and everything attached,
and their own activities, deals and TODOs on customers someone else owns (referenced by 顧客ID).

Each workbook gets a new id (in its very hidden meta sheet), and the values it was handed are stored
in the database as its *base*; the next merge compares the returned workbook with that base, so only
what the person changed counts as a change (three-way merge, see :mod:`xlcrm.master.merge`).  Bases of a
person's older workbooks are kept for the last :data:`KEEP_WORKBOOKS` distributions, so a workbook
someone kept using instead of the fresh one still merges three-way.

With ``password`` (the master's, see :mod:`xlcrm.master.masterbook`) the encrypted master is read and every
workbook handed out is encrypted with the same password (sealed before it replaces the file, so no
plain copy appears); the next merge opens them with it.  Without one they are plain workbooks.

Rows of a person's that the last merge rejected come back in their handout, each in place on its sheet
exactly as typed (a row with an ID where that record's row would be, the others below), with the same
red fill, comments and エラー一覧 sheet as the error workbook (:func:`xlcrm.intake.validate.annotate`): fixing
them there and sending the workbook in is all it takes.  Their base stays what the master holds, so a
fixed row is merged as a change (or as new), an unfixed one is rejected again and stays pending
(:func:`xlcrm.master.run.keep_rejected`).

Refuses while ``master.xlsx`` holds decisions or edits not yet taken in (``xlcrm resolve`` first):
handing out data that is about to change would only create conflicts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.schema import OWNER_DEFAULTED, Entity, Lang, Schema
from xlcrm.store import db, lock, outputs
from xlcrm.xlsx.writer import remove_leftovers, stage_beside

#: Distributed workbooks per person whose bases are kept.
KEEP_WORKBOOKS = 3

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]+')
#: UTF-8 bytes of the name part: file systems allow 255 bytes per name, and the temp files written
#: beside a handout (``.{name}.xxxxxxxx.tmp``, ``.{stem}.{pid}.plain.xlsx``) need room around it.
MAX_NAME_BYTES = 150


def file_name(owner: str, n: int = 1) -> str:
    """A file name for ``owner`` that every OS accepts (spaces kept, path characters replaced, a long
    name shortened); ``n`` > 1 numbers the second person of the same name."""
    name = (_UNSAFE.sub("_", owner).strip(" .") or "owner").encode()[:MAX_NAME_BYTES]
    text = name.decode("utf-8", "ignore").rstrip(" .") or "owner"
    return f"{text}_{n}.xlsx" if n > 1 else f"{text}.xlsx"


def _file_names(owners: Sequence[str], out: Path) -> dict[str, Path]:
    """Each owner's handout path in ``out``: distinct names even where two owners' names collide."""
    names: dict[str, Path] = {}
    used: set[str] = set()
    for owner in owners:
        name = file_name(owner)
        n = 2
        while name.casefold() in used:
            name = file_name(owner, n)
            n += 1
        used.add(name.casefold())
        names[owner] = out / name
    return names


def _rows(entity: Entity, records: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    keys = entity.keys
    dates = [i for i, c in enumerate(entity.columns) if c.type == "date"]
    out = []
    for r in records:
        vals = list(r)
        for i in dates:
            vals[i] = db.from_db(entity.columns[i], vals[i])
        out.append(dict(zip(keys, vals, strict=True)))
    return out


def distribute(master: str | Path, out_dir: str | Path, schema: Schema, *, owners: Sequence[str] | None = None,
               lang: Lang | None = None, now: dt.datetime | None = None,
               password: str | None = None, force: bool = False) -> list[Path]:
    """Write one workbook per 担当営業 into ``out_dir``; returns the paths written.

    Refuses while ``out_dir`` holds a handout whose edits were not merged yet, or a file at a handout's
    name that xlcrm did not write, unless ``force`` (a copy is kept beside each): :mod:`xlcrm.store.outputs`.
    """
    from xlcrm.master import masterbook

    master = Path(master)
    out = Path(out_dir)
    now = now or dt.datetime.now().replace(microsecond=0)
    outputs.check_master(master)
    with lock.master_lock(master, "distribute"):
        lock.refuse_if_open_in_excel(master)
        masterbook.check_master_password(master, password)
        conn = db.connect(db.db_path_for(master))
        try:
            conn.execute("BEGIN IMMEDIATE")
            with db.rollback_on_error(conn):
                db.create_tables(conn, schema)
                state = masterbook.read_master_state(master, conn, schema, edits=False, password=password)
                if state.decisions:
                    raise XlcrmError(f"{master.name} holds decisions not applied yet; run `xlcrm resolve "
                                     f"--master {master}` first", path=str(master))
                if masterbook.has_unread_changes(master, conn):
                    raise XlcrmError(f"{master.name} was changed after xlcrm wrote it (edits not merged yet); "
                                     f"run `xlcrm resolve --master {master}` first", path=str(master))
                out.mkdir(parents=True, exist_ok=True)
                # Every handout is written beside its place first and takes it only once the master
                # has recorded them all: a run that fails half-way (a full disk) leaves the folder as
                # it was, not some handouts the master does not know.
                staged: list[tuple[Path, Path]] = []
                claims: list[outputs.Claim] = []

                def claim(targets: list[Path]) -> outputs.Claim:
                    for target in targets:
                        remove_leftovers(target)  # of a killed run (this master's lock is ours)
                    claims.append(outputs.claim(targets, "handout", force=force, master=master, folder=out))
                    return claims[-1]

                try:
                    paths = _write_all(conn, schema, out, owners=owners, lang=lang, now=now,
                                       writer=functools.partial(write_handout, password=password),
                                       claim=claim, staged=staged)
                    db.commit(conn)
                except BaseException:
                    for _, tmp in staged:
                        tmp.unlink(missing_ok=True)
                    raise
            for path, tmp in staged:
                with claims[0].write(path):
                    os.replace(tmp, path)
        finally:
            conn.close()
    return paths


def write_handout(path: Path, schema: Schema, *, owner: str, lang: Lang, rows: dict[str, list[dict[str, Any]]],
                  workbook_id: str, created: dt.datetime, marks: Sequence[tuple[str, int, list[Any]]] = (),
                  password: str | None = None) -> Path:
    """The team workbook, with ``marks`` (entity, index into ``rows``, findings) annotated like an error
    workbook: the rejected rows handed back.  With ``password`` it is encrypted; the plain workbook is
    only ever in memory."""
    from xlcrm.intake.template import write_team_workbook

    if not marks:
        return write_team_workbook(path, schema, owner=owner, lang=lang, rows=rows, workbook_id=workbook_id,
                                   created=created, password=password)
    import io

    from xlsxwriter.utility import xl_col_to_name

    from xlcrm.intake.validate import Finding, ValidationResult, annotate
    from xlcrm.xlsx.reader import TeamWorkbook, WorkbookMeta

    plain = io.BytesIO()  # annotate reads the plain workbook from memory and writes the marked copy
    write_team_workbook(plain, schema, owner=owner, lang=lang, rows=rows, workbook_id=workbook_id, created=created)
    findings = []
    for ekey, index, found in marks:
        entity = schema.entity(ekey)
        sheet, row = entity.label(lang), index + 2  # data starts below the header row
        cells = rows[ekey][index]
        for key, severity, rule, message in found:
            known = entity.has(key)
            cell = f"{xl_col_to_name(entity.keys.index(key))}{row}" if known else ""
            findings.append(Finding(str(path), sheet, cell, row, entity.column(key).label(lang) if known else "",
                                    key, ekey, cells.get(key), rule, severity, message))
    annotate(ValidationResult(TeamWorkbook(path, WorkbookMeta(owner=owner, lang=lang), {}), schema, {},
                              findings, {}), path, source=plain, password=password)
    return path


def held_once(rejected: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each rejected row once, though several workbooks of the owner hold it (the handout and an old
    copy sent instead): a row is its ID, or without one its cells; a row typed twice in one workbook
    stays twice.  Of two versions of one ID's row the one merged last is kept."""
    by_source: dict[Any, dict[tuple[Any, ...], list[dict[str, Any]]]] = {}
    for r in rejected:
        same = (r["entity"], r["record_id"]) if r["record_id"] else (r["entity"], repr(sorted(r["cells"].items())))
        by_source.setdefault(r["source"], {}).setdefault(same, []).append(r)
    most: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    last_run = {s: max(r["run_id"] or 0 for rs in rows.values() for r in rs) for s, rows in by_source.items()}
    for _source, rows in sorted(by_source.items(), key=lambda kv: last_run[kv[0]]):
        for same, copies in rows.items():
            if len(copies) >= len(most.get(same, ())):
                most[same] = copies
    keep = {id(r) for copies in most.values() for r in copies}
    return [r for r in rejected if id(r) in keep]


def carry_back(schema: Schema, rows: dict[str, list[dict[str, Any]]], rejected: Sequence[dict[str, Any]]
               ) -> list[tuple[str, int, list[Any]]]:
    """Put ``rejected`` rows (:func:`xlcrm.store.db.rejected_rows`) into ``rows`` in place: a row with the ID
    of a row there replaces it, the others are added below.  Returns (entity, index, findings) marks."""
    marks: list[tuple[str, int, list[Any]]] = []
    at: dict[str, dict[Any, int]] = {}
    for r in rejected:
        ekey = r["entity"]
        if ekey not in rows:
            continue
        entity = schema.entity(ekey)
        idk = entity.id_column.key
        shown = rows[ekey]
        where = at.get(ekey)
        if where is None:
            where = at[ekey] = {row.get(idk): i for i, row in enumerate(shown)}
        cells = {k: v for k, v in r["cells"].items() if entity.has(k)}
        i = where.pop(r["record_id"], None) if r["record_id"] else None
        if i is None:
            i = len(shown)
            shown.append(cells)
        else:
            shown[i] = cells
        marks.append((ekey, i, r["findings"]))
    return marks


def _write_all(conn: Any, schema: Schema, out: Path, *, owners: Sequence[str] | None, lang: Lang | None,
               now: dt.datetime, writer: Any, claim: Any = None,
               staged: list[tuple[Path, Path]] | None = None) -> list[Path]:
    """Write a handout per owner; with ``staged``, into a temp file beside each (listed there as
    (path, temp)) for the caller to move into place after its commit."""
    customers = schema.entity("customers")
    cust_records = list(db.iter_records(conn, customers))
    active = {r[0] for r in cust_records}
    owner_i = customers.keys.index("owner")
    by_owner: dict[str, list[tuple[Any, ...]]] = {}
    for r in cust_records:
        by_owner.setdefault(r[owner_i] or "", []).append(r)
    if owners is not None:
        pending = db.rejected_owners(conn)
        missing = [o for o in owners if o not in by_owner and o not in pending]
        if missing:
            known = "、".join(sorted(o for o in by_owner if o)) or "(none)"
            raise XlcrmError(f"no customers with 担当営業 {', '.join(missing)}; known: {known}")
        wanted = list(owners)
    else:
        wanted = sorted(o for o in set(by_owner) | db.rejected_owners(conn) if o)
    children: dict[str, list[tuple[Any, ...]]] = {}
    for e in schema:
        if e.key != "customers":
            children[e.key] = list(db.iter_records(conn, e))
    langs = db.owner_langs(conn)
    paths: list[Path] = []
    targets = _file_names(wanted, out)
    guard = claim(list(targets.values())) if claim is not None else None
    for owner in wanted:
        mine = by_owner.get(owner, [])
        ids = {r[0] for r in mine}
        rows: dict[str, list[tuple[Any, ...]]] = {"customers": mine}
        for e in schema:
            if e.key == "customers":
                continue
            ref = e.ref_column
            ri = e.keys.index(ref.key) if ref is not None else None
            own_key = OWNER_DEFAULTED.get(e.key)
            oi = e.keys.index(own_key) if own_key and e.has(own_key) else None
            # Everything on the owner's customers, and the owner's own rows on anyone else's (an
            # activity on a colleague's customer, referenced by its ID) or on no customer.
            rows[e.key] = [r for r in children[e.key]
                           if (ri is not None and r[ri] in ids)
                           or (oi is not None and r[oi] == owner
                               and (ri is None or r[ri] is None or r[ri] in active))]
        path = targets[owner]
        wid = uuid.uuid4().hex
        wlang: Lang = lang or ("en" if langs.get(owner) == "en" else "ja")
        shown = {k: _rows(schema.entity(k), v) for k, v in rows.items()}
        pending = held_once(db.rejected_rows(conn, owner))
        marks = carry_back(schema, shown, pending)
        if staged is not None:
            tmp = stage_beside(path)
            staged.append((path, tmp))
            try:
                writer(tmp, schema, owner=owner, lang=wlang, rows=shown, workbook_id=wid, created=now,
                       marks=marks)
            except XlcrmError as exc:
                if exc.path != str(tmp):
                    raise
                raise exc.about(str(path)) from None
        else:
            with guard.write(path) if guard is not None else contextlib.nullcontext():
                writer(path, schema, owner=owner, lang=wlang, rows=shown, workbook_id=wid, created=now,
                       marks=marks)
        for e in schema:
            db.save_base(conn, e, wid, rows[e.key])
        db.hand_back_rejected_rows(conn, owner, wid, pending)
        db.register_workbook(conn, wid, kind="distributed", owner=owner, lang=wlang,
                             created=now.isoformat(timespec="seconds"), path=str(path), run_id=None)
        db.prune_workbooks(conn, schema, owner, KEEP_WORKBOOKS)
        paths.append(path)
    return paths
