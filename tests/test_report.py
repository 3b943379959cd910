"""`xlcrm report`: every figure against an independent pandas computation straight from SQL, the
charts' ranges read back from the chart XML, LibreOffice opening the result, PNG charts with a font
that has the glyphs.

"Independent" means: these computations read the SQLite tables with ``pandas.read_sql`` and use their
own string-based month arithmetic, never ``xlcrm.views.analysis``.
"""

from __future__ import annotations

import re
import sqlite3
import zipfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from defusedxml import ElementTree as ET
from fixtures_report import AS_OF, build_master
from helpers import libreoffice_convert
from openpyxl.utils.cell import range_boundaries

from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db
from xlcrm.views.report import ReportOptions, make_report
from xlcrm.xlsx.crypto import is_encrypted

C = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"
PHASE_DEFAULTS = {"lead": 10, "proposal": 30, "quote": 50, "negotiation": 70}


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = build_master(tmp_path_factory.mktemp("rep"))
    conn = db.connect(db.db_path_for(m))
    # Two pending review items and one decided: the report must count 2 and 1.
    conn.execute("INSERT INTO duplicates(entity, a_id, b_id, score, status) VALUES "
                 "('customers', 'C-000001', 'C-000002', 0.8, 'pending'), "
                 "('customers', 'C-000003', 'C-000004', 0.7, 'pending'), "
                 "('customers', 'C-000005', 'C-000006', 0.9, 'distinct')")
    conn.execute("INSERT INTO conflicts(entity, record_id, field, status) VALUES ('customers', 'C-000001', "
                 "'phone', 'pending')")
    conn.close()
    return m


