"""Validation: every bad cell of a team workbook, with its address and a message a person can act on.

Parsing (dates, phones, kana, wareki ...) is done here with :mod:`xlcrm.normalize`, once per *unique*
value: pandera's own coercion retries value by value as soon as one cell fails, which takes minutes on
200k rows.  pandera then checks the normalised frame against schemas generated from
:mod:`xlcrm.schema` (required fields, lists, ranges, lengths, ID format and the cross-field rules),
lazily, so every problem is collected in one run.  Each failure is mapped back to the sheet, the
Excel cell and the workbook's language.

``annotate`` writes a marked-up copy (red errors, amber warnings, a comment per cell and an エラー一覧
sheet with links); ``fix`` writes a normalised copy where the fix is unambiguous.  Originals are never
modified.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from xlcrm import normalize as nz
from xlcrm.errors import UnreadableWorkbook, XlcrmError
from xlcrm.intake.inputs import scan
from xlcrm.schema import (
    OWNER_DEFAULTED,
    ROW_WORD,
    Column,
    Entity,
    Lang,
    NotFuture,
    OnlyWhen,
    ProductEquals,
    RequiredWhen,
    Schema,
)
from xlcrm.xlsx.marks import (
    ERROR,
    FILLS,
    SUMMARY_SHEET,
    WARNING,
    restore_meta_state,
    severity_label,
    summary_headings,
)
from xlcrm.xlsx.reader import SheetData, TeamWorkbook, paused_gc, read_workbook

# --- messages -------------------------------------------------------------------------------------
# One entry per rule/problem code: (Japanese, English). Placeholders: label, value, suggestion, ...
MESSAGES: dict[str, tuple[str, str]] = {
    "required": ("{label} は必須です。入力してください。", "{label} is required; please fill it in."),
    "required_when": ("{when_label} が「{when_value}」のときは {label} が必須です。",
                      "{label} is required when {when_label} is {when_value}."),
    "only_when": ("{label} は {when_label} が「{allowed}」のときだけ入力します（いまは「{when_value}」）。",
                  "{label} is only for {when_label} = {allowed} (this row is {when_value})."),
    "product_equals": ("{label} {value} が {factors} の積 {expected} と一致しません。どちらかを直してください。",
                       "{label} {value} does not equal {factors} = {expected}; correct one of them."),
    "not_future": ("{label} {value} は未来の日付です。実際に対応した日を入力してください。",
                   "{label} {value} is in the future; enter the day it actually happened."),
    "min": ("{label} は {min} 以上で入力してください（いまは {value}）。",
            "{label} must be at least {min} (it is {value})."),
    "max": ("{label} は {max} 以下で入力してください（いまは {value}）。",
            "{label} must be at most {max} (it is {value})."),
    "max_length": ("{label} が長すぎます（{length} 文字、上限 {max} 文字）。",
                   "{label} is too long ({length} characters, limit {max})."),
    "choice": ("「{value}」は {label} の選択肢にありません。一覧から選んでください: {allowed}",
               "\"{value}\" is not a {label} option; choose one of: {allowed}"),
    "id.format": ("{label}「{value}」は xlcrm の ID（例 {example}）ではありません。ID は xlcrm が付けるので、"
                  "新しい行では空欄にしてください。",
                  "{label} \"{value}\" is not an xlcrm ID (e.g. {example}); leave it blank on new rows, "
                  "xlcrm assigns it."),
    "phone.leading_zero": ("{label}の先頭の0が欠けています: {value} → {suggestion} のように文字列で入力してください",
                           "{label} lost its leading 0: {value} → type it as text, like {suggestion}"),
    "phone.invalid": ("{label}「{value}」は電話番号として読めません。例 03-1234-5678 のように入力してください。",
                      "{label} \"{value}\" is not a phone number; type it like 03-1234-5678."),
    "postal.leading_zero": ("郵便番号の先頭の0が欠けています: {value} → {suggestion} のように入力してください",
                            "The postal code lost its leading 0: {value} → type {suggestion}"),
    "postal.invalid": ("郵便番号「{value}」は 123-4567 の形式で入力してください。",
                       "Postal code \"{value}\": use the form 123-4567."),
    "email.invalid": ("{label}「{value}」はメールアドレスとして正しくありません（例 info@example.co.jp）。",
                      "{label} \"{value}\" is not a valid e-mail address (e.g. info@example.com)."),
    "kana.invalid": ("{label}「{value}」はカタカナで入力してください（ひらがなは自動で変換されます）。",
                     "{label} \"{value}\": use katakana (hiragana is converted automatically)."),
    "url.invalid": ("{label}「{value}」は https:// で始まるアドレスで入力してください。",
                    "{label} \"{value}\": enter an address starting with https://."),
    "corporate_number.format": ("法人番号「{value}」は13桁の数字で入力してください。",
                                "Corporate number \"{value}\" must be 13 digits."),
    "corporate_number.check_digit": ("法人番号「{value}」はチェックデジットが合いません。番号を確認してください"
                                     "（国税庁 法人番号公表サイト）。",
                                     "Corporate number \"{value}\" fails its check digit; check the number."),
    "date.invalid": ("{label}「{value}」は日付として読めません。2024/4/1 や R6.4.1 のように入力してください。",
                     "{label} \"{value}\" is not a date; type it like 2024-04-01."),
    "date.impossible": ("{label}「{value}」は存在しない日付です。",
                        "{label} \"{value}\" is not a real date."),
    "int.not_whole": ("{label} は整数で入力してください（いまは {value}）。",
                      "{label} must be a whole number (it is {value})."),
    "int.invalid": ("{label}「{value}」は数値として読めません。半角数字で入力してください。",
                    "{label} \"{value}\" is not a number."),
    "decimal.invalid": ("{label}「{value}」は数値として読めません。半角数字で入力してください。",
                        "{label} \"{value}\" is not a number."),
    "ref.unknown": ("顧客「{value}」が {sheet} シートにありません。一覧から選ぶか顧客IDを入力してください。{hint}",
                    "Customer \"{value}\" is not on the {sheet} sheet; pick it from the list or type its "
                    "customer ID.{hint}"),
    "ref.ambiguous": ("顧客名「{value}」の顧客が {count} 件あります（{rows}）。{choices}のどれかを入力するか、"
                      "一覧から選んでください。",
                      "{count} customers are named \"{value}\" ({rows}); type one of {choices}, or pick it "
                      "from the list."),
    "ref.qualified": ("顧客名「{name}」の顧客（{rows}）に（{tag}）に当たるものがありません。{choices}のどれかを"
                      "入力するか、一覧から選び直してください。",
                      "No customer named \"{name}\" ({rows}) matches ({tag}); type one of {choices}, or pick "
                      "it from the list again."),
    "owner.unknown": ("このブックには持ち主（担当営業）が記録されていないため（xlcrm のテンプレート以外で作られたか、"
                      "--owner なしで作られたブック）、空欄の {labels} を補えません（{rows} 行、最初は {first}）。"
                      "各行に {labels} を入力するか、`xlcrm template 新しいブック.xlsx --owner 氏名` で作った"
                      "ブックに行を貼り付けてください。",
                      "This workbook records no owner (it was not made from xlcrm's template, or made without "
                      "--owner), so blank {labels} cannot be filled in ({rows} rows, first {first}). Type "
                      "{labels} on each row, or paste the rows into a workbook made with `xlcrm template "
                      "new.xlsx --owner NAME`."),
    "formula": ("数式が入っています（={formula}）。計算式ではなく値を直接入力してください。",
                "This cell holds a formula (={formula}); type the value itself instead."),
    "duplicate": ("{label} が {other} と同じです。同じ顧客を二重に登録していませんか？",
                  "{label} is the same as {other}; is this customer entered twice?"),
    "extra_column": ("列「{value}」は xlcrm の項目ではないため取り込まれません。{hint}",
                     "Column \"{value}\" is not an xlcrm field and is not imported.{hint}"),
    "invalid": ("{label}「{value}」の形式が正しくありません。", "{label} \"{value}\" is not valid."),
    "macros": ("このブックにはマクロ (VBA) が入っています。マクロは実行も取り込みもされず、xlcrm が作るコピーからは"
               "削除されます。",
               "This workbook contains macros (VBA); xlcrm never runs or imports them and leaves them out of "
               "every copy it writes."),
    "stray_cell": ("表から遠く離れたセル {cell} に「{value}」が入っています。取り込まれません。表の中へ移すか、"
                   "消してください。",
                   "Cell {cell}, far outside the table, holds \"{value}\" and is not imported; move it into "
                   "the table or delete it."),
}

_HINTS: dict[str, tuple[str, str]] = {
    "did_you_mean": ("もしかして「{0}」？", " Did you mean \"{0}\"?"),
    "rename_header": ("「{0}」の列なら、見出しを「{0}」に戻してください。",
                      " If it holds {0}, rename the header back to \"{0}\"."),
}


def message(code: str, lang: Lang, **kw: Any) -> str:
    ja, en = MESSAGES.get(code, MESSAGES["invalid"])
    template = ja if lang == "ja" else en
    try:
        return template.format(**kw)
    except (KeyError, IndexError):
        return (MESSAGES["invalid"][0 if lang == "ja" else 1]).format(
            label=kw.get("label", ""), value=kw.get("value", ""))


def _hint(name: str, lang: Lang, arg: str) -> str:
    ja, en = _HINTS[name]
    return (ja if lang == "ja" else en).format(arg)


# --- results --------------------------------------------------------------------------------------

@dataclass
class Finding:
    file: str
    sheet: str
    cell: str  # "K12" ("" for a whole-row or file-level finding)
    row: int
    column: str  # the column's label in the workbook's language
    key: str  # the column key
    entity: str
    value: Any
    rule: str
    severity: str
    message: str

    @property
    def address(self) -> str:
        return f"{self.sheet}!{self.cell}" if self.cell else self.sheet

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["value"] = nz.display_text(self.value)
        d["address"] = self.address
        return d


@dataclass
class ValidationResult:
    workbook: TeamWorkbook
    schema: Schema
    #: Normalised values per entity (same index as the reader's frames; every schema column present).
    frames: dict[str, pd.DataFrame]
    findings: list[Finding] = field(default_factory=list)
    #: Rows with at least one error, per entity: merge rejects these.
    error_rows: dict[str, set[int]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.workbook.path

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def status(self) -> str:
        return "ok" if self.ok else "errors"


@dataclass
class Unreadable:
    """A file that could not be read at all; ``message`` is the one line to show."""

    path: Path
    message: str
    status: str = "unreadable"


# --- parsing per column type ----------------------------------------------------------------------

Parser = Callable[[Any], tuple[Any, Any]]


def _text_parser(v: Any) -> tuple[Any, Any]:
    return nz.text(v), None


def _multiline_parser(v: Any) -> tuple[Any, Any]:
    # Free text (備考, 内容, 対応内容) keeps its line breaks; names and references are one line.
    return nz.text(v, multiline=True), None


def _id_parser(prefix: str) -> Parser:
    pattern = re.compile(rf"^{re.escape(prefix)}-\d{{6,}}$")

    def parse(v: Any) -> tuple[Any, Any]:
        if type(v) is str and pattern.match(v):  # distributed workbooks: already canonical
            return v, None
        s = nz.code(v)
        if s is None:
            return None, None
        s = s.upper()
        return (s, None) if pattern.match(s) else (None, nz.Problem("id.format"))

    return parse


def _choice_parser(col: Column) -> Parser:
    lookup = col.choice_lookup()

    def parse(v: Any) -> tuple[Any, Any]:
        s = nz.text(v)
        if s is None:
            return None, None
        key = lookup.get(s.casefold())
        # Unknown spellings are kept as typed: pandera's isin check reports them with the list.
        return (key if key is not None else s), None

    return parse


def _parser(col: Column, entity: Entity) -> Parser:
    t = col.type
    if t == "text":
        return _multiline_parser
    if t in ("name", "ref"):
        return _text_parser
    if t == "id":
        return _id_parser(entity.id_prefix)
    if t == "choice":
        return _choice_parser(col)
    return {
        "kana": nz.kana, "phone": nz.phone, "postal": nz.postal, "email": nz.email, "url": nz.url,
        "corporate_number": nz.corporate_number, "date": nz.parse_date, "int": nz.integer,
        "decimal": nz.decimal,
    }[t]


@dataclass
class _SheetCtx:
    wb: TeamWorkbook
    sd: SheetData
    lang: Lang
    findings: list[Finding]
    error_rows: set[int]
    #: Per-workbook work shared between sheets (customer look-ups, company keys).
    shared: dict[str, Any] = field(default_factory=dict)

    def add(self, col: Column | None, row: int, value: Any, rule: str, severity: str, text: str,
            cell: str | None = None) -> None:
        key = col.key if col else ""
        if cell is None:
            cell = self.sd.cell(key, row) if col is not None and key in self.sd.letters else ""
        self.findings.append(Finding(
            file=str(self.wb.path), sheet=self.sd.sheet_name, cell=cell, row=row,
            column=col.label(self.lang) if col else "", key=key, entity=self.sd.entity.key,
            value=value, rule=rule, severity=severity, message=text))
        if severity == ERROR:
            self.error_rows.add(row)


def _normalise_column(ctx: _SheetCtx, col: Column, raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse each distinct value once; return (normalised values, mask of cells that failed to parse).

    ``pd.factorize`` hashes the column once in C and gives every cell the code of its distinct value,
    so spreading the parsed values back over 300k rows is array indexing, not a Python loop.
    """
    parse = _parser(col, ctx.sd.entity)
    raw_values = raw.to_numpy()
    codes, uniques = pd.factorize(raw_values, use_na_sentinel=True)
    n = len(uniques)
    try:
        parsed = list(map(parse, uniques))
    except Exception:  # a parser bug must not hide the cell: report it as invalid instead
        parsed = [_parse_or_invalid(parse, v) for v in uniques]
    parsed.append((None, None))  # the extra last slot is what code -1 (blank) picks
    outputs, problems = zip(*parsed, strict=True)
    values = np.fromiter(outputs, dtype=object, count=n + 1)
    bad = np.not_equal(np.fromiter(problems, dtype=object, count=n + 1), None)
    result = pd.Series(values[codes], index=raw.index, dtype=object)
    invalid_mask = bad[codes]
    for pos in np.flatnonzero(invalid_mask):
        v = raw_values[pos]
        problem = problems[codes[pos]]
        ctx.add(col, int(raw.index[pos]), v, problem.code, ERROR, message(
            problem.code, ctx.lang, label=col.label(ctx.lang), value=nz.display_text(v),
            suggestion=problem.suggestion or "", example=f"{ctx.sd.entity.id_prefix}-000001"))
    return result, pd.Series(invalid_mask, index=raw.index)


