"""The standard team workbook: one Excel table per entity, guarded by data validation.

Everything here derives from the schema: sheet names and headers are labels in the workbook's language,
formats and widths come from each column, dropdowns from the choice lists.  Decisions worth knowing:

* **Data sheets stay unprotected.**  Excel cannot grow a table on a protected sheet, so protecting the
  header row would stop staff adding rows.  A renamed or deleted header is caught by the reader and
  ``xlcrm validate`` instead.
* **The lists sheet (``_lists``) is hidden and protected without a password.**  Protection guards
  against accidents, not against an attacker: a password would only lock the firm's own admin out.
* **The meta sheet (``_xlcrm``) is very hidden** (not listed under Unhide) and protected the same way;
  it carries schema version, owner, language, creation time, workbook id and generator.
* **Validation covers the data rows plus ``validation_rows`` empty rows below** (2,000 by default), not
  just the table's first empty row: people type below the table and Excel extends it, and the rules
  must already be there.  The customer dropdown of the 顧客 reference columns reads a defined name over
  one label per row of the same stretch of the customers sheet (the name, qualified when two rows share
  it: :func:`add_customer_labels`), with error style *warning* because a customer ID may be typed
  instead.
* Choice dropdowns read one defined name per list (``list_industry`` ...) on the lists sheet, so a list
  shared by two columns (DM可否) is written once.
* Text format ``@`` on phone, FAX, postal code, 法人番号 and ID columns (from ``Column.number_format``)
  is set for the whole column, so a typed leading zero survives below the table too.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlsxwriter.utility import quote_sheetname, xl_col_to_name

from xlcrm.errors import XlcrmError
from xlcrm.schema import (
    DEFAULT_SCHEMA,
    LANGS,
    LISTS_SHEET,
    META_KEYS,
    META_SHEET,
    OWNER_DEFAULTED,
    ROW_WORD,
    Column,
    Entity,
    Lang,
    NotFuture,
    Schema,
)
from xlcrm.store import outputs
from xlcrm.version import __version__
from xlcrm.xlsx.cells import ooxml_text
from xlcrm.xlsx.writer import (
    XlcrmWorkbook,
    XlcrmWorksheet,
    atomic_write,
    close_workbook,
    fit_text,
    open_workbook,
    sealed,
    sheet_range,
    write_entity_table,
    write_text,
)

#: Fixed creation time of the committed templates, so regenerating them is reproducible.
TEMPLATE_CREATED = dt.datetime(2026, 1, 1)
#: File names of the committed templates in ``workbook_templates/``.
TEMPLATE_FILES: dict[Lang, str] = {"ja": "xlcrm_template_ja.xlsx", "en": "xlcrm_template_en.xlsx"}
#: Defined name of the customer-name range the reference dropdowns read.
CUSTOMER_NAMES = "ref_customers"
#: Empty rows below the data that carry validation, formats and dropdowns.
VALIDATION_ROWS = 2000

_TITLE = {"ja": "顧客管理", "en": "Customer management"}
#: 1900-01-01 as an Excel serial (XlsxWriter turns datetime(1900, 1, 1) into 0, "1899-12-31").
_EARLIEST = 1
# Excel stores validation bounds as doubles; this bounds an int/decimal column without min/max.
_NO_LIMIT = 1e15

_MSG: dict[Lang, dict[str, str]] = {
    "ja": {
        "required": "必須項目です。",
        "system": "xlcrm が自動で記入します。入力・変更しないでください。",
        "owner": "空欄ならこのブックの担当者（{owner}）になります。",
        "owner_any": "空欄ならこのブックの担当者になります。",
        "choice_in": "一覧から選んでください。",
        "choice_err": "{label}は一覧から選んでください。",
        "date_in": "日付を入力してください（例 2024/4/1）。",
        "date_err": "{label}には日付を入力してください（例 2024/4/1）。",
        "future_err": "{label}には明日以前の日付を入力してください（例 2024/4/1）。",
        "whole_in": "{range}の整数。",
        "whole_err": "{label}には{range}の整数を入力してください。",
        "decimal_in": "{range}の数値。",
        "decimal_err": "{label}には{range}の数値を入力してください。",
        "between": "{min}〜{max}",
        "min": "{min}以上",
        "max": "{max}以下",
        "length_in": "{n}文字以内。",
        "length_err": "{label}は{n}文字以内で入力してください。",
        "ref_in": "顧客IDを入力すると確認が出ますが、「はい」で確定できます。",
        "ref_err": "このブックの顧客名にありません。顧客IDを入力した場合は「はい」を押してください。",
        "err_title": "{label}の入力エラー",
        "type_phone": "例 03-1234-5678（先頭の0を忘れずに）。",
        "type_postal": "例 100-0001",
        "type_email": "例 info@example.co.jp",
        "type_url": "例 https://www.example.co.jp",
        "type_kana": "全角カタカナで入力してください。",
        "type_corporate_number": "13桁の法人番号。",
        "ref_err_title": "顧客の確認",
    },
    "en": {
        "required": "Required.",
        "system": "Filled in by xlcrm. Do not type or change it.",
        "owner": "Left blank: this workbook's owner ({owner}).",
        "owner_any": "Left blank: this workbook's owner.",
        "choice_in": "Choose from the list.",
        "choice_err": "Choose {label} from the list.",
        "date_in": "Enter a date (e.g. 2024/4/1).",
        "date_err": "{label} must be a date (e.g. 2024/4/1).",
        "future_err": "{label} must be a date no later than tomorrow (e.g. 2024/4/1).",
        "whole_in": "A whole number, {range}.",
        "whole_err": "{label} must be a whole number, {range}.",
        "decimal_in": "A number, {range}.",
        "decimal_err": "{label} must be a number, {range}.",
        "between": "{min} to {max}",
        "min": "{min} or more",
        "max": "{max} or less",
        "length_in": "At most {n} characters.",
        "length_err": "{label}: at most {n} characters.",
        "ref_in": "Typing a customer ID shows a warning; click Yes to keep it.",
        "ref_err": "Not a customer name in this workbook. If you typed a customer ID, click Yes.",
        "err_title": "Invalid {label}",
        "type_phone": "e.g. 03-1234-5678 (keep the leading 0).",
        "type_postal": "e.g. 100-0001",
        "type_email": "e.g. info@example.com",
        "type_url": "e.g. https://www.example.com",
        "type_kana": "Reading in full-width katakana.",
        "type_corporate_number": "13-digit corporate number.",
        "ref_err_title": "Check customer",
    },
}


# --- public API ------------------------------------------------------------------------------------

def write_team_workbook(
    path: str | Path | io.BytesIO,
    schema: Schema,
    *,
    owner: str,
    lang: Lang = "ja",
    rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    workbook_id: str = "",
    created: dt.datetime | None = None,
    validation_rows: int = VALIDATION_ROWS,
    password: str | None = None,
) -> Path:
    """Write the standard team workbook for ``owner``, optionally filled with ``rows``.

    ``rows`` maps an entity key to row dicts of canonical values keyed by column key (choices as
    canonical keys, dates as ``datetime.date``); they are shown as labels in ``lang``.  Used for the
    empty template, ``xlcrm distribute`` and the demo.  The file is written atomically; with
    ``password`` it is encrypted before it reaches the disk (:func:`xlcrm.xlsx.writer.sealed`).  A buffer
    given as ``path`` receives the plain workbook in memory (to be annotated before it is written).
    """
    _check_lang(lang)
    if validation_rows < 0:
        raise XlcrmError(f"validation_rows must be 0 or more, got {validation_rows}")

    def fill(out: Path | io.BytesIO) -> None:
        wb = open_workbook(out, created=created, title=_TITLE[lang], author=owner)
        add_standard_sheets(wb, schema, lang=lang, owner=owner, rows=rows, validation_rows=validation_rows)
        add_meta_sheet(wb, schema, owner=owner, lang=lang, workbook_id=workbook_id)
        close_workbook(wb)

    if isinstance(path, io.BytesIO):
        fill(path)
        return Path(f"<memory {owner}>")
    target = Path(path)
    with atomic_write(target, private=bool(rows)) as tmp, sealed(tmp, password) as out:
        fill(out)
    return target


def build_template(path: str | Path, schema: Schema, *, owner: str = "", lang: Lang = "ja",
                   created: dt.datetime | None = None, force: bool = False,
                   rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> Path:
    """The standard workbook (``xlcrm template``), empty or holding ``rows`` (as
    :func:`write_team_workbook` takes them).

    An existing file is replaced only when it is this command's unchanged output, or with ``force``
    (a copy is kept beside it): see :mod:`xlcrm.store.outputs`.
    """
    target = Path(path)
    claim = outputs.claim(target, "template", force=force)
    with claim.write(target):
        return write_team_workbook(target, schema, owner=owner, lang=lang, created=created, rows=rows)


def regenerate_templates(directory: str | Path) -> list[Path]:
    """Write the committed ja and en templates into ``directory`` (built-in schema, fixed time).

    Uses the built-in schema, never an ``xlcrm.toml`` lying in the current directory: the committed
    files are the product's defaults.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return [write_team_workbook(out / TEMPLATE_FILES[lang], DEFAULT_SCHEMA, owner="", lang=lang,
                                created=TEMPLATE_CREATED) for lang in LANGS]


