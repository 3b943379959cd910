"""Copies of the master database and workbook taken before every change, the last ten kept.

Why both files: the database is the system of record, but the workbook carries the admin's decisions
and edits that were not merged yet; restoring one without the other would lose them.  The database is
copied with SQLite's online backup (a consistent snapshot even if a reader has it open), the workbook
byte for byte.  Backups live in ``backups/`` beside the master, named by time so they sort.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

from xlcrm import db
from xlcrm.errors import XlcrmError

KEEP = 10
FOLDER = "backups"


def backup_dir(master: Path) -> Path:
    return Path(master).parent / FOLDER


def take_backup(master: Path, conn: sqlite3.Connection | None, *, keep: int = KEEP) -> list[Path]:
    """Copy ``master.db`` (through ``conn``) and ``master.xlsx`` into ``backups/``; prune to ``keep``."""
    master = Path(master)
    folder = backup_dir(master)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise XlcrmError(f"cannot create the backups folder {folder} ({exc.strerror}); the master's folder "
                         "must be writable", path=str(master)) from None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    made: list[Path] = []
    try:
        if conn is not None:
            target = folder / f"{master.stem}-{stamp}.db"
            db.backup_to(conn, target)
            made.append(target)
        if master.exists():
            target = folder / f"{master.stem}-{stamp}{master.suffix}"
            shutil.copy2(master, target)
            made.append(target)
    except OSError as exc:
        raise XlcrmError(f"cannot write a backup into {folder} ({exc.strerror}); free some space or check "
                         "permissions", path=str(master)) from None
    prune(master, keep=keep)
    return made


def prune(master: Path, *, keep: int = KEEP) -> None:
    folder = backup_dir(master)
    for suffix in (".db", Path(master).suffix):
        found = sorted(folder.glob(f"{Path(master).stem}-*{suffix}"))
        for old in found[:-keep] if keep else found:
            old.unlink(missing_ok=True)


def backups(master: Path) -> list[Path]:
    return sorted(backup_dir(master).glob(f"{Path(master).stem}-*"))
