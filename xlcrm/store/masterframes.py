"""The master database's current records as pandas frames, for reports, exports and handover.

Why a module of its own: reports and exports read the same active rows with the same typing (dates
as Timestamps, numbers as numbers, blanks as missing).  The SQL behind them (records, history
look-ups, review tables written by merge) lives in :mod:`xlcrm.store.db`, the one place that decides the
layout; this module only turns its rows into frames.
"""

from __future__ import annotations

import sqlite3

import pandas as pd

from xlcrm.schema import Entity, Schema
from xlcrm.store import db


def entity_frame(conn: sqlite3.Connection, entity: Entity, *, deleted: bool = False) -> pd.DataFrame:
    """Active rows of one entity (``deleted=True``: its deleted rows), one column per schema key, typed
    for arithmetic.

    Dates become ``Timestamp`` (unparseable text becomes NaT: a report must not die on one bad
    cell; data quality lists such rows separately), ints and decimals become floats/Int64, blank
    text becomes missing.
    """
    rows = db.fetch_active(conn, entity, deleted=deleted)
    frame = pd.DataFrame([tuple(r) for r in rows], columns=entity.keys, dtype=object)
    for col in entity.columns:
        s = frame[col.key]
        if col.type == "date":
            frame[col.key] = pd.to_datetime(s, errors="coerce", format="ISO8601")
        elif col.type in ("int", "decimal"):
            frame[col.key] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            frame[col.key] = s.map(lambda v: None if v is None or (isinstance(v, str) and not v.strip())
                                   else v).astype(object)
    return frame


def active_frames(conn: sqlite3.Connection, schema: Schema) -> dict[str, pd.DataFrame]:
    """Each entity's active rows by its key, plus the deleted customers under
    :data:`xlcrm.views.analysis.DELETED_CUSTOMERS`, whose records the report leaves out wherever they are
    still active (a master from before deleting a customer deleted its records too)."""
    frames = {e.key: entity_frame(conn, e) for e in schema}
    frames["deleted_customers"] = entity_frame(conn, schema.entity("customers"), deleted=True)
    return frames


def last_change(conn: sqlite3.Connection, entity: str) -> dict[str, pd.Timestamp]:
    """Latest ``history.at`` per record: when anybody last changed it, whatever the field."""
    out: dict[str, pd.Timestamp] = {}
    for rid, at in db.last_changes(conn, entity):
        ts = pd.to_datetime(at, errors="coerce", format="ISO8601")
        if ts is not pd.NaT and not pd.isna(ts):
            out[rid] = ts.tz_localize(None) if ts.tzinfo else ts
    return out


#: Review tables merge writes (重複候補, 競合, rows deleted from a team workbook), by report key.
REVIEW_TABLES: dict[str, str] = {"duplicates": "duplicates", "conflicts": "conflicts", "deletions": "deletions"}


def pending_reviews(conn: sqlite3.Connection, kind: str) -> int | None:
    """Rows of a merge review table still waiting for a person; None when the table does not exist
    (a database from before merge created it)."""
    name = REVIEW_TABLES[kind]
    if not db.table_exists(conn, name):
        return None
    return db.pending_count(conn, name)
