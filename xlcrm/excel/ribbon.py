"""Entry point of every ribbon click: ``dispatch(action, book=None, **kw)``.

The add-in's VBA runs, for a click on the button with id ``X``::

    import xlcrm.excel.ribbon as r; r.dispatch('X', query_hex='...')

in a fresh Python process (xlwings RunPython).  The search text travels as hex of its UTF-16 code
units (see ``vba/RibbonMyAddin.bas``), so no quote, Japanese character or shell metacharacter can break
that command line; :func:`decode_query` turns it back into text.

Whatever goes wrong becomes a plain message box: an :class:`~xlcrm.errors.XlcrmError` shows its one
line; anything unexpected shows a short apology and the path of a log file holding the traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import traceback
from pathlib import Path

from xlcrm.errors import XlcrmError
from xlcrm.excel.actions import ACTIONS, Context, read_meta, workbook_lang
from xlcrm.excel.adapter import WorkbookAdapter
from xlcrm.excel.conf import KEY_MASTER, KEY_SCHEMA, lookup
from xlcrm.schema import DEFAULT_SCHEMA, load_schema
from xlcrm.store import db

#: Control ids (customUI14.xml) that are buttons with an action; the search box is not one.
BUTTON_IDS = tuple(ACTIONS)
SEARCH_BOX_ID = "search_box"
LOG_NAME = "xlcrm-addin.log"

_UNEXPECTED = {
    "ja": "予期しない問題が起きたため「{action}」を実行できませんでした。管理者に次のファイルを送ってください: {log}",
    "en": "\"{action}\" could not run because of an unexpected problem. Please send this file to the admin: {log}",
}
_UNKNOWN = {
    "ja": "このボタン（{action}）はこのバージョンの xlcrm にありません。管理者に xlcrm の更新を依頼してください。",
    "en": "This button ({action}) is not known to this version of xlcrm; ask the admin to update xlcrm.",
}


def command_for(action: str, query: str = "") -> str:
    """The Python statement the VBA builds for a click (mirrors ``XlcrmCommand`` in the .bas file)."""
    return f"import xlcrm.excel.ribbon as r; r.dispatch('{action}', query_hex='{encode_query(query)}')"


def encode_query(text: str) -> str:
    """What the VBA's ``HexUtf16`` produces: 4 upper-case hex digits per UTF-16 code unit."""
    return text.encode("utf-16-be").hex().upper()


def decode_query(hex_text: str) -> str:
    if not hex_text:
        return ""
    if len(hex_text) % 4 or any(ch not in "0123456789abcdefABCDEF" for ch in hex_text):
        raise XlcrmError("the search text did not arrive intact from Excel; type it again")
    return bytes.fromhex(hex_text).decode("utf-16-be", errors="replace")


def resolve_master(book: WorkbookAdapter, *, env: dict[str, str] | None = None) -> tuple[Path | None, str]:
    """Where the master is, and where that came from.

    Order: ``XLCRM_MASTER`` in the environment; ``xlcrm.conf`` beside the workbook, then the user's
    (written by ``xlcrm addin install --master``); a ``master`` row in the workbook's meta sheet; the
    open workbook itself when it is a master (its database sits beside it).
    """
    env = dict(os.environ) if env is None else env
    if env.get(KEY_MASTER):
        return Path(env[KEY_MASTER]), "environment"
    found = lookup(KEY_MASTER, book.path)
    if found:
        return Path(found), "xlcrm.conf"
    meta = read_meta(book).get("master")
    if meta:
        return Path(meta), "meta"
    if book.path is not None and db.db_path_for(book.path).exists():
        return book.path, "workbook"
    return None, ""


def load_context(book: WorkbookAdapter, *, query: str = "", master: Path | None = None,
                 today: dt.date | None = None) -> Context:
    """Schema (the admin's ``xlcrm.toml`` beside the master, if any), master path and query."""
    source = "argument"
    if master is None:
        master, source = resolve_master(book)
    config = lookup(KEY_SCHEMA, book.path)
    if config is None and master is not None and (Path(master).parent / "xlcrm.toml").is_file():
        config = str(Path(master).parent / "xlcrm.toml")
    schema = load_schema(config) if config else DEFAULT_SCHEMA
    return Context(schema, master, query, today, master_source=source)


def run(action: str, book: WorkbookAdapter, ctx: Context) -> str | None:
    """Run one action and show its message; raises what the action raises."""
    handler = ACTIONS.get(action)
    if handler is None:
        lang = workbook_lang(book, ctx.schema)
        raise XlcrmError(_UNKNOWN[lang].format(action=action))
    message = handler(book, ctx)
    book.save()
    if message:
        book.message(message)
    return message


def dispatch(action: str, book: WorkbookAdapter | None = None, *, query_hex: str = "", query: str | None = None,
             master: Path | None = None, today: dt.date | None = None) -> str | None:
    """Run ribbon ``action`` on ``book`` (default: the Excel workbook that clicked), never raising.

    Returns the message shown (for tests and the CLI).  Errors are shown, not raised: a traceback in a
    message box tells a salesperson nothing.
    """
    if book is None:
        try:
            from xlcrm.excel.xlwings_adapter import XlwingsBook

            book = XlwingsBook.caller()
        except Exception as exc:  # no Excel to show a box in: xlwings shows what we print to stderr
            print(f"xlcrm: cannot reach the Excel workbook ({type(exc).__name__}: {exc})", file=sys.stderr)
            raise SystemExit(1) from None
    lang = "ja"
    try:
        text = query if query is not None else decode_query(query_hex)
        ctx = load_context(book, query=text, master=master, today=today)
        lang = workbook_lang(book, ctx.schema)
        return run(action, book, ctx)
    except XlcrmError as exc:
        return _show(book, str(exc))
    except Exception:
        log = write_log(action)
        return _show(book, _UNEXPECTED.get(lang, _UNEXPECTED["ja"]).format(action=action, log=log))


def _show(book: WorkbookAdapter, text: str) -> str:
    try:
        book.message(text, error=True)
    except Exception:  # the box itself failed (Excel busy): stderr reaches xlwings' own error box
        print(text, file=sys.stderr)
    return text


def write_log(action: str) -> Path:
    """Append the current traceback to a log file in the temp folder and return its path."""
    path = Path(tempfile.gettempdir()) / LOG_NAME
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"--- {dt.datetime.now().isoformat(timespec='seconds')} action={action} "
                     f"python={sys.version.split()[0]}\n")
            fh.write(traceback.format_exc())
    except OSError:
        pass
    return path
