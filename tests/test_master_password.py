"""An encrypted master: written sealed, read back (decisions, admin edits) only with its password.

Also: encrypted team workbooks merge with the same password (their error workbooks stay encrypted),
distribute seals what it hands out, a missing or wrong password is one line and exit 2 from the CLI
(nothing changed), and the 提供記録 sheet appears in the master once a provision was recorded.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import msoffcrypto
import openpyxl
import pytest
from merge_fixtures import TODAY, activity, book, customer, edit_cells, records, sheet_rows

from xlcrm.errors import XlcrmError
from xlcrm.master.distribute import distribute
from xlcrm.master.handover import handover
from xlcrm.master.masterbook import export_master
from xlcrm.master.run import merge, resolve
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.xlsx.crypto import is_encrypted, protect_file, read_workbook_bytes

PW = "himitsu-2024"


@pytest.fixture
def master(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    return tmp_path / "m" / "master.xlsx"


def _plain_copy(path: Path, tmp: Path, password: str = PW) -> Path:
    """Open the encrypted workbook the way Excel does (msoffcrypto, independent of xlcrm.xlsx.crypto)."""
    office = msoffcrypto.OfficeFile(io.BytesIO(path.read_bytes()))
    office.load_key(password=password)
    out = io.BytesIO()
    office.decrypt(out)
    plain = tmp / f"plain-{path.name}"
    plain.write_bytes(out.getvalue())
    return plain


def _edit_encrypted(path: Path, tmp: Path, sheet: str, match: dict, changes: dict) -> None:
    """A person opens the encrypted master in Excel, types, saves (still encrypted)."""
    plain = _plain_copy(path, tmp)
    assert edit_cells(plain, sheet, match, changes) >= 1
    path.write_bytes(plain.read_bytes())
    protect_file(path, PW)
    plain.unlink()


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    a = book(tmp_path / "a.xlsx", {
        "customers": [customer("株式会社山田製作所", kana="ヤマダセイサクショ", prefecture="東京都",
                               address="千代田区丸の内1-2-3", phone="03-1234-5678")],
        "activities": [activity("株式会社山田製作所", "定期訪問")]})
    b = book(tmp_path / "b.xlsx", {
        "customers": [customer("(株)山田製作所", kana="ヤマダセイサクショ", prefecture="東京都",
                               address="千代田区丸の内1-2-3", phone="03-9999-0000")]}, owner="鈴木")
    return a, b


def _cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XLCRM_PASSWORD"}
    if password is not None:
        env["XLCRM_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=120)


def test_encrypted_master_decisions_and_edits_are_read_back_with_the_password(tmp_path: Path,
                                                                              master: Path) -> None:
    a, b = _pair(tmp_path)
    report = merge([a, b], master, S, today=TODAY, password=PW)
    assert report.duplicates_new == 1
    assert is_encrypted(master.read_bytes())
    with pytest.raises(Exception):  # noqa: B017 - not a zip: nothing can read it without the password
        openpyxl.load_workbook(master)
    plain = _plain_copy(master, tmp_path)
    pairs = sheet_rows(plain, "重複候補")
    assert len(pairs) == 1
    assert {r["顧客名"] for r in sheet_rows(plain, "顧客")} == {"株式会社山田製作所", "(株)山田製作所"}

    _edit_encrypted(master, tmp_path, "重複候補", {"候補番号": pairs[0]["候補番号"]}, {"判断": "統合"})
    rep = resolve(master, S, password=PW)
    assert rep.merged == 1
    assert list(records(master)) == ["C-000001"]
    assert is_encrypted(master.read_bytes())

    # The admin's own edit of a record, typed into the encrypted workbook, is merged three-way.
    _edit_encrypted(master, tmp_path, "顧客", {"顧客ID": "C-000001"}, {"備考": "管理者メモ"})
    rep2 = merge([a, b], master, S, today=TODAY, password=PW)
    assert rep2.files[0].file == str(master)
    assert records(master)["C-000001"]["notes"].endswith("管理者メモ")
    assert is_encrypted(master.read_bytes())


def test_without_or_with_a_wrong_password_the_library_refuses_and_changes_nothing(tmp_path: Path,
                                                                                  master: Path) -> None:
    a, b = _pair(tmp_path)
    merge([a], master, S, today=TODAY, password=PW)
    before = master.read_bytes()
    db_before = master.with_suffix(".db").read_bytes()
    for pw in (None, "wrong"):
        with pytest.raises(XlcrmError, match="password"):
            merge([b], master, S, today=TODAY, password=pw)
        with pytest.raises(XlcrmError, match="password"):
            resolve(master, S, password=pw)
        with pytest.raises(XlcrmError, match="password"):
            distribute(master, tmp_path / "out", S, password=pw)
        with pytest.raises(XlcrmError, match="password"):
            export_master(master, S, password=pw)
        with pytest.raises(XlcrmError, match="password"):
            handover(master, S, "佐藤", "鈴木", password=pw, new_owner=True)
    assert master.read_bytes() == before  # never rewritten plain nor with another password
    assert master.with_suffix(".db").read_bytes() == db_before
    assert not (tmp_path / "out").exists()


def test_cli_missing_or_wrong_password_is_one_line_exit_2(tmp_path: Path, master: Path) -> None:
    a, _ = _pair(tmp_path)
    proc = _cli("merge", str(a), "--master", str(master), "--today", TODAY.isoformat(), "--json", password=PW)
    assert proc.returncode == 0, proc.stderr
    assert is_encrypted(master.read_bytes())
    before = master.read_bytes()
    for args, pw in ((("merge", str(a)), None), (("resolve",), "wrong"), (("export-master",), None),
                     (("distribute", "--out", str(tmp_path / "o")), "wrong")):
        proc = _cli(*args, "--master", str(master), password=pw)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert ("wrong password" if pw else "password-protected") in proc.stderr
        assert str(master) in proc.stderr
    assert master.read_bytes() == before
    proc = _cli("resolve", "--master", str(master), "--password", PW)
    assert proc.returncode == 0, proc.stderr


def test_export_master_rebuilds_a_lost_encrypted_master_only_with_the_password(tmp_path: Path,
                                                                               master: Path) -> None:
    a, _ = _pair(tmp_path)
    merge([a], master, S, today=TODAY, password=PW)
    master.unlink()
    proc = _cli("export-master", "--master", str(master))
    assert proc.returncode == 2 and "encrypted" in proc.stderr and "Traceback" not in proc.stderr
    assert not master.exists()
    proc = _cli("export-master", "--master", str(master), password=PW)  # from XLCRM_PASSWORD
    assert proc.returncode == 0, proc.stderr
    assert is_encrypted(master.read_bytes())
    assert [r["顧客名"] for r in sheet_rows(_plain_copy(master, tmp_path), "顧客")] == ["株式会社山田製作所"]


def test_a_plain_master_becomes_encrypted_and_back_when_the_password_is_removed(tmp_path: Path,
                                                                                master: Path) -> None:
    a, b = _pair(tmp_path)
    merge([a], master, S, today=TODAY)
    assert not is_encrypted(master.read_bytes())
    export_master(master, S, password=PW)
    assert is_encrypted(master.read_bytes())
    # Removing the password in Excel (saving it plain) turns protection off for the next write.
    master.write_bytes(read_workbook_bytes(master, PW))
    merge([b], master, S, today=TODAY)
    assert not is_encrypted(master.read_bytes())
    assert len(records(master)) == 2


def test_encrypted_team_workbooks_merge_with_the_password_and_errors_stay_encrypted(tmp_path: Path,
                                                                                   master: Path) -> None:
    team = book(tmp_path / "team" / "佐藤.xlsx", {"customers": [customer("甲社", phone="03-1111-2222"),
                                                                customer("乙社", phone="12")]})
    protect_file(team, PW)
    report = merge([team], master, S, today=TODAY, password=PW)
    f = report.files[0]
    assert f.status == "errors" and f.total("new") == 1 and f.total("rejected") == 1
    assert {r["name"] for r in records(master).values()} == {"甲社"}
    errors = Path(f.error_workbook or "")
    assert errors.exists() and is_encrypted(errors.read_bytes())
    assert "エラー一覧" in openpyxl.load_workbook(_plain_copy(errors, tmp_path)).sheetnames
    assert not [p for p in errors.parent.iterdir() if p.name.startswith(".")]  # no plain copy left behind


def test_distribute_seals_workbooks_with_the_password_and_they_merge_back(tmp_path: Path,
                                                                          master: Path) -> None:
    a, _ = _pair(tmp_path)
    merge([a], master, S, today=TODAY, password=PW)
    out = tmp_path / "out"
    [handed] = distribute(master, out, S, password=PW)
    assert is_encrypted(handed.read_bytes())
    plain = _plain_copy(handed, tmp_path)
    assert edit_cells(plain, "顧客", {"顧客ID": "C-000001"}, {"電話番号": "03-5555-6666"}) == 1
    handed.write_bytes(plain.read_bytes())
    protect_file(handed, PW)
    report = merge([out], master, S, today=TODAY, password=PW)
    assert report.files[0].total("updated") == 1
    assert records(master)["C-000001"]["phone"] == "03-5555-6666"
    assert report.conflicts_pending == 0  # three-way against its base: a change, not a conflict


def test_handover_rewrites_an_encrypted_master_with_its_password_and_leaves_a_plain_one_plain(
        tmp_path: Path, master: Path) -> None:
    a, _ = _pair(tmp_path)
    merge([a], master, S, today=TODAY, password=PW)
    res = handover(master, S, "佐藤", "鈴木", password=PW, new_owner=True)
    assert res.master_rewritten and is_encrypted(master.read_bytes())
    assert {r["担当営業"] for r in sheet_rows(_plain_copy(master, tmp_path), "顧客")} == {"鈴木"}
    plain_master = tmp_path / "p" / "master.xlsx"
    plain_master.parent.mkdir()
    merge([a], plain_master, S, today=TODAY)
    res = handover(plain_master, S, "佐藤", "鈴木", password=PW, new_owner=True, out=tmp_path / "ho.xlsx")
    assert res.master_rewritten and not is_encrypted(plain_master.read_bytes())
    assert is_encrypted((tmp_path / "ho.xlsx").read_bytes())


def test_provision_record_sheet_appears_in_the_master_after_a_third_party_export(tmp_path: Path,
                                                                                 master: Path) -> None:
    a, b = _pair(tmp_path)
    merge([a, b], master, S, today=TODAY)
    assert "提供記録" not in openpyxl.load_workbook(master, read_only=True).sheetnames
    proc = _cli("export", "--master", str(master), "--role", "analyst", "--to-third-party", "株式会社パートナー",
                "--purpose", "需要予測の共同研究", str(tmp_path / "analyst.xlsx"))
    assert proc.returncode == 0, proc.stderr
    proc = _cli("export-master", "--master", str(master), password=PW)
    assert proc.returncode == 0, proc.stderr
    wb = openpyxl.load_workbook(_plain_copy(master, tmp_path))
    ws = wb["提供記録"]
    assert ws.protection.sheet  # read-only like the other logs
    [row] = sheet_rows(_plain_copy(master, tmp_path), "提供記録")
    assert row["提供先"] == "株式会社パートナー" and row["利用目的"] == "需要予測の共同研究"
    assert row["件数"] == sum(len(records(master, e.key)) for e in S)  # every active record went out
    assert "C-000001" in row["本人を特定する事項（ID）"]
    # The record survives the next merge's rewrite, and the master's own read-back ignores the sheet.
    rep = merge([a, b], master, S, today=TODAY, password=PW)
    assert rep.history_rows == 0
    assert "提供記録" in openpyxl.load_workbook(_plain_copy(master, tmp_path), read_only=True).sheetnames