@pytest.fixture(scope="module")
def report_path(master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report.xlsx"
    make_report(master, out, S, as_of=AS_OF, lang="ja")
    return out


@pytest.fixture(scope="module")
def book(report_path: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(report_path)


def table(wb: openpyxl.Workbook, name: str) -> tuple[list[str], list[list[Any]]]:
    for ws in wb.worksheets:
        if name in ws.tables:
            min_col, min_row, max_col, max_row = range_boundaries(ws.tables[name].ref)
            rows = [[c.value for c in r] for r in ws.iter_rows(min_row=min_row, max_row=max_row,
                                                                min_col=min_col, max_col=max_col)]
            data = [r for r in rows[1:] if any(v is not None for v in r)]
            return [str(h) for h in rows[0]], data
    raise AssertionError(f"no table {name}")


def as_dict(wb: openpyxl.Workbook, name: str, key: int = 0) -> dict[Any, list[Any]]:
    _, rows = table(wb, name)
    return {r[key]: r for r in rows}


# --- independent computations ------------------------------------------------------------------------

def sql(master: Path, query: str) -> pd.DataFrame:
    with sqlite3.connect(db.db_path_for(master)) as conn:
        return pd.read_sql(query, conn)


def months_back(n: int, end: date = AS_OF) -> list[str]:
    y, m = end.year, end.month
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        m -= 1
        if m == 0:
            y, m = y - 1, 12
    return out[::-1]


def won_deals(master: Path) -> pd.DataFrame:
    d = sql(master, "SELECT d.*, c.industry, c.prefecture, c.source, c.owner AS cust_owner "
                    "FROM deals d LEFT JOIN customers c ON c.customer_id = d.customer "
                    "WHERE d._state = 'active' AND d.phase = 'won' AND d.closed_on IS NOT NULL "
                    f"AND d.closed_on <= '{AS_OF.isoformat()}'")
    d["value"] = d["amount"].fillna(d["quantity"] * d["unit_price"]).fillna(0)
    d["ym"] = d["closed_on"].str[:7]
    d["who"] = d["owner"].fillna(d["cust_owner"])
    return d


def test_monthly_sales_match_sql(master: Path, book: openpyxl.Workbook) -> None:
    d = won_deals(master)
    want = d.groupby("ym")["value"].sum()
    counts = d.groupby("ym").size()
    headers, rows = table(book, "rpt_sales_monthly")
    assert headers == ["月", "受注額", "受注件数"]
    assert [r[0] for r in rows] == months_back(24)
    for month, amount, n in rows:
        assert amount == pytest.approx(float(want.get(month, 0.0)))
        assert n == int(counts.get(month, 0))
    assert sum(r[1] for r in rows) > 0
    # The deleted 99,000,000 deal is not in this month's figure.
    assert rows[-1][1] < 99_000_000


@pytest.mark.parametrize("dim, column", [("industry", "industry"), ("prefecture", "prefecture"),
                                         ("source", "source"), ("owner", "who")])
def test_sales_by_dimension_match_sql(master: Path, book: openpyxl.Workbook, dim: str, column: str) -> None:
    d = won_deals(master)
    last12, prev12 = set(months_back(12)), set(months_back(24)[:12])
    col = S["customers"].column(dim)
    label = d[column].map(lambda v: "(未設定)" if v is None or pd.isna(v) else
                          (col.choice_label(v, "ja") if dim != "owner" else v))
    d = d.assign(label=label)
    want = d[d["ym"].isin(last12)].groupby("label")["value"].sum()
    prev = d[d["ym"].isin(prev12)].groupby("label")["value"].sum()
    got = as_dict(book, f"rpt_sales_by_{dim}")
    assert set(got) == set(want.index) | set(prev.index)
    for k, row in got.items():
        assert row[1] == pytest.approx(float(want.get(k, 0.0)))
        assert row[3] == pytest.approx(float(prev.get(k, 0.0)))
    amounts = [r[1] for r in got.values()]
    assert amounts == sorted(amounts, reverse=True)


def test_top_customers_match_sql(master: Path, book: openpyxl.Workbook) -> None:
    d = won_deals(master)
    g = d.groupby("customer").agg(total=("value", "sum"), n=("value", "size"), last=("closed_on", "max"))
    g = g.sort_values(["total"], ascending=False).head(20)
    _, rows = table(book, "rpt_top_customers")
    assert [r[1] for r in rows] == list(g.index)
    for r in rows:
        exp = g.loc[r[1]]
        assert r[6] == pytest.approx(exp["total"])
        assert r[7] == exp["n"]
        assert r[8] == pytest.approx(exp["total"] / exp["n"])
        assert r[10].date().isoformat() == exp["last"]
    # The customer named like a formula is there, as text.
    ws = book["上位顧客"]
    hit = [c for row in ws.iter_rows() for c in row if isinstance(c.value, str) and c.value.startswith("=HYPER")]
    assert hit and all(c.data_type == "s" and c.quotePrefix for c in hit)


def _score(values: pd.Series, higher_better: bool) -> dict[str, int]:
    out = {}
    n = len(values)
    for k, v in values.items():
        worse = sum(1 for w in values if (w < v if higher_better else w > v))
        out[k] = 1 + (5 * worse) // n
    return out


def test_rfm_scores_and_segments(master: Path, book: openpyxl.Workbook) -> None:
    d = won_deals(master)
    g = d.groupby("customer").agg(total=("value", "sum"), n=("value", "size"), last=("closed_on", "max"))
    rec = g["last"].map(lambda s: (AS_OF - date.fromisoformat(s)).days)
    r, f, m = _score(rec, False), _score(g["n"], True), _score(g["total"], True)
    rows = as_dict(book, "rpt_rfm_customers")
    assert set(rows) == set(g.index)
    for cid, row in rows.items():
        assert (row[4], row[5], row[6]) == (r[cid], f[cid], m[cid]), cid
        assert row[7] == rec[cid]
    segs = as_dict(book, "rpt_rfm_segments")
    assert sum(v[2] for v in segs.values()) == len(g)
    champions = sum(1 for c in g.index if r[c] >= 4 and f[c] >= 4)
    assert segs["優良顧客"][2] == champions
    hibernating = sum(1 for c in g.index if r[c] <= 2 and f[c] < 3)
    assert segs["離反顧客"][2] == hibernating


def test_lapsed_customers(master: Path, book: openpyxl.Workbook) -> None:
    d = won_deals(master)
    last = d.groupby("customer")["closed_on"].max()
    cutoff = (AS_OF - timedelta(days=365)).isoformat()
    want = set(last[last < cutoff].index)
    got = as_dict(book, "rpt_lapsed")
    assert set(got) == want
    assert "C-900001" in got  # bought twice long ago, never since
    acts = sql(master, "SELECT customer, MAX(date) AS d FROM activities WHERE _state='active' GROUP BY customer")
    last_contact = dict(zip(acts["customer"], acts["d"], strict=True))
    for cid, row in got.items():
        expected = last_contact.get(cid)
        assert (row[8].date().isoformat() if row[8] else None) == expected


def test_pipeline_forecast(master: Path, book: openpyxl.Workbook) -> None:
    d = sql(master, "SELECT d.*, c.owner AS cust_owner FROM deals d JOIN customers c ON c.customer_id = d.customer "
                    "WHERE d._state='active' AND d.phase IN ('lead','proposal','quote','negotiation')")
    d["prob"] = d["probability"].fillna(d["phase"].map(PHASE_DEFAULTS))
    d["w"] = d["amount"].fillna(0) * d["prob"] / 100
    d["who"] = d["owner"].fillna(d["cust_owner"])
    d["ym"] = d["expected_close"].str[:7]
    this = months_back(1)[0]
    nxt = [this, *[m for m in months_back(3, date(AS_OF.year, AS_OF.month, 1) + timedelta(days=70))[1:]]]
    assert nxt[0] < nxt[1] < nxt[2]
    headers, rows = table(book, "rpt_pipeline_forecast")
    assert headers[1:5] == ["期限超過", *nxt]
    got = {r[0]: r for r in rows}
    for who, g in d.groupby("who"):
        over = g[g["ym"] < this]["w"].sum()
        per = [g[g["ym"] == m]["w"].sum() for m in nxt]
        if over == 0 and sum(per) == 0 and g[g["ym"].isin(nxt) | (g["ym"] < this)].empty:
            assert who not in got
            continue
        assert got[who][1] == pytest.approx(over)
        assert got[who][2:5] == pytest.approx(per)


def test_complaints_and_inquiries(master: Path, book: openpyxl.Workbook) -> None:
    a = sql(master, "SELECT * FROM activities WHERE _state='active' AND type IN ('complaint','inquiry')")
    a["ym"] = a["date"].str[:7]
    recent = a[a["ym"].isin(months_back(12)) & (a["date"] <= AS_OF.isoformat())]
    cat = S["activities"].column("category")
    got = as_dict(book, "rpt_voice_by_category")
    for c in cat.choices:
        row = got[c.label("ja")]
        assert row[1] == int(((recent["category"] == c.key) & (recent["type"] == "complaint")).sum())
        assert row[2] == int(((recent["category"] == c.key) & (recent["type"] == "inquiry")).sum())
    monthly = as_dict(book, "rpt_voice_monthly_complaint")
    assert list(monthly) == months_back(12)
    assert sum(sum(r[1:]) for r in monthly.values()) == int((recent["type"] == "complaint").sum())
    unresolved = as_dict(book, "rpt_voice_unresolved")
    want = a[(a["result"] != "resolved") | a["result"].isna()]
    assert set(unresolved) == set(want["activity_id"])
    assert "A-999999" not in unresolved  # merged
    allacts = sql(master, "SELECT activity_id, customer, date FROM activities WHERE _state='active'")
    for aid, row in unresolved.items():
        mine = allacts[(allacts["customer"] == row[2]) & (allacts["activity_id"] != aid)
                       & (allacts["date"] >= row[1].date().isoformat())]
        want = mine["date"].max() if len(mine) else None
        assert (row[11].date().isoformat() if row[11] else None) == want, aid


def test_followups(master: Path, book: openpyxl.Workbook) -> None:
    t = sql(master, "SELECT * FROM todos WHERE _state='active'")
    late = t[(t["status"] != "done") & (t["due"] < AS_OF.isoformat())]
    assert set(as_dict(book, "rpt_followup_overdue")) == set(late["todo_id"])
    per = as_dict(book, "rpt_followup_per_owner")
    for who, g in late.groupby("assignee"):
        assert per[who][1] == len(g)
    c = sql(master, "SELECT c.customer_id, c.status, MAX(a.date) AS last FROM customers c LEFT JOIN activities a "
                    "ON a.customer = c.customer_id AND a._state='active' WHERE c._state='active' GROUP BY c.customer_id")
    cutoff = (AS_OF - timedelta(days=90)).isoformat()
    want = c[(c["status"] != "lost") & (c["last"].isna() | (c["last"] < cutoff))]
    assert set(as_dict(book, "rpt_followup_no_contact")) == set(want["customer_id"])


def test_data_quality(master: Path, book: openpyxl.Workbook) -> None:
    q = as_dict(book, "rpt_quality_summary")
    assert q["未処理の重複候補"][1] == 2
    assert q["未処理の競合"][1] == 1
    c = sql(master, "SELECT customer_id, updated_at FROM customers WHERE _state='active'")
    h = sql(master, "SELECT record_id, MAX(substr(at, 1, 10)) AS at FROM history WHERE entity='customers' "
                    "GROUP BY record_id")
    hist = dict(zip(h["record_id"], h["at"], strict=True))
    cutoff = (AS_OF - timedelta(days=365)).isoformat()
    stale = {r.customer_id for r in c.itertuples()
             if max(filter(None, [r.updated_at, hist.get(r.customer_id)]), default="") < cutoff}
    assert set(as_dict(book, "rpt_quality_stale")) == stale
    assert q["365日以上更新のない顧客"][1] == len(stale)
    _, missing = table(book, "rpt_quality_missing")
    ind = next(r for r in missing if r[0] == "顧客" and r[1] == "業種")
    assert ind[3] == int(sql(master, "SELECT COUNT(*) AS n FROM customers WHERE _state='active' AND "
                                     "industry IS NULL")["n"][0])


def test_summary_agrees_with_sheets(book: openpyxl.Workbook) -> None:
    kpi = as_dict(book, "rpt_summary_kpi")
    _, monthly = table(book, "rpt_sales_monthly")
    assert kpi["直近12か月の受注額"][1] == pytest.approx(sum(r[1] for r in monthly[-12:]))
    assert kpi["期限切れTODO"][1] == len(table(book, "rpt_followup_overdue")[1])
    assert book.sheetnames[0] == "概要"


# --- charts ------------------------------------------------------------------------------------------------

def chart_refs(path: Path) -> list[dict[str, Any]]:
    """Per chart part: its series' category/value references, read from the XML in the zip."""
    out = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if re.match(r"xl/charts/chart\d+\.xml$", n)):
            root = ET.fromstring(z.read(name))
            series = []
            for ser in root.iter(f"{C}ser"):
                cat = ser.find(f"{C}cat//{C}f")
                val = ser.find(f"{C}val//{C}f")
                series.append((cat.text if cat is not None else None, val.text if val is not None else None))
            out.append({"part": name, "series": series})
    return out


def resolve(wb: openpyxl.Workbook, ref: str) -> tuple[str, tuple[int, int, int, int]]:
    sheet, cells = ref.rsplit("!", 1)
    sheet = sheet.strip("'").replace("''", "'")
    return sheet, range_boundaries(cells.replace("$", ""))


def test_charts_point_at_their_tables(report_path: Path, book: openpyxl.Workbook) -> None:
    charts = chart_refs(report_path)
    assert len(charts) == 14  # 12 topic charts + 2 on the summary
    tables = {(ws.title, name): range_boundaries(ref) for ws in book.worksheets for name, ref in ws.tables.items()}
    for ch in charts:
        assert ch["series"], ch["part"]
        for cat, val in ch["series"]:
            for ref in (cat, val):
                sheet, (c1, r1, c2, r2) = resolve(book, ref)
                inside = [n for (s, n), (tc1, tr1, tc2, tr2) in tables.items()
                          if s == sheet and tc1 <= c1 and c2 <= tc2 and tr1 <= r1 and r2 <= tr2]
                assert inside, f"{ch['part']}: {ref} is outside every table"
            _, (c1, r1, c2, r2) = resolve(book, val)
            ws = book[resolve(book, val)[0]]
            values = [ws.cell(r, c).value for r in range(r1, r2 + 1) for c in range(c1, c2 + 1)]
            assert all(v is None or isinstance(v, int | float) for v in values), (ch["part"], val, values)

    # The 24-month chart covers exactly the monthly table's data rows, on the 売上 sheet and the summary.
    def norm(ref: str | None) -> tuple[str, tuple[int, int, int, int]] | None:
        return None if ref is None else resolve(book, ref)

    ws = book["売上"]
    c1, r1, c2, r2 = range_boundaries(ws.tables["rpt_sales_monthly"].ref)
    want = (("売上", (1, r1 + 1, 1, r2)), ("売上", (2, r1 + 1, 2, r2)))
    hits = [ch for ch in charts if want in [(norm(c), norm(v)) for c, v in ch["series"]]]
    assert len(hits) == 2 and r2 - r1 == 24
    # The pipeline chart: one series per owner row, over the four bucket columns.
    ws = book["見込み"]
    c1, r1, c2, r2 = range_boundaries(ws.tables["rpt_pipeline_forecast"].ref)
    owners = len(table(book, "rpt_pipeline_forecast")[1])
    pipe = [ch for ch in charts if any(norm(v)[0] == "見込み" for _, v in ch["series"])]
    assert len(pipe) == 2 and all(len(ch["series"]) == owners for ch in pipe)
    assert [norm(x) for x in pipe[0]["series"][0]] == [("見込み", (2, r1, 5, r1)), ("見込み", (2, r1 + 1, 5, r1 + 1))]


def test_report_opens_in_libreoffice(report_path: Path, tmp_path: Path) -> None:
    pdf = libreoffice_convert(report_path, tmp_path)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page") + data.count(b"/Type/Page") >= 9


def test_english_report_and_encryption(master: Path, tmp_path: Path) -> None:
    out = tmp_path / "en.xlsx"
    make_report(master, out, S, as_of=AS_OF, lang="en", options=ReportOptions(top_n=5))
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["Summary", "Sales", "Top customers", "RFM", "Lapsed", "Pipeline", "Complaints",
                             "Follow-ups", "Data quality"]
    assert len(table(wb, "rpt_top_customers")[1]) == 5
    assert table(wb, "rpt_sales_by_industry")[0][0] == "Industry"
    secret = tmp_path / "secret.xlsx"
    make_report(master, secret, S, as_of=AS_OF, password="s3cret")
    assert is_encrypted(secret.read_bytes())


def test_png_charts_render_japanese(master: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="--png needs the report extra: pip install -e '.[test]'")
    pytest.importorskip("matplotlib_fontja", reason="--png needs the report extra: pip install -e '.[test]'")
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager
    from matplotlib_fontja import get_font_ttf_path
    from PIL import Image

    res = make_report(master, tmp_path / "r.xlsx", S, as_of=AS_OF, png_dir=tmp_path / "png")
    assert len(res.pngs) == len(res.report.charts()) == 12
    for p in res.pngs:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 400
            colours = im.convert("RGB").getcolors(1_000_000)
            assert colours is not None and len(colours) > 5  # not a blank image
    # The font matplotlib resolves for the bundled family is the bundled file, and it has every glyph the
    # chart titles and category labels use (no tofu boxes).
    family = font_manager.FontProperties(fname=get_font_ttf_path()).get_name()
    assert Path(font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)) \
        == Path(get_font_ttf_path())
    cmap = TTFont(get_font_ttf_path())["cmap"].getBestCmap()
    text = "".join(spec.title + "".join(str(r[spec.category]) for r in block.rows)
                   for spec, block in res.report.charts())
    missing = {ch for ch in text if not ch.isspace() and ord(ch) not in cmap}
    assert not missing


