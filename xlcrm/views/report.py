"""`xlcrm report`: the master turned into decisions, as one workbook with native Excel charts.

Why native charts over pictures: the manager can click a bar, see the cells behind it, filter and
re-use the table; a chart always shows the numbers printed next to it because it *points at* them.
``--png`` renders the same chart specifications with matplotlib for e-mail.

Layout: one sheet per topic, each a column of titled blocks (an Excel table each, named
``rpt_<key>``) with charts to their right.  Every figure comes from :mod:`xlcrm.views.analysis`; this
module only labels (schema labels and choice labels in the report's language) and lays out.  Cell
text from the master is written as text, never as a formula (quotePrefix when it looks like one).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from xlcrm.errors import XlcrmError
from xlcrm.schema import Lang, Schema
from xlcrm.store import masterframes as mf
from xlcrm.store import outputs
from xlcrm.views import analysis as an
from xlcrm.xlsx.blocks import WIDTH, Block, Col, cell_value, put_text, write_block
from xlcrm.xlsx.writer import XlcrmWorkbook, atomic_write, close_workbook, open_workbook, sealed

ChartKind = Literal["column", "bar", "stacked", "clustered_bar"]

# --- words the report needs beyond the schema ---------------------------------------------------------

_T: dict[str, tuple[str, str]] = {
    "title": ("顧客管理レポート", "Customer report"),
    "as_of": ("基準日", "As of"),
    "generated": ("作成", "Generated"),
    "summary": ("概要", "Summary"),
    "sales": ("売上", "Sales"),
    "top": ("上位顧客", "Top customers"),
    "rfm": ("RFM分析", "RFM"),
    "lapsed": ("長期未購入の顧客", "Lapsed"),
    "pipeline": ("見込み", "Pipeline"),
    "voice": ("クレーム・問い合わせ", "Complaints"),
    "followup": ("フォロー", "Follow-ups"),
    "quality": ("データ品質", "Data quality"),
    "month": ("月", "Month"),
    "category": ("分類", "Category"),
    "won_amount": ("受注額", "Won amount"),
    "won_count": ("受注件数", "Won deals"),
    "last12": ("直近12か月の受注額", "Won, last 12 months"),
    "last12_count": ("直近12か月の件数", "Deals, last 12 months"),
    "prev12": ("前12か月の受注額", "Won, previous 12 months"),
    "share": ("構成比", "Share"),
    "change": ("前年比増減", "Change vs. prior year"),
    "rank": ("順位", "Rank"),
    "total": ("累計受注額", "Total won"),
    "purchases": ("購入回数", "Purchases"),
    "average": ("平均単価", "Average order"),
    "first_purchase": ("初回購入日", "First purchase"),
    "last_purchase": ("最終購入日", "Last purchase"),
    "recency_days": ("最終購入からの日数", "Days since purchase"),
    "segment": ("セグメント", "Segment"),
    "rule": ("条件", "Rule"),
    "customers_n": ("顧客数", "Customers"),
    "avg_recency": ("平均経過日数", "Avg. days since purchase"),
    "days_since": ("経過日数", "Days since"),
    "last_contact": ("最終接触日", "Last contact"),
    "last_contact_type": ("最終接触の種別", "Last contact type"),
    "last_contact_content": ("最終接触の内容", "Last contact details"),
    "overdue": ("期限超過", "Overdue"),
    "deals_n": ("件数", "Deals"),
    "total_weighted": ("加重合計", "Weighted total"),
    "weighted": ("加重金額", "Weighted"),
    "probability_used": ("計算に使った確度", "Probability used"),
    "bucket": ("見込み月", "Expected month"),
    "complaint": ("クレーム", "Complaints"),
    "inquiry": ("問い合わせ", "Inquiries"),
    "days_open": ("経過日数", "Days open"),
    "followup_date": ("その後の最終対応日", "Latest follow-up"),
    "followup_text": ("その後の最終対応", "Follow-up details"),
    "days_overdue": ("遅延日数", "Days overdue"),
    "overdue_todos": ("期限切れTODO", "Overdue TODOs"),
    "oldest_due": ("最も古い期限", "Oldest due date"),
    "no_contact_n": ("無接触の顧客", "Customers not contacted"),
    "not_set": ("(未設定)", "(not set)"),
    "none": ("該当なし", "None"),
    "metric": ("項目", "Metric"),
    "value": ("値", "Value"),
    "note": ("備考", "Note"),
    "sheet": ("シート", "Sheet"),
    "column": ("列", "Column"),
    "condition": ("条件", "Condition"),
    "missing": ("未入力", "Blank"),
    "considered": ("対象件数", "Rows"),
    "missing_rate": ("未入力率", "Blank rate"),
    "last_update": ("最終更新日", "Last updated"),
    "pending_duplicates": ("未処理の重複候補", "Pending possible duplicates"),
    "pending_conflicts": ("未処理の競合", "Pending conflicts"),
    "pending_deletions": ("確認待ちの削除行", "Deleted rows to review"),
    "no_table": ("マスタにまだ表がありません（マージ後に集計されます）",
                 "not in the master yet (counted once merge creates it)"),
}


def t(key: str, lang: Lang) -> str:
    ja, en = _T[key]
    return ja if lang == "ja" else en


# --- the report as data: pages of blocks and chart specifications ------------------------------------

@dataclass
class ChartSpec:
    """A chart over one block: categories from column ``category``, one series per value column.

    ``by_row``: series are the block's rows (e.g. one per owner) over the columns ``values``, and the
    categories are those columns' headers.  ``max_points`` charts only the first rows (blocks are
    sorted, so this is the top N).
    """

    key: str
    title: str
    block: str
    kind: ChartKind
    category: int
    values: list[int]
    by_row: bool = False
    max_points: int | None = None
    y_title: str = ""
    money: bool = False


@dataclass
class Page:
    key: str
    name: str
    intro: list[str]
    blocks: list[Block]
    charts: list[ChartSpec] = field(default_factory=list)
    #: Charts drawn from blocks on other pages (the summary shows the sales trend).
    foreign_charts: list[tuple[str, ChartSpec]] = field(default_factory=list)

    def block(self, key: str) -> Block:
        return next(b for b in self.blocks if b.key == key)


@dataclass
class Report:
    as_of: dt.date
    lang: Lang
    pages: list[Page]

    def page(self, key: str) -> Page:
        return next(p for p in self.pages if p.key == key)

    def find_block(self, key: str) -> tuple[Page, Block]:
        for p in self.pages:
            for b in p.blocks:
                if b.key == key:
                    return p, b
        raise KeyError(key)

    def charts(self) -> list[tuple[ChartSpec, Block]]:
        out = []
        for p in self.pages:
            for c in p.charts:
                out.append((c, p.block(c.block)))
        return out


@dataclass
class ReportOptions:
    lapsed_days: int = 365
    no_contact_days: int = 90
    stale_days: int = 365
    top_n: int = 20


# --- building ---------------------------------------------------------------------------------------------

class _Labels:
    """Schema labels in the report's language: columns, choice values, sheets."""

    def __init__(self, schema: Schema, lang: Lang) -> None:
        self.schema = schema
        self.lang = lang

    def col(self, entity: str, key: str) -> str:
        """The column's label; "" when xlcrm.toml switched it off (the block then drops the column)."""
        e = self.schema[entity]
        return e.column(key).label(self.lang) if e.has(key) else ""

    def choice(self, entity: str, key: str, value: Any) -> Any:
        value = cell_value(value)
        if value is None:
            return None
        e = self.schema[entity]
        if not e.has(key):
            return value
        return e.column(key).choice_label(str(value), self.lang)

    def dim(self, key: str, value: Any) -> str:
        """A sales-dimension value as shown; blanks get an explicit "(not set)" row label."""
        if cell_value(value) is None:
            return t("not_set", self.lang)
        if key == "owner":
            return str(value)
        return str(self.choice("customers", key, value))

    def sheet(self, entity: str) -> str:
        return self.schema[entity].label(self.lang)


