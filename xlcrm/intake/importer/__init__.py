"""``xlcrm import``: bring a firm's existing lists into standard team workbooks, mapped and previewed.

Modules, in the order an import runs them:

* :mod:`~xlcrm.intake.importer.reading` -- files to rows of cells (Excel via calamine, text with encoding and
  delimiter detection), one line per source that cannot be read;
* :mod:`~xlcrm.intake.importer.mapping` -- the header row, the shape of the source and each column's target,
  from the schema's own labels, aliases and parts; ``import-map.toml`` out and back in;
* :mod:`~xlcrm.intake.importer.shaping` -- rows of the standard sheets, customers found by name or company
  key, each row in its customer's owner's workbook;
* this module -- :func:`import_sources`, which runs them and writes one standard workbook per owner
  (through :func:`xlcrm.intake.template.write_team_workbook`) plus the mapping, or only reports (dry run).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xlcrm.errors import XlcrmError
from xlcrm.intake.importer.mapping import (
    IGNORE,
    NOTES,
    ColumnMap,
    NoCustomerColumn,
    SourceMap,
    apply_saved,
    dump_maps,
    fallback_column,
    find_header,
    infer_map,
    load_maps,
    saved_map_for,
)
from xlcrm.intake.importer.reading import REPORT_FILE, SourceError, SourceTable, expand_sources, read_source
from xlcrm.intake.importer.shaping import (
    Attention,
    Customer,
    Registry,
    Shaped,
    SourceCounts,
    above_header,
    shape_children,
    shape_customers,
    spread_merged,
)
from xlcrm.schema import Lang, Schema

__all__ = ["MAP_FILE", "REPORT_FILE", "ImportResult", "SourceReport", "WorkbookOut", "import_sources"]

#: The mapping written beside the workbooks (merge reads only .xlsx/.xlsm, so it is left alone).
MAP_FILE = "import-map.toml"
#: Workbook of rows whose owner is unknown (no 担当 column and no --owner).
NO_OWNER_FILE = "import"

Status = Literal["ok", "unreadable", "skipped"]


@dataclass
class SourceReport:
    """One table (or one file that could not be read): what was found and what became of its rows."""

    file: str
    sheet: str | None
    status: Status
    message: str = ""
    encoding: str | None = None
    delimiter: str | None = None
    map: SourceMap | None = None
    counts: SourceCounts | None = None
    #: A sheet with values but no table import recognises (its workbook's other sheets came in).
    not_a_table: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file, "sheet": self.sheet, "status": self.status}
        if self.message:
            d["message"] = self.message
        if self.encoding:
            d["encoding"] = self.encoding
        if self.delimiter:
            d["delimiter"] = self.delimiter
        if self.map is not None:
            d["header_row"] = self.map.header_row
            d["shape"] = self.map.shape
            d["mapping"] = [{"column": c.letter, "header": c.header, "to": c.target, "why": c.why}
                            for c in self.map.columns]
            if self.map.notes:
                d["notes"] = list(self.map.notes)
        if self.counts is not None:
            c = self.counts
            d.update(rows_read=c.rows_read, rows_written=c.rows_written, rows_skipped=c.rows_skipped,
                     skipped=[a.to_dict() for a in c.skipped],
                     samples=[{k: _jsonable(v) for k, v in s.items()} for s in c.samples])
        return d


@dataclass
class WorkbookOut:
    owner: str
    path: Path
    rows: dict[str, int]


@dataclass
class ImportResult:
    sources: list[SourceReport]
    workbooks: list[WorkbookOut] = field(default_factory=list)
    map_path: Path | None = None
    report_path: Path | None = None
    attention: list[Attention] = field(default_factory=list)
    created: list[Attention] = field(default_factory=list)
    matched: dict[tuple[str, str], int] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        if any(s.status == "unreadable" for s in self.sources):
            return 2
        return 1 if self.attention else 0

    def report_lines(self) -> list[tuple[str, str, str]]:
        """(kind, where, what) of everything the import reports: sources not read, columns left out
        or remarked on, rows skipped, rows that need a person, customers created, names matched by
        company key, hints."""
        lines: list[tuple[str, str, str]] = []
        for s in self.sources:
            where = Path(s.file).name + (f" [{s.sheet}]" if s.sheet else "")
            if s.status != "ok":
                lines.append((s.status, where, s.message))
            for note in s.map.notes if s.map is not None else ():
                lines.append(("column", where, note))
            for a in s.counts.skipped if s.counts is not None else ():
                lines.append(("skipped", a.where, a.what))
        lines += [("needs a person", a.where, a.what) for a in self.attention]
        lines += [("created", a.where, a.what) for a in self.created]
        lines += [("matched", typed, f"{typed!r} → {cust!r} ({n} rows)") for (typed, cust), n in self.matched.items()]
        lines += [("hint", "", s) for s in self.suggestions]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "exit_code": self.exit_code,
            "sources": [s.to_dict() for s in self.sources],
            "workbooks": [{"owner": w.owner, "file": str(w.path), "rows": w.rows} for w in self.workbooks],
            "map": str(self.map_path) if self.map_path else None,
            "report": str(self.report_path) if self.report_path else None,
            "needs_a_person": [a.to_dict() for a in self.attention],
            "created_customers": [a.to_dict() for a in self.created],
            "matched_by_company_key": [{"typed": t, "customer": c, "rows": n}
                                       for (t, c), n in self.matched.items()],
            "suggestions": self.suggestions,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items() if x is not None}
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    return v


def import_sources(
    sources: Sequence[str | Path],
    schema: Schema,
    *,
    out_dir: str | Path | None = None,
    owner: str = "",
    master: str | Path | None = None,
    map_path: str | Path | None = None,
    dry_run: bool = False,
    password: str | None = None,
    lang: Lang = "ja",
    force: bool = False,
) -> ImportResult:
    """Read, map and shape every source; unless ``dry_run``, write the workbooks and the map to ``out_dir``.

    A source that cannot be read is reported (status ``unreadable``) and the others go on; bad
    arguments (no sources) raise :class:`XlcrmError`.  The files written are claimed first
    (:func:`xlcrm.store.outputs.claim`): any that exists already, an earlier import's included, is refused
    before anything is written unless ``force`` (then a copy is kept beside it).
    """
    if not dry_run and out_dir is None:
        raise XlcrmError("give --out DIR for the workbooks (or --dry-run to only look)")
    paths = expand_sources(sources)
    saved = load_maps(Path(map_path), schema) if map_path is not None else []

    reports: list[SourceReport] = []
    mapped: list[tuple[SourceTable, SourceMap, SourceReport]] = []
    for path in paths:
        try:
            tables = read_source(path, password=password)
        except SourceError as exc:
            reports.append(SourceReport(str(path), None, "unreadable", str(exc)))
            continue
        file_reports: list[SourceReport] = []
        for table in tables:
            file_reports.append(_map_table(table, schema, saved, mapped))
        if all(r.status != "ok" for r in file_reports):
            # Nothing of this file can come in: each of its problems counts.
            for r in file_reports:
                if r.status == "skipped":
                    r.status = "unreadable"
            if not file_reports:
                file_reports.append(SourceReport(str(path), None, "unreadable",
                                                 f"{path}: no sheets; nothing to import"))
        reports.extend(file_reports)

    shaped = Shaped(default_owner=owner)
    for table, smap, _ in mapped:
        shaped.attention.extend(Attention(table.label, m) for m in smap.missing_columns)
    for r in reports:
        if r.status == "skipped" and r.not_a_table:
            shaped.attention.append(Attention(f"{Path(r.file).name} [{r.sheet}]", "sheet not imported: "
                                              + r.message.split(": ", 1)[-1]))
    for table, smap, _ in mapped:
        smap.notes.extend(above_header(table, smap) + spread_merged(table, smap))
    registry = Registry()
    master_registry = _master_registry(Path(master), schema) if master is not None else None
    for table, smap, report in mapped:
        if smap.shape == "customers":
            report.counts = SourceCounts(table.label)
            shape_customers(table, smap, schema, registry, shaped, report.counts)
    for table, smap, report in mapped:
        if smap.shape != "customers":
            report.counts = SourceCounts(table.label)
            shape_children(table, smap, schema, registry, master_registry, shaped, report.counts)

    for table, smap, _ in mapped:
        smap.notes.extend(_ignored(table, smap))
    if "" in shaped.rows and any(shaped.rows[""].values()):
        shaped.attention.append(Attention(
            f"{NO_OWNER_FILE}.xlsx", "no owner for these rows: give --owner NAME (or map a 担当 column) and "
            "run again, or fill the owner into the workbook's meta"))
    result = ImportResult(reports, attention=shaped.attention, created=shaped.created,
                          matched=shaped.matched, suggestions=_suggestions(mapped, schema), dry_run=dry_run)
    targets = {o: _book_path(Path(out_dir or "."), o) for o in shaped.rows if any(shaped.rows[o].values())}
    _check_names(targets)
    result.workbooks = [WorkbookOut(o, p, {e: len(r) for e, r in shaped.rows[o].items() if r})
                        for o, p in targets.items()]
    if dry_run:
        return result

    out = Path(out_dir)  # type: ignore[arg-type]
    map_target = out / MAP_FILE
    report_target = out / REPORT_FILE
    from xlcrm.store import outputs

    # The map given with --map is the one being re-used: it is written again from itself.
    reused = map_path is not None and map_target.exists() and Path(map_path).resolve() == map_target.resolve()
    claim = outputs.claim([*targets.values(), *([] if reused else [map_target]), report_target], "import",
                          force=force, master=Path(master) if master is not None else None, own=False)
    out.mkdir(parents=True, exist_ok=True)
    from xlcrm.intake.template import write_team_workbook

    for o, p in targets.items():
        with claim.write(p):
            write_team_workbook(p, schema, owner=o, lang=lang, rows=shaped.rows[o])
    from xlcrm.xlsx.writer import atomic_write

    with claim.write(map_target), atomic_write(map_target) as tmp:
        Path(tmp).write_text(dump_maps([m for _, m, _ in mapped]), encoding="utf-8")
    result.map_path = map_target
    with (claim.write(report_target), atomic_write(report_target) as tmp,
          Path(tmp).open("w", encoding="utf-8-sig", newline="") as fh):
        csv.writer(fh).writerows([("kind", "where", "what"),
                                  *([_csv_cell(v) for v in line] for line in result.report_lines())])
    result.report_path = report_target
    return result


def _csv_cell(text: str) -> str:
    """Text Excel opens as text: a source value starting like a formula gets a leading apostrophe."""
    from xlcrm.xlsx.writer import looks_like_formula

    return "'" + text if looks_like_formula(text) else text


def _ignored(table: SourceTable, smap: SourceMap) -> list[str]:
    """One line per column the map file leaves out that holds values: where they are and how many."""
    out: list[str] = []
    for c in smap.columns:
        if c.target != IGNORE:
            continue
        rows = [i + 1 for i in range(smap.header_row, len(table.rows))
                if c.index < len(table.rows[i]) and table.rows[i][c.index] is not None]
        if rows:
            out.append(f"column {c.letter} ({c.header or 'blank'}): {len(rows)} values left out as "
                       f"import-map.toml says (to = \"ignore\"), cells {c.letter}{rows[0]}:{c.letter}{rows[-1]}")
    return out


def _map_table(table: SourceTable, schema: Schema, saved: Sequence[Any],
               mapped: list[tuple[SourceTable, SourceMap, SourceReport]]) -> SourceReport:
    report = SourceReport(str(table.path), table.sheet, "ok", encoding=table.encoding,
                          delimiter=table.delimiter)
    if not any(any(v is not None for v in r) for r in table.rows):
        report.status = "skipped"
        report.message = f"{table.label}: the sheet is empty; nothing to import"
        return report
    try:
        entry = saved_map_for(table, saved)
        if entry is not None:
            smap = apply_saved(table, entry, schema)
        else:
            header = find_header(table, schema)
            if header is None:
                first = next(r for r in table.rows if any(v is not None for v in r))
                found = ", ".join(str(v) for v in first if v is not None)[:200]
                raise NoCustomerColumn(
                    f"{table.label}: no header row with a customer column in the first rows (first row: "
                    f"{found}); name the customer column 顧客名 or 会社名, or write import-map.toml "
                    "(header_row, to = \"customers.name\") and pass --map")
            smap = infer_map(table, schema, header)
    except NoCustomerColumn as exc:
        report.status = "skipped"
        report.message = str(exc)
        # A hidden sheet without a table (the lists behind dropdowns) is listed, not asked about.
        report.not_a_table = not table.hidden
        return report
    report.map = smap
    mapped.append((table, smap, report))
    return report


def _master_registry(master: Path, schema: Schema) -> Registry:
    from xlcrm.store import db

    path = db.db_path_for(master)
    if not path.is_file():
        raise XlcrmError(f"{master}: no master database ({path.name}) beside it; check the --master path")
    conn = db.connect(path)
    try:
        rows = db.customer_name_rows(conn, schema.entity("customers"))
    finally:
        conn.close()
    reg = Registry()
    for cid, name, _kana, owner in rows:
        if name:
            reg.add(Customer(str(name), str(owner or ""), id=str(cid), origin="master"))
    return reg


def _book_path(out: Path, owner: str) -> Path:
    stem = re.sub(r'[\\/:*?"<>|\s]+', "_", owner.strip()).strip("._") or NO_OWNER_FILE
    return out / f"{stem}.xlsx"


def _check_names(targets: dict[str, Path]) -> None:
    seen: dict[str, str] = {}
    for o, p in targets.items():
        k = p.name.casefold()
        if k in seen:
            raise XlcrmError(f"owners {seen[k]!r} and {o!r} would share the file {p.name}; spell the owner "
                             "column the same way for one person")
        seen[k] = o


def _suggestions(mapped: Sequence[tuple[SourceTable, SourceMap, SourceReport]], schema: Schema) -> list[str]:
    out: list[str] = []
    for table, smap, _ in mapped:
        for c in smap.columns:
            if c.target == NOTES and c.header and not _nothing(c):
                entity = schema.entity(smap.shape)
                sheet, into = entity.ja, entity.column(fallback_column(entity)).ja
                out.append(f"{table.label}: column {c.letter} {c.header!r} goes to {into}; to keep it as a "
                           f"column of its own add to xlcrm.toml: [[sheets.{sheet}.columns]] label = "
                           f"\"{c.header}\" — then import again")
    return out


def _nothing(c: ColumnMap) -> bool:
    from xlcrm.intake.importer.mapping import says_nothing

    return says_nothing(c.header)
