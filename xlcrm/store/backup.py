"""Copies of the master database and workbook taken before every change, the last ten kept.

A merge or resolve that fails, or that changes nothing, removes the copy it took (:func:`discard`)
instead of pruning, so it never pushes an older backup out of the ten.

Why both files: the database is the system of record, but the workbook carries the admin's decisions
and edits that were not merged yet; restoring one without the other would lose them.  The database is
copied with SQLite's online backup (a consistent snapshot even if a reader has it open), the workbook
byte for byte.  Backups live in ``backups/`` beside the master, named by time so they sort.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from xlcrm import fileperm
from xlcrm.errors import XlcrmError
from xlcrm.store import db

KEEP = 10
FOLDER = "backups"


def backup_dir(master: Path) -> Path:
    return Path(master).parent / FOLDER


def take_backup(master: Path, conn: sqlite3.Connection | None, *, keep: int = KEEP,
                prune_old: bool = True) -> list[Path]:
    """Copy ``master.db`` (through ``conn``) and ``master.xlsx`` into ``backups/``; prune to ``keep``
    (unless ``prune_old`` is false: the caller prunes once its change is done, or discards the copy)."""
    master = Path(master)
    folder, stamp = _prepare(master)
    made: list[Path] = []
    target: Path | None = None
    try:
        if conn is not None:
            target = folder / f"{master.stem}-{stamp}.db"
            db.backup_to(conn, target)
            made.append(target)
        if master.exists():
            target = folder / f"{master.stem}-{stamp}{master.suffix}"
            shutil.copy2(master, target)
            fileperm.restrict(target)
            made.append(target)
    except (OSError, sqlite3.Error) as exc:
        # A copy cut short (a full disk) is no backup: neither it nor its half-written pair stays.
        discard(master, [*made, *([target] if target is not None else [])])
        raise _write_error(master, folder, exc) from None
    if prune_old:
        prune(master, keep=keep)
    return made


class Taken(list[Path]):
    """The copies :func:`taken` made; :meth:`committed` marks the change as done (they are kept)."""

    done = False

    def committed(self) -> None:
        self.done = True


@contextlib.contextmanager
def taken(master: Path, conn: sqlite3.Connection | None) -> Iterator[Taken]:
    """A backup around one change of the master: kept (pruning to ten) once the change has committed
    (the block calls :meth:`Taken.committed`, or completes), removed when it fails before, so a refused
    or failed command never pushes an older backup out of the ten."""
    made = Taken(take_backup(master, conn, prune_old=False))
    try:
        yield made
    except BaseException:
        if not made.done:
            discard(master, made)
            raise
        prune(master)
        raise
    prune(master)


def _prepare(master: Path) -> tuple[Path, str]:
    """The backups folder (created) and the time stamp naming this backup's files."""
    folder = backup_dir(master)
    try:
        fileperm.make_dirs(folder)
    except OSError as exc:
        raise XlcrmError(f"cannot create the backups folder {folder} ({exc.strerror}); the master's folder "
                         "must be writable", path=str(master)) from None
    return folder, dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def _write_error(master: Path, folder: Path, exc: OSError | sqlite3.Error) -> XlcrmError:
    why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return XlcrmError(f"cannot write a backup into {folder} ({why}); free some space or check "
                      "permissions", path=str(master))


class BackupJob:
    """A backup copied by a thread while a merge already works inside its transaction.

    Why: copying a large master.db (about 500 MB for 100,000 customers with their activities) takes
    seconds, which would otherwise come first in every merge.  The thread takes a read (SHARED) lock on the database before
    the merge's transaction begins and keeps it until the copy is done: SQLite lets the merge write
    into its own page cache meanwhile, but nothing can reach the file, so the copy is exactly the
    database before the merge (read with plain file copies, which run outside Python's GIL).  The merge
    calls :meth:`wait` before it commits, and prunes (or discards the copy) once it knows the outcome.
    """

    def __init__(self, master: Path, db_path: Path, *, keep: int = KEEP) -> None:
        self.master, self.db_path, self.keep = Path(master), Path(db_path), keep
        self.made: list[Path] = []
        self._locked = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="xlcrm-backup", daemon=True)

    def start(self) -> BackupJob:
        """Returns once the database is read-locked (or the backup already failed: raised here)."""
        self._thread.start()
        self._locked.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        master = self.master
        try:
            folder, stamp = _prepare(master)
            with db.read_locked(self.db_path):  # SHARED lock until the copies are done
                self._locked.set()
                try:
                    for source, target in ((self.db_path, folder / f"{master.stem}-{stamp}.db"),
                                           (master, folder / f"{master.stem}-{stamp}{master.suffix}")):
                        if source is master and not master.exists():
                            continue
                        part = target.with_name(f".{target.name}.part")
                        try:
                            shutil.copyfile(source, part)
                            fileperm.restrict(part)
                            os.replace(part, target)
                        except OSError:
                            part.unlink(missing_ok=True)  # a copy cut short (a full disk) is no backup
                            raise
                        self.made.append(target)
                except OSError as exc:
                    raise _write_error(master, folder, exc) from None
        except BaseException as exc:  # handed to the merge's thread by start() / wait()
            self._error = exc
        finally:
            self._locked.set()

    def wait(self) -> list[Path]:
        """Wait for the copy (the caller is about to commit); raise what went wrong."""
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            for made in self.made:
                made.unlink(missing_ok=True)
            raise error
        return self.made


def start_backup(master: Path, db_path: Path, *, keep: int = KEEP) -> BackupJob:
    """Begin :class:`BackupJob` for ``master`` and its database; returns when the database is locked."""
    return BackupJob(master, db_path, keep=keep).start()


def prune(master: Path, *, keep: int = KEEP) -> None:
    folder = backup_dir(master)
    for suffix in (".db", Path(master).suffix):
        found = sorted(folder.glob(f"{Path(master).stem}-*{suffix}"))
        for old in found[:-keep] if keep else found:
            old.unlink(missing_ok=True)


def discard(master: Path, made: list[Path]) -> None:
    """Remove the copies a run took when the run failed or changed nothing (the backups folder too
    when that leaves it empty): the older backups keep their places."""
    for path in made:
        path.unlink(missing_ok=True)
    folder = backup_dir(master)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def backups(master: Path) -> list[Path]:
    return sorted(backup_dir(master).glob(f"{Path(master).stem}-*"))
