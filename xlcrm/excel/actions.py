"""What the ribbon buttons do, written once against the workbook adapter.

Each action takes a :class:`~xlcrm.excel.adapter.WorkbookAdapter` and a :class:`Context` and returns
the message to show (or None when the result speaks for itself, e.g. a selected new row).  They run
unchanged in Excel (xlwings adapter), in the CLI and in tests (openpyxl adapter).

Every ribbon click is a fresh Python process, so this module imports nothing heavy at import time:
search and history need only sqlite3 and the schema; pandas/pandera load only for 入力チェック.

Sheets the add-in writes (検索結果, 顧客履歴, エラー一覧) are *views*: rebuilt on every click, never read
back as data (the reader only reads the five entity sheets).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlcrm.api import Master
from xlcrm.errors import UnreadableWorkbook, XlcrmError
from xlcrm.excel.adapter import (
    ERROR_FILL,
    HEADER_FILL,
    LOCAL_FILL,
    OVERDUE_FILL,
    WARNING_FILL,
    WorkbookAdapter,
    link_target,
)
from xlcrm.normalize import fold_search
from xlcrm.schema import LANGS, META_SHEET, Entity, Lang, Schema, fold_header
from xlcrm.store import db
from xlcrm.store.url import store_url
from xlcrm.views.search import customers_by_identifier
from xlcrm.xlsx.cells import column_index
from xlcrm.xlsx.marks import SUMMARY_SHEET, severity_label, summary_headings

#: Sheets written by the add-in, per language.
SEARCH_SHEET = {"ja": "検索結果", "en": "Search results"}
HISTORY_SHEET = {"ja": "顧客履歴", "en": "Customer history"}
ERRORS_SHEET = SUMMARY_SHEET
#: Rows scanned for a header (a title row or two above it is common), as in the reader.
HEADER_SCAN_ROWS = 10
#: Where the view sheets keep what they were built from (so 最新化 can rebuild them): cell B1.
_KEY_ROW, _KEY_COL = 1, 2
#: How each finding starts in a cell note written by 入力チェック (so the next check finds its own notes).
MARK_BULLET = "• "
#: The search sheet's filters, in rows B2… under the query: customers columns people make lists by.
SEARCH_FILTERS = ("owner", "status", "prefecture")

_W: dict[str, dict[str, str]] = {
    "ja": {
        "query": "検索語", "filters_hint": "担当営業・ステータス・都道府県を入力して検索（または最新化）すると絞り込めます。",
        "empty": "検索語を入力してください（顧客名・フリガナ・電話番号・メールアドレスなどの一部）。",
        "found": "{n}件（{today} 時点のマスタ{extra}）", "extra": "とこのブックの未統合の行",
        "why": "一致した理由", "last_contact": "最終接触日", "where": "場所", "master": "マスタ",
        "workbook": "このブック", "none_found": "「{q}」に一致する顧客は見つかりませんでした。",
        "customer": "顧客", "made": "{today} 作成（マスタ: {master}）", "won_total": "受注金額合計",
        "won_deals": "受注件数", "open_deals": "進行中の案件", "todos": "未完了のTODO",
        "overdue": "うち期限切れ", "timeline": "履歴（新しい順）", "date": "日付", "kind": "種類",
        "id": "ID", "title": "内容", "detail": "詳細", "who": "担当", "status": "状態",
        "kinds": "activity=活動,deal=取引,todo=TODO,change=変更", "contacts": "担当者",
        "merged_ids": "統合された重複ID", "changes": "変更履歴（取込・判断ごと、新しい順）", "source": "取込元",
        "pick_row": "顧客の行のセルを選んでから押してください"
        "（顧客・顧客ID の列がある表、または検索結果の行）。",
        "no_customer": "{sheet} の {row} 行目に顧客が入力されていません。",
        "not_merged": "「{name}」はまだマスタに統合されていないため、履歴はありません（次回の統合後に表示できます）。",
        "no_master": "マスタの場所が設定されていません。管理者に `xlcrm addin install --master マスタのパス` "
        "の実行を依頼してください。",
        "master_missing": "マスタが見つかりません: {path}。ネットワークドライブに接続されているか確認してください。",
        "valid_ok": "入力チェック: 問題は見つかりませんでした。",
        "valid_bad": "入力チェック: エラー {e} 件、警告 {w} 件。色の付いたセルと「{sheet}」シートを確認してください。",
        "no_activities": "活動履歴シートが見つかりません。標準のブックで使ってください。",
        "no_owner": "活動を追加しました（{row} 行目）。このブックに担当者名が設定されていないため、対応者を入力してください。",
        "refreshed": "{views} を最新のマスタで作り直しました。",
        "nothing": "作り直す検索結果・顧客履歴はありません。",
        "stale": "マスタはこのブックの作成後（{created}）に統合されています（最新: {last}）。"
        "他の人の変更を含む最新の顧客データが必要なら、管理者に新しいブックの配布を依頼してください。"
        "このブックの顧客・活動の行は、あなたの未統合の入力を消さないよう上書きしません。",
        "fresh": "このブックは最新の統合（{last}）以降に作成されています。",
        "unknown_age": "このブックの作成日時が分からないため、マスタとの新旧は判断できません。",
        "no_merge": "マスタにはまだ統合の記録がありません。",
    },
    "en": {
        "query": "Search", "filters_hint": "Type a sales rep, status or prefecture above and search (or "
        "refresh) to narrow the list.",
        "empty": "Type something to search for (part of a name, kana, phone number or e-mail).",
        "found": "{n} found (master as of {today}{extra})", "extra": " and this workbook's unmerged rows",
        "why": "Why it matched", "last_contact": "Last contact", "where": "Where", "master": "Master",
        "workbook": "This workbook", "none_found": "No customer matches \"{q}\".",
        "customer": "Customer", "made": "Made {today} (master: {master})", "won_total": "Won amount (total)",
        "won_deals": "Won deals", "open_deals": "Open deals", "todos": "Open TODOs",
        "overdue": "of which overdue", "timeline": "Timeline (newest first)", "date": "Date", "kind": "Kind",
        "id": "ID", "title": "What", "detail": "Detail", "who": "Who", "status": "Status",
        "kinds": "activity=Activity,deal=Deal,todo=TODO,change=Change", "contacts": "Contacts",
        "merged_ids": "Merged duplicate IDs", "changes": "Changes (per import or decision, newest first)",
        "source": "From", "pick_row": "Select a cell in a customer's row first (a table "
        "with a Customer or Customer ID column, or a Search results row).",
        "no_customer": "Row {row} of {sheet} names no customer.",
        "not_merged": "\"{name}\" is not in the master yet, so it has no history (it will after the next merge).",
        "no_master": "The master's location is not set. Ask the admin to run `xlcrm addin install --master PATH`.",
        "master_missing": "Master not found: {path}. Check that the network drive is connected.",
        "valid_ok": "Validate: no problems found.",
        "valid_bad": "Validate: {e} errors, {w} warnings. See the coloured cells and the {sheet} sheet.",
        "no_activities": "No Activities sheet found; use the standard workbook.",
        "no_owner": "Activity added (row {row}). This workbook has no owner name set: fill in Handled by.",
        "refreshed": "Rebuilt {views} from the current master.",
        "nothing": "No Search results or History sheet to rebuild.",
        "stale": "The master was merged after this workbook was made ({created}; latest merge {last}). "
        "For current customer data including everyone's changes, ask the admin for a fresh workbook. "
        "This workbook's own rows are never overwritten, so your unmerged entries are safe.",
        "fresh": "This workbook was made after the latest merge ({last}).",
        "unknown_age": "This workbook's creation time is unknown, so its age cannot be compared with the master.",
        "no_merge": "The master has no merge recorded yet.",
    },
}


@dataclass
class Context:
    """What an action needs besides the workbook: the schema, the master, the typed query, today."""

    schema: Schema
    master: Path | None = None
    query: str = ""
    today: dt.date | None = None
    limit: int = 50
    #: Where the master path came from, for messages ("xlcrm.conf", "meta", ...).
    master_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def day(self) -> dt.date:
        return self.today or dt.date.today()


# --- reading the open workbook ---------------------------------------------------------------------

@dataclass
class Table:
    """A header row and the rows under it, found in a sheet's values (no reader: the book is live)."""

    sheet: str
    header_row: int
    columns: dict[str, int]  # column key -> 1-based column
    rows: dict[int, list[Any]]  # Excel row -> values of that row (whole row)

    def get(self, row: int, key: str) -> Any:
        values = self.rows.get(row)
        col = self.columns.get(key)
        if values is None or col is None or col > len(values):
            return None
        return values[col - 1]

    @property
    def last_row(self) -> int:
        return max(self.rows, default=self.header_row)