def _parse_or_invalid(parse: Parser, v: Any) -> tuple[Any, Any]:
    try:
        return parse(v)
    except Exception:
        return None, nz.Problem("invalid")


def _nones(index: pd.Index) -> pd.Series:
    # pd.Series(None, index, dtype=object) holds NaN, not None; downstream code tests `is None`.
    return pd.Series([None] * len(index), index=index, dtype=object)


def _allowed(col: Column, lang: Lang) -> str:
    labels = [c.label(lang) for c in col.choices]
    text = "、".join(labels[:12]) if lang == "ja" else ", ".join(labels[:12])
    return text + (" …" if len(labels) > 12 else "")


def _validate_sheet(ctx: _SheetCtx, schema: Schema, today: date,
                    customers: pd.DataFrame | None) -> pd.DataFrame:
    entity, sd, lang = ctx.sd.entity, ctx.sd, ctx.lang
    frame = sd.frame
    norm: dict[str, pd.Series] = {}
    invalid: dict[str, pd.Series] = {}
    for col in entity.columns:
        if col.key in frame.columns:
            norm[col.key], invalid[col.key] = _normalise_column(ctx, col, frame[col.key])
        else:
            norm[col.key] = _nones(frame.index)
            invalid[col.key] = pd.Series(False, index=frame.index)
    df = pd.DataFrame(norm, index=frame.index)

    # Blank cells that have a sensible default: the workbook owner, or the column's default choice.
    owner_key = OWNER_DEFAULTED.get(entity.key)
    if owner_key and ctx.wb.meta.owner and owner_key in df:
        df[owner_key] = df[owner_key].where(df[owner_key].notna(), ctx.wb.meta.owner)
    for col in entity.columns:
        if col.default is not None:
            df[col.key] = df[col.key].where(df[col.key].notna(), col.default)

    for addr, formula in sd.formulas.items():
        m = re.match(r"^([A-Z]+)(\d+)$", addr)
        if not m:
            continue
        row = int(m.group(2))
        col = next((c for c in entity.columns if sd.letters.get(c.key) == m.group(1)), None)
        if row <= sd.header_row or col is None:
            continue
        ctx.add(col, row, frame.at[row, col.key] if row in frame.index else None, "formula", ERROR,
                message("formula", lang, formula=formula), cell=addr)

    _run_pandera(ctx, df, invalid, today)
    if entity.ref_column is not None:
        df = _resolve_refs(ctx, df, schema, customers)
    if entity.key == "customers":
        _duplicates_in_workbook(ctx, df)
    return df


