"""Honest exits, through the command line as an admin types it: an input that cannot be read stops a
merge before anything is written (or is skipped and logged with --skip-unreadable), files xlcrm does
not read are named, an open team workbook is merged with a warning, a run that changes nothing keeps
every backup slot, and malformed arguments end in one line."""

from __future__ import annotations

import hashlib
import io
import shutil
import sqlite3
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from datetime import date
from pathlib import Path

import pytest
from merge_fixtures import activity, book, customer

from xlcrm.cli import run

TODAY = "2024-06-01"


def xlcrm(*args: object) -> tuple[int, str, str]:
    """Run the command line in this process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes (master.db, master.xlsx, backups, errors)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def runs(master: Path) -> int:
    conn = sqlite3.connect(master.with_suffix(".db"))
    try:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def import_log(master: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(master.with_suffix(".db"))
    try:
        return conn.execute("SELECT file, status, message FROM import_log WHERE run_id = "
                            "(SELECT MAX(run_id) FROM import_log)").fetchall()
    finally:
        conn.close()


def import_log_sheet(master: Path) -> list[list[object]]:
    import openpyxl

    wb = openpyxl.load_workbook(master, read_only=True)
    try:
        return [list(r) for r in wb["取込ログ"].iter_rows(values_only=True)]
    finally:
        wb.close()


def _team(folder: Path) -> Path:
    book(folder / "sato.xlsx", {"customers": [customer("株式会社青空商事", phone="03-1111-2222")],
                                "activities": [activity("株式会社青空商事", "訪問")]}, owner="佐藤")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A team folder and a master with two merges in it (so one backup), built once per module."""
    root = tmp_path_factory.mktemp("built")
    team = _team(root / "team")
    m = root / "m" / "master.xlsx"
    m.parent.mkdir()
    assert xlcrm("merge", team, "--master", m, "--today", TODAY)[0] == 0
    extra = book(root / "suzuki.xlsx", {"customers": [customer("白浜物産株式会社")]}, owner="鈴木")
    assert xlcrm("merge", extra, "--master", m, "--today", TODAY)[0] == 0
    assert len(list((m.parent / "backups").iterdir())) == 2
    return root


@pytest.fixture
def team(tmp_path: Path, built: Path) -> Path:
    return Path(shutil.copytree(built / "team", tmp_path / "team"))


@pytest.fixture
def master(tmp_path: Path, built: Path, team: Path) -> Path:
    """The built master, copied (its workbook registered the team folder's sato.xlsx by content)."""
    return Path(shutil.copytree(built / "m", tmp_path / "m")) / "master.xlsx"


def _garbage(path: Path) -> Path:
    path.write_text("会社名,電話\n青空商事,03-1111-2222\n", encoding="utf-8")  # a CSV named .xlsx
    return path


def _old_xls(path: Path) -> Path:
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    return path


def _no_sheets(path: Path) -> Path:
    import openpyxl

    openpyxl.Workbook().save(path)  # a real workbook, refused only when its sheets are read
    return path


BAD_INPUTS = {
    "missing file": lambda d: d / "sato_typo.xlsx",
    "mistyped folder": lambda d: d / "tem",
    "csv renamed": lambda d: _garbage(d / "renamed.xlsx"),
    "old xls named xlsx": lambda d: _old_xls(d / "old.xlsx"),
    "not a team workbook": lambda d: _no_sheets(d / "other.xlsx"),
}


def test_missing_input_creates_no_master(tmp_path: Path) -> None:
    m = tmp_path / "m" / "master.xlsx"
    m.parent.mkdir()
    code, _out, err = xlcrm("merge", tmp_path / "nonexist.xlsx", "--master", m)
    assert code == 2
    line = one_line(err)
    assert "nonexist.xlsx" in line and "not found" in line and "--skip-unreadable" in line
    assert list(m.parent.iterdir()) == []


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_unreadable_input_leaves_the_master_untouched(tmp_path: Path, master: Path, team: Path,
                                                     kind: str) -> None:
    # The good workbook has a rejected row: its error workbook must not be written either.
    book(team / "tanaka.xlsx", {"customers": [customer("有限会社川辺工務店", phone="abc")]}, owner="田中")
    bad = BAD_INPUTS[kind](tmp_path)
    before, n_runs = snapshot(master.parent), runs(master)
    code, _out, err = xlcrm("merge", team, bad, "--master", master, "--today", TODAY)
    assert code == 2
    assert bad.name in one_line(err)
    assert snapshot(master.parent) == before  # master.db, master.xlsx, backups/ and errors/ as they were
    assert runs(master) == n_runs


def test_unreadable_input_in_a_folder_refuses_too(tmp_path: Path, master: Path, team: Path) -> None:
    _no_sheets(team / "zz_other.xlsx")
    before = snapshot(master.parent)
    code, _out, err = xlcrm("merge", team, "--master", master, "--today", TODAY)
    assert code == 2 and "zz_other.xlsx" in one_line(err)
    assert snapshot(master.parent) == before


