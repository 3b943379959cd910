"""The weekly loop (merge -> distribute -> staff edit their handout -> merge) keeps every row a person
typed in front of them: in the master, in their handout, or both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from merge_fixtures import TODAY, activity, book, customer, delete_rows, records
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.intake.validate import validate_workbook
from xlcrm.schema import DEFAULT_SCHEMA as S

pytestmark = pytest.mark.usefixtures("store")

_register()


def cli(*args: str | Path) -> dict[str, Any] | str:
    """Run ``xlcrm`` as a user does; the parsed JSON of ``--json`` commands, else the output."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def merge(master: Path, *inputs: Path) -> dict[str, Any]:
    master.parent.mkdir(parents=True, exist_ok=True)
    report = cli("merge", *inputs, "--master", master, "--today", TODAY.isoformat(), "--json")
    assert isinstance(report, dict)
    return report


def distribute(master: Path, out: Path) -> None:
    cli("distribute", "--master", master, "--out", out)


def sheet_rows(path: Path, sheet: str) -> list[dict[str, Any]]:
    """The data rows of one sheet as a person sees them (header label -> value), blank rows skipped."""
    ws = openpyxl.load_workbook(path)[sheet]
    head = [c.value for c in ws[1]]
    out = []
    for row in ws.iter_rows(min_row=2, values_only=True):
        if any(v is not None for v in row):
            out.append({h: v for h, v in zip(head, row, strict=False) if h is not None})
    return out


def append_row(path: Path, sheet: str, values: dict[str, Any]) -> None:
    """Type a new row below the last one, as a person would in Excel."""
    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    head = {c.value: c.column for c in ws[1]}
    r = 2
    while any(ws.cell(r, c).value is not None for c in head.values()):
        r += 1
    for k, v in values.items():
        ws.cell(r, head[k]).value = v
    wb.save(path)


def test_a_handout_holds_the_owners_activities_on_a_colleagues_customer(tmp_path: Path) -> None:
    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {"customers": [customer("株式会社青空商事")]}, owner="佐藤")
    book(team / "田中.xlsx", {"customers": [customer("緑山工業株式会社")]}, owner="田中")
    master = tmp_path / "m" / "master.xlsx"
    merge(master, team)
    distribute(master, team)
    green = next(k for k, v in records(master).items() if v["name"] == "緑山工業株式会社")
    # 佐藤 visited 田中's customer and logs it by its 顧客ID (not on 佐藤's 顧客 sheet).
    append_row(team / "佐藤.xlsx", "活動履歴", {"日付": TODAY, "顧客": green, "種別": "訪問", "内容": "同行訪問"})
    assert validate_workbook(team / "佐藤.xlsx", S, today=TODAY).ok
    report = merge(master, team)
    assert sum(f["counts"]["rejected"] for f in report["files"]) == 0
    [act] = records(master, "activities").values()
    assert act["customer"] == green and act["handled_by"] == "佐藤"
    distribute(master, team)
    # Both see it: 佐藤 wrote it, 田中 owns the customer.
    for name in ("佐藤.xlsx", "田中.xlsx"):
        assert [r["内容"] for r in sheet_rows(team / name, "活動履歴")] == ["同行訪問"], name
    report = merge(master, team)
    assert report["history_rows"] == 0
    assert all(f["counts"]["unchanged"] == f["counts"]["rows_read"] for f in report["files"])