def xlsx_members(path: str | Path) -> dict[str, bytes]:
    """Every zip member's uncompressed bytes: how two generated workbooks are compared.

    Comparing members rather than the zip file keeps the check independent of the zlib version.
    """
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in sorted(zf.namelist())}


# --- building blocks (also used by the master workbook) -------------------------------------------

def add_standard_sheets(
    wb: XlcrmWorkbook,
    schema: Schema,
    *,
    lang: Lang,
    owner: str = "",
    rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    validation_rows: int = VALIDATION_ROWS,
    protect: bool = False,
    customer_labels: bool = True,
) -> dict[str, XlcrmWorksheet]:
    """Add one validated table sheet per entity, then the hidden lists sheet; returns sheets by key.

    ``protect=True`` (the master workbook) protects the entity sheets while still allowing filters,
    sorting and column widths; team workbooks leave them unprotected (see the module docstring).
    ``customer_labels`` gives the customer dropdown the labels of :func:`add_customer_labels`; without
    it (the master, where every customer has an ID) the dropdown lists the names themselves.
    """
    rows = rows or {}
    unknown = sorted(set(rows) - {e.key for e in schema})
    if unknown:
        raise XlcrmError(f"rows given for unknown sheet(s) {unknown}; known: {[e.key for e in schema]}")
    list_names = {name: list_defined_name(name) for name in schema.choice_lists()}

    customers = schema.entity("customers")
    n_customers = len(rows.get("customers", ()))
    name_col = customers.keys.index("name")
    last_row = max(n_customers + validation_rows, 1)
    if not customer_labels:
        wb.define_name(CUSTOMER_NAMES, "=" + sheet_range(customers.label(lang), 1, name_col, last_row))

    sheets: dict[str, XlcrmWorksheet] = {}
    for entity in schema:
        ws = wb.add_worksheet(entity.label(lang))
        validations = {}
        for col in entity.columns:
            v = column_validation(entity, col, lang, owner=owner, list_names=list_names)
            if v is not None:
                validations[col.key] = v
        write_entity_table(wb, ws, entity, lang, rows.get(entity.key, ()), validations=validations,
                           validation_rows=validation_rows)
        _page_setup(ws)
        if protect:
            ws.protect("", {"autofilter": True, "sort": True, "format_columns": True, "format_rows": True})
        sheets[entity.key] = ws
    lists = add_lists_sheet(wb, schema, lang)
    if customer_labels:
        add_customer_labels(wb, lists, schema, lang, rows.get("customers", ()), last_row)
    return sheets