@pytest.mark.parametrize("kind", ["missing file", "not a team workbook"])
def test_skip_unreadable_merges_the_rest_and_logs_the_file(tmp_path: Path, master: Path, team: Path,
                                                          kind: str) -> None:
    bad = BAD_INPUTS[kind](tmp_path)
    book(team / "takahashi.xlsx", {"customers": [customer("株式会社山田精機")]}, owner="高橋")
    code, _out, err = xlcrm("merge", team, bad, "--master", master, "--today", TODAY, "--skip-unreadable")
    assert code == 1, err
    assert "Traceback" not in err
    log = import_log(master)
    skipped = [(f, s, msg) for f, s, msg in log if f == str(bad)]
    assert skipped and skipped[0][1] == "unreadable" and "--skip-unreadable" in skipped[0][2]
    assert any(f.endswith("takahashi.xlsx") for f, _s, _m in log)
    rows = import_log_sheet(master)
    assert any(str(bad) in r and "読めません" in r for r in rows)
    assert any(isinstance(c, str) and "読めないため取り込みませんでした" in c for r in rows for c in r)


def test_other_files_in_a_folder_are_named_and_pointed_at_import(tmp_path: Path, master: Path,
                                                                 team: Path) -> None:
    (team / "顧客一覧.csv").write_text("会社名\n青空商事\n", encoding="utf-8")
    _old_xls(team / "古い台帳.xls")
    (team / "名刺.xlsb").write_bytes(b"PK\x03\x04")
    (team / "~$other.xlsx").write_bytes(b"owner")  # Excel's owner file of a closed-now workbook
    (team / ".DS_Store").write_bytes(b"\0")
    code, out, err = xlcrm("merge", team, "--master", master, "--today", TODAY)
    assert code == 0, err
    text = out + err
    for name in ("顧客一覧.csv", "古い台帳.xls", "名刺.xlsb"):
        assert name in text
    assert "xlcrm import" in text
    assert "~$other" not in text and ".DS_Store" not in text
    code, out, err = xlcrm("validate", team, "--today", TODAY)
    assert code == 0, out + err
    assert all(n in out + err for n in ("顧客一覧.csv", "古い台帳.xls", "名刺.xlsb")) and "xlcrm import" in out + err
    code, out, _err = xlcrm("validate", team, "--today", TODAY, "--json")
    import json

    assert sorted(Path(p).name for p in json.loads(out)["not_read"]) == ["古い台帳.xls", "名刺.xlsb", "顧客一覧.csv"]


@pytest.mark.parametrize("command", ["merge", "validate"])
def test_a_folder_of_only_other_files_is_an_error(tmp_path: Path, master: Path, command: str) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "顧客一覧.csv").write_text("会社名\n青空商事\n", encoding="utf-8")
    _old_xls(folder / "古い台帳.xls")
    (folder / "~$古い台帳.xls").write_bytes(b"owner")
    before = snapshot(master.parent)
    args = ["merge", folder, "--master", master] if command == "merge" else ["validate", folder]
    code, _out, err = xlcrm(*args)
    assert code == 2
    line = one_line(err)
    assert "顧客一覧.csv" in line and "古い台帳.xls" in line and "xlcrm import" in line and "~$" not in line
    assert snapshot(master.parent) == before


def test_open_team_workbook_is_merged_with_a_warning(master: Path, team: Path) -> None:
    book(team / "tanaka.xlsx", {"customers": [customer("有限会社川辺工務店")]}, owner="田中")
    (team / "~$tanaka.xlsx").write_bytes(b"owner file")
    code, _out, err = xlcrm("merge", team, "--master", master, "--today", TODAY)
    assert code == 0, err
    assert "tanaka.xlsx" in err and "~$tanaka.xlsx" in err
    log = import_log(master)
    assert any(f.endswith("tanaka.xlsx") and "~$tanaka.xlsx" in (msg or "") for f, _s, msg in log)
    assert not any(f.endswith("sato.xlsx") and "~$" in (msg or "") for f, _s, msg in log)
    assert any(isinstance(c, str) and "~$tanaka.xlsx" in c for r in import_log_sheet(master) for c in r)
    names = {r["name"] for r in _customers(master)}
    assert "有限会社川辺工務店" in names  # merged from what was saved


