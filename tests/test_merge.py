"""Scenario tests for `xlcrm merge` / `resolve` / `export-master` with real workbooks."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from merge_fixtures import (
    TODAY,
    activity,
    book,
    connect,
    customer,
    delete_rows,
    dump,
    edit_cells,
    history,
    records,
    sheet_rows,
)
from typer.testing import CliRunner

from xlcrm.errors import LockedError, XlcrmError
from xlcrm.master.distribute import distribute
from xlcrm.master.merge import OUTCOMES
from xlcrm.master.resolve import combine_dm
from xlcrm.master.run import merge, resolve
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db
from xlcrm.xlsx.reader import read_workbook


@pytest.fixture
def master(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    return tmp_path / "m" / "master.xlsx"


def _by_name(master: Path) -> dict[str, dict]:
    return {r["name"]: r for r in records(master).values()}


def _counts(report, file_name: str, sheet: str = "customers") -> dict[str, int]:
    f = next(f for f in report.files if Path(f.file).name == file_name)
    c = f.sheets[sheet]
    return {k: getattr(c, k) for k in ("rows_read", *OUTCOMES)}


# --- first merge, identity, idempotence ---------------------------------------------------------------

def test_first_merge_assigns_ids_links_children_and_writes_the_master(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "team" / "a.xlsx", {
        "customers": [customer("株式会社青空商事", phone="03-1111-2222"), customer("緑山工業株式会社")],
        "activities": [activity("株式会社青空商事", "見積の相談"), activity("緑山工業株式会社", "初回訪問")],
    }, owner="佐藤")
    report = merge([a], master, S, today=TODAY)

    custs = _by_name(master)
    assert sorted(r["customer_id"] for r in custs.values()) == ["C-000001", "C-000002"]
    assert custs["株式会社青空商事"]["owner"] == "佐藤"  # blank 担当営業 = the workbook's owner
    acts = records(master, "activities")
    by_content = {r["content"]: r for r in acts.values()}
    assert by_content["見積の相談"]["customer"] == custs["株式会社青空商事"]["customer_id"]
    assert by_content["初回訪問"]["customer"] == custs["緑山工業株式会社"]["customer_id"]
    assert sorted(acts) == ["A-000001", "A-000002"]
    assert _counts(report, "a.xlsx") == {"rows_read": 2, "new": 2, "updated": 0, "unchanged": 0, "linked": 0,
                                         "rejected": 0}
    assert report.records_created == {"customers": 2, "activities": 2}
    # The workbook is the view of the database, with every review sheet, and reads back as a team file.
    wb = read_workbook(master, S)
    assert sorted(wb.sheets["customers"].frame["customer_id"]) == ["C-000001", "C-000002"]
    assert wb.meta.workbook_id.startswith("master:")
    import openpyxl

    names = openpyxl.load_workbook(master, read_only=True).sheetnames
    for sheet in ("重複候補", "競合", "削除候補", "変更履歴", "取込ログ"):
        assert sheet in names
    log = sheet_rows(master, "取込ログ")
    assert {(r["シート"], r["読込"], r["新規"]) for r in log} >= {("顧客", 2, 2), ("活動履歴", 2, 2)}
    hist = sheet_rows(master, "変更履歴")
    assert sum(1 for h in hist if h["種別"] == "新規") == 4


def test_merging_the_same_inputs_again_changes_nothing(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "team" / "a.xlsx", {
        "customers": [customer("株式会社青空商事", email="info@aozora.co.jp"), customer("山本 太郎", kind="individual")],
        "activities": [activity("株式会社青空商事", "電話で相談"), activity("山本 太郎", "来店")],
        "todos": [{"due": date(2024, 6, 10), "customer": "山本 太郎", "content": "カタログ送付"}],
    })
    b = book(tmp_path / "team" / "b.xlsx", {
        "customers": [customer("(株)青空商事", email="info@aozora.co.jp", phone="03-2222-3333")],
        "deals": [{"customer": "(株)青空商事", "title": "複合機リース", "phase": "proposal",
                   "expected_close": date(2024, 7, 1)}],
    }, owner="鈴木")
    merge([a, b], master, S, today=TODAY)
    before = dump(master)
    n_hist = len(history(master))
    again = merge([a, b], master, S, today=TODAY)
    assert dump(master) == before
    assert len(history(master)) == n_hist
    assert again.history_rows == 0 and again.records_created == {}
    for f in again.files:
        assert f.total("new") == f.total("updated") == f.total("linked") == 0
        assert f.total("unchanged") == f.total("rows_read")


def test_certain_duplicate_is_linked_and_its_rows_follow(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事", email="info@aozora.co.jp")]})
    merge([a], master, S, today=TODAY)
    b = book(tmp_path / "b.xlsx", {
        "customers": [customer("(株)青空商事", email="INFO@aozora.co.jp", phone="03-2222-3333",
                               industry="wholesale")],
        "activities": [activity("(株)青空商事", "新製品の案内")],
    }, owner="鈴木")
    report = merge([b], master, S, today=TODAY)
    custs = records(master)
    assert list(custs) == ["C-000001"]
    assert custs["C-000001"]["phone"] == "03-2222-3333"  # an empty field filled by the legacy row
    assert _counts(report, "b.xlsx")["linked"] == 1
    acts = records(master, "activities")
    assert [a["customer"] for a in acts.values()] == ["C-000001"]
    link = [h for h in history(master) if h["how"] == "link"]
    assert link and link[0]["record_id"] == "C-000001" and "メールアドレス" in link[0]["new"]
    assert link[0]["who"] == "鈴木" and link[0]["source_file"] == "b.xlsx"
    # Another spelling of the same name or e-mail is not worth a decision; the master keeps its own.
    assert custs["C-000001"]["name"] == "株式会社青空商事"
    assert custs["C-000001"]["email"] == "info@aozora.co.jp"
    # An empty field is filled (業種 was blank in the master).
    assert custs["C-000001"]["industry"] == "wholesale"
    assert sheet_rows(master, "競合") == []
    # A different value for a filled field is a conflict, not an overwrite.
    c = book(tmp_path / "c.xlsx", {"customers": [customer("青空商事株式会社", email="info@aozora.co.jp",
                                                          industry="retail")]}, owner="高橋")
    merge([c], master, S, today=TODAY)
    conflicts = sheet_rows(master, "競合")
    assert [(c["項目"], c["マスタの値"], c["候補1"], c["候補1 入力者"]) for c in conflicts] == [
        ("業種", "卸売業", "小売業", "高橋")]


def test_probable_duplicate_waits_for_a_person_then_merges_on_decision(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {
        "customers": [customer("株式会社山田製作所", kana="ヤマダセイサクショ", prefecture="東京都",
                               address="千代田区丸の内1-2-3", phone="03-1234-5678", dm_consent="yes",
                               email="info@yamada.co.jp")],
        "activities": [activity("株式会社山田製作所", "定期訪問")],
    })
    b = book(tmp_path / "b.xlsx", {
        "customers": [customer("(株)山田製作所", kana="ヤマダセイサクショ", prefecture="東京都",
                               address="千代田区丸の内1-2-3", phone="03-9999-0000", dm_consent="no",
                               fax="03-1234-5679")],
        "activities": [activity("(株)山田製作所", "クレーム対応", type="complaint", category="product",
                                response="交換品を発送")],
    }, owner="鈴木")
    report = merge([a, b], master, S, today=TODAY)
    assert len(records(master)) == 2  # never merged silently
    assert report.duplicates_new == 1
    pairs = sheet_rows(master, "重複候補")
    assert len(pairs) == 1 and {pairs[0]["ID (A)"], pairs[0]["ID (B)"]} == {"C-000001", "C-000002"}
    assert "住所" in pairs[0]["根拠"]

    edit_cells(master, "重複候補", {"候補番号": pairs[0]["候補番号"]}, {"判断": "統合"})
    rep = resolve(master, S)
    assert rep.merged == 1
    active = records(master)
    assert list(active) == ["C-000001"]  # the older ID survives
    survivor = active["C-000001"]
    assert survivor["phone"] == "03-1234-5678"
    assert survivor["fax"] == "03-1234-5679"  # empty field filled from the other record
    assert "03-9999-0000" in survivor["notes"]  # the other phone number is kept
    assert survivor["dm_consent"] == "no"  # 不可 wins
    gone = records(master, active_only=False)["C-000002"]
    assert gone["_state"] == "merged" and gone["_merged_into"] == "C-000001"
    assert {a["customer"] for a in records(master, "activities").values()} == {"C-000001"}
    assert sheet_rows(master, "重複候補") == []
    assert any(h["how"] == "decision" and h["record_id"] == "C-000002" for h in history(master))
    # The merged customer's old ID still works for a workbook that has it.
    c = book(tmp_path / "c.xlsx", {"customers": [customer("(株)山田製作所", customer_id="C-000002",
                                                          kana="ヤマダセイサクショ")],
                                   "activities": [activity("C-000002", "電話フォロー")]}, owner="鈴木")
    merge([c], master, S, today=TODAY)
    assert {a["customer"] for a in records(master, "activities").values()} == {"C-000001"}


def test_dm_consent_combination_is_strictest() -> None:
    assert combine_dm("yes", "no") == "no"
    assert combine_dm("unknown", "no") == "no"
    assert combine_dm("unknown", "yes") == "yes"
    assert combine_dm(None, "unknown") == "unknown"


# --- three-way merge and conflicts --------------------------------------------------------------------

def _seed(tmp_path: Path, master: Path) -> Path:
    """A master with two customers owned by 佐藤, and 佐藤's distributed workbook."""
    seed = book(tmp_path / "seed" / "seed.xlsx", {
        "customers": [customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-1111-2222"),
                      customer("緑山工業株式会社", email="sales@midori.co.jp")],
        "activities": [activity("株式会社青空商事", "初回訪問")],
    }, owner="佐藤")
    merge([seed], master, S, today=TODAY)
    out = distribute(master, tmp_path / "out", S)
    assert [p.name for p in out] == ["佐藤.xlsx"]
    return out[0]