def build_report(conn: sqlite3.Connection, schema: Schema, as_of: dt.date, lang: Lang = "ja",
                 options: ReportOptions | None = None) -> Report:
    opt = options or ReportOptions()
    frames = mf.active_frames(conn, schema)
    w = an.Window(as_of)
    L = _Labels(schema, lang)
    pages = [
        _sales_page(frames, w, L),
        _top_page(frames, w, L, opt),
        _rfm_page(frames, w, L),
        _lapsed_page(frames, w, L, opt),
        _pipeline_page(frames, w, L, schema),
        _voice_page(frames, w, L, schema),
        _followup_page(frames, w, L, opt),
        _quality_page(conn, frames, w, L, schema, opt),
    ]
    report = Report(as_of, lang, pages)
    report.pages.insert(0, _summary_page(report, frames, w, L, conn, opt))
    return report


def _top_title(title: str, rows: int, shown: int, lang: Lang) -> str:
    """A chart's title that says when it shows only the first ``shown`` of the table's rows."""
    if rows <= shown:
        return title
    return f"{title}（上位{shown}件）" if lang == "ja" else f"{title} (top {shown})"


def _sales_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels) -> Page:
    lang = L.lang
    monthly = an.sales_by_month(frames, w, 24)
    blocks = [Block("sales_monthly", f"{t('won_amount', lang)}（24か月）" if lang == "ja"
                    else "Won amount by month (24 months)",
                    [Col(t("month", lang)), Col(t("won_amount", lang), "money"), Col(t("won_count", lang), "int")],
                    [[m, a, c] for m, a, c in monthly.itertuples(index=False)])]
    charts = [ChartSpec("sales_monthly", blocks[0].title, "sales_monthly", "column", 0, [1], money=True,
                        y_title=t("won_amount", lang))]
    for dim in an.SALES_DIMENSIONS:
        label = L.col("customers", dim)
        if not label:
            continue
        table = an.sales_by(frames, w, dim)
        key = f"sales_by_{dim}"
        title = f"{label}別 {t('last12', lang)}" if lang == "ja" else f"{t('last12', lang)} by {label}"
        blocks.append(Block(key, title, [Col(label, width=22), Col(t("last12", lang), "money"),
                                         Col(t("last12_count", lang), "int"), Col(t("prev12", lang), "money"),
                                         Col(t("share", lang), "pct"), Col(t("change", lang), "pct")],
                            [[L.dim(dim, r.key), r.won_amount, r.won_count, r.prev_amount, r.share, r.change]
                             for r in table.itertuples(index=False)]))
        charts.append(ChartSpec(key, _top_title(title, len(blocks[-1].rows), 10, lang), key, "bar", 0, [1],
                                max_points=10, money=True))
    intro = [("受注（フェーズ＝受注、受注日が基準日以前）の金額。金額が空欄なら 数量×単価。"
              "直近12か月＝基準日の月までの12か月。削除した顧客の取引は含みません。") if lang == "ja" else
             ("Won deals (stage Won, closed on or before the as-of date); amount, or quantity x unit price. "
              "Last 12 months = the 12 calendar months up to the as-of month. Deleted customers' deals are "
              "left out.")]
    return Page("sales", t("sales", lang), intro, blocks, charts)


