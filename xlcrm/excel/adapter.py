"""The few things the ribbon actions do to a workbook, as one small protocol.

Why an adapter: the same action code must run inside Excel (xlwings, live workbook, on Windows and
macOS), in the CLI and in tests on Linux (openpyxl, a file).  Actions only ever call the methods
below; :mod:`xlcrm.excel.xlwings_adapter` and :mod:`xlcrm.excel.openpyxl_adapter` implement them.

Coordinates are 1-based ``(row, col)`` like Excel's.  Values written are *data*: a string is stored
as text exactly as given (never evaluated as a formula, never converted to a number or date by
Excel), numbers as numbers and ``date``/``datetime`` as dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from xlcrm.xlsx.cells import column_letter, sheet_ref
from xlcrm.xlsx.marks import ERROR, FILLS, WARNING

#: Fills used by the actions (RGB hex): header, error, warning, overdue TODO, workbook-only row.
HEADER_FILL = "DDEBF7"
ERROR_FILL = FILLS[ERROR]
WARNING_FILL = FILLS[WARNING]
OVERDUE_FILL = "F8CBAD"
LOCAL_FILL = "E2EFDA"
DATE_FORMAT = "yyyy/mm/dd"


@runtime_checkable
class WorkbookAdapter(Protocol):
    """A workbook as the ribbon actions see it."""

    @property
    def name(self) -> str:
        """The workbook's file name, for messages."""
        ...

    @property
    def path(self) -> Path | None:
        """Where the workbook is saved (None: never saved, or not on a local disk)."""
        ...

    def sheet_names(self) -> list[str]:
        """Every sheet, hidden ones included, in tab order."""
        ...

    def read_sheet(self, sheet: str) -> list[list[Any]]:
        """Values from A1 to the last used cell, one list per row; empty cells are None."""
        ...

    def active_cell(self) -> tuple[str, int, int]:
        """(sheet name, row, column) of the active cell."""
        ...

    def reset_sheet(self, sheet: str) -> None:
        """Create ``sheet`` as the first tab, or empty an existing one (values, fills, links, notes)."""
        ...

    def write_block(self, sheet: str, row: int, col: int, rows: Sequence[Sequence[Any]]) -> None:
        """Write a rectangle of values with its top-left corner at (row, col)."""
        ...

    def fill(self, sheet: str, row: int, col: int, color: str | None, *, ncols: int = 1) -> None:
        """Background colour (RGB hex like ``FFC7CE``) of ``ncols`` cells; None removes the fill."""
        ...

    def bold(self, sheet: str, row: int, col: int, *, ncols: int = 1) -> None:
        ...

    def note(self, sheet: str, row: int, col: int, text: str | None) -> None:
        """A cell comment/note with ``text``; None removes it."""
        ...

    def notes(self, sheet: str) -> list[tuple[int, int, str]]:
        """(row, column, text) of every cell note on ``sheet``, wherever rows were moved since it was
        written; [] where the platform cannot list them."""
        ...

    def hyperlink(self, sheet: str, row: int, col: int, target: str) -> None:
        """Make the cell a link to ``target`` inside this workbook (``'顧客'!A12``), keeping its text."""
        ...

    def set_widths(self, sheet: str, widths: Sequence[float]) -> None:
        """Column widths from column A on, in Excel character units."""
        ...

    def grow_table(self, sheet: str, row: int) -> None:
        """Extend the Excel table that ends right above ``row`` (if any) so that it includes ``row``."""
        ...

    def select(self, sheet: str, row: int, col: int) -> None:
        """Activate ``sheet`` and select the cell."""
        ...

    def message(self, text: str, *, error: bool = False) -> None:
        """Tell the user something in a message box (plain words, never a traceback)."""
        ...

    def save(self) -> None:
        """Persist changes where that is the adapter's job (a file); Excel leaves saving to the user."""
        ...


def a1(row: int, col: int) -> str:
    """(12, 3) -> C12: rows and columns counted from 1, as in Excel's object model."""
    return f"{column_letter(col - 1)}{row}"


def link_target(sheet: str, row: int, col: int) -> str:
    """An internal link target: ``'顧客'!C12``."""
    return sheet_ref(sheet, a1(row, col))



def trim(rows: list[list[Any]]) -> list[list[Any]]:
    """Drop trailing empty rows (blank strings count as empty) so both adapters agree on a sheet's size."""
    def blank(v: Any) -> bool:
        return v is None or (isinstance(v, str) and v == "")

    end = len(rows)
    while end and all(blank(v) for v in rows[end - 1]):
        end -= 1
    return [[None if blank(v) else v for v in r] for r in rows[:end]]
