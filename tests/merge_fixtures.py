"""Helpers for the merge / distribute tests: real team workbooks, edits as a person makes them, db dumps."""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl

from xlcrm.intake.template import write_team_workbook
from xlcrm.schema import DEFAULT_SCHEMA, Schema
from xlcrm.store import db

TODAY = date(2024, 6, 1)


def customer(name: str, **kw: Any) -> dict[str, Any]:
    row = {"kind": "corporate", "name": name}
    row.update(kw)
    return row


def activity(customer_ref: str, content: str, day: date = date(2024, 5, 1), **kw: Any) -> dict[str, Any]:
    row = {"date": day, "customer": customer_ref, "type": "call", "content": content}
    row.update(kw)
    return row


def book(path: Path, rows: Mapping[str, Sequence[Mapping[str, Any]]], *, owner: str = "佐藤",
         lang: str = "ja", workbook_id: str = "", schema: Schema = DEFAULT_SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_team_workbook(path, schema, owner=owner, lang=lang, rows=rows,  # type: ignore[arg-type]
                               workbook_id=workbook_id)


def bench_team(folder: Path, files: int, customers: int, activities: int) -> Path:
    """Legacy staff workbooks from benchmarks/make_data.py (realistic variation, planted errors)."""
    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, bench)
    try:
        from make_data import make_team
    finally:
        sys.path.remove(bench)
    make_team(folder, files, customers, activities)
    return folder


def connect(master: Path) -> sqlite3.Connection:
    """The master's database: master.db beside ``master``, or, while ``XLCRM_DB`` names a PostgreSQL
    master (the ``store`` fixture), a copy of what the server holds, made with the reverse of `store copy`."""
    url = os.environ.get("XLCRM_DB")
    if not url:
        return db.connect(db.db_path_for(master))
    from xlcrm.store.url import StoreURL
    from xlcrm.store.working import copy_out

    folder = Path(master).resolve().parent.parent / ".server-copies"  # beside the master's folder, not in it
    folder.mkdir(exist_ok=True)
    target = folder / f"{next(_copies)}.db"
    copy_out(StoreURL(url, "XLCRM_DB"), DEFAULT_SCHEMA, target)
    return db.connect(target)


_copies = itertools.count()


def records(master: Path, entity: str = "customers", *, active_only: bool = True,
            schema: Schema = DEFAULT_SCHEMA) -> dict[str, dict[str, Any]]:
    """id -> {column: stored value} (plus _state, _merged_into)."""
    conn = connect(master)
    try:
        e = schema.entity(entity)
        cols = [*e.keys, "_state", "_merged_into"]
        sql = f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{entity}"'
        if active_only:
            sql += " WHERE _state = 'active'"
        return {r[0]: dict(zip(cols, r, strict=True)) for r in conn.execute(sql)}
    finally:
        conn.close()


def dump(master: Path, schema: Schema = DEFAULT_SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
    """Every record of every entity with its state: what "the same master" means in the tests."""
    conn = connect(master)
    try:
        out = {}
        for e in schema:
            cols = ", ".join(f'"{c}"' for c in [*e.keys, "_state", "_merged_into"])
            out[e.key] = sorted(tuple(r) for r in conn.execute(f'SELECT {cols} FROM "{e.key}"'))
        out["conflicts"] = sorted(tuple(r) for r in conn.execute(
            "SELECT entity, record_id, field, master_value, status FROM conflicts"))
        out["duplicates"] = sorted(tuple(r) for r in conn.execute("SELECT a_id, b_id, status FROM duplicates"))
        return out
    finally:
        conn.close()


def history(master: Path) -> list[dict[str, Any]]:
    conn = connect(master)
    try:
        cols = ("run_id", "entity", "record_id", "field", "old", "new", "source_file", "who", "how")
        return [dict(zip(cols, r, strict=True)) for r in conn.execute(
            f"SELECT {', '.join(cols)} FROM history ORDER BY history_id")]
    finally:
        conn.close()


def sheet_rows(path: Path, sheet: str) -> list[dict[str, Any]]:
    """Rows of a sheet as {header: value} (openpyxl, values only)."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = list(wb[sheet].iter_rows(values_only=True))
    finally:
        wb.close()
    if not rows:
        return []
    head = [str(h) if h is not None else "" for h in rows[0]]
    return [dict(zip(head, r, strict=False)) for r in rows[1:] if any(v is not None for v in r)]


def edit_cells(path: Path, sheet: str, match: Mapping[str, Any], changes: Mapping[str, Any]) -> int:
    """Change cells as a person would in Excel: in rows whose headers match ``match``, set ``changes``.

    Headers are the workbook's labels (e.g. 顧客名).  Returns the number of rows changed.
    """
    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    head = {str(c.value): c.column for c in ws[1] if c.value is not None}
    n = 0
    for row in ws.iter_rows(min_row=2):
        values = {h: row[col - 1].value for h, col in head.items()}
        if all(values.get(k) == v for k, v in match.items()):
            for k, v in changes.items():
                cell = ws.cell(row=row[0].row, column=head[k])
                cell.value = v
                if isinstance(v, str):
                    cell.data_type = "s"
            n += 1
    wb.save(path)
    return n


def delete_rows(path: Path, sheet: str, match: Mapping[str, Any]) -> int:
    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    head = {str(c.value): c.column for c in ws[1] if c.value is not None}
    doomed = [row[0].row for row in ws.iter_rows(min_row=2)
              if all(row[head[k] - 1].value == v for k, v in match.items())]
    for r in reversed(doomed):
        ws.delete_rows(r)
    wb.save(path)
    return len(doomed)
