"""The figures behind the report: pandas over the master's active records, keyed by schema keys.

Kept apart from the workbook layout so that every number has one definition, written down here in
plain words (the report's notes repeat them for the reader):

- A *sale* is a deal with フェーズ 受注 (won) and a 受注日 on or before the as-of date; its value is
  金額, or 数量 x 単価 when 金額 is blank.  A sale belongs to the calendar month of its 受注日.
- "Last 12 months" means the 12 calendar months ending with the as-of month; "the 12 before" is the
  year before that.  Monthly series, dimension totals and KPIs all use those same months.
- RFM scores are quintile ranks among customers with at least one sale (1 = worst fifth, 5 = best);
  equal values get equal scores.
- The pipeline weights an open deal's 金額 by its 確度 (or by the phase's default when 確度 is blank).
- Day thresholds count calendar days and include the boundary: "90 days without contact" lists a
  customer whose last activity was exactly 90 days before the as-of date (以上, never 超).
- A deleted customer is out of every figure, its records with it (sales, rankings, follow-ups):
  deleting a customer on 削除候補 deletes its records too, and records a deleted customer still has
  (from an older master) are treated the same way.  Its history stays in the master.

Every function returns a DataFrame whose columns are schema keys or the derived keys named in
``DERIVED``; ``xlcrm.views.report`` turns them into labelled tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from xlcrm.schema import CLOSED_PHASES, OPEN_PHASES, RequiredWhen, Schema

#: Used for an open deal whose 確度 is blank; ``[settings.probability]`` in xlcrm.toml overrides.
DEFAULT_PROBABILITY: dict[str, int] = {"lead": 10, "proposal": 30, "quote": 50, "negotiation": 70}

#: Customer attributes sales are broken down by (``owner`` comes from the deal, else its customer).
SALES_DIMENSIONS = ("industry", "prefecture", "source", "owner")

#: Activity types counted as "voice of the customer".
VOICE_TYPES = ("complaint", "inquiry")

#: RFM segments: first matching rule wins; (key, ja, en, rule text ja, rule text en, predicate).
RFM_SEGMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("champions", "優良顧客", "Champions", "R≥4 かつ F≥4", "R>=4 and F>=4"),
    ("loyal", "ロイヤル顧客", "Loyal", "R≥3 かつ F≥3", "R>=3 and F>=3"),
    ("new", "新規顧客", "New", "R≥4 かつ F=1", "R>=4 and F=1"),
    ("promising", "有望顧客", "Promising", "R≥4", "R>=4"),
    ("at_risk", "離反リスク", "At risk", "R≤2 かつ F≥3", "R<=2 and F>=3"),
    ("hibernating", "離反顧客", "Lost touch", "R≤2", "R<=2"),
    ("attention", "要フォロー", "Needs attention", "その他 (R=3 かつ F≤2)", "others (R=3 and F<=2)"),
)


def rfm_segment(r: int, f: int) -> str:
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r >= 4:
        return "promising"
    if r <= 2 and f >= 3:
        return "at_risk"
    if r <= 2:
        return "hibernating"
    return "attention"


@dataclass(frozen=True)
class Window:
    """The report's calendar: as-of date and the months every monthly figure is cut into."""

    as_of: date

    @property
    def ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.as_of)

    @property
    def month(self) -> pd.Period:
        return pd.Period(self.as_of, freq="M")

    def months(self, n: int) -> list[pd.Period]:
        """The ``n`` calendar months ending with the as-of month, oldest first."""
        return [self.month - (n - 1 - i) for i in range(n)]


def month_label(p: pd.Period) -> str:
    return f"{p.year:04d}-{p.month:02d}"


# --- shared building blocks ---------------------------------------------------------------------------

def deal_value(deals: pd.DataFrame) -> pd.Series:
    """金額, else 数量 x 単価, else 0 (counted as missing in data quality)."""
    product = deals["quantity"] * deals["unit_price"] if {"quantity", "unit_price"} <= set(deals) else np.nan
    value = deals["amount"].where(deals["amount"].notna(), product) if "amount" in deals else product
    return pd.Series(value, index=deals.index, dtype="float64").fillna(0.0)


