"""Merge the team's workbooks into the master: identity, duplicates, three-way field merge, history.

The master's system of record is the SQLite database beside ``master.xlsx`` (see :mod:`xlcrm.db`); a
merge is one transaction, after which the workbook is regenerated from the database
(:mod:`xlcrm.masterbook`).  What a merge does, and why:

**Identity.**  A row with an xlcrm ID updates that record (a record merged into another forwards to
its survivor).  A row without an ID is recognised, in this order, as the record it created last time
(``origins``: the same content from the same workbook), as an existing activity/deal/contact/TODO by
the entity's natural key (so re-merging an activity never duplicates it), or as a customer the master
or another input already has: :mod:`xlcrm.match` decides; a *certain* match links the row to that
customer, a *probable* one creates a new customer and queues the pair on 重複候補 for a person.
Otherwise a new ID.  Contacts, activities, deals and TODOs follow their customer's resolved ID.

**Three-way field merge.**  Every workbook has a *base*: what ``distribute`` handed it, or what it
held when it was last merged.  A field counts as changed by that person only where the row differs
from its base.  Without a base (a legacy spreadsheet, the first time) the row is compared with the
master: a value fills an empty field, a different value for a filled field is a conflict.  All
proposals for a field are collected over every input first and judged against the master as it was
*before* this merge, so the result does not depend on the order of the inputs: one proposal (or
several agreeing) is applied; disagreeing proposals, or a proposal against a master value that
changed since the base, become a 競合 and the master keeps its value until a person decides.  The
admin's own edits in ``master.xlsx`` are one more input whose base is the database (what was written).

**Nothing is lost.**  Every input row ends in exactly one of new / updated / unchanged / linked /
rejected, counted per file and sheet (取込ログ).  ``updated`` means the row changed the master or
raised a conflict.  Invalid rows are rejected into an annotated error workbook per file while the
valid rows still merge (``strict`` rejects the whole file).  A row that disappeared from a workbook
(in its base, missing now) is listed on 削除候補, never deleted.  Merging the same inputs again
changes nothing: after a merge each workbook's base is what it sent, so nothing differs any more.

**Speed.**  Per row the work is dict look-ups and tuple comparisons; values are converted to their
stored form column by column (unique values once) and written with ``executemany``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import os
import pickle
import shutil
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from xlcrm import db
from xlcrm.errors import XlcrmError
from xlcrm.inputs import open_in_excel
from xlcrm.schema import OWNER_DEFAULTED, Entity, Lang, Schema

#: The five outcomes of an input row; they add up to the rows read.
OUTCOMES = ("new", "updated", "unchanged", "linked", "rejected")
#: Source key of the master workbook itself when the admin edited it.
MASTER_SOURCE = "master"

#: progress(stage, done, total): the CLI turns it into a rich progress bar.
Progress = Callable[[str, int, int], None]


# --- report -----------------------------------------------------------------------------------------

@dataclass
class SheetCounts:
    rows_read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    linked: int = 0
    rejected: int = 0
    #: Informational: fields of this sheet's rows that went to 競合 (those rows count as updated).
    conflicts: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def accounted(self) -> int:
        return self.new + self.updated + self.unchanged + self.linked + self.rejected


@dataclass
class FileReport:
    file: str
    owner: str
    #: ok / errors (some rows rejected) / rejected (--strict) / unreadable
    status: str
    sheets: dict[str, SheetCounts] = field(default_factory=dict)
    error_workbook: str | None = None
    message: str = ""

    def total(self, outcome: str) -> int:
        return sum(getattr(c, outcome) for c in self.sheets.values())

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = {k: self.total(k) for k in ("rows_read", *OUTCOMES)}
        return d


@dataclass
class MergeReport:
    master: str
    dry_run: bool
    run_id: int | None = None
    files: list[FileReport] = field(default_factory=list)
    history_rows: int = 0
    records_created: dict[str, int] = field(default_factory=dict)
    duplicates_new: int = 0
    duplicates_pending: int = 0
    conflicts_new: int = 0
    conflicts_pending: int = 0
    deletions_new: int = 0
    deletions_pending: int = 0
    decisions_applied: int = 0
    warnings: list[str] = field(default_factory=list)
    #: Files in the input folders that are not workbooks xlcrm reads (.xls, .csv, ...), not merged.
    not_read: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Wall seconds per stage (backup, master_workbook_read, merge -- validation runs inside it, in the
    #: workers; validate_wait is how long the merge waited for it --, error_workbooks, search_index,
    #: backup_wait, write_master): where the time goes, for the benchmark and for an admin wondering.
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [f.to_json() for f in self.files]
        return d

    @property
    def skipped(self) -> list[FileReport]:
        """Inputs left out because they could not be read (only with ``skip_unreadable``)."""
        return [f for f in self.files if f.status == "unreadable"]

    @property
    def changed(self) -> bool:
        """Whether the run changed the master: a record, a field, a decision or a new review item."""
        return bool(self.history_rows or any(self.records_created.values()) or self.decisions_applied
                    or self.duplicates_new or self.conflicts_new or self.deletions_new)


# --- stored form of the inputs ----------------------------------------------------------------------

_TEXT_TYPES = frozenset({"text", "name", "kana", "phone", "postal", "email", "url", "corporate_number",
                         "choice", "ref", "id"})


def _match_keys(schema: Schema, result: Any, rows: list[int], cols: list[list[Any]]) -> list[Any] | None:
    """Duplicate-detection keys of the customer rows that have no ID (the ones merge looks up), folded
    here: ``compact`` runs in the validation worker, so the folding (2.3 s of the merge process for a
    first import of 100,000 customers) moves to the second core.  The keys depend on the row alone."""
    from xlcrm.match import MatchIndex

    entity = schema.entity("customers")
    ids = cols[entity.keys.index(entity.id_column.key)]
    errors = result.error_rows.get(entity.key, ())
    if all(ids):
        return None
    keys_for = MatchIndex(schema).keys_for_values
    return [None if rid or row in errors else keys_for(vals)
            for row, rid, vals in zip(rows, ids, zip(*cols, strict=True), strict=True)]


def _column_values(col: Any, values: list[Any]) -> list[Any]:
    """Normalised frame values -> stored form, converting each distinct value once."""
    if col.type in _TEXT_TYPES:
        return [v if type(v) is str and v else (None if v is None or v != v or v == "" else db.to_db(col, v))
                for v in values]
    cache: dict[Any, Any] = {}
    out = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        try:
            hit = cache.get(v, cache)
        except TypeError:  # an unhashable value: convert it on its own
            out.append(db.to_db(col, v))
            continue
        if hit is cache:
            hit = cache[v] = db.to_db(col, v)
        out.append(hit)
    return out


def _fingerprinter(entity_key: str, positions: Sequence[int]) -> Callable[[Sequence[Any]], str]:
    """Content hash of a row's present fields (the same row from the same workbook, recognised), as a
    function for one sheet with the column picking prepared once (400,000 rows a merge).

    The text hashed must never change: fingerprints are stored in ``origins`` and a legacy workbook's
    rows are recognised by them at the next merge.
    """
    blake2b = hashlib.blake2b
    if len(positions) >= 2:
        pick = itemgetter(*positions)
    elif positions:
        only = positions[0]

        def pick(values: Sequence[Any]) -> tuple[Any, ...]:
            return (values[only],)
    else:
        def pick(values: Sequence[Any]) -> tuple[Any, ...]:
            return ()

    def fingerprint(values: Sequence[Any]) -> str:
        return blake2b(repr((entity_key, pick(values))).encode("utf-8"), digest_size=12).hexdigest()

    return fingerprint


class _RefMark:
    """Stands in for the customer reference while a child row's fingerprint text is prepared: its
    repr is a NUL, which the repr of a real value never contains (repr escapes control characters)."""

    def __repr__(self) -> str:
        return "\x00"


def _fingerprint_parts(entity: Entity, rows: list[int], cols: list[list[Any]], present: Sequence[int],
                       errors: Any) -> list[Any] | None:
    """Fingerprints of the rows without an ID, computed in the validation worker (the merge process
    is the one that is busy).  A row whose fingerprint includes its customer, which only the merge
    resolves, gets the text before and after the customer's repr instead: :func:`_finish_fingerprint`
    joins them, and the result is exactly :func:`_fingerprinter`'s (``tests/test_merge.py``)."""
    idc = entity.keys.index(entity.id_column.key)
    ids = cols[idc]
    if all(ids):
        return None
    fingerprint = _fingerprinter(entity.key, present)
    ref = entity.ref_column
    ref_i = entity.keys.index(ref.key) if ref is not None else -1
    if ref_i not in present:
        return [None if rid or row in errors else fingerprint(vals)
                for row, rid, vals in zip(rows, ids, zip(*cols, strict=True), strict=True)]
    mark = _RefMark()
    ekey = entity.key
    at = present.index(ref_i)
    pick = itemgetter(*present) if len(present) >= 2 else (lambda values: (values[ref_i],))
    out: list[Any] = []
    for row, rid, vals in zip(rows, ids, zip(*cols, strict=True), strict=True):
        if rid or row in errors:
            out.append(None)
            continue
        picked = list(pick(vals))
        picked[at] = mark
        out.append(tuple(repr((ekey, tuple(picked))).split("\x00")))
    return out


def _finish_fingerprint(parts: tuple[str, str], ref_value: Any) -> str:
    head, tail = parts
    return hashlib.blake2b(f"{head}{ref_value!r}{tail}".encode(), digest_size=12).hexdigest()


# --- inputs -----------------------------------------------------------------------------------------

