"""Merge the team's workbooks into the master: identity, duplicates, three-way field merge, history.

The master's system of record is the SQLite database beside ``master.xlsx`` (see :mod:`xlcrm.store.db`); a
merge is one transaction, after which the workbook is regenerated from the database
(:mod:`xlcrm.master.masterbook`).  What a merge does, and why:

**Identity.**  A row with an xlcrm ID updates that record (a record merged into another forwards to
its survivor).  A row without an ID is recognised, in this order, as the record it created last time
(``origins``: the same content from the same workbook), as an existing activity/deal/contact/TODO by
the entity's natural key (so re-merging an activity never duplicates it), or as a customer the master
or another input already has: :mod:`xlcrm.master.match` decides; a *certain* match links the row to that
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
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

from xlcrm import normalize as nz
from xlcrm.address import comparable
from xlcrm.errors import XlcrmError
from xlcrm.master.match import MATCH_COLUMNS, MatchIndex, contact_keys, proposals, same_contact
from xlcrm.master.match import proposals as to_review
from xlcrm.schema import OWNER_DEFAULTED, Entity, Lang, Schema
from xlcrm.store import db

#: The five outcomes of an input row; they add up to the rows read.
OUTCOMES = ("new", "updated", "unchanged", "linked", "rejected")


#: Source key of the master workbook itself when the admin edited it.
MASTER_SOURCE = "master"


#: progress(stage, done, total): the CLI turns it into a rich progress bar.
Progress = Callable[[str, int, int], None]


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

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [f.to_dict() for f in self.files]
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


_TEXT_TYPES = frozenset({"text", "name", "kana", "phone", "postal", "email", "url", "corporate_number",
                         "choice", "ref", "id"})


def _match_keys(schema: Schema, result: Any, rows: list[int], cols: list[list[Any]]) -> list[Any] | None:
    """Duplicate-detection keys of the customer rows that have no ID (the ones merge looks up), folded
    here: ``compact`` runs in the validation worker, so the folding (seconds of CPU in a large first
    import) is done on the second core, not by the merge process.  The keys depend on the row alone."""
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
    sheets: dict[str, SheetRows] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class SheetRows:
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


def compact(result: Any, schema: Schema) -> dict[str, SheetRows]:
    """Turn a validation result's frames into :class:`SheetRows` and drop the frames.

    Done file by file right after validation, so the merge never holds every file's raw and
    normalised DataFrames at once (the peak memory of a 400,000-row merge).
    """
    out: dict[str, SheetRows] = {}
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
        out[entity.key] = SheetRows(rows, cols, present, blank_raw, cust_rows, keys_of, fps, rejected)
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


class SourceStream(Protocol):
    """Inputs that become merge sources while the merge runs (:class:`xlcrm.master.run.Inputs`: validation
    of later files goes on in the worker processes while the first ones merge)."""

    #: the sources validated so far, in input order
    ready: list[Source]

    @property
    def validated(self) -> bool: ...

    def release_annotation(self) -> None: ...

    def __iter__(self) -> Iterator[Source]: ...


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
            from xlcrm.master.match import MatchIndex

            index = MatchIndex(self.schema, self.lang)
            index.add_many((rid, vals) for rid, vals in recs.items() if rid not in states)
            self._matcher = index
        return self._matcher

    # -- the run --

    def run(self, sources: SourceStream | Sequence[Source]) -> None:
        """Each input in turn through every sheet's pass, customers first; then each pass's end.

        A workbook's contacts, activities, deals and TODOs only need its own customers resolved, so
        they are merged right after them, while the workers still validate later inputs: both cores
        stay busy (sheet after sheet, a first import's activities would be merged on one core once
        validation had ended).  The ends (proposals judged into edits or 競合, edited customers
        matched again) see every input.
        """
        # The cyclic GC is paused for the pass: 400,000 rows leave millions of tuples and lists alive
        # in growing containers, which it would rescan again and again (about an eighth of the merge stage)
        # while the pass makes no reference cycles.
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
                if not isinstance(sources, Sequence) and sources.validated:
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

    def _entity_pass(self, entity: Entity, sources: SourceStream | Sequence[Source]
                     ) -> Generator[None, tuple[int, Source] | None, None]:
        """One sheet's pass as a generator: sent ``(index, source)`` for each input in order, then
        ``None`` for the end (see :meth:`run`)."""
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
            known = sources if isinstance(sources, Sequence) else sources.ready
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
            src.sheets[ekey] = SheetRows([], [[] for _ in range(ncols)], present, {}, None, None,
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
                # applies later workbooks' proposals), copied inside SQLite rather than bound again
                # value by value from Python.  The master before this merge stays what ``recs``
                # reads (db.LazyRecords keeps to the ids it started with).
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
    from xlcrm.intake.validate import ERROR, Finding

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

        def fold_email(v: Any) -> str:
            return str(v).casefold()


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
    "file.stray_cells": ("表から遠く離れたセル {n} 個は取り込んでいません（{cells}）。表の中へ移すか、消してください。",
                         "{n} cell(s) far from the table were not merged ({cells}); move them into the table "
                         "or delete them."),
}


def merge_message(code: str, lang: Lang, **kw: Any) -> str:
    ja, en = _MERGE_MESSAGES[code]
    return (ja if lang == "ja" else en).format(**kw)