def _top_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels, opt: ReportOptions) -> Page:
    lang = L.lang
    top = an.top_customers(frames, w, opt.top_n)
    cols = [Col(t("rank", lang), "int", 6), Col(L.col("customers", "customer_id"), width=11),
            Col(L.col("customers", "name"), width=28), Col(L.col("customers", "owner")),
            Col(L.col("customers", "industry")), Col(L.col("customers", "prefecture"), width=10),
            Col(t("total", lang), "money"), Col(t("purchases", lang), "int"), Col(t("average", lang), "money"),
            Col(t("first_purchase", lang), "date"), Col(t("last_purchase", lang), "date")]
    rows = []
    for i, r in enumerate(top.to_dict("records"), start=1):
        rows.append([i, r["customer_id"], r.get("name"), r.get("owner"), L.choice("customers", "industry",
                     r.get("industry")), L.choice("customers", "prefecture", r.get("prefecture")),
                     r["total"], r["purchases"], r["average"], r["first_purchase"], r["last_purchase"]])
    title = (f"累計受注額の上位{opt.top_n}社" if lang == "ja" else f"Top {opt.top_n} customers by total won")
    block = Block("top_customers", title, cols, rows)
    chart = ChartSpec("top_customers", _top_title(title, len(rows), 10, lang), "top_customers", "bar", 2,
                      [block.index(t("total", lang))], max_points=10, money=True)
    intro = ["平均単価＝累計受注額÷購入回数（受注1件あたり）。削除した顧客は含みません。" if lang == "ja"
             else "Average order = total won / number of won deals. Deleted customers are left out."]
    return Page("top", t("top", lang), intro, [block], [chart])


def _rfm_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels) -> Page:
    lang = L.lang
    table = an.rfm(frames, w)
    seg_names = {k: (ja if lang == "ja" else en) for k, ja, en, _, _ in an.RFM_SEGMENTS}
    seg_rules = {k: (rj if lang == "ja" else re_) for k, _, _, rj, re_ in an.RFM_SEGMENTS}
    segs = an.rfm_segments(table)
    b1 = Block("rfm_segments", "セグメント別の顧客数" if lang == "ja" else "Customers per segment",
               [Col(t("segment", lang)), Col(t("rule", lang), width=24), Col(t("customers_n", lang), "int"),
                Col(t("total", lang), "money"), Col(t("avg_recency", lang), "days")],
               [[seg_names[r.segment], seg_rules[r.segment], r.customers, r.total, r.avg_recency]
                for r in segs.itertuples(index=False)])
    b2 = Block("rfm_customers", "顧客別スコア（セグメント順）" if lang == "ja" else "Scores per customer",
               [Col(L.col("customers", "customer_id"), width=11), Col(L.col("customers", "name"), width=28),
                Col(L.col("customers", "owner")), Col(t("segment", lang)), Col("R", "score"), Col("F", "score"),
                Col("M", "score"), Col(t("recency_days", lang), "days"), Col(t("purchases", lang), "int"),
                Col(t("total", lang), "money"), Col(t("last_purchase", lang), "date")],
               [[r["customer_id"], r["name"], r["owner"], seg_names[r["segment"]], r["r"], r["f"], r["m"],
                 r["recency_days"], r["purchases"], r["total"], r["last_purchase"]]
                for r in table.to_dict("records")])
    chart = ChartSpec("rfm_segments", b1.title, "rfm_segments", "bar", 0, [2])
    intro = [("R＝最終購入からの日数、F＝購入回数、M＝累計受注額。購入実績のある顧客の中での5段階（5が最良、"
              "同じ値は同じ点）。") if lang == "ja" else
             ("R = days since last purchase, F = purchases, M = total won; quintile scores among customers "
              "with a purchase (5 = best; equal values get equal scores).")]
    return Page("rfm", t("rfm", lang), intro, [b1, b2], [chart])