def workbook_lang(book: WorkbookAdapter, schema: Schema) -> Lang:
    """The workbook's language from its meta sheet, else from its sheet names; Japanese by default."""
    lang = read_meta(book).get("lang")
    if lang in LANGS:
        return lang  # type: ignore[return-value]
    names = set(book.sheet_names())
    if any(e.en in names for e in schema) and not any(e.ja in names for e in schema):
        return "en"
    return "ja"


def read_meta(book: WorkbookAdapter) -> dict[str, str]:
    if META_SHEET not in book.sheet_names():
        return {}
    out: dict[str, str] = {}
    for row in book.read_sheet(META_SHEET):
        if len(row) >= 2 and isinstance(row[0], str) and row[0].strip():
            out[row[0].strip()] = "" if row[1] is None else str(row[1]).strip()
    return out


def find_table(book: WorkbookAdapter, sheet: str, lookup: Mapping[str, str], *, min_hits: int = 2,
               rows: list[list[Any]] | None = None) -> Table | None:
    """The header row within the first rows holding the most known headers (at least ``min_hits``)."""
    values = book.read_sheet(sheet) if rows is None else rows
    best, best_hits, best_cols = None, 0, {}
    for i, row in enumerate(values[:HEADER_SCAN_ROWS]):
        cols: dict[str, int] = {}
        for j, v in enumerate(row):
            if isinstance(v, str):
                key = lookup.get(fold_header(v))
                if key is not None and key not in cols:
                    cols[key] = j + 1
        if len(cols) > best_hits:
            best, best_hits, best_cols = i, len(cols), cols
    if best is None or best_hits < min_hits:
        return None
    body = {i + 1: r for i, r in enumerate(values) if i > best and any(v not in (None, "") for v in r)}
    return Table(sheet, best + 1, best_cols, body)


