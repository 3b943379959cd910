"""Refuse to touch a master that someone else is using: Excel (its ``~$`` owner file) or another merge.

Why a lock file and not only SQLite's own locking: a merge also rewrites ``master.xlsx`` and the
backups folder, and it reads the workbook's decision columns first; two merges interleaving those steps
would lose a person's decisions even though each database transaction is fine on its own.  The lock is
a file created with ``O_EXCL`` beside the master, holding the process id, host and start time, so a
lock left by a killed process on this machine is recognised as stale and taken over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from xlcrm.errors import LockedError, XlcrmError


def excel_lock_file(path: Path) -> Path:
    """Excel's owner file for an open workbook: ``~$master.xlsx`` beside ``master.xlsx``."""
    return path.with_name("~$" + path.name)


def lock_file(master: Path) -> Path:
    return master.with_name(f".{master.name}.lock")


def refuse_if_open_in_excel(master: Path) -> None:
    owner = excel_lock_file(master)
    if owner.exists():
        raise LockedError(f"open in Excel ({owner.name} exists); close it in Excel and run "
                          "the command again", path=str(master))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def master_lock(master: Path, command: str = "merge") -> Iterator[Path]:
    """Hold the master's lock for the duration of the block; refuse with one line if it is taken."""
    master = Path(master)
    lock = lock_file(master)
    if not master.parent.is_dir():
        raise XlcrmError(f"folder {master.parent} does not exist; create it first", path=str(master))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": dt.datetime.now().isoformat(timespec="seconds")}
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if holder and holder.get("host") == info["host"] and not _alive(int(holder.get("pid", 0))):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            who = (f"{holder.get('command', 'merge')} by process {holder.get('pid')} on {holder.get('host')} "
                   f"since {holder.get('started')}") if holder else "another process"
            raise LockedError(f"another xlcrm command is working on this master ({who}); wait for it to "
                              f"finish, or delete {lock.name} if no xlcrm command is running",
                              path=str(master)) from None
        except PermissionError:
            raise XlcrmError(f"cannot create the lock file in {master.parent} (permission denied); the "
                             "master's folder must be writable", path=str(master)) from None
        except OSError as exc:
            raise XlcrmError(f"cannot create the lock file in {master.parent} ({exc.strerror})",
                             path=str(master)) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        break
    else:
        raise LockedError(f"could not take the lock {lock.name}; try again", path=str(master))
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _read(lock: Path) -> dict[str, object] | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
