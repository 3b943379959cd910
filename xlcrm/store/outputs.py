"""Where commands may write: no output overwrites someone's work, none lands on the master.

Every command that writes a file it was told to write (template, distribute's handouts, report and its
PNG charts, export, mailing-list, handover's book, validate's annotated and fixed copies, import's
workbooks, map and report, ``addin build``'s add-in) claims its
targets here first, before any work is done:

* A target that is the master, its database (and SQLite's side files), its lock files or a file in its
  ``backups/`` folder is refused always, ``--force`` or not.
* A target that does not exist, or an empty file, is written.
* An existing file is overwritten only when it is *provably* a previous output of the same kind that
  nobody changed since: xlcrm recorded its SHA-256 when it wrote it, and the file still has it.  A team
  workbook a merge read in is also free to be replaced by a handout when it has not changed since that
  merge (size and modification time as the merge saw them): its edits are in the master.
* Anything else (a workbook someone typed into, a report someone annotated, a file xlcrm did not write
  or wrote on another PC) is refused with one line naming the file, unless ``force``: then a copy is
  kept beside it (``name.YYYYMMDD-HHMMSS.bak.xlsx``) before it is replaced.

``distribute`` also refuses while its out folder holds a team workbook whose edits were never merged
(a handout changed since, a filled-in template, a workbook no merge on this PC took in), even one it
would not overwrite: the person might keep working in the wrong file, and its rows are in no master.

The record of what xlcrm wrote (the *ledger*) is a small JSON file in the user's state folder
(``XLCRM_STATE_DIR``, else ``%LOCALAPPDATA%\\xlcrm``, ``~/Library/Application Support/xlcrm`` or
``$XDG_STATE_HOME/xlcrm``).  When it cannot be read or written, outputs are simply not provably
unchanged: the next overwrite needs ``--force``.

:func:`check_master` is the other half: ``--master`` must name an xlcrm master workbook (or a path that
does not exist yet), never a team workbook or any other file.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xlcrm import fileperm
from xlcrm.errors import XlcrmError
from xlcrm.schema import META_SHEET
from xlcrm.store import db, lock
from xlcrm.store.backup import backup_dir
from xlcrm.store.db import db_path_for
from xlcrm.xlsx.marks import meta_values

#: Kinds a command writes; a target is overwritten without ``--force`` only by its own kind.
KINDS = ("template", "handout", "report", "chart", "export", "mailing-list", "handover", "annotated", "fixed",
         "demo", "import", "addin")
#: What merge records for each team workbook it read in (free for a handout or the demo to replace).
MERGED = "merged"
_TEAM_KINDS = ("handout", "demo")
#: The ledger keeps at most this many files (the oldest are forgotten first).
LEDGER_SIZE = 5000

_kept: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("xlcrm_kept",
                                                                                     default=None)


# --- the ledger ------------------------------------------------------------------------------------

def state_dir() -> Path:
    """The per-user folder for the ledger (``XLCRM_STATE_DIR`` overrides it)."""
    env = os.environ.get("XLCRM_STATE_DIR")
    if env:
        return Path(env)
    home = Path.home()
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "xlcrm"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "xlcrm"
    return Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "xlcrm"


def _ledger_path() -> Path:
    return state_dir() / "outputs.json"


def _key(path: Path) -> str:
    return os.path.normcase(str(Path(path).resolve()))


def _load() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_ledger_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(entries: dict[str, dict[str, object]]) -> None:
    if len(entries) > LEDGER_SIZE:
        newest = sorted(entries.items(), key=lambda kv: str(kv[1].get("at", "")))[-LEDGER_SIZE:]
        entries = dict(newest)
    folder = _ledger_path().parent
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".outputs.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entries, fh, ensure_ascii=False)
            os.replace(tmp, _ledger_path())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def record(paths: Iterable[Path], kind: str) -> None:
    """Remember the files just written as unchanged ``kind`` outputs (their SHA-256)."""
    entries = _load()
    for p in paths:
        with contextlib.suppress(OSError):
            st = Path(p).stat()
            entries[_key(p)] = {"kind": kind, "size": st.st_size, "sha256": _sha256(Path(p)), "at": _now()}
    _save(entries)


def _servers_path() -> Path:
    return state_dir() / "servers.json"


def note_server(master: Path, server: str | None) -> None:
    """Remember that ``master`` (master.xlsx) belongs to the PostgreSQL master ``server`` (its URL
    without password), or forget it (None), so that a command run on it without the server configured
    is refused instead of working on, or starting, a master.db beside it (:meth:`xlcrm.Master` checks)."""
    try:
        entries = json.loads(_servers_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = {}
    if not isinstance(entries, dict) or entries.get(_key(master)) == server:
        return
    if server is None:
        entries.pop(_key(master), None)
    else:
        entries[_key(master)] = server
    with contextlib.suppress(OSError):
        fileperm.make_dirs(_servers_path().parent)
        fd, tmp = tempfile.mkstemp(prefix=".servers.", suffix=".tmp", dir=_servers_path().parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, ensure_ascii=False)
        os.replace(tmp, _servers_path())


def server_of(master: Path) -> str | None:
    """The PostgreSQL master ``master`` belongs to, as this PC knows it (:func:`note_server`)."""
    try:
        entries = json.loads(_servers_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = entries.get(_key(master)) if isinstance(entries, dict) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Seen:
    """A file's size and modification time, taken before a merge reads it."""

    path: Path
    size: int
    mtime_ns: int


