"""The one place xlcrm writes .xlsx files (XlsxWriter).

Why XlsxWriter: it streams cell records straight into XML without building an object tree, so it is
several times faster than openpyxl on large outputs, its XML is close to what Excel itself writes (no
repair prompts), and given a fixed ``created`` time its output is byte-for-byte reproducible, which lets
a test compare the committed templates with what the generator produces.  ``constant_memory`` mode is
not used: XlsxWriter refuses ``add_table`` there (every entity sheet is a table), it is no faster
(8.9 s vs 9.2 s for 100,000 customers) and writes inline strings unlike Excel.

XlsxWriter's own per-cell path (a namedtuple per cell until ``close()``, then generic XML helpers) makes
the master workbook (3.8 million cells) a 22 s write.  :func:`write_table` therefore renders table
rows straight into ``<sheetData>`` XML and XlsxWriter still writes everything else; the result is
byte-for-byte what XlsxWriter writes cell by cell (:mod:`xlcrm.xlsx.sheetxml`, tested member by member
against ``XlcrmWorkbook(fast_tables=False)``).  Figures: ``benchmarks/bench_writer.py`` and the
writer section of ``benchmarks/README.md`` (master 4-6 s instead of 21-23 s, half the memory).

What this module adds on top of XlsxWriter:

* :class:`XlcrmWorksheet` writes the ``imeMode`` attribute of ``<dataValidation>`` (XlsxWriter has no
  option for it), so a Japanese Excel switches the input method per column: katakana for フリガナ,
  half-width for phone numbers.  Attributes follow the order of ECMA-376 ``CT_DataValidation``.
* Text is data, never a formula.  Strings are always written with ``write_string`` (never the
  auto-detecting ``write``), the workbook's ``strings_to_*`` conversions are off, and a string that
  Excel would take for a formula if someone pressed F2+Enter on it (leading ``= + - @``, also after
  spaces, or a leading tab/CR) gets the ``quotePrefix`` cell style: Excel's own way of marking "typed
  with a leading apostrophe".  The text itself is never altered (no apostrophe or space prepended), so
  values round-trip unchanged through read -> merge -> write; see :func:`safe_text` and
  :func:`looks_like_formula`.
* :func:`atomic_write`: a temp file in the target's directory, fsync, ``os.replace``.
* :func:`write_table`: one Excel table per sheet with typed cells, rendered as XML (above).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import io
import math
import numbers
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, NoReturn, get_args

import xlsxwriter
from xlsxwriter.exceptions import FileCreateError, FileSizeError, OverlappingRange
from xlsxwriter.format import Format
from xlsxwriter.utility import (
    _datetime_to_excel_datetime,
    _utf16_len,
    quote_sheetname,
    xl_col_to_name,
    xl_range,
    xl_rowcol_to_cell,
)
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import CellFormulaTuple, Worksheet, convert_range_args

from xlcrm import fileperm
from xlcrm.errors import LockedError, XlcrmError
from xlcrm.schema import Column, Entity, ImeMode, Lang
from xlcrm.xlsx import sheetxml
from xlcrm.xlsx.cells import column_index
from xlcrm.xlsx.crypto import encrypt_bytes

#: Excel's last row (1-based 1,048,576); a table needs its header row too.
MAX_ROWS = 1_048_576
#: Excel's limit for the text of one cell.
MAX_TEXT = 32_767

IME_MODES: frozenset[str] = frozenset(get_args(ImeMode))

#: The XlsxWriter versions whose internals xlcrm.xlsx.sheetxml was checked against (byte for byte, in the
#: tests); with any other version tables are written cell by cell through XlsxWriter alone.
FAST_XLSXWRITER = xlsxwriter.__version__.startswith("3.3.")

#: Default look of every entity table; the header cells are also formatted explicitly (below) because
#: LibreOffice does not render table styles and staff may open the workbook there.
TABLE_STYLE = "Table Style Medium 2"
HEADER_FILL = "#4472C4"  # Medium 2's header colour (Office theme accent 1)
SYSTEM_HEADER_FILL = "#D9D9D9"
SYSTEM_HEADER_FONT = "#404040"
SYSTEM_CELL_FILL = "#F2F2F2"
DATE_FORMAT = "yyyy/mm/dd"

#: XlsxWriter options for every xlcrm workbook: no guessing of numbers, formulas or URLs from text.
WORKBOOK_OPTIONS: dict[str, Any] = {
    "strings_to_numbers": False,
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "remove_timezone": True,
    "default_date_format": DATE_FORMAT,
    # The package's parts are assembled in memory, never in temp files of their own: a killed run
    # leaves no plain copy of its sheets in the temp folder, and an encrypted workbook is sealed
    # before anything of it reaches the disk (see ``sealed``).
    "in_memory": True,
}

_FORMULA_START = frozenset("=+-@＝＋－＠")
_CONTROL_START = frozenset("\t\r\n")
_LEADING_SPACE = " \u3000\t\r\n"
# First characters that make a string worth a closer look (one set lookup per written string).
_SUSPECT_START = _FORMULA_START | _CONTROL_START | frozenset(" \u3000")


# --- text ------------------------------------------------------------------------------------------

def looks_like_formula(text: str) -> bool:
    """Would Excel (or a CSV consumer) treat this text as a formula when it is re-entered?

    True for a leading ``= + - @`` (also their full-width forms, which a Japanese Excel accepts as
    formula starts), also after leading spaces, and for a leading tab or carriage return (the classic
    CSV-injection prefixes).
    """
    if not text:
        return False
    if text[0] in _CONTROL_START:
        return True
    stripped = text.lstrip(_LEADING_SPACE)
    return bool(stripped) and stripped[0] in _FORMULA_START


def safe_text(value: Any) -> str:
    """The text to store for ``value``; never a formula because xlcrm only ever writes it as a string.

    The text is returned unchanged (no apostrophe is prepended): neutralisation is the cell's
    ``quotePrefix`` style, which :func:`write_text` sets when :func:`looks_like_formula` is true.  That
    keeps a value identical after a read/write round trip, which merge relies on to see "unchanged".
    Non-string values get their plain text form (integral floats without ``.0``, dates in ISO form).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)