def _lapsed_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels, opt: ReportOptions) -> Page:
    lang = L.lang
    table = an.lapsed(frames, w, opt.lapsed_days)
    cols = [Col(L.col("customers", "customer_id"), width=11), Col(L.col("customers", "name"), width=28),
            Col(L.col("customers", "owner")), Col(L.col("customers", "status"), width=10),
            Col(t("last_purchase", lang), "date"), Col(t("days_since", lang), "days"),
            Col(t("purchases", lang), "int"), Col(t("total", lang), "money"), Col(t("last_contact", lang), "date"),
            Col(t("last_contact_type", lang), width=12), Col(t("last_contact_content", lang), width=36)]
    rows = [[r["customer_id"], r["name"], r["owner"], L.choice("customers", "status", r["status"]),
             r["last_purchase"], r["days_since"], r["purchases"], r["total"], r.get("last_contact"),
             L.choice("activities", "type", r.get("last_contact_type")), r.get("last_contact_content")]
            for r in table.to_dict("records")]
    title = (f"購入実績があり、最終購入から {opt.lapsed_days} 日以上たった顧客（累計受注額順）" if lang == "ja" else
             f"Customers whose last purchase was {opt.lapsed_days} days ago or more (by total won)")
    intro = ["再顧客化の候補です。担当営業から連絡を。日数は暦日で、基準日ちょうどの日数も含みます。"
             "ステータスの「休眠」とは別の、購入日だけによる一覧です。" if lang == "ja"
             else "Candidates for win-back: ask the sales rep to get in touch. Calendar days, the boundary "
                  "day included; based on purchase dates only, whatever the customer's status."]
    return Page("lapsed", t("lapsed", lang), intro, [Block("lapsed", title, cols, rows)])


def _pipeline_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels, schema: Schema) -> Page:
    lang = L.lang
    buckets = an.pipeline_buckets(w)
    bucket_label = {an.PIPELINE_OVERDUE: t("overdue", lang), **{b: b for b in buckets[1:]}}
    fc = an.pipeline_forecast(frames, w, schema)
    b1 = Block("pipeline_forecast", "担当営業別の加重見込み額（金額×確度）" if lang == "ja"
               else "Weighted pipeline per sales rep (amount x probability)",
               [Col(L.col("deals", "owner")), *[Col(bucket_label[b], "money") for b in buckets],
                Col(t("deals_n", lang), "int"), Col(t("total_weighted", lang), "money")],
               [[r["owner"] if r["owner"] is not None else t("not_set", lang), *[r[b] for b in buckets],
                 r["deals"], r["total_weighted"]] for r in fc.to_dict("records")])
    op = an.open_deals(frames, w, schema)
    inwin = op[op["bucket"].notna()].copy()
    order = {b: i for i, b in enumerate(buckets)}
    inwin["_o"] = inwin["bucket"].map(order)
    inwin = inwin.sort_values(["_o", "owner", "weighted", "deal_id"], ascending=[True, True, False, True],
                              kind="stable")
    b2 = Block("pipeline_deals", "対象の案件" if lang == "ja" else "Deals in the forecast",
               [Col(t("bucket", lang), width=10), Col(L.col("deals", "deal_id"), width=11),
                Col(L.col("deals", "customer"), width=11), Col(L.col("customers", "name"), width=26),
                Col(L.col("deals", "title"), width=26), Col(L.col("deals", "owner")),
                Col(L.col("deals", "phase"), width=9), Col(L.col("deals", "amount"), "money"),
                Col(L.col("deals", "probability"), "int"), Col(t("probability_used", lang), "int"),
                Col(t("weighted", lang), "money"), Col(L.col("deals", "expected_close"), "date")],
               [[bucket_label[r["bucket"]], r["deal_id"], r["customer"], r["customer_name"], r["title"],
                 r["owner"], L.choice("deals", "phase", r["phase"]), r["value"], r.get("probability"),
                 r["probability_used"], r["weighted"], r.get("expected_close")]
                for r in inwin.to_dict("records")])
    later = int((op["bucket"].isna() & op["expected_close"].notna()).sum())
    undated = int(op["expected_close"].isna().sum())
    defaults = an.probabilities(schema)
    phase_txt = "、".join(f"{L.choice('deals', 'phase', k)} {v}%" for k, v in defaults.items())
    intro = [(f"進行中の案件＝フェーズが受注・失注以外（{phase_txt} は確度が空欄のときの既定値）。"
              "期限超過＝受注予定日が今月より前。削除した顧客の案件は含みません。"
              f"対象外：再来月より先 {later} 件、受注予定日なし {undated} 件。") if lang == "ja" else
             (f"Open deals = any stage but Won and Lost (blank probability: {phase_txt.replace('、', ', ')}); "
              "deleted customers' deals are left out. Overdue = expected close "
              f"before this month. Not shown: {later} later, {undated} without expected close.")]
    chart = ChartSpec("pipeline_forecast", b1.title, "pipeline_forecast", "stacked", 0,
                      list(range(1, 1 + len(buckets))), by_row=True, money=True)
    return Page("pipeline", t("pipeline", lang), intro, [b1, b2], [chart])


