"""CLI: `xlcrm template`, `xlcrm validate`, `xlcrm schema`, `xlcrm demo` (the foundation commands)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from xlcrm.api import template_workbook
from xlcrm.cli.app import app
from xlcrm.cli.common import ConfigOpt, ForceOpt, LangOpt, err, folder_path, keeping_copies, out, parse_date
from xlcrm.cli.common import check_lang as _lang
from xlcrm.cli.common import load_config as load
from xlcrm.intake.inputs import scan
from xlcrm.normalize import display_text
from xlcrm.store import outputs
from xlcrm.terminal import shown


@app.command()
def template(
    out_path: Annotated[Path, typer.Argument(metavar="OUT.xlsx", help="Where to write the workbook.")],
    owner: Annotated[str, typer.Option(help="The staff member who will fill it in (担当営業).")] = "",
    lang: LangOpt = "ja",
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Write the standard team workbook (顧客台帳 template) with dropdowns and input rules built in."""
    schema = load(config)
    with keeping_copies():
        path = template_workbook(out_path, schema=schema, owner=owner, lang=_lang(lang),  # type: ignore[arg-type]
                                 force=force)
    err.print(f"[green]wrote[/] {path}  (schema {schema.version}, {lang}, owner {owner or '-'})")


@app.command()
def validate(
    inputs: Annotated[list[Path], typer.Argument(metavar="FILE_OR_DIR...", help="Workbooks or folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON for scripts.")] = False,
    annotate: Annotated[Path | None, typer.Option(callback=folder_path, help="Write a marked-up copy of each "
                                                  "workbook into this folder.")] = None,
    fix: Annotated[Path | None, typer.Option(callback=folder_path, help="Write a normalised copy of each "
                                             "workbook into this folder.")] = None,
    config: ConfigOpt = None,
    today: Annotated[str | None, typer.Option(help="Reference date, year first: 2024-04-01 or 2024/4/1 (default: today).")] = None,
    password: Annotated[str | None, typer.Option(envvar="XLCRM_PASSWORD", help="Password of encrypted workbooks.")] = None,
    force: ForceOpt = False,
) -> None:
    """Check workbooks cell by cell. Exit 0: no errors (warnings allowed); 1: errors; 2: unreadable."""
    from rich.progress import Progress

    from xlcrm.errors import XlcrmError
    from xlcrm.intake import validate as v

    ref_day = parse_date(today)
    schema = load(config)
    found = scan(inputs)
    paths = found.paths
    results: list[v.ValidationResult | v.Unreadable] = []
    with Progress(console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("validating", total=len(paths))
        for p in paths:
            bar.update(task, description=f"validating {p.name}")
            results.extend(v.validate_paths([p], schema, today=ref_day, password=password))
            bar.advance(task)

    written: dict[str, dict[str, str]] = {}
    readable = [r for r in results if not isinstance(r, v.Unreadable)]
    copies: dict[str, dict[Path, Path]] = {"annotated": {}, "fixed": {}}  # kind -> {input: target}
    for r in readable:
        stem, ja = r.path.stem, r.workbook.lang == "ja"
        if annotate is not None:
            copies["annotated"][r.path] = annotate / f"{stem}_{'チェック結果' if ja else 'checked'}.xlsx"
        if fix is not None:
            copies["fixed"][r.path] = fix / f"{stem}_{'修正済' if ja else 'fixed'}.xlsx"
    # Copies are .xlsx whatever the input: xlcrm writes no macros (an .xlsm's VBA project is left out).
    # Every copy's target is checked before the first is written: none replaces someone's work.
    claims = {kind: outputs.claim(list(targets.values()), kind, force=force)
              for kind, targets in copies.items() if targets}
    refused: list[str] = []  # copies that could not be made: one file's never stops the others'
    with keeping_copies():
        for r in readable:
            try:
                if r.path in copies["annotated"]:
                    target = copies["annotated"][r.path]
                    with claims["annotated"].write(target):
                        written.setdefault(str(r.path), {})["annotated"] = str(v.annotate(r, target))
                if r.path in copies["fixed"]:
                    target = copies["fixed"][r.path]
                    with claims["fixed"].write(target):
                        path, fixes = v.fix(r, target)
                    written.setdefault(str(r.path), {}).update(fixed=str(path), fixes=str(len(fixes)))
            except XlcrmError as exc:
                refused.append(str(exc))
                written.setdefault(str(r.path), {})["copy_refused"] = str(exc)

    if as_json:
        payload = {
            "files": [_file_json(r, written) for r in results],
            "not_read": [str(p) for p in found.not_read_files],
            "findings": [f.to_dict() for r in results if isinstance(r, v.ValidationResult) for f in r.findings],
        }
        json.dump(payload, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        _print_results(results, written)
        for note in found.notes():
            out.print(f"[yellow]not read[/]: {escape(note)}")
    unreadable = [r for r in results if isinstance(r, v.Unreadable)]
    if unreadable:
        more = f" (and {len(unreadable) - 1} more file(s) that cannot be read)" if len(unreadable) > 1 else ""
        more += f" (and {len(refused)} file(s) whose copies could not be made)" if refused else ""
        print(f"xlcrm: {unreadable[0].message}{more}", file=sys.stderr)
        raise typer.Exit(2)
    if refused:
        more = f" (and {len(refused) - 1} more file(s) whose copies could not be made)" if len(refused) > 1 else ""
        print(f"xlcrm: {refused[0]}{more}", file=sys.stderr)
        raise typer.Exit(2)
    if any(not r.ok for r in results):  # type: ignore[union-attr]
        raise typer.Exit(1)


def _file_json(r, written: dict[str, dict[str, str]]) -> dict[str, object]:
    from xlcrm.intake.validate import Unreadable

    if isinstance(r, Unreadable):
        return {"file": str(r.path), "status": "unreadable", "message": r.message}
    d: dict[str, object] = {
        "file": str(r.path), "status": r.status, "errors": len(r.errors), "warnings": len(r.warnings),
        "rows": r.workbook.rows_read, "owner": r.workbook.meta.owner, "lang": r.workbook.lang,
        "message": "; ".join(r.workbook.warnings),
    }
    d.update(written.get(str(r.path), {}))
    return d


def _print_results(results: list, written: dict[str, dict[str, str]]) -> None:
    from xlcrm.intake.validate import Unreadable

    for r in results:
        if isinstance(r, Unreadable):
            out.print(f"[bold red]✗ {escape(str(r.path))}[/]  {escape(shown(r.message))}")
            continue
        rows = sum(r.workbook.rows_read.values())
        head = "[green]✓[/]" if r.ok else "[red]✗[/]"
        out.print(f"{head} [bold]{r.path}[/]  {rows} rows, {len(r.errors)} errors, {len(r.warnings)} warnings")
        for w in r.workbook.warnings:
            out.print(f"  [yellow]![/] {w}")
        if r.findings:
            t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for h in ("", "cell", "column", "value", "message"):
                t.add_column(h, overflow="fold")
            for f in r.findings:
                mark = "[red]E[/]" if f.severity == "error" else "[yellow]W[/]"

                t.add_row(mark, *(escape(shown(text)) for text in
                                  (f.address, f.column, display_text(f.value)[:30], f.message)))
            out.print(t)
        for kind, path in written.get(str(r.path), {}).items():
            if kind != "fixes":
                out.print(f"  → {kind}: {path}")


@app.command("schema")
def show_schema(
    config: ConfigOpt = None,
    lang: LangOpt = "ja",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every sheet and column the template and validation use (after xlcrm.toml)."""
    schema = load(config)
    lg = _lang(lang)
    if as_json:
        data = {e.key: [{"key": c.key, "label": c.label(lg), "type": c.type, "required": c.required,
                         "choices": [ch.label(lg) for ch in c.choices], "custom": c.custom}
                        for c in e.columns] for e in schema}
        json.dump({"version": schema.version, "sheets": data}, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return
    for e in schema:
        t = Table(title=f"{e.label(lg)} ({e.key})", title_justify="left", header_style="bold")
        for h in ("column", "key", "type", "required", "choices / rule"):
            t.add_column(h, overflow="fold")
        for c in e.columns:
            extra = "、".join(ch.label(lg) for ch in c.choices[:8]) + ("…" if len(c.choices) > 8 else "")
            t.add_row(c.label(lg), c.key, c.type, "yes" if c.required else "", extra or c.help(lg))
        out.print(t)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Argument(metavar="DIR", callback=folder_path,
                                            help="Folder for the demo team (created).")] = Path("xlcrm-demo"),
    today: Annotated[str | None, typer.Option(help="Pretend today is this date (2024-04-01 or 2024/4/1).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the generated team.")] = 7,
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Create a realistic demo team (4 staff workbooks) and run the whole pipeline on it.

    Exits 0: the validation errors it finds are the mistakes planted on purpose.
    """
    ref_day = parse_date(today)
    with keeping_copies():
        # the demo loads the whole pipeline; only `xlcrm demo` needs it
        from xlcrm.demo import run_demo

        run_demo(out_dir, load(config), today=ref_day, console=out, seed=seed, force=force)
