"""The workbook adapter over a file, with openpyxl: the ribbon actions in the CLI and in tests.

openpyxl is the project's tool for editing a workbook in place.  Known limits it brings (and which do
not apply in Excel): data validations stored as x14 extensions (lists on another sheet) and some
newer Excel features are dropped on save, so the CLI writes to a copy unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlcrm.errors import UnreadableWorkbook, XlcrmError
from xlcrm.excel.adapter import DATE_FORMAT, a1, trim
from xlcrm.xlsx.cells import column_index, column_letter
from xlcrm.xlsx.marks import restore_meta_state

_CELL = re.compile(r"^\$?([A-Z]{1,3})\$?(\d+)$")
_RANGE = re.compile(r"^\$?([A-Z]{1,3})\$?(\d+):\$?([A-Z]{1,3})\$?(\d+)$")
# Characters XML 1.0 cannot hold; openpyxl refuses them, Excel shows nothing for them.
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class OpenpyxlBook:
    """A workbook file opened for editing; :meth:`save` writes it back (atomically) or to ``out``."""

    def __init__(self, path: str | Path, *, out: str | Path | None = None) -> None:
        import openpyxl

        self._path = Path(path)
        self._out = Path(out) if out is not None else self._path
        if not self._path.is_file():
            raise UnreadableWorkbook("file not found; check the path", path=str(self._path))
        try:
            self.wb = openpyxl.load_workbook(self._path, keep_vba=self._path.suffix.lower() in (".xlsm", ".xlam"))
        except Exception as exc:  # openpyxl raises many kinds for damaged files
            raise UnreadableWorkbook(f"cannot be opened for editing ({type(exc).__name__}: {exc}); open it "
                                     "in Excel and save it again", path=str(self._path)) from None

        restore_meta_state(self.wb)
        #: Messages the actions showed: (text, is_error); the CLI prints them, tests read them.
        self.messages: list[tuple[str, bool]] = []

    # --- reading ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def path(self) -> Path | None:
        return self._path

    def sheet_names(self) -> list[str]:
        return list(self.wb.sheetnames)

    def _ws(self, sheet: str) -> Any:
        try:
            return self.wb[sheet]
        except KeyError:
            raise XlcrmError(f"sheet {sheet} not found", path=str(self._path)) from None

    def read_sheet(self, sheet: str) -> list[list[Any]]:
        ws = self._ws(sheet)
        rows = [list(r) for r in ws.iter_rows(min_row=1, max_row=ws.max_row, min_col=1,
                                              max_col=ws.max_column, values_only=True)]
        return trim(rows)

    def active_cell(self) -> tuple[str, int, int]:
        ws = self.wb.active
        m = _CELL.match((ws.active_cell or "A1").split(":")[0].split(" ")[0])
        if not m:
            return ws.title, 1, 1
        return ws.title, int(m.group(2)), column_index(m.group(1).upper()) + 1

    # --- writing ---------------------------------------------------------------------------------

    def reset_sheet(self, sheet: str) -> None:
        index = 0
        if sheet in self.wb.sheetnames:
            index = self.wb.sheetnames.index(sheet)
            del self.wb[sheet]
        self.wb.create_sheet(sheet, index)

    def write_block(self, sheet: str, row: int, col: int, rows: Sequence[Sequence[Any]]) -> None:
        from xlcrm.xlsx.writer import looks_like_formula

        ws = self._ws(sheet)
        for i, values in enumerate(rows):
            for j, v in enumerate(values):
                cell = ws.cell(row=row + i, column=col + j)
                if v is None or v == "":
                    cell.value = None
                elif isinstance(v, str):
                    text = _ILLEGAL.sub("", v)
                    cell.value = text
                    cell.data_type = "s"  # openpyxl would otherwise store "=..." as a formula
                    if looks_like_formula(text):
                        cell.quotePrefix = True  # and Excel must not evaluate it when the cell is edited
                elif isinstance(v, bool | int | float):
                    cell.value = v
                elif isinstance(v, dt.datetime):
                    cell.value = v
                    cell.number_format = DATE_FORMAT + " hh:mm"
                elif isinstance(v, dt.date):
                    cell.value = v
                    cell.number_format = DATE_FORMAT
                else:
                    cell.value = str(v)
                    cell.data_type = "s"

    def fill(self, sheet: str, row: int, col: int, color: str | None, *, ncols: int = 1) -> None:
        from openpyxl.styles import PatternFill

        ws = self._ws(sheet)
        fill = PatternFill(fill_type=None) if color is None else PatternFill("solid", start_color=color,
                                                                             end_color=color)
        for j in range(ncols):
            ws.cell(row=row, column=col + j).fill = fill

    def bold(self, sheet: str, row: int, col: int, *, ncols: int = 1) -> None:
        from openpyxl.styles import Font

        ws = self._ws(sheet)
        for j in range(ncols):
            ws.cell(row=row, column=col + j).font = Font(bold=True)

    def note(self, sheet: str, row: int, col: int, text: str | None) -> None:
        from openpyxl.comments import Comment

        cell = self._ws(sheet).cell(row=row, column=col)
        if text is None:
            cell.comment = None
            return
        comment = Comment(_ILLEGAL.sub("", text), "xlcrm")
        comment.width, comment.height = 320, 40 + 20 * (text.count("\n") + 1)
        cell.comment = comment

    def notes(self, sheet: str) -> list[tuple[int, int, str]]:
        ws = self._ws(sheet)
        return [(c.row, c.column, c.comment.text) for row in ws.iter_rows() for c in row
                if c.comment is not None]

    def hyperlink(self, sheet: str, row: int, col: int, target: str) -> None:
        from openpyxl.styles import Font
        from openpyxl.worksheet.hyperlink import Hyperlink

        cell = self._ws(sheet).cell(row=row, column=col)
        cell.hyperlink = Hyperlink(ref=cell.coordinate, location=target)
        cell.font = Font(color="0563C1", underline="single")

    def set_widths(self, sheet: str, widths: Sequence[float]) -> None:
        ws = self._ws(sheet)
        for j, w in enumerate(widths):
            ws.column_dimensions[column_letter(j)].width = w

    def grow_table(self, sheet: str, row: int) -> None:
        ws = self._ws(sheet)
        for table in ws.tables.values():
            m = _RANGE.match(table.ref)
            if not m or int(m.group(4)) != row - 1:
                continue
            new_ref = f"{m.group(1)}{m.group(2)}:{m.group(3)}{row}"
            table.ref = new_ref
            if table.autoFilter is not None:
                table.autoFilter.ref = new_ref

    def select(self, sheet: str, row: int, col: int) -> None:
        ws = self._ws(sheet)
        for other in self.wb.worksheets:
            other.sheet_view.tabSelected = other is ws
        self.wb.active = ws
        cell = a1(row, col)
        ws.sheet_view.selection[0].activeCell = cell
        ws.sheet_view.selection[0].sqref = cell

    def message(self, text: str, *, error: bool = False) -> None:
        self.messages.append((text, error))

    def save(self) -> None:
        from xlcrm.xlsx.writer import atomic_write

        with atomic_write(self._out) as tmp:
            self.wb.save(tmp)
