"""`xlcrm distribute`: one fresh workbook per salesperson, with a recorded base for the next merge."""

from __future__ import annotations

from pathlib import Path

import pytest
from merge_fixtures import TODAY, activity, book, connect, customer, dump, edit_cells, records
from typer.testing import CliRunner

from xlcrm.api import Master
from xlcrm.errors import XlcrmError
from xlcrm.intake.validate import validate_workbook
from xlcrm.master.distribute import file_name
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db
from xlcrm.xlsx.reader import read_workbook

pytestmark = pytest.mark.usefixtures("store")


@pytest.fixture
def master(tmp_path: Path) -> Path:
    a = book(tmp_path / "team" / "sato.xlsx", {
        "customers": [customer("株式会社青空商事", email="info@aozora.co.jp"), customer("緑山工業株式会社")],
        "activities": [activity("株式会社青空商事", "初回訪問"), activity("緑山工業株式会社", "見積提出")],
        "todos": [{"due": TODAY, "customer": "緑山工業株式会社", "content": "見積の回答を確認"}],
    }, owner="佐藤")
    b = book(tmp_path / "team" / "smith.xlsx", {
        "customers": [customer("Blue Sky Trading", email="hello@bluesky.example.org")],
        "deals": [{"customer": "Blue Sky Trading", "title": "Annual contract", "phase": "won",
                   "closed_on": TODAY, "amount": 1200000}],
    }, owner="Smith", lang="en")
    m = tmp_path / "m" / "master.xlsx"
    m.parent.mkdir()
    Master(m, schema=S).merge([a, b], today=TODAY)
    return m


def test_one_workbook_per_owner_with_their_customers_and_everything_attached(master: Path,
                                                                          tmp_path: Path) -> None:
    paths = Master(master, schema=S).distribute(tmp_path / "out")
    assert sorted(p.name for p in paths) == ["Smith.xlsx", "佐藤.xlsx"]
    sato = validate_workbook(tmp_path / "out" / "佐藤.xlsx", S, today=TODAY)
    assert sato.ok, [f.message for f in sato.errors]
    assert sato.workbook.meta.owner == "佐藤" and sato.workbook.meta.lang == "ja"
    assert sorted(sato.frames["customers"]["name"]) == ["株式会社青空商事", "緑山工業株式会社"]
    assert sorted(sato.frames["activities"]["content"]) == ["初回訪問", "見積提出"]
    assert list(sato.frames["todos"]["content"]) == ["見積の回答を確認"]
    assert sato.frames["deals"].empty
    # Children reference their customer by ID, and the IDs are the master's.
    ids = set(records(master))
    assert set(sato.frames["activities"]["customer"]) <= ids
    smith = read_workbook(tmp_path / "out" / "Smith.xlsx", S)
    assert smith.meta.lang == "en"  # the language Smith's own workbook used
    assert smith.sheets["deals"].sheet_name == "Deals"
    # The base is what was handed out, under the workbook's id.
    conn = connect(master)
    base = db.load_base(conn, S.entity("customers"), sato.workbook.meta.workbook_id)
    assert set(base) == {r for r, v in records(master).items() if v["owner"] == "佐藤"}


def test_distributed_workbooks_merge_back_unchanged(master: Path, tmp_path: Path) -> None:
    paths = Master(master, schema=S).distribute(tmp_path / "out")
    before = dump(master)
    report = Master(master, schema=S).merge(paths, today=TODAY)
    assert dump(master) == before
    assert report.history_rows == 0
    for f in report.files:
        assert f.total("unchanged") == f.total("rows_read") > 0


def test_new_rows_typed_into_a_distributed_workbook_get_ids(master: Path, tmp_path: Path) -> None:
    wb = Master(master, schema=S).distribute(tmp_path / "out", owners=["佐藤"])[0]
    import openpyxl

    book_ = openpyxl.load_workbook(wb)
    ws = book_["活動履歴"]
    head = {c.value: c.column for c in ws[1]}
    r = ws.max_row + 1
    cid = next(k for k, v in records(master).items() if v["name"] == "株式会社青空商事")
    for key, value in {"日付": TODAY, "顧客": cid, "種別": "訪問", "内容": "新しい訪問"}.items():
        ws.cell(r, head[key], value)
    book_.save(wb)
    report = Master(master, schema=S).merge([wb], today=TODAY)
    acts = {v["content"]: v for v in records(master, "activities").values()}
    assert acts["新しい訪問"]["customer"] == cid and acts["新しい訪問"]["activity_id"] == "A-000003"
    assert report.files[0].sheets["activities"].new == 1
    # Merging the same workbook again (the row still has no ID there) does not duplicate it.
    Master(master, schema=S).merge([wb], today=TODAY)
    assert len(records(master, "activities")) == 3


def test_refuses_while_master_workbook_has_unapplied_decisions(master: Path, tmp_path: Path) -> None:
    edit_cells(master, "顧客", {"顧客名": "緑山工業株式会社"}, {"備考": "管理者のメモ"})
    with pytest.raises(XlcrmError, match="resolve"):
        Master(master, schema=S).distribute(tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_owner_is_refused_and_file_names_are_safe(master: Path, tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match="known: Smith、佐藤"):
        Master(master, schema=S).distribute(tmp_path / "out", owners=["田中"])
    assert file_name('a/b:c*?"<>|') == "a_b_c_.xlsx"


def test_cli_distribute_and_merge(master: Path, tmp_path: Path) -> None:
    from xlcrm.cli import _register, app

    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["distribute", "--master", str(master), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "2 workbook(s)" in result.output
    result = runner.invoke(app, ["merge", str(tmp_path / "cli"), "--master", str(master), "--json"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    assert data["history_rows"] == 0 and len(data["files"]) == 2
    assert all(f["counts"]["unchanged"] == f["counts"]["rows_read"] for f in data["files"])
