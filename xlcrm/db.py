"""The master database: the one module that speaks SQL.

The master's system of record is one SQLite file beside the master workbook (``master.db`` for
``master.xlsx``): one file to back up, transactions that make a merge all-or-nothing, and an FTS5
index for search.  Every other module goes through the functions here, so that a server database
could later take SQLite's place for a firm that outgrows one file.

Layout (derived from the schema, never hand-written): one table per entity named by the entity key,
one column per schema column key, the id column as primary key, plus bookkeeping columns that start
with an underscore:

- ``_state``: ``active``; ``merged`` (a duplicate folded into ``_merged_into``, kept for history);
  ``deleted`` (an admin confirmed the deletion after review).  Readers show ``active`` rows only.
- ``_merged_into``: survivor id for merged rows.
- ``_source``: the file the record came from first; ``_created_run`` / ``_updated_run``: merge runs.

Values are stored canonically: TEXT for text, ISO ``YYYY-MM-DD`` for dates, INTEGER for ints, REAL
for decimals, canonical keys for choices.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def db_path_for(master: Path) -> Path:
    """``master.xlsx`` -> ``master.db``: the database always sits beside its workbook."""
    return Path(master).with_suffix(".db")


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the master database; refuse with one line when it is missing and ``create`` is False."""
    path = Path(path)
    if not create and not path.exists():
        raise XlcrmError(f"{path}: no master database here; run `xlcrm merge ... --master "
                         f"{path.with_suffix('.xlsx')}` first")
    try:
        conn = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT in transaction()
        conn.execute("PRAGMA foreign_keys = ON")
        # A rollback journal, not WAL: the database stays one file to back up and copy.
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = FULL")
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
        conn.execute("COMMIT")


def create_tables(conn: sqlite3.Connection, schema: Schema) -> None:
    """Create missing tables and add columns an admin added to the schema since the last run.

    Columns switched off later are kept in the database (nothing is lost); they just stop appearing
    in workbooks.
    """
    conn.executescript(_FIXED_TABLES)
    for entity in schema:
        _create_entity_table(conn, entity)
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (schema.version,))


def _create_entity_table(conn: sqlite3.Connection, entity: Entity) -> None:
    cols = [f'"{entity.id_column.key}" TEXT PRIMARY KEY']
    cols += [f'"{c.key}" {sql_type(c)}' for c in entity.columns[1:]]
    cols += [f'"{name}" {decl}' for name, decl in BOOKKEEPING]
    conn.execute(f'CREATE TABLE IF NOT EXISTS "{entity.key}" ({", ".join(cols)})')
    have = {row[1] for row in conn.execute(f'PRAGMA table_info("{entity.key}")')}
    for c in entity.columns:
        if c.key not in have:
            conn.execute(f'ALTER TABLE "{entity.key}" ADD COLUMN "{c.key}" {sql_type(c)}')
    for name, decl in BOOKKEEPING:
        if name not in have:
            conn.execute(f'ALTER TABLE "{entity.key}" ADD COLUMN "{name}" {decl}')
    ref = entity.ref_column
    if ref is not None:
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{entity.key}_{ref.key}" ON "{entity.key}"("{ref.key}")')


def format_id(entity: Entity, number: int) -> str:
    """C-000001: the prefix says the entity, six digits sort well in Excel (more digits when needed)."""
    return f"{entity.id_prefix}-{number:06d}"


def fetch_active(conn: sqlite3.Connection, entity: Entity) -> list[sqlite3.Row]:
    keys = ", ".join(f'"{k}"' for k in entity.keys)
    return conn.execute(f'SELECT {keys} FROM "{entity.key}" WHERE {ACTIVE} '
                        f'ORDER BY "{entity.id_column.key}"').fetchall()
