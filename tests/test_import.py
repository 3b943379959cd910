"""`xlcrm import`: real sources written here in each shape and encoding, imported through the CLI,
then read back to check where every source value landed, and validated and merged as a user would."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.xlsx.reader import read_workbook

_register()
runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def sheet(path: Path, entity: str) -> list[dict[str, Any]]:
    """Rows of one sheet of a written workbook, keyed by column key, blanks left out."""
    frame = read_workbook(path, DEFAULT_SCHEMA).sheets[entity].frame
    return [{k: v for k, v in rec.items() if v is not None} for rec in frame.to_dict("records")]


def write_csv(path: Path, rows: list[list[str]], encoding: str, delimiter: str = ",") -> Path:
    text = "\r\n".join(delimiter.join(r) for r in rows) + "\r\n"
    path.write_bytes(text.encode(encoding))
    return path


def messy_customer_list(path: Path) -> Path:
    """A 顧客リスト as a salesperson formats it: title and blank rows above, joined address, a notes
    column with a line break, a last-visit date, two owners, a totals row at the bottom."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "顧客リスト"
    ws["A1"] = "顧客リスト（2024年度 営業部）"
    ws.append([])
    ws.append(["会社名", "部署", "担当者名", "TEL", "〒", "住所1", "住所2", "最終訪問日", "メモ", "営業担当"])
    ws.append(["山田精機株式会社", "営業部", "山田 太郎", "03-1234-5678", "100-0001", "東京都千代田区千代田1-1",
               "山田ビル3F", dt.datetime(2024, 3, 1), "年末に\n再訪問", "佐藤"])
    ws.append(["(株)鈴木商店", "総務部", "鈴木 花子", "06-1111-2222", "530-0001", "大阪府大阪市北区梅田1-1",
               None, None, None, "鈴木"])
    ws.append([])
    ws.append(["北山デザイン事務所", None, None, "0120-444-555", None, "札幌市中央区北1条", None, None,
               "紹介: 山田様", "佐藤"])
    ws.append(["合計", "3社"])
    wb.save(path)
    return path


CARDS = [["会社名", "部署名", "役職", "姓", "名", "e-mail", "郵便番号", "住所", "TEL会社"],
         ["山田精機(株)", "技術部", "課長", "田中", "一郎", "tanaka@yamada.co.jp", "100-0001",
          "東京都千代田区千代田1-1", "03-1234-5678"],
         ["有限会社佐藤工務店", "", "代表取締役", "佐藤", "次郎", "jiro@sato-koumuten.jp", "460-0001",
          "愛知県名古屋市中区栄1-2", "052-111-2222"],
         ["有限会社佐藤工務店", "工事部", "専務", "佐藤", "三郎", "saburo@sato-koumuten.jp", "460-0001",
          "愛知県名古屋市中区栄1-2", "052-111-9999"]]


def test_messy_customer_list_lands_cell_by_cell_then_validates_and_merges(tmp_path: Path) -> None:
    src = messy_customer_list(tmp_path / "顧客リスト.xlsx")
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--owner", "佐藤")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["import-map.toml", "import-report.csv", "佐藤.xlsx", "鈴木.xlsx"]

    sato = sheet(out / "佐藤.xlsx", "customers")
    assert sato == [
        {"kind": "法人", "name": "山田精機株式会社", "phone": "03-1234-5678", "postal_code": "100-0001",
         "prefecture": "東京都", "address": "千代田区千代田1-1 山田ビル3F", "owner": "佐藤",
         "notes": "年末に\n再訪問\n最終訪問日: 2024/03/01"},
        {"kind": "法人", "name": "北山デザイン事務所", "phone": "0120-444-555", "address": "札幌市中央区北1条",
         "owner": "佐藤", "notes": "紹介: 山田様"},
    ]
    assert sheet(out / "佐藤.xlsx", "contacts") == [
        {"customer": "山田精機株式会社", "name": "山田 太郎", "department": "営業部"}]
    suzuki = sheet(out / "鈴木.xlsx", "customers")
    assert [(r["name"], r["prefecture"], r["address"], r["owner"]) for r in suzuki] == [
        ("(株)鈴木商店", "大阪府", "大阪市北区梅田1-1", "鈴木")]
    assert sheet(out / "鈴木.xlsx", "contacts") == [
        {"customer": "(株)鈴木商店", "name": "鈴木 花子", "department": "総務部"}]

    assert run("validate", out).exit_code == 0
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    merged = run("merge", out, "--master", master, "--json")
    assert merged.exit_code == 0, merged.output
    assert sum(s["new"] for f in json.loads(merged.output)["files"] for s in f["sheets"].values()) == 5


@pytest.mark.parametrize("encoding", ["cp932", "utf-8", "utf-8-sig"])
def test_business_card_csv_in_each_encoding_groups_people_by_company(tmp_path: Path, encoding: str) -> None:
    src = write_csv(tmp_path / "名刺.csv", CARDS, encoding)
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--owner", "高橋", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    (s,) = report["sources"]
    assert s["encoding"] == {"cp932": "cp932", "utf-8": "utf-8", "utf-8-sig": "utf-8-sig"}[encoding]
    assert (s["rows_read"], s["rows_written"], s["rows_skipped"]) == (3, 3, 0)
    book = out / "高橋.xlsx"
    customers = sheet(book, "customers")
    assert [(c["name"], c["kind"], c["prefecture"], c["address"], c["phone"], c["postal_code"]) for c in customers] == [
        ("山田精機(株)", "法人", "東京都", "千代田区千代田1-1", "03-1234-5678", "100-0001"),
        ("有限会社佐藤工務店", "法人", "愛知県", "名古屋市中区栄1-2", "052-111-2222", "460-0001")]
    contacts = sheet(book, "contacts")
    assert contacts == [
        {"customer": "山田精機(株)", "name": "田中 一郎", "department": "技術部", "title": "課長",
         "email": "tanaka@yamada.co.jp"},
        {"customer": "有限会社佐藤工務店", "name": "佐藤 次郎", "title": "代表取締役", "email": "jiro@sato-koumuten.jp"},
        # The second card of the same company: its other company phone stays with the person.
        {"customer": "有限会社佐藤工務店", "name": "佐藤 三郎", "department": "工事部", "title": "専務",
         "email": "saburo@sato-koumuten.jp", "notes": "電話番号: 052-111-9999"},
    ]
    assert run("validate", out).exit_code == 0


