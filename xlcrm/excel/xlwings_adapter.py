"""The workbook adapter over a live Excel workbook, with xlwings (Windows and macOS only).

This is the one module that imports xlwings, and only when a ribbon button runs it; nothing else in
xlcrm needs Excel.  Every method is one or a few COM/AppleScript calls: a ribbon click must answer
in about a second.  Linux CI cannot run this file against Excel (see docs/addin.md for the manual
checklist); the same actions are tested through the openpyxl adapter.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xlwings as xw

from xlcrm.excel.adapter import trim


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


class XlwingsBook:
    """The workbook that called the add-in (``xlwings.Book.caller()``), or any open ``xw.Book``."""

    def __init__(self, book: xw.Book) -> None:
        self.book = book

    @classmethod
    def caller(cls) -> XlwingsBook:
        return cls(xw.Book.caller())

    @property
    def name(self) -> str:
        return str(self.book.name)

    @property
    def path(self) -> Path | None:
        full = str(self.book.fullname or "")
        if not full or "://" in full:  # never saved, or on OneDrive/SharePoint without a local path
            return None
        p = Path(full)
        return p if p.exists() else None

    def sheet_names(self) -> list[str]:
        return [s.name for s in self.book.sheets]

    def read_sheet(self, sheet: str) -> list[list[Any]]:

        sht = self.book.sheets[sheet]
        last = sht.used_range.last_cell
        if last.row == 1 and last.column == 1 and sht.range("A1").value is None:
            return []
        values = sht.range((1, 1), (last.row, last.column)).options(ndim=2).value
        return trim([list(r) for r in values])

    def active_cell(self) -> tuple[str, int, int]:
        sel = self.book.selection
        if sel is None:  # a chart or a shape is selected
            return self.book.sheets.active.name, 1, 1
        return sel.sheet.name, sel.row, sel.column

    def reset_sheet(self, sheet: str) -> None:
        # Deleting and re-adding clears values, formats, notes and hyperlinks in one step on both
        # platforms (Range.Clear keeps hyperlinks on some Excel versions).
        names = self.sheet_names()
        if sheet in names:
            index = names.index(sheet)
            self.book.sheets[sheet].delete()
            remaining = self.book.sheets
            if index < len(remaining):
                remaining.add(sheet, before=remaining[index])
            else:
                remaining.add(sheet, after=remaining[len(remaining) - 1])
        else:
            self.book.sheets.add(sheet, before=self.book.sheets[0])

    def write_block(self, sheet: str, row: int, col: int, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        width = max(len(r) for r in rows)
        # A leading apostrophe is Excel's own "this is text" prefix: it is not part of the value, and
        # it stops both formula evaluation (=...) and number/date conversion (0312345678, 1-2).
        block = [[("'" + v) if isinstance(v, str) and v else v for v in r] + [None] * (width - len(r))
                 for r in rows]
        self.book.sheets[sheet].range((row, col)).value = block

    def fill(self, sheet: str, row: int, col: int, color: str | None, *, ncols: int = 1) -> None:
        rng = self.book.sheets[sheet].range((row, col), (row, col + ncols - 1))
        rng.color = None if color is None else _rgb(color)

    def bold(self, sheet: str, row: int, col: int, *, ncols: int = 1) -> None:
        self.book.sheets[sheet].range((row, col), (row, col + ncols - 1)).font.bold = True

    def note(self, sheet: str, row: int, col: int, text: str | None) -> None:
        cell = self.book.sheets[sheet].range((row, col))
        existing = cell.note
        if existing is not None:
            existing.delete()
        if text:
            cell.add_note(text)

    def notes(self, sheet: str) -> list[tuple[int, int, str]]:
        if not sys.platform.startswith("win"):
            return []  # the Mac object model has no comments collection through xlwings
        out = []
        for c in self.book.sheets[sheet].api.Comments:
            cell = c.Parent
            out.append((int(cell.Row), int(cell.Column), str(c.Text())))
        return out

    def hyperlink(self, sheet: str, row: int, col: int, target: str) -> None:
        cell = self.book.sheets[sheet].range((row, col))
        text = str(cell.value if cell.value is not None else target)
        if sys.platform.startswith("win"):
            # The documented in-document form: empty Address, the place in SubAddress.
            self.book.sheets[sheet].api.Hyperlinks.Add(Anchor=cell.api, Address="", SubAddress=target,
                                                      ScreenTip=target, TextToDisplay=text)
        else:
            cell.add_hyperlink("#" + target, text_to_display=text, screen_tip=target)

    def set_widths(self, sheet: str, widths: Sequence[float]) -> None:
        sht = self.book.sheets[sheet]
        for j, w in enumerate(widths):
            sht.range((1, j + 1)).column_width = w

    def grow_table(self, sheet: str, row: int) -> None:
        sht = self.book.sheets[sheet]
        for table in sht.tables:
            rng = table.range
            last = rng.last_cell
            if last.row == row - 1:
                table.resize(sht.range((rng.row, rng.column), (row, last.column)))

    def select(self, sheet: str, row: int, col: int) -> None:
        sht = self.book.sheets[sheet]
        sht.activate()
        sht.range((row, col)).select()

    def message(self, text: str, *, error: bool = False) -> None:
        self.book.app.alert(text, title="xlcrm", mode="critical" if error else "info")

    def save(self) -> None:
        """Nothing: the user decides when to save the workbook open in Excel."""
