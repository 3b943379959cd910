"""Faults of the machine: a read-only file, a full disk, a workbook that cannot be written, a killed
merge.  Each is one line (exit 2) with nothing else changed — the database never commits ahead of a
workbook that cannot be written, or the line says so and how to rebuild it — and a killed merge
leaves no worker process and no temp file behind."""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from merge_fixtures import book, customer

from xlcrm.store import db


def _no_root_override() -> None:
    """Root ignores permission bits; without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH in the bounding set
    the command's process (root after exec too) meets them like anybody else."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def _cli(*args: str, cwd: Path, preexec: Callable[[], None] | None = None,
         code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``xlcrm ARGS`` in a subprocess; ``code`` runs first in it (an audit hook injecting a fault)."""
    cmd = [sys.executable, "-c", (code or "") + "\nimport runpy, sys\nsys.argv = ['xlcrm', *sys.argv[1:]]\n"
           "runpy.run_module('xlcrm', run_name='__main__')", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300, preexec_fn=preexec)


def _state(folder: Path) -> dict[str, str]:
    """Every file under the master's folder (backups aside) with its hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "backups" not in p.parts}


@pytest.fixture
def master(tmp_path: Path) -> Path:
    book(tmp_path / "team" / "佐藤.xlsx", {"customers": [customer(f"青葉{i}商事株式会社", phone=f"03-1111-{i:04d}")
                                                       for i in range(40)]}, owner="佐藤")
    book(tmp_path / "more" / "鈴木.xlsx", {"customers": [customer(f"緑{i}工業株式会社", phone=f"06-2222-{i:04d}",
                                                                 notes="x" * 400) for i in range(400)]},
         owner="鈴木")
    m = tmp_path / "m" / "master.xlsx"
    m.parent.mkdir()
    proc = _cli("merge", "team", "--master", str(m), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return m


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("which", ["master.db", "master.xlsx"])
def test_a_read_only_master_file_is_refused_before_any_work(master: Path, which: str) -> None:
    before = _state(master.parent)
    (master.parent / which).chmod(0o444)
    line = _one_line(_cli("merge", "more", "--master", str(master), cwd=master.parent.parent,
                          preexec=_no_root_override))
    assert line == (f"xlcrm: {master.parent / which}: the file is read-only; make it writable (file properties "
                    "/ chmod u+w) and run again (nothing was changed)")
    assert _state(master.parent) == before
    assert not (master.parent / "backups").exists() or len(list((master.parent / "backups").iterdir())) == 0


def test_a_full_disk_during_a_re_merge_changes_nothing(master: Path) -> None:
    before = _state(master.parent)
    limit = db.db_path_for(master).stat().st_size + 16 * 1024  # the database cannot grow much

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    line = _one_line(_cli("merge", "more", "--master", str(master), cwd=master.parent.parent, preexec=small_disk))
    assert "nothing was changed" in line and ("disk" in line or "space" in line), line
    assert _state(master.parent) == before


def _everything(folder: Path) -> dict[str, str]:
    """Every file under the master's folder, backups and error workbooks included, with its hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_disk_full_at_the_commit_or_the_backup_leaves_no_error_workbook_and_no_backup(master: Path) -> None:
    # An input with a rejected row: its error workbook is written before the database grows.
    book(master.parent.parent / "bad" / "高橋.xlsx",
         {"customers": [customer(f"白樺{i}物産株式会社", phone=f"011-333-{i:04d}", notes="y" * 400)
                        for i in range(300)] + [customer("", phone="03-0000-0000")]}, owner="高橋")
    before = _everything(master.parent)
    size = db.db_path_for(master).stat().st_size
    for limit in (size + 16 * 1024, size // 2):  # the database cannot grow much; the backup cannot be copied

        def small_disk(limit: int = limit) -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        line = _one_line(_cli("merge", "bad", "--master", str(master), cwd=master.parent.parent,
                              preexec=small_disk))
        assert ("nothing was changed" in line or "cannot write a backup" in line) and \
            ("disk" in line or "space" in line or "large" in line), line
        assert _everything(master.parent) == before


# An audit hook makes the one file fail: the master workbook's temp file (written before the commit)
# or its replacing master.xlsx (the last step, after the commit).
_NO_SPACE_FOR_WORKBOOK = """
import errno, os, sys
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]).startswith(".master.xlsx.") \\
            and isinstance(args[1], str) and "w" in args[1]:
        raise OSError(errno.ENOSPC, "No space left on device", args[0])
sys.addaudithook(hook)
"""
_FLUSH_FAILS = """
import errno, os, sys
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]).startswith(".master.xlsx.") \
            and isinstance(args[1], str) and "r" in args[1]:
        raise OSError(errno.EIO, "Input/output error", args[0])
sys.addaudithook(hook)
"""
_MASTER_NOT_REPLACEABLE = """
import errno, os, sys
def hook(event, args):
    if event == "os.rename" and os.path.basename(str(args[1])) == "master.xlsx":
        raise PermissionError(errno.EACCES, "Permission denied", str(args[1]))
sys.addaudithook(hook)
"""


def test_the_database_never_commits_ahead_of_a_workbook_that_cannot_be_written(master: Path) -> None:
    before = _state(master.parent)
    line = _one_line(_cli("merge", "more", "--master", str(master), cwd=master.parent.parent,
                          code=_NO_SPACE_FOR_WORKBOOK))
    assert "No space left on device" in line, line
    assert _state(master.parent) == before  # rolled back: the database did not move

    # The complete workbook cannot be flushed to the disk (reopened for fsync): still before the commit.
    line = _one_line(_cli("merge", "more", "--master", str(master), cwd=master.parent.parent,
                          code=_FLUSH_FAILS))
    assert "Input/output error" in line, line
    assert _state(master.parent) == before

    # The last step fails after the commit: the line says so and how to rebuild the workbook.
    line = _one_line(_cli("merge", "more", "--master", str(master), cwd=master.parent.parent,
                          code=_MASTER_NOT_REPLACEABLE))
    assert "the database was updated" in line and "xlcrm export-master" in line, line
    assert _state(master.parent)["master.xlsx"] == before["master.xlsx"]
    assert not list(master.parent.glob(".master.xlsx.*.tmp"))
    proc = _cli("export-master", "--master", str(master), cwd=master.parent.parent)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("merge", "more", "--master", str(master), cwd=master.parent.parent)  # nothing new, not stale
    assert proc.returncode == 0 and "stale" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: its parent (init) has not reaped it yet
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ps") is None,
                    reason="worker processes are forked and watched through /proc on Linux only")