def _voice_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels, schema: Schema) -> Page:
    lang = L.lang
    bycat = an.voice_by_category(frames, w, schema)
    cat_label = L.col("activities", "category") or t("category", lang)
    b1 = Block("voice_by_category", f"{cat_label}別の件数（直近12か月）" if lang == "ja"
               else f"By {cat_label.lower()} (last 12 months)",
               [Col(cat_label), Col(t("complaint", lang), "int"), Col(t("inquiry", lang), "int")],
               [[L.choice("activities", "category", r["category"]) or t("not_set", lang), r["complaint"],
                 r["inquiry"]] for r in bycat.to_dict("records")])
    blocks = [b1]
    charts = [ChartSpec("voice_by_category", b1.title, "voice_by_category", "clustered_bar", 0, [1, 2])]
    for kind in an.VOICE_TYPES:
        m = an.voice_by_month(frames, w, schema, kind)
        cats = [c for c in m.columns if c != "month"]
        key = f"voice_monthly_{kind}"
        title = (f"{t(kind, lang)}の月別件数（{cat_label}別）" if lang == "ja"
                 else f"{t(kind, lang)} per month by {cat_label.lower()}")
        blocks.append(Block(key, title, [Col(t("month", lang)), *[
            Col(t("not_set", lang) if c == "_blank" else L.choice("activities", "category", c), "int")
            for c in cats]], [list(r) for r in m.itertuples(index=False)]))
        charts.append(ChartSpec(key, title, key, "stacked", 0, list(range(1, 1 + len(cats)))))
    un = an.unresolved_voice(frames, w)
    blocks.append(Block("voice_unresolved", "未解決のクレーム・問い合わせ（結果が 解決 以外）" if lang == "ja"
                        else "Unresolved complaints and inquiries (outcome not Resolved)",
                        [Col(L.col("activities", "activity_id"), width=11), Col(L.col("activities", "date"), "date"),
                         Col(L.col("activities", "customer"), width=11), Col(L.col("customers", "name"), width=24),
                         Col(L.col("customers", "owner")), Col(L.col("activities", "type"), width=10),
                         Col(cat_label, width=9), Col(L.col("activities", "content"), width=36),
                         Col(L.col("activities", "response"), width=30), Col(L.col("activities", "result"), width=9),
                         Col(t("days_open", lang), "days"), Col(t("followup_date", lang), "date"),
                         Col(t("followup_text", lang), width=30)],
                        [[r["activity_id"], r["date"], r["customer"], r["customer_name"], r["owner"],
                          L.choice("activities", "type", r["type"]), L.choice("activities", "category", r["category"]),
                          r["content"], r.get("response"), L.choice("activities", "result", r.get("result")),
                          r["days_open"], r["followup_date"], r["followup"]] for r in un.to_dict("records")]))
    intro = ["種別が クレーム・問い合わせ の活動。結果が空欄のものは未解決として数えます。" if lang == "ja"
             else "Activities of type Complaint or Inquiry; a blank outcome counts as unresolved."]
    return Page("voice", t("voice", lang), intro, blocks, charts)


def _followup_page(frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels, opt: ReportOptions) -> Page:
    lang = L.lang
    late = an.overdue_todos(frames, w)
    per = an.overdue_by_assignee(late)
    quiet = an.no_contact(frames, w, opt.no_contact_days)
    quiet_per = quiet.groupby("owner", dropna=False).size() if len(quiet) else pd.Series(dtype="int64")
    people = sorted({*per["assignee"].dropna(), *quiet_per.index.dropna()}, key=str)
    per_idx = per.set_index("assignee") if len(per) else None
    rows = []
    for p in people:
        n_late = int(per_idx.loc[p, "count"]) if per_idx is not None and p in per_idx.index else 0
        oldest = per_idx.loc[p, "oldest_due"] if per_idx is not None and p in per_idx.index else None
        rows.append([p, n_late, oldest, int(quiet_per.get(p, 0))])
    b1 = Block("followup_per_owner", "担当者別のフォロー状況" if lang == "ja" else "Follow-ups per person",
               [Col(L.col("todos", "assignee")), Col(t("overdue_todos", lang), "int"),
                Col(t("oldest_due", lang), "date"), Col(t("no_contact_n", lang), "int")], rows)
    b2 = Block("followup_overdue", "期限切れのTODO（完了以外で期限が基準日より前）" if lang == "ja"
               else "Overdue TODOs (not done, due before the as-of date)",
               [Col(L.col("todos", "todo_id"), width=11), Col(L.col("todos", "due"), "date"),
                Col(t("days_overdue", lang), "days"), Col(L.col("todos", "customer"), width=11),
                Col(L.col("customers", "name"), width=24), Col(L.col("todos", "content"), width=36),
                Col(L.col("todos", "assignee")), Col(L.col("todos", "status"), width=9)],
               [[r["todo_id"], r["due"], r["days_overdue"], r["customer"], r["customer_name"], r["content"],
                 r["assignee"], L.choice("todos", "status", r.get("status"))] for r in late.to_dict("records")])
    b3 = Block("followup_no_contact", (f"{opt.no_contact_days}日以上接触のない顧客（失注を除く）" if lang == "ja"
                                      else f"Customers not contacted for {opt.no_contact_days} days or more"),
               [Col(L.col("customers", "customer_id"), width=11), Col(L.col("customers", "name"), width=28),
                Col(L.col("customers", "owner")), Col(L.col("customers", "status"), width=10),
                Col(t("last_contact", lang), "date"), Col(t("days_since", lang), "days"),
                Col(t("last_contact_type", lang), width=12)],
               [[r["customer_id"], r["name"], r["owner"], L.choice("customers", "status", r.get("status")),
                 r["last_contact"], r["days_since"], L.choice("activities", "type", r.get("last_contact_type"))]
                for r in quiet.to_dict("records")])
    chart = ChartSpec("followup_per_owner", b1.title, "followup_per_owner", "clustered_bar", 0, [1, 3])
    intro = ["接触＝活動履歴の記録（電話・訪問・メールなど）。記録のない顧客は経過日数が空欄です。"
             "日数は暦日で、ちょうどの日数も含みます（90日以上＝90日目から）。削除した顧客のTODOは含みません。"
             if lang == "ja" else
             "Contact = any activity record. Customers never contacted have a blank day count. Calendar days, "
             "the boundary day included (90 days or more = from day 90). Deleted customers' TODOs are left out."]
    return Page("followup", t("followup", lang), intro, [b1, b2, b3], [chart])


