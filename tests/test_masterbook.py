"""The master workbook (xlcrm.master.masterbook): rebuilt from the database as it was, its typed decisions
read back, and untouched (or merely copied) masters read as holding no edits."""

from __future__ import annotations

import shutil
from pathlib import Path

from merge_fixtures import activity, book, customer, delete_rows, edit_cells, sheet_rows
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.master import masterbook
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db

runner = CliRunner()
_register()


def _master(tmp_path: Path) -> tuple[Path, Path]:
    a = book(tmp_path / "team" / "sato.xlsx", {
        "customers": [customer("株式会社青空商事", phone="03-1111-2222"), customer("緑山工業株式会社")],
        "activities": [activity("株式会社青空商事", "初回訪問")]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert runner.invoke(app, ["merge", str(a), "--master", str(master), "--today", "2024-06-01"]).exit_code == 0
    assert runner.invoke(app, ["distribute", "--master", str(master), "--out", str(tmp_path / "out")]).exit_code == 0
    return master, next((tmp_path / "out").glob("*.xlsx"))


def _state(master: Path) -> masterbook.MasterState:
    conn = db.connect(db.db_path_for(master))
    try:
        return masterbook.read_master_state(master, conn, S)
    finally:
        conn.close()


def test_export_master_rebuilds_the_same_sheets(tmp_path: Path) -> None:
    master, _ = _master(tmp_path)
    before = {s: sheet_rows(master, s) for s in ("顧客", "活動履歴")}
    master.unlink()
    res = runner.invoke(app, ["export-master", "--master", str(master)])
    assert res.exit_code == 0, res.output
    assert {s: sheet_rows(master, s) for s in before} == before


def test_untouched_or_copied_master_holds_no_edits(tmp_path: Path) -> None:
    master, _ = _master(tmp_path)
    state = _state(master)
    assert not state.decisions and state.edits is None and state.warnings == []
    copy = tmp_path / "copy"
    shutil.copytree(master.parent, copy)  # new file times, same content (a NAS restore, a sync)
    state = _state(copy / "master.xlsx")
    assert not state.decisions and not state.warnings


def test_typed_decision_is_read_back(tmp_path: Path) -> None:
    master, handout = _master(tmp_path)
    delete_rows(handout, "顧客", {"顧客名": "緑山工業株式会社"})
    assert runner.invoke(app, ["merge", str(handout), "--master", str(master)]).exit_code == 0
    listed = sheet_rows(master, "削除候補")
    edit_cells(master, "削除候補", {"番号": listed[0]["番号"]}, {"判断": "残す"})
    state = _state(master)
    assert state.decisions is not None and list(state.decisions.deletions.values()) == ["keep"]
