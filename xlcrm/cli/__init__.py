"""The `xlcrm` command line: a thin layer over the library; one module per command group.

Every command catches :class:`~xlcrm.errors.XlcrmError` and prints its one line to stderr with exit
code 2, so an admin never sees a traceback for a problem they can fix.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="xlcrm",
    help="Customer management (顧客管理) in Excel: template, validate, merge, search, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from xlcrm.cli import excel, foundation, importing, master, report, search  # noqa: F401


def main() -> None:
    from xlcrm.errors import XlcrmError

    _register()
    try:
        app()
    except XlcrmError as exc:
        print(f"xlcrm: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