def _customers(master: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(master.with_suffix(".db"))
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM customers").fetchall()
    finally:
        conn.close()


def test_a_run_that_changes_nothing_keeps_every_backup_slot(tmp_path: Path, master: Path, team: Path) -> None:
    backups = master.parent / "backups"
    # Ten older backups: a run that used a slot would prune the oldest.
    for i in range(10):
        for suffix in (".db", ".xlsx"):
            (backups / f"master-20200101-0000{i:02d}-000000{suffix}").write_bytes(b"old")
    before = sorted(p.name for p in backups.iterdir())
    assert xlcrm("merge", team, "--master", master, "--today", TODAY)[0] == 0  # already merged
    assert xlcrm("resolve", "--master", master)[0] == 0  # no decisions
    assert sorted(p.name for p in backups.iterdir()) == before
    # A run that changes something takes its slot (and the oldest copy goes).
    book(team / "tanaka.xlsx", {"customers": [customer("有限会社川辺工務店")]}, owner="田中")
    assert xlcrm("merge", team, "--master", master, "--today", TODAY)[0] == 0
    after = sorted(p.name for p in backups.iterdir())
    assert len(after) == 20 and "master-20200101-000000-000000.db" not in after


@pytest.mark.parametrize("command", ["resolve", "distribute"])
def test_resolve_and_distribute_refuse_an_unreadable_master_workbook(tmp_path: Path, master: Path,
                                                                     command: str) -> None:
    master.write_bytes(b"not a workbook")
    before, n_runs = snapshot(master.parent), runs(master)
    out_dir = tmp_path / "handout"
    args = ["resolve", "--master", master] if command == "resolve" else \
        ["distribute", "--master", master, "--out", out_dir]
    code, _out, err = xlcrm(*args)
    assert code == 2 and "master.xlsx" in one_line(err)
    assert snapshot(master.parent) == before and runs(master) == n_runs
    assert not out_dir.exists()


@pytest.mark.parametrize("command", ["resolve", "distribute"])
def test_resolve_and_distribute_without_a_master_write_nothing(tmp_path: Path, command: str) -> None:
    m = tmp_path / "m" / "master.xlsx"
    m.parent.mkdir()
    args = ["resolve", "--master", m] if command == "resolve" else \
        ["distribute", "--master", m, "--out", tmp_path / "handout"]
    code, _out, err = xlcrm(*args)
    assert code == 2 and one_line(err)
    assert list(m.parent.iterdir()) == [] and not (tmp_path / "handout").exists()


# --- dates and other arguments ---------------------------------------------------------------------

@pytest.mark.parametrize("typed", ["2024/6/1", "2024-06-01", "2024.6.1", "20240601"])
def test_dates_typed_year_first_are_taken(tmp_path: Path, team: Path, typed: str) -> None:
    from xlcrm.cli.common import parse_date

    assert parse_date(typed) == date(2024, 6, 1)
    code, out, err = xlcrm("validate", team / "sato.xlsx", "--today", typed)
    assert code == 0, out + err
    m = tmp_path / "m2" / "master.xlsx"
    m.parent.mkdir()
    code, out, err = xlcrm("merge", team, "--master", m, "--today", typed)
    assert code == 0, err


@pytest.mark.parametrize("command", ["validate", "merge", "demo", "report", "history"])
@pytest.mark.parametrize("typed", ["4/1/2024", "2024/13/1", "2024-02-30", "yesterday"])
def test_other_dates_are_refused_in_one_line(tmp_path: Path, master: Path, team: Path, command: str,
                                             typed: str) -> None:
    option = "--as-of" if command == "report" else "--today"
    args = {"validate": ["validate", team],
            "merge": ["merge", team, "--master", master],
            "demo": ["demo", tmp_path / "demo"],
            "report": ["report", tmp_path / "r.xlsx", "--master", master],
            "history": ["history", "C-000001", "--master", master]}[command]
    before = snapshot(master.parent)
    code, _out, err = xlcrm(*args, option, typed)
    assert code == 2
    line = one_line(err)
    assert option in line and typed in line and "2024-04-01" in line
    assert snapshot(master.parent) == before
    assert not (tmp_path / "demo").exists() and not (tmp_path / "r.xlsx").exists()


def test_addin_build_without_pyopenvba_says_how_to_install_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pyopenvba'] = None; sys.argv = ['xlcrm', 'addin', 'build', "
            f"{str(tmp_path / 'x.xlam')!r}]; from xlcrm.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert "pip install" in line and "pyOpenVBA==6.5.0" in line
    assert not (tmp_path / "x.xlam").exists()


@pytest.mark.parametrize("args", [
    ["schema", "--lang", "fr"],
    ["template", "OUT", "--lang", "de"],
    ["distribute", "--master", "M", "--out", "OUT", "--lang", "fr"],
    ["search", "山田", "--master", "M", "--limit", "abc"],
    ["search", "山田", "--master", "M", "--limit", "0"],
    ["report", "OUT", "--master", "M", "--top", "-3"],
    ["schema", "--config", "nonexistent.toml"],
    ["merge", "TEAM", "--master", "M", "--bogus"],
    ["merge", "TEAM"],
    ["nosuchcommand"],
])
def test_malformed_arguments_end_in_one_line(tmp_path: Path, master: Path, team: Path,
                                             args: list[str]) -> None:
    subst = {"M": master, "OUT": tmp_path / "out.xlsx", "TEAM": team}
    before = snapshot(master.parent)
    code, _out, err = xlcrm(*(subst.get(a, a) for a in args))
    assert code == 2
    line = one_line(err)
    assert line.startswith("xlcrm")
    assert snapshot(master.parent) == before and not (tmp_path / "out.xlsx").exists()
