"""The master workbook people open: written from the database after every change, read back for decisions.

``master.xlsx`` is a view of ``master.db``, regenerated after every merge (temp file, then
``os.replace``), with the five entity sheets (protected against accidental edits) and the review
sheets 重複候補, 競合, 削除候補 (each with an unlocked decision column), 変更履歴 and 取込ログ, plus
提供記録 (the third-party provision record of :mod:`xlcrm.views.export`) once there is one.

**Passwords.** With ``password`` the workbook is built in memory and encrypted with Excel's own
encryption there (:func:`xlcrm.xlsx.writer.sealed`); only the sealed bytes go into the atomic write's temp
file, so no plain copy ever reaches the disk.  Every read of it (decisions, the admin's edits) decrypts first.  A command that
rewrites an encrypted master refuses without the right password: writing it plain would drop the
protection, writing it with another password would lock the owner out.  The database's meta
``master_encrypted`` remembers the choice, so ``export-master`` of a lost encrypted workbook asks for
the password too; removing the password in Excel (and saving) is how protection is turned off.
``master.db`` itself is not encrypted: protect it with the file system (or disk encryption).

Two things flow back from it:

* **Decisions** typed into the review sheets' decision columns; they are keyed by the pair / conflict
  / deletion number, which the database keeps, so they stay valid whatever changed since.
* **The admin's own edits** of records.  The very hidden meta sheet carries the database's id and a
  generation number that grows with every write; while the workbook's generation equals the
  database's, "what was written" is exactly the database's current content, so the edits are found
  three-way against it (merge treats the workbook as one more input whose base is the database).  A
  stale workbook (the database changed after it was written, e.g. a crash between the commit and the
  file replace) is not read for edits: that would undo newer changes; the user is told instead.

The file's size and modification time are stored after each write; an untouched workbook is not read
at all, which keeps a re-merge fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlcrm.errors import LockedError, XlcrmError
from xlcrm.schema import Column, Entity, Lang, Schema
from xlcrm.store import backup, db, lock, outputs, snapshot
from xlcrm.store.provisions import provision_sheet
from xlcrm.xlsx import crypto
from xlcrm.xlsx.marks import meta_values
from xlcrm.xlsx.writer import (
    TableColumn,
    XlcrmWorkbook,
    atomic_write,
    close_workbook,
    open_workbook,
    sealed,
    settle,
    write_table,
    write_text,
)

#: Rows of 変更履歴 written into the workbook (newest first); the database keeps every row.
HISTORY_SHEET_ROWS = 20_000
#: Runs shown on 取込ログ.
IMPORT_LOG_RUNS = 50

SHEETS: dict[str, tuple[str, str]] = {
    "duplicates": ("重複候補", "Possible duplicates"),
    "conflicts": ("競合", "Conflicts"),
    "deletions": ("削除候補", "Deleted rows"),
    "history": ("変更履歴", "Change history"),
    "import_log": ("取込ログ", "Import log"),
    "provisions": ("提供記録", "Third-party provision"),
}

#: Decision words accepted in either language (case-folded) -> action.
DUPLICATE_DECISIONS = {"統合": "merge", "merge": "merge", "別": "different", "別人": "different",
                       "別会社": "different", "different": "different", "保留": "later", "later": "later"}
DELETION_DECISIONS = {"削除": "delete", "delete": "delete", "残す": "keep", "keep": "keep", "保留": "later",
                      "later": "later"}
KEEP_MASTER = ("マスタ", "Master")
CANDIDATE = ("候補", "Candidate ")
LATER = ("保留", "Later")

_H: dict[str, tuple[str, str]] = {
    "decision": ("判断", "Decision"),
    "pair": ("候補番号", "Pair no."),
    "group": ("グループ", "Group"),
    "score": ("スコア", "Score"),
    "evidence": ("根拠", "Evidence"),
    "choose": ("採用", "Keep"),
    "value": ("採用する値（直接入力）", "Value to keep (typed)"),
    "conflict": ("競合番号", "Conflict no."),
    "sheet": ("シート", "Sheet"),
    "id": ("ID", "ID"),
    "record": ("名称", "Record"),
    "field": ("項目", "Field"),
    "master": ("マスタの値", "Master value"),
    "cand": ("候補{n}", "Candidate {n}"),
    "cand_who": ("候補{n} 入力者", "Candidate {n} by"),
    "cand_at": ("候補{n} 日時", "Candidate {n} when"),
    "cand_file": ("候補{n} ブック", "Candidate {n} workbook"),
    "deletion": ("番号", "No."),
    "workbook": ("ブック", "Workbook"),
    "who": ("入力者", "Who"),
    "run": ("取込", "Run"),
    "at": ("日時", "When"),
    "old": ("旧値", "Old value"),
    "new": ("新値", "New value"),
    "source": ("取込元ファイル", "Source file"),
    "how": ("種別", "How"),
    "file": ("ファイル", "File"),
    "status": ("状態", "Status"),
    "rows_read": ("読込", "Read"),
    "new_rows": ("新規", "New"),
    "updated": ("更新", "Updated"),
    "unchanged": ("変更なし", "Unchanged"),
    "linked": ("リンク", "Linked"),
    "rejected": ("却下", "Rejected"),
    "conflicts": ("競合", "Conflicts"),
    "error_workbook": ("エラーブック", "Error workbook"),
    "message": ("メッセージ", "Message"),
}

_HOW = {"new": ("新規", "New"), "edit": ("変更", "Edit"), "link": ("重複リンク", "Duplicate link"),
        "merge": ("統合", "Merge"), "decision": ("判断", "Decision"), "delete": ("削除", "Deleted")}
_STATUS = {"ok": ("正常", "OK"), "errors": ("エラーあり", "Errors"), "rejected": ("全体を却下", "Rejected"),
           "unreadable": ("読めません", "Unreadable")}


def _h(key: str, lang: Lang, **kw: Any) -> str:
    ja, en = _H[key]
    return (ja if lang == "ja" else en).format(**kw)


def _pick(pair: tuple[str, str], lang: Lang) -> str:
    return pair[0] if lang == "ja" else pair[1]


def master_lang(schema: Schema) -> Lang:
    """The language of the master workbook and its messages: ``[settings] master_lang`` (ja unless en)."""
    lang = str(schema.settings.get("master_lang", "ja")) if schema.settings else "ja"
    return "en" if lang == "en" else "ja"


def admin_name(lang: Lang) -> str:
    return "管理者" if lang == "ja" else "admin"


# --- identity of a written workbook -----------------------------------------------------------------

def master_uuid(conn: sqlite3.Connection) -> str:
    value = db.get_meta(conn, "master_uuid")
    if value is None:
        value = uuid.uuid4().hex
        db.set_meta(conn, "master_uuid", value)
    return value


def workbook_id(conn: sqlite3.Connection, generation: int) -> str:
    return f"master:{master_uuid(conn)}:{generation}"


def parse_workbook_id(text: str) -> tuple[str, int] | None:
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != "master" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _stat(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _digest(path: Path) -> str:
    """The content of master.xlsx as xlcrm wrote it: a copy (cp, a NAS restore, a cloud sync) has
    another file time but the same bytes, and is not an admin's edit."""
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "blake2b").hexdigest()