def seen(paths: Iterable[Path]) -> list[Seen]:
    """Size and time of each file now (before it is read): what :func:`record_merged` remembers."""
    out = []
    for p in paths:
        with contextlib.suppress(OSError):
            st = Path(p).stat()
            out.append(Seen(Path(p), st.st_size, st.st_mtime_ns))
    return out


def record_merged(files: Iterable[Seen]) -> None:
    """Remember team workbooks a merge took in, as they were before it read them."""
    entries = _load()
    for f in files:
        entries[_key(f.path)] = {"kind": MERGED, "size": f.size, "mtime_ns": f.mtime_ns, "at": _now()}
    _save(entries)


def _unchanged(path: Path, entry: dict[str, object] | None) -> bool:
    if not entry:
        return False
    try:
        st = path.stat()
        if st.st_size != entry.get("size"):
            return False
        if "sha256" in entry:
            return _sha256(path) == entry["sha256"]
        return st.st_mtime_ns == entry.get("mtime_ns")
    except OSError:
        return False


# --- the master's own files ------------------------------------------------------------------------

def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return _key(a) == _key(b)


def _inside(path: Path, folder: Path) -> bool:
    try:
        if not folder.is_dir():
            return False
    except OSError:
        return False
    parent = Path(path).resolve().parent
    return any(_same(p, folder) for p in (parent, *parent.parents))


def master_files(master: Path) -> list[Path]:
    """The files that make up a master: workbook, database (and SQLite's side files), locks."""
    db = db_path_for(master)
    return [master, db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")),
            lock.lock_file(master), lock.excel_lock_file(master)]


def refuse_master_target(path: Path, master: Path | None) -> None:
    """Refuse ``path`` when it is one of ``master``'s files or inside its backups folder, or any master
    workbook (an .xlsx with its database beside it), whichever master the command was given."""
    path = Path(path)
    if master is not None:
        master = Path(master)
        if any(_same(path, f) for f in master_files(master)) or _inside(path, backup_dir(master)):
            raise XlcrmError(f"is the master or one of its files ({master}); an output never replaces them: "
                             "give another file name", path=str(path))
    if path.suffix.lower() == ".xlsx":
        db = db_path_for(path)
        with contextlib.suppress(OSError):
            if db.is_file() and db.stat().st_size > 0:  # any master: its database beside it
                raise XlcrmError(f"is a master workbook ({db.name} beside it); an output never replaces "
                                 "it: give another file name", path=str(path))


# --- claiming targets ------------------------------------------------------------------------------

