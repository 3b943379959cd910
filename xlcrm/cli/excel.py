"""CLI: `xlcrm addin build` and `xlcrm addin install` (the Excel ribbon add-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlcrm.cli.app import app
from xlcrm.cli.common import ForceOpt, folder_path, keeping_copies
from xlcrm.excel.build import build_addin
from xlcrm.excel.install import install_addin

addin_app = typer.Typer(name="addin", help="The Excel ribbon add-in (顧客管理 tab): build and install.",
                        no_args_is_help=True)
app.add_typer(addin_app, name="addin")


@addin_app.command("build")
def build(out: Annotated[Path | None, typer.Argument(help="Where to write the .xlam (default: the copy "
                                                     "shipped inside the xlcrm package).")] = None,
          force: ForceOpt = False) -> None:
    """Build xlcrm.xlam from the pinned xlwings template (deterministic: same input, same bytes)."""
    with keeping_copies():
        result = build_addin(out, force=force)
    typer.echo(f"built {result.path} (sha256 {result.sha256[:16]}…, modules: "
               f"{', '.join(sorted(result.modules))})")


@addin_app.command("install")
def install(
    master: Annotated[Path | None, typer.Option("--master", "-m", help="The master workbook (master.xlsx, "
                                                "with master.db beside it) search and history read.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The firm's xlcrm.toml, if any.")] = None,
    dest: Annotated[Path | None, typer.Option("--dest", callback=folder_path, help="Copy the add-in into this folder instead of "
                                              "Excel's start-up folder.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")] = False,
) -> None:
    """Copy the add-in where Excel loads it (Windows, macOS) and write xlcrm.conf (Python, master)."""
    plan = install_addin(master=master, config=config, dest=dest, dry_run=dry_run)
    prefix = "would " if dry_run else ""
    for line in plan.describe():
        typer.echo(prefix + line)
    for warning in plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if plan.done:
        typer.echo("done: restart Excel; the 顧客管理 tab appears on the ribbon.")