def _quality_page(conn: sqlite3.Connection, frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels,
                  schema: Schema, opt: ReportOptions) -> Page:
    lang = L.lang
    stale = an.stale_customers(frames, w, mf.last_change(conn, "customers"), opt.stale_days)
    missing = an.missing_fields(frames, schema)
    summary: list[list[Any]] = [
        [(f"{opt.stale_days}日以上更新のない顧客" if lang == "ja"
          else f"Customers not updated for {opt.stale_days}+ days"), len(stale), ""]]
    for kind in ("duplicates", "conflicts", "deletions"):
        n = mf.pending_reviews(conn, kind)
        summary.append([t(f"pending_{kind}", lang), n or 0, "" if n is not None else t("no_table", lang)])
    b1 = Block("quality_summary", "要対応の件数" if lang == "ja" else "To review",
               [Col(t("metric", lang), width=34), Col(t("value", lang), "int"), Col(t("note", lang), width=40)],
               summary)

    def col_label(entity: str, key: str) -> str:
        return "＋".join(L.col(entity, k) for k in key.split("+")) if lang == "ja" else \
            " + ".join(L.col(entity, k) for k in key.split("+"))

    def cond_label(entity: str, cond: Any) -> str:
        if cond is None:
            return ""
        when, values = cond
        vals = "・".join(str(L.choice(entity, when, v)) for v in values)
        return f"{L.col(entity, when)} = {vals}"

    mrows = []
    for r in missing.to_dict("records"):
        mrows.append([L.sheet(r["entity"]), col_label(r["entity"], r["column"]), cond_label(r["entity"], r["condition"]),
                      r["missing"], r["considered"], (r["missing"] / r["considered"]) if r["considered"] else None])
    b2 = Block("quality_missing", "未入力の重要項目" if lang == "ja" else "Blank key fields",
               [Col(t("sheet", lang), width=10), Col(t("column", lang), width=22), Col(t("condition", lang), width=24),
                Col(t("missing", lang), "int"), Col(t("considered", lang), "int"), Col(t("missing_rate", lang), "pct")],
               mrows, note=("電話番号＋メールアドレス＝どちらも空欄の顧客。" if lang == "ja"
                            else "Phone + E-mail = customers with neither."))
    b3 = Block("quality_stale", "更新のない顧客" if lang == "ja" else "Customers not updated",
               [Col(L.col("customers", "customer_id"), width=11), Col(L.col("customers", "name"), width=28),
                Col(L.col("customers", "owner")), Col(t("last_update", lang), "date"),
                Col(t("days_since", lang), "days")],
               [[r["customer_id"], r["name"], r.get("owner"), r["last_update"], r["days_since"]]
                for r in stale.to_dict("records")])
    intro = ["最終更新日＝更新日と変更履歴のうち新しい方の日付。日数は暦日で、ちょうどの日数も含みます。"
             "業種の未入力は法人の顧客だけで数えます（個人には業種がありません）。" if lang == "ja"
             else "Last updated = the later day of the Updated column and the change history; calendar days, the "
                  "boundary day included. A blank industry is counted for company customers only."]
    return Page("quality", t("quality", lang), intro, [b1, b2, b3])