#: Key of the frame of deleted customers beside the schema's entities (see :mod:`xlcrm.store.masterframes`).
DELETED_CUSTOMERS = "deleted_customers"


def of_active_customers(frames: Mapping[str, pd.DataFrame], records: pd.DataFrame) -> pd.DataFrame:
    """The records whose customer is an active one (not deleted)."""
    gone = frames.get(DELETED_CUSTOMERS)
    if gone is None or not len(gone) or not len(records):
        return records
    return records[~records["customer"].isin(set(gone["customer_id"]))]


def sales(frames: Mapping[str, pd.DataFrame], w: Window) -> pd.DataFrame:
    """Won deals up to the as-of date, one row each, with the customer's attributes joined on.

    Columns: deal_id, customer, closed_on, value, month (Period), owner and SALES_DIMENSIONS.
    """
    deals = of_active_customers(frames, frames["deals"])
    won = deals[(deals["phase"] == "won") & deals["closed_on"].notna() & (deals["closed_on"] <= w.ts)].copy()
    won["value"] = deal_value(won)
    won["month"] = won["closed_on"].dt.to_period("M")
    cust = frames["customers"].set_index("customer_id")
    for dim in SALES_DIMENSIONS:
        if dim == "owner":
            from_customer = won["customer"].map(cust["owner"]) if "owner" in cust else None
            deal_owner = won["owner"] if "owner" in won else pd.Series(None, index=won.index, dtype=object)
            won["owner"] = deal_owner.where(deal_owner.notna(), from_customer)
        elif dim in cust:
            won[dim] = won["customer"].map(cust[dim])
        else:  # switched off in xlcrm.toml
            won[dim] = None
    return won


def last_activity(frames: Mapping[str, pd.DataFrame], w: Window) -> pd.DataFrame:
    """Per customer: date, type and content of the latest activity on or before the as-of date."""
    acts = frames["activities"]
    acts = acts[acts["date"].notna() & (acts["date"] <= w.ts) & acts["customer"].notna()]
    if acts.empty:
        return pd.DataFrame({"last_contact": pd.Series(dtype="datetime64[s]"),
                             "last_contact_type": pd.Series(dtype=object),
                             "last_contact_content": pd.Series(dtype=object)})
    latest = acts.sort_values(["date", "activity_id"]).groupby("customer").tail(1).set_index("customer")
    return pd.DataFrame({"last_contact": latest["date"], "last_contact_type": latest["type"],
                         "last_contact_content": latest["content"]})


# --- sales ------------------------------------------------------------------------------------------------

def sales_by_month(frames: Mapping[str, pd.DataFrame], w: Window, months: int = 24) -> pd.DataFrame:
    won = sales(frames, w)
    periods = w.months(months)
    grouped = won.groupby("month")["value"].agg(["sum", "count"])
    out = pd.DataFrame({"month": [month_label(p) for p in periods],
                        "won_amount": [float(grouped["sum"].get(p, 0.0)) for p in periods],
                        "won_count": [int(grouped["count"].get(p, 0)) for p in periods]})
    return out


def sales_by(frames: Mapping[str, pd.DataFrame], w: Window, dim: str) -> pd.DataFrame:
    """Won amount in the last 12 months and the 12 before, per value of ``dim`` (blank = None)."""
    won = sales(frames, w)
    recent = set(w.months(12))
    before = {p - 12 for p in recent}
    rows = []
    for k, g in won.groupby(dim, sort=False, dropna=False):
        last12 = g[g["month"].isin(recent)]
        prev12 = g[g["month"].isin(before)]
        if last12.empty and prev12.empty:
            continue
        rows.append({"key": None if pd.isna(k) else k, "won_amount": float(last12["value"].sum()),
                     "won_count": len(last12), "prev_amount": float(prev12["value"].sum())})
    out = pd.DataFrame(rows, columns=["key", "won_amount", "won_count", "prev_amount"])
    total = out["won_amount"].sum()
    out["share"] = out["won_amount"] / total if total else 0.0
    out["change"] = [(a - p) / p if p else None for a, p in zip(out["won_amount"], out["prev_amount"],
                                                                  strict=True)]
    return out.sort_values(["won_amount", "prev_amount"], ascending=False, kind="stable").reset_index(drop=True)