@dataclass
class Source:
    """One input workbook after validation, with what merge needs to know about it."""

    path: Path
    result: Any  # validate.ValidationResult
    key: str  # workbook id, or a file key for legacy workbooks without one
    who: str
    at: str  # when the file was saved (ISO), shown with its competing values on 競合
    lang: Lang
    strict_rejected: bool = False
    is_master: bool = False
    report: FileReport | None = None
    #: The master workbook's base: the active records as written, per entity (taken before decisions).
    written: dict[str, dict[str, tuple[Any, ...]]] | None = None
    #: Rows rejected during the merge for reasons only the master knows (the error workbook is redone).
    late_findings: bool = False
    #: Those rows, per entity: Excel row -> (ID, cells), from their validated values (see Merger._reject).
    late_rows: dict[str, dict[int, tuple[str | None, dict[str, Any]]]] = field(default_factory=dict)
    rows: int = 0
    sheets: dict[str, _SheetRows] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class _SheetRows:
    """One sheet of one input in the stored form, column by column (no DataFrames kept around)."""

    rows: list[int]  # Excel row numbers
    cols: list[list[Any]]  # per entity column (``entity.keys`` order), stored form
    present: list[int]  # positions of the columns the sheet has (not id, not system): what it may change
    blank_raw: dict[int, list[bool]]  # columns validate filled with a default: was the cell blank?
    cust_rows: list[Any] | None  # the referenced customer's row in the same workbook
    #: customers: duplicate-detection keys (match.CustomerKeys) of the rows without an ID, else None
    match_keys: list[Any] | None = None
    #: per row without an ID: its fingerprint, or the parts around its customer (_fingerprint_parts)
    fingerprints: list[Any] | None = None
    #: rows validation rejected: Excel row -> (their ID, if valid, and the cells exactly as typed)
    rejected: dict[int, tuple[str | None, dict[str, Any]]] | None = None


def compact(result: Any, schema: Schema) -> dict[str, _SheetRows]:
    """Turn a validation result's frames into :class:`_SheetRows` and drop the frames.

    Done file by file right after validation, so the merge never holds every file's raw and
    normalised DataFrames at once (the peak memory of a 400,000-row merge).
    """
    out: dict[str, _SheetRows] = {}
    for entity in schema:
        frame = result.frames[entity.key]
        sheet = result.workbook.sheets[entity.key]
        keys = entity.keys
        idc = entity.id_column.key
        present = [i for i, k in enumerate(keys) if k in sheet.letters and not entity.columns[i].system
                   and k != idc]
        cols = [_column_values(entity.columns[i], frame[keys[i]].tolist()) for i in range(len(keys))]
        defaulted = {i for i, c in enumerate(entity.columns) if c.default is not None}
        owner_key = OWNER_DEFAULTED.get(entity.key)
        if owner_key in keys:
            defaulted.add(keys.index(owner_key))
        raw = sheet.frame
        blank_raw = {i: raw[keys[i]].isna().tolist() for i in defaulted if keys[i] in raw.columns}
        cust_rows = frame["_customer_row"].tolist() if "_customer_row" in frame else None
        rows = [int(r) for r in frame.index]
        keys_of = _match_keys(schema, result, rows, cols) if entity.key == "customers" else None
        errors = result.error_rows.get(entity.key, ())
        fps = _fingerprint_parts(entity, rows, cols, present, errors)
        rejected = _typed_cells(raw, errors, rows, cols[keys.index(idc)]) if errors else None
        out[entity.key] = _SheetRows(rows, cols, present, blank_raw, cust_rows, keys_of, fps, rejected)
        result.frames[entity.key] = frame.iloc[0:0]
        sheet.frame = raw.iloc[0:0]
    return out


def _typed_cells(raw: Any, errors: Iterable[int], rows: list[int], ids: list[Any]
                 ) -> dict[int, tuple[str | None, dict[str, Any]]]:
    """The non-blank cells of the ``errors`` rows exactly as the reader read them, with their ID (from
    ``ids``, the stored IDs of ``rows``, which are ascending), for the owner's next handout."""
    import bisect

    import pandas as pd

    wanted = sorted(r for r in errors if r in raw.index)
    out: dict[int, tuple[str | None, dict[str, Any]]] = {}
    keys = list(raw.columns)
    for r, values in zip(wanted, raw.loc[wanted].itertuples(index=False, name=None), strict=True):
        cells = {}
        for k, v in zip(keys, values, strict=True):
            if v is None or (isinstance(v, float) and v != v) or v == "" or v is pd.NaT:
                continue
            if isinstance(v, pd.Timestamp):
                v = v.to_pydatetime()
            elif hasattr(v, "item") and not isinstance(v, (str, bytes)):
                v = v.item()  # a numpy scalar
            cells[k] = v
        i = bisect.bisect_left(rows, r)
        rid = ids[i] if i < len(rows) and rows[i] == r else None
        out[r] = (rid if isinstance(rid, str) and rid else None, cells)
    return out


def source_key(path: Path, workbook_id: str) -> str:
    """A workbook's identity across merges: its id, or for a legacy file its folder and file name."""
    if workbook_id:
        return workbook_id
    return f"file:{path.parent.name}/{path.name}"


# --- the merge pass ---------------------------------------------------------------------------------

@dataclass(slots=True)
class _Created:
    """History rows "new" of records ``first .. first + n - 1`` (in the order the pass created them),
    all from one workbook: one entry instead of a tuple per record (400,000 in a first import)."""

    entity: Entity
    first: int
    n: int
    source_file: str
    who: str


@dataclass
class _Proposal:
    value: Any
    contested: bool
    source: Source
    row: int


