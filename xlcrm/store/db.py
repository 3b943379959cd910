"""The master database: the one module that speaks SQL.

The master's system of record is one SQLite file beside the master workbook (``master.db`` for
``master.xlsx``): one file to back up, transactions that make a merge all-or-nothing, and an FTS5
index for search.  Every other module goes through the functions here (reads as well as writes;
they only open and close transactions themselves), so that a server database could later take
SQLite's place for a firm that outgrows one file.  The one exception is the search index (:mod:`xlcrm.store.searchindex`, queried by :mod:`xlcrm.views.search`): its FTS5
index is SQLite-specific storage of its own, so the index and the queries that build and rank it stay
there, the part a server backend would replace alongside this module.

Layout (derived from the schema, never hand-written): one table per entity named by the entity key,
one column per schema column key, the id column as primary key, plus bookkeeping columns that start
with an underscore:

- ``_state``: ``active``; ``merged`` (a duplicate folded into ``_merged_into``, kept for history);
  ``deleted`` (an admin confirmed the deletion after review).  Readers show ``active`` rows only.
- ``_merged_into``: survivor id for merged rows.
- ``_source``: the file the record came from first; ``_created_run`` / ``_updated_run``: merge runs.

Values are stored canonically: TEXT for text, ISO ``YYYY-MM-DD`` for dates, INTEGER for ints, REAL
for decimals, canonical keys for choices (:func:`to_db` / :func:`from_db`).

Bookkeeping tables of merge and distribute (also created by :func:`create_tables`):

- ``runs``: one row per merge / resolve run; ``history``: the change history (変更履歴), append-only,
  ``how`` one of new / edit / link / merge / decision / delete.
- ``bases_<entity>``: per workbook id (``_workbook``) and record, the values that workbook was handed
  by distribute or last sent to a merge: the base of the three-way merge.  Typed like the entity
  table, so a base row compares with a record as plain tuples.
- ``workbooks``: every workbook id seen (distributed, or a team's own), owner and language.
- ``origins``: (workbook, entity, content fingerprint) -> record, so a row without an ID merged again
  from the same workbook is recognised.
- ``duplicates`` (重複候補), ``conflicts`` + ``conflict_values`` (競合), ``deletions`` (削除候補): the
  review queues with their ``status`` ('pending' until decided) — values are JSON text there, since
  one column holds values of any field.
- ``import_log`` (取込ログ): per run, input file and sheet, the row outcome counts.
- ``rejected_rows``: per owner and the workbook holding them (``source``), the rows a merge rejected,
  each exactly as typed (``cells``: column key -> cell value, JSON) with its findings.  A merge replaces
  the rows of each workbook it reads; ``distribute`` hands all of an owner's rows back in place, marked,
  and from then on they are held by that handout.
- ``meta``: schema version, ``next_id:<entity>`` counters, the master workbook's generation and stat.

Created on first use only: ``provisions`` (提供記録, the third-party provision record export writes).
``bases_<entity>`` and ``origins`` are WITHOUT ROWID tables (read only by their key, so the key's
B-tree holds the rows); databases made by older versions keep rowid tables, which read and write the same.

A master database that does not exist yet is built in memory by the first merge and written whole at
its commit (:func:`memory_master`, :func:`save_image`, ``MEMORY_BUILD_MAX_INPUT_BYTES``); every later
merge changes the file in place in one transaction.
"""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, cast

from xlcrm import fileperm
from xlcrm.errors import XlcrmError
from xlcrm.schema import Column, Entity, Schema

#: Bookkeeping columns every entity table carries, with their SQL declarations.
BOOKKEEPING: tuple[tuple[str, str], ...] = (
    ("_state", "TEXT NOT NULL DEFAULT 'active'"),
    ("_merged_into", "TEXT"),
    ("_source", "TEXT"),
    ("_created_run", "INTEGER"),
    ("_updated_run", "INTEGER"),
)

ACTIVE = "_state = 'active'"