def _run_pandera(ctx: _SheetCtx, df: pd.DataFrame, invalid: dict[str, pd.Series], today: date) -> None:
    if not len(df):  # no rows, nothing to fail (an unused sheet: pandera's set-up alone costs ~4 ms)
        return
    entity, lang = ctx.sd.entity, ctx.lang
    columns: dict[str, pa.Column] = {}
    # (column key, check number) -> (rule code, extra message fields)
    col_rules: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
    for col in entity.columns:
        checks: list[pa.Check] = []

        def add(check: pa.Check, code: str, _col: Column = col, _checks: list[pa.Check] = checks,
                **kw: Any) -> None:
            col_rules[(_col.key, len(_checks))] = (code, kw)
            _checks.append(check)

        if col.type in ("int", "decimal"):
            if col.min is not None:
                add(pa.Check.ge(col.min), "min", min=_num(col.min))
            if col.max is not None:
                add(pa.Check.le(col.max), "max", max=_num(col.max))
        if col.max_length and col.type in ("text", "name", "kana", "email", "url", "ref"):
            add(pa.Check.str_length(max_value=col.max_length), "max_length", max=col.max_length)
        if col.type == "choice" and col.choices:
            add(pa.Check.isin([c.key for c in col.choices]), "choice", allowed=_allowed(col, lang))
        if checks:  # a column without checks would only cost pandera a null scan of 300k cells
            columns[col.key] = pa.Column(checks=checks, nullable=True, required=False)

    frame_rules: dict[str, tuple[Column, str, dict[str, Any]]] = {}
    frame_checks: list[pa.Check] = []
    typed = _typed(df, entity)
    # pandera lets a row whose every cell is null pass a frame-wide check (ignore_na), and finds those
    # rows with a null scan of the whole frame per check: half of its time.  The same mask, computed
    # once here and or-ed in the same way, gives the same verdicts.
    all_null = _all_null(typed)

    def add_frame(name: str, fn: Callable[[pd.DataFrame], pd.Series], target: Column, code: str,
                  **kw: Any) -> None:
        frame_rules[name] = (target, code, kw)
        frame_checks.append(pa.Check(lambda d, f=fn: f(d) | all_null, name=name, ignore_na=False))

    for col in entity.columns:
        if col.required:
            bad = invalid[col.key]
            add_frame(f"required:{col.key}", lambda d, k=col.key, b=bad: d[k].notna() | b, col, "required")
    for rule in entity.rules:
        target = entity.column(rule.target)
        if isinstance(rule, RequiredWhen):
            when = entity.column(rule.when)
            add_frame(f"{rule.code}:{rule.target}:{rule.when}",
                      lambda d, r=rule, b=invalid[rule.target]:
                      ~d[r.when].isin(r.values) | d[r.target].notna() | b,
                      target, rule.code, when=when)
        elif isinstance(rule, OnlyWhen):
            when = entity.column(rule.when)
            add_frame(f"{rule.code}:{rule.target}", lambda d, r=rule: d[r.target].isna() | d[r.when].isin(r.values),
                      target, rule.code, when=when, allowed="/".join(when.choice_label(v, lang) or v
                                                                   for v in rule.values))
        elif isinstance(rule, ProductEquals):
            add_frame(f"{rule.code}:{rule.target}", lambda d, r=rule: _product_ok(d, r), target, rule.code,
                      factors="×".join(entity.column(f).label(lang) for f in rule.factors), rule=rule)
        elif isinstance(rule, NotFuture):
            limit = today + timedelta(days=rule.days)
            add_frame(f"{rule.code}:{rule.target}",
                      lambda d, r=rule, lim=limit: _not_after(d[r.target], lim), target, rule.code)

    pschema = pa.DataFrameSchema(columns, checks=frame_checks, strict=False, coerce=False)
    try:
        pschema.validate(typed, lazy=True, inplace=True)  # (typed is ours: no defensive copy of it)
        return
    except SchemaErrors as exc:
        failures = exc.failure_cases
    seen: set[tuple[str, int, str]] = set()
    for rec in failures.itertuples(index=False):
        row = rec.index
        if row is None or (isinstance(row, float) and pd.isna(row)):
            continue
        row = int(row)
        if rec.schema_context == "Column":
            code, kw = col_rules.get((rec.column, int(rec.check_number)), ("invalid", {}))
            col = entity.column(rec.column)
        else:
            if rec.check not in frame_rules:
                continue
            col, code, kw = frame_rules[rec.check]
        marker = (col.key, row, code)
        if marker in seen:
            continue
        seen.add(marker)
        _report_rule(ctx, df, col, row, code, kw)