class Merger:
    """One merge run over an open transaction: call :meth:`run` with the validated sources."""

    def __init__(self, conn: sqlite3.Connection, schema: Schema, *, run_id: int, now: dt.datetime,
                 today: dt.date, lang: Lang = "ja", progress: Progress | None = None) -> None:
        self.conn = conn
        self.schema = schema
        self.run_id = run_id
        self.at = now.isoformat(timespec="seconds")
        self.today = today.isoformat()
        self.lang = lang
        self.progress = progress
        self.history: list[Any] = []  # history tuples (HISTORY_COLUMNS order) and _Created runs
        self.history_rows = 0
        self.created: dict[str, int] = {}
        self.duplicates_new = 0
        self.conflicts_new = 0
        self.deletions_new = 0
        self.warnings: list[str] = []
        #: (source index, customers row) -> resolved customer id, for the children's references.
        self.customer_of_row: dict[tuple[int, int], str] = {}
        self._matcher: Any = None
        #: customer id -> its contacts (id, and their match keys once folded), built when a new contact
        #: needs it (:meth:`_contact_duplicates`)
        self._contacts_of: dict[Any, list[list[Any]]] | None = None
        #: entity -> the records table's last rowid before this run's new records went in
        self._rowid0: dict[str, int] = {}
        #: the agreed edits _judge applied last, with the file each came from
        self._changes: list[tuple[str, str, Any, str]] = []
        self._pending_conflicts = db.pending_conflict_ids(conn)
        self._offered = db.pending_conflict_offers(conn)

    # -- helpers --

    def _offered_before(self, ekey: str, rid: str, fld: str, value: Any, src: Source) -> bool:
        cid = self._pending_conflicts.get((ekey, rid, fld))
        return cid is not None and (cid, db.encode_value(value), src.who) in self._offered

    def _flush_history(self) -> None:
        """Write the pass's history rows in the order they happened; a run of records created one
        after another from one workbook is copied from the records table inside SQLite (the pass
        inserted them in creation order: one run of rowids)."""
        plain: list[tuple[Any, ...]] = []
        for item in self.history:
            if type(item) is not _Created:
                plain.append(item)
                continue
            if plain:
                db.add_history(self.conn, plain)
                plain = []
            first = self._rowid0[item.entity.key] + item.first + 1
            db.add_creation_history(self.conn, item.entity, first, first + item.n - 1, run_id=self.run_id,
                                    at=self.at, source_file=item.source_file, who=item.who)
        if plain:
            db.add_history(self.conn, plain)
        self.history_rows += sum(item.n if type(item) is _Created else 1 for item in self.history)
        self.history.clear()

    def _hist(self, entity: Entity, rid: str, fld: str | None, old: Any, new: Any, src: Source | None,
              how: str) -> None:
        self.history.append((self.run_id, self.at, entity.key, rid, fld, old, new,
                             src.name if src else None, src.who if src else None, how))

    def _matcher_index(self, recs: Mapping[str, tuple[Any, ...]], states: dict[str, tuple[str, str | None]],
                       entity: Entity) -> Any:
        """The duplicate index over every active customer, built only when a row needs it."""
        if self._matcher is None:
            from xlcrm.match import MatchIndex

            index = MatchIndex(self.schema, self.lang)
            index.add_many((rid, vals) for rid, vals in recs.items() if rid not in states)
            self._matcher = index
        return self._matcher

    # -- the run --

    def run(self, sources: _Inputs | Sequence[Source]) -> None:
        """Each input in turn through every sheet's pass, customers first; then each pass's end.

        A workbook's contacts, activities, deals and TODOs only need its own customers resolved, so
        they are merged right after them, while the workers still validate later inputs: merged
        sheet after sheet, the 300,000 activities of a first import ran on one core after
        validation had ended (4 s with the second core idle).  The ends (proposals judged into
        edits or 競合, edited customers matched again) see every input, as before.
        """
        # The cyclic GC is paused for the pass: 400,000 rows leave millions of tuples and lists alive
        # in growing containers, which it would rescan again and again (measured: 12% of the merge
        # stage) while the pass makes no reference cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            passes = [self._entity_pass(entity, sources) for entity in self.schema]
            for p in passes:
                next(p)  # the master as it was before this merge: loaded before any input changes it
            for si, src in enumerate(sources):
                for p in passes:
                    p.send((si, src))
                self._flush_history()
                if isinstance(sources, _Inputs) and sources.validated:
                    sources.release_annotation()  # the workers are free now
            for entity, p in zip(self.schema, passes, strict=True):
                with contextlib.suppress(StopIteration):
                    p.send(None)
                self._flush_history()
                if entity.key == "customers":
                    self._matcher = None  # only customers are matched
        finally:
            if enabled:
                gc.enable()

    def _entity_pass(self, entity: Entity, sources: _Inputs | Sequence[Source]
                     ) -> Generator[None, tuple[int, Source] | None, None]:
        """One sheet's pass as a generator: sent ``(index, source)`` for each input in order, then
        ``None`` for the end (see :meth:`run`)."""
        from xlcrm.match import proposals as to_review

        conn, ekey = self.conn, entity.key
        keys = entity.keys
        ncols = len(keys)
        idc = entity.id_column.key
        pos = {k: i for i, k in enumerate(keys)}
        idc_i = pos[idc]
        history = self.history
        ref = entity.ref_column
        ref_i = pos[ref.key] if ref is not None else None
        updated_i = pos.get("updated_at")

        same = Equivalence(entity)
        recs = db.LazyRecords(conn, entity)  # the master before this merge
        states = db.load_states(conn, entity)
        cust_states = states if ekey == "customers" else db.load_states(conn, self.schema.entity("customers"))
        known_customers: set[str] | None = None
        if ref is not None:
            known_customers = db.record_ids(conn, self.schema.entity("customers")) \
                if ekey != "customers" else None
        created: dict[str, list[Any]] = {}
        next_no = db.first_free_number(conn, entity)
        natural = entity.natural_key
        nat_pos = [pos[k] for k in natural] if natural else []
        # Natural-key fields that must be filled for the key to count (the customer is set above).
        nat_need = [pos[k] for k in natural if ref is None or k != ref.key] if natural else []
        nat_need_pick = (itemgetter(*nat_need, *nat_need)  # doubled: a tuple even for one field
                         if nat_need else (lambda _values: ()))
        natidx: dict[tuple[Any, ...], str] | None = None  # built when a row without an ID needs it

        def natural_index() -> dict[tuple[Any, ...], str]:
            """Natural key -> record: the master's active records, then this run's new ones."""
            nonlocal natidx
            if natidx is None:
                natidx = {}
                for rid, vals in (*recs.items(), *created.items()):
                    if rid not in states:
                        natidx.setdefault(tuple(vals[i] for i in nat_pos), rid)
            return natidx
        proposals: dict[tuple[str, int], list[_Proposal]] = {}
        is_customers = ekey == "customers"

        def survivor(rid: str, st: dict[str, tuple[str, str | None]]) -> tuple[str, str]:
            """Follow merged records to the one that absorbed them; returns (id, state)."""
            seen = set()
            while rid in st and st[rid][0] == "merged" and st[rid][1] and rid not in seen:
                seen.add(rid)
                rid = st[rid][1]  # type: ignore[assignment]
            return rid, st[rid][0] if rid in st else "active"

        done = 0
        while True:
            item = yield
            if item is None:
                break
            si, src = item
            # Rows known so far (validation of later inputs may still be running during the first pass).
            known = sources.ready if isinstance(sources, _Inputs) else sources
            total_rows = done + sum(len(s.sheets[ekey].rows) for s in known[si:])
            res = src.result
            data = src.sheets[ekey]
            report = src.report
            assert report is not None
            counts = report.sheets.setdefault(ekey, SheetCounts())
            n = len(data.rows)
            counts.rows_read += n
            present = data.present
            cols = data.cols
            blank_raw = data.blank_raw
            cust_rows = data.cust_rows
            folded = data.match_keys
            fps = data.fingerprints
            rows_idx = data.rows
            errors = res.error_rows.get(ekey, set())
            base = (src.written or {}).get(ekey, {}) if src.is_master else db.load_base(conn, entity, src.key)
            origins = self._origins.get(src.key, {}) if not src.is_master else {}
            new_origins: list[tuple[str, str, str]] = []
            seen: set[str] = set()
            base_rows: dict[str, tuple[Any, ...] | None] = {}  # None: a record created from this row
            created_here: list[str] = []  # records this source creates, in creation order
            unidentified_rejects = False
            pick = itemgetter(*present) if present else (lambda _row: ())
            fingerprint = _fingerprinter(ekey, present)
            src_name, src_who = src.name, src.who
            for j, (row, tup) in enumerate(zip(rows_idx, zip(*cols, strict=True), strict=True)):
                vals = list(tup)
                given_id = vals[idc_i]
                if src.strict_rejected or row in errors:
                    counts.add("rejected")
                    if given_id:
                        seen.add(given_id)
                    else:
                        unidentified_rejects = True
                    continue
                # The customer this row belongs to (children).
                if ref_i is not None and not is_customers:
                    crow = cust_rows[j] if cust_rows is not None else None
                    cid = None
                    if crow is not None and crow == crow:
                        cid = self.customer_of_row.get((si, int(crow)))
                        if cid is None and not vals[ref_i]:
                            self._reject(src, entity, row, ref.key, vals[ref_i], "ref.rejected_customer",
                                         vals, present, int(crow))
                            counts.add("rejected")
                            unidentified_rejects = unidentified_rejects or not given_id
                            if given_id:
                                seen.add(given_id)
                            continue
                    if cid is None and vals[ref_i]:
                        cid, cstate = survivor(vals[ref_i], cust_states)
                        if cid not in (known_customers or ()) or cstate != "active":
                            self._reject(src, entity, row, ref.key, vals[ref_i], "ref.unknown_master",
                                         vals, present)
                            counts.add("rejected")
                            unidentified_rejects = unidentified_rejects or not given_id
                            if given_id:
                                seen.add(given_id)
                            continue
                    vals[ref_i] = cid
                if updated_i is not None:
                    vals[updated_i] = None
                # Which record is this row?
                target: str | None = None
                how = "new"
                base_key: str | None = None
                fp = None
                if given_id:
                    if given_id not in recs and given_id not in created:
                        self._reject(src, entity, row, idc, given_id, "id.unknown", vals, present)
                        counts.add("rejected")
                        continue
                    target, state = survivor(given_id, states)
                    if state != "active":
                        self._reject(src, entity, row, idc, given_id, "id.deleted", vals, present)
                        counts.add("rejected")
                        seen.add(given_id)
                        continue
                    how, base_key = "id", given_id
                else:
                    parts = fps[j] if fps is not None else None
                    if parts is None:
                        fp = fingerprint(vals)
                    elif type(parts) is str:
                        fp = parts
                    else:
                        fp = _finish_fingerprint(parts, vals[ref_i])
                    hit = origins.get((ekey, fp))
                    if hit is not None and (hit in recs or hit in created):
                        t, state = survivor(hit, states)
                        if state == "active":
                            target, how = t, "origin"
                    if target is None and nat_pos and None not in nat_need_pick(vals):
                        hit = natural_index().get(tuple(vals[i] for i in nat_pos))
                        if hit is not None:
                            target, how = hit, "natural"
                    matches: list[Any] = []
                    match_keys: Any = None  # folded once, for the lookup and then for indexing a new row
                    if target is None and is_customers:
                        index = self._matcher_index(recs, states, entity)
                        match_keys = (folded[j] if folded is not None else None) or index.keys_for_values(vals)
                        matches = index.find_keys(match_keys)
                        certain = [m for m in matches if m.kind == "certain"]
                        if certain:
                            best = certain[0]
                            target, how = best.other_id, "link"
                            self._hist(entity, target, None, None, "; ".join(best.evidence), src, "link")
                    if target is None:
                        # A new record.
                        rid = db.format_id(entity, next_no)
                        next_no += 1
                        vals[idc_i] = rid
                        if updated_i is not None:
                            vals[updated_i] = self.today
                        last_hist = history[-1] if history else None
                        if type(last_hist) is _Created and last_hist.entity is entity \
                                and last_hist.source_file == src_name \
                                and last_hist.first + last_hist.n == len(created):
                            last_hist.n += 1
                        else:
                            history.append(_Created(entity, len(created), 1, src_name, src_who))
                        created[rid] = vals
                        if natidx is not None:  # else built later, from the master and ``created``
                            natidx.setdefault(tuple(vals[i] for i in nat_pos), rid)
                        if is_customers:
                            index = self._matcher_index(recs, states, entity)
                            for m in to_review(matches):  # none certain here: those link
                                if db.add_duplicate(
                                        conn, ekey, rid, m.other_id, score=m.score, kind=m.kind,
                                        evidence=m.evidence, run_id=self.run_id, source_file=src_name):
                                    self.duplicates_new += 1
                            if match_keys is not None:  # the ID and 更新日 just set are not match keys
                                index.add_keys(rid, match_keys)
                            else:
                                index.add_keys(rid, index.keys_for_values(vals))
                            self.customer_of_row[(si, row)] = rid
                        elif ekey == "contacts" and ref_i is not None:
                            self._contact_duplicates(entity, rid, vals, ref_i, recs, states)
                        new_origins.append((ekey, fp, rid))
                        base_rows[rid] = None  # its base is copied from the inserted record (below)
                        created_here.append(rid)
                        seen.add(rid)
                        counts.add("new")
                        continue
                    base_key = target
                    new_origins.append((ekey, fp, target))
                assert target is not None and base_key is not None
                if is_customers:
                    self.customer_of_row[(si, row)] = target
                seen.add(base_key)
                # Field proposals against the master before this merge (or this run's new record).
                # The same record twice in one workbook (validate warns): the later row is compared
                # with the master only, and the base keeps the first row.
                repeat = base_key in base_rows
                b = None if repeat else base.get(base_key)
                proposes = False
                blanks = blank_raw
                # Fast path (most rows of a re-merge): nothing differs from the base.
                if b is None or pick(vals) != pick(b):
                    master_vals = created.get(target) or recs[target]
                    for i in present:
                        v = vals[i]
                        m = master_vals[i]
                        if b is not None:
                            bv = b[i]
                            if v in (bv, m):
                                continue
                            contested = m != bv
                        else:
                            if v is None or v == m or (i in blanks and blanks[i][j]):
                                continue
                            contested = m is not None
                        if contested and (same(i, v, m) or self._offered_before(ekey, target, keys[i], v, src)):
                            # Only spelled differently ((株) / 株式会社, e-mail case), or this person's value
                            # already waits on 競合: nothing new.
                            continue
                        proposals.setdefault((target, i), []).append(_Proposal(v, contested, src, row))
                        proposes = True
                if not repeat:
                    row_vals = list(vals)
                    row_vals[idc_i] = base_key
                    base_rows[base_key] = tuple(row_vals)
                outcome = "linked" if how == "link" else "updated" if proposes else "unchanged"
                counts.add(outcome)
            done += n
            # The rows are in the master now: free them.
            src.sheets[ekey] = _SheetRows([], [[] for _ in range(ncols)], present, {}, None, None,
                                          rejected=data.rejected)
            del cols
            if self.progress:
                self.progress(f"{entity.label(self.lang)}", done, total_rows)
            if not src.strict_rejected:
                if not src.is_master:
                    old = base
                    changed = [r for k, r in base_rows.items() if r is not None and old.get(k) != r]
                    gone = self._deletions(entity, src, si, seen, has_unidentified=unidentified_rejects,
                                           base=base)
                    db.save_base(conn, entity, src.key, changed, drop=gone)
                    db.save_origins(conn, src.key, new_origins, self.run_id)
                else:
                    self._deletions(entity, src, si, seen, has_unidentified=unidentified_rejects, base=base)
            if created_here:
                # This source's new records go in now (the merge often waits for the next file here),
                # in creation order: the pass's new records are one run of rowids from _rowid0 on.  The
                # base of a new record is the record as inserted (its workbook's row, before _judge
                # applies later workbooks' proposals), copied inside SQLite.  (A first import of
                # 400,000 rows: 1.4 s of executemany binding saved.)  The master before this merge
                # stays what ``recs`` reads (db.LazyRecords keeps to the ids it started with).
                first = db.max_rowid(conn, entity) + 1
                self._rowid0.setdefault(ekey, first - 1)
                db.insert_records(conn, entity, (created[rid] for rid in created_here), run_id=self.run_id,
                                  source=src_name)
                if db.max_rowid(conn, entity) != first + len(created_here) - 1:  # SQLite's rowid rule broken?
                    raise XlcrmError(f"{entity.key}: new records did not get consecutive rowids; nothing was "
                                     "changed — please report this with the master's folder")
                if not (src.strict_rejected or src.is_master):
                    db.copy_bases_from_records(conn, entity, src.key, first, first + len(created_here) - 1)

        # The judged proposals.
        if created:
            self.created[ekey] = len(created)
        db.set_first_free_number(conn, entity, next_no)
        self._judge(entity, recs, created, proposals, updated_i, same)
        if is_customers:
            self._edited_into_duplicates(entity, recs, states, created)

    def _judge(self, entity: Entity, recs: Mapping[str, tuple[Any, ...]], created: dict[str, list[Any]],
               proposals: dict[tuple[str, int], list[_Proposal]], updated_i: int | None,
               same: Equivalence) -> None:
        """Apply agreeing proposals; turn disagreeing or contested ones into conflicts."""
        keys = entity.keys
        changes: list[tuple[str, str, Any]] = []
        self._changes = []
        touched: set[str] = set()
        conflict_values: list[tuple[int, Any, str, str, str, int]] = []
        for (rid, i), props in sorted(proposals.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            fld = keys[i]
            current = created[rid][i] if rid in created else recs[rid][i]
            distinct = {same.key(i, p.value) for p in props}
            pending = self._pending_conflicts.get((entity.key, rid, fld))
            if len(distinct) == 1 and not any(p.contested for p in props) and pending is None:
                p = props[0]
                if rid in created:
                    created[rid][i] = p.value  # already inserted: update below like any other
                changes.append((rid, fld, p.value))
                self._changes.append((rid, fld, p.value, p.source.name))
                touched.add(rid)
                self._hist(entity, rid, fld, current, p.value, p.source, "edit")
                continue
            if pending is None:
                pending = db.add_conflict(self.conn, entity.key, rid, fld, current, run_id=self.run_id)
                self._pending_conflicts[(entity.key, rid, fld)] = pending
                self.conflicts_new += 1
            for p in props:
                conflict_values.append((pending, p.value, p.source.who, p.source.name, p.source.at, self.run_id))
                counts = p.source.report.sheets[entity.key] if p.source.report else None
                if counts is not None:
                    counts.conflicts += 1
        if changes:
            db.update_fields(self.conn, entity, changes, run_id=self.run_id)
        if updated_i is not None and touched:
            db.update_fields(self.conn, entity, ((rid, keys[updated_i], self.today) for rid in touched),
                             run_id=self.run_id)
        if conflict_values:
            db.add_conflict_values(self.conn, conflict_values)

    def _contact_duplicates(self, entity: Entity, rid: str, vals: Sequence[Any], ref_i: int,
                            recs: Mapping[str, tuple[Any, ...]], states: Mapping[str, Any]) -> None:
        """A new contact person that may be one its customer already has, typed again by a colleague
        (山田 太郎 / 山田太郎, the e-mail in capitals, the phone without hyphens): 重複候補 for a person,
        never linked silently.  Only the contacts of the same customer are compared."""
        from xlcrm.match import contact_keys, proposals, same_contact

        keys = entity.keys
        index = self._contacts_of
        if index is None:
            index = {}
            for other, v in recs.items():
                if other not in states:
                    index.setdefault(v[ref_i], []).append([other, None])
            self._contacts_of = index
        q = contact_keys(dict(zip(keys, vals, strict=True)))
        found = []
        mine = index.setdefault(vals[ref_i], [])
        for entry in mine:
            if entry[1] is None:
                entry[1] = contact_keys(dict(zip(keys, recs[entry[0]], strict=True)))
            m = same_contact(q, entry[1], entry[0], lang=self.lang)
            if m is not None:
                found.append(m)
        found.sort(key=lambda m: (-m.score, m.other_id))
        for m in proposals(found):
            if db.add_duplicate(self.conn, entity.key, rid, m.other_id, score=m.score, kind=m.kind,
                                evidence=m.evidence, run_id=self.run_id):
                self.duplicates_new += 1
        mine.append([rid, q])

    def _edited_into_duplicates(self, entity: Entity, recs: Mapping[str, tuple[Any, ...]],
                                states: dict[str, tuple[str, str | None]], created: dict[str, list[Any]]) -> None:
        """Existing customers whose edits (applied just now) make them look like another customer.

        Rows without an ID are matched when they arrive; an edit of a known record (a new e-mail, a
        corrected phone) can make two records of the master the same customer too.  Such pairs go to
        重複候補 for a person, never merged silently; a pair already decided (別) is not offered again.
        The duplicate index is only built when an edit touched a column matching reads.
        """
        from xlcrm.match import MATCH_COLUMNS, proposals

        pos = {k: i for i, k in enumerate(entity.keys)}
        matched = {rid for rid, fld, _value, _file in self._changes
                   if fld in MATCH_COLUMNS and rid not in created and rid not in states}
        edited = {rid: list(recs[rid]) for rid in matched}
        by_file: dict[str, str] = {}
        for rid, fld, value, file in self._changes:
            if rid in edited:
                edited[rid][pos[fld]] = value
                if fld in MATCH_COLUMNS:
                    by_file.setdefault(rid, file)
        if not edited:
            return
        index = self._matcher_index(recs, states, entity)
        for rid in sorted(edited):
            match_keys = index.keys_for_values(edited[rid])
            index.add_keys(rid, match_keys)  # its new values, for the next edited record too
            for m in proposals(index.find_keys(match_keys, exclude=rid)):
                if db.add_duplicate(self.conn, entity.key, rid, m.other_id, score=m.score, kind=m.kind,
                                    evidence=m.evidence, run_id=self.run_id, source_file=by_file.get(rid)):
                    self.duplicates_new += 1

    def _deletions(self, entity: Entity, src: Source, si: int, seen: set[str], *, has_unidentified: bool,
                   base: dict[str, tuple[Any, ...]] | None = None) -> list[str]:
        """Records in the workbook's base that no row of it names any more: listed, never deleted."""
        if base is None:
            base = db.load_base(self.conn, entity, src.key) if not src.is_master else {}
        returned = [k for k in seen if k in base]
        if returned:
            db.withdraw_deletions(self.conn, entity.key, src.key, returned)
        if has_unidentified:
            # A rejected row without an ID may be one of the base's records: do not call it deleted.
            return []
        gone = [k for k in base if k not in seen]
        for rid in gone:
            if db.add_deletion(self.conn, entity.key, rid, src.key, src.name, src.who, self.run_id):
                self.deletions_new += 1
        return gone

    def _reject(self, src: Source, entity: Entity, row: int, key: str, value: Any, code: str,
                values: Sequence[Any], present: Sequence[int], customer_row: int | None = None) -> None:
        """A row only the master can judge (an unknown ID): rejected with a finding of its own.

        Its cells are kept for the owner's handout from the validated values (the typed ones are gone
        by now; the row passed validation, so they show the same); a customer rejected the same way is
        named by its 顧客名, as on that sheet."""
        add_finding(src.result, entity, row, key, value, code)
        cols = entity.columns
        idc_i = entity.keys.index(entity.id_column.key)
        cells = {cols[i].key: db.from_db(cols[i], values[i]) for i in (idc_i, *present) if values[i] is not None}
        if customer_row is not None:
            _rid, customer = src.late_rows.get("customers", {}).get(customer_row, (None, {}))
            if customer.get("name") is not None:
                cells[key] = customer["name"]
        src.late_rows.setdefault(entity.key, {})[row] = (values[idc_i] or None, cells)
        if not code.startswith("ref.rejected"):
            src.late_findings = True

    @property
    def _origins(self) -> dict[str, dict[tuple[str, str], str]]:
        cache = self.__dict__.setdefault("_origin_cache", {})
        return cache

    def load_origins(self, sources: Iterable[Source]) -> None:
        for s in sources:
            if not s.is_master and s.key not in self._origins:
                self._origins[s.key] = db.load_origins(self.conn, s.key)


def add_finding(result: Any, entity: Entity, row: int, key: str, value: Any, code: str) -> None:
    """Add an error finding (validate's format) for a row merge must reject, so it shows in the error
    workbook with its message like any validation error."""
    from xlcrm.validate import ERROR, Finding

    sheet = result.workbook.sheets[entity.key]
    col = entity.column(key)
    lang = result.workbook.lang
    cell = sheet.cell(key, row) if key in sheet.letters else ""
    result.findings.append(Finding(str(result.path), sheet.sheet_name, cell, row, col.label(lang), key, entity.key,
                                   value, code, ERROR, merge_message(code, lang, value=value)))
    result.error_rows.setdefault(entity.key, set()).add(row)


def cascade_rejections(result: Any, schema: Schema) -> None:
    """Rows whose customer is a rejected row of the same workbook (and has no ID) cannot be attached.

    Decided right after validation, from the workbook alone, so the error workbook can be written
    while the merge runs.
    """
    bad = result.error_rows.get("customers", set())
    if not bad:
        return
    for entity in schema:
        ref = entity.ref_column
        if entity.key == "customers" or ref is None:
            continue
        frame = result.frames[entity.key]
        if "_customer_row" not in frame or frame.empty:
            continue
        errors = result.error_rows.setdefault(entity.key, set())
        for row, crow, cid in zip(frame.index, frame["_customer_row"], frame[ref.key], strict=True):
            if crow is None or crow != crow or int(crow) not in bad or int(row) in errors:
                continue
            if cid is None or cid != cid:
                raw = result.workbook.sheets[entity.key].frame
                value = raw.at[row, ref.key] if ref.key in raw.columns else None
                add_finding(result, entity, int(row), ref.key, value, "ref.rejected_customer")


class Equivalence:
    """Values of a column that differ only in spelling: ``(株)青空`` / ``株式会社青空``, e-mail case,
    phone hyphens, width and kana, an address's 丁目/番/号 written as 3-13-26.  A value that is the same in substance as the master's is not a
    conflict (a legacy import would otherwise ask about every legal-form spelling); a deliberate
    respelling in a workbook with a base is still applied when nobody else changed the field.
    """

    def __init__(self, entity: Entity) -> None:
        from xlcrm import normalize as nz

        def fold_email(v: Any) -> str:
            return str(v).casefold()

        from xlcrm.address import comparable

        fns: list[Callable[[Any], Any] | None] = []
        for c in entity.columns:
            if entity.key == "customers" and c.key == "name":
                fns.append(nz.company_key)
            elif c.key == "address":
                fns.append(comparable)  # 3丁目13番26号 / 3-13-26
            elif c.type == "email":
                fns.append(fold_email)
            elif c.type == "phone":
                fns.append(nz.phone_digits)
            elif c.type in ("name", "kana", "text", "url"):
                fns.append(nz.fold_search)
            else:
                fns.append(None)
        self.fns = fns

    def key(self, i: int, v: Any) -> Any:
        fn = self.fns[i]
        if v is None or fn is None:
            return (type(v).__name__, v)
        k = fn(v)
        return ("~", k) if k else (type(v).__name__, v)

    def __call__(self, i: int, a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is b
        return self.key(i, a) == self.key(i, b)


_MERGE_MESSAGES: dict[str, tuple[str, str]] = {
    "id.unknown": ("ID {value} はマスタにありません。新しい行ならIDを空欄にしてください。",
                   "ID {value} is not in the master; leave the ID blank for a new row."),
    "id.deleted": ("ID {value} はマスタで削除済みです。この行を削除するか管理者に確認してください。",
                   "ID {value} was deleted in the master; remove the row or ask the admin."),
    "ref.unknown_master": ("顧客 {value} はマスタにありません（統合・削除された可能性があります）。"
                           "最新のブックを管理者から受け取ってください。",
                           "Customer {value} is not in the master (merged or deleted?); ask the admin "
                           "for a fresh workbook."),
    "ref.rejected_customer": ("この行の顧客の行にエラーがあるため取り込めません。顧客の行を直してください。",
                              "This row's customer row has errors, so it was not merged; fix that row."),
    "file.open_in_excel": ("Excelで開かれています（{lock} があります）。保存済みの内容を取り込みました。"
                           "保存していない変更は次回のマージで取り込まれます。",
                           "open in Excel ({lock} exists): merged what was last saved; unsaved edits "
                           "come in with the next merge."),
    "file.skipped": ("読めないため取り込みませんでした（--skip-unreadable）: {reason}",
                     "not merged, it cannot be read (--skip-unreadable): {reason}"),
}


def merge_message(code: str, lang: Lang, **kw: Any) -> str:
    ja, en = _MERGE_MESSAGES[code]
    return (ja if lang == "ja" else en).format(**kw)


# --- the command --------------------------------------------------------------------------------------

def _file_time(path: Path) -> str:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return ""


def _sort_key(path: Path) -> tuple[str, str]:
    return (path.name, str(path.resolve()))


def master_lang(schema: Schema) -> Lang:
    lang = str(schema.settings.get("master_lang", "ja")) if schema.settings else "ja"
    return "en" if lang == "en" else "ja"


def collect_inputs(inputs: Sequence[str | Path], master: Path, *, not_read: list[str] | None = None) -> list[Path]:
    """Expand folders, drop the master itself, its backups and error workbooks; a stable order.

    ``not_read`` receives one line per folder naming the files in it that are not workbooks xlcrm
    reads (:mod:`xlcrm.inputs`).
    """
    from xlcrm.inputs import scan

    master_r = master.resolve()
    skip_dirs = {(master.parent / "backups").resolve(), (master.parent / ERRORS_DIR).resolve()}
    db_file = db.db_path_for(master)
    found = scan(inputs, also_quiet=[db_file, *(db_file.with_name(db_file.name + s)
                                                for s in ("-journal", "-wal", "-shm"))])
    if not_read is not None:
        not_read.extend(found.notes())
    out: list[Path] = []
    for p in found.paths:
        r = p.resolve()
        if r == master_r or any(d == r.parent or d in r.parents for d in skip_dirs):
            continue
        if p.name.startswith("~$"):
            continue
        out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in sorted(out, key=_sort_key):
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


#: Folder beside the master for the annotated copies of files with rejected rows.
ERRORS_DIR = "errors"


def merge(inputs: Sequence[str | Path], master: str | Path, schema: Schema, *, dry_run: bool = False,
          strict: bool = False, today: dt.date | None = None, progress: Progress | None = None,
          now: dt.datetime | None = None, password: str | None = None,
          skip_unreadable: bool = False) -> MergeReport:
    """Merge team workbooks (files or folders) into ``master``; see the module docstring.

    ``password`` encrypts master.xlsx (and opens it, and any encrypted team workbook, to read it).
    An input that cannot be read refuses the whole run before anything is written (:func:`run`);
    with ``skip_unreadable`` it is left out and listed in 取込ログ instead (``report.skipped``).
    """
    master = Path(master)
    not_read: list[str] = []
    paths = collect_inputs(inputs, master, not_read=not_read)
    if not paths:
        raise XlcrmError("no team workbooks to merge; give .xlsx files or folders holding them")
    report, _ = run(paths, master, schema, command="merge", dry_run=dry_run, strict=strict, today=today,
                    progress=progress, now=now, password=password, skip_unreadable=skip_unreadable)
    report.not_read = not_read
    return report


def refused_inputs(paths: Sequence[Path], password: str | None = None) -> list[tuple[Path, str]]:
    """The inputs the reader refuses without parsing a sheet (missing, a folder, unreadable, empty, not
    an .xlsx, damaged, a decompression bomb, encrypted with no password given), each with its line."""
    from xlcrm.errors import UnreadableWorkbook
    from xlcrm.reader import check_readable

    refused = []
    for p in paths:
        try:
            check_readable(p, password=password)
        except UnreadableWorkbook as exc:
            refused.append((p, str(exc)))
    return refused


def _reason(path: Path, message: str) -> str:
    """A refusal without the file name it starts with (取込ログ shows the file in its own column)."""
    return message.removeprefix(f"{path}: ")


def _refusal(message: str, more: int = 0) -> str:
    extra = f" (and {more} more file(s) that cannot be read)" if more else ""
    return (f"{message}{extra}; nothing was merged: fix or remove the file, or add --skip-unreadable to "
            "merge the other files without it")


def run(paths: Sequence[Path], master: Path, schema: Schema, *, command: str, dry_run: bool = False,
        strict: bool = False, today: dt.date | None = None, progress: Progress | None = None,
        now: dt.datetime | None = None, password: str | None = None,
        skip_unreadable: bool = False) -> tuple[MergeReport, Any]:
    """One locked, backed-up, all-or-nothing run: decisions, the admin's edits, then ``paths``.

    ``xlcrm resolve`` is this with no team workbooks.  Returns the merge report and the decisions'
    :class:`xlcrm.resolve.ResolveReport` (None when the workbook held none).

    Every input is checked before anything is written; one that cannot be read (found now, or only
    when it is validated) fails the run with its one line and leaves everything as it was (:class:`_Undo`).
    With ``skip_unreadable`` such inputs are left out and listed in 取込ログ.  The backup taken before
    the change is kept (and older ones pruned to ten) only when the run changed the master.
    """
    from xlcrm import backup, lock, masterbook, outputs
    from xlcrm.resolve import apply_decisions
    from xlcrm.writer import remove_leftovers

    started = time.perf_counter()
    outputs.check_master(master)  # a team workbook or any other file is never taken for the master
    lang = master_lang(schema)
    report = MergeReport(master=str(master), dry_run=dry_run)
    refused = refused_inputs(paths, password)
    if refused and not skip_unreadable:
        raise XlcrmError(_refusal(refused[0][1], len(refused) - 1))
    for path, message in refused:
        report.files.append(FileReport(str(path), "", "unreadable",
                                       message=merge_message("file.skipped", lang, reason=_reason(path, message))))
    paths = [p for p in paths if all(p is not r for r, _ in refused)]
    undo = _Undo(master, dry_run=dry_run)
    if not dry_run and command == "merge" and not master.parent.is_dir():
        undo.folder = master.parent
        try:
            master.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise XlcrmError(f"cannot create the master's folder {master.parent} ({exc.strerror})",
                             path=str(master)) from None
    # Each input's size and time before it is read: what a later distribute checks it against.
    inputs_seen = outputs.seen(paths) if not dry_run else []
    now = now or dt.datetime.now().replace(microsecond=0)
    today = today or now.date()
    decided = None
    db_path = db.db_path_for(master)

    ctx = lock.master_lock(master, command) if not dry_run else _nullcontext()
    # _Undo twice: inside the lock for what the run wrote, outside it for the folder (and the lock file).
    with undo.folder_guard(), ctx, undo:
        if not dry_run:
            lock.refuse_if_open_in_excel(master)
            masterbook.check_writable(master)  # before any work: a read-only file is one line, not a rollback
            for leftover in (master, db_path):  # from a killed run: this lock is ours now
                remove_leftovers(leftover)
        masterbook.check_master_password(master, password)  # before any work: one line, nothing changed
        clock = _Clock(report.timings)
        workers = _Workers(None if dry_run else master.parent / ERRORS_DIR / now.strftime("%Y%m%d-%H%M%S"),
                           password=password, spool_beside=None if dry_run else master)
        undo.errors_dir = workers.out_dir if workers.out_dir is not None and not workers.out_dir.exists() else None
        try:
            # Validation starts here, in the workers, and goes on while the merge below runs.
            sources = _Inputs(paths, schema, strict=strict, today=today, progress=progress,
                              report=report, workers=workers, password=password,
                              skip_unreadable=skip_unreadable, lang=lang)
        except BaseException:
            workers.close()
            raise
        backup_job: backup.BackupJob | None = None
        in_memory = False  # a new master database built in memory, written whole at the commit
        try:
            if dry_run:
                conn = db.memory_copy(db_path)  # a dry run never touches the real file
            elif _build_in_memory(db_path, paths):
                conn = db.memory_master()
                in_memory = True
                if master.exists():
                    undo.made.extend(backup.take_backup(master, None, prune_old=False))
            else:
                conn = db.connect(db_path, create=True)
                if db_path.exists() and db_path.stat().st_size > 0:
                    # Copied by a thread while the merge runs; waited for before the commit.
                    backup_job = undo.job = backup.start_backup(master, db_path)
                elif master.exists():
                    undo.made.extend(backup.take_backup(master, None, prune_old=False))
        except BaseException:
            workers.close()
            raise
        try:
            conn.execute("BEGIN IMMEDIATE")
            with db.rollback_on_error(conn):
                db.create_tables(conn, schema)
                run_id = db.start_run(conn, f"{command} --dry-run" if dry_run else command,
                                      [str(p) for p in paths], now.isoformat(timespec="seconds"))
                report.run_id = run_id
                history_before = db.history_count(conn)
                clock.lap("backup")
                state = masterbook.read_master_state(master, conn, schema, today=today, password=password)
                clock.lap("master_workbook_read")
                report.warnings.extend(state.warnings)
                # What the workbook showed, before decisions change the database: the admin's base.
                written = ({e.key: db.load_records(conn, e, active_only=True) for e in schema}
                           if state.edits is not None else None)
                if state.decisions:
                    decided = apply_decisions(conn, schema, state.decisions, run_id=run_id, now=now, lang=lang)
                    report.decisions_applied = decided.applied
                    report.warnings.extend(decided.warnings)
                if state.edits is not None:
                    who = _admin_name(lang)
                    fr = FileReport(str(master), who, state.edits.status)
                    sources.insert_first(Source(master, state.edits, MASTER_SOURCE, who, _file_time(master),
                                             lang, is_master=True, report=fr, written=written,
                                             sheets=compact(state.edits, schema)))
                    report.files.insert(0, fr)
                merger = Merger(conn, schema, run_id=run_id, now=now, today=today, lang=lang,
                                progress=progress)

                def ready(s: Source) -> None:
                    if not s.is_master:
                        _check_identity(conn, schema, s, report, lang)
                        merger.load_origins([s])
                        db.register_workbook(conn, s.key, kind=_workbook_kind(conn, s.key), owner=s.who,
                                             lang=s.lang, created=s.result.workbook.meta.created or None,
                                             path=str(s.path), run_id=run_id)
                        db.mark_workbook_merged(conn, s.key, run_id)

                for s in sources.ready:
                    ready(s)
                sources.on_ready = ready
                merger.run(sources)
                clock.lap("merge")
                report.timings["validate_wait"] = round(sources.wait_s, 3)
                report.records_created = dict(merger.created)
                report.duplicates_new = merger.duplicates_new
                report.conflicts_new = merger.conflicts_new
                report.deletions_new = merger.deletions_new
                report.warnings.extend(merger.warnings)
                workers.finish(sources.all(), report)
                clock.lap("error_workbooks")
                for s in sources.all():
                    if s.is_master and s.report is not None and s.report.error_workbook:
                        # master.xlsx is rewritten from the database: its rows with errors live on there.
                        report.warnings.append(f"{master.name}: the edited rows with errors are kept, marked, in "
                                               f"{s.report.error_workbook}; fix them there and copy them back")
                keep_rejected(conn, schema, sources.all(), run_id)
                _import_log(conn, sources.all(), report, run_id)
                report.duplicates_pending = len(db.duplicates(conn))
                report.conflicts_pending = len(db.conflicts(conn))
                report.deletions_pending = len(db.deletions(conn))
                report.history_rows = db.history_count(conn) - history_before
                db.finish_run(conn, run_id, dt.datetime.now().isoformat(timespec="seconds"))
                if backup_job is not None:
                    # The copy of the old database is complete before anything changes (and no thread
                    # is inside SQLite when the master workbook's writer is forked).
                    backup_job.wait()
                    clock.lap("backup_wait")

                def search_index() -> None:
                    _search_index(conn, schema, run_id)

                if dry_run:
                    started = time.perf_counter()
                    search_index()
                    report.timings["search_index"] = round(time.perf_counter() - started, 3)
                    conn.execute("ROLLBACK")
                else:
                    from xlcrm.searchindex import full_build_due

                    # A full index build (seconds) and the workbook run side by side in two processes.
                    undo.committing = True
                    report.timings.update(masterbook.write_and_commit(
                        conn, master, schema, lang=lang, progress=progress, password=password,
                        meanwhile=search_index, meanwhile_heavy=full_build_due(conn, schema, run_id),
                        persist=db_path if in_memory else None))
                    clock.lap("index_and_master")
                    taken = {f.file for f in report.files if f.status in ("ok", "errors")}
                    outputs.record_merged(s for s in inputs_seen if str(s.path) in taken)
        finally:
            conn.close()
            workers.close()
            if backup_job is not None:
                with contextlib.suppress(Exception):  # already waited for, or the merge failed anyway
                    backup_job.wait()
    if not dry_run:
        undo.keep_backup_if(report.changed)
    report.seconds = round(time.perf_counter() - started, 3)
    return report, decided


class _Undo:
    """Everything a failed run created, removed again, so a refused run leaves no trace: its backup
    copies (no older one was pruned for them), its error workbooks, a ``master.db`` it created, and the
    master's folder it created (only when empty).  Once the commit has begun, nothing is undone.

    Used as a context manager inside the master's lock; :meth:`folder_guard` goes outside it, since the
    lock file lives in that folder until the lock is released.
    """

    def __init__(self, master: Path, *, dry_run: bool) -> None:
        self.master, self.dry_run = master, dry_run
        self.db_path = db.db_path_for(master)
        self.db_existed = self.db_path.exists()
        self.folder: Path | None = None  # the master's folder, when this run created it
        self.made: list[Path] = []  # backup copies taken by this run
        self.job: Any = None  # the backup.BackupJob copying master.db, if any
        self.errors_dir: Path | None = None  # this run's error workbooks (a folder it creates)
        self.committing = False

    def backups(self) -> list[Path]:
        return self.made + (list(self.job.made) if self.job is not None else [])

    def __enter__(self) -> _Undo:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or self.dry_run or self.committing:
            return
        from xlcrm import backup

        backup.discard(self.master, self.backups())
        if self.errors_dir is not None:
            shutil.rmtree(self.errors_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.errors_dir.parent.rmdir()  # only when empty
        if not self.db_existed:
            for leftover in (self.db_path, self.db_path.with_name(self.db_path.name + "-journal")):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def folder_guard(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if self.folder is not None and not self.committing:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only when empty
            raise

    def keep_backup_if(self, changed: bool) -> None:
        """After a successful run: keep this run's backup (pruning to ten) when the master changed;
        when nothing changed, drop it, so the older backups keep their places."""
        from xlcrm import backup

        if changed:
            backup.prune(self.master)
        else:
            backup.discard(self.master, self.backups())


def _identity_mismatch(conn: sqlite3.Connection, schema: Schema, src: Source, lang: Lang) -> str | None:
    """Why ``src`` is not the workbook whose id it carries, or None when nothing says so.

    A workbook id is only a cell in the hidden ``_xlcrm`` sheet: copied into another file, it would let
    that file propose the deletion of every record handed to the id's owner (in the owner's name) and
    turn the owner's next genuine edit into a 競合.  So the claim is checked against what the file
    holds: the owner written in it against the owner the id was handed to, and the IDs of its rows
    against that id's base — a genuine workbook holds mostly records it was handed.
    """
    wid = src.result.workbook.meta.workbook_id
    if not wid or src.key != wid:
        return None
    registered = (db.workbook_owner(conn, wid) or "").strip()
    claimed = (src.result.workbook.meta.owner or "").strip()
    ja = lang == "ja"
    if registered and claimed and registered != claimed:
        return (f"このファイルの所有者は「{claimed}」です" if ja else f"this file's owner is {claimed!r}")
    base: set[str] = set()
    held: set[str] = set()
    # The customers tell (a fraction of the rows: the check stays cheap on a large re-merge); the other
    # sheets only for a base without customers.
    customers = schema.entity("customers")
    for entities in ([customers], [e for e in schema if e is not customers]):
        for entity in entities:
            base |= db.base_ids(conn, entity, wid)
            rows = src.sheets.get(entity.key)
            if rows is not None:
                held.update(v for v in rows.cols[0] if v)
        if base:
            break
        held.clear()
    if not base:
        return None
    ours = len(held & base)
    # A team's own workbook never gets IDs written back: only a handed-out one must hold some.
    if not held and db.workbook_kind(conn, wid) == "distributed":
        return (f"渡した {len(base)} 件のどれも入っていません" if ja
                else f"it holds none of the {len(base)} records handed to that workbook")
    if held and ours * 2 < len(held):
        return (f"行の ID {len(held)} 件のうちそのブックに渡したものは {ours} 件だけです" if ja
                else f"only {ours} of the {len(held)} IDs in it were handed to that workbook")
    return None


def _check_identity(conn: sqlite3.Connection, schema: Schema, src: Source, report: MergeReport,
                    lang: Lang) -> None:
    """A file that is not the workbook its id names is merged as its own copy (keyed by its folder and
    name, like a workbook without an id): it proposes no deletion of the other workbook's records and
    leaves that workbook's base alone, so its owner's next edit is still an edit."""
    reason = _identity_mismatch(conn, schema, src, lang)
    if reason is None:
        return
    wid = src.key
    owner = db.workbook_owner(conn, wid) or "?"
    src.key = source_key(src.path, "") + "#" + wid
    if lang == "ja":
        line = (f"{src.path}: ブックID {wid} は「{owner}」のブックのものですが、{reason}。"
                "別のブックとして取り込みました（削除候補は作らず、マスタと比較）")
    else:
        line = (f"{src.path}: workbook id {wid} belongs to {owner}'s workbook, but {reason}; merged as its "
                "own copy (no deletions proposed, rows compared with the master)")
    report.warnings.append(line)
    if src.report is not None:
        src.report.message = line


def _build_in_memory(db_path: Path, paths: Sequence[Path]) -> bool:
    """A master database that does not exist yet (or is an empty file) is built in memory, unless the
    inputs are too large for that (db.MEMORY_BUILD_MAX_INPUT_BYTES)."""
    try:
        if db_path.exists() and db_path.stat().st_size > 0:
            return False
        return sum(p.stat().st_size for p in paths) <= db.MEMORY_BUILD_MAX_INPUT_BYTES
    except OSError:
        return False


class _Clock:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = round(self.into.get(name, 0.0) + now - self.t, 3)
        self.t = now


def _admin_name(lang: Lang) -> str:
    return "管理者" if lang == "ja" else "admin"


def _workbook_kind(conn: sqlite3.Connection, key: str) -> str:
    """A workbook distribute made keeps its kind; anything else is a source the team brought."""
    return db.workbook_kind(conn, key) or "source"


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _validate_job(path: Path, schema: Schema, today: dt.date, password: str | None = None) -> tuple[Any, Any]:
    """Validate one workbook and reduce it to what merge needs: (result without frames, sheets).

    Runs in a worker process for large inputs; returns ``(None, message)`` for an unreadable file.
    """
    from xlcrm.errors import UnreadableWorkbook
    from xlcrm.reader import paused_gc
    from xlcrm.validate import validate_workbook

    with paused_gc():  # compact's match keys would set off full collections too (reader.paused_gc)
        try:
            result = validate_workbook(path, schema, today=today, password=password)
        except UnreadableWorkbook as exc:
            return None, str(exc)
        cascade_rejections(result, schema)
        return result, compact(result, schema)


def _validate_to_file(path: Path, schema: Schema, today: dt.date, password: str | None, out: Path) -> Path:
    """:func:`_validate_job` in a worker, its result pickled to ``out`` (see :meth:`_Workers.map_validate`)."""
    outcome = _validate_job(path, schema, today, password)
    with open(out, "wb") as fh:
        pickle.dump(outcome, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return out


def _load_validated(out: Path) -> tuple[Any, Any]:
    with open(out, "rb") as fh:
        outcome = pickle.load(fh)
    out.unlink()
    return outcome  # type: ignore[no-any-return]


class _Inputs:
    """The validated inputs, made into merge sources in input order as the merge reaches them.

    Validation of large inputs runs in the worker processes; iterating this waits only for the next
    file, so the merge of the first files' customers runs while later files are still validated and
    both cores of a small office PC stay busy (a 400,000-row merge is CPU-bound: validating first and
    merging after left one core idle for most of the run).  After the first full pass it is a plain
    list.  ``on_ready`` is called once per source, in order, before the merge sees it.
    """

    def __init__(self, paths: Sequence[Path], schema: Schema, *, strict: bool, today: dt.date,
                 progress: Progress | None, report: MergeReport, workers: _Workers | None = None,
                 password: str | None = None, skip_unreadable: bool = False, lang: Lang = "ja") -> None:
        self.paths = list(paths)
        self.skip_unreadable, self.lang = skip_unreadable, lang
        self.schema, self.strict, self.today, self.password = schema, strict, today, password
        self.progress, self.report, self.workers = progress, report, workers
        self.ready: list[Source] = []
        self.on_ready: Callable[[Source], None] | None = None
        self.wait_s = 0.0  # time the merge spent waiting for validation
        self._done = 0
        self._keys: dict[str, int] = {}
        self._futures: list[Any] | None = None
        #: Error workbooks wait until the workers have validated every input (:attr:`validated`): written
        #: meanwhile, they would take CPU from the validation the merge waits for (release_annotation).
        self._to_annotate: list[Source] | None = []
        if workers is not None and workers.parallel(self.paths):
            self._futures = workers.map_validate(self.paths, schema, today, password)
        if progress:
            progress("validate", 0, len(self.paths))

    def insert_first(self, src: Source) -> None:
        """The master workbook's own edits: merged before every team workbook."""
        self.ready.insert(0, src)

    @property
    def complete(self) -> bool:
        return self._done == len(self.paths)

    @property
    def validated(self) -> bool:
        """Every input validated, taken by the merge or not: the workers are free for other work."""
        if self.complete:
            return True
        return self._futures is not None and all(f.done() for f in self._futures)

    def __iter__(self) -> Iterator[Source]:
        i = 0
        while True:
            while i >= len(self.ready) and not self.complete:
                self._advance()
            if i >= len(self.ready):
                return
            yield self.ready[i]
            i += 1

    def __len__(self) -> int:
        """Sources made so far (all of them once :attr:`complete`)."""
        return len(self.ready)

    def all(self) -> list[Source]:
        """Every source, waiting for validation to finish."""
        while not self.complete:
            self._advance()
        self.release_annotation()
        return self.ready

    def release_annotation(self) -> None:
        """Start writing the error workbooks held back so far (and from now on, each at once)."""
        held, self._to_annotate = self._to_annotate, None
        workers = self.workers
        for src in held or ():
            if workers is not None:
                workers.submit_annotate(src)

    def _advance(self) -> None:
        n = self._done
        path = self.paths[n]
        started = time.perf_counter()
        outcome: tuple[Any, Any] | None = None
        if self._futures is not None:
            try:
                outcome = _load_validated(self._futures[n].result())
            except Exception:  # a broken worker: validate here instead
                self._futures = None
        if outcome is None:
            outcome = _validate_job(path, self.schema, self.today, self.password)
        self.wait_s += time.perf_counter() - started
        self._done += 1
        if self.progress:
            self.progress("validate", self._done, len(self.paths))
        src = self._source(path, *outcome)
        if src is None:
            return
        self.ready.append(src)
        if self.on_ready is not None:
            self.on_ready(src)
        workers = self.workers
        if workers is not None and workers.annotate and (src.strict_rejected or any(src.result.error_rows.values())):
            if self._to_annotate is not None:
                self._to_annotate.append(src)
            else:
                workers.submit_annotate(src)

    def _source(self, path: Path, result: Any, extra: Any) -> Source | None:
        report = self.report
        if result is None:
            if not self.skip_unreadable:
                raise XlcrmError(_refusal(extra))  # the run is rolled back: nothing was written
            report.files.append(FileReport(str(path), "", "unreadable", message=merge_message(
                "file.skipped", self.lang, reason=_reason(path, extra))))
            return None
        meta = result.workbook.meta
        key = source_key(path, meta.workbook_id)
        keys = self._keys
        if key in keys:
            # Two copies of one workbook (or two legacy files with the same folder and name).
            keys[key] += 1
            report.warnings.append(f"{path}: same workbook id as another input ({key}); merged as a "
                                   "separate copy — its rows are compared with the master, not a base")
            key = f"{key}#{keys[key]}"
        keys[key] = keys.get(key, 1)
        who = meta.owner or path.stem
        strict_rejected = self.strict and not result.ok
        fr = FileReport(str(path), who, "rejected" if strict_rejected else result.status)
        if strict_rejected:
            fr.message = ("--strict: the whole file was rejected because of its errors"
                          if meta.lang == "en" else "--strict: エラーがあるためファイル全体を取り込みませんでした")
        owner_file = open_in_excel(path)
        if owner_file is not None:
            note = merge_message("file.open_in_excel", self.lang, lock=owner_file.name)
            fr.message = f"{fr.message} {note}" if fr.message else note
            report.warnings.append(f"{path}: {note}")
        report.files.append(fr)
        sheets: dict[str, _SheetRows] = extra
        return Source(path, result, key, who, _file_time(path), meta.lang, strict_rejected, False, fr,
                      rows=sum(len(d.rows) for d in sheets.values()), sheets=sheets)


#: Inputs at least this large (bytes, all files together) are validated in worker processes.
PARALLEL_BYTES = 2_000_000
#: Above this many rows in a file with errors its error workbook is written by a worker process while
#: the merge runs: annotating a large workbook (openpyxl load + save) takes seconds per file.
BACKGROUND_ANNOTATE_ROWS = 5_000


def _annotate_job(result: Any, out: Path, password: str | None = None) -> str:
    return str(annotate_source(result, out, password))


def annotate_source(result: Any, out: Path, password: str | None = None) -> Path:
    """The error workbook of one input; an encrypted input gets an encrypted error workbook.

    An encrypted input is decrypted in memory and annotated from there, and its error workbook is
    sealed with the same password before anything of it reaches the disk — it holds the same
    personal data as the input.
    """
    import io

    from xlcrm import crypto, fileperm
    from xlcrm.validate import annotate

    fileperm.make_dirs(out.parent)  # errors/<time>/: its owner's only, like the copies in it
    src = Path(result.path)
    data = src.read_bytes()
    if not crypto.is_encrypted(data):
        return annotate(result, out)
    plain = io.BytesIO(crypto.decrypt_bytes(data, password, path=src))
    del data
    return annotate(result, out, source=plain, password=password or "")


#: How much the worker processes step back (``nice``) for the merge process: see _lower_priority.
WORKER_NICE = 10


def _worker_init(parent: int) -> None:
    """A worker dies with the merge (a killed merge leaves no worker validating on) and steps back."""
    from xlcrm.snapshot import die_with

    die_with(parent)
    _lower_priority()


def _lower_priority() -> None:
    """The merge process is the run's critical path (one transaction, one process); the workers'
    validation is throughput that only has to stay ahead of it.  Three busy processes on two cores
    share them equally, so the merge got two thirds of a core while the workers ran and finished alone
    long after them (a first import: 3 s with one core idle).  Lowered, the workers take what the
    merge leaves, and get both cores whenever it waits for them."""
    with contextlib.suppress(AttributeError, OSError):  # no os.nice (Windows): equal priority
        os.nice(WORKER_NICE)


def _slim(result: Any) -> Any:
    """What annotate needs (path, language, findings) without the sheets, to send to a worker."""
    from xlcrm.reader import TeamWorkbook
    from xlcrm.validate import ValidationResult

    wb = result.workbook
    return ValidationResult(TeamWorkbook(wb.path, wb.meta, {}), result.schema, {}, list(result.findings), {})


#: The spool of a dry run (which writes nothing beside the master) in the system's temp folder:
#: ``xlcrm-validated-<pid>-…``, removed by a later run once that process is gone.
_SPOOL_PREFIX = "xlcrm-validated-"


def _remove_dead_spools() -> None:
    import tempfile

    for spool in Path(tempfile.gettempdir()).glob(f"{_SPOOL_PREFIX}*-*"):
        pid = spool.name[len(_SPOOL_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(spool, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


class _Workers:
    """Worker processes (2 at most: the target is a small office PC) for validation and error workbooks.

    Validation of large inputs is spread over them; each input's error workbook (validate's annotated
    copy, an openpyxl load + save taking seconds for a large file) is written by them while the main
    process merges.  Small inputs are handled inline: a process costs more than it saves there.
    """

    def __init__(self, out_dir: Path | None, background_rows: int | None = None,
                 password: str | None = None, spool_beside: Path | None = None) -> None:
        self.out_dir = out_dir
        self.password = password
        #: validated inputs are spooled beside this file (the master), in a temp folder the next run
        #: removes if this one is killed (writer.remove_leftovers); None: the system's temp folder
        self.spool_beside = spool_beside
        _remove_dead_spools()
        self.annotate = out_dir is not None
        self.background_rows = BACKGROUND_ANNOTATE_ROWS if background_rows is None else background_rows
        self.pool: Any = None
        self.jobs: dict[int, tuple[Source, Any]] = {}
        self.spool: Path | None = None  # validated inputs on their way from the workers

    def _pool(self) -> Any:
        if self.pool is None:
            import concurrent.futures
            import multiprocessing
            import sys

            # fork on Linux: no re-import of __main__ (which may be a script or stdin); the children
            # never touch the database connection they inherit.
            fork = sys.platform.startswith("linux")
            if fork:
                # Imported once here (the merge needs them too), not again in each worker: pandas and
                # pandera take ~0.5 s of CPU per process.
                import xlcrm.match
                import xlcrm.validate  # noqa: F401
            ctx = multiprocessing.get_context("fork" if fork else "spawn")
            self.pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(1, min(2, os.cpu_count() or 1)), mp_context=ctx, initializer=_worker_init,
                initargs=(os.getpid(),))
        return self.pool

    def parallel(self, paths: Sequence[Path]) -> bool:
        if len(paths) < 2:
            return False
        try:
            return sum(p.stat().st_size for p in paths) >= PARALLEL_BYTES
        except OSError:
            return False

    def map_validate(self, paths: Sequence[Path], schema: Schema, today: dt.date,
                     password: str | None = None) -> list[Any] | None:
        """Futures of :func:`_validate_job` per path; their results come back through temp files.

        Why files: a validated 40,000-row workbook is ~7 MB pickled, and a worker sending it through
        the pool's pipe blocks until the busy merge process reads it (measured: 0.2-0.4 s idle per
        file on each worker).  Written to a file, the worker goes on at once; the merge loads it
        when it reaches that file.
        """
        import tempfile

        try:
            pool = self._pool()
            beside = self.spool_beside
            self.spool = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent)
                              if beside is not None else
                              tempfile.mkdtemp(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-"))
            return [pool.submit(_validate_to_file, p, schema, today, password, self.spool / f"{i}.pickle")
                    for i, p in enumerate(paths)]
        except Exception:
            return None

    def out(self, src: Source) -> Path:
        assert self.out_dir is not None
        return self.out_dir / f"{src.path.stem}.errors.xlsx"

    def submit_annotate(self, src: Source) -> None:
        if src.rows < self.background_rows:
            return  # small: written inline at the end, cheaper than a process
        try:
            self.jobs[id(src)] = (src, self._pool().submit(_annotate_job, _slim(src.result), self.out(src),
                                                                self.password))
        except Exception:  # no worker processes here: the file is annotated inline at the end
            self.jobs.pop(id(src), None)

    def finish(self, sources: Sequence[Source], report: MergeReport) -> None:
        """Wait for the error workbooks (writing the small ones and re-writing late ones here)."""
        try:
            for s in sources:
                fr = s.report
                if fr is None or fr.total("rejected") == 0:
                    continue
                if fr.status == "ok":
                    fr.status = "errors"
                if not self.annotate:
                    continue
                job = self.jobs.get(id(s))
                try:
                    done = False
                    if job is not None:
                        try:
                            job[1].result()  # wait; a late finding means writing it again below
                            done = True
                        except (XlcrmError, OSError):
                            raise
                        except Exception:  # a broken worker: write it here instead
                            done = False
                    if not done or s.late_findings:
                        annotate_source(s.result, self.out(s), self.password)
                except (XlcrmError, OSError) as exc:
                    report.warnings.append(f"{s.path}: could not write the error workbook ({exc})")
                    continue
                fr.error_workbook = str(self.out(s))
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


def keep_rejected(conn: sqlite3.Connection, schema: Schema, sources: Sequence[Source], run_id: int) -> None:
    """Keep the rows each workbook had rejected, exactly as typed with their findings, for its owner's
    next handout (``distribute`` puts them back in place, marked like the error workbook).

    A workbook's rows are replaced by what this run rejected from it: a row fixed and merged leaves, one
    still wrong stays, and one sent again unchanged is the same row, not a second copy.  Rows held by
    the owner's other workbooks (a handout not sent back this week) stay.  A workbook ``--strict``
    refused keeps its rows as they were.
    """
    taken: list[str] = []
    rows: list[dict[str, Any]] = []
    for src in sources:
        if src.is_master or src.strict_rejected or src.report is None:
            continue
        taken.append(src.key)
        res = src.result
        if not any(res.error_rows.values()):
            continue
        found: dict[tuple[str, int], list[tuple[str, str, str, str]]] = {}
        for f in res.findings:
            found.setdefault((f.entity, f.row), []).append((f.key, f.severity, f.rule, f.message))
        for entity in schema:
            data = src.sheets.get(entity.key)
            typed = {**((data.rejected or {}) if data is not None else {}), **src.late_rows.get(entity.key, {})}
            for row in sorted(res.error_rows.get(entity.key, ())):
                if row in typed:
                    rid, cells = typed[row]
                    rows.append({"owner": src.who, "source": src.key, "entity": entity.key, "record_id": rid,
                                 "source_file": src.name, "source_row": row, "cells": cells,
                                 "findings": found.get((entity.key, row), [])})
    db.replace_rejected_rows(conn, taken, rows, run_id=run_id)


def _import_log(conn: sqlite3.Connection, sources: Sequence[Source], report: MergeReport,
                run_id: int) -> None:
    rows: list[tuple[Any, ...]] = [(run_id, f.file, "", f.status, 0, 0, 0, 0, 0, 0, 0, None, f.message)
                                   for f in report.files if f.status == "unreadable"]
    for s in sources:
        fr = s.report
        if fr is None:
            continue
        for ekey, c in fr.sheets.items():
            rows.append((run_id, fr.file, ekey, fr.status, c.rows_read, c.new, c.updated, c.unchanged, c.linked,
                         c.rejected, c.conflicts, fr.error_workbook, fr.message))
    db.add_import_log(conn, rows)


def _search_index(conn: sqlite3.Connection, schema: Schema, run_id: int) -> None:
    """Bring the add-in's search index up to date with what this run changed (a full build the first
    time, or when most of the master changed)."""
    from xlcrm.searchindex import update_index

    update_index(conn, schema, run_id)