def test_empty_master_and_switched_off_columns(tmp_path: Path) -> None:
    """A brand-new master (no records) and a schema with optional columns switched off still report."""
    from xlcrm.schema import build_schema

    m = tmp_path / "empty" / "master.xlsx"
    m.parent.mkdir()
    conn = db.connect(db.db_path_for(m), create=True)
    db.create_tables(conn, S)
    conn.close()
    res = make_report(m, tmp_path / "empty.xlsx", S, as_of=AS_OF, png_dir=tmp_path / "png")
    wb = openpyxl.load_workbook(res.path)
    assert table(wb, "rpt_sales_monthly")[1] == [[mth, 0, 0] for mth in months_back(24)]
    assert table(wb, "rpt_top_customers")[1] == [] and len(res.pngs) == 12

    full = build_master(tmp_path / "full")
    reduced = build_schema({"sheets": {"customers": {"disable": ["industry", "source", "updated_at"]},
                                       "deals": {"disable": ["probability", "quantity", "unit_price"]}}})
    res = make_report(full, tmp_path / "reduced.xlsx", reduced, as_of=AS_OF)
    wb = openpyxl.load_workbook(res.path)
    names = {n for ws in wb.worksheets for n in ws.tables}
    assert "rpt_sales_by_industry" not in names and "rpt_sales_by_prefecture" in names
    assert "確度" not in table(wb, "rpt_pipeline_deals")[0]
    assert "業種" not in table(wb, "rpt_top_customers")[0]
    assert len(res.report.charts()) == 10
