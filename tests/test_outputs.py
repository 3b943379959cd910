"""No command overwrites anyone's work, no output lands on the master, and --master is a master.

Every test drives the CLI as an admin would and checks the exit code, the one line and that the files
concerned are byte for byte what they were (SHA-256).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from merge_fixtures import TODAY, book, customer, edit_cells
from typer.testing import CliRunner

from xlcrm.errors import XlcrmError
from xlcrm.master.run import merge
from xlcrm.schema import DEFAULT_SCHEMA as S


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(*paths: Path) -> dict[str, str]:
    return {str(p): sha(p) for p in paths}


def cli(*args: object) -> tuple[int, str]:
    """Run ``xlcrm ARGS`` in this process the way ``xlcrm.cli.main`` does: (exit code, output)."""
    from xlcrm.cli import _register, app

    _register()
    result = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(result.exception, XlcrmError):
        return result.exception.exit_code, f"xlcrm: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def one_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A master with two owners' customers, built once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("outputs")
    team = root / "team"
    book(team / "sato.xlsx", {"customers": [customer("株式会社青空商事", phone="03-1234-5678",
                                                     dm_consent="yes"),
                                            customer("山田精機株式会社")]}, owner="佐藤")
    book(team / "suzuki.xlsx", {"customers": [customer("有限会社緑化建設")]}, owner="鈴木")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLCRM_STATE_DIR", str(root / "state"))
        merge([team], root / "m" / "master.xlsx", S, today=TODAY)
    return root


@pytest.fixture
def site(built: Path, tmp_path: Path) -> Iterator[Path]:
    shutil.copytree(built / "team", tmp_path / "team")
    shutil.copytree(built / "m", tmp_path / "m")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def master_files(site: Path) -> list[Path]:
    return [site / "m" / "master.xlsx", site / "m" / "master.db"]


# --- outputs that hold someone's work ---------------------------------------------------------------

def test_template_refuses_a_workbook_full_of_customers(tmp_path: Path) -> None:
    filled = book(tmp_path / "filled.xlsx", {"customers": [customer(f"株式会社テスト{i}") for i in range(30)]})
    before = sha(filled)
    env = {**os.environ, "XLCRM_STATE_DIR": str(tmp_path / "state")}
    run = subprocess.run([sys.executable, "-m", "xlcrm", "template", str(filled), "--owner", "佐藤"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert "filled.xlsx" in line and "--force" in line and run.stdout == ""
    assert sha(filled) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".xlsx") == ["filled.xlsx"]

    # --force overwrites after keeping a copy beside it, and says where.
    code, out = cli("template", filled, "--owner", "佐藤", "--force")
    assert code == 0, out
    copies = list(tmp_path.glob("filled.*.bak.xlsx"))
    assert len(copies) == 1 and sha(copies[0]) == before and copies[0].name in out
    assert sha(filled) != before


def test_demo_refuses_a_real_workbook_in_its_folder(tmp_path: Path) -> None:
    real = book(tmp_path / "team" / "sato.xlsx", {"customers": [customer("株式会社本物")]})
    before = sha(real)
    code, msg = cli("demo", tmp_path / "team", "--today", "2024-06-01")
    assert code == 2 and "sato.xlsx" in one_line(msg) and "--force" in msg
    assert sha(real) == before and sorted(p.name for p in real.parent.iterdir()) == ["sato.xlsx"]


def test_template_rewrites_its_own_unchanged_output_only(tmp_path: Path) -> None:
    out = tmp_path / "t.xlsx"
    assert cli("template", out, "--owner", "佐藤")[0] == 0
    assert cli("template", out, "--owner", "佐藤", "--lang", "en")[0] == 0  # unchanged: no --force needed
    edit_cells(out, "Customers", {}, {})  # saved again by another program: no longer provably xlcrm's
    before = sha(out)
    code, msg = cli("template", out, "--owner", "佐藤")
    assert code == 2 and "t.xlsx" in one_line(msg) and "--force" in msg
    assert sha(out) == before
    assert not list(tmp_path.glob("*.bak.xlsx"))


def test_report_export_mailing_list_refuse_a_file_they_did_not_write(site: Path) -> None:
    staff = site / "team" / "sato.xlsx"
    before = hashes(staff, *master_files(site))
    for args in (["report", staff], ["export", staff, "--role", "analyst"], ["mailing-list", staff],
                 ["handover", "--from", "佐藤", "--to", "鈴木", staff]):
        code, msg = cli(*args, "--master", "m/master.xlsx")
        assert code == 2, (args, msg)
        assert "sato.xlsx" in one_line(msg) and "--force" in msg, args
        assert hashes(staff, *master_files(site)) == before, args
    # --force keeps a copy of the file beside it first, and says so.
    for name, args in (("r", ["report"]), ("x", ["export", "--role", "analyst"]), ("ml", ["mailing-list"]),
                       ("h", ["handover", "--from", "佐藤", "--to", "鈴木"])):
        shutil.copy(staff, site / f"{name}.xlsx")
        code, out = cli(*args, f"{name}.xlsx", "--master", "m/master.xlsx", "--force")
        assert code == 0, (args, out)
        [copy] = site.glob(f"{name}.*.bak.xlsx")
        assert sha(copy) == before[str(staff)] and copy.name in out, args
    # Their own output, unchanged, is rewritten without --force.
    assert cli("export", "out.xlsx", "--role", "analyst", "--master", "m/master.xlsx")[0] == 0
    assert cli("export", "out.xlsx", "--role", "analyst", "--master", "m/master.xlsx")[0] == 0
    assert not list(site.glob("out.*.bak.xlsx"))


def test_import_refuses_a_workbook_in_its_out_folder_and_force_keeps_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "名刺.csv"
    src.write_text("会社名,電話\n株式会社北斗電機,03-1234-5678\n", encoding="utf-8")
    typed = book(tmp_path / "team" / "高橋.xlsx", {"customers": [customer("株式会社高橋の顧客")]}, owner="高橋")
    before = sha(typed)
    code, msg = cli("import", src, "--out", tmp_path / "team", "--owner", "高橋")
    assert code == 2 and "高橋.xlsx" in one_line(msg) and "--force" in msg, msg
    assert sha(typed) == before and sorted(p.name for p in typed.parent.iterdir()) == ["高橋.xlsx"]
    code, out = cli("import", src, "--out", tmp_path / "team", "--owner", "高橋", "--force")
    assert code == 0, out
    [copy] = typed.parent.glob("高橋.*.bak.xlsx")
    assert sha(copy) == before and copy.name in out and sha(typed) != before
    # Its own earlier output is not replaced either: those rows may be in no master yet.
    written = hashes(*(p for p in typed.parent.iterdir() if ".bak." not in p.name))
    code, msg = cli("import", src, "--out", tmp_path / "team", "--owner", "高橋")
    assert code == 2 and "--force" in one_line(msg)
    assert hashes(*(p for p in typed.parent.iterdir() if ".bak." not in p.name)) == written


def test_report_png_refuses_an_image_it_did_not_write(site: Path) -> None:
    charts = site / "charts"
    charts.mkdir()
    (charts / "sales_monthly.png").write_bytes(b"\x89PNG a chart someone drew by hand")
    before = hashes(charts / "sales_monthly.png", *master_files(site))
    code, msg = cli("report", "r.xlsx", "--png", charts, "--master", "m/master.xlsx")
    assert code == 2 and "sales_monthly.png" in one_line(msg)
    assert hashes(charts / "sales_monthly.png", *master_files(site)) == before
    assert not (site / "r.xlsx").exists()  # refused before anything was written


def test_validate_copies_refuse_an_edited_copy(site: Path) -> None:
    code, out = cli("validate", "team/sato.xlsx", "--annotate", "checked", "--fix", "fixed")
    assert code == 0, out
    annotated = site / "checked" / "sato_チェック結果.xlsx"
    fixed = site / "fixed" / "sato_修正済.xlsx"
    assert annotated.exists() and fixed.exists()
    assert cli("validate", "team/sato.xlsx", "--annotate", "checked", "--fix", "fixed")[0] == 0
    edit_cells(fixed, "顧客", {"顧客名": "山田精機株式会社"}, {"備考": "fixed by hand"})
    before = hashes(annotated, fixed)
    code, msg = cli("validate", "team/sato.xlsx", "--annotate", "checked", "--fix", "fixed")
    assert code == 2 and "sato_修正済.xlsx" in one_line(msg) and "--force" in msg
    assert hashes(annotated, fixed) == before
    code, out = cli("validate", "team/sato.xlsx", "--annotate", "checked", "--fix", "fixed", "--force")
    assert code == 0, out
    [copy] = (site / "fixed").glob("sato_修正済.*.bak.xlsx")
    assert sha(copy) == before[str(fixed)] and copy.name in out
    assert not list((site / "checked").glob("*.bak.xlsx"))  # unchanged: replaced without a copy


# --- distribute over handouts with unmerged edits -------------------------------------------------------

def test_distribute_refuses_handouts_with_unmerged_edits(site: Path) -> None:
    assert cli("distribute", "--master", "m/master.xlsx", "--out", "handout")[0] == 0
    sato, suzuki = site / "handout" / "佐藤.xlsx", site / "handout" / "鈴木.xlsx"
    assert cli("distribute", "--master", "m/master.xlsx", "--out", "handout")[0] == 0  # unchanged: fine
    assert edit_cells(sato, "顧客", {"顧客名": "山田精機株式会社"}, {"備考": "来週訪問"}) == 1
    before = hashes(sato, suzuki, *master_files(site))
    for extra in ([], ["--owner", "鈴木"]):  # also when only someone else's handout would be written
        code, msg = cli("distribute", "--master", "m/master.xlsx", "--out", "handout", *extra)
        line = one_line(msg)
        assert code == 2 and "佐藤.xlsx" in line and "鈴木.xlsx" not in line and "xlcrm merge" in line
        assert hashes(sato, suzuki, *master_files(site)) == before
    # Once merged, the edit is in the master and the handout may be replaced.
    assert cli("merge", "handout", "--master", "m/master.xlsx")[0] == 0
    code, out = cli("distribute", "--master", "m/master.xlsx", "--out", "handout")
    assert code == 0, out
    assert not list((site / "handout").glob("*.bak.xlsx"))


def test_distribute_refuses_a_folder_holding_team_workbooks_never_merged(site: Path) -> None:
    team = site / "team"
    assert cli("merge", "team", "--master", "m/master.xlsx")[0] == 0  # sato.xlsx, suzuki.xlsx: merged
    assert cli("template", team / "filled.xlsx", "--owner", "山本")[0] == 0
    assert cli("template", team / "blank.xlsx", "--owner", "山田")[0] == 0  # nothing typed: nothing to merge
    wb = openpyxl.load_workbook(team / "filled.xlsx")  # a first customer typed into the template
    wb["顧客"].cell(2, [c.value for c in wb["顧客"][1]].index("顧客名") + 1).value = "株式会社山本建設"
    wb.save(team / "filled.xlsx")
    other_pc = book(team / "takahashi.xlsx", {"customers": [customer("株式会社北斗電機")]}, owner="高橋")
    (team / "notes.xlsx").write_bytes(b"PK\x03\x04 not a team workbook")
    watched = [*sorted(team.iterdir()), *master_files(site)]
    before = hashes(*watched)
    code, msg = cli("distribute", "--master", "m/master.xlsx", "--out", "team")
    line = one_line(msg)
    assert code == 2 and "filled.xlsx" in line and "takahashi.xlsx" in line and "xlcrm merge" in line, msg
    assert all(name not in line for name in ("blank.xlsx", "notes.xlsx", "sato.xlsx", "suzuki.xlsx"))
    assert hashes(*watched) == before and sorted(team.iterdir()) == watched[:-2]
    (team / "notes.xlsx").unlink()
    assert cli("merge", "team", "--master", "m/master.xlsx")[0] == 0
    code, out = cli("distribute", "--master", "m/master.xlsx", "--out", "team")
    assert code == 0, out
    assert (team / "山本.xlsx").exists() and (team / "高橋.xlsx").exists() and sha(other_pc) == before[str(other_pc)]


def test_distribute_force_keeps_a_copy_of_each_replaced_file(site: Path) -> None:
    handout = site / "handout"
    stranger = book(handout / "佐藤.xlsx", {"customers": [customer("株式会社だれか")]}, owner="佐藤")
    before = sha(stranger)
    code, msg = cli("distribute", "--master", "m/master.xlsx", "--out", "handout")
    assert code == 2 and "佐藤.xlsx" in one_line(msg) and sha(stranger) == before
    assert not (handout / "鈴木.xlsx").exists()
    code, out = cli("distribute", "--master", "m/master.xlsx", "--out", "handout", "--force")
    assert code == 0, out
    copies = list(handout.glob("佐藤.*.bak.xlsx"))
    assert len(copies) == 1 and sha(copies[0]) == before and copies[0].name in out


# --- outputs never land on the master ---------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["export", "{t}", "--role", "analyst"], ["report", "{t}"], ["mailing-list", "{t}"],
    ["handover", "--from", "佐藤", "--to", "鈴木", "{t}"],
])
def test_outputs_never_land_on_the_master(site: Path, command: list[str]) -> None:
    backups = site / "m" / "backups"
    backups.mkdir(exist_ok=True)
    old = shutil.copy(site / "m" / "master.xlsx", backups / "20240601-000000_master.xlsx")
    (site / "link.xlsx").symlink_to(site / "m" / "master.xlsx")
    watched = [*master_files(site), Path(old)]
    before = hashes(*watched)
    for target in ("m/master.xlsx", "m/../m/master.xlsx", site / "m" / "master.xlsx", "link.xlsx", old):
        for force in ([], ["--force"]):  # --force never overwrites the master
            args = [str(target) if a == "{t}" else a for a in command]
            code, msg = cli(*args, "--master", "m/master.xlsx", *force)
            assert code == 2, (target, msg)
            assert "is the master or one of its files" in one_line(msg)
            assert hashes(*watched) == before
    assert not list(site.rglob("*.bak.xlsx"))


def test_no_output_replaces_any_master_even_without_master_option(site: Path) -> None:
    before = hashes(*master_files(site))
    for args in (["template", "m/master.xlsx"], ["template", "m/master.xlsx", "--force"]):
        code, msg = cli(*args)
        assert code == 2 and "is a master workbook (master.db beside it)" in one_line(msg)
        assert hashes(*master_files(site)) == before


# --- --master must be a master ----------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["merge", "team/suzuki.xlsx"], ["resolve"], ["distribute", "--out", "handout"], ["export-master"],
    ["handover", "--from", "佐藤", "--to", "鈴木", "hand.xlsx"], ["report", "r.xlsx"],
    ["export", "x.xlsx", "--role", "analyst"], ["search", "青空"], ["history", "C-000001"],
])
def test_master_must_be_a_master(site: Path, command: list[str]) -> None:
    staff = site / "team" / "sato.xlsx"
    notes = site / "notes.xlsx"
    notes.write_bytes(b"PK\x03\x04 not really a workbook")
    before = hashes(staff, notes)
    for target, what in ((staff, "is a team workbook, not a master"), (notes, "not an xlcrm master")):
        code, msg = cli(*command, "--master", target)
        assert code == 2 and what in one_line(msg) and target.name in msg, msg
        assert hashes(staff, notes) == before
        assert not target.with_suffix(".db").exists()
    assert not any((site / name).exists() for name in ("handout", "hand.xlsx", "r.xlsx", "x.xlsx"))


def test_first_merge_creates_the_master_folder(site: Path) -> None:
    code, out = cli("merge", "team/", "--master", "顧客/master.xlsx")
    assert code == 0, out
    assert (site / "顧客" / "master.xlsx").exists() and (site / "顧客" / "master.db").exists()


# --- locks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["handover", "--from", "佐藤", "--to", "鈴木", "hand.xlsx"], ["distribute", "--out", "handout"],
    ["merge", "team"], ["resolve"], ["export-master"],
])
def test_commands_writing_the_master_honour_excel_and_the_merge_lock(site: Path, command: list[str]) -> None:
    before = hashes(*master_files(site))
    excel = site / "m" / "~$master.xlsx"
    excel.write_bytes(b"owner")
    code, msg = cli(*command, "--master", "m/master.xlsx")
    assert code == 2 and "open in Excel" in one_line(msg)
    assert hashes(*master_files(site)) == before
    excel.unlink()
    (site / "m" / ".master.xlsx.lock").write_text(
        f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}", "command": "merge", '
        '"started": "2024-06-01T10:00:00"}', encoding="utf-8")
    code, msg = cli(*command, "--master", "m/master.xlsx")
    assert code == 2 and "another xlcrm command" in one_line(msg)
    assert hashes(*master_files(site)) == before
    assert not (site / "hand.xlsx").exists() and not (site / "handout").exists()


def test_a_recorded_third_party_export_honours_the_merge_lock(site: Path) -> None:
    before = hashes(*master_files(site))
    (site / "m" / ".master.xlsx.lock").write_text(
        f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}", "command": "merge", '
        '"started": "2024-06-01T10:00:00"}', encoding="utf-8")
    code, msg = cli("export", "x.xlsx", "--role", "analyst", "--to-third-party", "印刷会社", "--purpose", "DM",
                    "--master", "m/master.xlsx")
    assert code == 2 and "another xlcrm command" in one_line(msg)
    assert hashes(*master_files(site)) == before and not (site / "x.xlsx").exists()