def _typed(df: pd.DataFrame, entity: Entity) -> pd.DataFrame:
    """The frame pandera checks: numbers as nullable floats, everything else as normalised.

    The ranges and the product rule compare with pandas' nullable semantics, so int and decimal
    columns go in as Float64.  Text columns stay object columns of str and None: a copy as pandas'
    string type (python storage) costs a pass over every cell and saves nothing, its null test being the
    same scan of an object array.
    """
    out: dict[str, Any] = {}
    for col in entity.columns:
        s = df[col.key]
        if col.type in ("int", "decimal"):
            out[col.key] = pd.array(s.to_numpy(), dtype="Float64")
        else:
            out[col.key] = s
    return pd.DataFrame(out, index=df.index, copy=False)


def _all_null(frame: pd.DataFrame) -> pd.Series:
    """``frame.isna().all(axis="columns")``, testing each column only on the rows still all null.

    The first required column leaves no row to test on a sheet that filled it in, so the scan of the
    other columns is skipped instead of repeated for each of them.
    """
    rows = np.arange(len(frame))
    for key in frame.columns:
        if not len(rows):
            break
        rows = rows[frame[key].iloc[rows].isna().to_numpy()]
    mask = np.zeros(len(frame), dtype=bool)
    mask[rows] = True
    return pd.Series(mask, index=frame.index)


def _not_after(dates: pd.Series, limit: date) -> pd.Series:
    return pd.Series([v is None or v <= limit for v in dates], index=dates.index, dtype=bool)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _product_ok(d: pd.DataFrame, rule: ProductEquals) -> pd.Series:
    target = pd.to_numeric(d[rule.target], errors="coerce")
    product = pd.Series(1.0, index=d.index)
    present = target.notna()
    for f in rule.factors:
        v = pd.to_numeric(d[f], errors="coerce")
        present &= v.notna()
        product = product * v
    # Yen amounts: allow rounding of a fractional unit price to the nearest yen.
    return ~present | ((target - product).abs() <= 0.5 + 1e-9 * product.abs())


def _report_rule(ctx: _SheetCtx, df: pd.DataFrame, col: Column, row: int, code: str,
                 kw: dict[str, Any]) -> None:
    lang = ctx.lang
    value = df.at[row, col.key]
    raw = ctx.sd.frame.at[row, col.key] if col.key in ctx.sd.frame.columns else value
    fields: dict[str, Any] = {"label": col.label(lang), "value": nz.display_text(raw)}
    cell: str | None = None
    if code in ("required_when", "only_when"):
        when: Column = kw["when"]
        fields.update(when_label=when.label(lang), when_value=when.choice_label(df.at[row, when.key], lang),
                      allowed=kw.get("allowed", ""))
        if col.key not in ctx.sd.letters and when.key in ctx.sd.letters:
            cell = ctx.sd.cell(when.key, row)
    elif code == "product_equals":
        rule: ProductEquals = kw["rule"]
        product = 1.0
        for f in rule.factors:
            product *= float(df.at[row, f])
        fields.update(factors=kw["factors"], expected=nz.display_text(product))
    elif code == "max_length":
        fields.update(length=len(str(value)), max=kw["max"])
    else:
        fields.update(kw)
    ctx.add(col, row, raw, code, ERROR, message(code, lang, **fields), cell=cell)


