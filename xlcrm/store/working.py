"""The commands that change the master, on a PostgreSQL master: a working copy under the server's lock.

merge, resolve, distribute, export-master, handover, report, the exports and import run the same
master.db code whichever store holds the master.  With a server (:mod:`xlcrm.store.url`) each runs
inside :func:`working_copy`:

1. The master's advisory lock on the server is taken (``pg_advisory_lock``), so the commands of two
   admins on the same master run one after the other; the one that waited says so, and for whom.  The
   server releases the lock by itself when a killed command's connection drops.
2. The command works on a *working copy*: a master.db bound to master.xlsx
   (:func:`xlcrm.store.db.bind_working_copy`), so it runs its master.db code unchanged.  The copy is
   kept between commands in this user's state folder (:func:`xlcrm.store.outputs.state_dir`, readable
   by its owner only), one per server database, and read anew from the server only when the server's
   master changed since: every write there sets a new ``server_version`` in its ``meta``, which the
   copy holds too.  Backups beside master.xlsx are copies of it: the server's state before the command.
3. Triggers in the copy note the key of each row the command inserts, updates or deletes.  At the
   command's commit (:func:`xlcrm.store.db.commit`, before SQLite's own) those rows are written to the
   server in one transaction: deleted there by key, then copied in with COPY.  A table without the
   triggers (created or rebuilt whole by the command, as a full build of the search index is) or
   changed in more than half its rows is replaced whole.  A failure there, or a killed process, leaves
   the server as it was, and the command fails as it would on SQLite, with nothing written.
4. The lock is released.

Changes made on the server other than by xlcrm (SQL typed by hand) are not seen by a copy already
kept; ``xlcrm store copy`` (which sets a new version) or removing the state folder's copy makes the
next command read the server again.

On a master that the server does not hold yet (an empty database, or one made by ``store init``) only
``merge`` starts one, and its first commit copies every table.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from xlcrm import fileperm
from xlcrm.errors import XlcrmError
from xlcrm.schema import Schema
from xlcrm.store import db, pg
from xlcrm.store.outputs import note_server, state_dir
from xlcrm.store.searchindex import (
    BIGRAM_TABLE,
    FTS_TABLE,
    TEXT_BIGRAM_TABLE,
    TEXT_FTS_TABLE,
    VOCAB_TABLE,
    build_index,
    table_columns,
)
from xlcrm.store.url import StoreURL

if TYPE_CHECKING:
    import psycopg

#: The working copy's table of changed rows' keys (table, up to three key values).
CHANGES = "_xlcrm_changed"
#: ``meta`` key: a new random value at every write to the server's master; a kept copy holding the same
#: is that master.
VERSION = pg.VERSION_KEY
#: A table changed in more than this share of its rows is replaced whole rather than row by row.
WHOLE_SHARE = 0.5
#: Rows per COPY progress report.
_STEP = 20_000

Progress = Callable[[str, int, int], None]


@dataclass
class ServerSession:
    """One command's hold on the PostgreSQL master: what it waited for, and what it wrote."""

    store: StoreURL
    path: Path  # the working copy
    had_master: bool
    waited: float = 0.0
    waited_for: str = ""
    #: Seconds: ``server_wait`` (for another admin), ``server_read``, ``server_write``.
    timings: dict[str, float] = field(default_factory=dict)

    def wait_note(self) -> str | None:
        """A sentence for the command's summary when it had to wait for another admin's command."""
        if not self.waited_for:
            return None
        return (f"waited {self.waited:.1f} s for {self.waited_for} on {self.store} to finish; this run "
                "started from its result")


def copy_path(store: StoreURL) -> Path:
    """Where this user's working copy of the server's master ``store`` is kept."""
    parts = urlsplit(store.url)
    key = f"{parts.hostname}:{parts.port}/{parts.path.lstrip('/')}?{parts.query}@{parts.username}"
    return state_dir() / "servers" / hashlib.sha256(key.encode()).hexdigest()[:16] / "master.db"