def entity_sheet(book: WorkbookAdapter, schema: Schema, entity_key: str) -> str | None:
    lookup = schema.sheet_lookup()
    return next((s for s in book.sheet_names() if lookup.get(fold_header(s)) == entity_key), None)


def entity_table(book: WorkbookAdapter, schema: Schema, entity_key: str) -> Table | None:
    sheet = entity_sheet(book, schema, entity_key)
    if sheet is None:
        return None
    return find_table(book, sheet, schema.entity(entity_key).header_lookup())


@dataclass(frozen=True)
class CustomerRef:
    """The customer a row points at: its ID when the row has one, else the name typed."""

    customer_id: str | None
    name: str | None
    sheet: str
    row: int

    @property
    def typed(self) -> str:
        return self.customer_id or self.name or ""


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip()
    return s or None


def customer_lookup(schema: Schema) -> dict[str, str]:
    """Headers that name a customer, in any sheet: 顧客ID (``customer_id``), 顧客名 (``name``), 顧客 (``ref``)."""
    cust = schema.entity("customers")
    out: dict[str, str] = {}
    for col, key in ((cust.id_column, "customer_id"), (cust.column("name"), "name")):
        for s in (col.key, col.ja, col.en, *col.aliases):
            out[fold_header(s)] = key
    for e in schema:
        ref = e.ref_column
        if ref is not None:
            for s in (ref.ja, ref.en):
                out.setdefault(fold_header(s), "ref")
    return out


def customer_at(book: WorkbookAdapter, schema: Schema, lang: Lang) -> CustomerRef:
    """The customer of the active cell's row: any table with a 顧客 or 顧客ID column, 検索結果, 顧客履歴."""
    sheet, row, _col = book.active_cell()
    w = _W[lang]
    if sheet in HISTORY_SHEET.values():
        cid = _text(_cell(book.read_sheet(sheet), _KEY_ROW, _KEY_COL))
        if cid:
            return CustomerRef(cid, None, sheet, row)
    lookup = customer_lookup(schema)
    if schema.sheet_lookup().get(fold_header(sheet)) == "customers":
        # On the customer sheet, 顧客名 is the customer itself (elsewhere a 顧客 column is a reference).
        lookup.update(schema.entity("customers").header_lookup())
    table = find_table(book, sheet, lookup, min_hits=1)
    if table is None or not ({"customer_id", "name", "ref"} & table.columns.keys()) or row <= table.header_row:
        raise XlcrmError(w["pick_row"])
    cid = _text(table.get(row, "customer_id"))
    name = _text(table.get(row, "name")) if "customer_id" in table.columns or sheet in SEARCH_SHEET.values() \
        or schema.sheet_lookup().get(fold_header(sheet)) == "customers" else None
    ref = _text(table.get(row, "ref"))
    if cid is None and ref is not None:
        if _looks_like_id(ref, schema, "customers"):
            cid = ref
        else:
            name = name or ref
    if cid is None and name is None:
        raise XlcrmError(w["no_customer"].format(sheet=sheet, row=row))
    return CustomerRef(cid, name, sheet, row)


def _looks_like_id(value: str, schema: Schema, entity_key: str) -> bool:
    prefix = schema.entity(entity_key).id_prefix
    head, _, digits = value.partition("-")
    return head.upper() == prefix and digits.isdigit()


def _cell(rows: list[list[Any]], row: int, col: int) -> Any:
    if row - 1 < len(rows) and col - 1 < len(rows[row - 1]):
        return rows[row - 1][col - 1]
    return None


# --- the master -------------------------------------------------------------------------------------