def _resolve_refs(ctx: _SheetCtx, df: pd.DataFrame, schema: Schema,
                  customers: pd.DataFrame | None) -> pd.DataFrame:
    """A reference holds the exact 顧客名 of a customer row in the same workbook, or a 顧客ID.

    A well-formed 顧客ID that is not on this workbook's 顧客 sheet is a reference to the master (a
    handout holds its owner's activities on customers someone else owns; a customer row deleted here
    keeps its activities): it is kept with no customer row, and merge checks it against the master.
    """
    ref = ctx.sd.entity.ref_column
    assert ref is not None
    lang = ctx.lang
    cust_entity = schema.entity("customers")
    id_key = cust_entity.id_column.key
    if "customer_index" not in ctx.shared:
        ctx.shared["customer_index"] = _customer_index(customers, id_key, ctx.shared)
    by_id, by_name, id_of_row, closest = ctx.shared["customer_index"]
    tags = _CustomerTags(customers, id_of_row, lang)
    hints_left = [50]
    id_parse = _id_parser(cust_entity.id_prefix)
    sheet = ctx.wb.sheets["customers"].sheet_name

    # Resolved once per distinct reference: a 300k-row activity sheet names ~100k customers.
    def resolve(value: str) -> tuple[int | None, str | None, str]:
        hits = by_name.get(value, [])
        if len(hits) == 1:  # the common case first: a name typed or picked from the dropdown
            return hits[0], None, ""
        as_id, problem = id_parse(value)
        if as_id is not None and problem is None:
            target = by_id.get(as_id)
            if target is None:
                return None, None, as_id  # a customer of the master: the ID stands for itself
            return target, None, ""
        if len(hits) > 1:
            return None, "ref.ambiguous", message("ref.ambiguous", lang, value=value, count=len(hits),
                                                  rows=", ".join(f"{sheet}!{r}" for r in hits[:5]),
                                                  choices=tags.choices(value, hits))
        qualified = _QUALIFIED.match(value)
        if qualified is not None and qualified["name"] in by_name:
            name, tag = qualified["name"], qualified["tag"].strip()
            candidates = by_name[name]
            chosen = tags.match(candidates, tag)
            if len(chosen) == 1:
                return chosen[0], None, ""
            return None, "ref.qualified", message("ref.qualified", lang, value=value, name=name, tag=tag,
                                                  rows=", ".join(f"{sheet}!{r}" for r in candidates[:5]),
                                                  choices=tags.choices(name, candidates))
        # A "did you mean" costs a scan of every name; a sheet with hundreds of unknown references
        # has a bigger problem than spelling, so only the first few get one.
        hints_left[0] -= 1
        close = closest(value) if hints_left[0] >= 0 else None
        hint = _hint("did_you_mean", lang, close) if close else ""
        return None, "ref.unknown", message("ref.unknown", lang, value=value, sheet=sheet, hint=hint)

    values = df[ref.key].to_numpy()
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    targets = np.empty(len(uniques) + 1, dtype=object)  # last slot: blank references (code -1)
    ids_of = np.empty(len(uniques) + 1, dtype=object)
    failures: dict[int, tuple[str, str]] = {}
    for i, v in enumerate(uniques):
        target, rule, text = resolve(v)
        targets[i] = target
        ids_of[i] = id_of_row.get(target) if target is not None else (text if rule is None else None)
        if rule is not None:
            failures[i] = (rule, text)
    if failures:
        for pos in np.flatnonzero(np.isin(codes, list(failures))):
            rule, text = failures[codes[pos]]
            ctx.add(ref, int(df.index[pos]), values[pos], rule, ERROR, text)
    rows = targets[codes]
    ids = ids_of[codes]
    df = df.copy()
    df[ref.key] = pd.Series(ids, index=df.index, dtype=object)
    df["_customer_row"] = pd.Series(rows, index=df.index, dtype=object)
    return df


#: A reference qualified by what tells same-named customers apart: ``佐藤運輸株式会社 (06-1234-5678)``,
#: ``佐藤運輸株式会社 (名古屋市)``, ``佐藤運輸株式会社 (行5)`` (half- or full-width brackets).
_QUALIFIED = re.compile(r"^(?P<name>.+?)\s*[(（](?P<tag>[^()（）]+)[)）]\s*$")
_ROW_TAG = re.compile(r"^(?:行|row)\s*(\d+)\s*(?:行目)?$", re.IGNORECASE)


class _CustomerTags:
    """What tells customer rows of the same name apart, as the dropdown shows it (template
    ``add_customer_labels``): the phone, else the address, else the row; an ID when the row has one."""

    def __init__(self, customers: pd.DataFrame | None, id_of_row: dict[int, Any], lang: Lang) -> None:
        self.customers = customers
        self.id_of_row = id_of_row
        self.lang = lang

    def _value(self, row: int, key: str) -> str:
        if self.customers is None or key not in self.customers:
            return ""
        v = self.customers.at[row, key]
        return "" if v is None or v != v else str(v)

    def match(self, rows: Sequence[int], tag: str) -> list[int]:
        """The rows ``tag`` points at: a row number, or the phone, e-mail, 法人番号 or (part of the)
        address of exactly the rows returned."""
        m = _ROW_TAG.match(nz.code(tag) or "")
        if m is not None:
            return [r for r in rows if r == int(m.group(1))]
        digits = nz.phone_digits_of_text(tag)
        folded = nz.fold_search(tag)
        hits: list[int] = []
        for r in rows:
            phone = nz.phone_digits_of_stored(self._value(r, "phone")) if self._value(r, "phone") else ""
            email = self._value(r, "email").casefold()
            corporate = self._value(r, "corporate_number")
            address = nz.fold_search(self._value(r, "address"))
            if ((digits and digits == phone) or (email and folded == nz.fold_search(email))
                    or (corporate and folded == corporate) or (folded and folded in address)):
                hits.append(r)
        return hits

    def choices(self, name: str, rows: Sequence[int]) -> str:
        """The references to type for the first rows, quoted: an ID, else ``name (tag)``."""
        out = []
        for r in rows[:5]:
            cid = self.id_of_row.get(r)
            if cid:
                out.append(str(cid))
                continue
            tag = f"{ROW_WORD[self.lang]}{r}"
            for key in ("phone", "address"):
                v = self._value(r, key)
                if v and self.match(rows, v) == [r]:
                    tag = v
                    break
            out.append(f"{name} ({tag})")
        return ("、" if self.lang == "ja" else ", ").join(
            (f"「{c}」" if self.lang == "ja" else f"\"{c}\"") for c in out)


