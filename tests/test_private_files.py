"""Nothing plaintext left behind, and personal data readable by its owner only.

``merge --password`` never has a plain copy of the master (or of an encrypted input's error workbook)
on disk, not even for the moment a kill would leave behind; master.db, the backups, error workbooks
and the master workbook are created 0600 (their folders 0700) unless xlcrm.toml says otherwise.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from merge_fixtures import book, customer

from xlcrm.xlsx.crypto import encrypt_bytes

PW = "秘密-pass-1"

#: Runs xlcrm with an audit hook: whenever any file is opened for writing, every file under the
#: watched folders that is a plain zip (an unencrypted workbook) at that moment is recorded.
_WATCH = r"""
import json, os, runpy, sys
report, watched = sys.argv[1], json.loads(sys.argv[2])
found = set()
busy = [False]

def scan():
    for root in watched:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    with open(p, "rb") as fh:
                        if fh.read(4) == b"PK\x03\x04":
                            found.add(os.path.relpath(p, root))
                except OSError:
                    pass

def hook(event, args):
    if event != "open" or busy[0] or os.getpid() != parent:
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
    if writing and isinstance(path, (str, bytes, os.PathLike)):
        busy[0] = True
        try:
            scan()
        finally:
            busy[0] = False

parent = os.getpid()
sys.addaudithook(hook)
sys.argv = ["xlcrm", *sys.argv[3:]]
try:
    runpy.run_module("xlcrm", run_name="__main__")
finally:
    scan()
    with open(report, "w") as fh:
        json.dump(sorted(found), fh)
"""


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180, env=env)


def _encrypted_team(tmp_path: Path) -> Path:
    team = tmp_path / "team"
    for owner, n in (("佐藤", 3), ("鈴木", 2)):
        path = book(team / f"{owner}.xlsx", {"customers": [customer(f"{owner}商事{i}株式会社") for i in range(n)]
                                             + [customer(f"{owner}エラー", phone="abc")]}, owner=owner)
        path.write_bytes(encrypt_bytes(path.read_bytes(), PW))
    return team


def test_merge_with_a_password_never_has_a_plain_workbook_on_disk(tmp_path: Path) -> None:
    team = _encrypted_team(tmp_path)
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    report = tmp_path / "plain.json"
    for _ in range(2):  # the first import and a re-merge (backups, error workbooks, the master)
        proc = subprocess.run([sys.executable, "-c", _WATCH, str(report),
                               json.dumps([str(master.parent), str(tmpdir)]), "merge", str(team), "--master",
                               str(master), "--password", PW], capture_output=True, text=True, cwd=tmp_path,
                              timeout=180, env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(report.read_text()) == []
    errors = sorted(master.parent.glob("errors/*/*.xlsx"))
    assert len(errors) == 4 and all(p.read_bytes()[:4] != b"PK\x03\x04" for p in errors)
    assert master.read_bytes()[:4] != b"PK\x03\x04"
    assert list(tmpdir.iterdir()) == []


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_personal_data_is_created_for_its_owner_only_unless_the_firm_says_otherwise(tmp_path: Path) -> None:
    team = tmp_path / "team"
    book(team / "佐藤.xlsx", {"customers": [customer("青葉商事株式会社"), customer("エラー", phone="abc")]},
         owner="佐藤")
    old = os.umask(0o022)
    try:
        master = tmp_path / "m" / "master.xlsx"
        master.parent.mkdir()
        book(tmp_path / "later" / "鈴木.xlsx", {"customers": [customer("緑山工業株式会社")]}, owner="鈴木")
        for folder in ("team", "later"):  # the second run changes the master: its backup is kept
            assert _cli("merge", folder, "--master", str(master), cwd=tmp_path).returncode == 0
        made = [master, master.with_suffix(".db"), *master.parent.glob("backups/*"),
                *master.parent.glob("errors/*/*")]
        assert len(made) >= 5
        assert {p.name: _mode(p) for p in made} == {p.name: 0o600 for p in made}
        dirs = [master.parent / "backups", master.parent / "errors", *master.parent.glob("errors/*/")]
        assert {str(d): _mode(d) for d in dirs} == {str(d): 0o700 for d in dirs}
        out = tmp_path / "analyst.xlsx"
        assert _cli("export", str(out), "--master", str(master), "--role", "analyst", cwd=tmp_path).returncode == 0
        assert _mode(out) == 0o600
        blank = tmp_path / "blank.xlsx"
        assert _cli("template", str(blank), cwd=tmp_path).returncode == 0
        assert _mode(blank) == 0o644  # no personal data in an empty template

        shared = tmp_path / "shared"
        shared.mkdir()
        (shared / "xlcrm.toml").write_text("[settings]\nprivate_files = false\n", encoding="utf-8")
        (shared / "team").mkdir()
        (shared / "team" / "佐藤.xlsx").write_bytes((team / "佐藤.xlsx").read_bytes())
        m2 = shared / "m" / "master.xlsx"
        m2.parent.mkdir()
        assert _cli("merge", "team", "--master", str(m2), cwd=shared).returncode == 0
        assert _mode(m2) == 0o644 and _mode(m2.with_suffix(".db")) == 0o644

        (shared / "xlcrm.toml").write_text("[settings]\nprivate_files = \"no\"\n", encoding="utf-8")
        proc = _cli("merge", "team", "--master", str(m2), cwd=shared)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            "xlcrm: xlcrm.toml: [settings] private_files must be true or false, not 'no'"]
    finally:
        os.umask(old)