@contextmanager
def working_copy(store: StoreURL, master: str | Path, schema: Schema, command: str, *,
                 progress: Progress | None = None, creates: bool = False) -> Iterator[ServerSession]:
    """Run the body on a working copy of the PostgreSQL master ``store``, bound to ``master``
    (master.xlsx), under the master's lock on the server; the body's commits reach the server.

    ``creates``: the command may start a master the server does not hold yet (merge); other commands
    refuse in one line.  A master.xlsx that exists while the server holds no master is refused too: its
    records are in a master.db, to be copied there first (``xlcrm store copy``).
    """
    master = Path(master).resolve()
    conn = pg.connect(store)
    try:
        conn.autocommit = True
        conn.execute("SELECT set_config('application_name', %s, false)", (f"xlcrm {command}"[:63],))
        session = ServerSession(store, copy_path(store), had_master=False)
        started = time.perf_counter()
        _lock(conn, session, progress)
        session.timings["server_wait"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        with _reading(store), conn.transaction():
            session.had_master = _refresh(conn, store, schema, session.path, progress)
        session.timings["server_read"] = round(time.perf_counter() - started, 3)
        if not session.had_master:
            if master.exists():
                raise XlcrmError(f"{store}: holds no master yet, but {master.name} exists; copy the master.db "
                                 f"beside it to the server first: `xlcrm store copy --master {master}`")
            if not creates:
                raise XlcrmError(f"{store}: holds no master yet; `xlcrm merge TEAM... --master {master}` "
                                 "starts one there, or `xlcrm store copy --master master.xlsx` moves one in")

        def push(sq: sqlite3.Connection) -> None:
            began = time.perf_counter()
            _push(conn, sq, schema, session, progress)
            session.timings["server_write"] = round(session.timings.get("server_write", 0)
                                                    + time.perf_counter() - began, 3)

        note_server(master, str(store))
        with db.bind_working_copy(db.WorkingCopy(master, session.path.resolve(), push)):
            yield session
    finally:
        conn.close()  # releases the lock


def _refresh(conn: psycopg.Connection[Any], store: StoreURL, schema: Schema, path: Path,
             progress: Progress | None) -> bool:
    """Make the kept copy the server's master (reading it anew unless it already is); whether the
    server holds a master."""
    tables = pg._existing_tables(conn)
    if not pg._is_master(conn, tables):
        _new_copy(path, schema, conn, store, progress, pull=False)
        return False
    _check_version(conn, store, schema)
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (VERSION,)).fetchone()
    if row is not None and _kept_version(path) == row[0]:
        return True
    _new_copy(path, schema, conn, store, progress, pull=True)
    return True