def _as_written(master: Path, conn: sqlite3.Connection) -> bool:
    """Is ``master.xlsx`` what xlcrm last wrote?  Its size and file time say so cheaply; when they
    differ, its content decides."""
    stored = db.get_meta(conn, "master_stat")
    if stored is not None and stored == _stat(master):
        return True
    digest = db.get_meta(conn, "master_digest")
    return digest is not None and digest == _digest(master)


# --- writing ----------------------------------------------------------------------------------------

class _LazyRows:
    """Rows of one entity as value lists in ``entity.keys`` order, read while the writer consumes them.

    ``values_in_entity_order`` tells :func:`xlcrm.xlsx.writer.write_entity_table` to take them as they are
    (no dict per record; 400k records).  ISO date text becomes ``date`` (an odd text stays as it is).
    """

    values_in_entity_order = True

    def __init__(self, conn: sqlite3.Connection, entity: Entity, count: int) -> None:
        self.conn, self.entity, self.count = conn, entity, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> list[Any]:  # pragma: no cover - Sequence protocol only
        raise TypeError("rows are streamed; iterate instead")

    def __iter__(self) -> Iterator[list[Any] | tuple[Any, ...]]:
        dates = [i for i, c in enumerate(self.entity.columns) if c.type == "date"]
        records = db.iter_records(self.conn, self.entity)
        if not dates:
            yield from records
            return
        days: dict[str, Any] = {}  # the same few thousand days recur on every sheet
        get = days.get
        fromiso = dt.date.fromisoformat
        for r in records:
            vals = list(r)
            for i in dates:
                v = vals[i]
                if v is not None:
                    day = get(v)
                    if day is None:
                        try:
                            day = fromiso(v)
                        except (TypeError, ValueError):
                            day = v
                        if isinstance(v, str):
                            days[v] = day
                    vals[i] = day
            yield vals


