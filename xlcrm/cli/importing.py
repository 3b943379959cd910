"""CLI: `xlcrm import` (bring existing customer lists, card exports, logs and ledgers in)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from xlcrm.api import import_lists
from xlcrm.cli.app import app
from xlcrm.cli.common import ConfigOpt, ForceOpt, LangOpt, folder_path, keeping_copies, out
from xlcrm.cli.common import check_lang as _lang
from xlcrm.cli.common import load_config as load

#: Lines of each list printed (the JSON report holds every one).
SHOWN = 50


@app.command("import")
def import_(
    sources: Annotated[list[Path], typer.Argument(metavar="SOURCE...", help="Files or folders: .xlsx .xlsm "
                                                  ".xls .xlsb .csv .tsv .txt")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", callback=folder_path, help="Folder for the standard workbooks "
                                                 "(one per owner) and import-map.toml.")] = None,
    owner: Annotated[str, typer.Option(help="Owner (担当営業) of rows without a 担当 column.")] = "",
    master: Annotated[Path | None, typer.Option("--master", "-m", help="Match customer names also against "
                                                "this master's customers (rows then carry the ID).")] = None,
    map_file: Annotated[Path | None, typer.Option("--map", help="Re-use a mapping (import-map.toml).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write nothing; show encoding, sheet, header "
                                          "row, mapping and sample rows.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON for scripts.")] = False,
    password: Annotated[str | None, typer.Option(envvar="XLCRM_PASSWORD",
                                                 help="Password of an encrypted source.")] = None,
    lang: LangOpt = "ja",
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Bring existing lists in as standard workbooks. Exit 0: all in; 1: some rows need a person;
    2: a source could not be read or has no customer column."""
    schema = load(config)
    with keeping_copies():
        result = import_lists(sources, schema=schema, out_dir=out_dir, owner=owner, master=master,
                              map_path=map_file, dry_run=dry_run, password=password, lang=_lang(lang),
                              force=force)
    if as_json:
        json.dump(result.to_dict(), sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print(result, schema, _lang(lang))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _print(result, schema, lang) -> None:  # type: ignore[no-untyped-def]
    for s in result.sources:
        if s.status != "ok":
            mark = "[bold red]✗[/]" if s.status == "unreadable" else "[yellow]-[/]"
            out.print(f"{mark} {escape(s.message)}")
            continue
        m, c = s.map, s.counts
        where = Path(s.file).name + (f" [{s.sheet}]" if s.sheet else "")
        enc = f", {s.encoding}" + (f", delimiter {s.delimiter!r}" if s.delimiter else "") if s.encoding else ""
        out.print(f"[green]✓[/] [bold]{escape(where)}[/]{enc}: header row {m.header_row}, {m.shape}; "
                  f"{c.rows_read} rows read = {c.rows_written} written + {c.rows_skipped} skipped")
        if result.dry_run:
            t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for h in ("column", "header", "→", "why"):
                t.add_column(h, overflow="fold")
            for col in m.columns:
                t.add_row(col.letter, escape(col.header), _target_label(col.target, m.shape, schema, lang),
                          escape(col.why))
            out.print(t)
            for sample in c.samples:
                for ekey, row in sample.items():
                    entity = schema.entity(ekey)
                    shown = ", ".join(f"{entity.column(k).label(lang)}={_shown(entity.column(k), v, lang)}"
                                      for k, v in row.items() if v is not None and entity.has(k))
                    out.print(f"  [dim]{entity.label(lang)}:[/] {escape(shown)}")
        for note in m.notes:
            out.print(f"  [yellow]![/] {escape(note)}")
        for a in c.skipped[:SHOWN]:
            out.print(f"  [yellow]skipped[/] {escape(a.where)}: {escape(a.what)}")
    for w in result.workbooks:
        counts = ", ".join(f"{schema.entity(e).label(lang)} {n}" for e, n in w.rows.items())
        verb = "would write" if result.dry_run else "wrote"
        out.print(escape(f"{verb} {w.path} (owner {w.owner or '-'}): {counts}"))
    for (typed, cust), n in list(result.matched.items())[:20]:
        out.print(escape(f"  matched {typed!r} → {cust!r} ({n} rows)"))
    for a in result.created[:SHOWN]:
        out.print(f"  [cyan]created[/] {escape(a.where)}: {escape(a.what)}")
    if len(result.created) > SHOWN:
        out.print(f"  ... and {len(result.created) - SHOWN} more customers created (all of them with --json)")
    for s in result.suggestions:
        out.print(f"  [dim]hint[/] {escape(s)}")
    if result.attention:
        out.print(f"[yellow]{len(result.attention)} need a person:[/]")
        for a in result.attention[:SHOWN]:
            out.print(f"  [yellow]![/] {escape(a.where)}: {escape(a.what)}")
        if len(result.attention) > SHOWN:
            out.print(f"  ... and {len(result.attention) - SHOWN} more (all of them with --json)")
    if result.map_path:
        out.print(escape(f"mapping: {result.map_path} (edit it and pass --map to run the same import again)"))
        if result.report_path:
            out.print(escape(f"report: {result.report_path} (every skipped row, column note and row that "
                             "needs a person, with where it came from)"))
        first = result.map_path.parent
        out.print(escape(f"next: xlcrm validate {first}  then  xlcrm merge {first} --master master.xlsx"))


def _shown(col, value, lang) -> str:  # type: ignore[no-untyped-def]
    if col.type == "choice" and isinstance(value, str):
        return str(col.choice_label(value, lang))
    if hasattr(value, "strftime"):
        return value.strftime("%Y/%m/%d")
    return str(value).replace("\n", "⏎")


def _target_label(target: str, shape: str, schema, lang) -> str:  # type: ignore[no-untyped-def]
    # the importer loads python-calamine: imported when an import's result is printed, not at start-up
    from xlcrm.intake.importer.mapping import fallback_column

    if "." not in target:
        e = schema.entity(shape)
        where = f"{e.label(lang)}.{e.column(fallback_column(e)).label(lang)}"
        return {"notes": f"{where} (元の列名: 値)", "ignore": "(ignored)"}.get(target, target)
    ent, key = target.split(".")
    e = schema.entity(ent)
    return f"{e.label(lang)}.{e.column(key).label(lang)}"
