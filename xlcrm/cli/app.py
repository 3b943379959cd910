"""The typer application every command module adds its commands to."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from xlcrm.errors import XlcrmError
from xlcrm.terminal import shown


class _Commands(TyperGroup):
    """Every command's :class:`~xlcrm.errors.XlcrmError` ends here as one line on stderr and its exit code
    (2 unless the error says otherwise), however the app is invoked (``xlcrm``, ``python -m xlcrm``,
    typer's test runner)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except XlcrmError as exc:
            print(f"xlcrm: {shown(exc, one_line=True)}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="xlcrm",
    help="Customer management (顧客管理) in Excel: template, validate, merge, search, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)