def _summary_page(report: Report, frames: dict[str, pd.DataFrame], w: an.Window, L: _Labels,
                  conn: sqlite3.Connection, opt: ReportOptions) -> Page:
    lang = L.lang
    monthly = report.page("sales").block("sales_monthly")
    last12 = sum(r[1] for r in monthly.rows[-12:])
    prev12 = sum(r[1] for r in monthly.rows[:12])
    n12 = sum(r[2] for r in monthly.rows[-12:])
    fc = report.page("pipeline").block("pipeline_forecast")
    next3 = sum(sum(r[2:5]) for r in fc.rows)
    overdue_pipe = sum(r[1] for r in fc.rows)
    lapsed = len(report.page("lapsed").block("lapsed").rows)
    unresolved = len(report.page("voice").block("voice_unresolved").rows)
    late = len(report.page("followup").block("followup_overdue").rows)
    quiet = len(report.page("followup").block("followup_no_contact").rows)
    q = report.page("quality").block("quality_summary").rows
    ja = lang == "ja"
    rows = [
        [t("last12", lang), last12, "money", ""],
        [t("prev12", lang), prev12, "money", ""],
        [t("change", lang), (last12 - prev12) / prev12 if prev12 else None, "pct", ""],
        [t("last12_count", lang), n12, "int", ""],
        ["加重見込み額（今月〜再来月）" if ja else "Weighted pipeline, this month + 2", next3, "money",
         f"{t('overdue', lang)}: {overdue_pipe:,.0f}"],
        [f"{t('lapsed', lang)}（{opt.lapsed_days}日以上）" if ja else f"Lapsed customers ({opt.lapsed_days}+ days)",
         lapsed, "int", ""],
        ["未解決のクレーム・問い合わせ" if ja else "Unresolved complaints and inquiries", unresolved, "int", ""],
        [t("overdue_todos", lang), late, "int", ""],
        [f"{opt.no_contact_days}日以上接触のない顧客" if ja else f"Not contacted for {opt.no_contact_days}+ days",
         quiet, "int", ""],
        *[[r[0], r[1], "int", r[2]] for r in q],
    ]
    kpi = Block("summary_kpi", "主な指標" if ja else "Key figures",
                [Col(t("metric", lang), width=34), Col(t("value", lang), "money"), Col(t("note", lang), width=30)],
                [[r[0], r[1], r[3]] for r in rows], cell_kinds={(i, 1): r[2] for i, r in enumerate(rows)})
    active = frames["customers"]
    intro = [(f"顧客 {len(active):,} 件・取引 {len(frames['deals']):,} 件・活動 {len(frames['activities']):,} 件"
              if ja else f"{len(active):,} customers, {len(frames['deals']):,} deals, "
              f"{len(frames['activities']):,} activities")]
    sales_chart = report.page("sales").charts[0]
    pipe_chart = report.page("pipeline").charts[0]
    return Page("summary", t("summary", lang), intro, [kpi],
                foreign_charts=[("sales", sales_chart), ("pipeline", pipe_chart)])


# --- writing the workbook --------------------------------------------------------------------------------

@dataclass
class _Placed:
    sheet: str
    first_row: int  # header row (0-based)
    first_col: int
    block: Block


def write_report(report: Report, out: str | Path, *, password: str | None = None,
                 created: dt.datetime | None = None) -> Path:
    """Write ``report`` to ``out`` atomically (encrypted with ``password`` when given)."""
    out = Path(out)
    with atomic_write(out) as tmp, sealed(tmp, password) as target:
        wb = open_workbook(target, created=created, title=t("title", report.lang))
        placed: dict[str, _Placed] = {}
        sheets = {}
        for page in report.pages:
            ws = wb.add_worksheet(page.name)
            sheets[page.key] = ws
            placed.update(_write_page(wb, ws, page, report))
        for page in report.pages:
            ws = sheets[page.key]
            anchor_col = _chart_column(page)
            row = 3
            for chart in page.charts:
                _insert_chart(wb, ws, chart, placed[chart.block], row, anchor_col)
                row += 18
            for _, chart in page.foreign_charts:  # the summary: trend and pipeline beside the figures
                _insert_chart(wb, ws, chart, placed[chart.block], row, anchor_col)
                row += 18
        wb.worksheets()[0].activate()
        close_workbook(wb)
    return out


def _chart_column(page: Page) -> int:
    widest = max((len(b.columns) for b in page.blocks), default=1)
    return widest + 1


def _write_page(wb: XlcrmWorkbook, ws: Any, page: Page, report: Report) -> dict[str, _Placed]:
    lang = report.lang
    ws.hide_gridlines(2)
    ws.set_landscape()
    ws.set_paper(9)  # A4
    ws.fit_to_pages(1, 0)
    put_text(wb, ws, 0, 0, f"{t('title', lang)} — {page.name}", bold=True, font_size=14)
    put_text(wb, ws, 1, 0, f"{t('as_of', lang)}: {report.as_of.isoformat()}    " + "  ".join(page.intro),
          font_color="#595959")
    widths: dict[int, float] = {}
    placed: dict[str, _Placed] = {}
    row = 3
    for block in page.blocks:
        put_text(wb, ws, row, 0, block.title, bold=True, font_size=12)
        row += 1
        if block.note:
            put_text(wb, ws, row, 0, block.note, italic=True, font_color="#595959")
            row += 1
        placed[block.key] = _Placed(page.name, row, 0, block)
        write_block(wb, ws, row, block)
        for c, col in enumerate(block.columns):
            widths[c] = max(widths.get(c, 0), col.width or WIDTH[col.kind])
        row += max(len(block.rows), 1) + 3
    for c, wdt in widths.items():
        ws.set_column(c, c, wdt)
    ws.freeze_panes(3, 0)
    return placed