def master_of(ctx: Context, lang: Lang) -> Master:
    """The master the ribbon reads (:class:`xlcrm.api.Master`), after checks said in the workbook's language.

    With a PostgreSQL master (``XLCRM_DB``, or ``[store] url`` in the xlcrm.toml the add-in reads) the
    search and the history read the server, as the login of that URL: no master.db is needed on the
    PC, and the server shows only what the login's role may see."""
    w = _W[lang]
    if store_url(ctx.schema) is not None:
        return Master(Path(ctx.master or "master.xlsx").with_suffix(".xlsx"), schema=ctx.schema)
    if ctx.master is None:
        raise XlcrmError(w["no_master"])
    master = Path(ctx.master)
    path = master if master.suffix.lower() == ".db" else db.db_path_for(master)
    if not path.exists():
        raise XlcrmError(w["master_missing"].format(path=path))
    return Master(path.with_suffix(".xlsx"), schema=ctx.schema)


def open_master(ctx: Context, lang: Lang) -> sqlite3.Connection:
    """The master's database for reading: master.db, or the PostgreSQL master's reader (the same queries)."""
    server = store_url(ctx.schema)
    if server is None:
        return master_of(ctx, lang).connect()
    from xlcrm.store.pg import reader

    return reader(server)  # type: ignore[return-value]


def master_name(ctx: Context) -> str:
    """Where the master is, as the view sheets name it: its path, or the server's URL (no password)."""
    server = store_url(ctx.schema)
    return str(server) if server is not None else str(ctx.master)


def last_merge(conn: sqlite3.Connection) -> str | None:
    """When the latest successful merge finished (ISO), from the master's run log."""
    return db.last_finished_run(conn)


# --- writing view sheets ----------------------------------------------------------------------------

def _write_view(book: WorkbookAdapter, sheet: str, top: Sequence[Sequence[Any]], header: Sequence[str],
                body: Sequence[Sequence[Any]], widths: Sequence[float]) -> int:
    """A view sheet: a few lines on top, a blank line, a styled header, the rows. Returns the header row."""
    book.reset_sheet(sheet)
    book.write_block(sheet, 1, 1, top)
    header_row = len(top) + 2
    book.write_block(sheet, header_row, 1, [list(header)])
    book.fill(sheet, header_row, 1, HEADER_FILL, ncols=len(header))
    book.bold(sheet, header_row, 1, ncols=len(header))
    if body:
        book.write_block(sheet, header_row + 1, 1, body)
    book.set_widths(sheet, widths)
    return header_row


def _record_rows(book: WorkbookAdapter, schema: Schema, entity_key: str) -> dict[str, tuple[str, int, int]]:
    """Record ID -> (sheet, row, id column) for the entity's rows in the open workbook."""
    table = entity_table(book, schema, entity_key)
    if table is None:
        return {}
    idk = schema.entity(entity_key).id_column.key
    col = table.columns.get(idk)
    if col is None:
        return {}
    out = {}
    for row in table.rows:
        rid = _text(table.get(row, idk))
        if rid:
            out[rid] = (table.sheet, row, col)
    return out


# --- 顧客検索 -----------------------------------------------------------------------------------------

def unmerged_rows(book: WorkbookAdapter, schema: Schema) -> list[dict[str, Any]]:
    """The workbook's customers and contacts without an ID yet, for ``search(extra_rows=...)``."""
    out: list[dict[str, Any]] = []
    for key in ("customers", "contacts"):
        table = entity_table(book, schema, key)
        if table is None:
            continue
        entity = schema.entity(key)
        idk = entity.id_column.key
        label_col = table.columns.get("name") or min(table.columns.values())
        for row in table.rows:
            if _text(table.get(row, idk)):
                continue
            rec: dict[str, Any] = {k: table.get(row, k) for k in table.columns}
            if not any(_text(v) for v in rec.values()):
                continue
            rec["_entity"] = key
            rec["_ref"] = link_target(table.sheet, row, label_col)
            out.append(rec)
    return out


