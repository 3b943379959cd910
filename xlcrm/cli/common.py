"""Options and helpers every command group shares, so --master, --config and --lang mean the same in
every command and are described once."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from xlcrm import fileperm
from xlcrm.schema import load_schema
from xlcrm.store.outputs import collect_kept
from xlcrm.terminal import SafeConsole

if TYPE_CHECKING:

    from xlcrm.api import Master
    from xlcrm.schema import Lang, Schema

#: soft_wrap: a one-line message stays one line when stdout is not a terminal (scripts, CI logs).
err = SafeConsole(stderr=True, soft_wrap=True)
out = SafeConsole(soft_wrap=True)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on stderr (when it is a terminal): one line per stage the callback names."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def opened_master(path: Path, schema: Schema, password: str | None, *, quiet: bool = False) -> Iterator[Master]:
    """The master of ``--master``, with a progress bar for its work on a PostgreSQL server (reading the
    master, waiting for another admin, writing back)."""
    from xlcrm.api import Master

    with progress_bar(not quiet) as bar:
        yield Master(path, schema=schema, password=password, progress=bar)

def master_path(value: Path | None) -> Path | None:
    """``--master`` names a workbook file: an empty value or a folder is refused in one line."""
    if value is not None and (not str(value).strip() or not value.name or value.is_dir()):
        raise typer.BadParameter(f"{str(value)!r} is a folder; give the master workbook's path, e.g. "
                                 "顧客/master.xlsx", param_hint="--master")
    return value


def folder_path(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """An option naming a folder to write into: a file there, or a file where a folder on its way
    should be, is refused in one line."""
    if value is None:
        return value
    existing = next((p for p in (value, *value.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "" if existing == value else f" (on the way to {str(value)!r})"
        hint = param.metavar if param.param_type_name == "argument" and param.metavar else \
            (param.opts or [param.name or "folder"])[0]
        raise typer.BadParameter(f"{str(existing)!r}{where} is a file; give a folder (it is created when "
                                 "missing)", param_hint=hint)
    return value


MasterOpt = Annotated[Path, typer.Option("--master", "-m", callback=master_path,
                                         help="The master workbook (master.xlsx); its database master.db "
                                              "sits beside it.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="xlcrm.toml with custom columns, "
                                                "switched-off columns and roles (default: ./xlcrm.toml "
                                                "if present).")]
LangOpt = Annotated[str, typer.Option("--lang", help="Language of the workbook and messages: ja or en.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output that holds data "
                                        "xlcrm did not write or that was changed since (a copy is kept "
                                        "beside it: NAME.YYYYMMDD-HHMMSS.bak.xlsx).")]


@contextmanager
def keeping_copies() -> Iterator[None]:
    """Say which copies ``--force`` kept of the files it overwrote inside the block."""
    with collect_kept() as kept:
        yield
    for path, copy in kept:
        err.print(f"[yellow]kept[/] the previous {path} as {copy}")


def check_lang(value: str) -> Lang:
    if value not in ("ja", "en"):
        raise typer.BadParameter("use ja or en", param_hint="--lang")
    return value  # type: ignore[return-value]


def load_config(config: Path | None) -> Schema:
    """The schema after xlcrm.toml; imported lazily so that `--help` stays fast."""
    schema = load_schema(config)
    fileperm.configure(schema.settings, str(schema.config_path or "xlcrm.toml"))
    return schema


_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})|(\d{4})(\d{2})(\d{2})")


def parse_date(value: str | None, option: str = "--today") -> date | None:
    """A date typed year first: 2024-04-01, 2024/4/1, 2024.4.1 or 20240401 (years 1900-2199); anything
    else is refused in one line (4/1/2024 could be April or January)."""
    if value is None or not value.strip():
        return None
    m = _DATE.fullmatch(value.strip())
    if m is not None and 1900 <= int(m.group(1) or m.group(4)) <= 2199:
        y, mo, d = (int(g) for g in (m.groups()[:3] if m.group(1) else m.groups()[3:]))
        try:
            return date(y, mo, d)
        except ValueError:
            pass
    raise typer.BadParameter(f"{value!r} is not a date; type it year first (1900-2199), e.g. 2024-04-01 or 2024/4/1",
                             param_hint=option)


#: The password of master.xlsx and of encrypted team workbooks (merge, resolve, export-master, distribute).
MasterPasswordOpt = Annotated[str | None, typer.Option(
    "--password", envvar="XLCRM_PASSWORD", show_envvar=True,
    help="Encrypt master.xlsx with this password (Excel's own encryption) and open it and encrypted team "
         "workbooks with it. master.db is not encrypted.")]
#: The password that seals a written file (report, export, mailing-list, handover).
OutputPasswordOpt = Annotated[str | None, typer.Option(
    "--password", envvar="XLCRM_PASSWORD", show_envvar=True,
    help="Encrypt the output with this password (Excel's own encryption).")]
