"""Entry checks that help while typing, through the ribbon's actions (openpyxl adapter) on a team merged
and handed out with the CLI: an activity added on a colleague's customer validates and merges, a new
customer that is already in the master is named, and the previous check's marks always go away.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from merge_fixtures import book, customer, records
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.excel.adapter import ERROR_FILL, WARNING_FILL
from xlcrm.excel.openpyxl_adapter import OpenpyxlBook
from xlcrm.excel.ribbon import dispatch

TODAY = dt.date(2024, 6, 3)
runner = CliRunner()
_register()


def click(path: Path, action: str, *, at: tuple[str, int, int] | None = None, **kw: Any) -> str | None:
    b = OpenpyxlBook(path)
    if at is not None:
        b.select(*at)
    return dispatch(action, b, today=TODAY, **kw)


def rows_of(path: Path, sheet: str) -> list[list[Any]]:
    return [[c.value for c in r] for r in openpyxl.load_workbook(path)[sheet].iter_rows()]


@pytest.fixture
def team(tmp_path: Path) -> tuple[Path, Path]:
    """(master, 佐藤's handout): 佐藤 and 鈴木 merged, then handed out."""
    sato = book(tmp_path / "team" / "sato.xlsx", {"customers": [
        customer("株式会社青空商事", phone="03-1111-2222", dm_consent="yes")]}, owner="佐藤")
    suzuki = book(tmp_path / "team" / "suzuki.xlsx", {"customers": [
        customer("緑山工業株式会社", phone="045-333-4444", email="info@midori.example.jp", dm_consent="yes")]},
        owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    res = runner.invoke(app, ["merge", str(sato), str(suzuki), "--master", str(master), "--today", "2024-06-01"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["distribute", "--master", str(master), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    handout = next(p for p in (tmp_path / "out").glob("*.xlsx") if "佐藤" in p.name)
    return master, handout


def test_activity_on_a_colleagues_customer_validates_and_merges(team: tuple[Path, Path]) -> None:
    master, handout = team
    assert click(handout, "search", query="緑山工業", master=master) is None
    rows = rows_of(handout, "検索結果")
    h = next(i for i, r in enumerate(rows) if r and r[0] == "顧客ID")
    hit = rows[h + 1]
    assert hit[1] == "緑山工業株式会社" and hit[5] == "鈴木"  # a colleague's customer
    click(handout, "new_activity", at=("検索結果", h + 2, 2), master=master)
    wb = openpyxl.load_workbook(handout)
    ws = wb["活動履歴"]
    head = [c.value for c in ws[1]]
    new = ws.max_row
    assert ws.cell(new, head.index("顧客") + 1).value == hit[0]
    ws.cell(new, head.index("種別") + 1).value = "訪問"
    ws.cell(new, head.index("内容") + 1).value = "鈴木さん不在時の代理訪問"
    wb.save(handout)
    msg = click(handout, "validate", master=master)
    assert msg == "入力チェック: 問題は見つかりませんでした。", msg
    res = runner.invoke(app, ["merge", str(handout), "--master", str(master), "--today", "2024-06-04"])
    assert res.exit_code == 0, res.output
    acts = records(master, "activities")
    assert [a["customer"] for a in acts.values() if a["content"] == "鈴木さん不在時の代理訪問"] == [hit[0]]


def test_new_customer_with_a_master_customers_phone_is_named(team: tuple[Path, Path]) -> None:
    master, handout = team
    wb = openpyxl.load_workbook(handout)
    ws = wb["顧客"]
    head = [c.value for c in ws[1]]
    r = ws.max_row + 1
    for label, value in (("区分", "法人"), ("顧客名", "ミドリヤマ工業"), ("電話番号", "045-333-4444"),
                         ("担当営業", "佐藤"), ("DM可否", "可")):
        ws.cell(r, head.index(label) + 1).value = value
    wb.save(handout)
    msg = click(handout, "validate", master=master)
    assert msg is not None and "警告 1 件" in msg, msg
    cell = openpyxl.load_workbook(handout)["顧客"].cell(r, head.index("電話番号") + 1)
    assert cell.fill.fgColor.rgb.endswith(WARNING_FILL)
    text = cell.comment.text
    mid = records(master)
    cid = next(k for k, v in mid.items() if v["name"] == "緑山工業株式会社")
    assert cid in text and "緑山工業株式会社" in text and "鈴木" in text


def test_marks_go_away_after_rows_above_were_deleted(tmp_path: Path) -> None:
    path = book(tmp_path / "a.xlsx", {"customers": [
        customer("甲社株式会社", owner="佐藤"), customer("乙社株式会社", owner="佐藤"),
        customer("丙社株式会社", owner="佐藤", email="not-an-email")]})
    master = tmp_path / "no-master.xlsx"
    click(path, "validate", master=master)
    wb = openpyxl.load_workbook(path)
    ws = wb["顧客"]
    head = [c.value for c in ws[1]]
    col = head.index("メールアドレス") + 1
    assert ws.cell(4, col).fill.fgColor.rgb.endswith(ERROR_FILL)
    ws.delete_rows(2)  # a row above the marked one goes: the mark moves up to row 3
    assert ws.cell(3, col).comment is not None
    ws.cell(3, col).value = "info@hei.example.jp"  # and the person fixes it
    wb.save(path)
    msg = click(path, "validate", master=master)
    assert msg == "入力チェック: 問題は見つかりませんでした。", msg
    ws = openpyxl.load_workbook(path)["顧客"]
    marked = [(c.coordinate, c.comment.text) for row in ws.iter_rows() for c in row if c.comment is not None]
    assert marked == []
    assert ws.cell(3, col).fill.fgColor.rgb == "00000000"
