"""Which files a command reads from the paths it was given: files as given, folders expanded.

A folder is expanded to the team workbooks in it (.xlsx, .xlsm; not its subfolders).  Everything else
in it is either a person's data that xlcrm does not read as a team workbook (.xls, .csv, .xlsb, .txt,
a PDF...) -- listed by name, so nothing is left out without a word, with a pointer to ``xlcrm import``
-- or a file that holds no one's data and is passed over silently: Excel's ``~$`` owner files, hidden
files (``.`` names), configuration (``.toml``, ``.conf``), Windows' Thumbs.db / desktop.ini, the
report ``xlcrm import`` writes beside its workbooks (import-report.csv), and the
files a caller names (the master's database beside it).  A folder with no team workbook in it is an
error naming what it does hold.  No heavy imports: merge and validate both start here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xlcrm.errors import XlcrmError

#: What the reader takes as a team workbook.
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
#: Files that hold configuration or system data, never a person's records.
QUIET_SUFFIXES = frozenset({".toml", ".conf"})
#: ... and the report ``xlcrm import`` writes beside the workbooks it makes.
QUIET_NAMES = frozenset({"thumbs.db", "desktop.ini", "import-report.csv"})
#: How many names one line lists before it says "and N more".
LISTED = 8

IMPORT_HINT = ("`xlcrm import FILE --out DIR` turns customer lists in other formats (.xls, .xlsb, .csv, "
               ".txt) into team workbooks")


@dataclass
class InputScan:
    """The workbooks to read, in the order given (each folder's sorted by name), and per folder the
    other files found there."""

    paths: list[Path] = field(default_factory=list)
    not_read: dict[Path, list[Path]] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per folder holding files that were not read, naming them."""
        return [f"{folder}: {len(files)} file(s) not read (xlcrm reads .xlsx and .xlsm team workbooks): "
                f"{_names(files)}; {IMPORT_HINT}" for folder, files in self.not_read.items()]

    @property
    def not_read_files(self) -> list[Path]:
        return [p for files in self.not_read.values() for p in files]


def _names(files: list[Path]) -> str:
    shown = ", ".join(p.name for p in files[:LISTED])
    return shown + (f" and {len(files) - LISTED} more" if len(files) > LISTED else "")


def quiet(path: Path) -> bool:
    """A file that holds no one's data: Excel's owner file, hidden, configuration, system."""
    name = path.name
    return name.startswith(("~$", ".")) or name.lower() in QUIET_NAMES or path.suffix.lower() in QUIET_SUFFIXES


def scan(inputs: Iterable[str | Path], *, also_quiet: Iterable[Path] = ()) -> InputScan:
    """Files as given; folders expanded (see the module docstring).  A folder without a team workbook
    raises :class:`XlcrmError` naming the files it holds instead."""
    quiet_paths = {Path(p).resolve() for p in also_quiet}
    result = InputScan()
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            result.paths.append(p)
            continue
        found: list[Path] = []
        others: list[Path] = []
        for q in sorted(p.iterdir()):
            if not q.is_file() or quiet(q) or q.resolve() in quiet_paths:
                continue
            (found if q.suffix.lower() in WORKBOOK_SUFFIXES else others).append(q)
        if not found:
            if others:
                raise XlcrmError(f"{p}: no team workbooks (.xlsx, .xlsm) in this folder, only "
                                 f"{_names(others)}; {IMPORT_HINT}")
            raise XlcrmError(f"{p}: no team workbooks (.xlsx, .xlsm) in this folder")
        result.paths.extend(found)
        if others:
            result.not_read[p] = others
    return result


def open_in_excel(path: Path) -> Path | None:
    """Excel's owner file of ``path`` when it exists (someone has the workbook open), else None."""
    owner = path.with_name("~$" + path.name)
    return owner if owner.exists() else None