def display_width(text: str) -> int:
    """Width in Excel character units: East Asian wide characters count twice."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def fit_text(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` UTF-16 units (Excel's unit for validation titles and messages)."""
    if len(text.encode("utf-16-le")) // 2 <= limit:
        return text
    out = []
    used = 0
    for ch in text:
        units = 2 if ord(ch) > 0xFFFF else 1
        if used + units > limit - 1:
            break
        out.append(ch)
        used += units
    return "".join(out) + "…"


# --- workbook and worksheet ------------------------------------------------------------------------

#: Functions of Excel 2007 that XlsxWriter's formula preparation leaves as they are.
_PLAIN_FUNCTIONS = frozenset({"IF", "IFERROR", "AND", "OR", "NOT", "COUNTIF", "COUNTIFS", "ROW", "LEN", "SUM"})
_FUNCTION_NAME = re.compile(r"([A-Z][A-Z0-9.]*)\(")


class XlcrmWorksheet(Worksheet):
    """An XlsxWriter worksheet whose data validations take an ``ime_mode`` option.

    ``data_validation(..., {"validate": "any", "ime_mode": "halfAlpha"})`` is accepted even without an
    input message (XlsxWriter drops an "any" validation without one), because the IME mode alone is
    worth a validation.  Invalid options raise ``ValueError`` instead of XlsxWriter's warning and -2:
    they are programming errors and must not produce a workbook silently missing a rule.
    """

    def __init__(self) -> None:
        super().__init__()
        # XlsxWriter records every table cell, (row, col) -> range, only to refuse overlapping tables
        # and merges.  xlcrm writes one table per sheet at A1 and merges nothing; at 100,000 rows x 21
        # columns that map would cost more memory than the cells themselves.
        self.table_cells = _NoCellMap()
        #: Rows write_table() rendered as XML (see xlcrm.xlsx.sheetxml); None while there are none.
        self._region: sheetxml.Region | None = None
        self._fast_tables = False

    def write_plain_formula(self, row: int, col: int, formula: str, cell_format: Format | None,
                            value: Any) -> None:
        """``write_formula`` for a formula xlcrm builds itself from functions every Excel knows (IF,
        COUNTIF, COUNTIFS, ROW ...): stored exactly as XlsxWriter stores it, without the 29 regular
        expressions that prefix future and dynamic-array functions (there are none), which are most of
        the cost of the thousands of such cells of a large workbook."""
        if self.constant_memory or formula.startswith("{") \
                or not _PLAIN_FUNCTIONS.issuperset(_FUNCTION_NAME.findall(formula)):
            self.write_formula(row, col, formula, cell_format, value)
            return
        if self._check_dimensions(row, col):
            raise ValueError(f"cell ({row}, {col}) is outside the sheet")
        self.table[row][col] = CellFormulaTuple(formula.removeprefix("="), cell_format, value)

    def _write_sheet_data(self) -> None:
        if self._region is None:
            super()._write_sheet_data()
        else:
            sheetxml.write_sheet_data(self)

    @convert_range_args
    def add_table(self, first_row: int, first_col: int, last_row: int, last_col: int,  # type: ignore[override]
                  options: dict[str, Any] | None = None) -> int:
        """XlsxWriter's add_table without its per-cell loop over the whole range.

        That loop only records cells in ``table_cells`` (forgotten here, see ``__init__``) and checks
        merged ranges, which is done here by rectangle; at 100,000 rows x 21 columns it took a second.
        Tables with data, formulas or a total row, which write into the range, go the original way.
        """
        opts = options or {}
        columns = opts.get("columns") or []
        if first_row > last_row:
            first_row, last_row = last_row, first_row
        if first_col > last_col:
            first_col, last_col = last_col, first_col
        if (not self._fast_tables or last_row - first_row < 2 or "data" in opts or opts.get("total_row")
                or any(c and (c.get("formula") or c.get("total_function") or c.get("total_string"))
                       for c in columns)):
            return super().add_table(first_row, first_col, last_row, last_col, options)
        if self._check_dimensions(last_row, last_col, True, True):
            return -1
        cell_range = xl_range(first_row, first_col, last_row, last_col)
        inside = sorted(key for key in self.merged_cells
                        if first_row <= key[0] <= last_row and first_col <= key[1] <= last_col)
        if inside:
            raise OverlappingRange(f"Table range '{cell_range}' overlaps previous merge range "
                                   f"'{self.merged_cells[inside[0]]}'.")
        before = len(self.tables)
        result = super().add_table(first_row, first_col, first_row + 1, last_col, options)
        if result != 0 or len(self.tables) != before + 1:
            return result
        table = self.tables[-1]
        table["range"] = cell_range
        table["a_range"] = cell_range  # no total row on this path
        if "autofilter" in table:
            table["autofilter"] = cell_range
            for col in range(first_col, last_col + 1):
                self.filter_cells[(first_row, col)] = ("table", cell_range)
        return 0

    def data_validation(  # type: ignore[override]
        self,
        first_row: int,
        first_col: int,
        last_row: int,
        last_col: int,
        options: Mapping[str, Any] | None = None,
    ) -> int:
        opts = dict(options or {})
        ime = opts.pop("ime_mode", None)
        if ime is not None and ime not in IME_MODES:
            raise ValueError(f"unknown ime_mode {ime!r}; use one of {sorted(IME_MODES)}")
        placeholder = False
        if (opts.get("validate") in ("any", "any value") and opts.get("input_title") is None
                and opts.get("input_message") is None):
            # XlsxWriter skips such a validation; keep it for the IME mode.
            opts["input_message"] = ""
            placeholder = True
        before = len(self.validations)
        result = super().data_validation(first_row, first_col, last_row, last_col, opts)
        if result != 0 or len(self.validations) != before + 1:
            raise ValueError(f"{self.name}: XlsxWriter refused data validation {options!r} "
                             f"(code {result}); see the warning above")
        stored = self.validations[-1]
        if placeholder:
            del stored["input_message"]
        if ime is not None and ime != "noControl":
            stored["ime_mode"] = ime
        return 0

    def _write_data_validation(self, options: dict[str, Any]) -> None:
        # Same element as XlsxWriter writes, plus imeMode, in the schema's attribute order:
        # type, errorStyle, imeMode, operator, allowBlank, showDropDown, showInputMessage,
        # showErrorMessage, errorTitle, error, promptTitle, prompt, sqref.
        if options.get("multi_range"):
            sqref = options["multi_range"]
        else:
            parts = []
            for row_first, col_first, row_last, col_last in options["cells"]:
                r1, r2 = sorted((row_first, row_last))
                c1, c2 = sorted((col_first, col_last))
                parts.append(_xl_range(r1, c1, r2, c2))
            sqref = " ".join(parts)

        attributes: list[tuple[str, Any]] = []
        kind = options["validate"]
        if kind != "none":
            attributes.append(("type", kind))
        if options.get("error_type") == 1:
            attributes.append(("errorStyle", "warning"))
        elif options.get("error_type") == 2:
            attributes.append(("errorStyle", "information"))
        if options.get("ime_mode"):
            attributes.append(("imeMode", options["ime_mode"]))
        if kind != "none" and options["criteria"] != "between":
            attributes.append(("operator", options["criteria"]))
        if options["ignore_blank"]:
            attributes.append(("allowBlank", 1))
        if not options["dropdown"]:
            attributes.append(("showDropDown", 1))
        if options["show_input"]:
            attributes.append(("showInputMessage", 1))
        if options["show_error"]:
            attributes.append(("showErrorMessage", 1))
        for opt, attr in (("error_title", "errorTitle"), ("error_message", "error"),
                          ("input_title", "promptTitle"), ("input_message", "prompt")):
            if options.get(opt):
                attributes.append((attr, options[opt]))
        attributes.append(("sqref", sqref))

        if kind == "none":
            self._xml_empty_tag("dataValidation", attributes)
            return
        self._xml_start_tag("dataValidation", attributes)
        self._write_formula_1(options["value"])
        if options["maximum"] is not None:
            self._write_formula_2(options["maximum"])
        self._xml_end_tag("dataValidation")