def write_master(conn: sqlite3.Connection, path: Path, schema: Schema, *, lang: Lang, wb_id: str,
                 created: dt.datetime | None = None) -> None:
    """Write the whole master workbook from the database into ``path`` (a temp file)."""
    from xlcrm.intake.template import add_meta_sheet, add_standard_sheets

    wb = open_workbook(path, created=created, title="顧客マスタ" if lang == "ja" else "Customer master",
                       author="xlcrm")
    rows = {e.key: _LazyRows(conn, e, db.count_active(conn, e)) for e in schema}
    add_standard_sheets(wb, schema, lang=lang, owner=admin_name(lang), rows=rows, validation_rows=0,
                        protect=True, customer_labels=False)
    names = _names(conn, schema)
    _duplicates_sheet(wb, conn, schema, lang)
    _conflicts_sheet(wb, conn, schema, lang, names)
    _deletions_sheet(wb, conn, schema, lang, names)
    _history_sheet(wb, conn, schema, lang)
    _import_log_sheet(wb, conn, schema, lang)
    _provisions_sheet(wb, conn, schema, lang)
    add_meta_sheet(wb, schema, owner=admin_name(lang), lang=lang, workbook_id=wb_id)
    close_workbook(wb)


def check_master_password(master: Path, password: str | None, conn: sqlite3.Connection | None = None) -> bool:
    """Refuse (one line) before any work when the master is encrypted and the password is missing/wrong.

    Returns whether the master workbook is (or, when it is missing, was last written) encrypted.
    """
    master = Path(master)
    if master.exists():
        return crypto.check_file_password(master, password)
    if conn is not None and db.get_meta(conn, "master_encrypted") == "1" and not password:
        raise XlcrmError(f"{master.name} was written encrypted; give --password (or set "
                         f"{crypto.PASSWORD_ENV}) to write it again", path=str(master))
    return False


def check_writable(master: Path) -> None:
    """Refuse (one line, nothing changed) when master.db, master.xlsx or their folder cannot be written.

    Checked before any work and again right before the commit: a database committed ahead of a
    workbook that cannot replace the old one would leave the two disagreeing.
    """
    master = Path(master)
    folder = master.parent if str(master.parent) else Path(".")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise XlcrmError(f"the folder {folder} is read-only for this user; make it writable and run again "
                         "(nothing was changed)", path=str(master))
    for path in (db.db_path_for(master), master):
        if path.exists() and not os.access(path, os.W_OK):
            raise XlcrmError("the file is read-only; make it writable (file properties / chmod u+w) and "
                             "run again (nothing was changed)", path=str(path))