def _customer_index(customers: pd.DataFrame | None, id_key: str, shared: dict[str, Any]) -> tuple[
        dict[str, int], dict[str, list[int]], dict[int, Any], _NameHints]:
    by_id: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    id_of_row: dict[int, Any] = {}
    if customers is not None:
        for row, cid, name in zip(customers.index.tolist(), customers[id_key].tolist(),
                                  customers["name"].tolist(), strict=True):
            id_of_row[row] = cid
            if cid:
                by_id[cid] = row
            if name:
                by_name.setdefault(name, []).append(row)
    return by_id, by_name, id_of_row, _NameHints(by_name, shared)


class _NameHints:
    """The customer name a mistyped reference most likely meant.

    Names are compared by company key (no 株式会社/㈱, width or spaces), so the commonest slip, a name
    typed without its legal form, is a dict look-up; rapidfuzz (C speed) handles real typos.
    """

    def __init__(self, names: Iterable[str], shared: dict[str, Any]) -> None:
        self.names = names
        self.shared = shared  # company keys the duplicate check already computed
        self.by_key: dict[str, str] | None = None  # built on the first unknown reference only

    def __call__(self, value: str) -> str | None:
        from rapidfuzz import fuzz, process

        if self.by_key is None:
            self.by_key = {}
            known: dict[Any, str] = self.shared.get("company_keys", {})
            for name in self.names:
                key = known.get(name)
                self.by_key.setdefault(key if key is not None else nz.company_key_of_stored(name), name)
            self.keys = list(self.by_key)
        key = nz.company_key_of_stored(value)
        if key in self.by_key:
            return self.by_key[key]
        hit = process.extractOne(key, self.keys, scorer=fuzz.ratio, score_cutoff=70)
        return self.by_key[hit[0]] if hit else None


def _duplicates_in_workbook(ctx: _SheetCtx, df: pd.DataFrame) -> None:
    """The same customer typed twice in one workbook: warn on the later row, pointing at the first.

    Names count only for companies: two individuals called 佐藤 花子 are usually two people, while two
    rows whose company key matches (㈱山田製作所 / 山田製作所株式会社) are usually one company.
    """
    entity = ctx.sd.entity
    keys: list[tuple[str, Callable[[Any], str]]] = []
    for key, fn in (("corporate_number", str), ("email", lambda v: str(v).casefold()),
                    ("phone", nz.phone_digits_of_stored)):
        if entity.has(key):
            keys.append((key, fn))
    if entity.has("name"):
        keys.append(("name", nz.company_key_of_stored))
    kinds = df["kind"] if "kind" in df else pd.Series("corporate", index=df.index)
    for key, fn in keys:
        col = entity.column(key)
        values = df[key]
        usable = values.notna() & ((kinds == "corporate") if key == "name" else True)
        values = values[usable]
        if values.empty:
            continue
        distinct = pd.unique(values.to_numpy())
        folded = dict(zip(distinct, map(fn, distinct), strict=True))
        if key == "name":
            ctx.shared["company_keys"] = folded
        k = pd.Series(list(map(folded.__getitem__, values.to_numpy())), index=values.index, dtype=object)
        k = k[k != ""]
        later = k.duplicated(keep="first")
        if not later.any():
            continue
        first_row = {fk: int(r) for r, fk in k[~later].items()}
        if key == "name":
            first_row = _same_name_not_told_apart(df, entity, k)
        for row, fk in k[later].items():
            if key == "name":
                if int(row) not in first_row:
                    continue
                fk = int(row)
            other = ctx.sd.cell(key, first_row[fk]) if key in ctx.sd.letters else str(first_row[fk])
            ctx.add(col, int(row), df.at[row, key], "duplicate", WARNING,
                    message("duplicate", ctx.lang, label=col.label(ctx.lang), other=other))


def _owner_unknown(wb: TeamWorkbook, schema: Schema, findings: list[Finding]) -> None:
    """A workbook that records no owner (written by pandas or by hand, or a template made without
    --owner) cannot fill blank 担当営業 / 対応者 / 担当: one finding says so and how to fix it, in place of
    a 「必須」 error on every such cell (the rows stay rejected)."""
    blank = [f for f in findings if f.rule == "required" and f.key == OWNER_DEFAULTED.get(f.entity)]
    if not blank:
        return
    drop = {id(f) for f in blank}
    findings[:] = [f for f in findings if id(f) not in drop]
    labels = "・".join(dict.fromkeys(f.column for f in blank))
    rows = len({(f.entity, f.row) for f in blank})
    first = blank[0]
    findings.append(Finding(str(wb.path), first.sheet, "", 0, "", "", first.entity, None, "owner.unknown",
                            ERROR, message("owner.unknown", wb.lang, labels=labels, rows=rows,
                                           first=first.address)))


#: Columns that tell two customers of the same name apart when both are filled in and differ.
_TELL_APART = (("phone", nz.phone_digits_of_stored), ("email", lambda v: str(v).casefold()),
               ("address", nz.fold_search), ("corporate_number", str))


def _same_name_not_told_apart(df: pd.DataFrame, entity: Entity, keys: pd.Series) -> dict[int, int]:
    """Later row -> the first earlier row of the same company name that nothing tells apart from it
    (no phone, e-mail, address or 法人番号 filled in on both and different): 佐藤運輸株式会社 in two
    cities is two customers, not one entered twice."""
    usable = [(k, fn) for k, fn in _TELL_APART if entity.has(k) and k in df]
    groups: dict[str, list[int]] = {}
    for row, fk in keys.items():
        groups.setdefault(fk, []).append(int(row))
    out: dict[int, int] = {}
    for rows in groups.values():
        if len(rows) < 2:
            continue
        facts = {r: {k: fn(v) for k, fn in usable if (v := df.at[r, k]) is not None and v == v and v != ""}
                 for r in rows}
        for i, r in enumerate(rows[1:], start=1):
            for earlier in rows[:i]:
                a, b = facts[r], facts[earlier]
                if not any(k in a and k in b and a[k] and b[k] and a[k] != b[k] for k, _ in usable):
                    out[r] = earlier
                    break
    return out


# --- entry points ---------------------------------------------------------------------------------