class _NoCellMap(dict):  # type: ignore[type-arg]
    """A mapping that forgets what is stored in it (see ``XlcrmWorksheet.__init__``)."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


def _xl_range(r1: int, c1: int, r2: int, c2: int) -> str:
    a = xl_rowcol_to_cell(r1, c1)
    b = xl_rowcol_to_cell(r2, c2)
    return a if a == b else f"{a}:{b}"


class XlcrmWorkbook(Workbook):
    """An XlsxWriter workbook with xlcrm's options, worksheet class, cached formats and fixed time.

    ``created`` goes into the document properties (both created and modified); with the same inputs
    and the same ``created`` the output is identical, member by member.  Leaving it ``None`` stamps the
    current UTC time.
    """

    worksheet_class = XlcrmWorksheet

    def __init__(self, target: str | os.PathLike[str] | IO[bytes], *, created: dt.datetime | None = None,
                 title: str = "", author: str = "", comments: str = "", fast_tables: bool = True) -> None:
        super().__init__(os.fspath(target) if isinstance(target, os.PathLike) else target,
                         dict(WORKBOOK_OPTIONS))
        #: False writes tables cell by cell through XlsxWriter alone: the reference the fast path is
        #: compared with in the tests.  The fast path relies on XlsxWriter 3.3's internals.
        self.fast_tables = fast_tables and FAST_XLSXWRITER
        # Formats whose style index is fixed at creation (the default format); the others get theirs
        # in the order close() meets them, see xlcrm.xlsx.sheetxml.
        self._fixed_xf = {id(f) for f in self.formats if f.xf_index is not None}
        self._xf_guessed = False
        self._deflate_pool: ThreadPoolExecutor | None = None
        self._sst_splice: tuple[int, sheetxml.Stream] | None = None
        self.created = created or dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
        if self.created.tzinfo is not None:
            self.created = self.created.astimezone(dt.UTC).replace(tzinfo=None)
        props: dict[str, Any] = {"created": self.created}
        if title:
            props["title"] = title
        if author:
            props["author"] = author
        if comments:
            props["comments"] = comments
        self.set_properties(props)
        self._format_cache: dict[tuple[tuple[str, Any], ...], Format] = {}

    def add_worksheet(self, name: str | None = None, worksheet_class: Any = None) -> XlcrmWorksheet:
        ws = super().add_worksheet(name, worksheet_class or XlcrmWorksheet)
        assert isinstance(ws, XlcrmWorksheet)
        ws._fast_tables = self.fast_tables
        return ws

    def _get_packager(self) -> Any:
        # Also without fast tables: FastPackager's shared strings never pass text through as rich XML.
        return sheetxml.FastPackager() if FAST_XLSXWRITER else super()._get_packager()

    def _deflater(self) -> ThreadPoolExecutor | None:
        """The one worker thread that deflates rendered rows while the next ones are rendered.

        None when this workbook is packaged by XlsxWriter itself (reference mode, ZIP64).
        """
        if not self.fast_tables or self.allow_zip64:
            return None
        if self._deflate_pool is None:
            self._deflate_pool = ThreadPoolExecutor(1, thread_name_prefix="xlcrm-deflate")
        return self._deflate_pool

    def _store_workbook(self) -> None:
        # XlsxWriter 3.3's Workbook._store_workbook, but the zip container is written by
        # sheetxml.write_package, which joins the pieces the worker deflated in advance.
        pool = self._deflater()
        if pool is None:
            super()._store_workbook()
            return
        out = open(self.filename, "wb") if isinstance(self.filename, str) else self.filename  # noqa: SIM115
        xml_files: list[tuple[Any, str, bool]] = []
        try:
            packager = self._get_packager()
            if not self.worksheets():
                self.add_worksheet()
            if self.worksheet_meta.activesheet == 0:
                self.worksheets_objs[0].selected = 1
                self.worksheets_objs[0].hidden = 0
            for sheet in self.worksheets():
                if sheet.index == self.worksheet_meta.activesheet:
                    sheet.active = 1
            if self.vba_project:
                for sheet in self.worksheets():
                    if sheet.vba_codename is None:
                        sheet.set_vba_name()
            self._prepare_sst_string_data()
            self._prepare_vml()
            self._prepare_defined_names()
            self._prepare_drawings()
            self._add_chart_data()
            self._prepare_tables()
            self._prepare_metadata()
            packager._add_workbook(self)
            packager._set_tmpdir(self.tmpdir)
            packager._set_in_memory(self.in_memory)
            xml_files = packager._create_package()
            splices: dict[str, tuple[int, sheetxml.Stream]] = {}
            number = 0
            for sheet in self.worksheets():
                if not sheet.is_chartsheet:
                    number += 1
                    if getattr(sheet, "_splice", None) is not None:
                        splices[f"xl/worksheets/sheet{number}.xml"] = sheet._splice
            if self._sst_splice is not None:
                splices["xl/sharedStrings.xml"] = self._sst_splice
            sheetxml.write_package(out, xml_files, splices)
        finally:
            if out is not self.filename:
                out.close()
            pool.shutdown()
            self._deflate_pool = None

    def _prepare_sst_string_data(self) -> None:
        # XlsxWriter sorts the strings by index; they were inserted in index order, so the dict's own
        # order is already it (1.2 million strings in the master: a sort with a Python key function).
        table = self.str_table
        strings = list(table.string_table) if self.fast_tables else []
        if not strings or table.string_table[strings[-1]] != len(strings) - 1:
            super()._prepare_sst_string_data()
            return
        table.string_array = strings
        table.string_table = {}

    def _prepare_tables(self) -> None:
        # The last step before the parts are written: settle the rendered table rows first.
        if self._xf_guessed:
            sheetxml.finalize(self, self._fixed_xf)
        super()._prepare_tables()

    def fmt(self, **props: Any) -> Format:
        """A cell format with these XlsxWriter properties, shared by every caller that asks for it."""
        key = tuple(sorted(props.items()))
        f = self._format_cache.get(key)
        if f is None:
            f = self._format_cache[key] = self.add_format(props)
        return f


def open_workbook(path: str | os.PathLike[str] | IO[bytes], *, created: dt.datetime | None = None,
                  title: str = "", author: str = "") -> XlcrmWorkbook:
    """A new workbook to fill and ``close()``; write to a temp path from :func:`atomic_write`."""
    return XlcrmWorkbook(path, created=created, title=title, author=author)


def close_workbook(wb: XlcrmWorkbook) -> None:
    """Close (write) ``wb``, turning XlsxWriter's exceptions into a one-line refusal."""
    try:
        wb.close()
    except (OSError, FileCreateError) as exc:
        cause = exc.args[0] if isinstance(exc, FileCreateError) and exc.args else exc
        reason = getattr(cause, "strerror", None) or cause
        raise XlcrmError(f"cannot write the workbook: {reason}; check free space and permissions",
                         path=str(wb.filename)) from None
    except FileSizeError:
        raise XlcrmError("the workbook would exceed 4 GB, more than Excel can open; split the data",
                         path=str(wb.filename)) from None