def list_defined_name(list_name: str) -> str:
    """Defined name of a choice list on the lists sheet: ``industry`` -> ``list_industry``."""
    return "list_" + re.sub(r"\W", "_", list_name, flags=re.ASCII)


def add_lists_sheet(wb: XlcrmWorkbook, schema: Schema, lang: Lang) -> XlcrmWorksheet:
    """The hidden, protected sheet of choice labels in ``lang``: one column per list, name in row 1."""
    ws = wb.add_worksheet(LISTS_SHEET)
    for c, (name, choices) in enumerate(schema.choice_lists().items()):
        write_text(ws, 0, c, name, wb, bold=True)
        for r, choice in enumerate(choices, start=1):
            write_text(ws, r, c, choice.label(lang), wb)
        ws.set_column(c, c, 16)
        wb.define_name(list_defined_name(name), "=" + sheet_range(LISTS_SHEET, 1, c, max(len(choices), 1)))
    ws.hide()
    ws.protect()
    return ws


def add_customer_labels(wb: XlcrmWorkbook, lists: XlcrmWorksheet, schema: Schema, lang: Lang,
                        rows: Sequence[Mapping[str, Any]], last_row: int) -> None:
    """The customer dropdown's list: one formula per 顧客 row, on the lists sheet.

    A name that occurs once in the 顧客 sheet is listed as it is.  Two new customers with the same
    name (佐藤運輸株式会社 in two cities) have no ID yet to tell them apart, so each is listed as
    ``name (電話番号)``, else ``name (住所)`` when the phone is blank or shared, else ``name (行5)``;
    validate resolves such a reference to that row.  Formulas, so that a customer typed in Excel is
    in the list at once, without the add-in.  The cached values are the labels of ``rows``, so a
    reader that does not recalculate (LibreOffice, calamine) sees the same list.
    """
    customers = schema.entity("customers")
    sheet = quote_sheetname(customers.label(lang))
    first, last = 2, last_row + 1  # Excel rows of the data and validation stretch
    cols = {k: xl_col_to_name(customers.keys.index(k)) for k in ("name", "phone", "address")
            if customers.has(k)}
    ranges = {k: f"{sheet}!${c}${first}:${c}${last}" for k, c in cols.items()}
    word = ROW_WORD[lang]
    col = len(schema.choice_lists())
    write_text(lists, 0, col, "customer_labels", wb, bold=True)
    lists.set_column(col, col, 28)

    def formula(r: int) -> str:
        n = f"{sheet}!{cols['name']}{r}"
        tail = f'"{word}"&ROW({n})'
        for key in ("address", "phone"):  # innermost first: the phone is tried before the address
            if key in cols:
                v = f"{sheet}!{cols[key]}{r}"
                tail = f'IF(AND({v}<>"",COUNTIFS({ranges["name"]},{n},{ranges[key]},{v})<2),{v},{tail})'
        label = f'IF({n}="","",IF(COUNTIF({ranges["name"]},{n})<2,{n},{n}&" ("&{tail}&")"))'
        return f'=IFERROR({label},{n}&" ({word}"&ROW({n})&")")'

    for i, text in enumerate(customer_labels(rows, lang, last - first + 1)):
        # The cached value is cell text too: a control character typed into a name is stored escaped.
        lists.write_plain_formula(i + 1, col, formula(first + i), None, ooxml_text(text))
    wb.define_name(CUSTOMER_NAMES, "=" + sheet_range(LISTS_SHEET, 1, col, last_row))


