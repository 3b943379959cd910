"""Options and helpers every command group shares, so --master, --config and --lang mean the same in
every command and are described once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from xlcrm.schema import Lang, Schema

#: soft_wrap: a one-line message stays one line when stdout is not a terminal (scripts, CI logs).
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

MasterOpt = Annotated[Path, typer.Option("--master", "-m", help="The master workbook (master.xlsx); its "
                                         "database master.db sits beside it.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="xlcrm.toml with custom columns, "
                                                "switched-off columns and roles (default: ./xlcrm.toml "
                                                "if present).")]
LangOpt = Annotated[str, typer.Option("--lang", help="Language of the workbook and messages: ja or en.")]


def check_lang(value: str) -> Lang:
    if value not in ("ja", "en"):
        raise typer.BadParameter("use ja or en", param_hint="--lang")
    return value  # type: ignore[return-value]


def load_config(config: Path | None) -> Schema:
    """The schema after xlcrm.toml; imported lazily so that `--help` stays fast."""
    from xlcrm.schema import load_schema

    return load_schema(config)