def write_and_commit(conn: sqlite3.Connection, master: Path, schema: Schema, *, lang: Lang,
                     progress: Callable[[str, int, int], None] | None = None,
                     password: str | None = None, meanwhile: Callable[[], None] | None = None,
                     meanwhile_heavy: bool = False, persist: Path | None = None,
                     on_commit: Callable[[], None] | None = None) -> dict[str, float]:
    """Bump the generation, write the workbook to a temp file, COMMIT, then replace ``master``.

    The commit happens before the replace: if the process dies in between, the database is new and
    the workbook old; the generation check then refuses to read stale edits from it and the next
    command rewrites it.  If writing fails, the transaction is rolled back by the caller and both
    files stay as they were.  With ``password`` only encrypted bytes reach the temp file.

    ``meanwhile`` is more work for the same transaction that the workbook does not show (merge's
    search index).  When it is ``meanwhile_heavy`` (a full index build) and the master is large, the
    two run at the same time in two processes (:mod:`xlcrm.store.snapshot`), so both cores work; otherwise
    one after the other: the fork (and for a database file, its copy: about 1 s for a 400 MB master)
    would cost more than a small job saves.

    ``persist``: ``conn`` is a master database built in memory (:func:`xlcrm.store.db.memory_master`) that
    becomes this file, written to a temp file beside it; replacing the file is the commit, after the
    workbook is complete and before it replaces ``master`` (the order of a commit on disk).  Forked,
    the child builds the index into its copy of the database and writes that copy, while this process
    writes the workbook from its own.  A database file is the other way round: the child writes the
    workbook from a copy of the transaction, and the index goes into the file here.

    ``on_commit`` is called once the database has committed: a failure before (a full disk while
    committing included) leaves it as it was, so the caller may undo what else the run wrote.

    Returns seconds spent: ``search_index`` (``meanwhile``), ``master_workbook`` and ``master_db``.
    """
    if not password:
        check_master_password(master, None, conn)  # never silently drop an encrypted master's protection
    check_writable(master)
    db.set_meta(conn, "master_encrypted", "1" if password else "0")
    generation = int(db.get_meta(conn, "master_generation", "0") or 0) + 1
    db.set_meta(conn, "master_generation", str(generation))
    wb_id = workbook_id(conn, generation)
    if progress:
        progress("master.xlsx", 0, 1)
    timings: dict[str, float] = {}
    fork = meanwhile is not None and meanwhile_heavy and snapshot.available() and \
        sum(db.count_active(conn, e) for e in schema) >= snapshot.MIN_ROWS

    def timed(name: str, work: Callable[[], None]) -> dict[str, float]:
        started = time.perf_counter()
        work()
        return {name: round(time.perf_counter() - started, 3)}

    committed = False
    try:
        with atomic_write(master) as tmp:
            def write(c: sqlite3.Connection) -> dict[str, float]:
                def work() -> None:
                    with sealed(tmp, password) as target:
                        write_master(c, target, schema, lang=lang, wb_id=wb_id)
                return timed("master_workbook", work)

            def index() -> dict[str, float]:
                return timed("search_index", meanwhile) if meanwhile is not None else {}

            job = None
            try:
                if persist is not None:
                    with atomic_write(persist) as db_tmp:
                        def index_and_image(c: sqlite3.Connection) -> dict[str, float]:
                            out = index()
                            # This database is one process's alone: ending its transaction commits
                            # nothing yet (a failure still leaves no trace); replacing the file does.
                            c.execute("COMMIT")
                            return {**out, **timed("master_db", lambda: db.save_image(c, db_tmp))}

                        if fork:
                            with contextlib.suppress(OSError, MemoryError):  # no fork: one after the other
                                job = snapshot.ForkedJob(conn, index_and_image)
                        timings.update(write(conn))
                        settle(tmp, master)  # the workbook is complete on disk before the commit
                        timings.update(job.wait() if job is not None else index_and_image(conn))
                        check_writable(master)
                    if conn.in_transaction:
                        conn.execute("COMMIT")  # this process's copy (the child wrote the file)
                else:
                    if fork:
                        with contextlib.suppress(OSError, MemoryError):  # no fork: in-process
                            job = snapshot.ForkedJob(conn, write)
                    timings.update(index())
                    timings.update(job.wait() if job is not None else write(conn))
                    settle(tmp, master)  # the workbook is complete on disk before the commit
                    check_writable(master)
                    db.commit(conn)
                committed = True
                if on_commit is not None:
                    on_commit()
            except BaseException:
                if job is not None:
                    job.kill()  # (a child already waited for is not killed again)
                raise
    except LockedError as exc:
        if committed:
            raise LockedError(f"{exc}; the database was updated — close the workbook and run "
                              "`xlcrm export-master` to rewrite it") from None
        raise
    except XlcrmError as exc:
        if committed:
            raise XlcrmError(f"{exc}; master.db was updated but {master.name} could not be replaced — run "
                             f"`xlcrm export-master --master {master}` to rewrite it") from None
        raise
    if progress:
        progress("master.xlsx", 1, 1)
    # Only lets the next run skip reading an untouched workbook: a failure here (a full disk) costs
    # that run a read, never data.
    with contextlib.suppress(sqlite3.Error, OSError, XlcrmError):
        target = db.connect(persist) if persist is not None else conn
        try:
            with db.transaction(target):
                db.set_meta(target, "master_stat", _stat(master))
                db.set_meta(target, "master_digest", _digest(master))
        finally:
            if target is not conn:
                target.close()
    return timings


def export_master(master: str | Path, schema: Schema, *, lang: Lang | None = None,
                  password: str | None = None) -> Path:
    """Rebuild ``master.xlsx`` from ``master.db`` (a lost or damaged workbook, or after other changes).

    Edits typed into the old workbook and not merged yet are not carried over: run ``xlcrm resolve``
    or a merge first when there are any.
    """
    master = Path(master)
    outputs.check_master(master)  # never rebuilt over a team workbook or any other file
    lang = lang or master_lang(schema)
    with lock.master_lock(master, "export-master"):
        lock.refuse_if_open_in_excel(master)
        check_master_password(master, password)
        check_writable(master)
        conn = db.connect(db.db_path_for(master))
        try:
            # The workbook being replaced may hold unmerged edits: a copy is kept when it is replaced.
            with backup.taken(master, None) if master.exists() else contextlib.nullcontext() as made:
                conn.execute("BEGIN IMMEDIATE")
                with db.rollback_on_error(conn):
                    db.create_tables(conn, schema)
                    write_and_commit(conn, master, schema, lang=lang, password=password,
                                     on_commit=made.committed if made is not None else None)
        finally:
            conn.close()
    return master


# --- review sheets ----------------------------------------------------------------------------------

def _label_value(col: Column | None, value: Any, lang: Lang) -> Any:
    """A stored value as the sheet shows it: choice labels, dates as dates."""
    if col is None or value is None:
        return value
    if col.type == "choice":
        return col.choice_label(str(value), lang)
    if col.type == "date" and isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return value
    return value


def display_column(entity: Entity) -> str | None:
    """The column that names a record for a person (顧客名, 案件名, 内容 ...)."""
    for c in entity.columns:
        if c.type in ("name", "text") and c.required:
            return c.key
    return None


