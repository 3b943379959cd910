"""Cells as Excel writes them: column letters, links to a cell of another sheet, and the text XML 1.0
cannot carry.

Columns count from 0 here, as in XlsxWriter and python-calamine; the add-in's adapters, which count
rows and columns from 1 as Excel's object model does, convert at their edge.
"""

from __future__ import annotations

import re
from functools import cache

_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ESCAPE_LIKE = re.compile(r"_x[0-9A-Fa-f]{4}_")


@cache
def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


@cache
def column_index(letters: str) -> int:
    """A -> 0, Z -> 25, AA -> 26 (upper-case letters, as in a sheet's XML)."""
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def sheet_ref(sheet: str, cell: str) -> str:
    """A link target in the same workbook: ``'顧客'!C12`` (quotes inside the name doubled, as Excel wants)."""
    return "'" + sheet.replace("'", "''") + "'!" + cell


def ooxml_text(text: str) -> str:
    """OOXML's _xHHHH_ form for the characters XML 1.0 cannot carry (a cell holding U+0001 is stored as
    ``_x0001_``, and Excel shows the character again); text that already looks like it is escaped."""
    text = _ESCAPE_LIKE.sub(lambda m: "_x005F" + m.group(0), text)
    return _ILLEGAL_XML.sub(lambda m: f"_x{ord(m.group(0)):04X}_", text)
