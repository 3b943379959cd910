"""Titled tables at any position in a worksheet: the building block of reports and handover books.

Why not ``xlcrm.xlsx.writer.write_table``: that writes one entity table per sheet at A1; a report needs
several small tables per sheet with titles, each still a real Excel table (filterable, named) so a
chart can point at its cells.  Text from the master is written as text, never a formula
(``quotePrefix`` when it looks like one), as everywhere in xlcrm.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from xlcrm.schema import Column, Lang
from xlcrm.xlsx.writer import XlcrmWorkbook, looks_like_formula

Kind = Literal["text", "money", "int", "date", "pct", "days", "score"]
NUM_FORMATS: dict[str, str] = {"money": "#,##0", "int": "#,##0", "days": "#,##0", "score": "0",
                                "pct": "0.0%", "date": "yyyy/mm/dd"}
WIDTH: dict[str, float] = {"text": 18, "money": 14, "int": 9, "days": 10, "score": 6, "pct": 9, "date": 12}


@dataclass
class Col:
    header: str
    kind: Kind = "text"
    width: float | None = None


@dataclass
class Block:
    """One titled table; ``key`` becomes the Excel table name ``<prefix><key>`` (e.g. ``rpt_sales_monthly``)."""

    key: str
    title: str
    columns: list[Col]
    rows: list[list[Any]]
    note: str = ""
    #: Per-cell number kinds overriding the column's, keyed (row index, column index).
    cell_kinds: dict[tuple[int, int], Kind] = field(default_factory=dict)
    prefix: str = "rpt_"

    def __post_init__(self) -> None:
        # A column with no header is one xlcrm.toml switched off: drop it with its values.
        keep = [i for i, c in enumerate(self.columns) if c.header]
        if len(keep) < len(self.columns):
            self.columns = [self.columns[i] for i in keep]
            self.rows = [[r[i] for i in keep] for r in self.rows]

    def index(self, header: str) -> int:
        return next(i for i, c in enumerate(self.columns) if c.header == header)

    @property
    def table_name(self) -> str:
        # Excel table names: letters, digits, underscore and period only.
        return re.sub(r"[^A-Za-z0-9_.]", "_", f"{self.prefix}{self.key}")


def cell_value(v: Any) -> Any:
    """pandas/numpy scalars -> plain Python values XlsxWriter and matplotlib take; missing -> None."""
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.date()
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isinf(v):
        return None
    return v


def put_text(wb: XlcrmWorkbook, ws: Any, r: int, c: int, text: str, **props: Any) -> None:
    if text:
        ws.write_string(r, c, text, wb.fmt(**props, quote_prefix=looks_like_formula(text)))


def write_block(wb: XlcrmWorkbook, ws: Any, top: int, block: Block) -> None:
    header = wb.fmt(bold=True, font_color="#FFFFFF", bg_color="#4472C4", border=1, border_color="#FFFFFF",
                    text_wrap=True, valign="vcenter")
    for i, values in enumerate(block.rows):
        for c, (col, v) in enumerate(zip(block.columns, values, strict=True)):
            put_value(wb, ws, top + 1 + i, c, v, block.cell_kinds.get((i, c), col.kind))
    last = top + max(len(block.rows), 1)
    ws.add_table(top, 0, last, len(block.columns) - 1, {
        "name": block.table_name, "style": "Table Style Light 9", "autofilter": True,
        "columns": [{"header": col.header, "header_format": header} for col in block.columns]})
    ws.set_row(top, 30)


def put_value(wb: XlcrmWorkbook, ws: Any, r: int, c: int, value: Any, kind: str) -> None:
    v = cell_value(value)
    if v is None:
        return
    if isinstance(v, str):
        if not v:
            return
        fmt = wb.fmt(quote_prefix=True) if looks_like_formula(v) else None
        ws.write_string(r, c, v, fmt)
    elif isinstance(v, bool):
        ws.write_boolean(r, c, v)
    elif isinstance(v, dt.date):
        ws.write_datetime(r, c, dt.datetime(v.year, v.month, v.day), wb.fmt(num_format=NUM_FORMATS["date"]))
    elif isinstance(v, int | float):
        fmt = NUM_FORMATS.get(kind)
        ws.write_number(r, c, float(v), wb.fmt(num_format=fmt) if fmt else None)
    else:
        ws.write_string(r, c, str(v))


def column_kind(col: Column) -> Kind:
    """How a schema column's values are formatted in a block."""
    return {"date": "date", "int": "int", "decimal": "money"}.get(col.type, "text")  # type: ignore[return-value]


def schema_cols(columns: list[Column], lang: Lang) -> list[Col]:
    return [Col(c.label(lang), column_kind(c), min(c.width, 40)) for c in columns]


def schema_values(columns: list[Column], row: Any, lang: Lang) -> list[Any]:
    """A record's values in ``columns`` order with choice keys shown as labels in ``lang``."""
    out = []
    for c in columns:
        v = cell_value(row[c.key])
        if c.type == "choice" and v is not None:
            v = c.choice_label(str(v), lang)
        elif c.type == "date" and isinstance(v, str):
            with contextlib.suppress(ValueError):
                v = dt.date.fromisoformat(v)
        out.append(v)
    return out