def customer_labels(rows: Sequence[Mapping[str, Any]], lang: Lang, n: int, first_row: int = 2) -> list[str]:
    """What :func:`add_customer_labels`' formulas give for ``rows`` (then blanks, ``n`` in all);
    ``first_row`` is the Excel row of ``rows[0]``."""
    def text(row: Mapping[str, Any], key: str) -> str:
        v = row.get(key)
        return "" if v is None else str(v)

    names = [text(r, "name") for r in rows]
    count: dict[str, int] = {}
    for name in names:
        count[name.casefold()] = count.get(name.casefold(), 0) + 1
    pairs: dict[tuple[str, str, str], int] = {}
    for r, name in zip(rows, names, strict=True):
        for key in ("phone", "address"):
            k = (name.casefold(), key, text(r, key).casefold())
            pairs[k] = pairs.get(k, 0) + 1
    out = []
    for i, (r, name) in enumerate(zip(rows, names, strict=True)):
        if not name or count[name.casefold()] < 2:
            out.append(name)
            continue
        tag = f"{ROW_WORD[lang]}{i + first_row}"
        for key in ("phone", "address"):
            v = text(r, key)
            if v and pairs[(name.casefold(), key, v.casefold())] < 2:
                tag = v
                break
        out.append(f"{name} ({tag})")
    return out + [""] * (n - len(out))


def add_meta_sheet(wb: XlcrmWorkbook, schema: Schema, *, owner: str, lang: Lang,
                   workbook_id: str = "") -> XlcrmWorksheet:
    """The very hidden sheet of key/value rows (A:B) the reader checks before anything else."""
    ws = wb.add_worksheet(META_SHEET)
    for r, (key, value) in enumerate(meta_values(schema, owner=owner, lang=lang, created=wb.created,
                                                 workbook_id=workbook_id).items()):
        write_text(ws, r, 0, key, wb)
        write_text(ws, r, 1, value, wb)
    ws.set_column(0, 0, 16)
    ws.set_column(1, 1, 28)
    ws.very_hidden()
    ws.protect()
    return ws


def meta_values(schema: Schema, *, owner: str, lang: Lang, created: dt.datetime,
                workbook_id: str = "") -> dict[str, str]:
    """The meta sheet's content, in ``META_KEYS`` order."""
    values = {
        "schema_version": schema.version,
        "owner": owner,
        "lang": lang,
        "created": created.isoformat(timespec="seconds"),
        "workbook_id": workbook_id,
        "generator": f"xlcrm {__version__}",
    }
    return {k: values[k] for k in META_KEYS}