@dataclass
class Claim:
    """Targets a command may write, checked; :meth:`write` keeps a copy first where ``force`` said so."""

    kind: str
    force: bool
    #: Existing targets that only ``force`` lets us replace (their copy is kept first).
    to_keep: set[str] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)

    @contextlib.contextmanager
    def write(self, path: Path) -> Iterator[Path]:
        """Around writing ``path``: keep a copy of what it replaces (``force``), then record it."""
        path = Path(path)
        if _key(path) in self.to_keep and path.exists():
            copy = keep_copy(path)
            kept = _kept.get()
            if kept is not None:
                kept.append((path, copy))
            self.to_keep.discard(_key(path))
        yield path
        self.written.append(path)
        record([path], self.kind)


def keep_copy(path: Path) -> Path:
    """Copy ``path`` beside itself as ``stem.YYYYMMDD-HHMMSS.bak.suffix`` and return the copy."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    copy = path.with_name(f"{path.stem}.{stamp}.bak{path.suffix}")
    n = 2
    while copy.exists():
        copy = path.with_name(f"{path.stem}.{stamp}-{n}.bak{path.suffix}")
        n += 1
    try:
        shutil.copy2(path, copy)
    except OSError as exc:
        raise XlcrmError(f"cannot keep a copy of it before overwriting ({exc.strerror}); nothing was "
                         "written", path=str(path)) from None
    return copy


def claim(paths: Path | Sequence[Path], kind: str, *, force: bool = False, master: Path | None = None,
          folder: Path | None = None, own: bool = True) -> Claim:
    """Check every target of one command before it starts; refuse with one line naming them.

    ``folder`` (distribute's out folder): also refuse while any handout in it has edits not merged.
    ``own=False``: not even the command's own unchanged output is replaced without ``force`` (import:
    an earlier import's rows may be in no master yet).
    """
    targets = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    from xlcrm.xlsx.writer import check_file_name

    for p in targets:
        check_file_name(p)
        refuse_master_target(p, master)
        if p.is_dir():
            raise XlcrmError("is a folder; give the name of the file to write", path=str(p))
    entries = _load()
    accepted = {kind, MERGED} if kind in _TEAM_KINDS else {kind}
    busy: list[Path] = []
    for p in targets:
        try:
            if not p.exists() or p.stat().st_size == 0:
                continue
        except OSError:
            continue
        entry = entries.get(_key(p))
        if own and entry and entry.get("kind") in accepted and _unchanged(p, entry):
            continue
        busy.append(p)
    unmerged = _unmerged(folder, {_key(p) for p in targets}, entries) if folder is not None else []
    if not force and (busy or unmerged):
        raise XlcrmError(_refusal(kind, busy, unmerged, folder, master))
    return Claim(kind, force, to_keep={_key(p) for p in busy})


def _unmerged(folder: Path, targets: set[str], entries: dict[str, dict[str, object]]) -> list[Path]:
    """The team workbooks in ``folder`` (those ``xlcrm merge FOLDER`` reads) whose edits no merge has
    taken in: changed since xlcrm handed them out or merged them, or never merged at all (a filled-in
    template, a workbook brought from another PC).  Targets are left to :func:`claim`'s own check;
    files xlcrm wrote and nobody changed since, and master workbooks, hold no unmerged edits."""
    if not folder.is_dir():
        return []
    out: list[Path] = []
    for p in sorted(folder.iterdir()):
        # Excel's ~$ owner files and hidden files are no one's workbook.
        if p.suffix.lower() not in (".xlsx", ".xlsm") or p.name.startswith(("~$", ".")) or not p.is_file() \
                or _key(p) in targets:
            continue
        entry = entries.get(_key(p))
        if entry and _unchanged(p, entry):
            continue
        if entry and entry.get("kind") in ("handout", MERGED):
            out.append(p)
            continue
        if _team_workbook_with_rows(p):
            out.append(p)
    return out


def _team_workbook_with_rows(path: Path) -> bool:
    """Is ``path`` a team workbook (its ``_xlcrm`` sheet names no master) with a row typed on any of its
    visible sheets?  A blank template holds nothing to merge."""
    import python_calamine


    try:
        book = python_calamine.CalamineWorkbook.from_path(str(path))
        if META_SHEET not in book.sheet_names:
            return False
        if meta_values(book).get("workbook_id", "").startswith("master:"):
            return False
        for sheet in book.sheets_metadata:
            if sheet.visible != python_calamine.SheetVisibleEnum.Visible:
                continue
            rows = book.get_sheet_by_name(sheet.name).to_python()
            if any(v not in (None, "") for row in rows[1:] for v in row):
                return True
    except Exception:  # any reading problem: not a team workbook xlcrm can tell holds rows
        return False
    return False


def _refusal(kind: str, busy: list[Path], unmerged: list[Path], folder: Path | None,
             master: Path | None) -> str:
    if kind == "handout":
        files = ", ".join(str(p) for p in [*busy, *unmerged])
        them = "it" if len(busy) + len(unmerged) == 1 else "them"
        merge = f"`xlcrm merge {folder or files} --master {master or 'master.xlsx'}`"
        return (f"{files}: edits not merged yet (changed since xlcrm handed {them} out or last merged {them}, "
                f"or never merged); run {merge} first, or add --force to write the handouts anyway (a copy "
                "of each file replaced is kept beside it)")
    files = ", ".join(str(p) for p in busy)
    what = "it" if len(busy) == 1 else "each"
    if kind == "import":
        return (f"{files}: already exists; import writes into an empty folder (an earlier import's rows may "
                f"be in no master yet): choose another --out, or add --force to overwrite (a copy of {what} "
                "is kept beside it)")
    return (f"{files}: already exists and holds data xlcrm did not write or that was changed since; "
            f"give another name, or add --force to overwrite (a copy of {what} is kept beside it)")


@contextlib.contextmanager
def collect_kept() -> Iterator[list[tuple[Path, Path]]]:
    """Collect (file, copy) for every copy kept by ``--force`` inside the block (for the CLI to say)."""
    kept: list[tuple[Path, Path]] = []
    token = _kept.set(kept)
    try:
        yield kept
    finally:
        _kept.reset(token)


# --- the master ------------------------------------------------------------------------------------

def check_master(master: Path) -> Path:
    """Refuse a ``--master`` that is not an xlcrm master workbook (a path that does not exist is fine)."""
    master = Path(master)
    if master.suffix.lower() != ".xlsx":
        raise XlcrmError("the master must be an .xlsx path (its database sits beside it as .db)",
                         path=str(master))
    if master.is_dir():
        raise XlcrmError("is a folder; --master names the master workbook (…/master.xlsx)", path=str(master))
    if not master.exists():
        return master
    db = db_path_for(master)
    if db.is_file() and db.stat().st_size > 0:
        return master  # its database beside it (the workbook itself may be encrypted or damaged)
    meta = _meta(master)
    if meta is not None and meta.get("workbook_id", "").startswith("master:"):
        return master  # a master workbook whose database is missing
    why = "a team workbook" if meta else "not an xlcrm master workbook"
    raise XlcrmError(f"is {why}, not a master; --master names the master workbook (created by the first "
                     "`xlcrm merge`), or a new path for a new master", path=str(master))


def open_master(master: str | Path) -> sqlite3.Connection:
    """Connect to the database beside ``master`` (``master.xlsx`` -> ``master.db``); refuse if absent."""
    m = Path(master)
    if m.suffix.lower() == ".db":
        m = m.with_suffix(".xlsx")
    check_master(m)  # a team workbook given as --master is named as such, not "no database"
    return db.connect(db.db_path_for(m))


def _meta(path: Path) -> dict[str, str] | None:
    """The ``_xlcrm`` sheet's keys and values ({} without one), or None when the file is no workbook."""
    import python_calamine

    try:
        return meta_values(python_calamine.CalamineWorkbook.from_path(str(path)))
    except Exception:  # any reading problem means "not a workbook we can identify"
        return None
