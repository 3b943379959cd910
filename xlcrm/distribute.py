"""Hand each salesperson a fresh workbook from the master: their customers and everything attached,
and their own activities, deals and TODOs on customers someone else owns (referenced by 顧客ID).

Each workbook gets a new id (in its very hidden meta sheet), and the values it was handed are stored
in the database as its *base*; the next merge compares the returned workbook with that base, so only
what the person changed counts as a change (three-way merge, see :mod:`xlcrm.merge`).  Bases of a
person's older workbooks are kept for the last :data:`KEEP_WORKBOOKS` distributions, so a workbook
someone kept using instead of the fresh one still merges three-way.

With ``password`` (the master's, see :mod:`xlcrm.masterbook`) the encrypted master is read and every
workbook handed out is encrypted with the same password (sealed before it replaces the file, so no
plain copy appears); the next merge opens them with it.  Without one they are plain workbooks.

Refuses while ``master.xlsx`` holds decisions or edits not yet taken in (``xlcrm resolve`` first):
handing out data that is about to change would only create conflicts.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlcrm import db
from xlcrm.errors import XlcrmError
from xlcrm.schema import OWNER_DEFAULTED, Entity, Lang, Schema

#: Distributed workbooks per person whose bases are kept.
KEEP_WORKBOOKS = 3

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')


def file_name(owner: str) -> str:
    """A file name for ``owner`` that every OS accepts (spaces kept, path characters replaced)."""
    name = _UNSAFE.sub("_", owner).strip(" .") or "owner"
    return f"{name[:80]}.xlsx"


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
               password: str | None = None) -> list[Path]:
    """Write one workbook per 担当営業 into ``out_dir``; returns the paths written."""
    from xlcrm import lock, masterbook
    from xlcrm.template import write_team_workbook

    master = Path(master)
    out = Path(out_dir)
    now = now or dt.datetime.now().replace(microsecond=0)
    with lock.master_lock(master, "distribute"):
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
                paths = _write_all(conn, schema, out, owners=owners, lang=lang, now=now,
                                   writer=_sealed(write_team_workbook, password))
                conn.execute("COMMIT")
        finally:
            conn.close()
    return paths


def _sealed(writer: Any, password: str | None) -> Any:
    """``writer`` as is, or writing into a temp file that is encrypted before it replaces the target."""
    if not password:
        return writer

    def write(path: Path, *args: Any, **kw: Any) -> Path:
        from xlcrm.crypto import protect_file
        from xlcrm.writer import atomic_write

        with atomic_write(path) as tmp:
            writer(tmp, *args, **kw)
            protect_file(tmp, password)
        return path

    return write


def _write_all(conn: Any, schema: Schema, out: Path, *, owners: Sequence[str] | None, lang: Lang | None,
               now: dt.datetime, writer: Any) -> list[Path]:
    customers = schema.entity("customers")
    cust_records = list(db.iter_records(conn, customers))
    active = {r[0] for r in cust_records}
    owner_i = customers.keys.index("owner")
    by_owner: dict[str, list[tuple[Any, ...]]] = {}
    for r in cust_records:
        by_owner.setdefault(r[owner_i] or "", []).append(r)
    if owners is not None:
        missing = [o for o in owners if o not in by_owner]
        if missing:
            known = "、".join(sorted(o for o in by_owner if o)) or "(none)"
            raise XlcrmError(f"no customers with 担当営業 {', '.join(missing)}; known: {known}")
        wanted = list(owners)
    else:
        wanted = sorted(o for o in by_owner if o)
    children: dict[str, list[tuple[Any, ...]]] = {}
    for e in schema:
        if e.key != "customers":
            children[e.key] = list(db.iter_records(conn, e))
    langs = db.owner_langs(conn)
    paths: list[Path] = []
    used: set[str] = set()
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
        name = file_name(owner)
        n = 2
        while name.casefold() in used:
            name = file_name(f"{owner}_{n}")
            n += 1
        used.add(name.casefold())
        path = out / name
        wid = uuid.uuid4().hex
        wlang: Lang = lang or ("en" if langs.get(owner) == "en" else "ja")
        writer(path, schema, owner=owner, lang=wlang,
               rows={k: _rows(schema.entity(k), v) for k, v in rows.items()}, workbook_id=wid, created=now)
        for e in schema:
            db.save_base(conn, e, wid, rows[e.key])
        db.register_workbook(conn, wid, kind="distributed", owner=owner, lang=wlang,
                             created=now.isoformat(timespec="seconds"), path=str(path), run_id=None)
        db.prune_workbooks(conn, schema, owner, KEEP_WORKBOOKS)
        paths.append(path)
    return paths