def test_distributed_workbook_changes_apply_three_way(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    assert edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-1111-9999", "ステータス": "取引中"}) == 1
    report = merge([wb], master, S, today=TODAY)
    c = _by_name(master)["株式会社青空商事"]
    assert c["phone"] == "03-1111-9999" and c["status"] == "active"
    assert c["updated_at"] == TODAY.isoformat()
    assert _counts(report, "佐藤.xlsx") == {"rows_read": 2, "new": 0, "updated": 1, "unchanged": 1, "linked": 0,
                                          "rejected": 0}
    edits = [h for h in history(master) if h["how"] == "edit"]
    assert {(h["field"], h["old"], h["new"], h["who"]) for h in edits} == {
        ("phone", "03-1111-2222", "03-1111-9999", "佐藤"), ("status", "prospect", "active", "佐藤")}
    # Unchanged fields of a workbook do not overwrite a newer master value (three-way, not two-way).
    other = book(tmp_path / "legacy.xlsx", {"customers": [customer("緑山工業株式会社", email="sales@midori.co.jp",
                                                                   phone="045-000-1111")]}, owner="鈴木")
    merge([other], master, S, today=TODAY)
    assert _by_name(master)["緑山工業株式会社"]["phone"] == "045-000-1111"
    merge([wb], master, S, today=TODAY)  # 佐藤's workbook still has the phone blank: not a change by 佐藤
    assert _by_name(master)["緑山工業株式会社"]["phone"] == "045-000-1111"


def test_two_people_changing_one_field_is_a_conflict_until_decided(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-1111-9999"})
    legacy = book(tmp_path / "suzuki.xlsx", {"customers": [
        customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-5555-6666")]}, owner="鈴木")
    report = merge([wb, legacy], master, S, today=TODAY)
    assert _by_name(master)["株式会社青空商事"]["phone"] == "03-1111-2222"  # master keeps its value
    assert report.conflicts_new == 1
    rows = sheet_rows(master, "競合")
    assert len(rows) == 1
    row = rows[0]
    assert row["マスタの値"] == "03-1111-2222" and row["項目"] == "電話番号"
    offered = {(row["候補1"], row["候補1 入力者"]), (row["候補2"], row["候補2 入力者"])}
    assert offered == {("03-1111-9999", "佐藤"), ("03-5555-6666", "鈴木")}
    # Merging the same files again does not duplicate the conflict.
    merge([wb, legacy], master, S, today=TODAY)
    assert len(sheet_rows(master, "競合")) == 1
    pick = "候補1" if row["候補1"] == "03-5555-6666" else "候補2"
    edit_cells(master, "競合", {"競合番号": row["競合番号"]}, {"採用": pick})
    merge([wb, legacy], master, S, today=TODAY)  # decisions are applied at the start of a merge
    assert _by_name(master)["株式会社青空商事"]["phone"] == "03-5555-6666"
    assert sheet_rows(master, "競合") == []
    decided = [h for h in history(master) if h["how"] == "decision"]
    assert [(h["field"], h["old"], h["new"]) for h in decided] == [("phone", "03-1111-2222", "03-5555-6666")]


def test_conflict_value_typed_by_the_admin_is_checked_and_applied(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-1111-9999"})
    legacy = book(tmp_path / "suzuki.xlsx", {"customers": [
        customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-5555-6666")]}, owner="鈴木")
    merge([wb, legacy], master, S, today=TODAY)
    cid = sheet_rows(master, "競合")[0]["競合番号"]
    edit_cells(master, "競合", {"競合番号": cid}, {"採用する値（直接入力）": "not a phone"})
    rep = resolve(master, S)
    assert rep.conflicts_resolved == 0 and any("not a valid" in w for w in rep.warnings)
    edit_cells(master, "競合", {"競合番号": cid}, {"採用する値（直接入力）": "０３（７７７７）８８８８"})
    rep = resolve(master, S)
    assert rep.conflicts_resolved == 1
    assert _by_name(master)["株式会社青空商事"]["phone"] == "03-7777-8888"


def test_legacy_file_fills_empty_fields_and_conflicts_on_filled_ones(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事", email="info@aozora.co.jp",
                                                          industry="retail")]})
    merge([a], master, S, today=TODAY)
    legacy = book(tmp_path / "old" / "顧客一覧.xlsx", {"customers": [
        customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-2222-3333", industry="wholesale")]},
        owner="佐藤")
    report = merge([legacy], master, S, today=TODAY)
    c = records(master)["C-000001"]
    assert c["phone"] == "03-2222-3333"
    assert c["industry"] == "retail"
    conflicts = db.conflicts(connect(master))
    assert [(x["field"], x["master_value"], [v["value"] for v in x["values"]]) for x in conflicts] == [
        ("industry", "retail", ["wholesale"])]
    assert _counts(report, "顧客一覧.xlsx")["linked"] == 1  # matched by e-mail: linked, not new


def test_admin_edit_in_master_is_picked_up_three_way(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    assert edit_cells(master, "顧客", {"顧客名": "緑山工業株式会社"}, {"備考": "=HYPERLINK(\"x\")"}) == 1
    report = merge([wb], master, S, today=TODAY)
    c = _by_name(master)["緑山工業株式会社"]
    assert c["notes"] == '=HYPERLINK("x")'  # text, stored as typed
    assert any(h["how"] == "edit" and h["who"] == "管理者" and h["field"] == "notes" for h in history(master))
    assert report.files[0].file == str(master) and report.files[0].total("updated") == 1
    # Written back as text, never as a formula.
    import openpyxl

    ws = openpyxl.load_workbook(master)["顧客"]
    cells = [c for row in ws.iter_rows() for c in row if c.value == '=HYPERLINK("x")']
    assert cells and all(c.data_type == "s" for c in cells)
    # The admin and a staff member changing the same field differently: a conflict.
    edit_cells(master, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-3333-0001"})
    edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-3333-0002"})
    merge([wb], master, S, today=TODAY)
    assert _by_name(master)["株式会社青空商事"]["phone"] == "03-1111-2222"
    row = sheet_rows(master, "競合")[0]
    assert {row["候補1 入力者"], row["候補2 入力者"]} == {"管理者", "佐藤"}


# --- rejected and deleted rows ------------------------------------------------------------------------

@pytest.mark.parametrize("background", [False, True], ids=["inline", "worker-process"])
def test_invalid_rows_are_rejected_into_an_error_workbook_and_the_rest_merges(
        tmp_path: Path, master: Path, background: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if background:  # large files get their error workbook from a worker process; make this one "large"
        import xlcrm.master.workers

        monkeypatch.setattr(xlcrm.master.workers, "BACKGROUND_ANNOTATE_ROWS", 0)
        monkeypatch.setattr(xlcrm.master.workers, "PARALLEL_BYTES", 0)  # and validated there too
    a = book(tmp_path / "a.xlsx", {
        "customers": [customer("株式会社青空商事"), customer("緑山工業株式会社", phone="312345678")],
        "activities": [activity("株式会社青空商事", "初回訪問"), activity("緑山工業株式会社", "見積提出")],
    })
    other = book(tmp_path / "b.xlsx", {"customers": [customer("白浜物産株式会社")]}, owner="鈴木")
    report = merge([a, other], master, S, today=TODAY)
    assert sorted(_by_name(master)) == ["株式会社青空商事", "白浜物産株式会社"]
    assert _counts(report, "a.xlsx") == {"rows_read": 2, "new": 1, "updated": 0, "unchanged": 0, "linked": 0,
                                         "rejected": 1}
    # The activity of the rejected customer cannot be attached: rejected too, with its own message.
    assert _counts(report, "a.xlsx", "activities")["rejected"] == 1
    f = report.files[0]
    assert f.status == "errors" and f.error_workbook
    assert report.files[1].status == "ok" and report.files[1].error_workbook is None
    err = Path(f.error_workbook)
    assert err.exists() and err.parent.parent.name == "errors"
    findings = sheet_rows(err, "エラー一覧")
    cells = {(r["シート"], r["セル"]) for r in findings}
    phone_letter = chr(ord("A") + S.entity("customers").keys.index("phone"))
    assert ("顧客", f"{phone_letter}3") in cells  # the phone cell of row 3
    assert any(r["シート"] == "活動履歴" and "顧客の行にエラー" in r["メッセージ"] for r in findings)
    log = {r["シート"]: r for r in sheet_rows(master, "取込ログ") if r["ファイル"].endswith("a.xlsx")}
    assert log["顧客"]["却下"] == 1 and log["顧客"]["エラーブック"] == str(err)


def test_strict_rejects_the_whole_file(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事"),
                                                 customer("緑山工業株式会社", phone="312345678")]})
    ok = book(tmp_path / "ok.xlsx", {"customers": [customer("白浜物産株式会社")]}, owner="鈴木")
    report = merge([a, ok], master, S, strict=True, today=TODAY)
    assert list(_by_name(master)) == ["白浜物産株式会社"]
    assert _counts(report, "a.xlsx")["rejected"] == 2
    assert next(f for f in report.files if f.file.endswith("a.xlsx")).status == "rejected"


def test_unknown_id_is_rejected_not_invented(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事", customer_id="C-000042")]})
    report = merge([a], master, S, today=TODAY)
    assert records(master) == {}
    assert _counts(report, "a.xlsx")["rejected"] == 1
    assert "C-000042" in json.dumps(report.to_dict(), ensure_ascii=False) or report.files[0].error_workbook


def test_row_deleted_from_a_workbook_is_listed_not_deleted(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    assert delete_rows(wb, "顧客", {"顧客名": "緑山工業株式会社"}) == 1
    report = merge([wb], master, S, today=TODAY)
    assert report.deletions_new == 1
    assert "緑山工業株式会社" in _by_name(master)  # still there
    listed = sheet_rows(master, "削除候補")
    assert [(r["ID"], r["名称"], r["入力者"]) for r in listed] == [("C-000002", "緑山工業株式会社", "佐藤")]
    # Merging again does not list it twice; deciding 削除 marks it deleted (kept in the database).
    merge([wb], master, S, today=TODAY)
    assert len(sheet_rows(master, "削除候補")) == 1
    edit_cells(master, "削除候補", {"ID": "C-000002"}, {"判断": "削除"})
    rep = resolve(master, S)
    assert rep.deleted == 1
    assert "緑山工業株式会社" not in _by_name(master)
    assert records(master, active_only=False)["C-000002"]["_state"] == "deleted"
    assert sheet_rows(master, "削除候補") == []
    assert "C-000002" not in {r["顧客ID"] for r in sheet_rows(master, "顧客")}


def test_keep_decision_closes_the_deletion_question(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    delete_rows(wb, "活動履歴", {"内容": "初回訪問"})
    merge([wb], master, S, today=TODAY)
    listed = sheet_rows(master, "削除候補")
    assert [r["シート"] for r in listed] == ["活動履歴"]
    edit_cells(master, "削除候補", {"番号": listed[0]["番号"]}, {"判断": "残す"})
    rep = resolve(master, S)
    assert rep.kept == 1 and len(records(master, "activities")) == 1
    assert sheet_rows(master, "削除候補") == []


# --- safety -------------------------------------------------------------------------------------------

def test_refuses_while_the_master_is_open_in_excel(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")]})
    merge([a], master, S, today=TODAY)
    before = master.read_bytes()
    (master.parent / "~$master.xlsx").write_bytes(b"owner")
    with pytest.raises(LockedError, match="open in Excel"):
        merge([a], master, S, today=TODAY)
    assert master.read_bytes() == before
    # The CLI says it in one line with exit code 2.
    from xlcrm.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["merge", str(a), "--master", str(master)])
    assert result.exit_code != 0


def test_refuses_while_another_merge_holds_the_lock(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")]})
    lock = master.parent / ".master.xlsx.lock"
    import socket

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": "merge",
                                "started": "2024-06-01T10:00:00"}))
    with pytest.raises(LockedError, match="another xlcrm command"):
        merge([a], master, S, today=TODAY)
    assert not master.exists()
    # A lock left by a process that no longer exists is stale and taken over.
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    merge([a], master, S, today=TODAY)
    assert master.exists() and not lock.exists()


def test_dry_run_writes_nothing(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事"),
                                                 customer("緑山工業株式会社", phone="312345678")]})
    report = merge([a], master, S, dry_run=True, today=TODAY)
    assert report.records_created == {"customers": 1}
    assert sorted(p.name for p in master.parent.iterdir()) == []
    merge([a], master, S, today=TODAY)
    before = dump(master)
    b = book(tmp_path / "b.xlsx", {"customers": [customer("白浜物産株式会社")]})
    stat = master.stat().st_mtime_ns
    merge([b], master, S, dry_run=True, today=TODAY)
    assert dump(master) == before and master.stat().st_mtime_ns == stat


def test_backups_keep_the_last_ten(tmp_path: Path, master: Path) -> None:
    for i in range(12):  # each merge brings a new customer: a change, so each keeps its backup
        merge([book(tmp_path / f"{i}.xlsx", {"customers": [customer(f"株式会社青空商事{i}号")]})], master, S,
              today=TODAY)
    backups = sorted((master.parent / "backups").iterdir())
    assert len([p for p in backups if p.suffix == ".db"]) == 10
    assert len([p for p in backups if p.suffix == ".xlsx"]) == 10
    conn = sqlite3.connect([p for p in backups if p.suffix == ".db"][-1])
    assert conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 11


def test_backup_is_the_database_before_the_merge(tmp_path: Path, master: Path) -> None:
    # The copy is made by a thread while the merge already writes inside its transaction.
    merge([book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")]})], master, S, today=TODAY)
    merge([book(tmp_path / "b.xlsx", {"customers": [customer("有限会社川辺工務店", phone="045-111-2222",
                                                             email="info@kawabe.example.jp")]})],
          master, S, today=TODAY)
    newest = sorted((master.parent / "backups").glob("*.db"))[-1]
    old = sqlite3.connect(newest)
    try:
        assert old.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [r[0] for r in old.execute("SELECT name FROM customers")] == ["株式会社青空商事"]
    finally:
        old.close()
    assert sorted(r["name"] for r in records(master).values()) == ["有限会社川辺工務店", "株式会社青空商事"]
    assert not list((master.parent / "backups").glob(".*.part"))


def test_merge_refuses_when_no_backup_can_be_written(tmp_path: Path, master: Path) -> None:
    merge([book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")]})], master, S, today=TODAY)
    before = dump(master)
    shutil.rmtree(master.parent / "backups", ignore_errors=True)
    (master.parent / "backups").write_text("not a folder")  # the backups folder cannot be created
    b = book(tmp_path / "b.xlsx", {"customers": [customer("有限会社川辺工務店", phone="045-111-2222")]})
    with pytest.raises(XlcrmError, match="backups folder"):
        merge([b], master, S, today=TODAY)
    assert dump(master) == before


@contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files for real: chmod as a user; as root (CI), whom permission bits do
    not stop, the immutable attribute, which binds root too.  Skips when neither can be had."""
    if os.name != "posix":
        pytest.skip("needs a POSIX file system")
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root and the file system has no immutable attribute (chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_read_only_folder_refuses_and_leaves_the_master(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")]})
    merge([a], master, S, today=TODAY)
    before = (master.read_bytes(), dump(master))
    b = book(tmp_path / "b.xlsx", {"customers": [customer("白浜物産株式会社")]})
    with read_only_folder(master.parent), pytest.raises(XlcrmError):
        merge([b], master, S, today=TODAY)
    assert (master.read_bytes(), dump(master)) == before


def test_export_master_rebuilds_a_lost_workbook(tmp_path: Path, master: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")],
                                   "activities": [activity("株式会社青空商事", "初回訪問")]})
    merge([a], master, S, today=TODAY)
    master.unlink()
    from xlcrm.master.masterbook import export_master

    export_master(master, S)
    wb = read_workbook(master, S)
    assert list(wb.sheets["customers"].frame["customer_id"]) == ["C-000001"]
    assert list(wb.sheets["activities"].frame["customer"]) == ["C-000001"]
    again = merge([a], master, S, today=TODAY)
    assert again.history_rows == 0


def test_stale_master_workbook_is_not_read_for_edits(tmp_path: Path, master: Path) -> None:
    """A crash after the commit leaves an older workbook: its content must not undo newer changes."""
    wb = _seed(tmp_path, master)
    old = master.read_bytes()
    edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-1111-9999"})
    merge([wb], master, S, today=TODAY)
    master.write_bytes(old)  # as if the new workbook never replaced the old one
    report = merge([wb], master, S, today=TODAY)
    assert _by_name(master)["株式会社青空商事"]["phone"] == "03-1111-9999"
    assert any("older than master.db" in w for w in report.warnings)
    assert read_workbook(master, S).meta.workbook_id.endswith(":" + db.get_meta(connect(master),
                                                                                 "master_generation"))


def test_master_workbook_opens_in_libreoffice(tmp_path: Path, master: Path) -> None:
    """Protected entity sheets, review sheets with dropdowns: a workbook office suites accept."""
    from helpers import libreoffice_convert

    wb = _seed(tmp_path, master)
    edit_cells(wb, "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-1111-9999"})
    legacy = book(tmp_path / "suzuki.xlsx", {"customers": [
        customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-5555-6666")]}, owner="鈴木")
    merge([wb, legacy], master, S, today=TODAY)
    pdf = libreoffice_convert(master, tmp_path / "pdf")
    assert pdf.stat().st_size > 1000


def test_merging_while_workers_validate_gives_the_same_master(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Large inputs are validated by worker processes and merged as each one is ready (merge.Inputs):
    # the master, the history and the report must be those of validating everything first, inline.
    import xlcrm.master.merge

    team = tmp_path / "team"
    for n, owner in enumerate(("佐藤", "鈴木", "高橋")):
        book(team / f"{n}_{owner}.xlsx", {
            "customers": [customer(f"株式会社テスト商事{n}", email=f"info{n}@test{n}.example.jp"),
                          customer("株式会社青空商事", phone=f"03-1111-000{n}", email="info@aozora.example.jp")],
            "activities": [activity(f"株式会社テスト商事{n}", f"訪問 {n}"), activity("株式会社青空商事", f"電話 {n}")],
        }, owner=owner)
    # Unreadable, between readable ones; found only when validated (a workbook without the sheets).
    import openpyxl

    openpyxl.Workbook().save(team / "1_broken.xlsx")
    inline = tmp_path / "inline" / "master.xlsx"
    inline.parent.mkdir()
    first = merge([team], inline, S, today=TODAY, skip_unreadable=True)
    monkeypatch.setattr(xlcrm.master.workers, "PARALLEL_BYTES", 0)
    piped = tmp_path / "piped" / "master.xlsx"
    piped.parent.mkdir()
    spools = set(Path(tempfile.gettempdir()).glob("xlcrm-validated-*"))
    second = merge([team], piped, S, today=TODAY, skip_unreadable=True)
    assert set(Path(tempfile.gettempdir()).glob("xlcrm-validated-*")) == spools  # workers' results removed

    assert dump(piped) == dump(inline)
    assert [(h["entity"], h["record_id"], h["field"], h["how"]) for h in history(piped)] == \
        [(h["entity"], h["record_id"], h["field"], h["how"]) for h in history(inline)]
    assert [(Path(f.file).name, f.status, {k: (c.rows_read, c.new, c.linked) for k, c in f.sheets.items()})
            for f in second.files] == \
        [(Path(f.file).name, f.status, {k: (c.rows_read, c.new, c.linked) for k, c in f.sheets.items()})
         for f in first.files]
    assert [f.status for f in second.files].count("unreadable") == 1
    assert len(records(piped)) == 4  # three own customers and 青空商事 once (same e-mail: linked)


@pytest.mark.parametrize("eager_after", [0, 1, 100])
def test_lazy_records_read_like_load_records(tmp_path: Path, master: Path, eager_after: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    merge([book(tmp_path / "a.xlsx", {"customers": [customer(f"株式会社テスト{n}", email=f"a{n}@t.example.jp")
                                                    for n in range(5)]})], master, S, today=TODAY)
    monkeypatch.setattr(db.LazyRecords, "EAGER_AFTER", eager_after)
    conn = connect(master)
    try:
        entity = S.entity("customers")
        full = db.load_records(conn, entity)
        lazy = db.LazyRecords(conn, entity)
        assert len(lazy) == len(full) == 5 and "C-000003" in lazy and "C-999999" not in lazy
        assert lazy["C-000002"] == full["C-000002"] and lazy["C-000005"] == full["C-000005"]
        with pytest.raises(KeyError):
            lazy["C-999999"]
        assert list(lazy) == list(full) and dict(lazy.items()) == full
        # Records inserted after it was made (merge inserts each source's new records as it goes)
        # are not part of "the master before this merge", however it is read.
        later = db.LazyRecords(conn, entity)
        conn.execute("BEGIN")
        row = list(full["C-000001"])
        row[0] = "C-000099"
        db.insert_records(conn, entity, [row], run_id=9, source="x.xlsx")
        assert "C-000099" not in later and len(later) == 5
        assert "C-000099" not in dict(later.items()) and len(list(later)) == 5
        with pytest.raises(KeyError):
            later["C-000099"]
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_an_edit_that_makes_two_known_customers_alike_goes_to_review(tmp_path: Path, master: Path) -> None:
    wb = _seed(tmp_path, master)
    # Someone retypes 緑山工業's record as 青空商事 with its phone number: the same customer twice (二重管理).
    assert edit_cells(wb, "顧客", {"顧客名": "緑山工業株式会社"},
                      {"顧客名": "(株)青空商事", "電話番号": "0311112222"}) == 1
    report = merge([wb], master, S, today=TODAY)
    assert report.duplicates_new == 1
    assert len(records(master)) == 2  # never merged silently
    pairs = sheet_rows(master, "重複候補")
    assert len(pairs) == 1 and {pairs[0]["ID (A)"], pairs[0]["ID (B)"]} == {"C-000001", "C-000002"}
    assert "電話番号" in pairs[0]["根拠"]
    # Merging the same workbook again offers nothing new; a "別" (different) decision sticks.
    assert merge([wb], master, S, today=TODAY).duplicates_new == 0
    edit_cells(master, "重複候補", {"候補番号": pairs[0]["候補番号"]}, {"判断": "別"})
    resolve(master, S)
    assert sheet_rows(master, "重複候補") == []
    kana = S.entity("customers").column("kana").label("ja")
    assert edit_cells(wb, "顧客", {"顧客名": "(株)青空商事"}, {kana: "アオゾラショウジ"}) == 1  # matched again
    assert merge([wb], master, S, today=TODAY).duplicates_new == 0
    assert sheet_rows(master, "重複候補") == []
    assert records(master)["C-000002"]["kana"] == "アオゾラショウジ"


def test_edits_outside_the_matching_columns_build_no_duplicate_index(tmp_path: Path, master: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import xlcrm.master.match

    wb = _seed(tmp_path, master)
    built: list[int] = []
    original = xlcrm.master.match.MatchIndex.add_many
    monkeypatch.setattr(xlcrm.master.match.MatchIndex, "add_many",
                        lambda self, records: (built.append(1), original(self, records))[1])
    assert edit_cells(wb, "顧客", {"顧客名": "緑山工業株式会社"}, {"備考": "請求先は本社"}) == 1
    assert merge([wb], master, S, today=TODAY).duplicates_new == 0
    assert built == []  # a re-merge of status / notes edits costs no matching
    assert edit_cells(wb, "顧客", {"顧客名": "緑山工業株式会社"}, {"電話番号": "03-5555-1234"}) == 1
    merge([wb], master, S, today=TODAY)
    assert built == [1]


@pytest.mark.parametrize("positions", [[], [1], [0, 2, 3]])
def test_fingerprints_keep_their_stored_form(positions: list[int]) -> None:
    # Stored in `origins`: a legacy workbook's rows are recognised by them at every later merge, so the
    # prepared pickers must hash exactly the text the first version hashed.
    import hashlib

    from xlcrm.master.merge import _fingerprinter

    row = ["株式会社青空商事", None, 12, date(2024, 5, 1), "x"]
    old = hashlib.blake2b(repr(("customers", tuple(row[i] for i in positions))).encode("utf-8"),
                          digest_size=12).hexdigest()
    assert _fingerprinter("customers", positions)(row) == old


def test_validation_worker_folds_the_match_keys_of_customers_without_an_id(tmp_path: Path) -> None:
    """compact() (run in the validation worker) folds the duplicate keys merge would fold itself, for
    exactly the rows merge looks up: no ID and no error."""
    from xlcrm.master.match import MatchIndex
    from xlcrm.master.workers import validate_job

    path = book(tmp_path / "a.xlsx", {"customers": [
        customer("株式会社山田商事", phone="03-1234-5678", email="Info@Yamada.example"),
        customer("鈴木工業(株)", customer_id="C-000123"),
        customer("", phone="03-9999-0000"),  # no name: an error row
        customer("佐藤花子", kind="individual", kana="さとう はなこ", birthday=date(1980, 2, 3)),
    ]})
    result, sheets = validate_job(path, S, date(2024, 6, 1))
    data = sheets["customers"]
    assert data.match_keys is not None and len(data.match_keys) == len(data.rows) == 4
    errors = result.error_rows["customers"]
    index = MatchIndex(S)
    for j, vals in enumerate(zip(*data.cols, strict=True)):
        if vals[0] or data.rows[j] in errors:
            assert data.match_keys[j] is None
        else:
            assert data.match_keys[j] == index.keys_for_values(vals)
    assert sum(k is not None for k in data.match_keys) == 2
    assert data.match_keys[0].phones == ("0312345678",)  # real folded keys, not empty shells


def test_fingerprints_prepared_by_the_worker_are_the_merges_own(tmp_path: Path) -> None:
    """compact() (in the validation worker) prepares the fingerprints of the rows without an ID; for a
    child row the customer is only known to the merge, so the text around it is prepared.  Finished,
    they must be exactly what merge hashes itself: fingerprints are stored in ``origins`` and must
    recognise a legacy workbook's rows at the next merge."""
    from xlcrm.master.merge import _fingerprint_parts, _fingerprinter, _finish_fingerprint
    from xlcrm.master.workers import validate_job

    path = book(tmp_path / "a.xlsx", {
        "customers": [customer("株式会社山田商事", phone="03-1234-5678", email="Info@Yamada.example"),
                      customer("鈴木工業(株)", customer_id="C-000123"),
                      customer("'O\"Brien' & 山田", notes="改行\nあり\tタブ")],
        "activities": [activity("株式会社山田商事", "見積の送付", response="回答済み"),
                       activity("C-000123", "訪問 'quoted' \"twice\""),
                       activity("'O\"Brien' & 山田", "電話")],
        "deals": [{"customer": "株式会社山田商事", "title": "保守契約", "quantity": 3, "unit_price": 4000.5,
                   "amount": 12001.5}]})
    _result, sheets = validate_job(path, S, date(2024, 6, 1))
    checked = 0
    for ekey, data in sheets.items():
        entity = S.entity(ekey)
        fingerprint = _fingerprinter(ekey, data.present)
        ref_i = entity.keys.index(entity.ref_column.key) if entity.ref_column else None
        for j, vals in enumerate(zip(*data.cols, strict=True)):
            parts = data.fingerprints[j] if data.fingerprints is not None else None
            if vals[0]:
                assert parts is None  # a row with an ID is not looked up by its fingerprint
                continue
            if parts is None:
                continue
            checked += 1
            if isinstance(parts, str):
                assert ref_i is None or ref_i not in data.present
                assert parts == fingerprint(vals)
                continue
            for cid in ("C-000001", "C-000123", None):
                row = list(vals)
                row[ref_i] = cid
                assert _finish_fingerprint(parts, cid) == fingerprint(row)
    assert checked >= 5
    # A sheet whose only column is the customer (a tuple of one: repr adds a comma).
    acts = S.entity("activities")
    ref_i = acts.keys.index(acts.ref_column.key)
    cols: list[list[object]] = [[None, None] for _ in acts.keys]
    cols[ref_i] = ["x", None]
    (one, two) = _fingerprint_parts(acts, [2, 3], cols, [ref_i], set())
    assert _finish_fingerprint(one, "C-000007") == _fingerprinter("activities", [ref_i])(
        [("C-000007" if i == ref_i else None) for i in range(len(acts.keys))])
    assert _finish_fingerprint(two, None) == _fingerprinter("activities", [ref_i])([None] * len(acts.keys))


def test_base_of_a_new_record_is_its_own_row_not_a_later_workbooks_edit(tmp_path: Path, master: Path) -> None:
    """A record created from a.xlsx and filled in by b.xlsx in the same run: a.xlsx's base is a.xlsx's
    row (the record as created), b.xlsx's base is b.xlsx's row; re-merging both changes nothing."""
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事", email="info@aozora.co.jp"),
                                                 customer("緑山工業株式会社", phone="06-1111-2222")]})
    b = book(tmp_path / "b.xlsx", {"customers": [customer("(株)青空商事", email="INFO@aozora.co.jp",
                                                          phone="03-2222-3333")]}, owner="鈴木")
    merge([a, b], master, S, today=TODAY)
    assert records(master)["C-000001"]["phone"] == "03-2222-3333"
    conn = sqlite3.connect(master.with_suffix(".db"))
    try:
        bases = {(w, cid): phone for w, cid, phone in conn.execute(
            'SELECT _workbook, customer_id, phone FROM bases_customers')}
        rec = conn.execute('SELECT * FROM customers WHERE customer_id = ?', ("C-000002",)).fetchone()
        base = conn.execute('SELECT * FROM bases_customers WHERE customer_id = ?', ("C-000002",)).fetchone()
    finally:
        conn.close()
    wa = next(w for w, cid in bases if cid == "C-000002")
    wb = next(w for w in {w for w, _ in bases} if w != wa)
    assert bases == {(wa, "C-000001"): None, (wa, "C-000002"): "06-1111-2222", (wb, "C-000001"): "03-2222-3333"}
    assert base[1:] == rec[:len(base) - 1]  # the whole row, every column: the record as inserted
    before, n_hist = dump(master), len(history(master))
    merge([a, b], master, S, today=TODAY)
    assert dump(master) == before and len(history(master)) == n_hist


def test_history_rows_keep_the_order_things_happened_in(tmp_path: Path, master: Path) -> None:
    """"new" rows are written in runs copied inside SQLite; links and edits stay between them in order.

    A workbook goes through every sheet before the next workbook; proposals become edits at the end."""
    a = book(tmp_path / "a.xlsx", {
        "customers": [customer("株式会社青空商事", email="info@aozora.co.jp"),
                      customer("(株)青空商事", email="INFO@aozora.co.jp", phone="03-2222-3333"),  # a link
                      customer("緑山工業株式会社")],
        "activities": [activity("緑山工業株式会社", "見積の送付"), activity("株式会社青空商事", "訪問")]})
    b = book(tmp_path / "b.xlsx", {"customers": [customer("白川物産株式会社")]}, owner="鈴木")
    merge([a, b], master, S, today=TODAY)
    rows = [(h["how"], h["entity"], h["record_id"], h["field"], h["source_file"], h["who"]) for h in history(master)]
    assert rows == [
        ("new", "customers", "C-000001", None, "a.xlsx", "佐藤"),
        ("link", "customers", "C-000001", None, "a.xlsx", "佐藤"),
        ("new", "customers", "C-000002", None, "a.xlsx", "佐藤"),
        ("new", "activities", "A-000001", None, "a.xlsx", "佐藤"),
        ("new", "activities", "A-000002", None, "a.xlsx", "佐藤"),
        ("new", "customers", "C-000003", None, "b.xlsx", "鈴木"),
        ("edit", "customers", "C-000001", "phone", "a.xlsx", "佐藤"),
    ]


def test_runs_of_new_records_never_mix_sheets(tmp_path: Path, master: Path) -> None:
    """Two workbooks with the same file name (two folders): the second one's activities come right
    after its customers, whose run ends at the number of activities created so far.  A run of "new"
    rows is one sheet's; the activity must not extend the customers' run."""
    one = book(tmp_path / "a" / "staff.xlsx", {
        "customers": [customer("株式会社青空商事")],
        "activities": [activity("株式会社青空商事", "訪問"), activity("株式会社青空商事", "電話")]})
    two = book(tmp_path / "b" / "staff.xlsx", {
        "customers": [customer("緑山工業株式会社")],
        "activities": [activity("緑山工業株式会社", "見積の送付")]}, owner="鈴木")
    merge([one, two], master, S, today=TODAY)
    rows = [(h["how"], h["entity"], h["record_id"], h["who"]) for h in history(master)]
    assert rows == [
        ("new", "customers", "C-000001", "佐藤"),
        ("new", "activities", "A-000001", "佐藤"),
        ("new", "activities", "A-000002", "佐藤"),
        ("new", "customers", "C-000002", "鈴木"),
        ("new", "activities", "A-000003", "鈴木"),
    ]


def test_new_records_without_consecutive_rowids_are_refused_not_misfiled(tmp_path: Path, master: Path) -> None:
    """Bases and "new" history rows are copied by rowid range; if SQLite ever handed out rowids that
    are not consecutive (it does once the largest rowid is taken), the merge must refuse, not misfile."""
    merge([book(tmp_path / "a.xlsx", {"customers": [customer("株式会社青空商事")]})], master, S, today=TODAY)
    conn = sqlite3.connect(master.with_suffix(".db"))
    conn.execute("UPDATE customers SET rowid = 9223372036854775807")
    conn.commit()
    conn.close()
    before = dump(master)
    b = book(tmp_path / "b.xlsx", {"customers": [customer("緑山工業株式会社"), customer("白浜物産株式会社")]},
             owner="鈴木")
    with pytest.raises(XlcrmError, match="consecutive rowids"):
        merge([b], master, S, today=TODAY)
    assert dump(master) == before


@pytest.mark.skipif(not hasattr(os, "nice"), reason="process priorities are POSIX")
def test_validation_workers_step_back_for_the_merge_process() -> None:
    """The merge process is the critical path; the workers run at a lower priority (nice) so that
    three busy processes on two cores do not slow it to two thirds of a core."""
    from xlcrm.master.workers import WORKER_NICE, Workers

    workers = Workers(None)
    try:
        theirs = workers._pool().submit(os.nice, 0).result()
    finally:
        workers.close()
    ours = os.nice(0)
    assert theirs == min(ours + WORKER_NICE, 19) and theirs > ours
