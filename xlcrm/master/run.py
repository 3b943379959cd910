"""One run of ``xlcrm merge`` or ``xlcrm resolve``: the inputs found and checked, validated in the worker
pool (:mod:`xlcrm.master.workers`), merged (:mod:`xlcrm.master.merge`), the decisions applied
(:mod:`xlcrm.master.resolve`), all in one transaction of the master database, then master.xlsx
rewritten (:mod:`xlcrm.master.masterbook`).  A refused input, a fault or a kill leaves the master as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from xlcrm.errors import UnreadableWorkbook, XlcrmError
from xlcrm.intake.inputs import open_in_excel, scan
from xlcrm.master.masterbook import admin_name, master_lang
from xlcrm.master.merge import (
    MASTER_SOURCE,
    FileReport,
    Merger,
    MergeReport,
    Progress,
    SheetRows,
    Source,
    compact,
    merge_message,
    source_key,
)
from xlcrm.master.resolve import ResolveReport, apply_decisions
from xlcrm.master.workers import Workers, load_validated, validate_job
from xlcrm.schema import Lang, Schema
from xlcrm.store import backup, db, lock, outputs
from xlcrm.store.searchindex import update_index


def _file_time(path: Path) -> str:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return ""


def _sort_key(path: Path) -> tuple[str, str]:
    return (path.name, str(path.resolve()))


def collect_inputs(inputs: Sequence[str | Path], master: Path, *, not_read: list[str] | None = None) -> list[Path]:
    """Expand folders, drop the master itself, its backups and error workbooks; a stable order.

    ``not_read`` receives one line per folder naming the files in it that are not workbooks xlcrm
    reads (:mod:`xlcrm.intake.inputs`).
    """
    master_r = master.resolve()
    skip_dirs = {(master.parent / "backups").resolve(), (master.parent / ERRORS_DIR).resolve()}
    db_file = db.db_path_for(master)
    found = scan(inputs, also_quiet=[db_file, *(db_file.with_name(db_file.name + s)
                                                for s in ("-journal", "-wal", "-shm"))])
    if not_read is not None:
        not_read.extend(found.notes())
    out: list[Path] = []
    for p in found.paths:
        r = p.resolve()
        if r == master_r or any(d == r.parent or d in r.parents for d in skip_dirs):
            continue
        if p.name.startswith("~$"):
            continue
        out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in sorted(out, key=_sort_key):
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


#: Folder beside the master for the annotated copies of files with rejected rows.
ERRORS_DIR = "errors"


def merge(inputs: Sequence[str | Path], master: str | Path, schema: Schema, *, dry_run: bool = False,
          strict: bool = False, today: dt.date | None = None, progress: Progress | None = None,
          now: dt.datetime | None = None, password: str | None = None,
          skip_unreadable: bool = False) -> MergeReport:
    """Merge team workbooks (files or folders) into ``master``; see the module docstring.

    ``password`` encrypts master.xlsx (and opens it, and any encrypted team workbook, to read it).
    An input that cannot be read refuses the whole run before anything is written (:func:`update_master`);
    with ``skip_unreadable`` it is left out and listed in 取込ログ instead (``report.skipped``).
    """
    master = Path(master)
    not_read: list[str] = []
    paths = collect_inputs(inputs, master, not_read=not_read)
    if not paths:
        raise XlcrmError("no team workbooks to merge; give .xlsx files or folders holding them")
    report, _ = update_master(paths, master, schema, command="merge", dry_run=dry_run, strict=strict, today=today,
                    progress=progress, now=now, password=password, skip_unreadable=skip_unreadable)
    report.not_read = not_read
    return report


def refused_inputs(paths: Sequence[Path], password: str | None = None) -> list[tuple[Path, str]]:
    """The inputs the reader refuses without parsing a sheet (missing, a folder, unreadable, empty, not
    an .xlsx, damaged, a decompression bomb, encrypted with no password given), each with its line."""
    from xlcrm.xlsx.reader import check_readable

    refused = []
    for p in paths:
        try:
            check_readable(p, password=password)
        except UnreadableWorkbook as exc:
            refused.append((p, str(exc)))
    return refused


def _reason(path: Path, message: str) -> str:
    """A refusal without the file name it starts with (取込ログ shows the file in its own column)."""
    return message.removeprefix(f"{path}: ")


def _refusal(message: str, more: int = 0) -> str:
    extra = f" (and {more} more file(s) that cannot be read)" if more else ""
    return (f"{message}{extra}; nothing was merged: fix or remove the file, or add --skip-unreadable to "
            "merge the other files without it")


def update_master(paths: Sequence[Path], master: Path, schema: Schema, *, command: str, dry_run: bool = False,
                  strict: bool = False, today: dt.date | None = None, progress: Progress | None = None,
                  now: dt.datetime | None = None, password: str | None = None,
                  skip_unreadable: bool = False) -> tuple[MergeReport, Any]:
    """One locked, backed-up, all-or-nothing run: decisions, the admin's edits, then ``paths``.

    ``xlcrm resolve`` is this with no team workbooks.  Returns the merge report and the decisions'
    :class:`xlcrm.master.resolve.ResolveReport` (None when the workbook held none).

    Every input is checked before anything is written; one that cannot be read (found now, or only
    when it is validated) fails the run with its one line and leaves everything as it was (:class:`_Undo`).
    With ``skip_unreadable`` such inputs are left out and listed in 取込ログ.  The backup taken before
    the change is kept (and older ones pruned to ten) only when the run changed the master.
    """
    from xlcrm.master import masterbook
    from xlcrm.xlsx.writer import remove_leftovers

    started = time.perf_counter()
    outputs.check_master(master)  # a team workbook or any other file is never taken for the master
    lang = master_lang(schema)
    report = MergeReport(master=str(master), dry_run=dry_run)
    refused = refused_inputs(paths, password)
    if refused and not skip_unreadable:
        raise XlcrmError(_refusal(refused[0][1], len(refused) - 1))
    for path, message in refused:
        report.files.append(FileReport(str(path), "", "unreadable",
                                       message=merge_message("file.skipped", lang, reason=_reason(path, message))))
    paths = [p for p in paths if all(p is not r for r, _ in refused)]
    undo = _Undo(master, dry_run=dry_run)
    if not dry_run and command == "merge" and not master.parent.is_dir():
        undo.folder = master.parent
        try:
            master.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise XlcrmError(f"cannot create the master's folder {master.parent} ({exc.strerror})",
                             path=str(master)) from None
    # Each input's size and time before it is read: what a later distribute checks it against.
    inputs_seen = outputs.seen(paths) if not dry_run else []
    now = now or dt.datetime.now().replace(microsecond=0)
    today = today or now.date()
    decided = None
    db_path = db.db_path_for(master)

    ctx = lock.master_lock(master, command) if not dry_run else contextlib.nullcontext()
    # _Undo twice: inside the lock for what the run wrote, outside it for the folder (and the lock file).
    with undo.folder_guard(), ctx, undo:
        if not dry_run:
            lock.refuse_if_open_in_excel(master)
            masterbook.check_writable(master)  # before any work: a read-only file is one line, not a rollback
            for leftover in (master, db_path):  # from a killed run: this lock is ours now
                remove_leftovers(leftover)
        masterbook.check_master_password(master, password)  # before any work: one line, nothing changed
        clock = _Clock(report.timings)
        workers = Workers(None if dry_run else master.parent / ERRORS_DIR / now.strftime("%Y%m%d-%H%M%S"),
                           password=password, spool_beside=None if dry_run else master)
        undo.errors_dir = workers.out_dir if workers.out_dir is not None and not workers.out_dir.exists() else None
        try:
            # Validation starts here, in the workers, and goes on while the merge below runs.
            sources = Inputs(paths, schema, strict=strict, today=today, progress=progress,
                              report=report, workers=workers, password=password,
                              skip_unreadable=skip_unreadable, lang=lang)
        except BaseException:
            workers.close()
            raise
        backup_job: backup.BackupJob | None = None
        in_memory = False  # a new master database built in memory, written whole at the commit
        try:
            if dry_run:
                conn = db.memory_copy(db_path)  # a dry run never touches the real file
            elif _build_in_memory(db_path, paths):
                conn = db.memory_master()
                in_memory = True
                if master.exists():
                    undo.made.extend(backup.take_backup(master, None, prune_old=False))
            else:
                conn = db.connect(db_path, create=True)
                if db_path.exists() and db_path.stat().st_size > 0:
                    # Copied by a thread while the merge runs; waited for before the commit.
                    backup_job = undo.job = backup.start_backup(master, db_path)
                elif master.exists():
                    undo.made.extend(backup.take_backup(master, None, prune_old=False))
        except BaseException:
            workers.close()
            raise
        try:
            conn.execute("BEGIN IMMEDIATE")
            with db.rollback_on_error(conn):
                db.create_tables(conn, schema)
                run_id = db.start_run(conn, f"{command} --dry-run" if dry_run else command,
                                      [str(p) for p in paths], now.isoformat(timespec="seconds"))
                report.run_id = run_id
                history_before = db.history_count(conn)
                clock.lap("backup")
                state = masterbook.read_master_state(master, conn, schema, today=today, password=password)
                clock.lap("master_workbook_read")
                report.warnings.extend(state.warnings)
                # What the workbook showed, before decisions change the database: the admin's base.
                written = ({e.key: db.load_records(conn, e, active_only=True) for e in schema}
                           if state.edits is not None else None)
                if state.decisions:
                    decided = apply_decisions(conn, schema, state.decisions, run_id=run_id, now=now, lang=lang)
                    report.decisions_applied = decided.applied
                    report.warnings.extend(decided.warnings)
                if state.edits is not None:
                    who = admin_name(lang)
                    fr = FileReport(str(master), who, state.edits.status)
                    sources.insert_first(Source(master, state.edits, MASTER_SOURCE, who, _file_time(master),
                                             lang, is_master=True, report=fr, written=written,
                                             sheets=compact(state.edits, schema)))
                    report.files.insert(0, fr)
                merger = Merger(conn, schema, run_id=run_id, now=now, today=today, lang=lang,
                                progress=progress)

                def ready(s: Source) -> None:
                    if not s.is_master:
                        _check_identity(conn, schema, s, report, lang)
                        merger.load_origins([s])
                        db.register_workbook(conn, s.key, kind=_workbook_kind(conn, s.key), owner=s.who,
                                             lang=s.lang, created=s.result.workbook.meta.created or None,
                                             path=str(s.path), run_id=run_id)
                        db.mark_workbook_merged(conn, s.key, run_id)

                for s in sources.ready:
                    ready(s)
                sources.on_ready = ready
                merger.run(sources)
                clock.lap("merge")
                report.timings["validate_wait"] = round(sources.wait_s, 3)
                report.records_created = dict(merger.created)
                report.duplicates_new = merger.duplicates_new
                report.conflicts_new = merger.conflicts_new
                report.deletions_new = merger.deletions_new
                report.warnings.extend(merger.warnings)
                workers.finish(sources.all(), report)
                clock.lap("error_workbooks")
                for s in sources.all():
                    if s.is_master and s.report is not None and s.report.error_workbook:
                        # master.xlsx is rewritten from the database: its rows with errors live on there.
                        report.warnings.append(f"{master.name}: the edited rows with errors are kept, marked, in "
                                               f"{s.report.error_workbook}; fix them there and copy them back")
                keep_rejected(conn, schema, sources.all(), run_id)
                _import_log(conn, sources.all(), report, run_id)
                report.duplicates_pending = len(db.duplicates(conn))
                report.conflicts_pending = len(db.conflicts(conn))
                report.deletions_pending = len(db.deletions(conn))
                report.history_rows = db.history_count(conn) - history_before
                db.finish_run(conn, run_id, dt.datetime.now().isoformat(timespec="seconds"))
                if backup_job is not None:
                    # The copy of the old database is complete before anything changes (and no thread
                    # is inside SQLite when the master workbook's writer is forked).
                    backup_job.wait()
                    clock.lap("backup_wait")

                def search_index() -> None:
                    _search_index(conn, schema, run_id)

                if dry_run:
                    started = time.perf_counter()
                    search_index()
                    report.timings["search_index"] = round(time.perf_counter() - started, 3)
                    conn.execute("ROLLBACK")
                else:
                    from xlcrm.store.searchindex import full_build_due

                    # A full index build (seconds) and the workbook run side by side in two processes.
                    def committing() -> None:
                        undo.committing = True

                    report.timings.update(masterbook.write_and_commit(
                        conn, master, schema, lang=lang, progress=progress, password=password,
                        meanwhile=search_index, meanwhile_heavy=full_build_due(conn, schema, run_id),
                        persist=db_path if in_memory else None, on_commit=committing))
                    clock.lap("index_and_master")
                    taken = {f.file for f in report.files if f.status in ("ok", "errors")}
                    outputs.record_merged(s for s in inputs_seen if str(s.path) in taken)
        finally:
            conn.close()
            workers.close()
            if backup_job is not None:
                with contextlib.suppress(Exception):  # already waited for, or the merge failed anyway
                    backup_job.wait()
    if not dry_run:
        undo.keep_backup_if(report.changed)
    report.seconds = round(time.perf_counter() - started, 3)
    return report, decided


class _Undo:
    """Everything a failed run created, removed again, so a refused run leaves no trace: its backup
    copies (no older one was pruned for them), its error workbooks, a ``master.db`` it created, and the
    master's folder it created (only when empty).  Once the commit has begun, nothing is undone.

    Used as a context manager inside the master's lock; :meth:`folder_guard` goes outside it, since the
    lock file lives in that folder until the lock is released.
    """

    def __init__(self, master: Path, *, dry_run: bool) -> None:
        self.master, self.dry_run = master, dry_run
        self.db_path = db.db_path_for(master)
        self.db_existed = self.db_path.exists()
        self.folder: Path | None = None  # the master's folder, when this run created it
        self.made: list[Path] = []  # backup copies taken by this run
        self.job: Any = None  # the backup.BackupJob copying master.db, if any
        self.errors_dir: Path | None = None  # this run's error workbooks (a folder it creates)
        self.committing = False

    def backups(self) -> list[Path]:
        return self.made + (list(self.job.made) if self.job is not None else [])

    def __enter__(self) -> _Undo:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or self.dry_run or self.committing:
            return

        backup.discard(self.master, self.backups())
        if self.errors_dir is not None:
            shutil.rmtree(self.errors_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.errors_dir.parent.rmdir()  # only when empty
        if not self.db_existed:
            for leftover in (self.db_path, self.db_path.with_name(self.db_path.name + "-journal")):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def folder_guard(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if self.folder is not None and not self.committing:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only when empty
            raise

    def keep_backup_if(self, changed: bool) -> None:
        """After a successful run: keep this run's backup (pruning to ten) when the master changed;
        when nothing changed, drop it, so the older backups keep their places."""
        if changed:
            backup.prune(self.master)
        else:
            backup.discard(self.master, self.backups())


def _identity_mismatch(conn: sqlite3.Connection, schema: Schema, src: Source, lang: Lang) -> str | None:
    """Why ``src`` is not the workbook whose id it carries, or None when nothing says so.

    A workbook id is only a cell in the hidden ``_xlcrm`` sheet: copied into another file, it would let
    that file propose the deletion of every record handed to the id's owner (in the owner's name) and
    turn the owner's next genuine edit into a 競合.  So the claim is checked against what the file
    holds: the owner written in it against the owner the id was handed to, and the IDs of its rows
    against that id's base — a genuine workbook holds mostly records it was handed.
    """
    wid = src.result.workbook.meta.workbook_id
    if not wid or src.key != wid:
        return None
    registered = (db.workbook_owner(conn, wid) or "").strip()
    claimed = (src.result.workbook.meta.owner or "").strip()
    ja = lang == "ja"
    if registered and claimed and registered != claimed:
        return (f"このファイルの所有者は「{claimed}」です" if ja else f"this file's owner is {claimed!r}")
    base: set[str] = set()
    held: set[str] = set()
    # The customers tell (a fraction of the rows: the check stays cheap on a large re-merge); the other
    # sheets only for a base without customers.
    customers = schema.entity("customers")
    for entities in ([customers], [e for e in schema if e is not customers]):
        for entity in entities:
            base |= db.base_ids(conn, entity, wid)
            rows = src.sheets.get(entity.key)
            if rows is not None:
                held.update(v for v in rows.cols[0] if v)
        if base:
            break
        held.clear()
    if not base:
        return None
    ours = len(held & base)
    # A team's own workbook never gets IDs written back: only a handed-out one must hold some.
    if not held and db.workbook_kind(conn, wid) == "distributed":
        return (f"渡した {len(base)} 件のどれも入っていません" if ja
                else f"it holds none of the {len(base)} records handed to that workbook")
    if held and ours * 2 < len(held):
        return (f"行の ID {len(held)} 件のうちそのブックに渡したものは {ours} 件だけです" if ja
                else f"only {ours} of the {len(held)} IDs in it were handed to that workbook")
    return None


def _check_identity(conn: sqlite3.Connection, schema: Schema, src: Source, report: MergeReport,
                    lang: Lang) -> None:
    """A file that is not the workbook its id names is merged as its own copy (keyed by its folder and
    name, like a workbook without an id): it proposes no deletion of the other workbook's records and
    leaves that workbook's base alone, so its owner's next edit is still an edit."""
    reason = _identity_mismatch(conn, schema, src, lang)
    if reason is None:
        return
    wid = src.key
    owner = db.workbook_owner(conn, wid) or "?"
    src.key = source_key(src.path, "") + "#" + wid
    if lang == "ja":
        line = (f"{src.path}: ブックID {wid} は「{owner}」のブックのものですが、{reason}。"
                "別のブックとして取り込みました（削除候補は作らず、マスタと比較）")
    else:
        line = (f"{src.path}: workbook id {wid} belongs to {owner}'s workbook, but {reason}; merged as its "
                "own copy (no deletions proposed, rows compared with the master)")
    report.warnings.append(line)
    if src.report is not None:
        src.report.message = line


def _build_in_memory(db_path: Path, paths: Sequence[Path]) -> bool:
    """A master database that does not exist yet (or is an empty file) is built in memory, unless the
    inputs are too large for that (db.MEMORY_BUILD_MAX_INPUT_BYTES)."""
    try:
        if db_path.exists() and db_path.stat().st_size > 0:
            return False
        return sum(p.stat().st_size for p in paths) <= db.MEMORY_BUILD_MAX_INPUT_BYTES
    except OSError:
        return False


class _Clock:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = round(self.into.get(name, 0.0) + now - self.t, 3)
        self.t = now


def _workbook_kind(conn: sqlite3.Connection, key: str) -> str:
    """A workbook distribute made keeps its kind; anything else is a source the team brought."""
    return db.workbook_kind(conn, key) or "source"


class Inputs:
    """The validated inputs, made into merge sources in input order as the merge reaches them.

    Validation of large inputs runs in the worker processes; iterating this waits only for the next
    file, so the merge of the first files' customers runs while later files are still validated and
    both cores of a small office PC stay busy (a 400,000-row merge is CPU-bound: validating first and
    merging after left one core idle for most of the run).  After the first full pass it is a plain
    list.  ``on_ready`` is called once per source, in order, before the merge sees it.
    """

    def __init__(self, paths: Sequence[Path], schema: Schema, *, strict: bool, today: dt.date,
                 progress: Progress | None, report: MergeReport, workers: Workers | None = None,
                 password: str | None = None, skip_unreadable: bool = False, lang: Lang = "ja") -> None:
        self.paths = list(paths)
        self.skip_unreadable, self.lang = skip_unreadable, lang
        self.schema, self.strict, self.today, self.password = schema, strict, today, password
        self.progress, self.report, self.workers = progress, report, workers
        self.ready: list[Source] = []
        self.on_ready: Callable[[Source], None] | None = None
        self.wait_s = 0.0  # time the merge spent waiting for validation
        self._done = 0
        self._keys: dict[str, int] = {}
        self._futures: list[Any] | None = None
        #: Error workbooks wait until the workers have validated every input (:attr:`validated`): written
        #: meanwhile, they would take CPU from the validation the merge waits for (release_annotation).
        self._to_annotate: list[Source] | None = []
        if workers is not None and workers.parallel(self.paths):
            self._futures = workers.map_validate(self.paths, schema, today, password)
        if progress:
            progress("validate", 0, len(self.paths))

    def insert_first(self, src: Source) -> None:
        """The master workbook's own edits: merged before every team workbook."""
        self.ready.insert(0, src)

    @property
    def complete(self) -> bool:
        return self._done == len(self.paths)

    @property
    def validated(self) -> bool:
        """Every input validated, taken by the merge or not: the workers are free for other work."""
        if self.complete:
            return True
        return self._futures is not None and all(f.done() for f in self._futures)

    def __iter__(self) -> Iterator[Source]:
        i = 0
        while True:
            while i >= len(self.ready) and not self.complete:
                self._advance()
            if i >= len(self.ready):
                return
            yield self.ready[i]
            i += 1

    def __len__(self) -> int:
        """Sources made so far (all of them once :attr:`complete`)."""
        return len(self.ready)

    def all(self) -> list[Source]:
        """Every source, waiting for validation to finish."""
        while not self.complete:
            self._advance()
        self.release_annotation()
        return self.ready

    def release_annotation(self) -> None:
        """Start writing the error workbooks held back so far (and from now on, each at once)."""
        held, self._to_annotate = self._to_annotate, None
        workers = self.workers
        for src in held or ():
            if workers is not None:
                workers.submit_annotate(src)

    def _advance(self) -> None:
        n = self._done
        path = self.paths[n]
        started = time.perf_counter()
        outcome: tuple[Any, Any] | None = None
        if self._futures is not None:
            try:
                outcome = load_validated(self._futures[n].result())
            except Exception:  # a broken worker: validate here instead
                self._futures = None
        if outcome is None:
            outcome = validate_job(path, self.schema, self.today, self.password)
        self.wait_s += time.perf_counter() - started
        self._done += 1
        if self.progress:
            self.progress("validate", self._done, len(self.paths))
        src = self._source(path, *outcome)
        if src is None:
            return
        self.ready.append(src)
        if self.on_ready is not None:
            self.on_ready(src)
        workers = self.workers
        if workers is not None and workers.annotate and (src.strict_rejected or any(src.result.error_rows.values())):
            if self._to_annotate is not None:
                self._to_annotate.append(src)
            else:
                workers.submit_annotate(src)

    def _source(self, path: Path, result: Any, extra: Any) -> Source | None:
        report = self.report
        if result is None:
            if not self.skip_unreadable:
                raise XlcrmError(_refusal(extra))  # the run is rolled back: nothing was written
            report.files.append(FileReport(str(path), "", "unreadable", message=merge_message(
                "file.skipped", self.lang, reason=_reason(path, extra))))
            return None
        meta = result.workbook.meta
        key = source_key(path, meta.workbook_id)
        keys = self._keys
        if key in keys:
            # Two copies of one workbook (or two legacy files with the same folder and name).
            keys[key] += 1
            report.warnings.append(f"{path}: same workbook id as another input ({key}); merged as a "
                                   "separate copy — its rows are compared with the master, not a base")
            key = f"{key}#{keys[key]}"
        keys[key] = keys.get(key, 1)
        who = meta.owner or path.stem
        strict_rejected = self.strict and not result.ok
        fr = FileReport(str(path), who, "rejected" if strict_rejected else result.status)
        if strict_rejected:
            fr.message = ("--strict: the whole file was rejected because of its errors"
                          if meta.lang == "en" else "--strict: エラーがあるためファイル全体を取り込みませんでした")
        owner_file = open_in_excel(path)
        if owner_file is not None:
            note = merge_message("file.open_in_excel", self.lang, lock=owner_file.name)
            fr.message = f"{fr.message} {note}" if fr.message else note
            report.warnings.append(f"{path}: {note}")
        strays = [f for f in result.findings if f.rule == "stray_cell"]
        if strays:  # left out of the trimmed sheet the merge read: said, never dropped silently
            cells = ", ".join(f"{f.address} 「{str(f.value)[:20]}」" for f in strays[:3])
            cells += " …" if len(strays) > 3 else ""
            note = merge_message("file.stray_cells", self.lang, n=len(strays), cells=cells)
            fr.message = f"{fr.message} {note}" if fr.message else note
            report.warnings.append(f"{path}: {note}")
        report.files.append(fr)
        sheets: dict[str, SheetRows] = extra
        return Source(path, result, key, who, _file_time(path), meta.lang, strict_rejected, False, fr,
                      rows=sum(len(d.rows) for d in sheets.values()), sheets=sheets)