def search_action(book: WorkbookAdapter, ctx: Context) -> str | None:

    schema = ctx.schema
    lang = workbook_lang(book, schema)
    w = _W[lang]
    query = ctx.query.strip()
    sheet = SEARCH_SHEET[lang]
    filters = search_filters(book, schema, lang)
    if not query and not any(filters.values()):
        raise XlcrmError(w["empty"])
    extra = unmerged_rows(book, schema)
    hits = master_of(ctx, lang).search(query, limit=ctx.limit, extra_rows=extra, lang=lang,
                                       me=read_meta(book).get("owner") or None, **filters)
    cust, cont = schema.entity("customers"), schema.entity("contacts")
    header = [cust.id_column.label(lang), cust.column("name").label(lang), cust.column("kana").label(lang)
              if cust.has("kana") else w["customer"], cont.label(lang), w["why"], cust.column("owner").label(lang),
              cust.column("phone").label(lang) if cust.has("phone") else "TEL", w["last_contact"], w["where"]]
    customers = _record_rows(book, schema, "customers")
    contacts = _record_rows(book, schema, "contacts")
    body, links, local = [], [], []
    for i, h in enumerate(hits):
        body.append([h.customer_id, h.name, h.kana, h.contact_name, h.why, h.owner, h.phone,
                     _as_date(h.last_contact), w["workbook"] if h.source == "workbook" else w["master"]])
        target = None
        if h.source == "workbook" and h.ref:
            target = h.ref
        elif h.contact_id and h.contact_id in contacts:
            target = link_target(*contacts[h.contact_id])
        elif h.customer_id and h.customer_id in customers:
            target = link_target(*customers[h.customer_id])
        links.append((i, target))
        if h.source == "workbook":
            local.append(i)
    found = w["found"].format(n=len(hits), today=ctx.day.isoformat(), extra=w["extra"] if extra else "")
    top = [[w["query"], query], *([label, filters[key]] for key, label in _filter_labels(schema, lang)),
           [w["filters_hint"]], [found]]
    header_row = _write_view(book, sheet, top, header, body, [12, 28, 22, 16, 44, 14, 15, 12, 12])
    for i, target in links:
        if target is not None:
            book.hyperlink(sheet, header_row + 1 + i, 1 if hits[i].customer_id else 2, target)
    for i in local:
        book.fill(sheet, header_row + 1 + i, 1, LOCAL_FILL, ncols=len(header))
    book.select(sheet, header_row + 1 if hits else 1, 1)
    if not hits:
        return w["none_found"].format(q=query)
    return None


def _filter_labels(schema: Schema, lang: Lang) -> list[tuple[str, str]]:
    """The search sheet's filter rows under the query (B2…): (filter key, the customers column's label)."""
    cust = schema.entity("customers")
    return [(key, cust.column(key).label(lang)) for key in SEARCH_FILTERS if cust.has(key)]


def search_filters(book: WorkbookAdapter, schema: Schema, lang: Lang) -> dict[str, str | None]:
    """Filters typed on the search sheet (担当営業, ステータス, 都道府県 in B2…), kept from one search to
    the next; each None when blank or when the sheet is not there yet."""
    out: dict[str, str | None] = dict.fromkeys(SEARCH_FILTERS)
    sheet = SEARCH_SHEET[lang]
    if sheet not in book.sheet_names():
        return out
    rows = book.read_sheet(sheet)
    for i, (key, label) in enumerate(_filter_labels(schema, lang), start=_KEY_ROW + 1):
        if _text(_cell(rows, i, 1)) == label:
            out[key] = _text(_cell(rows, i, _KEY_COL)) or None
    return out


