"""How findings look inside a workbook: colours, and the list sheet's name, headings and labels.

Shared by ``validate.annotate`` (both its fast package patch and the openpyxl fallback) and the add-in's
入力チェック button, so a cell marked from the terminal and one marked from the ribbon look the same.
Kept free of pandas: the add-in imports it on every click.
"""

from __future__ import annotations

from typing import Any, Literal

from xlcrm.schema import META_SHEET

ERROR = "error"
WARNING = "warning"

#: Cell fills (RGB hex): Excel's own "bad" red and "neutral" amber.
FILLS = {ERROR: "FFC7CE", WARNING: "FFEB9C"}

#: The sheet that lists every finding with a link to its cell.
SUMMARY_SHEET = {"ja": "エラー一覧", "en": "Errors"}

_HEADINGS = {"ja": ("重要度", "シート", "セル", "列", "値", "メッセージ"),
             "en": ("Severity", "Sheet", "Cell", "Column", "Value", "Message")}
_SEVERITY = {"ja": {ERROR: "エラー", WARNING: "警告"}, "en": {ERROR: "Error", WARNING: "Warning"}}


def summary_headings(lang: Literal["ja", "en"]) -> tuple[str, ...]:
    return _HEADINGS[lang]


def severity_label(severity: str, lang: Literal["ja", "en"]) -> str:
    return _SEVERITY[lang][severity]


def restore_meta_state(book: Any) -> None:
    """An openpyxl workbook's meta sheet back to very hidden (LibreOffice saves it as merely hidden, so
    it would be listed under Unhide)."""
    if META_SHEET in book.sheetnames:
        book[META_SHEET].sheet_state = "veryHidden"


def meta_values(book: Any) -> dict[str, str]:
    """The ``_xlcrm`` sheet's keys and values of a python-calamine workbook ({} without one)."""
    if META_SHEET not in book.sheet_names:
        return {}
    out: dict[str, str] = {}
    for row in book.get_sheet_by_name(META_SHEET).to_python():
        if len(row) >= 2 and isinstance(row[0], str):
            out[row[0]] = "" if row[1] is None else str(row[1])
    return out