def column_validation(entity: Entity, col: Column, lang: Lang, *, owner: str = "",
                      list_names: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """XlsxWriter data-validation options (plus ``ime_mode``) for one column, or None.

    Constrained columns get their rule with a Stop alert; columns without a rule still get an "any"
    validation when they have an input message or an IME mode to carry.
    """
    m = _MSG[lang]
    label = col.label(lang)
    hint = ""
    rule: dict[str, Any] = {}
    if col.system:
        rule = {"validate": "any"}
    elif col.type == "choice":
        names = list_names or {}
        rule = {"validate": "list", "source": "=" + names.get(col.list_name, list_defined_name(col.list_name)),
                "error_message": m["choice_err"].format(label=label)}
        hint = m["choice_in"]
    elif col.type == "ref":
        rule = {"validate": "list", "source": "=" + CUSTOMER_NAMES, "error_type": "warning",
                "error_title": m["ref_err_title"], "error_message": m["ref_err"]}
        hint = m["ref_in"]
    elif col.type == "date":
        future = next((r for r in entity.rules if isinstance(r, NotFuture) and r.target == col.key), None)
        if future is not None:
            rule = {"validate": "date", "criteria": "between", "minimum": _EARLIEST,
                    "maximum": f"=TODAY()+{future.days}", "error_message": m["future_err"].format(label=label)}
        else:
            rule = {"validate": "date", "criteria": ">=", "value": _EARLIEST,
                    "error_message": m["date_err"].format(label=label)}
        hint = m["date_in"]
    elif col.type in ("int", "decimal"):
        kind = "whole" if col.type == "int" else "decimal"
        lo = col.min if col.min is not None else -_NO_LIMIT
        hi = col.max if col.max is not None else _NO_LIMIT
        text_range = _range_text(col.min, col.max, m)
        rule = {"validate": kind, "criteria": "between", "minimum": _num(lo), "maximum": _num(hi),
                "error_message": m[f"{kind}_err"].format(label=label, range=text_range)}
        hint = m[f"{kind}_in"].format(range=text_range)
    elif col.max_length:
        rule = {"validate": "length", "criteria": "<=", "value": col.max_length,
                "error_message": m["length_err"].format(label=label, n=f"{col.max_length:,}")}
        hint = m["length_in"].format(n=f"{col.max_length:,}")

    message = _input_message(entity, col, lang, owner, hint)
    ime = col.ime if col.ime != "noControl" else None
    if not rule:
        if not message and ime is None:
            return None
        rule = {"validate": "any"}
    if rule["validate"] != "any":
        rule.setdefault("error_title", m["err_title"].format(label=label))
        rule.setdefault("error_type", "stop")
        rule["error_title"] = fit_text(rule["error_title"], 32)
        rule["error_message"] = fit_text(rule["error_message"], 255)
    if message:
        rule["input_title"] = fit_text(label, 32)
        rule["input_message"] = fit_text(message, 255)
    if ime is not None:
        rule["ime_mode"] = ime
    return rule


# --- helpers ---------------------------------------------------------------------------------------

def _input_message(entity: Entity, col: Column, lang: Lang, owner: str, hint: str) -> str:
    m = _MSG[lang]
    if col.system:
        return col.help(lang) or m["system"]
    if OWNER_DEFAULTED.get(entity.key) == col.key:
        # The built-in help of these columns says the same; the owner's name makes it concrete.
        return m["owner"].format(owner=owner) if owner else m["owner_any"]
    parts = [col.help(lang) or m.get(f"type_{col.type}") or hint]
    if col.type == "ref" and hint not in parts:
        parts.append(hint)
    if col.required:
        parts.append(m["required"])
    sep = "" if lang == "ja" else " "
    return sep.join(p for p in parts if p)


def _range_text(lo: float | None, hi: float | None, m: Mapping[str, str]) -> str:
    if lo is not None and hi is not None and hi < 1e9:
        return m["between"].format(min=_shown(lo), max=_shown(hi))
    if lo is not None:
        return m["min"].format(min=_shown(lo))
    if hi is not None:
        return m["max"].format(max=_shown(hi))
    return ""


def _shown(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,}"


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _page_setup(ws: XlcrmWorksheet) -> None:
    # Printing a customer list is common: landscape A4, header row repeated on every page, grid printed.
    ws.hide_gridlines(0)
    ws.set_landscape()
    ws.set_paper(9)
    ws.repeat_rows(0)
    ws.set_margins(left=0.4, right=0.4, top=0.6, bottom=0.6)


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise XlcrmError(f"unknown language {lang!r}; use one of {list(LANGS)}")


if __name__ == "__main__":  # python -m xlcrm.intake.template [DIR]: regenerate the committed templates
    for p in regenerate_templates(sys.argv[1] if len(sys.argv) > 1 else "workbook_templates"):
        print(p)