# --- atomic writes ---------------------------------------------------------------------------------

def check_file_name(path: Path) -> None:
    """Refuse a name no file system takes (255 bytes; the temp file beside it adds 14) in one line."""
    if len(path.name.encode("utf-8", "surrogateescape")) > 255 - 14:
        raise XlcrmError(f"the file name is too long ({len(path.name)} characters); choose a shorter name",
                         path=str(path))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, private: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` atomically.

    The temp file sits in the same directory (``os.replace`` is only atomic within one file system)
    and its name does not end in ``.xlsx``, so a folder scan never mistakes a leftover for a team
    workbook.  If the body raises, the temp file is removed and the old file is untouched.  The new
    file keeps the old file's permission bits; a new one holding personal data (``private``) is
    readable by its owner only unless xlcrm.toml says otherwise (:mod:`xlcrm.fileperm`), any other
    gets the umask's default.  A caller that commits something else in the same step (the master
    database) calls :func:`settle` on the temp file first, so that only the rename is left after its
    commit.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise XlcrmError(f"folder {parent} does not exist; create it first", path=str(target))
    check_file_name(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise XlcrmError(f"cannot create a file in {parent} ({exc.strerror}); check the folder, its "
                         "permissions and free space", path=str(target)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    _private_temps[tmp] = private
    try:
        yield tmp
        if tmp in _private_temps:
            settle(tmp, target)
        try:
            os.replace(tmp, target)
        except PermissionError:
            raise LockedError("cannot replace the file: it is open in another program (Excel?) or the "
                              "folder is read-only; close it and try again", path=str(target)) from None
        except OSError as exc:
            raise XlcrmError(f"cannot replace the file ({exc.strerror}); check the folder",
                             path=str(target)) from None
        _fsync_dir(parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not exc.filename:
            exc.filename = str(target)  # (a full disk met while closing a zip names no file)
        if isinstance(exc, XlcrmError) and exc.path == str(tmp):
            raise exc.about(str(target)) from None  # the file the person asked for, not its temp file
        raise
    finally:
        _private_temps.pop(tmp, None)


#: Temp files of :func:`atomic_write` not settled yet -> whether they hold personal data.
_private_temps: dict[Path, bool] = {}


def settle(tmp: Path, target: str | os.PathLike[str]) -> None:
    """Give a finished temp file of :func:`atomic_write` its permissions and flush it to the disk.

    Everything that can still fail before the rename (a full disk, a file system refusing the sync)
    fails here, with one line; afterwards only the rename is left.
    """
    private = _private_temps.pop(tmp, True)
    try:
        try:
            mode = Path(target).stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = fileperm.new_file_mode(private)
        with open(tmp, "rb") as fh:  # fsync works on a read-only descriptor: the mode may be 0444
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except OSError as exc:
        raise XlcrmError(f"cannot write the file ({exc.strerror}); check free space and permissions",
                         path=str(target)) from None


@contextlib.contextmanager
def sealed(tmp: Path, password: str | None) -> Iterator[Path | io.BytesIO]:
    """Where to write a workbook bound for ``tmp`` (a temp file of :func:`atomic_write`).

    Without a password that is ``tmp`` itself.  With one it is a buffer in memory: on leaving the
    block its bytes are encrypted (Excel's own encryption, :mod:`xlcrm.xlsx.crypto`) and only the sealed
    bytes are written to ``tmp``, so no plain copy of the workbook ever reaches the disk, not even
    for the moment a killed process would leave behind.
    """
    if not password:
        yield tmp
        return

    buf = io.BytesIO()
    yield buf
    data = encrypt_bytes(buf.getvalue(), password)
    buf.close()
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise XlcrmError(f"cannot write the workbook: {exc.strerror}; check free space and permissions",
                         path=str(tmp)) from None


def stage_beside(path: str | os.PathLike[str]) -> Path:
    """An empty temp file beside ``path``, named like :func:`atomic_write`'s (which
    :func:`remove_leftovers` knows), for a file that must take its place only after something else
    has committed (a handout, a handover book): written there, then ``os.replace``d."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise XlcrmError(f"folder {parent} does not exist; create it first", path=str(target))
    if len(target.name.encode("utf-8", "surrogateescape")) > 255 - 2 * 14:  # its own temp file's, too
        raise XlcrmError(f"the file name is too long ({len(target.name)} characters); choose a shorter name",
                         path=str(target))
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        try:  # what atomic_write gives the file it replaces: the old file's bits, else a new file's
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = fileperm.new_file_mode(True)
        os.chmod(name, mode)
    except OSError as exc:
        raise XlcrmError(f"cannot create a file in {parent} ({exc.strerror}); check the folder, its "
                         "permissions and free space", path=str(target)) from None
    return Path(name)


def remove_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files :func:`atomic_write` left beside ``path`` when its process was killed.

    Only for a caller holding the lock of everything written to ``path`` (``lock.master_lock``): then
    no other process is writing one of them now.  A killed first merge leaves its whole database image
    (hundreds of MB) behind otherwise.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    removed = []
    for leftover in parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.is_dir() and not leftover.is_symlink():  # a killed merge's spool of validated inputs
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed.append(leftover)
    return removed


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; directories cannot be opened on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- tables ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableColumn:
    """How one table column looks and what it accepts; built from the schema by :func:`entity_columns`.

    ``labels`` maps stored canonical values to what the sheet shows (choice columns).  ``validation``
    holds XlsxWriter ``data_validation`` options (plus ``ime_mode``), applied to the data rows and the
    ``validation_rows`` empty rows below them.  ``locked`` matters only on a protected sheet.
    """

    header: str
    width: float = 12
    num_format: str | None = None
    labels: Mapping[str, str] | None = None
    system: bool = False
    locked: bool = True
    validation: Mapping[str, Any] | None = None
    key: str = ""


def column_width(col: TableColumn) -> float:
    """Schema width, widened so the header and its filter button stay readable."""
    return max(col.width, display_width(col.header) * 1.15 + 3.5)


def entity_columns(entity: Entity, lang: Lang,
                   validations: Mapping[str, Mapping[str, Any]] | None = None) -> list[TableColumn]:
    """The table columns of ``entity``: labels, widths and formats from the schema, in schema order."""
    validations = validations or {}
    out = []
    for c in entity.columns:
        out.append(TableColumn(
            header=c.label(lang),
            width=c.width,
            num_format=c.number_format,
            labels=_choice_labels(c, lang),
            system=c.system,
            validation=validations.get(c.key),
            key=c.key,
        ))
    return out


def _choice_labels(c: Column, lang: Lang) -> dict[str, str] | None:
    if c.type != "choice":
        return None
    return {ch.key: ch.label(lang) for ch in c.choices}


@dataclass
class _CellFormats:
    plain: Format | None
    quoted: Format
    date: Format
    number: Format | None


def _column_formats(wb: XlcrmWorkbook, col: TableColumn) -> tuple[Format | None, _CellFormats]:
    base: dict[str, Any] = {}
    if col.num_format:
        base["num_format"] = col.num_format
    if col.system:
        base["bg_color"] = SYSTEM_CELL_FILL
    if not col.locked:
        base["locked"] = False
    column_fmt = wb.fmt(**base) if base else None
    date_fmt = dict(base)
    if not (col.num_format and _is_date_format(col.num_format)):
        date_fmt["num_format"] = DATE_FORMAT
    number_fmt = dict(base)
    if col.num_format == "@":
        # A number that reaches a text column (e.g. a legacy numeric phone) stays a number, shown as is.
        number_fmt.pop("num_format")
    cells = _CellFormats(
        plain=column_fmt,
        quoted=wb.fmt(**base, quote_prefix=True),
        date=wb.fmt(**date_fmt),
        number=wb.fmt(**number_fmt) if number_fmt else None,
    )
    return column_fmt, cells


def _is_date_format(num_format: str) -> bool:
    f = num_format.lower()
    return any(t in f for t in ("yy", "dd", "mm/", "/mm", "m/d", "ge"))


def write_table(
    wb: XlcrmWorkbook,
    ws: XlcrmWorksheet,
    name: str,
    columns: Sequence[TableColumn],
    rows: Iterable[Sequence[Any]],
    *,
    validation_rows: int = 0,
    style: str = TABLE_STYLE,
    freeze: bool = True,
) -> int:
    """Write ``rows`` (values in ``columns`` order) as the Excel table ``name`` starting at A1.

    Returns the number of data rows.  Value handling, by Python type: ``None``, ``""`` and NaN stay
    blank; ``str`` is mapped through ``labels`` (choice key -> label) and written as a string (never a
    formula; ``quotePrefix`` when it looks like one); ``int``/``float``/``Decimal`` as numbers;
    ``date``/``datetime`` as Excel dates in the column's date format.  Validation and the column
    format cover ``validation_rows`` empty rows below the data, where staff will type.
    """
    ncols = len(columns)
    if ncols == 0:
        raise ValueError(f"{name}: a table needs at least one column")
    seen: dict[str, str] = {}
    for col in columns:
        folded = col.header.casefold()
        if folded in seen:
            raise XlcrmError(f"sheet {ws.name}: columns {seen[folded]!r} and {col.header!r} have the same "
                             "name to Excel, which ignores case in table headers; rename one (xlcrm.toml)")
        seen[folded] = col.header
    col_formats: list[_CellFormats] = []
    for c, col in enumerate(columns):
        column_fmt, cells = _column_formats(wb, col)
        col_formats.append(cells)
        ws.set_column(c, c, column_width(col), column_fmt)

    header_fmt = wb.fmt(bold=True, font_color="#FFFFFF", bg_color=HEADER_FILL, valign="vcenter",
                        border=1, border_color="#FFFFFF")
    system_header_fmt = wb.fmt(bold=True, font_color=SYSTEM_HEADER_FONT, bg_color=SYSTEM_HEADER_FILL,
                               valign="vcenter", border=1, border_color="#FFFFFF")
    if _fast_path(ws, ncols):
        header = {c: system_header_fmt if col.system else header_fmt for c, col in enumerate(columns)}
        n = _write_rows_fast(wb, ws, columns, col_formats, rows, header)
    else:
        n = _write_rows(ws, columns, col_formats, rows)

    last_data = max(n, 1)  # an Excel table needs at least one (possibly empty) data row
    table_columns = []
    for col, cells in zip(columns, col_formats, strict=True):
        spec: dict[str, Any] = {"header": col.header,
                                "header_format": system_header_fmt if col.system else header_fmt}
        if cells.plain is not None:
            # Becomes the column's dataDxfId: Excel formats rows it adds to the table the same way.
            spec["format"] = cells.plain
        table_columns.append(spec)
    result = ws.add_table(0, 0, last_data, ncols - 1,
                          {"name": name, "style": style, "columns": table_columns, "autofilter": True})
    if result != 0:
        raise ValueError(f"{ws.name}: XlsxWriter refused table {name!r} (code {result})")

    last_valid = min(max(n + validation_rows, 1), MAX_ROWS - 1)
    for c, col in enumerate(columns):
        if col.validation:
            ws.data_validation(1, c, last_valid, c, col.validation)
    if freeze:
        ws.freeze_panes(1, 0)
    return n


def _fast_path(ws: XlcrmWorksheet, ncols: int) -> bool:
    # The rendered rows need a sheet of their own: one table, default row height, normal mode.
    return (getattr(ws, "_fast_tables", False) and ws._region is None and not ws.constant_memory
            and ncols <= ws.xls_colmax and sheetxml.plain_rows(ws))


# Kinds of rendered cells: the format each uses and the end of its opening tag.
_PLAIN, _QUOTED, _NUMBER, _DATE, _BOOL = range(5)
_TAILS = (' t="s"><v>', ' t="s"><v>', "><v>", "><v>", ' t="b"><v>')
_HALF_TEXT = MAX_TEXT // 2
_TAIL_CACHE = 4096
_CELL_COLS = re.compile(r'<c r="([A-Z]+)')


def _write_rows_fast(wb: XlcrmWorkbook, ws: XlcrmWorksheet, columns: Sequence[TableColumn],
                     formats: Sequence[_CellFormats], rows: Iterable[Sequence[Any]],
                     header: dict[int, Format | None]) -> int:
    """The rows as ``<row>`` XML text, the way XlsxWriter would write the same ``_write_*`` calls.

    What each value becomes is exactly :func:`_write_rows` (the per-cell reference); only the
    bookkeeping differs: strings go straight into the workbook's shared-string table, and the XML
    of every 16-row block is rendered at once.  See :mod:`xlcrm.xlsx.sheetxml` for how close() uses it.
    """
    ncols = len(columns)
    sheetxml.prewalk(wb, ws, header)
    wb._xf_guessed = True
    region = sheetxml.Region()
    style = region.style
    pool = wb._deflater()
    kind_formats: list[list[Format | None]] = [
        [f.plain for f in formats], [f.quoted for f in formats], [f.number for f in formats],
        [f.date for f in formats], [f.plain for f in formats]]
    mids: list[list[str | None]] = [[None] * ncols for _ in range(5)]

    def first(kind: int, c: int) -> str:
        # First cell of this kind in column c: settle its format (and so its style index).
        fmt = kind_formats[kind][c]
        if fmt is None and kind == _DATE:
            fmt = ws.default_date_format  # Worksheet._write_datetime
        if fmt is None:
            info = ws.col_info.get(c)
            fmt = info.column_format if info is not None else None
            region.none_cols[c] = fmt
            if fmt is not None and kind == _NUMBER:
                region.ambiguous[c] = fmt
        mid = mids[kind][c] = '"' + style(fmt) + _TAILS[kind]
        return mid

    m_plain, m_quoted, m_number, m_date = mids[:4]
    sst = ws.str_table.string_table
    sst_get = sst.get
    refs = [f'<c r="{xl_col_to_name(c)}' for c in range(ncols)]
    labels = [col.labels for col in columns]
    date_1904, no_tz = ws.date_1904, ws.remove_timezone
    day_text: dict[dt.date, str] = {}
    day_get = day_text.get
    suspect = _SUSPECT_START
    isinf = math.isinf
    date_t, datetime_t = dt.date, dt.datetime
    # Per column, the end of a cell's XML after its reference, by value (strings and dates): columns
    # with few distinct values (choices, owners, dates) skip the label, formula and shared-string
    # lookups.  A column still filling its cache at row 2,048 holds mostly distinct values; it stops.
    tails: list[dict[Any, str]] = [{} for _ in range(ncols)]
    caps = [_TAIL_CACHE] * ncols
    # Cells written one by one before the table: those the table writes over are replaced.
    earlier = {r for r, cells in ws.table.items() if cells and r >= 1}

    def edge(block: int, lo: int, hi: int) -> tuple[int, int]:
        # Other cells in the first or last block share its span (at least the header row, row 0).
        for rr in range(block * 16, block * 16 + 16):
            cols = list(ws.table.get(rr) or ()) + list(ws.comments.get(rr) or ())
            if rr == 0:
                cols += list(header)
            if cols:
                lo, hi = min(lo, *cols), max(hi, *cols)
        return lo, hi

    def render(block: int, lo: int, hi: int, rendered: list[tuple[str, str]], is_edge: bool) -> str:
        if region.first_row < 0:
            region.first_row, region.first_col, region.last_col = int(rendered[0][0]) - 1, lo, hi
        else:
            region.first_col, region.last_col = min(region.first_col, lo), max(region.last_col, hi)
        if is_edge:
            span_lo, span_hi = edge(block, lo, hi)
            span = f"{span_lo + 1}:{span_hi + 1}"
            region.edges[block] = (span, lo, hi)
        else:
            span = f"{lo + 1}:{hi + 1}"
        head = f'" spans="{span}">'
        return "".join([f'<row r="{rs}{head}{body}</row>' for rs, body in rendered])

    nstr = 0
    block_rows: list[tuple[str, str]] = []
    block = blo = bhi = -1
    pending: list[str] = []
    r = last_r = 0
    try:
        for r, values in enumerate(rows, start=1):
            if r >= MAX_ROWS or len(values) != ncols:
                _bad_row(ws, r, values, ncols)
            parts: list[str] = []
            ap = parts.append
            rs = str(r + 1)
            lo, hi = ncols, -1
            for c, v in enumerate(values):
                if v is None:
                    continue
                t = type(v)
                if t is str:
                    tail = tails[c].get(v)
                    if tail is None:
                        if not v:
                            continue
                        key = v
                        lab = labels[c]
                        if lab is not None:
                            v = lab.get(v, v)
                        if v[0] in suspect and looks_like_formula(v):
                            mid = m_quoted[c] or first(_QUOTED, c)
                        else:
                            mid = m_plain[c] or first(_PLAIN, c)
                        idx = sst_get(v)
                        if idx is None:
                            if len(v) > _HALF_TEXT and _utf16_len(v) > MAX_TEXT:
                                _too_long(ws, r, c)
                            idx = sst[v] = len(sst)
                        tail = f"{mid}{idx}</v></c>"
                        if caps[c]:
                            tails[c][key] = tail
                            caps[c] -= 1
                    nstr += 1
                    ap(f"{refs[c]}{rs}{tail}")
                elif t is int or t is float:
                    if v != v:  # NaN: blank
                        continue
                    if isinf(v):
                        raise XlcrmError(f"sheet {ws.name} cell {xl_rowcol_to_cell(r, c)}: infinite number "
                                         "cannot be stored in Excel")
                    ap(f"{refs[c]}{rs}{m_number[c] or first(_NUMBER, c)}{v:.16G}</v></c>")
                elif t is date_t:
                    tail = tails[c].get(v)
                    if tail is None:
                        day = day_get(v)
                        if day is None:
                            day = day_text[v] = f"{_datetime_to_excel_datetime(v, date_1904, no_tz):.16G}"
                        tail = f"{m_date[c] or first(_DATE, c)}{day}</v></c>"
                        if caps[c]:
                            tails[c][v] = tail
                            caps[c] -= 1
                    ap(f"{refs[c]}{rs}{tail}")
                elif t is datetime_t:
                    ap(f"{refs[c]}{rs}{m_date[c] or first(_DATE, c)}"
                       f"{_datetime_to_excel_datetime(v, date_1904, no_tz):.16G}</v></c>")
                else:
                    other = _other_value(ws, r, c, v, labels[c])
                    if other is None:
                        continue
                    kind, value = other
                    mid = mids[kind][c] or first(kind, c)
                    if kind in (_PLAIN, _QUOTED):
                        idx = sst_get(value)
                        if idx is None:
                            if len(value) > _HALF_TEXT and _utf16_len(value) > MAX_TEXT:
                                _too_long(ws, r, c)
                            idx = sst[value] = len(sst)
                        nstr += 1
                        value = idx
                    elif kind == _DATE:
                        value = f"{_datetime_to_excel_datetime(value, date_1904, no_tz):.16G}"
                    elif kind == _NUMBER:
                        value = f"{value:.16G}"
                    ap(f"{refs[c]}{rs}{mid}{value}</v></c>")
                if c < lo:
                    lo = c
                hi = c
            if r == 2048:
                for c in range(ncols):
                    if len(tails[c]) > 1024:
                        tails[c], caps[c] = {}, 0
            if hi < 0:
                continue
            if earlier and r in earlier:
                cells = ws.table[r]
                for letters in _CELL_COLS.findall("".join(parts)):
                    cells.pop(column_index(letters), None)
            b = r >> 4
            if b != block:
                if block_rows:
                    pending.append(render(block, blo, bhi, block_rows, not region.edges))
                    block_rows = []
                    if len(pending) >= sheetxml.BLOCKS_PER_CHUNK:
                        region.add_chunk("".join(pending), pool)
                        pending = []
                block, blo, bhi = b, lo, hi
            else:
                if lo < blo:
                    blo = lo
                if hi > bhi:
                    bhi = hi
            block_rows.append((rs, "".join(parts)))
            last_r = r
        if block_rows:
            pending.append(render(block, blo, bhi, block_rows, True))
            region.add_chunk("".join(pending), pool)
    finally:
        ws.str_table.count += nstr
        ws.str_table.unique_count = len(sst)
    if region.first_row >= 0:
        region.last_row = last_r
        ws._check_dimensions(region.first_row, region.first_col)
        ws._check_dimensions(region.last_row, region.last_col)
        ws._region = region
    return r


def _other_value(ws: XlcrmWorksheet, r: int, c: int, v: Any,
                 labels: Mapping[str, str] | None) -> tuple[int, Any] | None:
    # _write_other's decisions for the rendered rows: (kind, value) or None for a blank.
    try:
        if v != v:
            return None
    except (TypeError, ValueError):  # pandas.NA refuses to be a bool: a missing value
        return None
    if isinstance(v, str):
        text = labels.get(str(v), str(v)) if labels else str(v)
        if not text:
            return None
        return (_QUOTED if looks_like_formula(text) else _PLAIN), text
    if isinstance(v, bool):
        return _BOOL, 1 if v else 0
    if isinstance(v, dt.date | dt.datetime):
        return _DATE, v
    if isinstance(v, Decimal | numbers.Real):
        num = float(v)
        if math.isinf(num):
            raise XlcrmError(f"sheet {ws.name} cell {xl_rowcol_to_cell(r, c)}: infinite number cannot "
                             "be stored in Excel")
        return _NUMBER, num
    text = safe_text(v)
    if not text:
        return None
    return (_QUOTED if looks_like_formula(text) else _PLAIN), text


def _write_rows(ws: XlcrmWorksheet, columns: Sequence[TableColumn], formats: Sequence[_CellFormats],
                rows: Iterable[Sequence[Any]]) -> int:
    # The per-cell path (and the reference the rendered rows are tested against): the hot loop (100,000 rows x 20+ columns): exact-type dispatch, the undecorated XlsxWriter
    # methods (public ones re-parse "A1" arguments on every call) and per-column lookups hoisted out.
    write_string = ws._write_string
    write_number = ws._write_number
    write_datetime = ws._write_datetime
    labels = [col.labels for col in columns]
    plain = [f.plain for f in formats]
    quoted = [f.quoted for f in formats]
    date_fmt = [f.date for f in formats]
    number_fmt = [f.number for f in formats]
    ncols = len(columns)
    suspect = _SUSPECT_START
    date_types = (dt.date, dt.datetime)
    r = 0
    for r, values in enumerate(rows, start=1):
        if r >= MAX_ROWS or len(values) != ncols:
            _bad_row(ws, r, values, ncols)
        for c, v in enumerate(values):
            if v is None:
                continue
            t = type(v)
            if t is str:
                if not v:
                    continue
                lab = labels[c]
                if lab is not None:
                    v = lab.get(v, v)
                fmt = quoted[c] if v[0] in suspect and looks_like_formula(v) else plain[c]
                if write_string(r, c, v, fmt):
                    _too_long(ws, r, c)
            elif t is int or t is float:
                if v != v:  # NaN: blank
                    continue
                if math.isinf(v):
                    raise XlcrmError(f"sheet {ws.name} cell {xl_rowcol_to_cell(r, c)}: infinite number "
                                     "cannot be stored in Excel")
                write_number(r, c, v, number_fmt[c])
            elif t in date_types:
                write_datetime(r, c, v, date_fmt[c])
            else:
                _write_other(ws, r, c, v, labels[c], formats[c])
    return r


def _write_other(ws: XlcrmWorksheet, r: int, c: int, v: Any, labels: Mapping[str, str] | None,
                 f: _CellFormats) -> None:
    # Subclasses and foreign types: numpy/pandas scalars, Decimal, bool, pandas' NA/NaT.
    try:
        if v != v:
            return
    except (TypeError, ValueError):  # pandas.NA refuses to be a bool: a missing value
        return
    if isinstance(v, str):
        text = labels.get(str(v), str(v)) if labels else str(v)
        if text:
            fmt = f.quoted if looks_like_formula(text) else f.plain
            if ws._write_string(r, c, text, fmt):
                _too_long(ws, r, c)
    elif isinstance(v, bool):
        ws._write_boolean(r, c, v, f.plain)
    elif isinstance(v, dt.date | dt.datetime):
        ws._write_datetime(r, c, v, f.date)
    elif isinstance(v, Decimal | numbers.Real):
        num = float(v)
        if math.isinf(num):
            raise XlcrmError(f"sheet {ws.name} cell {xl_rowcol_to_cell(r, c)}: infinite number cannot "
                             "be stored in Excel")
        ws._write_number(r, c, num, f.number)
    else:
        text = safe_text(v)
        if text:
            fmt = f.quoted if looks_like_formula(text) else f.plain
            if ws._write_string(r, c, text, fmt):
                _too_long(ws, r, c)


def _bad_row(ws: Worksheet, r: int, values: Sequence[Any], ncols: int) -> NoReturn:
    if r >= MAX_ROWS:
        raise XlcrmError(f"sheet {ws.name}: more than {MAX_ROWS - 1:,} rows do not fit in one Excel "
                         "sheet; split the data")
    raise ValueError(f"{ws.name} row {r + 1}: {len(values)} values for {ncols} columns")


def _too_long(ws: Worksheet, r: int, c: int) -> None:
    raise XlcrmError(f"sheet {ws.name} cell {xl_rowcol_to_cell(r, c)}: text longer than Excel's "
                     f"{MAX_TEXT:,}-character limit; shorten it")


def write_text(ws: XlcrmWorksheet, row: int, col: int, value: Any, wb: XlcrmWorkbook,
               **props: Any) -> None:
    """Write one value as text (never a formula) outside a table, e.g. in meta or review sheets."""
    text = safe_text(value)
    if not text:
        return
    fmt = wb.fmt(**props, quote_prefix=True) if looks_like_formula(text) else (
        wb.fmt(**props) if props else None)
    if ws._write_string(row, col, text, fmt):
        _too_long(ws, row, col)


def entity_rows(entity: Entity, rows: Iterable[Mapping[str, Any]]) -> Iterator[list[Any]]:
    """Row dicts keyed by column key -> value lists in the entity's column order.

    Keys starting with ``_`` (helper columns such as validate's ``_customer_row``) are ignored; any
    other key the entity does not have is an error rather than a silently dropped value.
    """
    keys = entity.keys
    allowed = set(keys)
    for i, row in enumerate(rows, start=1):
        if not row.keys() <= allowed:
            unknown = sorted(k for k in row if k not in allowed and not str(k).startswith("_"))
            if unknown:
                raise XlcrmError(f"{entity.key} row {i}: unknown column key(s) {unknown}; "
                                 f"known: {keys}")
        get = row.get
        yield [get(k) for k in keys]


def write_entity_table(
    wb: XlcrmWorkbook,
    ws: XlcrmWorksheet,
    entity: Entity,
    lang: Lang,
    rows: Iterable[Mapping[str, Any]] = (),
    *,
    validations: Mapping[str, Mapping[str, Any]] | None = None,
    validation_rows: int = 0,
    locked: bool = True,
) -> int:
    """One entity sheet: the table ``entity.table_name(lang)`` with labels in ``lang``; returns rows.

    ``rows`` are row dicts keyed by column key, or (for a large source such as the master database)
    an iterable with a true ``values_in_entity_order`` attribute yielding value sequences in
    ``entity.keys`` order, which skips building a dict per row.
    """
    columns = entity_columns(entity, lang, validations)
    if not locked:
        columns = [replace(col, locked=False) for col in columns]
    values = rows if getattr(rows, "values_in_entity_order", False) else entity_rows(entity, rows)
    return write_table(wb, ws, entity.table_name(lang), columns, values,  # type: ignore[arg-type]
                       validation_rows=validation_rows)


def sheet_range(sheet: str, first_row: int, col: int, last_row: int, last_col: int | None = None) -> str:
    """Absolute reference like ``'顧客'!$C$2:$C$2001`` (0-based rows/cols), for defined names."""
    last_col = col if last_col is None else last_col
    return (f"{quote_sheetname(sheet)}!${xl_col_to_name(col)}${first_row + 1}:"
            f"${xl_col_to_name(last_col)}${last_row + 1}")