def test_tsv_and_blank_headers_judged_by_their_values(tmp_path: Path) -> None:
    rows = [["お客様名（正式名称）", "列1", "", "住所"],
            ["株式会社みどり園", "045-222-3333", "info@midori.example.jp", "神奈川県横浜市西区1-1"],
            ["青空商事株式会社", "(03)5555-6666", "sales@aozora.example.jp", "東京都港区芝1-2"]]
    src = write_csv(tmp_path / "list.tsv", rows, "utf-8", "\t")
    res = run("import", src, "--dry-run", "--json", "--owner", "a")
    assert res.exit_code == 0, res.output
    (s,) = json.loads(res.output)["sources"]
    assert s["delimiter"] == "\t"
    by_col = {m["column"]: m for m in s["mapping"]}
    assert by_col["A"]["to"] == "customers.name" and by_col["A"]["why"] == "header お客様名（正式名称） = 顧客名"
    assert by_col["B"]["to"] == "customers.phone" and "phone numbers (2 of 2)" in by_col["B"]["why"]
    assert by_col["C"]["to"] == "customers.email" and "e-mail" in by_col["C"]["why"]
    assert s["samples"][0]["customers"]["phone"] == "045-222-3333"


def test_dry_run_writes_nothing_and_shows_why(tmp_path: Path) -> None:
    src = messy_customer_list(tmp_path / "顧客リスト.xlsx")
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--dry-run")
    assert res.exit_code == 0, res.output
    assert not out.exists()
    assert "header row 3" in res.output and "part 1 of 住所" in res.output
    assert "would write" in res.output
    js = json.loads(run("import", src, "--dry-run", "--json").output)
    (s,) = js["sources"]
    assert s["header_row"] == 3 and s["shape"] == "customers"
    assert (s["rows_read"], s["rows_written"], s["rows_skipped"]) == (4, 3, 1)
    assert s["skipped"][0]["where"].endswith("row 8")


def test_map_file_reruns_and_edits_take_effect(tmp_path: Path) -> None:
    src = messy_customer_list(tmp_path / "顧客リスト.xlsx")
    first = tmp_path / "first"
    assert run("import", src, "--out", first, "--owner", "佐藤").exit_code == 0
    text = (first / "import-map.toml").read_text(encoding="utf-8")
    edited = tmp_path / "edited.toml"
    # The admin decides the memo column belongs to the contact person.
    assert "prefecture_from_address = true" in text
    edited.write_text(text.replace('header = "メモ", to = "customers.notes"', 'header = "メモ", to = "contacts.notes"')
                      .replace("prefecture_from_address = true", "prefecture_from_address = false"),
                      encoding="utf-8")
    second = tmp_path / "second"
    res = run("import", src, "--out", second, "--map", edited, "--owner", "佐藤")
    assert res.exit_code == 0, res.output
    contacts = sheet(second / "佐藤.xlsx", "contacts")
    assert contacts[0]["notes"] == "年末に\n再訪問"
    # A column the map names is gone from next month's file: imported, and a person is asked to look.
    wb = openpyxl.load_workbook(src)
    wb.active.delete_cols(4)  # TEL
    (tmp_path / "next").mkdir()
    wb.save(tmp_path / "next" / "顧客リスト.xlsx")
    res = run("import", tmp_path / "next" / "顧客リスト.xlsx", "--out", tmp_path / "third", "--map", edited,
              "--owner", "佐藤", "--json")
    assert res.exit_code == 1
    (need,) = json.loads(res.output)["needs_a_person"]
    assert need["what"] == "mapped column 'TEL' (D) is not in this file"
    customers = sheet(second / "佐藤.xlsx", "customers")
    assert "年末" not in str(customers)
    assert customers[0]["address"] == "東京都千代田区千代田1-1 山田ビル3F" and "prefecture" not in customers[0]


def test_an_unreadable_source_is_one_line_and_the_others_go_on(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "名刺.csv", CARDS, "cp932")
    bad = write_csv(tmp_path / "在庫.csv", [["品番", "在庫数"], ["A-1", "3"]], "utf-8")
    out = tmp_path / "team"
    res = run("import", good, bad, "--out", out, "--owner", "高橋")
    assert res.exit_code == 2
    line = next(ln for ln in res.output.splitlines() if "在庫.csv" in ln)
    assert "品番" in line and "顧客名" in line and "--map" in line
    assert len(sheet(out / "高橋.xlsx", "contacts")) == 3


def test_refuses_to_overwrite_an_earlier_import(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "名刺.csv", CARDS, "utf-8")
    out = tmp_path / "team"
    assert run("import", src, "--out", out, "--owner", "高橋").exit_code == 0
    before = (out / "高橋.xlsx").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "import", str(src), "--out", str(out), "--owner", "高橋"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and (out / "高橋.xlsx").read_bytes() == before
    assert proc.stderr.count("\n") == 1 and "already exists" in proc.stderr


