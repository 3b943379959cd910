"""Options and helpers every command group shares, so --master, --config and --lang mean the same in
every command and are described once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

if TYPE_CHECKING:
    from rich.table import Table

    from xlcrm.schema import Lang, Schema

#: C0 and C1 control characters (ESC starts the sequences that move the cursor, clear the screen or
#: retitle the window), DEL, and the Unicode controls that reorder what follows them on screen.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object, *, one_line: bool = False) -> str:
    """Text from a cell or a file as a terminal may show it: control characters written as ``\\x1b``.

    A cell holding ESC[2J would otherwise clear the admin's screen when printed.  Line breaks and tabs
    stay (a 備考 of several lines), unless ``one_line``.
    """
    text = str(value)
    return (_UNSAFE_LINE if one_line else _UNSAFE).sub(_escaped, text)


class SafeConsole(Console):
    """A rich Console whose printed text never carries a control character to the terminal.

    Values are escaped where they are added (:func:`shown`, so tables measure what is shown); this is
    the net under every print: rich's own styles are not part of the text and are unaffected.
    """

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and _UNSAFE.search(segment.text):
                yield Segment(shown(segment.text), segment.style)
            else:
                yield segment


#: soft_wrap: a one-line message stays one line when stdout is not a terminal (scripts, CI logs).
err = SafeConsole(stderr=True, soft_wrap=True)
out = SafeConsole(soft_wrap=True)

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
    from xlcrm.outputs import collect_kept

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
    from xlcrm import fileperm
    from xlcrm.schema import load_schema

    schema = load_schema(config)
    fileperm.configure(schema.settings, str(schema.config_path or "xlcrm.toml"))
    return schema


def narrow_table(title: str | None = None) -> Table:
    """A table that stays readable in an 80-column terminal: no rules, two spaces between columns, so
    the width goes to the text (a bold header row tells the columns apart)."""
    from rich.table import Table

    return Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False,
                 header_style="bold")


def add_whole_column(table: Table, header: str, values: Iterable[str], *, justify: str = "left") -> None:
    """A column whose cells are never cut or wrapped (file names, counts): the other columns give way."""
    from rich.cells import cell_len

    width = max((cell_len(v) for v in values), default=0)
    table.add_column(header, no_wrap=True, min_width=max(width, cell_len(header)),
                     justify=justify)  # type: ignore[arg-type]


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
