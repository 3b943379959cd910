"""Small truths a new firm meets in its first weeks, each driven through the CLI as a person runs it:
a value typed into 競合's 採用 column, handover to an unknown name, a workbook LibreOffice saved, a
workbook pandas wrote, and a master folder copied with `cp -r`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import libreoffice_convert
from merge_fixtures import activity, book, customer, edit_cells, sheet_rows

from xlcrm.schema import DEFAULT_SCHEMA, META_SHEET

TODAY = "2024-06-01"


def xlcrm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def owners(master: Path) -> dict[str, str]:
    conn = sqlite3.connect(master.with_suffix(".db"))
    try:
        return dict(conn.execute("SELECT name, owner FROM customers"))
    finally:
        conn.close()


@pytest.fixture
def team_master(tmp_path: Path) -> Path:
    """A master merged from 佐藤's and 鈴木's workbooks (the same customer in both, another phone)."""
    book(tmp_path / "team" / "sato.xlsx", {
        "customers": [customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-1111-2222"),
                      customer("緑山工業株式会社", email="sales@midori.co.jp")],
        "activities": [activity("株式会社青空商事", "初回訪問")]}, owner="佐藤")
    book(tmp_path / "team" / "suzuki.xlsx", {
        "customers": [customer("有限会社白川", phone="03-3333-4444")]}, owner="鈴木")
    master = tmp_path / "顧客" / "master.xlsx"
    master.parent.mkdir()
    ok(xlcrm("merge", "team", "--master", str(master), "--today", TODAY, cwd=tmp_path))
    return master


# --- 競合: a value typed into 採用 ------------------------------------------------------------------

def test_a_value_typed_into_the_conflict_decision_column_is_the_value_kept(tmp_path: Path,
                                                                           team_master: Path) -> None:
    ok(xlcrm("distribute", "--master", str(team_master), "--out", "handout", cwd=tmp_path))
    edit_cells(tmp_path / "handout" / "佐藤.xlsx", "顧客", {"顧客名": "株式会社青空商事"}, {"電話番号": "03-1111-9999"})
    book(tmp_path / "legacy" / "鈴木の顧客.xlsx", {"customers": [
        customer("株式会社青空商事", email="info@aozora.co.jp", phone="03-5555-6666")]}, owner="鈴木")
    ok(xlcrm("merge", "handout/佐藤.xlsx", "legacy", "--master", str(team_master), "--today", TODAY,
             cwd=tmp_path))
    (conflict,) = sheet_rows(team_master, "競合")
    assert conflict["項目"] == "電話番号"

    edit_cells(team_master, "競合", {"競合番号": conflict["競合番号"]}, {"採用": "not a phone"})
    out = ok(xlcrm("resolve", "--master", str(team_master), cwd=tmp_path))
    assert "not a valid 電話番号" in out  # checked like a cell, left pending
    edit_cells(team_master, "競合", {"競合番号": conflict["競合番号"]}, {"採用": "０３（７７７７）８８８８"})
    ok(xlcrm("resolve", "--master", str(team_master), "--json", cwd=tmp_path))
    conn = sqlite3.connect(team_master.with_suffix(".db"))
    phone = conn.execute("SELECT phone FROM customers WHERE name = '株式会社青空商事'").fetchone()[0]
    conn.close()
    assert phone == "03-7777-8888"
    assert sheet_rows(team_master, "競合") == []


# --- handover --to --------------------------------------------------------------------------------

def test_handover_to_an_unknown_name_is_refused_unless_new_owner(tmp_path: Path, team_master: Path) -> None:
    before = owners(team_master)
    proc = xlcrm("handover", "--master", str(team_master), "--from", "佐藤", "--to", "鈴本", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "鈴本" in proc.stderr and "鈴木" in proc.stderr and "--new-owner" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert owners(team_master) == before and not list(tmp_path.glob("顧客/引き継ぎ_*"))

    ok(xlcrm("handover", "--master", str(team_master), "--from", "佐藤", "--to", "鈴木", cwd=tmp_path))
    assert set(owners(team_master).values()) == {"鈴木"}
    ok(xlcrm("handover", "--master", str(team_master), "--from", "鈴木", "--to", "田中 一郎", "--new-owner",
             "--customer", "C-000001", cwd=tmp_path))
    assert owners(team_master)["株式会社青空商事"] == "田中 一郎"


# --- a master folder copied (cp -r, a NAS restore, a cloud sync) ------------------------------------

def test_a_copied_master_folder_is_not_taken_for_an_edited_master(tmp_path: Path, team_master: Path) -> None:
    copy = tmp_path / "restored"
    shutil.copytree(team_master.parent, copy, copy_function=shutil.copy)  # cp -r: new file times
    master = copy / "master.xlsx"
    assert master.stat().st_mtime_ns != team_master.stat().st_mtime_ns
    out = ok(xlcrm("handover", "--master", str(master), "--from", "鈴木", "--to", "佐藤", cwd=tmp_path))
    assert "not merged" not in out
    assert {r["担当営業"] for r in sheet_rows(master, "顧客")} == {"佐藤"}  # master.xlsx was rewritten
    ok(xlcrm("distribute", "--master", str(master), "--out", "handout2", cwd=tmp_path))

    # An edit is still an edit: a decision typed into the copy is seen.
    edit_cells(master, "顧客", {"顧客名": "有限会社白川"}, {"電話番号": "03-3333-5555"})
    proc = xlcrm("distribute", "--master", str(master), "--out", "handout3", cwd=tmp_path)
    assert proc.returncode == 2 and "resolve" in proc.stderr


# --- a workbook LibreOffice saved ------------------------------------------------------------------

def _sheet_states(path: Path) -> dict[str, str]:
    import re

    xml = zipfile.ZipFile(path).read("xl/workbook.xml").decode()
    states = {}
    for m in re.finditer(r'<sheet [^>]*>', xml):
        name = re.search(r'name="([^"]+)"', m.group(0))
        state = re.search(r'state="(\w+)"', m.group(0))
        states[name.group(1) if name else ""] = state.group(1) if state else "visible"
    return states


def test_a_libreoffice_saved_workbook_is_read_and_its_meta_sheet_restored(tmp_path: Path) -> None:
    src = book(tmp_path / "src" / "sato.xlsx", {
        "customers": [customer("株式会社テスト", phone="3-1234-5678"), customer("有限会社白川", phone="03-3333-4444")],
        "activities": [activity("株式会社テスト", "訪問")]}, owner="佐藤")
    saved = libreoffice_convert(src, tmp_path / "lo", fmt="xlsx")
    assert _sheet_states(saved)[META_SHEET] == "hidden"  # what LibreOffice does to a very hidden sheet

    proc = xlcrm("validate", str(saved), "--json", "--today", TODAY, "--annotate", "checked", "--fix", "fixed",
                 cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["files"][0]["owner"] == "佐藤"
    assert [f["key"] for f in data["findings"]] == ["phone"]  # the planted mistake, nothing about the sheet
    for out in (*(tmp_path / "checked").glob("*.xlsx"), *(tmp_path / "fixed").glob("*.xlsx")):
        assert _sheet_states(out)[META_SHEET] == "veryHidden", out.name

    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    proc = xlcrm("merge", str(saved), "--master", str(master), "--today", TODAY, cwd=tmp_path)
    assert proc.returncode in (0, 1) and "warning" not in proc.stderr, proc.stderr
    assert owners(master) == {"有限会社白川": "佐藤"}


# --- a workbook pandas wrote -------------------------------------------------------------------------

def test_a_workbook_without_meta_sheet_gives_one_finding_about_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "顧客リスト.xlsx"
    with pd.ExcelWriter(path) as xw:
        for e in DEFAULT_SCHEMA:
            rows: list[dict[str, Any]] = []
            if e.key == "customers":
                rows = [{"区分": "法人", "顧客名": f"株式会社テスト{i}"} for i in range(30)]
            if e.key == "activities":
                rows = [{"日付": "2024/5/1", "顧客": "株式会社テスト1", "種別": "電話", "内容": "x"}]
            pd.DataFrame(rows, columns=[c.ja for c in e.columns]).to_excel(xw, sheet_name=e.ja, index=False)
    proc = xlcrm("validate", str(path), "--json", "--today", TODAY, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    assert [f["rule"] for f in findings] == ["owner.unknown"]
    (f,) = findings
    assert "担当営業" in f["message"] and "対応者" in f["message"] and "31 行" in f["message"]
    assert "xlcrm template" in f["message"] and "--owner" in f["message"]