def keep_rejected(conn: sqlite3.Connection, schema: Schema, sources: Sequence[Source], run_id: int) -> None:
    """Keep the rows each workbook had rejected, exactly as typed with their findings, for its owner's
    next handout (``distribute`` puts them back in place, marked like the error workbook).

    A workbook's rows are replaced by what this run rejected from it: a row fixed and merged leaves, one
    still wrong stays, and one sent again unchanged is the same row, not a second copy.  Rows held by
    the owner's other workbooks (a handout not sent back this week) stay.  A workbook ``--strict``
    refused keeps its rows as they were.
    """
    taken: list[str] = []
    rows: list[dict[str, Any]] = []
    for src in sources:
        if src.is_master or src.strict_rejected or src.report is None:
            continue
        taken.append(src.key)
        res = src.result
        if not any(res.error_rows.values()):
            continue
        found: dict[tuple[str, int], list[tuple[str, str, str, str]]] = {}
        for f in res.findings:
            found.setdefault((f.entity, f.row), []).append((f.key, f.severity, f.rule, f.message))
        for entity in schema:
            data = src.sheets.get(entity.key)
            typed = {**((data.rejected or {}) if data is not None else {}), **src.late_rows.get(entity.key, {})}
            for row in sorted(res.error_rows.get(entity.key, ())):
                if row in typed:
                    rid, cells = typed[row]
                    rows.append({"owner": src.who, "source": src.key, "entity": entity.key, "record_id": rid,
                                 "source_file": src.name, "source_row": row, "cells": cells,
                                 "findings": found.get((entity.key, row), [])})
    db.replace_rejected_rows(conn, taken, rows, run_id=run_id)