def _insert_chart(wb: XlcrmWorkbook, ws: Any, spec: ChartSpec, where: _Placed, row: int, col: int,
                  width: int = 600) -> None:
    block = where.block
    n = len(block.rows)
    first = where.first_row + 1
    last = first + max(min(n, spec.max_points or n), 1) - 1
    kind = {"column": ("column", None), "stacked": ("column", "stacked"), "bar": ("bar", None),
            "clustered_bar": ("bar", None)}[spec.kind]
    opts: dict[str, Any] = {"type": kind[0]}
    if kind[1]:
        opts["subtype"] = kind[1]
    chart = wb.add_chart(opts)
    sheet = where.sheet
    palette = ["#4472C4", "#ED7D31", "#A5A5A5", "#FFC000", "#5B9BD5", "#70AD47", "#264478", "#9E480E"]
    if spec.by_row:
        c0, c1 = spec.values[0], spec.values[-1]
        for i in range(max(n, 1)):  # an empty table still gets one (blank) series: a chart needs one
            r = first + i
            chart.add_series({"name": [sheet, r, spec.category],
                              "categories": [sheet, where.first_row, c0, where.first_row, c1],
                              "values": [sheet, r, c0, r, c1],
                              "fill": {"color": palette[i % len(palette)]}})
    else:
        for i, vc in enumerate(spec.values):
            series: dict[str, Any] = {"name": [sheet, where.first_row, vc],
                                      "categories": [sheet, first, spec.category, last, spec.category],
                                      "values": [sheet, first, vc, last, vc],
                                      "fill": {"color": palette[i % len(palette)]}}
            chart.add_series(series)
    chart.set_title({"name": spec.title, "name_font": {"size": 11, "bold": True}})
    num = "#,##0" if spec.money else "0"
    value_axis = {"num_format": num, "major_gridlines": {"visible": True, "line": {"color": "#D9D9D9"}}}
    if spec.y_title:
        value_axis["name"] = spec.y_title
    if kind[0] == "bar":
        chart.set_x_axis(value_axis)
        chart.set_y_axis({"reverse": True})  # largest first, as in the table
    else:
        chart.set_y_axis(value_axis)
    if len(spec.values) == 1 and not spec.by_row:
        chart.set_legend({"none": True})
    else:
        chart.set_legend({"position": "bottom"})
    chart.set_size({"width": width, "height": 320})
    ws.insert_chart(row, col, chart, {"x_offset": 5, "y_offset": 5})


# --- the command --------------------------------------------------------------------------------------------

@dataclass
class ReportResult:
    path: Path
    pngs: list[Path]
    report: Report
    #: What the reader should know about the figures' source (decisions typed into master.xlsx and
    #: not applied yet); each also stands on the summary sheet.
    warnings: list[str] = field(default_factory=list)


def unapplied_decisions(conn: sqlite3.Connection, master: Path, schema: Schema, lang: Lang,
                        password: str | None = None) -> list[str]:
    """A warning when master.xlsx holds review decisions (重複候補, 競合, 削除候補) typed in and not yet
    applied by `xlcrm resolve` or a merge: figures from the database do not reflect them."""
    from xlcrm.master import masterbook

    state = masterbook.read_master_state(master, conn, schema, edits=False, password=password)
    d = state.decisions
    if not d:
        return []
    n = len(d.duplicates) + len(d.conflicts) + len(d.deletions)
    if lang == "ja":
        return [f"{master.name} に未反映の判断が {n} 件あります（重複候補・競合・削除候補）。この集計には含まれていません。"
                f"`xlcrm resolve --master {master}` で反映してから作り直してください。"]
    return [f"{master.name} holds {n} decision(s) typed into its review sheets and not applied yet; these "
            f"figures do not include them. Run `xlcrm resolve --master {master}`, then make the report again."]


def make_report(master: str | Path, out: str | Path, schema: Schema, *, as_of: dt.date | None = None,
                lang: Lang = "ja", png_dir: str | Path | None = None, options: ReportOptions | None = None,
                password: str | None = None,
                progress: Callable[[str], None] | None = None, force: bool = False) -> ReportResult:
    """Read the master database, write the report workbook (and PNG charts when ``png_dir``).

    Neither replaces the master's files, nor a file xlcrm did not write unless ``force`` (a copy is
    kept beside it): :mod:`xlcrm.store.outputs`.
    """
    if lang not in ("ja", "en"):
        raise XlcrmError(f"unknown language {lang!r}; use ja or en")
    out = Path(out)
    if out.suffix.lower() != ".xlsx":
        raise XlcrmError(f"{out}: the report is an Excel workbook; name it ….xlsx")
    master_xlsx = Path(master).with_suffix(".xlsx")
    claim = outputs.claim(out, "report", force=force, master=master_xlsx)
    conn = outputs.open_master(master)
    try:
        book = Path(master).with_suffix(".xlsx")
        warnings = unapplied_decisions(conn, book, schema, lang, password)
        report = build_report(conn, schema, as_of or dt.date.today(), lang, options)
    finally:
        conn.close()
    if warnings:
        report.page("summary").intro[:0] = warnings
    charts = None
    if png_dir is not None:
        from xlcrm.views.chartimages import png_path

        charts = outputs.claim([png_path(png_dir, spec.key) for spec, _ in report.charts()], "chart",
                               force=force, master=master_xlsx)
    if progress:
        progress("workbook")
    with claim.write(out):
        write_report(report, out, password=password)
    pngs: list[Path] = []
    if png_dir is not None:
        from xlcrm.views.chartimages import write_pngs

        if progress:
            progress("png")
        pngs = write_pngs(report, png_dir, claim=charts)
    return ReportResult(out, pngs, report, warnings)