def _kept_version(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        sq = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if not table_columns(sq, CHANGES):
                return None
            row = sq.execute("SELECT value FROM meta WHERE key = ?", (VERSION,)).fetchone()
            return None if row is None else str(row[0])
        finally:
            sq.close()
    except sqlite3.Error:
        return None


def _new_copy(path: Path, schema: Schema, conn: psycopg.Connection[Any], store: StoreURL,
              progress: Progress | None, *, pull: bool) -> None:
    """Replace the kept copy by the server's master (or a new master's empty tables)."""
    fileperm.make_dirs(path.parent)
    with _written_whole(path) as part:
        if pull:
            _pull(conn, store, schema, part, progress)
            return
        sq = db.connect(part, create=True)
        try:
            sq.execute("BEGIN")
            db.create_tables(sq, schema)
            # No triggers: the first write to the server copies every table (they come after it).
            sq.execute(f"CREATE TABLE IF NOT EXISTS {CHANGES} (tbl TEXT NOT NULL, k1, k2, k3)")
            sq.execute("COMMIT")
        finally:
            sq.close()


@contextmanager
def _written_whole(path: Path) -> Iterator[Path]:
    """A new file beside ``path`` for the body to write; it replaces ``path`` once the body is done, and
    is removed when the body fails."""
    part = path.with_name(f".{path.name}.part")
    part.unlink(missing_ok=True)
    try:
        yield part
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _check_version(conn: psycopg.Connection[Any], store: StoreURL, schema: Schema) -> None:
    version = _schema_version(conn) or ""
    if version.split(".")[0] != schema.version.split(".")[0]:
        raise XlcrmError(f"{store}: its master is of schema version {version}, this xlcrm writes "
                         f"{schema.version}; use the xlcrm that made it, or copy the master out "
                         "(`xlcrm store copy --from URL --to master.db`) and start a new database")


def _lock(conn: psycopg.Connection[Any], session: ServerSession, progress: Progress | None) -> None:
    got = conn.execute(f"SELECT pg_try_advisory_lock({pg.lock_key_sql()})").fetchone()
    if got and got[0]:
        return
    session.waited_for = _holder(conn)
    label = f"waiting for {session.waited_for} to finish"
    if progress:
        progress(label, 0, 1)
    started = time.perf_counter()
    conn.execute(f"SELECT pg_advisory_lock({pg.lock_key_sql()})")
    session.waited = time.perf_counter() - started
    if progress:
        progress(label, 1, 1)


def _holder(conn: psycopg.Connection[Any]) -> str:
    """Who holds the master's lock: "`xlcrm merge` of USER (HOST) since HH:MM"."""
    row = conn.execute(
        "SELECT a.application_name, a.usename, coalesce(host(a.client_addr), 'this machine'), "
        "to_char(a.xact_start, 'HH24:MI') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"AND ((l.classid::bigint << 32) | l.objid::bigint) = {pg.lock_key_sql()} "
        "LIMIT 1").fetchone()
    if row is None:
        return "another xlcrm command"
    name, user, host, since = row
    what = f"`{name}`" if str(name or "").startswith("xlcrm ") else "another xlcrm command"
    return f"{what} of {user} ({host}, since {since})"


@contextmanager
def _reading(store: StoreURL) -> Iterator[None]:
    """A server error while reading the master becomes one line (nothing was written)."""
    psycopg = pg._psycopg()
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _refused(store, exc) from None
    except psycopg.Error as exc:
        raise XlcrmError(f"{store}: reading the master failed ({pg._first_line(exc)}); nothing was "
                         "written") from None


def _refused(store: StoreURL, exc: BaseException) -> XlcrmError:
    return XlcrmError(f"{store}: the server refused this login ({pg._first_line(exc)}); nothing was changed — "
                      "the commands that change the master need the login of the master database's owner "
                      f"or of the role {pg.ROLE_PREFIX}{pg.ADMIN_ROLE} (`xlcrm store user NAME --role admin`)")


# --- reading the server's master into the working copy ------------------------------------------------

def _schema_version(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def _master_tables(sq: sqlite3.Connection, schema: Schema) -> list[str]:
    """The working copy's tables that are the master's (not SQLite's FTS5 index, not the change log)."""
    names = [*pg.master_tables(schema), db.PROVISION_TABLE, *pg.SEARCH_TABLES]
    return [t for t in dict.fromkeys(names) if table_columns(sq, t)]


def copy_out(store: StoreURL, schema: Schema, target: str | Path, *,
             progress: Progress | None = None) -> pg.CopyReport:
    """Copy the PostgreSQL master into the master database ``target`` (``master.db``), replacing it:
    every table, the history and the review state, read in one snapshot of the server; the search
    index is built anew with SQLite's own FTS5 index.  Written to a temporary file beside ``target``
    and moved into place once complete."""
    psycopg = pg._psycopg()
    started = time.perf_counter()
    conn = pg.connect(store)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with _written_whole(Path(target)) as part:
            with _reading(store), conn.transaction():
                if not pg._is_master(conn, pg._existing_tables(conn)):
                    raise XlcrmError(f"{store}: holds no xlcrm master to copy (`xlcrm store copy --master "
                                     "master.xlsx` copies one there)")
                _check_version(conn, store, schema)
                _pull(conn, store, schema, part, progress, watch=False)
            sq = db.connect(part)
            try:
                build_index(sq, schema)  # with FTS5 where this SQLite has it, as a merge builds it
                rows = {t: int(sq.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
                        for t in _master_tables(sq, schema)}
            finally:
                sq.close()
    finally:
        conn.close()
    return pg.CopyReport(str(target), rows, time.perf_counter() - started)


def _pull(conn: psycopg.Connection[Any], store: StoreURL, schema: Schema, path: Path,
          progress: Progress | None, *, watch: bool = True) -> None:
    """Write the server's master into the new file ``path``.  ``watch``: with the change log and its
    triggers."""
    tables = pg._existing_tables(conn)
    sq = db.connect(path, create=True)
    try:
        # A new file, replaced whole if this fails: no journal to keep, nothing to sync until the end.
        sq.execute("PRAGMA journal_mode = OFF")
        sq.execute("PRAGMA synchronous = OFF")
        sq.execute("BEGIN")
        db.create_tables(sq, schema)
        if pg.SEARCH_TABLES[0] in tables:
            # The index tables in this xlcrm's layout, without SQLite's FTS5 tables (the trigram and
            # pair indexes): the server has none (its meta says so), and the copy is searched by nobody.
            build_index(sq, schema)
            for name in (VOCAB_TABLE, FTS_TABLE, TEXT_FTS_TABLE, BIGRAM_TABLE, TEXT_BIGRAM_TABLE):
                sq.execute(f"DROP TABLE IF EXISTS {name}")
        if db.PROVISION_TABLE in tables:
            db.ensure_provision_table(sq)
        wanted = [t for t in _master_tables(sq, schema) if t in tables]
        total = sum(_estimate(conn, t) for t in wanted)
        done = 0
        for table in wanted:
            done = _pull_table(conn, sq, table, progress, done, total)
        if progress:
            progress("reading the master from the server", total, total)
        if watch:
            _watch(sq, _master_tables(sq, schema))
        sq.execute("COMMIT")
        sq.execute("PRAGMA journal_mode = DELETE")
    finally:
        sq.close()


def _estimate(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute("SELECT greatest(reltuples::bigint, 0) FROM pg_class WHERE oid = to_regclass(%s)",
                       (table,)).fetchone()
    return int(row[0]) if row else 0


def _pull_table(conn: psycopg.Connection[Any], sq: sqlite3.Connection, table: str,
                progress: Progress | None, done: int, total: int) -> int:
    theirs = pg.server_columns(conn, table)
    cols = pg.shared_columns(conn, sq, table, theirs)
    names = ", ".join(f'"{c}"' for c in cols)
    sq.execute(f'DELETE FROM "{table}"')  # what create_tables or the index build put there
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(cols))})'
    # A server-side cursor in binary: rows made in C, _STEP at a time (COPY's row-by-row reads are slower).
    with conn.cursor(name=f"xlcrm_pull_{table}", binary=True) as cur:
        cur.itersize = _STEP
        cur.execute(f'SELECT {names} FROM "{table}"')  # type: ignore[arg-type]
        while batch := cur.fetchmany(_STEP):
            sq.executemany(insert, batch)
            done += len(batch)
            if progress:
                progress("reading the master from the server", done, max(total, done))
    return done


# --- noting what the command changes ------------------------------------------------------------------

def _keys(sq: sqlite3.Connection, table: str) -> list[str]:
    """``table``'s primary key columns, in key order."""
    info = sorted((r[5], r[1]) for r in sq.execute(f'PRAGMA table_info("{table}")') if r[5])
    return [name for _, name in info]


def _trigger(table: str, how: str) -> str:
    return f"_xlcrm_{how}_{table}"


def _watch(sq: sqlite3.Connection, tables: Sequence[str]) -> None:
    """The change log and its triggers on ``tables``: a row's key after an insert or update, and before
    an update that changes it or a delete.  A table without a key (or with more than three columns in
    it) is replaced whole at the push when it changed (without triggers: whenever one is pushed)."""
    sq.execute(f"CREATE TABLE IF NOT EXISTS {CHANGES} (tbl TEXT NOT NULL, k1, k2, k3)")
    for table in tables:
        keys = _keys(sq, table)
        if len(keys) > 3:
            continue

        def values(row: str, keys: list[str] = keys, table: str = table) -> str:
            cells = [f'{row}."{k}"' for k in keys] + ["NULL"] * (3 - len(keys))
            return f"INSERT INTO {CHANGES} VALUES ('{table}', {', '.join(cells)});"

        # Without a key, a change to the table is noted (its keys all NULL) and the table replaced whole.
        moved = " OR ".join(f'OLD."{k}" IS NOT NEW."{k}"' for k in keys) or "0"
        for how, event, body in (("insert", "INSERT", values("NEW")), ("update", "UPDATE", values("NEW")),
                                 ("rekey", "UPDATE", values("OLD")), ("delete", "DELETE", values("OLD"))):
            when = f" WHEN {moved}" if how == "rekey" else ""
            sq.execute(f'CREATE TRIGGER IF NOT EXISTS "{_trigger(table, how)}" AFTER {event} ON "{table}"{when} '
                       f"BEGIN {body} END")


def _watched(sq: sqlite3.Connection) -> set[str]:
    """Tables whose triggers are all in place (a table dropped and made again lost them)."""
    names = {r[0] for r in sq.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    out = set()
    for (table,) in sq.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        if all(_trigger(table, how) in names for how in ("insert", "update", "rekey", "delete")):
            out.add(table)
    return out


# --- writing the command's changes to the server ------------------------------------------------------

def _push(conn: psycopg.Connection[Any], sq: sqlite3.Connection, schema: Schema, session: ServerSession,
          progress: Progress | None) -> None:
    """Write what the open transaction of ``sq`` changed to the server, in one server transaction."""
    psycopg = pg._psycopg()
    store = session.store
    label = "writing the master to the server"
    if session.had_master and sq.execute(f"SELECT 1 FROM {CHANGES} LIMIT 1").fetchone() is None and \
            set(_master_tables(sq, schema)) <= _watched(sq):
        return  # nothing changed (a transaction that only read): the server and its version stay
    try:
        with conn.transaction():
            tables = _master_tables(sq, schema)
            if not session.had_master:
                replaced = list(pg.copy_into(conn, sq, store, schema)[0])
            else:
                replaced = _push_changes(conn, sq, schema, store, tables, progress, label)
            version = pg.new_version(conn)
        # The copy is the server's master again (this transaction commits next; should it not, the
        # copy keeps the old version and is read anew next time).
        sq.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (VERSION, version))
        sq.execute(f"DELETE FROM {CHANGES}")
        _watch(sq, _master_tables(sq, schema))  # tables made by this transaction are watched from now on
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _refused(store, exc) from None
    except psycopg.Error as exc:
        raise XlcrmError(f"{store}: writing the master to the server failed ({pg._first_line(exc)}); nothing "
                         "was changed there or here — run the command again") from None
    session.had_master = True
    if replaced:
        pg.analyze(store, replaced)


def _push_changes(conn: psycopg.Connection[Any], sq: sqlite3.Connection, schema: Schema,
                  store: StoreURL, tables: Sequence[str], progress: Progress | None, label: str) -> list[str]:
    """Write the changed rows of ``tables`` to the server; the tables it replaced whole."""
    pg._create_tables(conn, store, schema)  # columns and tables the schema gained
    watched = _watched(sq)
    changed = dict(sq.execute(f"SELECT tbl, count(*) FROM {CHANGES} GROUP BY tbl").fetchall())
    whole: list[str] = []
    by_key: list[str] = []
    for table in tables:
        if table in pg.SEARCH_TABLES:
            laid_out = pg.server_columns(conn, table)
            pg.ensure_search_table(conn, sq, table)
            if pg.server_columns(conn, table) != laid_out:
                whole.append(table)
                continue
        elif table == db.PROVISION_TABLE:
            conn.execute(pg.to_postgres(db._PROVISION_DDL))  # type: ignore[arg-type]
        if table not in watched or (table in changed and not _keys(sq, table)):
            whole.append(table)
        elif table in changed:
            rows = sq.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            (whole if changed[table] > WHOLE_SHARE * max(rows, 1) else by_key).append(table)
    total = len(whole) + len(by_key)
    for i, table in enumerate(whole):
        pg._copy_table(conn, sq, table)
        if progress:
            progress(label, i + 1, total)
    for i, table in enumerate(by_key):
        _push_rows(conn, sq, table)
        pg.reset_identity(conn, table)
        if progress:
            progress(label, len(whole) + i + 1, total)
    pushed = set(whole) | set(by_key)
    search = [t for t in pg.SEARCH_TABLES if t in pushed]
    if search:
        pg._index_search_tables(conn, schema, search)
    # The server has no FTS5 table (the copy may have one): its search runs pg_trgm's LIKE queries.
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'search_index_trigram'")
    if pg.ROWS_TABLE in pushed:
        pg.count_search_rows(conn, sq.execute(f"SELECT count(*) FROM {pg.ROWS_TABLE}").fetchone()[0])
    return whole


def _push_rows(conn: psycopg.Connection[Any], sq: sqlite3.Connection, table: str) -> None:
    """Delete the changed keys' rows on the server and copy in the working copy's rows of those keys."""
    keys = _keys(sq, table)
    k = [f"k{i + 1}" for i in range(len(keys))]
    quoted = ", ".join(f'"{c}"' for c in pg.shared_columns(conn, sq, table))
    key_cols = ", ".join(f'"{c}"' for c in keys)
    conn.execute(f'CREATE TEMP TABLE _xlcrm_keys AS SELECT {key_cols} FROM "{table}" WITH NO DATA')  # type: ignore[arg-type]
    with conn.cursor().copy(f"COPY _xlcrm_keys ({key_cols}) FROM STDIN") as copy:  # type: ignore[arg-type]
        for row in sq.execute(f"SELECT DISTINCT {', '.join(k)} FROM {CHANGES} WHERE tbl = ?", (table,)):
            copy.write_row(tuple(row))
    match = " AND ".join(f't."{c}" = k."{c}"' for c in keys)
    conn.execute(f'DELETE FROM "{table}" t USING _xlcrm_keys k WHERE {match}')  # type: ignore[arg-type]
    conn.execute("DROP TABLE _xlcrm_keys")
    lhs = f"({key_cols})" if len(keys) > 1 else key_cols
    with conn.cursor().copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:  # type: ignore[arg-type]
        for row in sq.execute(f'SELECT {quoted} FROM "{table}" WHERE {lhs} IN '
                              f"(SELECT {', '.join(k)} FROM {CHANGES} WHERE tbl = ?)", (table,)):
            copy.write_row(tuple(row))
