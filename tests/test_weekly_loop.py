"""The weekly loop (merge -> distribute -> staff edit their handout -> merge) keeps every row a person
typed in front of them: in the master, in their handout, or both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
from merge_fixtures import TODAY, activity, book, customer, delete_rows, records
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.validate import validate_workbook

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
    assert [c.value for c in ws[2]][3] == aozora
    ws.cell(2, 1).value = "削除"
    wb.save(master)
    cli("resolve", "--master", master)
    assert aozora not in records(master)
    assert [a["content"] for a in records(master, "activities").values()] == ["見積提出"]
    distribute(master, team)
    assert [r["内容"] for r in sheet_rows(team / "佐藤.xlsx", "活動履歴")] == ["見積提出"]


def red_rows(path: Path, sheet: str) -> dict[int, dict[str, str]]:
    """Row -> {header: comment} of the cells filled red (the marks of an error workbook)."""
    from xlcrm.marks import ERROR, FILLS

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