def validate_workbook(source: str | Path | TeamWorkbook, schema: Schema, *, today: date | None = None,
                      password: str | None = None) -> ValidationResult:
    """Validate one team workbook; raises UnreadableWorkbook when it cannot be read at all."""
    with paused_gc():
        return _validate_workbook(source, schema, today, password)


def _validate_workbook(source: str | Path | TeamWorkbook, schema: Schema, today: date | None,
                       password: str | None) -> ValidationResult:
    wb = source if isinstance(source, TeamWorkbook) else read_workbook(source, schema, password=password)
    today = today or date.today()
    lang = wb.lang
    findings: list[Finding] = []
    frames: dict[str, pd.DataFrame] = {}
    error_rows: dict[str, set[int]] = {}
    shared: dict[str, Any] = {}
    if wb.has_macros:
        first = schema.entities[0]
        findings.append(Finding(str(wb.path), wb.sheets[first.key].sheet_name, "", 0, "", "", first.key, "",
                                "macros", WARNING, message("macros", lang)))
    for entity in schema:
        sd = wb.sheets[entity.key]
        ctx = _SheetCtx(wb, sd, lang, findings, error_rows.setdefault(entity.key, set()), shared)
        for addr, text, close in sd.extra_headers:
            hint = _hint("rename_header", lang, close) if close else ""
            findings.append(Finding(str(wb.path), sd.sheet_name, addr, sd.header_row, text, "", entity.key,
                                    text, "extra_column", WARNING,
                                    message("extra_column", lang, value=text, hint=hint)))
        for addr, text in sd.stray_cells:
            row = int(re.sub(r"^[A-Z]+", "", addr))
            findings.append(Finding(str(wb.path), sd.sheet_name, addr, row, "", "", entity.key, text,
                                    "stray_cell", WARNING, message("stray_cell", lang, cell=addr, value=text)))
        frames[entity.key] = _validate_sheet(ctx, schema, today, frames.get("customers"))
    if not wb.meta.owner:
        _owner_unknown(wb, schema, findings)
    # The name hints hold `shared`, which holds them: a cycle that kept a list per customer name alive
    # until the next full garbage collection (each costs tens of ms with pandas loaded).
    shared.clear()
    order = {e.key: i for i, e in enumerate(schema)}
    findings.sort(key=lambda f: (order[f.entity], f.row, _col_order(f.cell)))
    return ValidationResult(wb, schema, frames, findings, error_rows)