def _import_log(conn: sqlite3.Connection, sources: Sequence[Source], report: MergeReport,
                run_id: int) -> None:
    rows: list[tuple[Any, ...]] = [(run_id, f.file, "", f.status, 0, 0, 0, 0, 0, 0, 0, None, f.message)
                                   for f in report.files if f.status == "unreadable"]
    for s in sources:
        fr = s.report
        if fr is None:
            continue
        for ekey, c in fr.sheets.items():
            rows.append((run_id, fr.file, ekey, fr.status, c.rows_read, c.new, c.updated, c.unchanged, c.linked,
                         c.rejected, c.conflicts, fr.error_workbook, fr.message))
    db.add_import_log(conn, rows)


def _search_index(conn: sqlite3.Connection, schema: Schema, run_id: int) -> None:
    """Bring the add-in's search index up to date with what this run changed (a full build the first
    time, or when most of the master changed)."""
    update_index(conn, schema, run_id)


def resolve(master: str | Path, schema: Schema, *, now: dt.datetime | None = None,
            password: str | None = None) -> ResolveReport:
    """Apply the review sheets' decisions now (a merge does this first anyway) and rewrite the workbook.

    The admin's record edits in the workbook are taken in too (the workbook is rewritten, so leaving
    them out would lose them): this is a merge with no team workbooks.  ``password`` opens an
    encrypted master.xlsx and seals the rewritten one.
    """
    master = Path(master)
    if not master.exists():
        raise XlcrmError("no master workbook here; run `xlcrm merge` first", path=str(master))
    merged, decided = update_master([], master, schema, command="resolve", now=now, password=password)
    report = decided or ResolveReport()
    report.master = str(master)
    report.warnings = list(merged.warnings)
    report.duplicates_pending = merged.duplicates_pending
    report.conflicts_pending = merged.conflicts_pending
    report.deletions_pending = merged.deletions_pending
    report.edits = merged.files[0].to_dict() if merged.files else None
    return report
