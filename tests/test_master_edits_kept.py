"""Nothing the admin types into master.xlsx is dropped without a trace: a row with errors is kept in an
error workbook beside the master (marked like a staff file's), and the command says where."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest
from merge_fixtures import book, customer, records
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.excel.adapter import ERROR_FILL

pytestmark = pytest.mark.usefixtures("store")

runner = CliRunner()
_register()


def test_incomplete_activity_typed_into_the_master_goes_to_an_error_workbook(tmp_path: Path) -> None:
    sato = book(tmp_path / "team" / "sato.xlsx", {"customers": [customer("株式会社青空商事", phone="03-1111-2222")]},
                owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert runner.invoke(app, ["merge", str(sato), "--master", str(master), "--today", "2024-06-01"]).exit_code == 0
    cid = next(iter(records(master)))
    wb = openpyxl.load_workbook(master)
    ws = wb["活動履歴"]
    head = [c.value for c in ws[1]]
    r = ws.max_row + 1
    ws.cell(r, head.index("日付") + 1).value = dt.date(2024, 6, 2)
    ws.cell(r, head.index("顧客") + 1).value = cid
    ws.cell(r, head.index("種別") + 1).value = "電話"
    # 内容 and 対応者 left blank: the row cannot be taken
    wb.save(master)
    res = runner.invoke(app, ["resolve", "--master", str(master)])
    assert res.exit_code in (0, 1), res.output
    out = res.stdout + res.stderr
    kept = list((master.parent / "errors").glob("*/master.errors.xlsx"))
    assert len(kept) == 1, out
    assert "master.errors.xlsx" in out
    ws = openpyxl.load_workbook(kept[0])["活動履歴"]
    marked = [c for row in ws.iter_rows(min_row=2) for c in row if c.fill.fgColor.rgb.endswith(ERROR_FILL)]
    assert marked and {c.row for c in marked} == {r}
    assert records(master, "activities") == {}