def _col_order(cell: str) -> tuple[int, str]:
    m = re.match(r"^([A-Z]+)", cell)
    letters = m.group(1) if m else ""
    return (len(letters), letters)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the workbooks inside (:func:`xlcrm.intake.inputs.scan`, whose
    ``notes()`` name the other files found there)."""
    return scan(inputs).paths


def validate_paths(inputs: Sequence[str | Path], schema: Schema, *, today: date | None = None,
                   password: str | None = None,
                   progress: Callable[[Path], None] | None = None) -> list[ValidationResult | Unreadable]:
    results: list[ValidationResult | Unreadable] = []
    for path in expand_inputs(inputs):
        if progress:
            progress(path)
        try:
            results.append(validate_workbook(path, schema, today=today, password=password))
        except UnreadableWorkbook as exc:
            results.append(Unreadable(path, str(exc)))
    return results


# --- annotated and fixed copies -------------------------------------------------------------------

_FILL = FILLS
_SUMMARY_SHEET = SUMMARY_SHEET
_FIXES_SHEET = {"ja": "修正一覧", "en": "Fixes"}


#: Cells a copy edited through openpyxl may hold in merged ranges: openpyxl makes an object of every
#: cell a merge covers (about 400 bytes each), so one crafted ``<mergeCell ref="A2:XFD1048576"/>``
#: would take gigabytes; a workbook's real merges (a title, a header) are a few hundred cells.
MERGED_CELLS_BUDGET = 200_000
_MERGE_REF = re.compile(rb"<(?:\w+:)?mergeCell\b[^>]*?\bref\s*=\s*[\"']([A-Za-z]{1,3}\d{1,7}(?::[A-Za-z]{1,3}\d{1,7})?)[\"']")


def _check_merged_cells(path: Path, source: BinaryIO | None) -> None:
    """Refuse, in one line, a workbook whose merged ranges cover more cells than
    :data:`MERGED_CELLS_BUDGET` before openpyxl expands them."""
    import zipfile

    from openpyxl.utils.cell import range_boundaries

    if source is not None:
        source.seek(0)
    try:
        with zipfile.ZipFile(path if source is None else source) as z:
            total, widest = 0, ("", 0)
            for name in z.namelist():
                if not (name.startswith("xl/worksheets/") and name.endswith(".xml")):
                    continue
                for m in _MERGE_REF.finditer(z.read(name)):
                    ref = m.group(1).decode()
                    c1, r1, c2, r2 = range_boundaries(ref if ":" in ref else f"{ref}:{ref}")
                    area = (c2 - c1 + 1) * (r2 - r1 + 1)
                    total += area
                    widest = max(widest, (ref, area), key=lambda t: t[1])
    except (zipfile.BadZipFile, ValueError, TypeError):
        return  # not for this check to say: openpyxl's own reading reports it
    finally:
        if source is not None:
            source.seek(0)
    if total > MERGED_CELLS_BUDGET:
        raise XlcrmError(f"its merged cells cover {total:,} cells ({widest[0]} alone {widest[1]:,}), too many for a "
                         "marked or fixed copy; unmerge them (セルの結合を解除) and run again", path=str(path))


def _load_for_edit(path: Path, source: BinaryIO | None = None) -> Any:
    import openpyxl

    _check_merged_cells(path, source)
    # Without keep_vba a macro-enabled workbook's VBA project is left out: copies carry no macros.
    book = openpyxl.load_workbook(path if source is None else source, rich_text=True)
    restore_meta_state(book)
    return book


def _put_text(cell: Any, text: str) -> None:
    """Store text as text: openpyxl would turn a string starting with "=" into a formula (and refuse a
    control character, which is stored in OOXML's escaped form instead)."""
    from xlcrm.xlsx.cells import ooxml_text
    from xlcrm.xlsx.writer import looks_like_formula

    cell.value = ooxml_text(text)
    cell.data_type = "s"
    if looks_like_formula(text):
        cell.quotePrefix = True


def _save(book: Any, out: Path, password: str | None = None) -> Path:
    from xlcrm.xlsx.writer import atomic_write, sealed

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp, sealed(tmp, password) as target:
        book.save(target)
    return out


def annotate(result: ValidationResult, out: str | Path, *, source: BinaryIO | None = None,
             password: str | None = None) -> Path:
    """A copy with bad cells coloured, a comment on each and a linked list of findings.

    The package is patched in place when its structure allows (see :mod:`xlcrm.xlsx.annotate`: seconds
    faster per 10,000 rows); anything it does not handle goes through openpyxl instead.  ``source``
    is the workbook's plain bytes in memory (a decrypted input) instead of its file; ``password``
    encrypts the copy before anything of it reaches the disk.
    """
    from xlcrm.xlsx.annotate import FastPathUnsupported, annotate_fast

    try:
        return annotate_fast(result, out, source=source, password=password)
    except FastPathUnsupported:
        if source is not None:
            source.seek(0)
        return _annotate_openpyxl(result, out, source, password)


def _annotate_openpyxl(result: ValidationResult, out: str | Path, source: BinaryIO | None = None,
                       password: str | None = None) -> Path:
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill

    from xlcrm.xlsx.cells import ooxml_text

    out = Path(out)
    book = _load_for_edit(result.path, source)
    lang = result.workbook.lang
    fills = {k: PatternFill("solid", start_color=v, end_color=v) for k, v in _FILL.items()}
    by_cell: dict[tuple[str, str], list[Finding]] = {}
    for f in result.findings:
        if f.cell:
            by_cell.setdefault((f.sheet, f.cell), []).append(f)
    for (sheet, cell), fs in by_cell.items():
        ws = book[sheet]
        severity = ERROR if any(f.severity == ERROR for f in fs) else WARNING
        ws[cell].fill = fills[severity]
        comment = Comment(ooxml_text("\n".join(f"• {f.message}" for f in fs)), "xlcrm")
        comment.width, comment.height = 320, 40 + 40 * len(fs)
        ws[cell].comment = comment

    title = _SUMMARY_SHEET[lang]
    if title in book.sheetnames:
        del book[title]
    ws = book.create_sheet(title, 0)
    ws.append(list(summary_headings(lang)))
    for c in ws[1]:
        c.font = Font(bold=True)
    for f in result.findings:
        ws.append([severity_label(f.severity, lang), f.sheet, f.cell, f.column])
        r = ws.max_row
        _put_text(ws.cell(r, 5), nz.display_text(f.value))
        _put_text(ws.cell(r, 6), f.message)
        ws.cell(r, 1).fill = fills[f.severity]
        if f.cell:
            link = ws.cell(r, 3)
            link.hyperlink = f"#'{f.sheet}'!{f.cell}"
            link.font = Font(color="0563C1", underline="single")
    for letter, width in zip("ABCDEF", (8, 12, 8, 16, 24, 90), strict=True):
        ws.column_dimensions[letter].width = width
    ws.freeze_panes = "A2"
    # Only the list is selected: two selected tabs open "grouped", and typing would edit both sheets.
    for sheet in book.worksheets:
        sheet.sheet_view.tabSelected = sheet is ws
    book.active = 0
    return _save(book, out, password)


@dataclass
class Fix:
    sheet: str
    cell: str
    before: Any
    after: Any


#: Column types whose normalised value is an unambiguous repair of what was typed.
FIXABLE = ("text", "name", "kana", "phone", "postal", "email", "corporate_number", "date", "choice",
           "int", "decimal", "ref")


def planned_fixes(result: ValidationResult) -> list[tuple[SheetData, Column, int, Any, Any]]:
    """Cells whose normalised value differs from what was typed, and which have no error."""
    bad_cells = {(f.sheet, f.cell) for f in result.errors}
    out = []
    for entity in result.schema:
        sd = result.workbook.sheets[entity.key]
        norm = result.frames[entity.key]
        for col in entity.columns:
            if col.type not in FIXABLE or col.key not in sd.frame.columns:
                continue
            raw = sd.frame[col.key]
            for row, before in raw[raw.notna()].items():
                after = norm.at[row, col.key] if col.type != "ref" else _ref_text(before)
                if col.type == "choice":
                    after = col.choice_label(after, result.workbook.lang)
                if after is None or (sd.sheet_name, sd.cell(col.key, int(row))) in bad_cells:
                    continue
                if _same(before, after):
                    continue
                out.append((sd, col, int(row), before, after))
    return out


def _ref_text(v: Any) -> Any:
    return nz.text(v)


def _same(before: Any, after: Any) -> bool:
    if isinstance(after, date) and not isinstance(after, datetime):
        return isinstance(before, date) and (before.date() if isinstance(before, datetime) else before) == after
    if isinstance(after, int | float) and isinstance(before, int | float):
        return float(before) == float(after)
    return before == after


def fix(result: ValidationResult, out: str | Path) -> tuple[Path, list[Fix]]:
    """A normalised copy (width, hyphens, kana, wareki dates, postal codes ...) and what changed."""
    from openpyxl.styles import Font

    out = Path(out)
    book = _load_for_edit(result.path)
    lang = result.workbook.lang
    fixes: list[Fix] = []
    for sd, col, row, before, after in planned_fixes(result):
        cell = book[sd.sheet_name][sd.cell(col.key, row)]
        if isinstance(after, date):
            cell.value = after
            cell.number_format = col.number_format or "yyyy/mm/dd"
        elif isinstance(after, str):
            _put_text(cell, after)
        else:
            cell.value = after
        fixes.append(Fix(sd.sheet_name, sd.cell(col.key, row), before, after))
    title = _FIXES_SHEET[lang]
    if title in book.sheetnames:
        del book[title]
    ws = book.create_sheet(title)
    ws.append(["シート", "セル", "修正前", "修正後"] if lang == "ja" else ["Sheet", "Cell", "Before", "After"])
    for c in ws[1]:
        c.font = Font(bold=True)
    for f in fixes:
        ws.append([f.sheet, f.cell])
        _put_text(ws.cell(ws.max_row, 3), nz.display_text(f.before))
        _put_text(ws.cell(ws.max_row, 4), nz.display_text(f.after))
        link = ws.cell(ws.max_row, 2)
        link.hyperlink = f"#'{f.sheet}'!{f.cell}"
    return _save(book, out), fixes