def test_xls_saved_by_libreoffice(tmp_path: Path) -> None:
    from helpers import libreoffice_convert

    src = messy_customer_list(tmp_path / "顧客リスト.xlsx")
    conv = tmp_path / "conv"
    conv.mkdir()
    xls = libreoffice_convert(src, conv, "xls")
    out = tmp_path / "team"
    res = run("import", xls, "--out", out, "--owner", "佐藤")
    assert res.exit_code == 0, res.output
    sato = sheet(out / "佐藤.xlsx", "customers")
    assert [(c["name"], c["address"], c["notes"]) for c in sato] == [
        ("山田精機株式会社", "千代田区千代田1-1 山田ビル3F", "年末に\n再訪問\n最終訪問日: 2024/03/01"),
        ("北山デザイン事務所", "札幌市中央区北1条", "紹介: 山田様")]
    assert sheet(out / "鈴木.xlsx", "contacts")[0]["name"] == "鈴木 花子"


# --- property: per-source counts add up and no non-empty cell disappears --------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_HEADERS = ["担当者名", "部署", "TEL", "住所1", "住所2", "メモ", "列1", "", "取引区分", "e-mail", "役職"]
_WORD = st.text(alphabet="山田精機鈴木商店abc0123-@.株式会社（）", min_size=1, max_size=6)


_LEDGER_HEADERS = ["伝票番号", "商品名", "数量", "単価", "担当者", "税区分", "列1", ""]


@st.composite
def _tables(draw: Any) -> list[list[str]]:
    if draw(st.booleans()):  # a customer or card list
        extra = draw(st.lists(st.sampled_from(_HEADERS), min_size=1, max_size=6))
        headers = ["会社名", *extra]
    else:  # a sales ledger
        extra = draw(st.lists(st.sampled_from(_LEDGER_HEADERS), min_size=0, max_size=5))
        headers = ["得意先名", "金額", *extra]
    n = draw(st.integers(min_value=1, max_value=8))
    # Sometimes the drawn rows sit below 32 plain ones, out of the rows the header is searched in.
    rows = [[f"株式会社F{i}"] + [""] * (len(headers) - 1) for i in range(32 * draw(st.integers(0, 1)))]
    for r in range(n):
        row = []
        for c in range(len(headers)):
            empty = draw(st.booleans()) and c > 0
            row.append("" if empty else f"v{r}c{c}{draw(_WORD)}")
        if draw(st.integers(0, 6)) == 0:
            row = ["合計", *row[1:]]
        if draw(st.integers(0, 4)) == 0:  # same company as the row above
            row[0] = rows[-1][0] if rows else row[0]
        if draw(st.integers(0, 4)) == 0:  # more fields than the header (a comma without quotes)
            row += [f"v{r}x{k}{draw(_WORD)}" for k in range(draw(st.integers(1, 2)))]
        rows.append(row)
    return [headers, *rows]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=_tables())
def test_counts_add_up_and_no_cell_disappears(table: list[list[str]]) -> None:
    import csv
    import io
    import tempfile

    import python_calamine

    from xlcrm.intake.importer import import_sources

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "list.csv"
        buf = io.StringIO()
        csv.writer(buf).writerows(table)
        src.write_text(buf.getvalue(), encoding="utf-8")
        result = import_sources([src], DEFAULT_SCHEMA, out_dir=Path(tmp) / "out", owner="o")
        (report,) = result.sources
        c = report.counts
        assert c is not None
        data_rows = [r for r in table[1:] if any(r)]
        assert c.rows_read == len(data_rows) == c.rows_written + c.rows_skipped
        skipped_rows = {a.where.rsplit(" ", 1)[1] for a in c.skipped}
        cells: list[str] = []
        for book in (Path(tmp) / "out").glob("*.xlsx"):
            wb = python_calamine.CalamineWorkbook.from_path(str(book))
            for name in wb.sheet_names:
                for row in wb.get_sheet_by_name(name).to_python():
                    cells.extend(str(v) for v in row if v not in ("", None))
        everything = "\n".join(cells)
        for i, row in enumerate(table[1:], start=2):
            if str(i) in skipped_rows:
                assert row[0] == "合計"
                continue
            for value in row:
                if value:
                    assert value in everything, (value, row)


# --- child sources: ledgers and visit logs find their customers -----------------------------------

LEDGER = [["伝票日付", "伝票番号", "得意先名", "商品名", "数量", "単価", "金額", "担当者", "税区分"],
          ["2024/04/01", "1001", "(株)山田精機", "ボルトM6", "100", "30", "3000", "高橋", "課税"],
          ["2024/04/02", "1002", "山田精機", "ナットM6", "200", "10", "2000", "高橋", "課税"],
          ["2024/04/03", "1003", "株式会社 新規工業", "ワッシャー", "50", "5", "250", "鈴木", "課税"],
          ["", "", "合計", "", "", "", "5250", "", ""]]