_FIXED_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT, command TEXT,
    inputs TEXT, status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS history (
    history_id INTEGER PRIMARY KEY, run_id INTEGER, at TEXT NOT NULL, entity TEXT NOT NULL,
    record_id TEXT NOT NULL, field TEXT, old TEXT, new TEXT, source_file TEXT, who TEXT,
    how TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_record ON history(entity, record_id);
"""


def sql_type(col: Column) -> str:
    return {"int": "INTEGER", "decimal": "REAL"}.get(col.type, "TEXT")


@dataclass(frozen=True)
class WorkingCopy:
    """A master database standing in for a PostgreSQL master (:mod:`xlcrm.store.working`): while bound,
    ``db_path_for(master)`` is ``path``, and :func:`commit` on a connection to it first calls
    ``before_commit`` with that connection (its transaction still open), which writes the changes to
    the server; a failure there leaves both as they were."""

    master: Path
    path: Path
    before_commit: Callable[[sqlite3.Connection], None]


_working: ContextVar[tuple[WorkingCopy, ...]] = ContextVar("xlcrm_working_copies", default=())


@contextmanager
def bind_working_copy(copy: WorkingCopy) -> Iterator[WorkingCopy]:
    """Make ``copy.path`` the master database of ``copy.master`` for the body."""
    token = _working.set((*_working.get(), copy))
    try:
        yield copy
    finally:
        _working.reset(token)


def _bound(path: Path, attr: str) -> WorkingCopy | None:
    key = Path(path).resolve()
    return next((c for c in reversed(_working.get()) if getattr(c, attr) == key), None)


def db_path_for(master: Path) -> Path:
    """``master.xlsx`` -> ``master.db``: the database sits beside its workbook (or is the working copy of
    a PostgreSQL master bound to it)."""
    copy = _bound(master, "master")
    return copy.path if copy is not None else Path(master).with_suffix(".db")


class _WorkingConnection(sqlite3.Connection):
    before_commit: Callable[[sqlite3.Connection], None] | None = None


def commit(conn: sqlite3.Connection) -> None:
    """COMMIT the open transaction; a working copy's changes reach its server first."""
    hook = getattr(conn, "before_commit", None)
    if hook is not None and conn.in_transaction:
        hook(conn)
    conn.execute("COMMIT")


#: Page cache per connection (KiB); memory is only taken as pages are used.
CACHE_KIB = 64 * 1024


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the master database; refuse with one line when it is missing and ``create`` is False."""
    path = Path(path)
    if not create and not path.exists():
        raise XlcrmError(f"{path}: no master database here; run `xlcrm merge ... --master "
                         f"{path.with_suffix('.xlsx')}` first")
    existed = path.exists()
    copy = _bound(path, "path")
    try:
        # explicit BEGIN/COMMIT in transaction()
        conn = sqlite3.connect(path, isolation_level=None,
                               factory=_WorkingConnection if copy is not None else sqlite3.Connection)
        if copy is not None:
            cast(_WorkingConnection, conn).before_commit = copy.before_commit
        if not existed:
            fileperm.restrict(path)  # personal data: its owner's only (its journal inherits the mode)
        conn.execute("PRAGMA foreign_keys = ON")
        # A rollback journal, not WAL: the database stays one file to back up and copy.
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = FULL")
        # A first merge writes ~1.6M rows (records, history, bases, origins) in one transaction; a
        # larger page cache than SQLite's 2 MB keeps the indexes' pages in memory; a larger one than
        # this makes the merge no faster and only costs memory (benchmarks/README.md, Merge).
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.DatabaseError as exc:
        raise XlcrmError(f"{path}: not a readable master database ({exc}); restore it from the "
                         "backups folder beside it") from None
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All or nothing: a merge either lands whole or leaves the previous master untouched."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        commit(conn)


@contextmanager
def rollback_on_error(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Undo whatever is still open when the body fails.

    For work that commits by itself once the master workbook is on disk (merge, distribute,
    handover, export-master): the database must not move ahead of a workbook that failed to write.
    A fault of the machine (a full disk, a read-only file, an I/O error) becomes one line saying that
    nothing was changed and what to do (:func:`fault_error`).
    """
    try:
        yield conn
    except BaseException as exc:
        if conn.in_transaction:
            with suppress(sqlite3.Error):  # the original error is the one to report
                conn.execute("ROLLBACK")
        error = fault_error(exc) if isinstance(exc, sqlite3.Error | OSError) else None
        if error is not None:
            raise error from None
        raise


#: errno values meaning "no room": no space, over the quota, file larger than allowed.
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_RIGHT = {errno.EACCES, errno.EPERM, errno.EROFS}


def fault_error(exc: BaseException) -> XlcrmError | None:
    """The one-line refusal for a fault of the machine met inside a transaction that was rolled back,
    or None for anything else (a bug: its traceback is worth having)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if (isinstance(exc, OSError) and exc.errno in _NO_ROOM) or "disk is full" in low:
        what = f"not enough disk space ({exc.strerror if isinstance(exc, OSError) else text})"
        todo = "free some space"
    elif (isinstance(exc, OSError) and exc.errno in _NO_RIGHT) or "readonly database" in low:
        what = f"a file or folder of the master cannot be written ({text})"
        todo = "make it writable for this user"
    elif "disk i/o error" in low or (isinstance(exc, OSError) and exc.errno == errno.EIO):
        what = f"the disk could not be written ({text})"
        todo = "check free space and the disk"
    elif "unable to open database file" in low:
        what = f"the master database cannot be opened ({text})"
        todo = "check the folder's permissions and free space"
    else:
        return None
    return XlcrmError(f"{what}; nothing was changed — {todo} and run again")


def create_tables(conn: sqlite3.Connection, schema: Schema) -> None:
    """Create missing tables and add columns an admin added to the schema since the last run.

    Columns switched off later are kept in the database (nothing is lost); they just stop appearing
    in workbooks.
    """
    # Statement by statement: executescript() would COMMIT the caller's open transaction.
    for statement in bookkeeping_ddl():
        conn.execute(statement)
    if "source_file" not in {row[1] for row in conn.execute("PRAGMA table_info(duplicates)")}:
        conn.execute("ALTER TABLE duplicates ADD COLUMN source_file TEXT")  # the file that raised the pair
    if "source" not in {row[1] for row in conn.execute("PRAGMA table_info(rejected_rows)")}:
        conn.execute("ALTER TABLE rejected_rows ADD COLUMN source TEXT")
    for entity in schema:
        _create_entity_table(conn, entity)
        _create_base_table(conn, entity)
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (schema.version,))


def bookkeeping_ddl() -> list[str]:
    """The statements that create the tables every master has whatever its schema (meta, runs, history,
    the merge's and the review's tables) and their indexes, in SQLite's dialect."""
    return [s.strip() for s in (_FIXED_TABLES + _MERGE_TABLES).split(";") if s.strip()]


def entity_columns(entity: Entity) -> list[tuple[str, str]]:
    """An entity table's columns with their SQL declarations: the id column (primary key), one column
    per schema column, then :data:`BOOKKEEPING`."""
    return [(entity.id_column.key, "TEXT PRIMARY KEY"), *((c.key, sql_type(c)) for c in entity.columns[1:]),
            *BOOKKEEPING]


def _create_entity_table(conn: sqlite3.Connection, entity: Entity) -> None:
    cols = [f'"{name}" {decl}' for name, decl in entity_columns(entity)]
    conn.execute(f'CREATE TABLE IF NOT EXISTS "{entity.key}" ({", ".join(cols)})')
    have = {row[1] for row in conn.execute(f'PRAGMA table_info("{entity.key}")')}
    for c in entity.columns:
        if c.key not in have:
            conn.execute(f'ALTER TABLE "{entity.key}" ADD COLUMN "{c.key}" {sql_type(c)}')
    for name, decl in BOOKKEEPING:
        if name not in have:
            conn.execute(f'ALTER TABLE "{entity.key}" ADD COLUMN "{name}" {decl}')
    for statement in entity_index_ddl(entity):
        conn.execute(statement)


def entity_index_ddl(entity: Entity) -> list[str]:
    """The indexes of an entity table: its reference to the customer, when it has one."""
    ref = entity.ref_column
    if ref is None:
        return []
    return [f'CREATE INDEX IF NOT EXISTS "{entity.key}_{ref.key}" ON "{entity.key}"("{ref.key}")']


def table_exists(conn: sqlite3.Connection, name: str) -> bool:
    """Whether a table (or view) is there: readers of a database from an older xlcrm must not fail on
    a table that a later command creates."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                       (name,)).fetchone()
    return row is not None


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns ``table`` really has (empty when it does not exist): the schema may name a column
    an older database does not carry yet."""
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def format_id(entity: Entity, number: int) -> str:
    """C-000001: the prefix says the entity, six digits sort well in Excel (more digits when needed)."""
    return f"{entity.id_prefix}-{number:06d}"


def fetch_active(conn: sqlite3.Connection, entity: Entity, *, deleted: bool = False) -> list[sqlite3.Row]:
    """The entity's active records by ID (``deleted=True``: the records marked deleted instead)."""
    keys = ", ".join(f'"{k}"' for k in entity.keys)
    where = "_state = 'deleted'" if deleted else ACTIVE
    return conn.execute(f'SELECT {keys} FROM "{entity.key}" WHERE {where} '
                        f'ORDER BY "{entity.id_column.key}"').fetchall()


# --- values: the stored form ------------------------------------------------------------------------

def to_db(col: Column, value: Any) -> Any:
    """A normalised cell value (validate's frames) -> its stored form; None for blank/NaN.

    Dates become ISO text, ints int, decimals float, everything else text; so two values are equal in
    Python exactly when they are equal in the database, which the three-way merge relies on.
    """
    if value is None:
        return None
    t = col.type
    if t == "date":
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        return str(value) or None
    if isinstance(value, float) and value != value:
        return None
    try:
        if value != value:  # pandas.NA / NaT
            return None
    except (TypeError, ValueError):
        return None
    if t == "int":
        return int(value)
    if t == "decimal":
        f = float(value)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if isinstance(value, str):
        return value or None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


def from_db(col: Column, value: Any) -> Any:
    """Stored form -> what a workbook cell should hold (dates as ``date``; the rest unchanged)."""
    if value is None:
        return None
    if col.type == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


def encode_value(value: Any) -> str | None:
    """A stored value as JSON text, for the review tables that hold values of any column."""
    return None if value is None else json.dumps(value, ensure_ascii=False)


def decode_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# --- bookkeeping tables owned by merge and distribute -------------------------------------------------

_MERGE_TABLES = """
CREATE TABLE IF NOT EXISTS workbooks (
    workbook_id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT, lang TEXT, created TEXT,
    path TEXT, run_id INTEGER, last_merged_run INTEGER
);
CREATE TABLE IF NOT EXISTS origins (
    source TEXT NOT NULL, entity TEXT NOT NULL, fingerprint TEXT NOT NULL, record_id TEXT NOT NULL,
    run_id INTEGER, PRIMARY KEY (source, entity, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS duplicates (
    pair_id INTEGER PRIMARY KEY, entity TEXT NOT NULL, a_id TEXT NOT NULL, b_id TEXT NOT NULL,
    score REAL, kind TEXT, evidence TEXT, status TEXT NOT NULL DEFAULT 'pending', run_id INTEGER,
    decided_run INTEGER, decided_at TEXT, source_file TEXT, UNIQUE (entity, a_id, b_id)
);
CREATE TABLE IF NOT EXISTS conflicts (
    conflict_id INTEGER PRIMARY KEY, entity TEXT NOT NULL, record_id TEXT NOT NULL, field TEXT NOT NULL,
    master_value TEXT, status TEXT NOT NULL DEFAULT 'pending', resolution TEXT, run_id INTEGER,
    decided_run INTEGER, decided_at TEXT
);
CREATE INDEX IF NOT EXISTS conflicts_field ON conflicts(entity, record_id, field, status);
CREATE TABLE IF NOT EXISTS conflict_values (
    conflict_id INTEGER NOT NULL, value TEXT, who TEXT, source_file TEXT, at TEXT, run_id INTEGER,
    UNIQUE (conflict_id, value, who)
);
CREATE TABLE IF NOT EXISTS deletions (
    deletion_id INTEGER PRIMARY KEY, entity TEXT NOT NULL, record_id TEXT NOT NULL, source TEXT NOT NULL,
    source_file TEXT, who TEXT, status TEXT NOT NULL DEFAULT 'pending', run_id INTEGER,
    decided_run INTEGER, decided_at TEXT, UNIQUE (entity, record_id, source)
);
CREATE TABLE IF NOT EXISTS rejected_rows (
    owner TEXT NOT NULL, entity TEXT NOT NULL, seq INTEGER NOT NULL, record_id TEXT, source_file TEXT,
    source_row INTEGER, cells TEXT NOT NULL, findings TEXT NOT NULL, run_id INTEGER, source TEXT,
    PRIMARY KEY (owner, entity, seq)
);
CREATE TABLE IF NOT EXISTS import_log (
    run_id INTEGER NOT NULL, file TEXT NOT NULL, entity TEXT NOT NULL, status TEXT, rows_read INTEGER,
    new INTEGER, updated INTEGER, unchanged INTEGER, linked INTEGER, rejected INTEGER,
    conflicts INTEGER, error_workbook TEXT, message TEXT
);
"""

#: Review statuses.  保留 (later) keeps a row ``pending``: it stays on the review sheet.
PENDING = "pending"


def base_table(entity: Entity) -> str:
    """What a workbook was handed (distribute) or last sent (merge), per record: the three-way base."""
    return f"bases_{entity.key}"


def base_columns(entity: Entity) -> list[tuple[str, str]]:
    """A ``bases_<entity>`` table's columns with their SQL declarations; its primary key is
    (``_workbook``, the id column)."""
    return [("_workbook", "TEXT NOT NULL"), (entity.id_column.key, "TEXT NOT NULL"),
            *((c.key, sql_type(c)) for c in entity.columns[1:])]


def _create_base_table(conn: sqlite3.Connection, entity: Entity) -> None:
    name = base_table(entity)
    cols = [f'"{col}" {decl}' for col, decl in base_columns(entity)]
    # WITHOUT ROWID (origins too): only ever read by their key, so the key's B-tree holds the rows
    # and nothing is stored twice (one B-tree insert per row, not two).
    # Databases made by older versions keep their rowid tables; both read and write the same.
    conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" ({", ".join(cols)}, '
                 f'PRIMARY KEY ("_workbook", "{entity.id_column.key}")) WITHOUT ROWID')
    have = {row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')}
    for c in entity.columns:
        if c.key not in have:
            conn.execute(f'ALTER TABLE "{name}" ADD COLUMN "{c.key}" {sql_type(c)}')


# --- meta, runs, ids --------------------------------------------------------------------------------

def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def start_run(conn: sqlite3.Connection, command: str, inputs: Sequence[str], at: str) -> int:
    cur = conn.execute("INSERT INTO runs(started, command, inputs, status) VALUES (?, ?, ?, 'running')",
                       (at, command, json.dumps(list(inputs), ensure_ascii=False)))
    return int(cur.lastrowid or 0)


def finish_run(conn: sqlite3.Connection, run_id: int, at: str, status: str = "done") -> None:
    conn.execute("UPDATE runs SET finished = ?, status = ? WHERE run_id = ?", (at, status, run_id))


def first_free_number(conn: sqlite3.Connection, entity: Entity) -> int:
    """The next number for a new ID; numbers are never reused (merged or deleted records keep theirs)."""
    stored = get_meta(conn, f"next_id:{entity.key}")
    if stored is not None:
        return int(stored)
    idc = entity.id_column.key
    n = 0
    for (rid,) in conn.execute(f'SELECT "{idc}" FROM "{entity.key}" WHERE "{idc}" LIKE ?',
                               (f"{entity.id_prefix}-%",)):
        tail = str(rid).rsplit("-", 1)[-1]
        if tail.isdigit():
            n = max(n, int(tail))
    return n + 1


def set_first_free_number(conn: sqlite3.Connection, entity: Entity, number: int) -> None:
    set_meta(conn, f"next_id:{entity.key}", str(number))


# --- records ----------------------------------------------------------------------------------------

def _plain(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor yielding plain tuples: several times faster than ``sqlite3.Row`` for bulk reads."""
    cur = conn.cursor()
    cur.row_factory = None
    return cur


def load_records(conn: sqlite3.Connection, entity: Entity, *,
                 active_only: bool = False) -> dict[str, tuple[Any, ...]]:
    """Records of ``entity`` (all states unless ``active_only``): id -> values in ``entity.keys`` order."""
    keys = ", ".join(f'"{k}"' for k in entity.keys)
    where = f" WHERE {ACTIVE}" if active_only else ""
    return {r[0]: r for r in _plain(conn).execute(f'SELECT {keys} FROM "{entity.key}"{where}').fetchall()}


class LazyRecords(Mapping[str, tuple[Any, ...]]):
    """``load_records`` for a merge: every id at once, a record's values only when asked for.

    Why: a re-merge of distributed workbooks compares almost every row with its base only; loading
    all 400,000 records' values up front cost seconds for the few thousand the merge reads.  After
    ``EAGER_AFTER`` single reads (a legacy re-import compares every row with the master) or any
    iteration over the values, everything is loaded in one query.
    """

    EAGER_AFTER = 2_000

    def __init__(self, conn: sqlite3.Connection, entity: Entity) -> None:
        self._conn = conn
        self._cur = _plain(conn)
        self._entity = entity
        self._ids = record_ids(conn, entity)
        self._values: dict[str, tuple[Any, ...]] = {}
        self._loaded = False
        keys = ", ".join(f'"{k}"' for k in entity.keys)
        self._one = f'SELECT {keys} FROM "{entity.key}" WHERE "{entity.id_column.key}" = ?'

    def _load_all(self) -> dict[str, tuple[Any, ...]]:
        if not self._loaded:
            # Only the records there were when this was made: merge inserts a source's new records
            # while it goes on reading the master as it was before the merge.
            ids = self._ids
            self._values = {k: v for k, v in load_records(self._conn, self._entity).items() if k in ids}
            self._loaded = True
        return self._values

    def __getitem__(self, record_id: str) -> tuple[Any, ...]:
        values = self._values.get(record_id)
        if values is not None:
            return values
        if record_id not in self._ids:
            raise KeyError(record_id)
        if self._loaded or len(self._values) >= self.EAGER_AFTER:
            return self._load_all()[record_id]
        values = self._values[record_id] = self._cur.execute(self._one, (record_id,)).fetchone()
        return values

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._load_all())

    def __len__(self) -> int:
        return len(self._ids)


def record_ids(conn: sqlite3.Connection, entity: Entity) -> set[str]:
    return {r[0] for r in _plain(conn).execute(f'SELECT "{entity.id_column.key}" FROM "{entity.key}"')}


def load_states(conn: sqlite3.Connection, entity: Entity) -> dict[str, tuple[str, str | None]]:
    """id -> (``_state``, ``_merged_into``) for every record that is not simply active."""
    idc = entity.id_column.key
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        f'SELECT "{idc}", _state, _merged_into FROM "{entity.key}" WHERE _state != \'active\'')}


def insert_records(conn: sqlite3.Connection, entity: Entity, rows: Iterable[Sequence[Any]], *,
                   run_id: int, source: str) -> None:
    """New records; each row holds values in ``entity.keys`` order."""
    keys = [*entity.keys, "_state", "_source", "_created_run", "_updated_run"]
    cols = ", ".join(f'"{k}"' for k in keys)
    marks = ", ".join("?" for _ in keys)
    conn.executemany(f'INSERT INTO "{entity.key}" ({cols}) VALUES ({marks})',
                     ((*r, "active", source, run_id, run_id) for r in rows))


def update_fields(conn: sqlite3.Connection, entity: Entity, changes: Iterable[tuple[str, str, Any]], *,
                  run_id: int) -> int:
    """Apply (record id, field, new value) changes, grouped per field into one executemany each."""
    by_field: dict[str, list[tuple[Any, int, str]]] = {}
    for rid, fld, value in changes:
        entity.column(fld)  # refuse a field the schema does not have before it reaches SQL
        by_field.setdefault(fld, []).append((value, run_id, rid))
    idc = entity.id_column.key
    n = 0
    for fld, params in by_field.items():
        conn.executemany(f'UPDATE "{entity.key}" SET "{fld}" = ?, _updated_run = ? WHERE "{idc}" = ?', params)
        n += len(params)
    return n


def set_state(conn: sqlite3.Connection, entity: Entity, record_id: str, state: str,
              merged_into: str | None = None, *, run_id: int) -> None:
    conn.execute(f'UPDATE "{entity.key}" SET _state = ?, _merged_into = ?, _updated_run = ? '
                 f'WHERE "{entity.id_column.key}" = ?', (state, merged_into, run_id, record_id))


def repoint(conn: sqlite3.Connection, entity: Entity, old_id: str, new_id: str, *,
            run_id: int) -> list[str]:
    """Point every ``entity`` row referencing customer ``old_id`` at ``new_id``; returns their ids."""
    ref = entity.ref_column
    if ref is None:
        return []
    idc = entity.id_column.key
    ids = [r[0] for r in conn.execute(f'SELECT "{idc}" FROM "{entity.key}" WHERE "{ref.key}" = ?', (old_id,))]
    conn.execute(f'UPDATE "{entity.key}" SET "{ref.key}" = ?, _updated_run = ? WHERE "{ref.key}" = ?',
                 (new_id, run_id, old_id))
    return ids


def record(conn: sqlite3.Connection, entity: Entity, record_id: str) -> dict[str, Any] | None:
    keys = ", ".join(f'"{k}"' for k in entity.keys)
    row = conn.execute(f'SELECT {keys}, _state, _merged_into FROM "{entity.key}" '
                       f'WHERE "{entity.id_column.key}" = ?', (record_id,)).fetchone()
    return None if row is None else dict(zip([*entity.keys, "_state", "_merged_into"], row, strict=True))


def records_with_state(conn: sqlite3.Connection, entity: Entity) -> Iterator[dict[str, Any]]:
    """Every record in any state, as :func:`record` returns one (with ``_state`` and ``_merged_into``):
    for rules that must see merged and deleted records too, such as a DM refusal once given."""
    keys = [*entity.keys, "_state", "_merged_into"]
    sel = ", ".join(f'"{k}"' for k in keys)
    for r in conn.execute(f'SELECT {sel} FROM "{entity.key}"'):
        yield dict(zip(keys, r, strict=True))


def record_row(conn: sqlite3.Connection, entity: Entity, record_id: str) -> sqlite3.Row | None:
    """One record with every stored column (also columns the schema has since switched off, and the
    bookkeeping ones), as the connection's row type: for a reader that shows whatever is there."""
    return conn.execute(f'SELECT * FROM "{entity.key}" WHERE "{entity.id_column.key}" = ?',
                        (record_id,)).fetchone()


def record_state(conn: sqlite3.Connection, entity: Entity, record_id: str) -> str | None:
    """``_state`` of one record (active / merged / deleted); None when the id is unknown."""
    idk = entity.id_column.key
    row = conn.execute(f'SELECT "{idk}", _state FROM "{entity.key}" WHERE "{idk}" = ?', (record_id,)).fetchone()
    return None if row is None else row[1]


def parent_id(conn: sqlite3.Connection, entity: Entity, record_id: str) -> str | None:
    """The customer a contact / activity / deal / TODO points to; None for an unknown id, a blank
    reference or an entity without one."""
    ref = entity.ref_column
    if ref is None:
        return None
    row = conn.execute(f'SELECT "{ref.key}" FROM "{entity.key}" WHERE "{entity.id_column.key}" = ?',
                       (record_id,)).fetchone()
    return None if row is None or not row[0] else row[0]


def attached_records(conn: sqlite3.Connection, entity: Entity, customer_ids: Sequence[str]) -> list[sqlite3.Row]:
    """Active ``entity`` rows pointing to any of ``customer_ids``, in id order, as the connection's row
    type; only the schema's columns the table really has (an older database may lack new ones)."""
    ref = entity.ref_column
    if ref is None:
        return []
    have = table_columns(conn, entity.key)
    if not have:
        return []
    keys = ", ".join(f'"{k}"' for k in entity.keys if k in have)
    marks = ", ".join("?" * len(customer_ids))
    return conn.execute(f'SELECT {keys} FROM "{entity.key}" WHERE "{ref.key}" IN ({marks}) AND {ACTIVE} '
                        f'ORDER BY "{entity.id_column.key}"', list(customer_ids)).fetchall()


def attached_counts(conn: sqlite3.Connection, entity: Entity, customer_ids: Sequence[str]) -> dict[str, int]:
    """Active ``entity`` rows per customer of ``customer_ids`` (those with none are left out)."""
    ref = entity.ref_column
    if ref is None or not customer_ids or ref.key not in table_columns(conn, entity.key):
        return {}
    out: dict[str, int] = {}
    for i in range(0, len(customer_ids), 500):
        chunk = list(customer_ids[i:i + 500])
        marks = ", ".join("?" * len(chunk))
        for cid, n in conn.execute(f'SELECT "{ref.key}", COUNT(*) FROM "{entity.key}" WHERE "{ref.key}" IN ({marks}) '
                                   f'AND {ACTIVE} GROUP BY "{ref.key}"', chunk):
            out[cid] = n
    return out


def customer_name_rows(conn: sqlite3.Connection, customers: Entity) -> list[sqlite3.Row]:
    """Active customers' (id, ``name``, ``kana``, ``owner``) in id order: what a typed name is matched
    against and a choice between several is listed with."""
    cid = customers.id_column.key
    return conn.execute(f'SELECT "{cid}", name, kana, owner FROM customers WHERE {ACTIVE} '
                        f'ORDER BY "{cid}"').fetchall()


def active_customer_names(conn: sqlite3.Connection) -> list[str]:
    """Every active customer's ``name``, e.g. to tell whether a name typed in Excel is in the master."""
    return [r[0] for r in conn.execute(f"SELECT name FROM customers WHERE {ACTIVE}").fetchall()]


def iter_records(conn: sqlite3.Connection, entity: Entity, *, active_only: bool = True,
                 where: str = "", params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
    """Rows in id order, values in ``entity.keys`` order; ``where`` is an extra SQL condition built
    by this module's callers from schema keys only (never from user text; values go in ``params``)."""
    keys = ", ".join(f'"{k}"' for k in entity.keys)
    cond = [ACTIVE] if active_only else []
    if where:
        cond.append(f"({where})")
    sql = f'SELECT {keys} FROM "{entity.key}"'
    if cond:
        sql += " WHERE " + " AND ".join(cond)
    sql += f' ORDER BY "{entity.id_column.key}"'
    yield from _plain(conn).execute(sql, params)


def count_active(conn: sqlite3.Connection, entity: Entity) -> int:
    return int(conn.execute(f'SELECT COUNT(*) FROM "{entity.key}" WHERE {ACTIVE}').fetchone()[0])


# --- history ----------------------------------------------------------------------------------------

HISTORY_COLUMNS = ("run_id", "at", "entity", "record_id", "field", "old", "new", "source_file", "who", "how")


def add_history(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> int:
    """Append change-history rows (``HISTORY_COLUMNS`` order); old/new are stored as text."""
    cur = conn.executemany(
        "INSERT INTO history(run_id, at, entity, record_id, field, old, new, source_file, who, how) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((r[0], r[1], r[2], r[3], r[4], _hist_text(r[5]), _hist_text(r[6]), r[7], r[8], r[9]) for r in rows))
    return cur.rowcount if cur.rowcount >= 0 else 0


def add_creation_history(conn: sqlite3.Connection, entity: Entity, first_rowid: int, last_rowid: int, *,
                         run_id: int, at: str, source_file: str | None, who: str | None) -> None:
    """History rows "new" for the records with rowids ``first_rowid..last_rowid``, in rowid order:
    what :func:`add_history` writes for them, without binding ten values per record from Python."""
    conn.execute(
        "INSERT INTO history(run_id, at, entity, record_id, field, old, new, source_file, who, how) "
        f'SELECT ?, ?, ?, "{entity.id_column.key}", NULL, NULL, NULL, ?, ?, \'new\' FROM "{entity.key}" '
        "WHERE rowid BETWEEN ? AND ? ORDER BY rowid", (run_id, at, entity.key, source_file, who, first_rowid,
                                                        last_rowid))


def _hist_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def history_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM history").fetchone()[0])


def history_rows(conn: sqlite3.Connection, limit: int | None = None) -> list[tuple[Any, ...]]:
    """Newest first: (history_id, run_id, at, entity, record_id, field, old, new, source_file, who, how)."""
    sql = ("SELECT history_id, run_id, at, entity, record_id, field, old, new, source_file, who, how "
           "FROM history ORDER BY history_id DESC")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return conn.execute(sql).fetchall()


#: Record ids per history query: well below SQLite's limit on bound parameters.
_HISTORY_CHUNK = 500


def history_of(conn: sqlite3.Connection, entity: str, record_ids: Iterable[str]) -> Iterator[sqlite3.Row]:
    """History rows of these records of ``entity`` (all ``history`` columns, as the connection's row
    type), oldest first within each chunk of :data:`_HISTORY_CHUNK` ids."""
    rids = list(record_ids)
    for i in range(0, len(rids), _HISTORY_CHUNK):
        chunk = rids[i:i + _HISTORY_CHUNK]
        marks = ", ".join("?" * len(chunk))
        yield from conn.execute("SELECT history_id, run_id, at, entity, record_id, field, old, new, "
                                "source_file, who, how FROM history WHERE entity = ? AND record_id IN "
                                f"({marks}) ORDER BY history_id", [entity, *chunk])


def last_changes(conn: sqlite3.Connection, entity: str) -> Iterator[tuple[str, str | None]]:
    """(record id, latest ``history.at``) per record of ``entity``: when anybody last changed it."""
    yield from conn.execute("SELECT record_id, MAX(at) FROM history WHERE entity = ? GROUP BY record_id",
                            (entity,))


# --- workbooks and bases ------------------------------------------------------------------------------

def register_workbook(conn: sqlite3.Connection, workbook_id: str, *, kind: str, owner: str | None,
                      lang: str | None, created: str | None, path: str | None, run_id: int | None) -> None:
    conn.execute("INSERT INTO workbooks(workbook_id, kind, owner, lang, created, path, run_id) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(workbook_id) DO UPDATE SET "
                 "owner = excluded.owner, lang = excluded.lang, path = excluded.path",
                 (workbook_id, kind, owner, lang, created, path, run_id))


def workbook_kind(conn: sqlite3.Connection, workbook_id: str) -> str | None:
    row = conn.execute("SELECT kind FROM workbooks WHERE workbook_id = ?", (workbook_id,)).fetchone()
    return None if row is None else row[0]


def workbook_owner(conn: sqlite3.Connection, workbook_id: str) -> str | None:
    """The owner recorded for a workbook id (the person it was handed to, or who merged it first)."""
    row = conn.execute("SELECT owner FROM workbooks WHERE workbook_id = ?", (workbook_id,)).fetchone()
    return None if row is None else row[0]


def base_ids(conn: sqlite3.Connection, entity: Entity, workbook: str) -> set[str]:
    """The IDs of the records in a workbook's base (what it was handed or last sent)."""
    return {r[0] for r in conn.execute(
        f'SELECT "{entity.id_column.key}" FROM "{base_table(entity)}" WHERE _workbook = ?', (workbook,))}


def mark_workbook_merged(conn: sqlite3.Connection, workbook_id: str, run_id: int) -> None:
    conn.execute("UPDATE workbooks SET last_merged_run = ? WHERE workbook_id = ?", (run_id, workbook_id))


def owner_langs(conn: sqlite3.Connection) -> dict[str, str]:
    """The language each owner's latest workbook used, so distribute hands English back to English."""
    out: dict[str, str] = {}
    for owner, lang in conn.execute("SELECT owner, lang FROM workbooks WHERE owner IS NOT NULL "
                                    "AND lang IS NOT NULL ORDER BY COALESCE(last_merged_run, run_id, 0), "
                                    "rowid"):
        out[owner] = lang
    return out


def prune_workbooks(conn: sqlite3.Connection, schema: Schema, owner: str, keep: int) -> int:
    """Forget the bases of all but the ``keep`` newest distributed workbooks of ``owner``."""
    ids = [r[0] for r in conn.execute("SELECT workbook_id FROM workbooks WHERE kind = 'distributed' AND "
                                      "owner = ? ORDER BY created DESC, rowid DESC", (owner,))]
    old = ids[keep:]
    for wid in old:
        for entity in schema:
            conn.execute(f'DELETE FROM "{base_table(entity)}" WHERE _workbook = ?', (wid,))
        conn.execute("DELETE FROM workbooks WHERE workbook_id = ?", (wid,))
    return len(old)


def load_base(conn: sqlite3.Connection, entity: Entity, workbook: str) -> dict[str, tuple[Any, ...]]:
    """record id -> values in ``entity.keys`` order, as ``workbook`` last held them."""
    keys = ", ".join(f'"{k}"' for k in entity.keys)
    return {r[0]: r for r in _plain(conn).execute(
        f'SELECT {keys} FROM "{base_table(entity)}" WHERE _workbook = ?', (workbook,)).fetchall()}


def save_base(conn: sqlite3.Connection, entity: Entity, workbook: str, rows: Iterable[Sequence[Any]],
              *, drop: Iterable[str] = ()) -> None:
    """Upsert base rows (values in ``entity.keys`` order) and delete the ids in ``drop``."""
    keys = ["_workbook", *entity.keys]
    cols = ", ".join(f'"{k}"' for k in keys)
    marks = ", ".join("?" for _ in keys)
    conn.executemany(f'INSERT OR REPLACE INTO "{base_table(entity)}" ({cols}) VALUES ({marks})',
                     ((workbook, *r) for r in rows))
    conn.executemany(f'DELETE FROM "{base_table(entity)}" WHERE _workbook = ? AND "{entity.id_column.key}" = ?',
                     ((workbook, rid) for rid in drop))


def max_rowid(conn: sqlite3.Connection, entity: Entity) -> int:
    return int(conn.execute(f'SELECT COALESCE(MAX(rowid), 0) FROM "{entity.key}"').fetchone()[0])


def copy_bases_from_records(conn: sqlite3.Connection, entity: Entity, workbook: str, first_rowid: int,
                            last_rowid: int) -> None:
    """Save as ``workbook``'s base the records with rowids ``first_rowid..last_rowid`` as they are now
    (records it just created: copying inside SQLite saves binding every value again)."""
    cols = ", ".join(f'"{k}"' for k in entity.keys)
    conn.execute(f'INSERT OR REPLACE INTO "{base_table(entity)}" ("_workbook", {cols}) '
                 f'SELECT ?, {cols} FROM "{entity.key}" WHERE rowid BETWEEN ? AND ?',
                 (workbook, first_rowid, last_rowid))


# --- origins: rows without an ID, recognised again -----------------------------------------------------

def load_origins(conn: sqlite3.Connection, source: str) -> dict[tuple[str, str], str]:
    return {(e, f): rid for e, f, rid in conn.execute(
        "SELECT entity, fingerprint, record_id FROM origins WHERE source = ?", (source,))}


def save_origins(conn: sqlite3.Connection, source: str, rows: Iterable[tuple[str, str, str]],
                 run_id: int) -> None:
    """Remember (entity, fingerprint, record id): the same row without an ID maps to the same record."""
    conn.executemany("INSERT OR REPLACE INTO origins(source, entity, fingerprint, record_id, run_id) "
                     "VALUES (?, ?, ?, ?, ?)", ((source, e, f, rid, run_id) for e, f, rid in rows))


# --- review: duplicates ---------------------------------------------------------------------------------

def add_duplicate(conn: sqlite3.Connection, entity: str, a_id: str, b_id: str, *, score: float, kind: str,
                  evidence: Sequence[str], run_id: int, source_file: str | None = None) -> bool:
    """Queue a possible duplicate pair (stored with the smaller id first); False if already known.

    ``source_file``: the workbook whose row or edit raised the pair, shown on 重複候補."""
    a, b = sorted((a_id, b_id))
    cur = conn.execute("INSERT OR IGNORE INTO duplicates(entity, a_id, b_id, score, kind, evidence, status, "
                       "run_id, source_file) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                       (entity, a, b, float(score), kind, json.dumps(list(evidence), ensure_ascii=False),
                        run_id, source_file))
    return cur.rowcount > 0


def duplicates(conn: sqlite3.Connection, *, pending_only: bool = True) -> list[dict[str, Any]]:
    sql = ("SELECT pair_id, entity, a_id, b_id, score, kind, evidence, status, run_id, source_file "
           "FROM duplicates")
    if pending_only:
        sql += " WHERE status = 'pending'"
    sql += " ORDER BY pair_id"
    out = []
    for r in conn.execute(sql):
        d = dict(zip(("pair_id", "entity", "a_id", "b_id", "score", "kind", "evidence", "status", "run_id",
                      "source_file"), r, strict=True))
        d["evidence"] = json.loads(d["evidence"] or "[]")
        out.append(d)
    return out


def decide_duplicate(conn: sqlite3.Connection, pair_id: int, status: str, *, run_id: int, at: str) -> None:
    conn.execute("UPDATE duplicates SET status = ?, decided_run = ?, decided_at = ? WHERE pair_id = ?",
                 (status, run_id, at, pair_id))


def repoint_duplicates(conn: sqlite3.Connection, entity: str, old_id: str, new_id: str) -> None:
    """After a merge of ``old_id`` into ``new_id``, its open pairs point at the survivor (or close)."""
    rows = conn.execute("SELECT pair_id, a_id, b_id FROM duplicates WHERE entity = ? AND status = 'pending' "
                        "AND (a_id = ? OR b_id = ?)", (entity, old_id, old_id)).fetchall()
    for pair_id, a, b in rows:
        a2, b2 = sorted((new_id if a == old_id else a, new_id if b == old_id else b))
        exists = conn.execute("SELECT 1 FROM duplicates WHERE entity = ? AND a_id = ? AND b_id = ? "
                              "AND pair_id != ?", (entity, a2, b2, pair_id)).fetchone()
        if a2 == b2 or exists:
            conn.execute("UPDATE duplicates SET status = 'merged' WHERE pair_id = ?", (pair_id,))
        else:
            conn.execute("UPDATE duplicates SET a_id = ?, b_id = ? WHERE pair_id = ?", (a2, b2, pair_id))


def known_pairs(conn: sqlite3.Connection, entity: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b in conn.execute("SELECT a_id, b_id FROM duplicates WHERE entity = ?", (entity,))}


# --- review: conflicts ----------------------------------------------------------------------------------

def pending_conflict_ids(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    """(entity, record id, field) -> conflict id, for conflicts still waiting for a decision."""
    return {(e, r, f): cid for cid, e, r, f in conn.execute(
        "SELECT conflict_id, entity, record_id, field FROM conflicts WHERE status = 'pending'")}


def pending_conflict_offers(conn: sqlite3.Connection) -> set[tuple[int, str, str]]:
    """(conflict id, value as JSON text, who) already offered on a pending conflict."""
    return {(cid, v, who) for cid, v, who in conn.execute(
        "SELECT v.conflict_id, v.value, v.who FROM conflict_values v JOIN conflicts c "
        "ON c.conflict_id = v.conflict_id WHERE c.status = 'pending'")}


def add_conflict(conn: sqlite3.Connection, entity: str, record_id: str, field: str, master_value: Any,
                 *, run_id: int) -> int:
    cur = conn.execute("INSERT INTO conflicts(entity, record_id, field, master_value, status, run_id) "
                       "VALUES (?, ?, ?, ?, 'pending', ?)",
                       (entity, record_id, field, encode_value(master_value), run_id))
    return int(cur.lastrowid or 0)


def add_conflict_values(conn: sqlite3.Connection, rows: Iterable[tuple[int, Any, str, str, str, int]]) -> None:
    """(conflict id, value, who, source file, when, run id); the same value from the same person once."""
    conn.executemany("INSERT OR IGNORE INTO conflict_values(conflict_id, value, who, source_file, at, run_id) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     ((cid, encode_value(v), who, src, at, run) for cid, v, who, src, at, run in rows))


def conflicts(conn: sqlite3.Connection, *, pending_only: bool = True) -> list[dict[str, Any]]:
    sql = "SELECT conflict_id, entity, record_id, field, master_value, status, run_id FROM conflicts"
    if pending_only:
        sql += " WHERE status = 'pending'"
    sql += " ORDER BY conflict_id"
    out = []
    values: dict[int, list[dict[str, Any]]] = {}
    for cid, v, who, src, at in conn.execute("SELECT conflict_id, value, who, source_file, at FROM "
                                             "conflict_values ORDER BY rowid"):
        values.setdefault(cid, []).append({"value": decode_value(v), "who": who, "source_file": src, "at": at})
    for r in conn.execute(sql):
        d = dict(zip(("conflict_id", "entity", "record_id", "field", "master_value", "status", "run_id"), r,
                     strict=True))
        d["master_value"] = decode_value(d["master_value"])
        d["values"] = values.get(d["conflict_id"], [])
        out.append(d)
    return out


def decide_conflict(conn: sqlite3.Connection, conflict_id: int, status: str, resolution: Any, *,
                    run_id: int, at: str) -> None:
    conn.execute("UPDATE conflicts SET status = ?, resolution = ?, decided_run = ?, decided_at = ? "
                 "WHERE conflict_id = ?", (status, encode_value(resolution), run_id, at, conflict_id))


def repoint_conflicts(conn: sqlite3.Connection, entity: str, old_id: str, new_id: str) -> None:
    conn.execute("UPDATE conflicts SET record_id = ? WHERE entity = ? AND record_id = ? AND status = 'pending'",
                 (new_id, entity, old_id))


# --- rows rejected by a merge, kept for their owner's next handout -------------------------------------

def _cell_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, time):
        return {"time": value.isoformat()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    return str(value)  # anything else a cell reader may give (a duration): shown as text


def _cell_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return date.fromisoformat(value["date"])
        if "time" in value:
            return time.fromisoformat(value["time"])
    return value


def replace_rejected_rows(conn: sqlite3.Connection, sources: Iterable[str],
                          rows: Iterable[Mapping[str, Any]], *, run_id: int | None) -> None:
    """The rejected rows held by the workbooks ``sources`` are now ``rows`` (dicts as
    :func:`rejected_rows` returns them, with ``owner`` and ``source``); their earlier ones are dropped."""
    conn.executemany("DELETE FROM rejected_rows WHERE source = ?", ((s,) for s in sources))
    seq: dict[tuple[str, str], int] = {}
    out = []
    for r in rows:
        owner, entity = r["owner"], r["entity"]
        if (owner, entity) not in seq:
            seq[(owner, entity)] = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM rejected_rows WHERE owner = ? "
                                                "AND entity = ?", (owner, entity)).fetchone()[0]
        n = seq[(owner, entity)] = seq[(owner, entity)] + 1
        out.append((owner, entity, n, r["record_id"], r["source_file"], r["source_row"],
                    json.dumps({k: _cell_json(v) for k, v in r["cells"].items()}, ensure_ascii=False),
                    json.dumps([list(f) for f in r["findings"]], ensure_ascii=False), r.get("run_id", run_id),
                    r["source"]))
    conn.executemany("INSERT INTO rejected_rows(owner, entity, seq, record_id, source_file, source_row, cells, "
                     "findings, run_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", out)


def hand_back_rejected_rows(conn: sqlite3.Connection, owner: str, workbook_id: str,
                            rows: Iterable[Mapping[str, Any]]) -> None:
    """``owner``'s rejected rows are now ``rows``, held by the handout ``workbook_id``."""
    conn.execute("DELETE FROM rejected_rows WHERE owner = ?", (owner,))
    replace_rejected_rows(conn, (), ({**r, "owner": owner, "source": workbook_id} for r in rows), run_id=None)


def rejected_rows(conn: sqlite3.Connection, owner: str) -> list[dict[str, Any]]:
    """``owner``'s rejected rows in the order they were typed: entity, record_id, source (the workbook
    holding it), source_file, source_row, cells (column key -> value as typed), findings ([key,
    severity, rule, message]) and run_id (the merge that rejected it)."""
    if not table_exists(conn, "rejected_rows"):
        return []
    out = []
    for entity, rid, source, source_file, source_row, cells, findings, run_id in conn.execute(
            "SELECT entity, record_id, source, source_file, source_row, cells, findings, run_id FROM rejected_rows "
            "WHERE owner = ? ORDER BY entity, seq", (owner,)):
        out.append({"entity": entity, "record_id": rid, "source": source, "source_file": source_file,
                    "source_row": source_row, "cells": {k: _cell_from_json(v) for k, v in json.loads(cells).items()},
                    "findings": json.loads(findings), "run_id": run_id})
    return out


def rejected_owners(conn: sqlite3.Connection) -> set[str]:
    """Everyone with rejected rows waiting to be handed back."""
    if not table_exists(conn, "rejected_rows"):
        return set()
    return {r[0] for r in conn.execute("SELECT DISTINCT owner FROM rejected_rows")}


# --- review: rows deleted from a team workbook ------------------------------------------------------------

def add_deletion(conn: sqlite3.Connection, entity: str, record_id: str, source: str, source_file: str,
                 who: str, run_id: int) -> bool:
    cur = conn.execute("INSERT OR IGNORE INTO deletions(entity, record_id, source, source_file, who, status, "
                       "run_id) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                       (entity, record_id, source, source_file, who, run_id))
    return cur.rowcount > 0


def deletions(conn: sqlite3.Connection, *, pending_only: bool = True) -> list[dict[str, Any]]:
    sql = "SELECT deletion_id, entity, record_id, source, source_file, who, status, run_id FROM deletions"
    if pending_only:
        sql += " WHERE status = 'pending'"
    sql += " ORDER BY deletion_id"
    names = ("deletion_id", "entity", "record_id", "source", "source_file", "who", "status", "run_id")
    return [dict(zip(names, r, strict=True)) for r in conn.execute(sql)]


def decide_deletion(conn: sqlite3.Connection, deletion_id: int, status: str, *, run_id: int, at: str) -> None:
    conn.execute("UPDATE deletions SET status = ?, decided_run = ?, decided_at = ? WHERE deletion_id = ?",
                 (status, run_id, at, deletion_id))


def withdraw_deletions(conn: sqlite3.Connection, entity: str, source: str, record_ids: Iterable[str]) -> None:
    """A row listed as deleted is back in its workbook: the question is moot."""
    conn.executemany("UPDATE deletions SET status = 'returned' WHERE entity = ? AND source = ? AND "
                     "record_id = ? AND status = 'pending'", ((entity, source, rid) for rid in record_ids))


def pending_deletion_keys(conn: sqlite3.Connection, entity: str, source: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT record_id FROM deletions WHERE entity = ? AND source = ? AND "
                                       "status = 'pending'", (entity, source))}


def pending_count(conn: sqlite3.Connection, table: str) -> int:
    """Rows still waiting for a person in a review table (``duplicates``, ``conflicts``, ``deletions``)."""
    return int(conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE status = ?', (PENDING,)).fetchone()[0])


# --- import log -----------------------------------------------------------------------------------------

IMPORT_LOG_COLUMNS = ("run_id", "file", "entity", "status", "rows_read", "new", "updated", "unchanged",
                      "linked", "rejected", "conflicts", "error_workbook", "message")


def add_import_log(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    marks = ", ".join("?" for _ in IMPORT_LOG_COLUMNS)
    conn.executemany(f"INSERT INTO import_log({', '.join(IMPORT_LOG_COLUMNS)}) VALUES ({marks})", rows)


def import_log(conn: sqlite3.Connection, limit_runs: int | None = None) -> list[tuple[Any, ...]]:
    sql = f"SELECT {', '.join(IMPORT_LOG_COLUMNS)} FROM import_log"
    if limit_runs is not None:
        sql += (f" WHERE run_id IN (SELECT DISTINCT run_id FROM import_log ORDER BY run_id DESC "
                f"LIMIT {int(limit_runs)})")
    sql += " ORDER BY run_id DESC, rowid"
    return conn.execute(sql).fetchall()


def run_time(conn: sqlite3.Connection, run_id: int) -> str | None:
    row = conn.execute("SELECT started FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else row[0]


def last_finished_run(conn: sqlite3.Connection) -> str | None:
    """When the latest run that changed the master finished (ISO): merge, resolve, handover, but no
    dry run and no failed one.  None when there is none or the run log cannot be read (a database
    from before merge): the add-in only shows it."""
    try:
        row = conn.execute("SELECT MAX(finished) FROM runs WHERE finished IS NOT NULL "
                           "AND status NOT IN ('running', 'failed', 'error', 'aborted') "
                           "AND COALESCE(command, '') NOT LIKE '%dry-run%'").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else str(row[0])


# --- the third-party provision record (提供記録), written by export ------------------------------------

PROVISION_TABLE = "provisions"

_PROVISION_DDL = f"""
CREATE TABLE IF NOT EXISTS {PROVISION_TABLE} (
    provision_id INTEGER PRIMARY KEY, provided_at TEXT NOT NULL, recipient TEXT NOT NULL,
    purpose TEXT NOT NULL, kind TEXT NOT NULL, columns TEXT NOT NULL, records INTEGER NOT NULL,
    counts TEXT NOT NULL, record_ids TEXT NOT NULL, file TEXT, who TEXT
)"""


def ensure_provision_table(conn: sqlite3.Connection) -> None:
    """Created on the first export to a third party, not by :func:`create_tables`: a master that never
    gave data away has no provision record at all."""
    conn.execute(_PROVISION_DDL)


def add_provision(conn: sqlite3.Connection, *, provided_at: str, recipient: str, purpose: str, kind: str,
                  columns: str, records: int, counts: str, record_ids: str, file: str, who: str) -> int:
    """Append one provision record (``columns``, ``counts``, ``record_ids`` as JSON text); its number."""
    ensure_provision_table(conn)
    cur = conn.execute(
        f"INSERT INTO {PROVISION_TABLE}(provided_at, recipient, purpose, kind, columns, records, counts, "
        "record_ids, file, who) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (provided_at, recipient, purpose, kind, columns, records, counts, record_ids, file, who))
    return int(cur.lastrowid or 0)


def provision_rows(conn: sqlite3.Connection, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Every provision record, oldest first, the columns ``keys`` (names of the table's columns);
    none before the first export to a third party."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (PROVISION_TABLE,)).fetchone() is None:
        return []
    return conn.execute(f"SELECT {', '.join(keys)} FROM {PROVISION_TABLE} ORDER BY provision_id").fetchall()


# --- backups ----------------------------------------------------------------------------------------------

@contextmanager
def read_locked(path: Path, *, timeout: float = 60) -> Iterator[None]:
    """Hold a read (SHARED) lock on the database at ``path`` from entry to exit.

    Why: a backup copies the file byte for byte while a merge works inside its transaction; as long
    as this lock is held the merge can only write into its own page cache, never reach the file, so
    the copy is exactly the database as it was when the lock was taken.  Waits up to ``timeout``
    seconds for a writer to finish first.  A connection of its own, without :func:`connect`'s
    settings: it only reads, and only to hold the lock.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # SHARED lock until closed
        yield
    finally:
        conn.close()


def memory_copy(path: Path) -> sqlite3.Connection:
    """A private in-memory copy of the master database (an empty one when there is none yet)."""
    conn = memory_master()
    if Path(path).exists():
        src = connect(path)
        try:
            src.backup(conn)
        finally:
            src.close()
    return conn


#: A master database that does not exist yet is built in memory and written whole at the commit when
#: the inputs total at most this many bytes (the database is ~15 times the .xlsx bytes: 21 MB of team
#: workbooks made a 324 MB master.db, so this is about 1 GB of memory at most).  Why: nothing spills
#: to disk during the run, and the forked child (:mod:`xlcrm.store.snapshot`) works on the parent's pages as
#: they were at the fork instead of a serialized copy, which is faster and takes less memory
#: (benchmarks/README.md, Merge).  Larger first imports are built in the file like every later
#: merge, with a bounded page cache.
MEMORY_BUILD_MAX_INPUT_BYTES = 60_000_000


def memory_master() -> sqlite3.Connection:
    """A new, empty master database in this process's memory (see MEMORY_BUILD_MAX_INPUT_BYTES);
    :func:`save_image` makes it the file."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


def in_memory(conn: sqlite3.Connection) -> bool:
    """Whether ``conn``'s main database lives in memory (no file behind it)."""
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            return not row[2]
    return False


def save_image(conn: sqlite3.Connection, path: Path) -> None:
    """Write the committed database of ``conn`` (one in memory) to ``path``, a new file.

    The caller writes to a temp file and replaces the real one (``writer.atomic_write`` fsyncs it):
    the replace is the commit of a master built in memory.  SQLite's online backup copies the pages
    as they are; the file is an ordinary rollback-journal database, like one built on disk.  No
    journal and no syncs while it is written: nobody else knows the temp file, and a crash leaves the
    old master in place.  (360 MB: 0.3 s, against 1.3 s for ``serialize()`` and one write.)
    """
    dest = sqlite3.connect(path, isolation_level=None)
    try:
        dest.execute("PRAGMA journal_mode = OFF")
        dest.execute("PRAGMA synchronous = OFF")
        conn.backup(dest)
    finally:
        dest.close()


def backup_to(conn: sqlite3.Connection, target: Path) -> None:
    """A consistent copy of the database (SQLite's online backup), e.g. before a merge changes it."""
    dest = sqlite3.connect(target)
    fileperm.restrict(target)
    try:
        conn.backup(dest)
    finally:
        dest.close()