def _names(conn: sqlite3.Connection, schema: Schema) -> dict[tuple[str, str], str]:
    """(entity, id) -> display name, for records the review sheets mention."""
    wanted: dict[str, set[str]] = {}
    for c in db.conflicts(conn):
        wanted.setdefault(c["entity"], set()).add(c["record_id"])
    for d in db.deletions(conn):
        wanted.setdefault(d["entity"], set()).add(d["record_id"])
    out: dict[tuple[str, str], str] = {}
    for ekey, ids in wanted.items():
        entity = schema.entity(ekey)
        col = display_column(entity)
        if col is None:
            continue
        for rid in ids:
            rec = db.record(conn, entity, rid)
            if rec and rec.get(col):
                out[(ekey, rid)] = str(rec[col])
    return out


def _decision_column(header: str, choices: Sequence[str], width: float = 12) -> TableColumn:
    return TableColumn(header=header, width=width, locked=False,
                       validation={"validate": "list", "source": list(choices), "ignore_blank": True,
                                   "error_type": "warning"})


def _protect(ws: Any) -> None:
    ws.protect("", {"autofilter": True, "sort": True, "format_columns": True, "format_rows": True})


def _compare_columns(schema: Schema) -> list[Column]:
    customers = schema.entity("customers")
    keys = ("name", "kana", "corporate_number", "phone", "email", "prefecture", "address", "owner")
    return [customers.column(k) for k in keys if customers.has(k)]


def _duplicates_sheet(wb: XlcrmWorkbook, conn: sqlite3.Connection, schema: Schema, lang: Lang) -> None:
    ws = wb.add_worksheet(_pick(SHEETS["duplicates"], lang))
    compare = _compare_columns(schema)
    choices = ["統合", "別", "保留"] if lang == "ja" else ["Merge", "Different", "Later"]
    columns = [_decision_column(_h("decision", lang), choices), TableColumn(_h("pair", lang), 10, key="pair"),
               TableColumn(_h("group", lang), 10), TableColumn(_h("score", lang), 8, "0.00"),
               TableColumn(_h("evidence", lang), 40),
               TableColumn(_h("workbook", lang), 20), TableColumn("ID (A)", 11), TableColumn("ID (B)", 11)]
    for c in compare:
        columns += [TableColumn(f"{c.label(lang)} (A)", c.width), TableColumn(f"{c.label(lang)} (B)", c.width)]
    pairs = db.duplicates(conn)
    groups = duplicate_groups(pairs)
    pairs.sort(key=lambda p: (groups[p["pair_id"]], p["pair_id"]))
    cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    def rec(ekey: str, rid: str) -> dict[str, Any]:
        if (ekey, rid) not in cache:
            cache[(ekey, rid)] = db.record(conn, schema.entity(ekey), rid)
        return cache[(ekey, rid)] or {}

    rows = []
    for p in pairs:
        a, b = rec(p["entity"], p["a_id"]), rec(p["entity"], p["b_id"])
        row: list[Any] = [None, p["pair_id"], groups[p["pair_id"]], p["score"], " / ".join(p["evidence"]),
                          p["source_file"], p["a_id"], p["b_id"]]
        for c in compare:
            row += [_label_value(c, a.get(c.key), lang), _label_value(c, b.get(c.key), lang)]
        rows.append(row)
    write_table(wb, ws, "tbl_duplicates", columns, rows)
    _protect(ws)


