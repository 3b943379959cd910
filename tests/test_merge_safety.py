"""Killing a merge at any moment leaves the old or the new master, never a broken one.

A real process is killed (SIGKILL, no clean-up code runs) at several moments of a real merge; after
each kill the database must pass SQLite's integrity check and hold either nothing or the complete
result, the workbook must be readable, and finishing the merge afterwards must give exactly the master
an uninterrupted merge gives.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from merge_fixtures import bench_team, dump

from xlcrm.master.run import merge
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.xlsx.reader import read_workbook


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench_team(tmp_path_factory.mktemp("team"), 2, 1500, 4000)


def _customers(db_file: Path) -> int | None:
    if not db_file.exists():
        return None
    conn = sqlite3.connect(db_file)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'customers'").fetchone()
        return conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] if has else 0
    finally:
        conn.close()


def _writers_left(parent: int, marker: str) -> list[int]:
    """Live processes whose parent was ``parent`` (re-parented orphans show PPid 1, so look for the
    command line of this test's merge child, ``marker`` being its master's path, that is still running
    after a grace for the kernel to end it: other tests, and other people's, run the same code)."""
    deadline = time.monotonic() + 5
    while True:
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"xlcrm.store.snapshot" in cmd and marker.encode() in cmd and "State:\tZ" not in status \
                    and int(entry.name) != os.getpid():
                left.append(int(entry.name))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("forked", [False, True], ids=["in-process", "forked-writer"])
def test_kill_at_any_moment_leaves_old_or_new_master(team: Path, tmp_path: Path, forked: bool) -> None:
    """``forked``: the workbook is written by a child process (xlcrm.store.snapshot) while the parent builds
    the search index; killing the parent must take the child along and still leave old or new."""
    ref = tmp_path / "ref" / "master.xlsx"
    ref.parent.mkdir()
    t0 = time.perf_counter()
    merge([team], ref, S)
    full = time.perf_counter() - t0
    expected = dump(ref)
    n_final = len(expected["customers"])
    assert n_final > 1000

    work = tmp_path / "work" / "master.xlsx"
    work.parent.mkdir()
    code = textwrap.dedent(f"""
        from pathlib import Path
        import xlcrm.store.snapshot
        xlcrm.store.snapshot.MIN_ROWS = 0 if {forked} else 10**12
        from xlcrm.master.run import merge
        from xlcrm.schema import DEFAULT_SCHEMA
        merge([Path({str(team)!r})], Path({str(work)!r}), DEFAULT_SCHEMA)
    """)
    # Kill points spread over the whole run, including late ones (writing the workbook, committing).
    for fraction in (0.15, 0.4, 0.6, 0.75, 0.85, 0.95):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
        time.sleep(full * fraction + 0.3)  # + interpreter start-up
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        n = _customers(work.with_suffix(".db"))
        print(f"killed at {fraction}: db customers {n}, workbook {work.exists()}")
        assert n in (None, 0, n_final), f"killed at {fraction}: {n} customers is neither old nor new"
        if work.exists():
            wb = read_workbook(work, S)  # never a broken workbook
            assert len(wb.sheets["customers"].frame) in (0, n_final)
        assert not any(p.suffix == ".xlsx" and p.name.startswith(".") for p in work.parent.iterdir())
        if forked:
            assert not _writers_left(proc.pid, str(work)), "the forked writer outlived the killed merge"
        if n == n_final:
            break
    merge([team], work, S)  # finishing (or re-running) the merge after the kills
    assert dump(work) == expected
    # A first import is built in memory: a kill while its image was written left a temp master.db,
    # which the next merge (holding the lock) removes, like a killed run's temp workbook.
    assert not [p.name for p in work.parent.iterdir() if p.name.startswith(".")]
    assert len(read_workbook(work, S).sheets["customers"].frame) == n_final


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the forked child is Linux-only")
@pytest.mark.parametrize("where", ["memory", "disk"])
def test_killing_the_merge_while_its_child_works_takes_the_child_along(team: Path, tmp_path: Path,
                                                                       where: str) -> None:
    """``memory``: a first import built in memory, whose child builds the index and writes master.db;
    ``disk``: a master database file, whose child writes the workbook from a copy."""
    work = tmp_path / "master.xlsx"
    marker = tmp_path / "child.pid"
    code = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        import xlcrm.store.snapshot, xlcrm.master.run, xlcrm.store.db
        from xlcrm.master import masterbook
        xlcrm.store.snapshot.MIN_ROWS = 0
        def slow(*a, **kw):
            tmp = Path({str(marker)!r} + ".tmp")  # renamed: the test never reads a half-written pid
            tmp.write_text(str(os.getpid()))
            os.replace(tmp, {str(marker)!r})
            time.sleep(60)
        if {where!r} == "memory":
            xlcrm.master.run._search_index = slow
        else:
            xlcrm.store.db.MEMORY_BUILD_MAX_INPUT_BYTES = -1
            masterbook.write_master = slow
        from xlcrm.master.run import merge
        from xlcrm.schema import DEFAULT_SCHEMA
        merge([Path({str(team)!r})], Path({str(work)!r}), DEFAULT_SCHEMA)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the merge never reached the forked child"
    child = int(marker.read_text())
    assert child != proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # the child gets SIGKILL from the kernel when its parent dies
        try:
            state = Path(f"/proc/{child}/status").read_text()
        except OSError:
            break
        if "State:\tZ" in state:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the forked child outlived the killed merge")
    assert _customers(work.with_suffix(".db")) in (None, 0)  # the old (empty) master
    assert not work.exists()