def visit_log(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "訪問記録"
    ws.append(["訪問日", "訪問先", "面談者", "内容", "対応者"])
    ws.append([dt.date(2024, 5, 1), "佐藤工務店", "佐藤 次郎", "新製品の紹介", "高橋"])
    ws.append([dt.date(2024, 5, 2), "山田精機株式会社", "田中 一郎", "見積もり依頼\n来週回答", "高橋"])
    ws.append(["令和6年5月7日", "山田精機(株)", None, "見積書を持参", "高橋"])  # 和暦 text: validate reads it
    ws.append([45420, "山田精機(株)", None, "受注の御礼", "高橋"])  # a date serial typed as a number
    wb.save(path)
    return path


def test_ledger_and_visit_log_land_beside_their_customers(tmp_path: Path) -> None:
    cards = write_csv(tmp_path / "名刺.csv", CARDS, "cp932")
    ledger = write_csv(tmp_path / "売上台帳.csv", LEDGER, "cp932")
    visits = visit_log(tmp_path / "訪問記録.xlsx")
    out = tmp_path / "team"
    res = run("import", cards, ledger, visits, "--out", out, "--owner", "高橋", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    by_file = {Path(s["file"]).name: s for s in report["sources"]}
    assert by_file["売上台帳.csv"]["shape"] == "deals" and by_file["訪問記録.xlsx"]["shape"] == "activities"
    assert (by_file["売上台帳.csv"]["rows_read"], by_file["売上台帳.csv"]["rows_skipped"]) == (4, 1)
    assert {(m["typed"], m["customer"]) for m in report["matched_by_company_key"]} == {
        ("(株)山田精機", "山田精機(株)"), ("山田精機", "山田精機(株)"), ("佐藤工務店", "有限会社佐藤工務店"),
        ("山田精機株式会社", "山田精機(株)")}
    assert [c["what"] for c in report["created_customers"]] == [
        "customer '株式会社 新規工業' was not in any list: created from 売上台帳.csv"]

    deals = sheet(out / "高橋.xlsx", "deals")
    assert deals == [
        {"customer": "山田精機(株)", "title": "1001 / 税区分: 課税", "product": "ボルトM6", "quantity": "100",
         "unit_price": "30", "amount": "3000", "phase": "受注", "closed_on": "2024/04/01", "owner": "高橋"},
        {"customer": "山田精機(株)", "title": "1002 / 税区分: 課税", "product": "ナットM6", "quantity": "200",
         "unit_price": "10", "amount": "2000", "phase": "受注", "closed_on": "2024/04/02", "owner": "高橋"}]
    # The customer the ledger names but no list holds is created in its row owner's workbook.
    assert sheet(out / "鈴木.xlsx", "customers") == [{"kind": "法人", "name": "株式会社 新規工業"}]
    assert sheet(out / "鈴木.xlsx", "deals")[0]["customer"] == "株式会社 新規工業"
    acts = sheet(out / "高橋.xlsx", "activities")
    assert [(a["date"], a["customer"], a["contact"], a["type"], a["content"]) for a in acts[:2]] == [
        (dt.date(2024, 5, 1), "有限会社佐藤工務店", "佐藤 次郎", "訪問", "新製品の紹介"),
        (dt.date(2024, 5, 2), "山田精機(株)", "田中 一郎", "訪問", "見積もり依頼\n来週回答")]
    assert [(a["date"], a["content"]) for a in acts[2:]] == [("令和6年5月7日", "見積書を持参"), (dt.date(2024, 5, 8), "受注の御礼")]

    assert run("validate", out, "--today", "2025-01-01").exit_code == 0
    # The card spelled the company 山田精機(株): listed as a spelling of the customer it joined.
    both = write_csv(tmp_path / "顧客.csv", [["会社名", "担当者名"], ["山田精機株式会社", "山田 太郎"],
                                           ["山田精機(株)", "田中 一郎"]], "utf-8")
    res = run("import", both, "--dry-run", "--json", "--owner", "o")
    assert json.loads(res.output)["matched_by_company_key"] == [
        {"typed": "山田精機(株)", "customer": "山田精機株式会社", "rows": 1}]
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert run("merge", out, "--master", master, "--today", "2025-01-01").exit_code == 0

    # Next month's ledger, mapped once: rows find the master's customers and carry their IDs.
    may = write_csv(tmp_path / "売上台帳-05.csv", [LEDGER[0], ["2024/05/07", "1101", "山田精機株式会社", "ボルトM8",
                                                              "10", "40", "400", "高橋", "課税"]], "cp932")
    nxt = tmp_path / "team-05"
    res = run("import", may, "--out", nxt, "--master", master, "--map", out / "import-map.toml", "--json")
    assert res.exit_code == 0, res.output
    # Found by its header row although the file name differs from last month's.
    assert {m["why"] for m in json.loads(res.output)["sources"][0]["mapping"]} == {"import-map.toml"}
    (deal,) = sheet(nxt / "高橋.xlsx", "deals")
    assert deal["customer"].startswith("C-") and deal["product"] == "ボルトM8"
    assert sheet(nxt / "高橋.xlsx", "customers") == []
    assert run("merge", nxt, "--master", master, "--today", "2025-01-01").exit_code == 0


def test_an_ambiguous_name_is_listed_with_its_candidates_and_kept(tmp_path: Path) -> None:
    customers = write_csv(tmp_path / "顧客.csv", [["会社名", "住所"], ["山田精機株式会社", "東京都港区1"],
                                                  ["有限会社山田精機", "大阪府大阪市1"]], "utf-8")
    ledger = write_csv(tmp_path / "売上.csv", [["日付", "得意先", "金額"], ["2024/4/1", "山田精機", "1000"]], "utf-8")
    out = tmp_path / "team"
    res = run("import", customers, ledger, "--out", out, "--owner", "o", "--json")
    assert res.exit_code == 1
    (need,) = json.loads(res.output)["needs_a_person"]
    assert "ambiguous" in need["what"] and "山田精機株式会社" in need["what"] and "有限会社山田精機" in need["what"]
    assert sheet(out / "o.xlsx", "deals")[0]["customer"] == "山田精機"


# --- where the table is, and bad input ----------------------------------------------------------------

def test_merged_header_cells_and_date_serials(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = "得意先一覧"
    ws.append(["得意先名", "住所", None, "電話"])
    ws.merge_cells("B2:C2")  # one 住所 header over two columns
    ws.append(["株式会社青葉", "宮城県仙台市青葉区1-1", "青葉ビル2F", "022-111-2222"])
    ws.append(["", "", "", ""])
    ws.append(["株式会社若葉", "福岡県福岡市中央区2-2", None, "092-333-4444"])
    ws["E2"] = "登録日"
    ws["E3"] = 45383  # an Excel date serial typed as a number
    path = tmp_path / "得意先.xlsx"
    wb.save(path)
    out = tmp_path / "team"
    res = run("import", path, "--out", out, "--owner", "o")
    assert res.exit_code == 0, res.output
    rows = sheet(out / "o.xlsx", "customers")
    assert [(r["name"], r["prefecture"], r["address"]) for r in rows] == [
        ("株式会社青葉", "宮城県", "仙台市青葉区1-1 青葉ビル2F"), ("株式会社若葉", "福岡県", "福岡市中央区2-2")]
    assert rows[0]["notes"] == "登録日: 45383"


def test_bad_sources_one_line_each_nothing_written_for_them(tmp_path: Path) -> None:
    from xlcrm.xlsx.crypto import encrypt_bytes

    good = write_csv(tmp_path / "名刺.csv", CARDS, "utf-8")
    plain = messy_customer_list(tmp_path / "plain.xlsx")
    locked = tmp_path / "locked.xlsx"
    locked.write_bytes(encrypt_bytes(plain.read_bytes(), "pw"))
    plain.unlink()
    html = tmp_path / "export.xls"
    html.write_text("<html><body><table><tr><td>会社名</td></tr></table></body></html>", encoding="utf-8")
    quoting = tmp_path / "broken.csv"
    quoting.write_text('会社名,メモ\n株式会社A,"閉じない引用符\n株式会社B,x\n', encoding="utf-8")
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes("会社名,住所\n株式会社甲,東京都\n".encode("cp932") + "株式会社乙,大阪府\n".encode()
                      + "株式会社丙,京都府\n".encode("cp932") * 50)
    empty = tmp_path / "empty.xlsx"
    openpyxl.Workbook().save(empty)
    out = tmp_path / "team"
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "import", str(good), str(locked), str(html),
                           str(quoting), str(mixed), str(empty), "--out", str(out), "--owner", "o", "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    msgs = {Path(s["file"]).name: s.get("message", "") for s in report["sources"] if s["status"] != "ok"}
    assert "--password" in msgs["locked.xlsx"]
    assert "HTML" in msgs["export.xls"]
    assert "quoting" in msgs["broken.csv"]
    assert "mixed encodings" in msgs["mixed.csv"] and "line 3" in msgs["mixed.csv"]
    assert "empty" in msgs["empty.xlsx"]
    assert all("\n" not in m for m in msgs.values())
    assert [p.name for p in out.glob("*.xlsx")] == ["o.xlsx"]
    assert len(sheet(out / "o.xlsx", "contacts")) == 3

    # With the password the protected list comes in.
    res = run("import", locked, "--out", tmp_path / "t2", "--owner", "o", "--password", "pw")
    assert res.exit_code == 0, res.output


def test_validate_and_merge_point_a_foreign_list_to_import(tmp_path: Path) -> None:
    csv_file = write_csv(tmp_path / "名刺.csv", CARDS, "cp932")
    foreign = messy_customer_list(tmp_path / "顧客リスト.xlsx")
    xlsb = tmp_path / "list.xlsb"
    import zipfile

    with zipfile.ZipFile(xlsb, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.bin", b"\x83\x01\x00")
    for path, says in ((csv_file, "a CSV file, not a team workbook"),
                       (foreign, "not an xlcrm team workbook (its sheets: 顧客リスト"),
                       (xlsb, "an Excel binary workbook (.xlsb)")):
        proc = subprocess.run([sys.executable, "-m", "xlcrm", "validate", str(path), "--json"],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 2
        (f,) = json.loads(proc.stdout)["files"]
        assert says in f["message"] and "`xlcrm import FILE --out DIR`" in f["message"]
        assert "renamed" not in f["message"] and "\n" not in f["message"]


def test_several_sheets_english_headers_and_people_without_a_company(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Customers"
    ws.append(["Company", "Phone", "Email", "Address", "Contact name", "Mobile"])
    ws.append(["Acme Trading Co., Ltd.", "03-5555-0101", "info@acme.example.com", "東京都港区芝公園4-2",
               "Ken Sato", "090-1111-2222"])
    ws.append([None, None, "mika@example.net", "大阪府堺市1-1", "Mika Ito", "080-3333-4444"])
    visits = wb.create_sheet("問い合わせ")
    visits.append(["受付日", "顧客", "用件", "分類"])
    visits.append([dt.date(2024, 6, 3), "Acme Trading", "納期の確認", "納期"])
    wb.create_sheet("メモ")  # an empty sheet beside the lists: nothing to import, nothing refused
    lists = wb.create_sheet("選択肢")  # the hidden lists behind the dropdowns
    lists.append(["A", "B", "C"])
    lists.sheet_state = "hidden"
    path = tmp_path / "crm-export.xlsx"
    wb.save(path)
    out = tmp_path / "team"
    res = run("import", path, "--out", out, "--owner", "Tanaka", "--lang", "en", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert [(s["sheet"], s["status"], s.get("shape")) for s in report["sources"]] == [
        ("Customers", "ok", "customers"), ("問い合わせ", "ok", "activities"), ("メモ", "skipped", None),
        ("選択肢", "skipped", None)]
    book = out / "Tanaka.xlsx"
    assert sheet(book, "customers") == [
        {"kind": "Company", "name": "Acme Trading Co., Ltd.", "phone": "03-5555-0101", "prefecture": "Tokyo",
         "address": "港区芝公園4-2"},
        # No company on the card: the person is the customer, an individual.
        {"kind": "Individual", "name": "Mika Ito", "phone": "080-3333-4444", "email": "mika@example.net",
         "prefecture": "Osaka", "address": "堺市1-1"}]
    # Beside a person's name an e-mail address is the person's (as on a business card).
    assert sheet(book, "contacts") == [{"customer": "Acme Trading Co., Ltd.", "name": "Ken Sato",
                                        "mobile": "090-1111-2222", "email": "info@acme.example.com"}]
    assert sheet(book, "activities") == [{"date": dt.date(2024, 6, 3), "customer": "Acme Trading Co., Ltd.",
                                          "type": "Inquiry", "category": "納期", "content": "納期の確認"}]
    assert run("validate", out, "--today", "2025-01-01").exit_code == 0


# --- nothing lost on sources the engineer did not have in mind ---------------------------------------

def test_a_department_without_a_person_stays_with_the_customer(tmp_path: Path) -> None:
    """A 顧客リスト whose row names a 部署 but no 担当者名: no 担当者 row without a name (validate
    would refuse it), the 部署 kept in the customer's 備考 under its source header; the title row
    above the header is named in the report."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "顧客リスト"
    ws["B1"] = "得意先一覧　令和6年4月現在"
    ws.append([])
    ws.append([None, "会社名", "部署", "担当者名", "TEL", "〒", "住所1", "住所2", "最終訪問日", "メモ"])
    ws.append([None, "さくら歯科クリニック", "受付", None, "03-9999-0000", "150-0001", "東京都渋谷区神宮前1-1",
               "2F", "R6.3.15", "院長は土曜のみ"])
    ws.append([None, "㈱髙橋製作所", "購買課", "髙橋 一", "045-222-3333", None, None, None, None, None])
    ws.append([None, "合計", "2件"])
    src = tmp_path / "顧客リスト.xlsx"
    wb.save(src)
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--owner", "佐藤", "--json")
    assert res.exit_code == 0, res.output
    (s,) = json.loads(res.output)["sources"]
    assert (s["header_row"], s["rows_read"], s["rows_written"], s["rows_skipped"]) == (3, 3, 2, 1)
    # The title above the header is not imported, and the report says so.
    assert s["notes"] == ["row 1 is above the header row 3, not imported: 得意先一覧　令和6年4月現在"]
    sakura, _ = sheet(out / "佐藤.xlsx", "customers")
    assert sakura["notes"] == "院長は土曜のみ\n最終訪問日: R6.3.15\n部署: 受付"
    assert sheet(out / "佐藤.xlsx", "contacts") == [
        {"customer": "㈱髙橋製作所", "name": "髙橋 一", "department": "購買課"}]
    assert run("validate", out, "--today", "2025-01-01").exit_code == 0


def test_a_text_row_longer_than_its_header_keeps_its_extra_fields(tmp_path: Path) -> None:
    """An unquoted comma inside an address, deep in a CP932 card export: the extra fields land in 備考
    under their column letter and the row is listed for a person, not dropped."""
    rows = [CARDS[0]] + [[f"株式会社テスト{i:02d}", "営業部", "", "山田", f"{i}郎", f"y{i}@t{i}.jp", "100-0001",
                          "東京都千代田区1-1", "03-1234-5678"] for i in range(40)]
    rows.append(["丸一食品㈱", "総務部", "", "森", "①子", "mori@maruichi.jp", "", "東京都港区芝1-1", "2F 奥",
                 "03-5555-1212", "内線12"])
    src = write_csv(tmp_path / "名刺エクスポート.csv", rows, "cp932")
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--owner", "佐藤", "--json")
    assert res.exit_code == 1, res.output
    report = json.loads(res.output)
    (need,) = report["needs_a_person"]
    assert need["where"] == "名刺エクスポート.csv" and need["what"].startswith("row 42: more fields than the header")
    maru = sheet(out / "佐藤.xlsx", "customers")[-1]
    assert (maru["name"], maru["phone"], maru["notes"]) == ("丸一食品㈱", "2F 奥", "J: 03-5555-1212\nK: 内線12")
    assert sheet(out / "佐藤.xlsx", "contacts")[-1]["name"] == "森 ①子"


def test_date_serials_typed_into_a_text_log_become_dates(tmp_path: Path) -> None:
    """A visit log exported with dates as Excel serials (45390) and as 和暦 text: validate reads both."""
    customers = write_csv(tmp_path / "顧客.csv", [["会社名", "住所"], ["株式会社ミナミ", "東京都港区1-1"]], "utf-8-sig")
    log = write_csv(tmp_path / "訪問記録.tsv", [["日付", "顧客名", "内容"], ["45390", "ミナミ", "打合せ"],
                                               ["令和6年4月1日", "株式会社ミナミ", "電話で問い合わせ"]],
                    "utf-8-sig", "\t")
    out = tmp_path / "team"
    res = run("import", customers, log, "--out", out, "--owner", "佐藤")
    assert res.exit_code == 0, res.output
    acts = sheet(out / "佐藤.xlsx", "activities")
    assert [(a["date"], a["customer"], a["type"]) for a in acts] == [
        (dt.date(2024, 4, 8), "株式会社ミナミ", "訪問"), ("令和6年4月1日", "株式会社ミナミ", "訪問")]
    assert run("validate", out, "--today", "2025-01-01").exit_code == 0


def test_report_file_lists_everything_and_merge_passes_it_over(tmp_path: Path) -> None:
    """import-report.csv (Excel's CSV with BOM) holds every skipped row, left-out column and row that
    needs a person with where it came from; a column the map says to ignore is counted with its cells;
    merge and validate of the folder do not mention the report."""
    ledger = write_csv(tmp_path / "売上台帳.csv", [["売上日", "得意先", "商品", "金額", "摘要"],
                                                   ["2024/04/10", "ABC商事株式会社", "制御盤A", "1200000", "初回"],
                                                   ["2024/04/12", "-ABC商事", "部品B", "35000", ""],
                                                   ["2024/04/13", "=HYPERLINK(\"x\")", "部品C", "100", ""],
                                                   ["", "合計", "", "1235100", ""]], "cp932")
    first = tmp_path / "first"
    assert run("import", ledger, "--out", first, "--owner", "佐藤").exit_code == 1
    edited = tmp_path / "map.toml"
    edited.write_text((first / "import-map.toml").read_text(encoding="utf-8").replace(
        'header = "摘要", to = "notes"', 'header = "摘要", to = "ignore"'), encoding="utf-8")
    out = tmp_path / "team"
    res = run("import", ledger, "--out", out, "--owner", "佐藤", "--map", edited, "--json")
    assert res.exit_code == 1, res.output
    report = json.loads(res.output)
    assert report["report"] == str(out / "import-report.csv")
    assert report["sources"][0]["notes"] == [
        "column E (摘要): 1 values left out as import-map.toml says (to = \"ignore\"), cells E2:E2"]
    text = (out / "import-report.csv").read_bytes()
    assert text.startswith(b"\xef\xbb\xbf")
    import csv
    import io

    lines = list(csv.reader(io.StringIO(text.decode("utf-8-sig"))))
    assert lines[0] == ["kind", "where", "what"]
    kinds = {(k, w) for k, w, _ in lines[1:]}
    assert {("column", "売上台帳.csv"), ("skipped", "売上台帳.csv row 5"), ("needs a person", "売上台帳.csv row 4"),
            ("created", "売上台帳.csv row 4"), ("matched", "'-ABC商事")} <= kinds
    # A source value that starts like a formula is text in Excel: a leading apostrophe.
    assert not any(v.startswith(("=", "-")) for line in lines for v in line)
    assert "初回" not in str(sheet(out / "佐藤.xlsx", "deals"))
    for cmd in (("validate", out, "--today", "2025-01-01"), ("merge", out, "--master", tmp_path / "m.xlsx")):
        res = run(*cmd)
        assert "import-report" not in res.output and "not read" not in res.output, res.output


def test_xlsb_ledger_from_a_sales_system(tmp_path: Path) -> None:
    """A sales ledger as an .xlsb (what some sales and accounting systems export): a title row, dates
    as Excel serials, a totals row; each row finds the customer of a CP932 card export."""
    from helpers import write_xlsb

    cards = write_csv(tmp_path / "名刺.csv", CARDS, "cp932")
    ledger = write_xlsb(tmp_path / "売上明細.xlsb", {"売上明細": [
        ["売上明細（2024年4月）"], [],
        ["売上日", "得意先", "商品", "金額"],
        [45383, "山田精機株式会社", "制御盤A", 1200000],
        [45390, "佐藤工務店", "部品B", 35000],
        [None, "合計", None, 1235000]]})
    out = tmp_path / "team"
    res = run("import", cards, ledger, "--out", out, "--owner", "高橋", "--json")
    assert res.exit_code == 0, res.output
    src = next(s for s in json.loads(res.output)["sources"] if s["file"].endswith(".xlsb"))
    assert (src["sheet"], src["header_row"], src["shape"]) == ("売上明細", 3, "deals")
    assert (src["rows_read"], src["rows_written"], src["rows_skipped"]) == (3, 2, 1)
    deals = sheet(out / "高橋.xlsx", "deals")
    assert [(d["closed_on"], d["customer"], d["product"], d["amount"]) for d in deals] == [
        (dt.date(2024, 4, 1), "山田精機(株)", "制御盤A", 1200000), (dt.date(2024, 4, 8), "有限会社佐藤工務店", "部品B", 35000)]
    assert run("validate", out, "--today", "2025-01-01").exit_code == 0


def test_a_company_cell_merged_over_its_people_rows(tmp_path: Path) -> None:
    """会社名 and TEL merged down over two people's rows (Excel keeps the value in the top cell only):
    both people are 担当者 of the company, none becomes a customer of their own; the report says so."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "顧客"
    ws.append(["会社名", "TEL", "担当者名", "役職", "メモ"])
    ws.append(["株式会社結合", "03-1111-2222", "山田 一", "部長", "年2回訪問"])
    ws.append([None, None, "田中 二", "課長", None])
    ws.append(["有限会社単独", "06-1111-2222", "佐藤 三", None, None])
    ws.merge_cells("A2:A3")
    ws.merge_cells("B2:B3")
    ws.merge_cells("E2:E3")
    src = tmp_path / "顧客リスト.xlsx"
    wb.save(src)
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--owner", "o", "--json")
    assert res.exit_code == 0, res.output
    (s,) = json.loads(res.output)["sources"]
    assert s["notes"] == ["merged cells A2:A3: '株式会社結合' taken for each of its rows 2-3",
                          "merged cells B2:B3: '03-1111-2222' taken for each of its rows 2-3",
                          "merged cells E2:E3: '年2回訪問' taken for each of its rows 2-3"]
    assert [(c["name"], c.get("notes")) for c in sheet(out / "o.xlsx", "customers")] == [
        ("株式会社結合", "年2回訪問"), ("有限会社単独", None)]
    assert [(c["customer"], c["name"]) for c in sheet(out / "o.xlsx", "contacts")] == [
        ("株式会社結合", "山田 一"), ("株式会社結合", "田中 二"), ("有限会社単独", "佐藤 三")]


def test_a_card_app_export_with_bracketed_kana_headers(tmp_path: Path) -> None:
    """A card app's CSV (UTF-8 with BOM, every field quoted) whose headers put カナ in brackets:
    氏名（カナ） is the person's フリガナ and 会社名（カナ） the company's, not a second 氏名 or 会社名."""
    src = write_csv(tmp_path / "名刺データ.csv", [
        ['"会社名"', '"会社名（カナ）"', '"部署名"', '"氏名"', '"氏名（カナ）"', '"TEL直通"'],
        ['"株式会社サンプル"', '"サンプル"', '"営業部"', '"見本 太郎"', '"ミホン タロウ"', '"03-1111-0002"']],
        "utf-8-sig")
    out = tmp_path / "team"
    res = run("import", src, "--out", out, "--owner", "o", "--json")
    assert res.exit_code == 0, res.output
    (s,) = json.loads(res.output)["sources"]
    assert [m["to"] for m in s["mapping"]] == ["customers.name", "customers.kana", "contacts.department",
                                                "contacts.name", "contacts.kana", "contacts.phone"]
    assert sheet(out / "o.xlsx", "customers") == [{"kind": "法人", "name": "株式会社サンプル", "kana": "サンプル"}]
    assert sheet(out / "o.xlsx", "contacts") == [{"customer": "株式会社サンプル", "name": "見本 太郎",
                                                  "kana": "ミホン タロウ", "department": "営業部",
                                                  "phone": "03-1111-0002"}]


def test_customers_a_ledger_creates_are_corporate_by_every_legal_form(tmp_path: Path) -> None:
    """Customers a ledger names but no list holds: every legal form company_key knows makes them 法人
    (医療法人社団, 一般社団法人, (医), Inc.); a name without one is asked about."""
    ledger = write_csv(tmp_path / "売上.csv", [["売上日", "得意先", "金額"],
                                               ["2024/4/1", "医療法人社団さくら会", "1000"],
                                               ["2024/4/2", "一般社団法人日本ねじ協会", "2000"],
                                               ["2024/4/3", "(医)健康会", "3000"],
                                               ["2024/4/4", "Acme Trading Inc.", "4000"],
                                               ["2024/4/5", "みどり薬局", "5000"]], "cp932")
    out = tmp_path / "team"
    res = run("import", ledger, "--out", out, "--owner", "o", "--json")
    assert res.exit_code == 1, res.output
    (need,) = json.loads(res.output)["needs_a_person"]
    assert need["where"] == "売上.csv row 6" and "みどり薬局" in need["what"]
    assert [(c["name"], c.get("kind")) for c in sheet(out / "o.xlsx", "customers")] == [
        ("医療法人社団さくら会", "法人"), ("一般社団法人日本ねじ協会", "法人"), ("(医)健康会", "法人"),
        ("Acme Trading Inc.", "法人"), ("みどり薬局", None)]


def test_a_folder_of_txt_semicolon_csv_and_xlsm(tmp_path: Path) -> None:
    """A folder as a new firm hands it over: a pipe-separated .txt inquiry log, a semicolon CSV in
    CP932 with a title row and a quoted ';' in a name, and an .xlsm customer book; each read with its
    own encoding and delimiter, the log's rows beside the customers they name."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "問い合わせ一覧.txt").write_text("受付日|お客様名|問い合わせ内容|対応\n2024/5/1|株式会社セミ;コロン|在庫の確認|"
                                          "在庫ありと回答\n2024/5/2|北山商店|納期|来週\n", encoding="utf-8")
    (lists / "得意先.csv").write_bytes('得意先一覧;;\r\n得意先名;電話;FAX\r\n"株式会社セミ;コロン";03-1111-2222;'
                                     "03-1111-2223\r\n".encode("cp932"))
    wb = openpyxl.Workbook()
    wb.active.title = "顧客台帳"
    wb.active.append(["屋号", "代表電話", "営業担当"])
    wb.active.append(["北山商店", "011-222-3333", "鈴木"])
    wb.save(lists / "顧客台帳.xlsm")
    out = tmp_path / "team"
    res = run("import", lists, "--out", out, "--owner", "佐藤", "--json")
    assert res.exit_code == 0, res.output
    by_file = {Path(s["file"]).name: s for s in json.loads(res.output)["sources"]}
    assert [(n, s.get("encoding"), s.get("delimiter"), s["header_row"], s["shape"], s["rows_read"])
            for n, s in sorted(by_file.items())] == [
        ("問い合わせ一覧.txt", "utf-8", "|", 1, "activities", 2), ("得意先.csv", "cp932", ";", 2, "customers", 1),
        ("顧客台帳.xlsm", None, None, 1, "customers", 1)]
    assert sheet(out / "佐藤.xlsx", "customers") == [
        {"kind": "法人", "name": "株式会社セミ;コロン", "phone": "03-1111-2222", "fax": "03-1111-2223"}]
    assert [(a["customer"], a["type"], a["content"]) for a in sheet(out / "佐藤.xlsx", "activities")] == [
        ("株式会社セミ;コロン", "問い合わせ", "在庫の確認")]
    assert [(a["customer"], a["response"]) for a in sheet(out / "鈴木.xlsx", "activities")] == [("北山商店", "来週")]
    assert sheet(out / "鈴木.xlsx", "customers")[0]["owner"] == "鈴木"
