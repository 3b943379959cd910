"""What xlcrm prints to a terminal: cell text with its control characters written out, and tables that
stay readable in 80 columns. The CLI and the demo print through these."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

if TYPE_CHECKING:
    from rich.table import Table

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