def test_deleting_a_customer_row_takes_its_activities_into_the_deletion_question(tmp_path: Path) -> None:
    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {"customers": [customer("株式会社青空商事"), customer("緑山工業株式会社")],
                              "activities": [activity("株式会社青空商事", "初回訪問"),
                                             activity("緑山工業株式会社", "見積提出")]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    merge(master, team)
    distribute(master, team)
    delete_rows(team / "佐藤.xlsx", "顧客", {"顧客名": "株式会社青空商事"})
    report = merge(master, team)
    assert sum(f["counts"]["rejected"] for f in report["files"]) == 0  # not 「顧客 シートにありません」
    assert report["deletions_new"] == 1
    aozora = next(k for k, v in records(master).items() if v["name"] == "株式会社青空商事")
    # Decided together: 削除 on the customer deletes its activities too.
    wb = openpyxl.load_workbook(master)
    ws = wb["削除候補"]
    assert [c.value for c in ws[2]][3:5] == [aozora, "株式会社青空商事（活動履歴 1件 も一緒に削除）"]
    ws.cell(2, 1).value = "削除"
    wb.save(master)
    cli("resolve", "--master", master)
    assert aozora not in records(master)
    assert [a["content"] for a in records(master, "activities").values()] == ["見積提出"]
    distribute(master, team)
    assert [r["内容"] for r in sheet_rows(team / "佐藤.xlsx", "活動履歴")] == ["見積提出"]


def red_rows(path: Path, sheet: str) -> dict[int, dict[str, str]]:
    """Row -> {header: comment} of the cells filled red (the marks of an error workbook)."""
    from xlcrm.xlsx.marks import ERROR, FILLS

    ws = openpyxl.load_workbook(path)[sheet]
    head = {c.column: c.value for c in ws[1]}
    out: dict[int, dict[str, str]] = {}
    for row in ws.iter_rows(min_row=2):
        for c in row:
            if c.fill is not None and c.fill.fgColor is not None and str(c.fill.fgColor.rgb).endswith(FILLS[ERROR]):
                out.setdefault(c.row, {})[head[c.column]] = c.comment.text if c.comment else ""
    return out


def test_rejected_rows_come_back_in_the_handout_marked_and_leave_once_fixed(tmp_path: Path) -> None:
    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {
        "customers": [customer("株式会社青空商事"), customer("緑山工業株式会社", phone=312345678)],
        "activities": [activity("株式会社青空商事", "初回訪問"), activity("緑山工業株式会社", "見積提出")],
    }, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    report = merge(master, team)
    assert report["files"][0]["counts"]["rejected"] == 2
    distribute(master, team)
    handout = team / "佐藤.xlsx"
    customers = sheet_rows(handout, "顧客")
    assert [c["顧客名"] for c in customers] == ["株式会社青空商事", "緑山工業株式会社"]
    assert customers[1]["顧客ID"] is None and customers[1]["電話番号"] == 312345678  # exactly as typed
    [(row, marks)] = red_rows(handout, "顧客").items()
    assert row == 3 and "先頭の0" in marks["電話番号"]
    assert [r["内容"] for r in sheet_rows(handout, "活動履歴")] == ["初回訪問", "見積提出"]
    assert list(red_rows(handout, "活動履歴")) == [3]
    assert "エラー一覧" in openpyxl.load_workbook(handout).sheetnames
    # Sent back unfixed: still rejected, still one copy of each, and handed back again.
    for _ in range(2):
        report = merge(master, team)
        assert report["files"][0]["counts"]["rejected"] == 2 and report["history_rows"] == 0
        distribute(master, team)
        assert [c["顧客名"] for c in sheet_rows(handout, "顧客")] == ["株式会社青空商事", "緑山工業株式会社"]
    # Fixed in the handout (the red cell only): both rows merge, once.
    wb = openpyxl.load_workbook(handout)
    ws = wb["顧客"]
    col = next(c.column for c in ws[1] if c.value == "電話番号")
    ws.cell(3, col).value = "03-1234-5678"
    wb.save(handout)
    report = merge(master, team)
    assert report["files"][0]["counts"]["rejected"] == 0
    assert sorted(v["name"] for v in records(master).values()) == ["株式会社青空商事", "緑山工業株式会社"]
    assert sorted(v["content"] for v in records(master, "activities").values()) == ["初回訪問", "見積提出"]
    distribute(master, team)
    assert red_rows(handout, "顧客") == {} and red_rows(handout, "活動履歴") == {}
    assert all(c["顧客ID"] for c in sheet_rows(handout, "顧客"))
    assert merge(master, team)["history_rows"] == 0


# --- the loop of a four-person team ------------------------------------------------------------------

def book_rows(path: Path, lang: str) -> dict[str, list[dict[str, Any]]]:
    """Every sheet's rows keyed by column key, read as a person's Excel shows them."""
    wb = openpyxl.load_workbook(path, read_only=True)
    out = {}
    for entity in S:
        by_label = {c.label(lang): c.key for c in entity.columns}  # type: ignore[arg-type]
        rows = wb[entity.label(lang)].iter_rows(values_only=True)  # type: ignore[arg-type]
        head = [by_label.get(h) for h in next(rows)]
        out[entity.key] = [{k: v for k, v in zip(head, r, strict=False) if k} for r in rows
                           if any(v is not None for v in r)]
    wb.close()
    return out


def keyed_rows(path: Path, ekey: str, lang: str) -> list[dict[str, Any]]:
    return book_rows(path, lang)[ekey]


def fix(path: Path, ekey: str, lang: str, match: tuple[str, Any], changes: dict[str, Any]) -> None:
    """Type ``changes`` into the row whose ``match`` column holds the value, which must be red."""
    entity = S.entity(ekey)
    sheet = entity.label(lang)  # type: ignore[arg-type]
    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    col = {c.value: c.column for c in ws[1]}
    key, value = match
    [row] = [r for r in range(2, ws.max_row + 1)
             if ws.cell(r, col[entity.column(key).label(lang)]).value == value]  # type: ignore[arg-type]
    assert row in red_rows(path, sheet), (path.name, match)
    for k, v in changes.items():
        ws.cell(row, col[entity.column(k).label(lang)]).value = v  # type: ignore[arg-type]
    wb.save(path)


def test_four_person_loop_keeps_every_typed_row_in_the_master_or_the_handout(tmp_path: Path) -> None:
    from datetime import date

    team = tmp_path / "team"
    master = tmp_path / "m" / "master.xlsx"
    day = date(2024, 5, 1)
    langs = {"佐藤": "ja", "田中": "ja", "鈴木": "ja", "Smith": "en"}
    book(team / "佐藤.xlsx", {
        "customers": [customer("株式会社青空商事", phone="03-1111-1111"),
                      customer("緑山工業株式会社", phone=312345678)],  # leading 0 lost: rejected
        "activities": [activity("株式会社青空商事", "青空 初回訪問"),
                       activity("緑山工業株式会社", "緑山 見積提出")],  # its customer is rejected
        "todos": [{"due": day, "customer": "株式会社青空商事", "content": "青空 見積送付"}],
    }, owner="佐藤")
    book(team / "田中.xlsx", {
        "customers": [customer("白川物産株式会社", phone="03-2222-2222"),
                      customer("黒田電機株式会社", phone="03-3333-3333")],
        "activities": [activity("白川物産株式会社", "白川 定例訪問"),
                       activity("黒田電機株式会社", "黒田 電話", day="2024/13/40")],  # no such date
        # A TODO for 佐藤 on 田中's customer: it belongs in 佐藤's handout too.
        "todos": [{"due": day, "customer": "白川物産株式会社", "content": "白川 佐藤さん同行", "assignee": "佐藤"}],
    }, owner="田中")
    book(team / "鈴木.xlsx", {
        # Two different customers with one name, told apart by city and phone.
        "customers": [customer("佐藤運輸株式会社", phone="06-1234-5678", address="大阪市北区1-1"),
                      customer("佐藤運輸株式会社", phone="052-123-4567", address="名古屋市中区2-2")],
        "activities": [activity("佐藤運輸株式会社", "大阪 訪問"), activity("佐藤運輸株式会社", "名古屋 電話")],
    }, owner="鈴木")
    book(team / "Smith.xlsx", {
        "customers": [customer("Blue Sky Trading", phone="03-4444-4444")],
        "deals": [{"customer": "Blue Sky Trading", "title": "Annual contract", "phase": "won", "closed_on": day,
                   "quantity": 2, "unit_price": 300, "amount": 1000}],  # 2 x 300 is not 1000
    }, owner="Smith", lang="en")
    # What each person typed: (sheet, a column, its value), one row each, the value unique in the team.
    typed = {
        "佐藤": [("customers", "name", "株式会社青空商事"), ("customers", "name", "緑山工業株式会社"),
                ("activities", "content", "青空 初回訪問"), ("activities", "content", "緑山 見積提出"),
                ("todos", "content", "青空 見積送付")],
        "田中": [("customers", "name", "白川物産株式会社"), ("customers", "name", "黒田電機株式会社"),
                ("activities", "content", "白川 定例訪問"), ("activities", "content", "黒田 電話"),
                ("todos", "content", "白川 佐藤さん同行")],
        "鈴木": [("customers", "phone", "06-1234-5678"), ("customers", "phone", "052-123-4567"),
                ("activities", "content", "大阪 訪問"), ("activities", "content", "名古屋 電話")],
        "Smith": [("customers", "name", "Blue Sky Trading"), ("deals", "title", "Annual contract")],
    }

    def check(step: str) -> None:
        """Every typed row is in the master or in its person's workbook (or both), and never twice."""
        for person, rows in typed.items():
            mine = book_rows(team / f"{person}.xlsx", langs[person])
            for ekey, key, value in rows:
                in_master = [r for r in records(master, ekey).values() if r[key] == value]
                in_book = [r for r in mine[ekey] if r.get(key) == value]
                assert in_master or in_book, (step, person, ekey, value)
                assert len(in_master) <= 1 and len(in_book) <= 1, (step, person, ekey, value)

    def rejected(report: dict[str, Any]) -> dict[str, int]:
        return {Path(f["file"]).stem: f["counts"]["rejected"] for f in report["files"]
                if f["counts"]["rejected"]}

    report = merge(master, team)
    assert rejected(report) == {"佐藤": 2, "田中": 1, "鈴木": 2, "Smith": 1}
    check("merge 1")
    distribute(master, team)
    check("distribute 1")
    # 佐藤's handout: their TODO on 田中's customer, and the rows still to fix, red.
    assert "白川 佐藤さん同行" in [r["content"] for r in keyed_rows(team / "佐藤.xlsx", "todos", "ja")]
    assert len(red_rows(team / "佐藤.xlsx", "顧客")) == 1 and len(red_rows(team / "鈴木.xlsx", "活動履歴")) == 2

    # Week 2: everyone fixes their red rows in the handout, as they would in Excel.
    fix(team / "佐藤.xlsx", "customers", "ja", ("name", "緑山工業株式会社"), {"phone": "03-5555-5555"})
    fix(team / "田中.xlsx", "activities", "ja", ("content", "黒田 電話"), {"date": day})
    osaka, nagoya = ({r["phone"]: r["customer_id"] for r in keyed_rows(team / "鈴木.xlsx", "customers", "ja")}[p]
                     for p in ("06-1234-5678", "052-123-4567"))
    fix(team / "鈴木.xlsx", "activities", "ja", ("content", "大阪 訪問"), {"customer": osaka})
    fix(team / "鈴木.xlsx", "activities", "ja", ("content", "名古屋 電話"), {"customer": nagoya})
    fix(team / "Smith.xlsx", "deals", "en", ("title", "Annual contract"), {"amount": 600})
    # ... and type new work: Smith logs a visit on 田中's customer by its ID; 田中 mistypes an e-mail.
    shirakawa = next(k for k, v in records(master).items() if v["name"] == "白川物産株式会社")
    append_row(team / "Smith.xlsx", "Activities", {"Date": day, "Customer": shirakawa, "Type": "Visit",
                                                   "Details": "Shirakawa joint visit"})
    typed["Smith"].append(("activities", "content", "Shirakawa joint visit"))
    # ... and a call on the same customer of 田中's with an impossible date: rejected, it stays with Smith.
    append_row(team / "Smith.xlsx", "Activities", {"Date": "2024/2/30", "Customer": shirakawa, "Type": "Call",
                                                   "Details": "Shirakawa follow-up call"})
    typed["Smith"].append(("activities", "content", "Shirakawa follow-up call"))
    edit = team / "田中.xlsx"
    wb = openpyxl.load_workbook(edit)
    ws = wb["顧客"]
    col = {c.value: c.column for c in ws[1]}
    [row] = [r for r in range(2, ws.max_row + 1) if ws.cell(r, col["顧客名"]).value == "黒田電機株式会社"]
    ws.cell(row, col["メールアドレス"]).value = "kuroda@"
    wb.save(edit)
    typed["田中"].append(("customers", "email", "kuroda@"))  # in the handout only, until fixed
    check("fixed")

    report = merge(master, team)
    assert rejected(report) == {"田中": 1, "Smith": 1}
    check("merge 2")
    distribute(master, team)
    check("distribute 2")
    # The rejected call on a colleague's customer is back, red, in Smith's handout only.
    [call] = [r for r in keyed_rows(team / "Smith.xlsx", "activities", "en")
              if r["content"] == "Shirakawa follow-up call"]
    assert call["date"] == "2024/2/30" and len(red_rows(team / "Smith.xlsx", "Activities")) == 1
    assert "Shirakawa follow-up call" not in [r["content"] for r in keyed_rows(edit, "activities", "ja")]
    # The rejected edit comes back in place (with its ID), red; the visit is in Smith's and 田中's book.
    [kuroda] = [r for r in keyed_rows(edit, "customers", "ja") if r["name"] == "黒田電機株式会社"]
    assert kuroda["email"] == "kuroda@" and kuroda["customer_id"]
    assert len(red_rows(edit, "顧客")) == 1
    for person in ("Smith", "田中"):
        assert "Shirakawa joint visit" in [r["content"] for r in keyed_rows(team / f"{person}.xlsx", "activities",
                                                                              langs[person])]

    # Week 3: 田中 fixes the e-mail, Smith the date.
    fix(edit, "customers", "ja", ("name", "黒田電機株式会社"), {"email": "kuroda@example.co.jp"})
    fix(team / "Smith.xlsx", "activities", "en", ("content", "Shirakawa follow-up call"), {"date": day})
    typed["田中"][-1] = ("customers", "email", "kuroda@example.co.jp")
    report = merge(master, team)
    assert rejected(report) == {}
    check("merge 3")
    distribute(master, team)
    check("distribute 3")
    for person, lang in langs.items():
        for ekey in (x.key for x in S):
            assert red_rows(team / f"{person}.xlsx", S.entity(ekey).label(lang)) == {}, person  # type: ignore[arg-type]
    # Every typed row is in the master, exactly once, and merging the fresh handouts changes nothing.
    for person, rows in typed.items():
        for ekey, key, value in rows:
            assert len([r for r in records(master, ekey).values() if r[key] == value]) == 1, (person, value)
    assert merge(master, team)["history_rows"] == 0


def test_a_handout_with_red_rows_is_annotated_again_without_openpyxl(tmp_path: Path) -> None:
    """The error workbook of a handout sent back unfixed rewrites the handout's own marks in place (the
    package patch, not an openpyxl load and save: seconds per large workbook in every merge)."""
    from xlcrm.xlsx.annotate import annotate_fast

    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {"customers": [customer("株式会社青空商事", phone=312345678),
                                           customer("緑山工業株式会社", email="info@")]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    merge(master, team)
    distribute(master, team)
    handout = team / "佐藤.xlsx"
    assert len(red_rows(handout, "顧客")) == 2
    result = validate_workbook(handout, S, today=TODAY)
    result.findings = [f for f in result.findings if f.key == "phone"]  # as if the e-mail had been fixed
    out = annotate_fast(result, tmp_path / "again.xlsx")
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames.count("エラー一覧") == 1 and wb["エラー一覧"].max_row == 2
    comments = {c.coordinate: c.comment.text for row in wb["顧客"].iter_rows() for c in row if c.comment}
    assert len(comments) == 1 and "先頭の0" in next(iter(comments.values()))
    assert validate_workbook(out, S, today=TODAY).frames["customers"]["name"].tolist() == [
        "株式会社青空商事", "緑山工業株式会社"]


def test_someone_whose_every_row_was_rejected_still_gets_a_handout(tmp_path: Path) -> None:
    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {"customers": [customer("株式会社青空商事")]}, owner="佐藤")
    book(team / "鈴木.xlsx", {"customers": [customer("緑山工業株式会社", phone=312345678)]}, owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    merge(master, team)
    out = tmp_path / "handout"
    assert "2 workbook(s)" in str(cli("distribute", "--master", master, "--out", out))
    assert [r["顧客名"] for r in sheet_rows(out / "鈴木.xlsx", "顧客")] == ["緑山工業株式会社"]
    assert list(red_rows(out / "鈴木.xlsx", "顧客")) == [2]
    assert "1 workbook(s)" in str(cli("distribute", "--master", master, "--out", tmp_path / "one",
                                      "--owner", "鈴木"))


def test_rejected_rows_stay_with_the_handout_that_holds_them_and_come_back_once(tmp_path: Path) -> None:
    import shutil

    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {"customers": [customer("株式会社青空商事"),
                                           customer("緑山工業株式会社", phone=312345678)]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    merge(master, team)
    distribute(master, team)
    # The handout is not sent back this week; another workbook of 佐藤's is (new customers typed into
    # a template): the red row stays pending and comes back in the next handout.
    extra = tmp_path / "extra"
    book(extra / "佐藤_追加.xlsx", {"customers": [customer("白川物産株式会社")]}, owner="佐藤")
    merge(master, extra)
    later = tmp_path / "later"
    distribute(master, later)
    names = [r["顧客名"] for r in sheet_rows(later / "佐藤.xlsx", "顧客")]
    assert sorted(names) == ["株式会社青空商事", "白川物産株式会社", "緑山工業株式会社"]
    assert len(red_rows(later / "佐藤.xlsx", "顧客")) == 1
    # The handout and a copy of it both sent back unfixed: the red row still comes back once.
    shutil.copy(later / "佐藤.xlsx", later / "佐藤 - コピー.xlsx")
    report = merge(master, later)
    assert sum(f["counts"]["rejected"] for f in report["files"]) == 2
    (later / "佐藤 - コピー.xlsx").unlink()
    distribute(master, later)
    assert [r["顧客名"] for r in sheet_rows(later / "佐藤.xlsx", "顧客")].count("緑山工業株式会社") == 1


def test_held_once_keeps_the_version_merged_last_and_rows_typed_twice() -> None:
    from xlcrm.master.distribute import held_once

    def row(entity: str, rid: str | None, cells: dict[str, Any], source: str, run: int) -> dict[str, Any]:
        return {"entity": entity, "record_id": rid, "cells": cells, "source": source, "run_id": run}

    newer_first = row("activities", None, {"content": "x"}, "W2", 5)
    rows = [newer_first, row("customers", "C-000001", {"phone": 1}, "W1", 3),
            row("customers", "C-000001", {"phone": 2}, "W2", 5),
            row("customers", None, {"name": "a"}, "W1", 3), row("customers", None, {"name": "a"}, "W1", 3),
            row("customers", None, {"name": "a"}, "W2", 5)]
    kept = held_once(rows)
    assert [r["cells"] for r in kept] == [{"content": "x"}, {"phone": 2}, {"name": "a"}, {"name": "a"}]