def duplicate_groups(pairs: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Pair number -> group number: pairs that share a record, directly or through others, are one
    group (records that all look alike), numbered 1, 2, ... in the order of their first pair."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    ordered = sorted(pairs, key=lambda p: p["pair_id"])
    for p in ordered:
        a, b = root((p["entity"], p["a_id"])), root((p["entity"], p["b_id"]))
        if a != b:
            parent[b] = a
    numbers: dict[tuple[str, str], int] = {}
    out: dict[int, int] = {}
    for p in ordered:
        r = root((p["entity"], p["a_id"]))
        out[p["pair_id"]] = numbers.setdefault(r, len(numbers) + 1)
    return out


def _conflicts_sheet(wb: XlcrmWorkbook, conn: sqlite3.Connection, schema: Schema, lang: Lang,
                     names: Mapping[tuple[str, str], str]) -> None:
    ws = wb.add_worksheet(_pick(SHEETS["conflicts"], lang))
    items = db.conflicts(conn)
    k = max([2, *(len(c["values"]) for c in items)])
    choices = [_pick(KEEP_MASTER, lang), *(f"{_pick(CANDIDATE, lang)}{n}" for n in range(1, k + 1)),
               _pick(LATER, lang)]
    columns = [_decision_column(_h("choose", lang), choices, 12),
               TableColumn(_h("value", lang), 20, locked=False),
               TableColumn(_h("conflict", lang), 10), TableColumn(_h("sheet", lang), 10),
               TableColumn(_h("id", lang), 11), TableColumn(_h("record", lang), 24),
               TableColumn(_h("field", lang), 14), TableColumn(_h("master", lang), 20)]
    for n in range(1, k + 1):
        columns += [TableColumn(_h("cand", lang, n=n), 20), TableColumn(_h("cand_who", lang, n=n), 12),
                    TableColumn(_h("cand_at", lang, n=n), 17), TableColumn(_h("cand_file", lang, n=n), 20)]
    rows = []
    for c in items:
        entity = schema.entity(c["entity"])
        col = entity.column(c["field"]) if entity.has(c["field"]) else None
        row: list[Any] = [None, None, c["conflict_id"], entity.label(lang), c["record_id"],
                          names.get((c["entity"], c["record_id"])),
                          col.label(lang) if col else c["field"], _text(_label_value(col, c["master_value"], lang))]
        for v in c["values"]:
            row += [_text(_label_value(col, v["value"], lang)), v["who"], (v["at"] or "").replace("T", " "),
                    v["source_file"]]
        row += [None] * (len(columns) - len(row))
        rows.append(row)
    write_table(wb, ws, "tbl_conflicts", columns, rows)
    _protect(ws)


def _text(v: Any) -> Any:
    """Competing values side by side read best as text (a date next to a blank stays a date)."""
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def _deletions_sheet(wb: XlcrmWorkbook, conn: sqlite3.Connection, schema: Schema, lang: Lang,
                     names: Mapping[tuple[str, str], str]) -> None:
    ws = wb.add_worksheet(_pick(SHEETS["deletions"], lang))
    choices = ["削除", "残す", "保留"] if lang == "ja" else ["Delete", "Keep", "Later"]
    columns = [_decision_column(_h("decision", lang), choices), TableColumn(_h("deletion", lang), 8),
               TableColumn(_h("sheet", lang), 10), TableColumn(_h("id", lang), 11),
               TableColumn(_h("record", lang), 28), TableColumn(_h("workbook", lang), 28),
               TableColumn(_h("who", lang), 12), TableColumn(_h("run", lang), 8)]
    pending = db.deletions(conn)
    # A customer deleted takes what is attached to it (resolve): the row says so, so it is decided together.
    customers = [d["record_id"] for d in pending if d["entity"] == "customers"]
    attached = {e: db.attached_counts(conn, e, customers) for e in schema if e.key != "customers" and e.ref_column}

    def record(d: Mapping[str, Any]) -> Any:
        name = names.get((d["entity"], d["record_id"]))
        if d["entity"] != "customers":
            return name
        parts = [(e.label(lang), n[d["record_id"]]) for e, n in attached.items() if d["record_id"] in n]
        if not parts:
            return name
        if lang == "ja":
            return f"{name or ''}（{'・'.join(f'{label} {n}件' for label, n in parts)} も一緒に削除）"
        return f"{name or ''} (with {', '.join(f'{n} {label}' for label, n in parts)})"

    rows = [[None, d["deletion_id"], schema.entity(d["entity"]).label(lang), d["record_id"], record(d),
             d["source_file"], d["who"], d["run_id"]] for d in pending]
    write_table(wb, ws, "tbl_deletions", columns, rows)
    _protect(ws)


def _history_sheet(wb: XlcrmWorkbook, conn: sqlite3.Connection, schema: Schema, lang: Lang) -> None:
    ws = wb.add_worksheet(_pick(SHEETS["history"], lang))
    columns = [TableColumn(_h("at", lang), 17), TableColumn(_h("run", lang), 7), TableColumn(_h("sheet", lang), 10),
               TableColumn(_h("id", lang), 11), TableColumn(_h("field", lang), 14),
               TableColumn(_h("old", lang), 22), TableColumn(_h("new", lang), 22),
               TableColumn(_h("source", lang), 24), TableColumn(_h("who", lang), 12),
               TableColumn(_h("how", lang), 12)]
    ents = {e.key: e for e in schema}

    def gen() -> Iterator[list[Any]]:
        for _hid, run_id, at, ekey, rid, fld, old, new, src, who, how in db.history_rows(
                conn, HISTORY_SHEET_ROWS):
            entity = ents.get(ekey)
            col = entity.column(fld) if entity is not None and fld and entity.has(fld) else None
            old_v = col.choice_label(old, lang) if col is not None and col.type == "choice" else old
            new_v = col.choice_label(new, lang) if col is not None and col.type == "choice" else new
            yield [(at or "").replace("T", " "), run_id, entity.label(lang) if entity else ekey, rid,
                   col.label(lang) if col else fld, old_v, new_v, src, who,
                   _pick(_HOW[how], lang) if how in _HOW else how]

    n = write_table(wb, ws, "tbl_history", columns, gen())
    total = db.history_count(conn)
    if total > n:
        note = (f"最新 {n:,} 行を表示（全 {total:,} 行は master.db にあります: xlcrm history）" if lang == "ja"
                else f"Newest {n:,} rows shown ({total:,} in master.db: xlcrm history)")
        write_text(ws, 0, len(columns) + 1, note, wb, italic=True)
    _protect(ws)


def _import_log_sheet(wb: XlcrmWorkbook, conn: sqlite3.Connection, schema: Schema, lang: Lang) -> None:
    ws = wb.add_worksheet(_pick(SHEETS["import_log"], lang))
    heads = ("run", "at", "file", "sheet", "status", "rows_read", "new_rows", "updated", "unchanged", "linked",
             "rejected", "conflicts", "error_workbook", "message")
    widths = (7, 17, 30, 10, 10, 8, 8, 8, 9, 8, 8, 8, 30, 40)
    columns = [TableColumn(_h(h, lang), w) for h, w in zip(heads, widths, strict=True)]
    times: dict[int, str] = {}
    rows = []
    for (run_id, file, ekey, status, read, new, upd, unch, linked, rej, confl, errwb, msg) in db.import_log(
            conn, IMPORT_LOG_RUNS):
        if run_id not in times:
            times[run_id] = (db.run_time(conn, run_id) or "").replace("T", " ")
        sheet = schema.entity(ekey).label(lang) if ekey and any(e.key == ekey for e in schema) else ekey
        rows.append([run_id, times[run_id], file, sheet, _pick(_STATUS[status], lang) if status in _STATUS
                     else status, read, new, upd, unch, linked, rej, confl, errwb, msg])
    write_table(wb, ws, "tbl_import_log", columns, rows)
    _protect(ws)


def _provisions_sheet(wb: XlcrmWorkbook, conn: sqlite3.Connection, schema: Schema, lang: Lang) -> None:
    """提供記録, read-only like the other logs; only once an export recorded a provision."""
    name, headers, rows = provision_sheet(conn, schema, lang)
    if not rows:
        return
    widths = (8, 17, 20, 24, 12, 40, 8, 20, 40, 30, 12)
    columns = [TableColumn(h, widths[i] if i < len(widths) else 14) for i, h in enumerate(headers)]
    ws = wb.add_worksheet(name)
    write_table(wb, ws, "tbl_provisions", columns, rows)
    _protect(ws)


# --- reading back -----------------------------------------------------------------------------------

@dataclass
class Decisions:
    #: pair id -> merge / different / later
    duplicates: dict[int, str] = field(default_factory=dict)
    #: conflict id -> (choice text or None, typed value or None)
    conflicts: dict[int, tuple[str | None, Any]] = field(default_factory=dict)
    #: deletion id -> delete / keep / later
    deletions: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.duplicates or self.conflicts or self.deletions)