def _as_date(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 10:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return value
    return value


# --- 顧客履歴 -----------------------------------------------------------------------------------------

def history_action(book: WorkbookAdapter, ctx: Context) -> str | None:
    schema = ctx.schema
    lang = workbook_lang(book, schema)
    ref = customer_at(book, schema, lang)
    return _write_history(book, ctx, lang, ref.typed, ref.name)


def _write_history(book: WorkbookAdapter, ctx: Context, lang: Lang, typed: str, name: str | None) -> str | None:

    schema = ctx.schema
    w = _W[lang]
    m = master_of(ctx, lang)
    try:
        h = m.history(typed, today=ctx.day, lang=lang)
    except XlcrmError:
        if name is not None and typed == name:
            conn = open_master(ctx, lang)
            try:
                known = _in_master(conn, schema, name)
            finally:
                conn.close()
            if not known:
                raise XlcrmError(w["not_merged"].format(name=name)) from None
        raise
    cust = schema.entity("customers")
    s = h.summary
    sheet = HISTORY_SHEET[lang]
    kinds = dict(p.split("=") for p in w["kinds"].split(","))

    def label(key: str, fallback: str) -> str:
        return cust.column(key).label(lang) if cust.has(key) else fallback

    top: list[list[Any]] = [
        [cust.id_column.label(lang), h.customer_id],  # B1: what 最新化 rebuilds from
        [label("name", w["customer"]), h.name],
        [label("kana", "kana"), h.kana],
        [label("owner", "owner"), s.owner],
        [label("status", "status"), s.status_label],
        [label("dm_consent", "DM"), s.dm_consent_label],
        [w["won_total"], s.won_total],
        [w["won_deals"], s.won_deals],
        [w["open_deals"], s.open_deals],
        [w["last_contact"], _as_date(s.last_contact)],
        [w["todos"], s.open_todos, w["overdue"], s.overdue_todos],
    ]
    if h.contacts:
        names = ", ".join(str(c.get("name")) for c in h.contacts if c.get("name"))
        top.append([w["contacts"], names])
    if h.merged_ids:
        top.append([w["merged_ids"], ", ".join(h.merged_ids)])
    if h.merged_away:
        top.append([h.merged_away])
    top.append([w["made"].format(today=ctx.day.isoformat(), master=master_name(ctx))])
    header = [w["date"], w["kind"], w["id"], w["title"], w["detail"], w["who"], w["status"]]
    body = [[_as_date(e.date), kinds.get(e.kind, e.kind), e.record_id, e.title, e.detail, e.who, e.status]
            for e in h.timeline]
    header_row = _write_view(book, sheet, top, header, body, [16, 30, 12, 40, 40, 14, 14])
    book.bold(sheet, 1, 1, ncols=2)
    if h.merged_away:
        book.bold(sheet, len(top) - 1, 1)
        book.fill(sheet, len(top) - 1, 1, OVERDUE_FILL)
    for i, e in enumerate(h.timeline):
        if e.overdue:
            book.fill(sheet, header_row + 1 + i, 1, OVERDUE_FILL, ncols=len(header))
    if h.changes:
        # Field changes below the records, one bold line per import or decision and its rows beneath.
        row = header_row + len(body) + 2
        book.write_block(sheet, row, 1, [[w["changes"]]])
        book.bold(sheet, row, 1)
        for g in h.changes:
            row += 1
            book.write_block(sheet, row, 1, [[_as_date(g.date), kinds["change"], g.run_id, g.title, g.detail,
                                              g.who, g.source_file]])
            book.bold(sheet, row, 1, ncols=len(header))
            rows = [[None, None, e.record_id, e.title, e.detail, e.who, e.status] for e in g.entries]
            book.write_block(sheet, row + 1, 1, rows)
            row += len(rows)
    book.select(sheet, 1, 2)
    return None


def _in_master(conn: sqlite3.Connection, schema: Schema, name: str) -> bool:

    want = fold_search(name)
    return any(fold_search(n) == want for n in db.active_customer_names(conn))


# --- 入力チェック -------------------------------------------------------------------------------------

def snapshot(book: WorkbookAdapter, path: Path, *, skip: Iterable[str] = ()) -> Path:
    """The open workbook's values as an .xlsx, cell for cell, so validation sees unsaved edits too."""
    from xlcrm.xlsx.writer import close_workbook, open_workbook

    skipped = set(skip)
    wb = open_workbook(path)
    date_fmt = wb.add_format({"num_format": "yyyy/mm/dd"})
    stamp_fmt = wb.add_format({"num_format": "yyyy/mm/dd hh:mm:ss"})
    for name in book.sheet_names():
        if name in skipped:
            continue
        ws = wb.add_worksheet(name)
        for r, row in enumerate(book.read_sheet(name)):
            for c, v in enumerate(row):
                if v is None:
                    continue
                if isinstance(v, bool):
                    ws.write_boolean(r, c, v)
                elif isinstance(v, int | float):
                    ws.write_number(r, c, v)
                elif isinstance(v, dt.datetime):
                    ws.write_datetime(r, c, v, date_fmt if v.time() == dt.time() else stamp_fmt)
                elif isinstance(v, dt.date):
                    ws.write_datetime(r, c, dt.datetime.combine(v, dt.time()), date_fmt)
                else:
                    ws.write_string(r, c, str(v))
    close_workbook(wb)
    return path


def _previous_marks(book: WorkbookAdapter, sheet: str) -> list[tuple[str, str]]:
    """(sheet, cell) pairs listed on an earlier エラー一覧, so their colour and note can be removed."""
    if sheet not in book.sheet_names():
        return []
    # Either language's headings: a team may switch a workbook's language between two checks.
    sheet_heads = {fold_header(summary_headings(lg)[1]) for lg in LANGS}
    cell_heads = {fold_header(summary_headings(lg)[2]) for lg in LANGS}
    rows = book.read_sheet(sheet)
    for i, row in enumerate(rows[:HEADER_SCAN_ROWS]):
        heads = [fold_header(v) if isinstance(v, str) else "" for v in row]
        s_col = next((j for j, hd in enumerate(heads) if hd in sheet_heads), None)
        c_col = next((j for j, hd in enumerate(heads) if hd in cell_heads), None)
        if s_col is not None and c_col is not None:
            out = []
            for r in rows[i + 1:]:
                s = r[s_col] if s_col < len(r) else None
                c = r[c_col] if c_col < len(r) else None
                if isinstance(s, str) and isinstance(c, str) and c:
                    out.append((s, c))
            return out
    return []


def _split_cell(cell: str) -> tuple[int, int] | None:
    letters = "".join(ch for ch in cell if ch.isalpha())
    digits = cell[len(letters):]
    if not letters or not digits.isdigit():
        return None
    return int(digits), column_index(letters.upper()) + 1


def validate_action(book: WorkbookAdapter, ctx: Context) -> str | None:
    from xlcrm.intake.validate import validate_workbook

    schema = ctx.schema
    lang = workbook_lang(book, schema)
    w = _W[lang]
    sheet = ERRORS_SHEET[lang]
    views = {*SEARCH_SHEET.values(), *HISTORY_SHEET.values(), *ERRORS_SHEET.values()}
    with tempfile.TemporaryDirectory(prefix="xlcrm-") as tmp:
        copy = Path(tmp) / (Path(book.name).stem + ".xlsx")
        snapshot(book, copy, skip=views)
        try:
            result = validate_workbook(copy, schema, today=ctx.day)
        except UnreadableWorkbook as exc:
            raise XlcrmError(str(exc).replace(str(copy), book.name)) from None
    result.findings.extend(_master_lookalikes(ctx, result, lang))
    names = set(book.sheet_names())
    # The previous check's marks: every note it wrote (found where it is now, after rows were inserted
    # or deleted above it) and, where notes cannot be listed, the cells its エラー一覧 named.
    stale = {(s, pos) for s, c in _previous_marks(book, sheet) if (pos := _split_cell(c))}
    for s in names - views:
        stale.update((s, (r, c)) for r, c, text in book.notes(s) if text.startswith(MARK_BULLET))
    for s, pos in stale:
        if s in names and s not in views:
            book.fill(s, *pos, None)
            book.note(s, *pos, None)
    by_cell: dict[tuple[str, str], list[Any]] = {}
    for f in result.findings:
        if f.cell:
            by_cell.setdefault((f.sheet, f.cell), []).append(f)
    for (s, c), fs in by_cell.items():
        pos = _split_cell(c)
        if pos is None or s not in names:
            continue
        error = any(f.severity == "error" for f in fs)
        book.fill(s, *pos, ERROR_FILL if error else WARNING_FILL)
        book.note(s, *pos, "\n".join(f"{MARK_BULLET}{f.message}" for f in fs))
    errors = sum(1 for f in result.findings if f.severity == "error")
    warnings = len(result.findings) - errors
    if not result.findings:
        if sheet in names:
            _write_view(book, sheet, [[w["valid_ok"]]], [], [], [60])
        return w["valid_ok"]
    header = list(summary_headings(lang))
    body = [[severity_label(f.severity, lang), f.sheet, f.cell, f.column,
             _shown(f.value), f.message] for f in result.findings]
    message = w["valid_bad"].format(e=errors, w=warnings, sheet=sheet)
    header_row = _write_view(book, sheet, [[message]], header, body, [8, 12, 8, 16, 24, 70])
    for i, f in enumerate(result.findings):
        pos = _split_cell(f.cell) if f.cell else None
        if pos is not None and f.sheet in names:
            book.hyperlink(sheet, header_row + 1 + i, 3, link_target(f.sheet, *pos))
        book.fill(sheet, header_row + 1 + i, 1, ERROR_FILL if f.severity == "error" else WARNING_FILL)
    book.select(sheet, header_row + 1, 3)
    return message


def _master_lookalikes(ctx: Context, result: Any, lang: Lang) -> list[Any]:
    """Warnings for new customers (no 顧客ID) whose phone, FAX, e-mail or 法人番号 is a master
    customer's: typed again by mistake, or a colleague's customer.  Nothing when no master is set."""
    from xlcrm.intake.validate import Finding

    schema = ctx.schema
    cust = schema.entity("customers")
    frame = result.frames.get("customers")
    sd = result.workbook.sheets.get("customers")
    if frame is None or sd is None or not len(frame):
        return []
    if store_url(schema) is None and (ctx.master is None or not ctx.master.exists()):
        return []
    idk = cust.id_column.key
    new = {row: rec for row, rec in frame.to_dict("index").items() if not rec.get(idk)}
    try:
        conn = open_master(ctx, lang)
    except XlcrmError:
        return []
    try:
        found = customers_by_identifier(conn, schema, new)
        who = {cid: db.record_row(conn, cust, cid) for hits in found.values() for _, cid in hits}
    finally:
        conn.close()
    out = []
    for row, hits in found.items():
        for key, cid in hits:
            other = who.get(cid)
            name = other["name"] if other is not None else ""
            owner = other["owner"] if other is not None and "owner" in other.keys() else None  # noqa: SIM118
            col = cust.column(key)
            value = new[row].get(key)
            if lang == "ja":
                msg = (f"{col.label(lang)} {value} はマスタの顧客 {cid}「{name}」" + (f"（担当 {owner}）" if owner else "")
                       + f"と同じです。同じ顧客なら新しく登録せず、{cust.id_column.label(lang)} に {cid} を入力してください。")
            else:
                msg = (f"{col.label(lang)} {value} is master customer {cid} \"{name}\"'s" + (f" ({owner})" if owner else "")
                       + f". If it is the same customer, type {cid} as its {cust.id_column.label(lang)} instead of adding it again.")
            cell = sd.cell(key, row) if key in sd.letters else ""
            out.append(Finding(str(result.path), sd.sheet_name, cell, row, col.label(lang), key, "customers", value,
                               "master.lookalike", "warning", msg))
    return out


def _shown(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    if isinstance(value, int | float | dt.date | str):
        return value
    return str(value)


# --- 活動を追加 ---------------------------------------------------------------------------------------

def new_activity_action(book: WorkbookAdapter, ctx: Context) -> str | None:
    schema = ctx.schema
    lang = workbook_lang(book, schema)
    w = _W[lang]
    ref = customer_at(book, schema, lang)
    act: Entity = schema.entity("activities")
    table = entity_table(book, schema, "activities")
    if table is None:
        raise XlcrmError(w["no_activities"])
    row = table.last_row + 1
    owner = read_meta(book).get("owner") or ""
    values: dict[str, Any] = {"date": ctx.day}
    if act.ref_column is not None:
        values[act.ref_column.key] = ref.typed if ref.customer_id else _reference(book, schema, lang, ref)
    handled = next((c.key for c in act.columns if c.key == "handled_by"), None)
    if handled and owner:
        values[handled] = owner
    for key, value in values.items():
        col = table.columns.get(key)
        if col is not None:
            book.write_block(table.sheet, row, col, [[value]])
    book.grow_table(table.sheet, row)
    # The first column staff must fill next: 種別 (type), else 内容 (content), else the date.
    next_key = next((k for k in ("type", "content", "date") if k in table.columns), None)
    book.select(table.sheet, row, table.columns[next_key] if next_key else 1)
    if handled and not owner:
        return w["no_owner"].format(row=row)
    return None


def _reference(book: WorkbookAdapter, schema: Schema, lang: Lang, ref: CustomerRef) -> str:
    """A customer without an ID as the dropdown lists it: its name, or ``name (電話番号)`` / ``name (行5)``
    when another row of the 顧客 sheet has the same name (template ``customer_labels``)."""
    from xlcrm.intake.template import customer_labels

    table = entity_table(book, schema, "customers")
    if table is None or table.sheet != ref.sheet or "name" not in table.columns:
        return ref.typed
    first = table.header_row + 1
    rows = [{k: _text(table.get(r, k)) for k in ("name", "phone", "address") if k in table.columns}
            for r in range(first, table.last_row + 1)]
    labels = customer_labels(rows, lang, len(rows), first_row=first)
    return labels[ref.row - first] if first <= ref.row <= table.last_row and labels[ref.row - first] else ref.typed


# --- 最新化 -------------------------------------------------------------------------------------------

def refresh_action(book: WorkbookAdapter, ctx: Context) -> str | None:
    """Rebuild the master views (検索結果, 顧客履歴) and say whether a fresh workbook is needed.

    Why it never rewrites the entity sheets: a team workbook is its owner's working copy, tied to
    the base it was distributed from; replacing its rows in place would drop entries not merged yet
    and break the three-way merge.  A full refresh is therefore `xlcrm distribute`, done by the admin.
    """
    schema = ctx.schema
    lang = workbook_lang(book, schema)
    w = _W[lang]
    names = book.sheet_names()
    rebuilt: list[str] = []
    for sheet_names, rebuild in ((SEARCH_SHEET, _refresh_search), (HISTORY_SHEET, _refresh_history)):
        for sheet in sheet_names.values():
            if sheet in names:
                key = _text(_cell(book.read_sheet(sheet), _KEY_ROW, _KEY_COL))
                if key or (rebuild is _refresh_search and any(search_filters(book, schema, lang).values())):
                    rebuild(book, ctx, key)
                    rebuilt.append(sheet)
    lines = [w["refreshed"].format(views="・".join(rebuilt) if lang == "ja" else ", ".join(rebuilt))
             if rebuilt else w["nothing"]]
    conn = open_master(ctx, lang)
    try:
        last = last_merge(conn)
    finally:
        conn.close()
    created = read_meta(book).get("created", "")
    if last is None:
        lines.append(w["no_merge"])
    elif not created:
        lines.append(w["unknown_age"])
    elif _iso_key(last) > _iso_key(created):
        lines.append(w["stale"].format(created=created, last=last))
    else:
        lines.append(w["fresh"].format(last=last))
    return "\n".join(lines)


def _iso_key(stamp: str) -> str:
    """Comparable form of an ISO date/time (with or without time, 'T' or space)."""
    return stamp.replace(" ", "T")[:19]


def _refresh_search(book: WorkbookAdapter, ctx: Context, query: str) -> None:
    search_action(book, Context(ctx.schema, ctx.master, query, ctx.today, ctx.limit, ctx.master_source))


def _refresh_history(book: WorkbookAdapter, ctx: Context, customer_id: str) -> None:
    _write_history(book, ctx, workbook_lang(book, ctx.schema), customer_id, None)


Action = Callable[[WorkbookAdapter, Context], "str | None"]

#: Ribbon control id -> action.  customUI14.xml's button ids must be exactly these keys.
ACTIONS: dict[str, Action] = {
    "search": search_action,
    "history": history_action,
    "validate": validate_action,
    "new_activity": new_activity_action,
    "refresh": refresh_action,
}
