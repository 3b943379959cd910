"""The master workbook written by a forked child from a copy of the open transaction (xlcrm.store.snapshot).

The child must see exactly what the merge's connection sees (uncommitted rows included), its failures
must come back as the same one-line errors and roll the merge back, and a merge written that way must
give the same master as one written in-process.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from merge_fixtures import bench_team, dump
from python_calamine import CalamineWorkbook

from xlcrm.errors import XlcrmError
from xlcrm.master import masterbook
from xlcrm.master.run import merge
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import snapshot

pytestmark = pytest.mark.skipif(not snapshot.available(), reason="forking the writer is Linux-only")

NOW = dt.datetime(2024, 6, 1, 9, 30)


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    return conn


def test_child_sees_the_uncommitted_transaction(tmp_path: Path) -> None:
    conn = _open(tmp_path / "a.db")
    out = tmp_path / "out.txt"

    def job(c: sqlite3.Connection) -> None:
        out.write_text(str(c.execute("SELECT COUNT(*), SUM(x) FROM t").fetchone()))

    import gc

    snapshot.ForkedJob(conn, job).wait()
    assert out.read_text() == str((1000, sum(range(1000))))
    assert gc.get_freeze_count() == 0  # objects frozen for the fork are collectable again
    assert conn.in_transaction  # the parent's transaction is untouched and still open
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_child_error_comes_back_with_its_message(tmp_path: Path) -> None:
    conn = _open(tmp_path / "a.db")

    def refuse(_c: sqlite3.Connection) -> None:
        raise XlcrmError("cannot write here", path="x/master.xlsx")

    with pytest.raises(XlcrmError, match=r"^x/master.xlsx: cannot write here$") as info:
        snapshot.ForkedJob(conn, refuse).wait()
    assert info.value.path == "x/master.xlsx"

    def broken(_c: sqlite3.Connection) -> None:
        raise ValueError("bad value in row 7")

    with pytest.raises(ValueError, match="bad value in row 7"):
        snapshot.ForkedJob(conn, broken).wait()


def test_an_error_that_cannot_be_pickled_comes_back_as_text(tmp_path: Path) -> None:
    conn = _open(tmp_path / "a.db")

    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    def job(_c: sqlite3.Connection) -> None:
        raise Local("the local failure")

    with pytest.raises(XlcrmError, match="Local: the local failure"):
        snapshot.ForkedJob(conn, job).wait()


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_child_that_dies_is_an_error_not_success(tmp_path: Path, how: str) -> None:
    conn = _open(tmp_path / "a.db")

    def job(_c: sqlite3.Connection) -> None:
        if how == "exit":
            os._exit(0)  # gone without saying "ok": not a success either
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(XlcrmError, match="ended unexpectedly"):
        snapshot.ForkedJob(conn, job).wait()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench_team(tmp_path_factory.mktemp("team"), 2, 800, 2000)


def _sheets(path: Path) -> dict[str, list[list[object]]]:
    wb = CalamineWorkbook.from_path(str(path))
    here = str(path.parent)  # 取込ログ names the error workbooks beside each master

    def cell(v: object) -> object:
        return v.replace(here, "<master folder>") if isinstance(v, str) else v

    # The meta sheet holds the master's own random id; everything else must be the same.
    return {name: [[cell(v) for v in row] for row in wb.get_sheet_by_name(name).to_python()]
            for name in wb.sheet_names if name != "_xlcrm"}


def test_forked_write_gives_the_same_master(team: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = snapshot.ForkedJob.__init__

    def counting(self: snapshot.ForkedJob, *a: object, **kw: object) -> None:
        calls.append("fork")
        real(self, *a, **kw)  # type: ignore[arg-type]

    masters = {}
    for mode in ("in_process", "forked"):
        if mode == "forked":
            monkeypatch.setattr(snapshot, "MIN_ROWS", 0)
            monkeypatch.setattr(snapshot.ForkedJob, "__init__", counting)
        master = tmp_path / mode / "master.xlsx"
        master.parent.mkdir()
        merge([team], master, S, now=NOW, today=NOW.date())
        masters[mode] = master
    assert calls == ["fork"]  # the first merge of an empty master builds the whole index: forked
    assert dump(masters["forked"]) == dump(masters["in_process"])
    a, b = _sheets(masters["in_process"]), _sheets(masters["forked"])
    assert a.keys() == b.keys() and len(a["顧客"]) > 700  # duplicates linked, errors rejected
    for name in a:
        assert a[name] == b[name], name
    # The search index built meanwhile is committed with the merge.
    conn = sqlite3.connect(masters["forked"].with_suffix(".db"))
    try:
        n = conn.execute("SELECT value FROM meta WHERE key = 'search_index_rows'").fetchone()[0]
        assert int(n) >= len(a["顧客"]) - 1
    finally:
        conn.close()


def test_re_merge_with_a_small_index_update_is_not_forked(team: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    master = tmp_path / "master.xlsx"
    merge([team], master, S, now=NOW, today=NOW.date())
    monkeypatch.setattr(snapshot, "MIN_ROWS", 0)

    def no_fork(*_a: object, **_kw: object) -> None:
        raise AssertionError("forked for an incremental index update")

    monkeypatch.setattr(snapshot.ForkedJob, "__init__", no_fork)
    merge([team], master, S, now=NOW + dt.timedelta(days=1), today=NOW.date())  # nothing changed


def test_a_failing_forked_write_rolls_the_merge_back(team: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "MIN_ROWS", 0)

    def full_disk(*_a: object, **_kw: object) -> None:
        raise XlcrmError("no space left on the disk; free some space and run the merge again")

    monkeypatch.setattr(masterbook, "write_master", full_disk)  # inherited by the forked child
    master = tmp_path / "master.xlsx"
    with pytest.raises(XlcrmError, match="no space left"):
        merge([team], master, S, now=NOW, today=NOW.date())
    assert not master.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
    conn = sqlite3.connect(master.with_suffix(".db"))
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'customers'").fetchone()
        assert not has or conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 0
    finally:
        conn.close()


def test_when_fork_fails_the_workbook_is_written_in_process(team: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    monkeypatch.setattr(snapshot, "MIN_ROWS", 0)

    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    master = tmp_path / "master.xlsx"
    report = merge([team], master, S, now=NOW, today=NOW.date())
    assert report.records_created["customers"] > 700
    assert len(_sheets(master)["顧客"]) == report.records_created["customers"] + 1  # header + every record
    assert gc.get_freeze_count() == 0


def test_kill_stops_the_child_and_closes_its_pipe(tmp_path: Path) -> None:
    import gc
    import time

    conn = _open(tmp_path / "a.db")

    def slow(_c: sqlite3.Connection) -> None:
        time.sleep(60)

    job = snapshot.ForkedJob(conn, slow)
    pid, fd = job.pid, job._read_fd
    assert pid is not None
    job.kill()
    assert job.pid is None and gc.get_freeze_count() == 0
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left
    job.wait()  # harmless after kill