@dataclass
class MasterState:
    """What the master workbook brings into a command: decisions and the admin's edits (or None)."""

    decisions: Decisions | None = None
    edits: Any = None  # validate.ValidationResult of master.xlsx, when it may hold edits
    warnings: list[str] = field(default_factory=list)


def _book(master: Path, password: str | None = None) -> Any:
    import io

    import python_calamine

    data = crypto.read_workbook_bytes(master, password)  # one line when the password is missing/wrong
    try:
        return python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as exc:
        raise XlcrmError(f"cannot read the master workbook ({str(exc).splitlines()[0][:120]}); restore it "
                         "from backups/ or rebuild it with `xlcrm export-master`", path=str(master)) from None


def _sheet_rows(book: Any, names: tuple[str, str]) -> tuple[str, list[list[Any]]] | None:
    for name in names:
        if name in book.sheet_names:
            return name, book.get_sheet_by_name(name).to_python(skip_empty_area=False)
    return None


def _header_index(header: Sequence[Any], *keys: str) -> dict[str, int]:
    out: dict[str, int] = {}
    texts = [str(h).strip() if h is not None else "" for h in header]
    for key in keys:
        for label in _H[key]:
            if label in texts:
                out[key] = texts.index(label)
                break
    return out


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def _word(v: Any) -> str:
    return str(v).strip().casefold() if v is not None else ""


def read_decisions(master: Path, book: Any | None = None, *, password: str | None = None) -> Decisions:
    """The decision columns of 重複候補, 競合 and 削除候補, by pair / conflict / deletion number."""
    book = book or _book(master, password)
    out = Decisions()
    _word_decisions(master, book, "duplicates", "pair", DUPLICATE_DECISIONS,
                    "統合 / 別 / 保留 (Merge / Different / Later)", out.duplicates, out.warnings, group="group")
    found = _sheet_rows(book, SHEETS["conflicts"])
    if found and found[1]:
        _name, rows = found
        idx = _header_index(rows[0], "choose", "value", "conflict")
        if "conflict" in idx:
            for row in rows[1:]:
                cid = _int(row[idx["conflict"]]) if idx["conflict"] < len(row) else None
                if cid is None:
                    continue
                choice = row[idx["choose"]] if "choose" in idx and idx["choose"] < len(row) else None
                value = row[idx["value"]] if "value" in idx and idx["value"] < len(row) else None
                choice = None if choice in (None, "") else str(choice).strip()
                value = None if value is None or (isinstance(value, str) and not value.strip()) else value
                if choice is None and value is None:
                    continue
                if choice is not None and _word(choice) in {_word(x) for x in LATER} and value is None:
                    continue
                out.conflicts[cid] = (choice, value)
    _word_decisions(master, book, "deletions", "deletion", DELETION_DECISIONS,
                    "削除 / 残す / 保留 (Delete / Keep / Later)", out.deletions, out.warnings)
    return out


