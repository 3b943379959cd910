"""CLI: `xlcrm merge`, `xlcrm distribute`, `xlcrm resolve`, `xlcrm export-master` (the master loop).

Thin: parse options, call :mod:`xlcrm.master.merge` / :mod:`xlcrm.master.distribute` / :mod:`xlcrm.master.resolve` /
:mod:`xlcrm.master.masterbook`, show a progress bar on stderr and a summary (or ``--json``) on stdout.
Refusals (:class:`~xlcrm.errors.XlcrmError`) become one line and exit code 2 in ``xlcrm.cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from xlcrm.api import Master
from xlcrm.cli.app import app
from xlcrm.cli.common import (
    ConfigOpt,
    ForceOpt,
    MasterOpt,
    MasterPasswordOpt,
    err,
    folder_path,
    keeping_copies,
    opened_master,
    out,
    parse_date,
    progress_bar,
)
from xlcrm.cli.common import load_config as _schema
from xlcrm.terminal import add_whole_column, narrow_table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON for scripts.")]




_COUNTS = ("rows_read", "new", "updated", "unchanged", "linked", "rejected")
_COUNT_HEAD = {"rows_read": "read", "new": "new", "updated": "updated", "unchanged": "unchanged",
               "linked": "linked", "rejected": "rejected"}


@app.command()
def merge(
    inputs: Annotated[list[Path], typer.Argument(metavar="TEAM...", help="Team workbooks or folders.")],
    master: MasterOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would happen; write nothing.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Reject a whole file when any row has an error.")]
    = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    today: Annotated[str | None, typer.Option(help="Reference date, year first: 2024-04-01 or 2024/4/1 (default: today).")] = None,
    password: MasterPasswordOpt = None,
    skip_unreadable: Annotated[bool, typer.Option(
        "--skip-unreadable", help="Merge the other files when one cannot be read (it is listed in 取込ログ; "
        "exit 1). Without it such a file stops the merge before anything is written (exit 2).")] = False,
) -> None:
    """Merge the team's workbooks into the master (created if missing): IDs, duplicates, conflicts, history.

    Exit 0: merged; 1: merged, but --skip-unreadable left files out; 2: refused, nothing written.
    """
    ref_day = parse_date(today)
    m = Master(master, schema=_schema(config), password=password or None)
    with progress_bar(not as_json) as progress:
        report = m.merge(inputs, dry_run=dry_run, strict=strict, today=ref_day, progress=progress,
                         skip_unreadable=skip_unreadable)
    code = 1 if report.skipped else 0
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        raise typer.Exit(code)
    table = narrow_table(f"{'dry run: ' if dry_run else ''}merge into {master}")
    # "ok" / "errors" say what the rejected count says; the status column is shown when a file was
    # refused (its message follows the table), so an ordinary run keeps the width for the file names.
    status = any(f.status not in ("ok", "errors") for f in report.files)
    rows = [(Path(f.file).name, *((f.status,) if status else ()), *(str(f.total(k)) for k in _COUNTS))
            for f in report.files]
    heads = ("file", *(("status",) if status else ()), *(_COUNT_HEAD[k] for k in _COUNTS))
    for i, head in enumerate(heads):
        add_whole_column(table, head, (r[i] for r in rows), justify="right" if i > int(status) else "left")
    for r in rows:
        table.add_row(*r)
    out.print(table)
    for f in report.files:
        if f.error_workbook:
            out.print(f"  → error workbook of {Path(f.file).name}: {f.error_workbook}")
    for f in report.files:
        if f.status in ("unreadable", "rejected") and f.message:
            err.print(f"[red]{Path(f.file).name}[/]: {f.message}")
    out.print(f"history rows added: {report.history_rows}   decisions applied: {report.decisions_applied}")
    out.print(f"pending review: 重複候補 {report.duplicates_pending} (new {report.duplicates_new}), "
              f"競合 {report.conflicts_pending} (new {report.conflicts_new}), "
              f"削除候補 {report.deletions_pending} (new {report.deletions_new})")
    for w in report.warnings:
        err.print(f"[yellow]warning[/]: {w}")
    for note in report.not_read:
        err.print(f"[yellow]not read[/]: {escape(note)}")
    out.print(f"{report.seconds:.1f} s" + ("  (dry run: nothing was written)" if dry_run else ""))
    raise typer.Exit(code)


@app.command()
def distribute(
    master: MasterOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", callback=folder_path,
                                          help="Folder for the workbooks (one per 担当営業).")],
    owner: Annotated[list[str] | None, typer.Option("--owner", help="Only these 担当営業 (repeatable).")]
    = None,
    lang: Annotated[str | None, typer.Option("--lang", help="ja or en for every workbook (default: each "
                                             "person's last language, else ja).")] = None,
    config: ConfigOpt = None,
    password: Annotated[str | None, typer.Option(
        "--password", envvar="XLCRM_PASSWORD", show_envvar=True,
        help="Open an encrypted master.xlsx and encrypt every workbook written with this password "
             "(without it they are plain).")] = None,
    force: ForceOpt = False,
) -> None:
    """Write a fresh workbook for each salesperson from the master, ready to edit."""
    if lang not in (None, "ja", "en"):
        raise typer.BadParameter("use ja or en", param_hint="--lang")
    with keeping_copies(), opened_master(master, _schema(config), password or None) as m:
        paths = m.distribute(out_dir, owners=owner, lang=lang, force=force)  # type: ignore[arg-type]
    for p in paths:
        out.print(f"[green]wrote[/] {p}")
    out.print(f"{len(paths)} workbook(s) in {out_dir}")


@app.command()
def resolve(
    master: MasterOpt,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    password: MasterPasswordOpt = None,
) -> None:
    """Apply the decisions typed into 重複候補 / 競合 / 削除候補 (and edits in master.xlsx) now."""
    with opened_master(master, _schema(config), password or None, quiet=as_json) as m:
        report = m.resolve()
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    out.print(f"decisions applied: {report.applied} (統合 {report.merged}, 別 {report.different}, "
              f"競合 {report.conflicts_resolved}, 削除 {report.deleted}, 残す {report.kept})")
    out.print(f"pending: 重複候補 {report.duplicates_pending}, 競合 {report.conflicts_pending}, "
              f"削除候補 {report.deletions_pending}")
    for w in report.warnings:
        err.print(f"[yellow]warning[/]: {w}")


@app.command("export-master")
def export_master(
    master: MasterOpt,
    config: ConfigOpt = None,
    lang: Annotated[str | None, typer.Option("--lang", help="ja or en (default: the schema's master_lang, "
                                             "else ja).")] = None,
    password: MasterPasswordOpt = None,
) -> None:
    """Rebuild master.xlsx from master.db (a lost or damaged workbook)."""
    if lang not in (None, "ja", "en"):
        raise typer.BadParameter("use ja or en", param_hint="--lang")
    with opened_master(master, _schema(config), password or None) as m:
        path = m.export_master(lang=lang)  # type: ignore[arg-type]
    out.print(f"[green]wrote[/] {path}")