def test_a_killed_merge_leaves_no_worker_and_no_temp_file(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rng = random.Random(5)
    first = book(team / "a.xlsx", {"customers": [customer(f"青葉{i}商事株式会社", phone=f"03-1111-{i:04d}",
                                                          notes=rng.randbytes(150).hex())
                                                 for i in range(5000)]}, owner="佐藤")
    for name in ("b", "c"):  # inputs this large (2 MB together) are validated by worker processes
        shutil.copy(first, team / f"{name}.xlsx")
    assert sum(p.stat().st_size for p in team.iterdir()) >= 2_000_000
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    for extra in ([], ["--dry-run"]):
        proc = subprocess.Popen([sys.executable, "-m", "xlcrm", "merge", str(team), "--master", str(master),
                                 *extra], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        workers: list[int] = []
        try:
            deadline = time.monotonic() + 120
            while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                workers = _children(proc.pid)
            assert len(workers) == 2, "the merge did not start its worker processes"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [w for w in workers if _alive(w)]
        for w in alive:  # (a failing run must not leave them either)
            os.kill(w, signal.SIGKILL)
        assert not alive, "worker processes outlived the killed merge"
        if not extra:
            assert list(tmpdir.iterdir()) == []
    # What the merge left beside the master (its lock, the spool of validated inputs) and the dry run
    # in the temp folder (which it may not write beside the master) the next run removes.
    small = book(tmp_path / "small" / "s.xlsx", {"customers": [customer("小さな商店")]}, owner="佐藤")
    done = subprocess.run([sys.executable, "-m", "xlcrm", "merge", str(small), "--master", str(master)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(tmpdir.iterdir()) == []
    assert sorted(p.name for p in master.parent.iterdir()) == ["backups", "master.db", "master.xlsx"] or \
        sorted(p.name for p in master.parent.iterdir()) == ["master.db", "master.xlsx"]


def test_a_full_disk_while_writing_a_copy_is_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    book(tmp_path / "佐藤.xlsx", {"customers": [customer(f"青葉{i}商事株式会社", phone="03-1111-000")
                                               for i in range(30)]}, owner="佐藤")

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = _cli("validate", "佐藤.xlsx", "--annotate", "checked", "--fix", "fixed", cwd=tmp_path, preexec=small_disk)
    line = _one_line(proc)
    assert "cannot write" in line and "checked" in line and "File too large" in line, line
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["佐藤.xlsx"]


def test_a_refused_or_failed_handover_or_export_master_keeps_no_backup(master: Path) -> None:
    before = _everything(master.parent)
    line = _one_line(_cli("handover", "--master", str(master), "--from", "佐藤", "--to", "誰か",
                          cwd=master.parent.parent))
    assert "--new-owner" in line, line
    assert _everything(master.parent) == before

    for command in (["export-master"], ["handover", "--from", "佐藤", "--to", "鈴木", "--new-owner"]):
        line = _one_line(_cli(*command, "--master", str(master), cwd=master.parent.parent,
                              code=_NO_SPACE_FOR_WORKBOOK))
        assert "No space left on device" in line, line
        assert _everything(master.parent) == before, command

    left = master.parent / ".引き継ぎ_鈴木.xlsx.k1ll3d00.tmp"  # what a killed handover leaves: the next removes it
    left.write_bytes(b"PK")
    proc = _cli("handover", "--from", "佐藤", "--to", "鈴木", "--new-owner", "--master", str(master),
                cwd=master.parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert not left.exists() and (master.parent / "引き継ぎ_鈴木.xlsx").is_file()


_NO_SPACE_FOR_SUZUKI = """
import errno, os, sys
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and "鈴木" in os.path.basename(args[0]) \\
            and isinstance(args[1], str) and "w" in args[1]:
        raise OSError(errno.ENOSPC, "No space left on device", args[0])
sys.addaudithook(hook)
"""


def test_a_distribute_that_fails_half_way_leaves_no_handout(master: Path) -> None:
    assert _cli("merge", "more", "--master", str(master), cwd=master.parent.parent).returncode == 0
    out = master.parent.parent / "handouts"
    before = _everything(master.parent)
    # 佐藤's handout is written first; 鈴木's meets a full disk.
    line = _one_line(_cli("distribute", "--master", str(master), "--out", str(out), cwd=master.parent.parent,
                          code=_NO_SPACE_FOR_SUZUKI))
    assert line == f"xlcrm: {out / '鈴木.xlsx'}: cannot write the workbook: No space left on device; check free " \
        "space and permissions", line
    assert _everything(master.parent) == before
    assert list(out.iterdir()) == []
    (out / ".佐藤.xlsx.k1ll3d00.tmp").write_bytes(b"PK")  # what a killed run leaves: the next one removes it
    proc = _cli("distribute", "--master", str(master), "--out", str(out), cwd=master.parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["佐藤.xlsx", "鈴木.xlsx"]