def _word_decisions(master: Path, book: Any, sheet: str, key: str, words: dict[str, str], allowed: str,
                    into: dict[int, str], warnings: list[str], group: str | None = None) -> None:
    """A review sheet whose decision column takes one of a few words (重複候補, 削除候補).

    With a ``group`` column (重複候補), a decision written on one row of a group holds for the rows of
    that group left empty: one decision per group of look-alikes; a row's own word still wins, and a group
    whose rows say different things decides only the rows that say something."""
    found = _sheet_rows(book, SHEETS[sheet])
    if not (found and found[1]):
        return
    name, rows = found
    idx = _header_index(rows[0], "decision", key, *((group,) if group else ()))
    if "decision" not in idx or key not in idx:
        return
    gi = idx.get(group) if group else None
    said: dict[int, set[str]] = {}  # group -> the actions its rows say (later included)
    silent: list[tuple[int, int]] = []  # (group, number) of rows without a word
    for r, row in enumerate(rows[1:], start=2):
        word = _word(row[idx["decision"]]) if idx["decision"] < len(row) else ""
        number = _int(row[idx[key]]) if idx[key] < len(row) else None
        g = _int(row[gi]) if gi is not None and gi < len(row) else None
        if number is None:
            continue
        if not word:
            if g is not None:
                silent.append((g, number))
            continue
        action = words.get(word)
        if action is None:
            warnings.append(f"{master.name} {name}!A{r}: {row[idx['decision']]!r} is not one of {allowed}; "
                            "left pending")
            continue
        if g is not None:
            said.setdefault(g, set()).add(action)
        if action != "later":
            into[number] = action
    for g, number in silent:
        actions = said.get(g)
        if actions is not None and len(actions) == 1 and (action := next(iter(actions))) != "later":
            into[number] = action


def has_unread_changes(master: Path, conn: sqlite3.Connection) -> bool:
    """Was ``master.xlsx`` saved by someone after xlcrm wrote it (so it may hold unmerged edits)?"""
    master = Path(master)
    if not master.exists():
        return False
    try:
        return not _as_written(master, conn)
    except OSError:
        return False


def read_master_state(master: Path, conn: sqlite3.Connection, schema: Schema, *,
                      today: dt.date | None = None, edits: bool = True,
                      password: str | None = None) -> MasterState:
    """Decisions and edits from ``master.xlsx``, if it changed since xlcrm wrote it."""
    state = MasterState()
    master = Path(master)
    if not master.exists():
        return state
    try:
        if _as_written(master, conn):
            return state  # untouched since written: nothing to read
    except OSError:
        return state
    book = _book(master, password)
    meta = meta_values(book)
    parsed = parse_workbook_id(meta.get("workbook_id", ""))
    known = db.get_meta(conn, "master_uuid")
    if parsed is None or (known is not None and parsed[0] != known):
        state.warnings.append(f"{master.name} was not written from this master database; its decisions and "
                              "edits were not read (it is replaced by a fresh copy)")
        return state
    decisions = read_decisions(master, book)
    state.warnings.extend(decisions.warnings)
    state.decisions = decisions
    generation = int(db.get_meta(conn, "master_generation", "0") or 0)
    if not edits:
        return state
    if parsed[1] != generation:
        state.warnings.append(f"{master.name} is older than master.db (generation {parsed[1]} vs {generation}); "
                              "record edits typed into it were not read — the previous copy is in backups/")
        return state
    from xlcrm.intake.validate import validate_workbook

    result = validate_workbook(master, schema, today=today, password=password)
    bad = sum(len(v) for v in result.error_rows.values())
    if bad:
        first = next((f for f in result.findings if f.severity == "error"), None)
        state.warnings.append(f"{master.name}: {bad} edited row(s) have errors and were not taken"
                              + (f" (first: {first.address} {first.message})" if first else ""))
    state.edits = result
    return state


def decisions_json(d: Decisions) -> str:
    return json.dumps({"duplicates": d.duplicates, "conflicts": {k: [c, str(v) if v is not None else None]
                                                                  for k, (c, v) in d.conflicts.items()},
                       "deletions": d.deletions}, ensure_ascii=False)
