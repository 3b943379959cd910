"""`xlcrm addin build` / `xlcrm addin install` and the xlcrm.conf file VBA and Python share.

Windows and macOS are simulated with a fake home folder: the tests check where files go and what the
settings file says.  Whether Excel then loads the add-in is on the manual checklist (docs/addin.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_master import build_master
from typer.testing import CliRunner

from xlcrm.errors import XlcrmError
from xlcrm.excel import build
from xlcrm.excel.conf import KEY_MASTER, KEY_SCHEMA, lookup, read_conf, user_conf_path, write_conf
from xlcrm.excel.install import ADDIN_NAME, addin_dir, install_addin, plan_install


@pytest.fixture
def master(tmp_path: Path) -> Path:
    (tmp_path / "share").mkdir()
    return build_master(tmp_path / "share", index=False)


def test_conf_format_is_what_vba_write_produces_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "xlcrm.conf"
    write_conf(path, {"INTERPRETER_WIN": r"C:\Users\山田\py\python.exe", "xlcrm_master": r"\\srv\顧客\master.xlsx"},
               encoding="cp932")
    raw = path.read_bytes()
    assert raw.startswith(b'"INTERPRETER_WIN","C:\\Users\\') and raw.endswith(b'"\r\n')
    assert "山田".encode("cp932") in raw  # ANSI code page, as VBA's Input # reads it on Japanese Windows
    write_conf(path, {KEY_MASTER: r"D:\master.xlsx"}, encoding="cp932")  # merge: other keys stay
    conf = read_conf(path, encoding="cp932")
    assert conf == {"INTERPRETER_WIN": r"C:\Users\山田\py\python.exe", KEY_MASTER: r"D:\master.xlsx"}
    with pytest.raises(XlcrmError, match="quotes"):
        write_conf(path, {KEY_MASTER: 'a"b'})


def test_directory_conf_wins_over_user_conf(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_conf(user_conf_path("linux", home), {KEY_MASTER: "/user/master.xlsx"})
    book = tmp_path / "team" / "sato.xlsx"
    book.parent.mkdir()
    assert lookup(KEY_MASTER, book, platform="linux", home=home) == "/user/master.xlsx"
    write_conf(book.parent / "xlcrm.conf", {KEY_MASTER: "/team/master.xlsx"})
    assert lookup(KEY_MASTER, book, platform="linux", home=home) == "/team/master.xlsx"


def test_windows_plan_uses_xlstart_and_the_vba_config_path(tmp_path: Path, master: Path) -> None:
    home = tmp_path / "Users" / "sato"
    plan = plan_install(master=master, platform="win32", home=home, interpreter=r"C:\Python312\python.exe")
    assert plan.addin == home / "AppData" / "Roaming" / "Microsoft" / "Excel" / "XLSTART" / ADDIN_NAME
    assert plan.conf_path == home / ".xlcrm" / "xlcrm.conf"  # %USERPROFILE%\.xlcrm\xlcrm.conf, like the VBA
    assert plan.conf == {"INTERPRETER_WIN": r"C:\Python312\python.exe", KEY_MASTER: str(master.resolve())}
    assert plan.applescript is None


def test_mac_plan_uses_excel_startup_folder_and_sandbox_home(tmp_path: Path, master: Path) -> None:
    home = tmp_path / "Users" / "sato"
    plan = plan_install(master=master, platform="darwin", home=home, interpreter="/usr/local/bin/python3")
    assert plan.addin.parent == home / "Library/Group Containers/UBF8T346G9.Office/User Content.localized" \
        "/Startup.localized/Excel"
    assert plan.conf_path == home / "Library/Containers/com.microsoft.Excel/Data/xlcrm.conf"
    assert plan.conf["INTERPRETER_MAC"] == "/usr/local/bin/python3"
    try:
        import xlwings
    except ImportError:
        assert plan.applescript is None and any("xlwings" in w for w in plan.warnings)
    else:
        assert plan.applescript is not None
        assert plan.applescript[1] == home / "Library/Application Scripts/com.microsoft.Excel" / \
            f"xlwings-{build.XLWINGS_VERSION}.applescript"
        assert plan.applescript[0].name == f"xlwings-{xlwings.__version__}.applescript"


def test_install_copies_the_addin_and_writes_conf(tmp_path: Path, master: Path) -> None:
    home = tmp_path / "home"
    toml = tmp_path / "share" / "xlcrm.toml"
    toml.write_text("[settings]\n", encoding="utf-8")
    plan = install_addin(master=master, config=toml, platform="darwin", home=home, interpreter="/opt/py")
    assert plan.done
    assert plan.addin.read_bytes() == build.SHIPPED.read_bytes()
    conf = read_conf(plan.conf_path)
    assert conf["INTERPRETER_MAC"] == "/opt/py"
    assert conf[KEY_MASTER] == str(master.resolve()) and conf[KEY_SCHEMA] == str(toml.resolve())
    if plan.applescript is not None:
        assert plan.applescript[1].read_bytes() == plan.applescript[0].read_bytes()


def test_dry_run_changes_nothing(tmp_path: Path, master: Path) -> None:
    home = tmp_path / "home"
    plan = install_addin(master=master, platform="win32", home=home, dry_run=True)
    assert not plan.done and not home.exists()
    assert plan.describe()[0].endswith(str(plan.addin))


def test_refusals_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match="no master database"):
        plan_install(master=tmp_path / "nowhere" / "master.xlsx", platform="win32", home=tmp_path)
    with pytest.raises(XlcrmError, match="Windows and macOS"):
        addin_dir("linux", tmp_path)


def test_cli_build_and_install(tmp_path: Path, master: Path) -> None:
    from xlcrm.cli import _register, app

    _register()
    runner = CliRunner()
    out = tmp_path / "out.xlam"
    result = runner.invoke(app, ["addin", "build", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == build.SHIPPED.read_bytes()

    dest = tmp_path / "dest"
    result = runner.invoke(app, ["addin", "install", "--dest", str(dest), "--master", str(master), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would copy" in result.output and not dest.exists()

    result = runner.invoke(app, ["addin", "install", "--dest", str(dest), "--master", str(tmp_path / "x.xlsx")])
    assert result.exit_code == 2
    assert "no master database" in result.output and "Traceback" not in result.output


def test_install_without_xlwings_says_how_to_add_the_extra(tmp_path: Path, master: Path) -> None:
    """The hint names the folder and the admin's wheel, never a package index (xlcrm is on none)."""
    code = ("import sys; sys.modules['xlwings'] = None; from xlcrm.cli import main; sys.argv = sys.argv[:1] + "
            f"['addin', 'install', '--dest', {str(tmp_path / 'dest')!r}, '--master', {str(master)!r}, '--dry-run']; "
            "main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "xlwings is not installed" in out
    assert 'pip install ".[excel]"' in out and ".whl>[excel]" in out and "xlcrm[excel]" not in out


def test_build_refuses_a_file_it_did_not_write_and_force_keeps_a_copy(tmp_path: Path) -> None:
    """`addin build OUT` over someone's own add-in: one line, exit 2, untouched; --force keeps a copy."""
    import hashlib

    theirs = tmp_path / "xlcrm.xlam"
    theirs.write_bytes(b"PK\x03\x04 an add-in someone customised by hand")
    before = hashlib.sha256(theirs.read_bytes()).hexdigest()
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "addin", "build", str(theirs)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and "xlcrm.xlam" in proc.stderr and "--force" in proc.stderr
    assert hashlib.sha256(theirs.read_bytes()).hexdigest() == before and len(list(tmp_path.iterdir())) == 1
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "addin", "build", str(theirs), "--force"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    [copy] = tmp_path.glob("xlcrm.*.bak.xlam")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before and copy.name in proc.stderr
    assert theirs.read_bytes() == build.SHIPPED.read_bytes()
    # Built again over its own build (the same bytes): no --force needed, no further copy.
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "addin", "build", str(theirs)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and len(list(tmp_path.glob("*.bak.xlam"))) == 1, proc.stderr