def customer_totals(frames: Mapping[str, pd.DataFrame], w: Window) -> pd.DataFrame:
    """Per customer with a sale: cumulative amount, purchases, average per purchase, first/last date."""
    won = sales(frames, w)
    g = won.groupby("customer")
    out = pd.DataFrame({"total": g["value"].sum(), "purchases": g["value"].size(),
                        "first_purchase": g["closed_on"].min(), "last_purchase": g["closed_on"].max()})
    out["average"] = out["total"] / out["purchases"]
    out.index.name = "customer_id"
    return out


def top_customers(frames: Mapping[str, pd.DataFrame], w: Window, n: int = 20) -> pd.DataFrame:
    totals = customer_totals(frames, w).reset_index()
    cust = frames["customers"]
    keep = [k for k in ("customer_id", "name", "industry", "prefecture", "owner") if k in cust]
    out = totals.merge(cust[keep], on="customer_id", how="left")
    out = out.sort_values(["total", "customer_id"], ascending=[False, True], kind="stable").head(n)
    return out.reset_index(drop=True)


# --- RFM ---------------------------------------------------------------------------------------------------

def quintile_score(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """1..5: one plus five times the share of customers strictly worse (ties share a score)."""
    n = len(values)
    if n == 0:
        return pd.Series(dtype="int64")
    v = values if higher_is_better else -values
    worse = v.rank(method="min") - 1  # how many are strictly worse
    return (1 + np.floor(5 * worse / n)).astype("int64").clip(1, 5)


def rfm(frames: Mapping[str, pd.DataFrame], w: Window) -> pd.DataFrame:
    totals = customer_totals(frames, w)
    if totals.empty:
        return pd.DataFrame(columns=["customer_id", "name", "owner", "recency_days", "purchases", "total",
                                     "last_purchase", "r", "f", "m", "segment"])
    out = totals.copy()
    out["recency_days"] = (w.ts - out["last_purchase"]).dt.days.astype("int64")
    out["r"] = quintile_score(out["recency_days"].astype(float), higher_is_better=False)
    out["f"] = quintile_score(out["purchases"].astype(float))
    out["m"] = quintile_score(out["total"])
    out["segment"] = [rfm_segment(int(r), int(f)) for r, f in zip(out["r"], out["f"], strict=True)]
    cust = frames["customers"].set_index("customer_id")
    out["name"] = out.index.map(cust["name"])
    out["owner"] = out.index.map(cust["owner"]) if "owner" in cust else None
    order = {k[0]: i for i, k in enumerate(RFM_SEGMENTS)}
    out = out.reset_index()
    out["_o"] = out["segment"].map(order)
    out = out.sort_values(["_o", "total", "customer_id"], ascending=[True, False, True], kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)


def rfm_segments(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for key, *_ in RFM_SEGMENTS:
        g = table[table["segment"] == key]
        rows.append({"segment": key, "customers": len(g), "total": float(g["total"].sum()),
                     "avg_recency": float(g["recency_days"].mean()) if len(g) else None})
    return pd.DataFrame(rows)


# --- lapsed customers (再顧客化) ------------------------------------------------------------------------

def lapsed(frames: Mapping[str, pd.DataFrame], w: Window, days: int = 365) -> pd.DataFrame:
    totals = customer_totals(frames, w)
    since = (w.ts - totals["last_purchase"]).dt.days
    gone = totals[since >= days].copy()
    gone["days_since"] = since[since >= days].astype("int64")
    cust = frames["customers"].set_index("customer_id")
    for k in ("name", "owner", "status"):
        gone[k] = gone.index.map(cust[k]) if k in cust else None
    last = last_activity(frames, w)
    gone = gone.join(last, how="left")
    gone.index.name = "customer_id"
    out = gone.reset_index().sort_values(["total", "customer_id"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


# --- pipeline ------------------------------------------------------------------------------------------------

PIPELINE_OVERDUE = "overdue"


def probabilities(schema: Schema) -> dict[str, int]:
    custom = schema.settings.get("probability") if schema.settings else None
    out = dict(DEFAULT_PROBABILITY)
    if isinstance(custom, Mapping):
        out.update({str(k): int(v) for k, v in custom.items()})
    return out


def open_deals(frames: Mapping[str, pd.DataFrame], w: Window, schema: Schema) -> pd.DataFrame:
    """Open deals with their bucket: ``overdue`` (expected before this month), a month label, or None."""
    deals = of_active_customers(frames, frames["deals"])
    op = deals[deals["phase"].isin(OPEN_PHASES)].copy()
    op["value"] = deal_value(op)
    defaults = probabilities(schema)
    prob = op["probability"] if "probability" in op else pd.Series(np.nan, index=op.index)
    op["probability_assumed"] = prob.isna()
    op["probability_used"] = prob.where(prob.notna(), op["phase"].map(defaults)).astype(float).fillna(0.0)
    op["weighted"] = op["value"] * op["probability_used"] / 100.0
    cust = frames["customers"].set_index("customer_id")
    from_customer = op["customer"].map(cust["owner"]) if "owner" in cust else None
    own = op["owner"] if "owner" in op else pd.Series(None, index=op.index, dtype=object)
    op["owner"] = own.where(own.notna(), from_customer)
    op["customer_name"] = op["customer"].map(cust["name"])
    window = w.months(1)[0]
    months = {window + i: month_label(window + i) for i in range(3)}
    exp = op["expected_close"].dt.to_period("M") if "expected_close" in op else pd.Series(pd.NaT, index=op.index)

    def bucket(p: pd.Period | float) -> str | None:
        if p is pd.NaT or (isinstance(p, float) and math.isnan(p)) or pd.isna(p):
            return None
        if p < window:
            return PIPELINE_OVERDUE
        return months.get(p)

    op["bucket"] = [bucket(p) for p in exp]
    return op


def pipeline_forecast(frames: Mapping[str, pd.DataFrame], w: Window, schema: Schema) -> pd.DataFrame:
    """Weighted amount per owner and bucket (overdue, this month, next, the one after)."""
    op = open_deals(frames, w, schema)
    buckets = pipeline_buckets(w)
    inwin = op[op["bucket"].notna()]
    owners = sorted({o for o in inwin["owner"] if o is not None and not pd.isna(o)}, key=str)
    if inwin["owner"].isna().any():
        owners.append(None)
    rows = []
    for o in owners:
        mine = inwin[inwin["owner"].isna()] if o is None else inwin[inwin["owner"] == o]
        row: dict[str, object] = {"owner": o}
        for b in buckets:
            row[b] = float(mine.loc[mine["bucket"] == b, "weighted"].sum())
        row["deals"] = len(mine)
        row["total_weighted"] = float(mine["weighted"].sum())
        rows.append(row)
    return pd.DataFrame(rows, columns=["owner", *buckets, "deals", "total_weighted"])


def pipeline_buckets(w: Window) -> list[str]:
    m = w.month
    return [PIPELINE_OVERDUE, month_label(m), month_label(m + 1), month_label(m + 2)]


# --- complaints and inquiries ------------------------------------------------------------------------------

def voice(frames: Mapping[str, pd.DataFrame], w: Window, months: int = 12) -> pd.DataFrame:
    """Complaints and inquiries dated in the last ``months`` months (up to the as-of date)."""
    acts = frames["activities"]
    periods = w.months(months)
    a = acts[acts["type"].isin(VOICE_TYPES) & acts["date"].notna() & (acts["date"] <= w.ts)].copy()
    a["month"] = a["date"].dt.to_period("M")
    return a[a["month"] >= periods[0]]


def voice_by_category(frames: Mapping[str, pd.DataFrame], w: Window, schema: Schema) -> pd.DataFrame:
    a = voice(frames, w)
    cats = [c.key for c in schema["activities"].column("category").choices] \
        if schema["activities"].has("category") else []
    rows = []
    for cat in [*cats, None]:
        g = a[a["category"].isna()] if cat is None else a[a["category"] == cat]
        if cat is None and g.empty:
            continue
        rows.append({"category": cat, **{t: int((g["type"] == t).sum()) for t in VOICE_TYPES}})
    return pd.DataFrame(rows, columns=["category", *VOICE_TYPES])


def voice_by_month(frames: Mapping[str, pd.DataFrame], w: Window, schema: Schema, kind: str) -> pd.DataFrame:
    """Rows = the last 12 months; one count column per 分類 (category key), plus blank."""
    a = voice(frames, w)
    a = a[a["type"] == kind]
    cats = [c.key for c in schema["activities"].column("category").choices] \
        if schema["activities"].has("category") else []
    out = pd.DataFrame({"month": [month_label(p) for p in w.months(12)]})
    for cat in cats:
        counts = a[a["category"] == cat].groupby("month").size()
        out[cat] = [int(counts.get(p, 0)) for p in w.months(12)]
    blank = a[a["category"].isna()].groupby("month").size()
    if len(blank):
        out["_blank"] = [int(blank.get(p, 0)) for p in w.months(12)]
    return out


def unresolved_voice(frames: Mapping[str, pd.DataFrame], w: Window) -> pd.DataFrame:
    """Complaints and inquiries (any date) not marked 解決, with the customer's latest activity since.

    A blank 結果 counts as unresolved: nobody has said it was settled.
    """
    acts = of_active_customers(frames, frames["activities"])
    a = acts[acts["type"].isin(VOICE_TYPES) & (acts["date"].isna() | (acts["date"] <= w.ts))]
    a = a[a["result"] != "resolved"].copy() if "result" in a else a.copy()
    cust = frames["customers"].set_index("customer_id")
    a["customer_name"] = a["customer"].map(cust["name"])
    a["owner"] = a["customer"].map(cust["owner"]) if "owner" in cust else None
    a["days_open"] = (w.ts - a["date"]).dt.days
    # The customer's two latest activities are enough: the latest one, unless it is this very record,
    # then the one before it (if it is not older than this record).
    later = acts[acts["date"].notna() & (acts["date"] <= w.ts) & acts["customer"].notna()]
    last2 = later.sort_values(["customer", "date", "activity_id"]).groupby("customer").tail(2)
    by_customer: dict[Any, list[tuple[Any, Any, Any]]] = {}
    for cid, aid, d, resp, content in zip(last2["customer"], last2["activity_id"], last2["date"],
                                          last2["response"] if "response" in last2 else [None] * len(last2),
                                          last2["content"], strict=True):
        text = resp if resp is not None and not pd.isna(resp) else content
        by_customer.setdefault(cid, []).append((aid, d, text))
    last_dates, last_contents = [], []
    for cid, aid, d in zip(a["customer"], a["activity_id"], a["date"], strict=True):
        pick = None
        for other_id, other_date, text in reversed(by_customer.get(cid, [])):
            if other_id != aid and (pd.isna(d) or other_date >= d):
                pick = (other_date, text)
                break
            if other_id != aid:
                break
        last_dates.append(pick[0] if pick else pd.NaT)
        last_contents.append(pick[1] if pick else None)
    a["followup_date"] = pd.to_datetime(pd.Series(last_dates, index=a.index, dtype="datetime64[s]"))
    a["followup"] = last_contents
    return a.sort_values(["date", "activity_id"], kind="stable").reset_index(drop=True)


# --- follow-ups ----------------------------------------------------------------------------------------------

def overdue_todos(frames: Mapping[str, pd.DataFrame], w: Window) -> pd.DataFrame:
    t = of_active_customers(frames, frames["todos"])
    status = t["status"] if "status" in t else pd.Series(None, index=t.index, dtype=object)
    late = t[(status != "done") & t["due"].notna() & (t["due"] < w.ts)].copy()
    late["days_overdue"] = (w.ts - late["due"]).dt.days.astype("int64")
    cust = frames["customers"].set_index("customer_id")
    late["customer_name"] = late["customer"].map(cust["name"])
    return late.sort_values(["assignee", "due", "todo_id"], kind="stable").reset_index(drop=True)


def overdue_by_assignee(late: pd.DataFrame) -> pd.DataFrame:
    if late.empty:
        return pd.DataFrame(columns=["assignee", "count", "oldest_due"])
    g = late.groupby("assignee", dropna=False)
    out = pd.DataFrame({"count": g.size(), "oldest_due": g["due"].min()}).reset_index()
    return out.sort_values(["count", "assignee"], ascending=[False, True], kind="stable").reset_index(drop=True)


def no_contact(frames: Mapping[str, pd.DataFrame], w: Window, days: int = 90) -> pd.DataFrame:
    """Customers (other than 失注) whose latest activity is ``days`` or more days old, or who have none."""
    cust = frames["customers"]
    if "status" in cust:
        cust = cust[cust["status"] != "lost"]
    last = last_activity(frames, w)
    out = cust.set_index("customer_id")[[k for k in ("name", "owner", "status") if k in cust]].join(last)
    out["days_since"] = (w.ts - out["last_contact"]).dt.days
    out = out[out["last_contact"].isna() | (out["days_since"] >= days)]
    out = out.reset_index()
    out["_never"] = out["last_contact"].isna()
    out = out.sort_values(["_never", "days_since", "customer_id"], ascending=[False, False, True], kind="stable")
    return out.drop(columns="_never").reset_index(drop=True)


# --- data quality -----------------------------------------------------------------------------------------

def stale_customers(frames: Mapping[str, pd.DataFrame], w: Window, changed: Mapping[str, pd.Timestamp],
                    days: int = 365) -> pd.DataFrame:
    """Customers whose latest update (更新日 or a history row), as a calendar day, is ``days`` or more
    days before the as-of date, or unknown."""
    cust = frames["customers"].copy()
    upd = cust["updated_at"] if "updated_at" in cust else pd.Series(pd.NaT, index=cust.index)
    hist = cust["customer_id"].map(lambda i: changed.get(i, pd.NaT))
    hist = pd.to_datetime(hist, errors="coerce")
    cust["last_update"] = pd.concat([upd, hist], axis=1).max(axis=1).dt.normalize()
    cust["days_since"] = (w.ts - cust["last_update"]).dt.days
    old = cust[cust["last_update"].isna() | (cust["days_since"] >= days)]
    keep = [k for k in ("customer_id", "name", "owner") if k in old] + ["last_update", "days_since"]
    return old[keep].sort_values(["last_update", "customer_id"], na_position="first", kind="stable") \
        .reset_index(drop=True)


def missing_fields(frames: Mapping[str, pd.DataFrame], schema: Schema) -> pd.DataFrame:
    """Blank required columns, blank columns a rule requires, and blank sales dimensions.

    Returns rows (entity, column, condition, missing, considered); ``condition`` is the rule's
    trigger (``phase=won``) or "" when the column is always expected.  業種 is expected of
    corporate customers only (区分 = 法人): a person has none.
    """
    rows = []
    for e in schema:
        f = frames[e.key]
        for c in e.columns:
            if c.system:
                continue
            wanted = c.required or (e.key == "customers" and c.key in SALES_DIMENSIONS)
            if not wanted:
                continue
            if e.key == "customers" and c.key == "industry" and e.has("kind"):
                scope = f[f["kind"] != "individual"]
                rows.append({"entity": e.key, "column": c.key, "condition": ("kind", ("corporate",)),
                             "missing": int(scope[c.key].isna().sum()), "considered": len(scope)})
            else:
                rows.append({"entity": e.key, "column": c.key, "condition": None,
                             "missing": int(f[c.key].isna().sum()), "considered": len(f)})
        for r in e.rules:
            if isinstance(r, RequiredWhen) and e.has(r.target) and e.has(r.when):
                scope = f[f[r.when].isin(r.values)]
                rows.append({"entity": e.key, "column": r.target, "condition": (r.when, r.values),
                             "missing": int(scope[r.target].isna().sum()), "considered": len(scope)})
    if schema["deals"].has("amount"):
        d = frames["deals"]
        won = d[d["phase"].isin(CLOSED_PHASES[:1])]
        rows.append({"entity": "deals", "column": "amount", "condition": ("phase", ("won",)),
                     "missing": int((deal_value(won) == 0).sum() if len(won) else 0), "considered": len(won)})
    cust = frames["customers"]
    reach = [k for k in ("phone", "email") if k in cust]
    if reach:
        rows.append({"entity": "customers", "column": "+".join(reach), "condition": None,
                     "missing": int(cust[reach].isna().all(axis=1).sum()), "considered": len(cust)})
    return pd.DataFrame(rows, columns=["entity", "column", "condition", "missing", "considered"])
