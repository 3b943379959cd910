"""Who may read the files that hold personal data: their owner only, unless the firm says otherwise.

master.db, master.xlsx, the backups, error workbooks, handed-out workbooks, exports and reports hold
names, phone numbers and addresses (個人情報).  They are created readable and writable by their owner
only (0600; the folders xlcrm creates for them, ``backups/`` and ``errors/<time>/``, 0700), so another
account on a shared PC or server cannot read them by default.  A firm whose staff share the master's
folder through group permissions sets ``private_files = false`` under ``[settings]`` in xlcrm.toml:
then the umask decides, as for any other file.  A file that already exists keeps the permissions its
owner gave it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from xlcrm.errors import XlcrmError

FILE_MODE = 0o600
DIR_MODE = 0o700
#: The ``[settings]`` key of xlcrm.toml.
SETTING = "private_files"

_private = True


def configure(settings: Any, where: str = "xlcrm.toml") -> None:
    """Apply ``[settings] private_files`` (true unless set to false) for this process."""
    value = (settings or {}).get(SETTING, True)
    if not isinstance(value, bool):
        raise XlcrmError(f"{where}: [settings] {SETTING} must be true or false, not {value!r}")
    set_private(value)


def set_private(on: bool) -> None:
    global _private
    _private = on


def private() -> bool:
    return _private


def new_file_mode(private_file: bool = True) -> int:
    """The permission bits of a new file: 0600 for personal data (when on), else the umask's."""
    if private_file and _private:
        return FILE_MODE
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def restrict(path: str | os.PathLike[str]) -> None:
    """Make a file xlcrm just created (a database, a copy) readable by its owner only (when on)."""
    if _private and os.name == "posix":
        with contextlib.suppress(OSError):
            os.chmod(path, FILE_MODE)


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and missing parents; the folders made here are 0700 (when on)."""
    p = Path(path)
    if not _private:
        p.mkdir(parents=True, exist_ok=True)
        return p
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
    p.mkdir(mode=DIR_MODE, exist_ok=True)  # FileExistsError when a file stands in its place
    return p
