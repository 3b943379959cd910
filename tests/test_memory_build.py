"""A first import builds the master database in memory and writes it whole at the commit.

What must hold: the file is the same database a merge on disk builds (every table, the search index
too), an ordinary rollback-journal SQLite file; a failure leaves no master.db and no temp file; the
replace of master.db is the commit (a refused replace changes nothing); temp files a killed run left
behind are removed by the next merge; and only a master that does not exist yet, from inputs of a
bounded size, is built this way.  Also here: the WITHOUT ROWID layout of origins and bases_* that came
with it, against a master.db made before.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from pathlib import Path

import pytest
from merge_fixtures import bench_team, dump, history

from xlcrm.errors import LockedError, XlcrmError
from xlcrm.master import masterbook
from xlcrm.master.run import _build_in_memory, merge
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.store import db, snapshot

NOW = dt.datetime(2024, 6, 1, 9, 30)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench_team(tmp_path_factory.mktemp("team"), 2, 600, 1500)


def _tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows (the master's random id, the workbook's file stamp and the clock aside)."""
    conn = sqlite3.connect(path)
    try:
        # A contentless FTS5 table (the search index's pairs) cannot be read: its shadow tables are.
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite%' AND sql NOT LIKE '%content=''''%' "
                                            "ORDER BY name")]
        out = {}
        for name in names:
            rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
            if name == "meta":
                rows = [r for r in rows if r[0] not in ("master_uuid", "master_stat", "master_digest")]
            if name == "runs":  # (run_id, started, finished, ...): finished is the real clock's
                rows = [(*r[:2], *r[3:]) for r in rows]
            if name == "import_log":  # names the error workbook in each master's own folder
                rows = [tuple(str(v).replace(str(path.parent), "<dir>") if isinstance(v, str) else v
                              for v in r) for r in rows]
            out[name] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def test_first_merge_in_memory_gives_the_database_a_merge_on_disk_gives(
        team: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = db.memory_master

    def counting() -> sqlite3.Connection:
        built.append("memory")
        return real()

    monkeypatch.setattr(db, "memory_master", counting)
    masters = {}
    modes = ["memory", "memory-forked", "disk"] if snapshot.available() else ["memory", "disk"]
    for mode in modes:
        # memory-forked: a forked child builds the index into its copy and writes master.db
        monkeypatch.setattr(snapshot, "MIN_ROWS", 0 if mode == "memory-forked" else 10**12)
        if mode == "disk":
            monkeypatch.setattr(db, "MEMORY_BUILD_MAX_INPUT_BYTES", -1)
        master = tmp_path / mode / "master.xlsx"
        master.parent.mkdir()
        report = merge([team], master, S, now=NOW, today=NOW.date())
        assert report.records_created["customers"] > 500
        assert ("master_db" in report.timings) == (mode != "disk")
        masters[mode] = master
    assert built == ["memory"] * (len(modes) - 1)  # the forced one was built on disk

    disk = _tables(masters["disk"].with_suffix(".db"))
    assert any(k.startswith("search") for k in disk)
    for mode in modes[:-1]:
        got = _tables(masters[mode].with_suffix(".db"))
        assert got.keys() == disk.keys(), mode
        for name in got:  # every table, the search index (built in the child or here) included
            assert got[name] == disk[name], (mode, name)
        assert dump(masters[mode]) == dump(masters["disk"])
        assert history(masters[mode]) == history(masters["disk"])  # same ids, same order
    memory = masters["memory"].with_suffix(".db")

    conn = sqlite3.connect(memory)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not WAL, not memory
        stat = conn.execute("SELECT value FROM meta WHERE key = 'master_stat'").fetchone()[0]
        assert stat == masterbook._stat(masters["memory"])  # the workbook's stamp reached the file
    finally:
        conn.close()
    assert not [p for p in memory.parent.iterdir() if p.name.startswith(".")]  # no temp file left

    # Later merges work on the file like always.
    again = merge([team], masters["memory"], S, now=NOW + dt.timedelta(days=1), today=NOW.date())
    assert again.history_rows == 0 and not again.records_created


def test_the_forked_writer_reads_the_memory_database_without_a_copy(tmp_path: Path) -> None:
    if not snapshot.available():
        pytest.skip("forking the writer is Linux-only")
    conn = db.memory_master()
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    out = tmp_path / "out.txt"

    def job(c: sqlite3.Connection) -> None:
        out.write_text(str(c.execute("SELECT COUNT(*), SUM(x) FROM t").fetchone()[:]))

    forked = snapshot.ForkedJob(conn, job)
    assert not forked.copied  # the child reads the pages it inherited
    conn.execute("DELETE FROM t")  # the parent goes on: the child's pages are its own
    forked.wait()
    assert out.read_text() == str((1000, sum(range(1000))))
    on_disk = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    on_disk.execute("CREATE TABLE t (x)")
    on_disk.execute("BEGIN IMMEDIATE")
    other = snapshot.ForkedJob(on_disk, lambda c: None)
    assert other.copied  # a database file is never shared with the child
    other.wait()
    on_disk.execute("ROLLBACK")


def test_a_failed_first_merge_leaves_no_database_and_no_temp_file(team: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*_a: object, **_kw: object) -> None:
        raise XlcrmError("no space left on the disk; free some space and run the merge again")

    monkeypatch.setattr(masterbook, "write_master", full_disk)  # in-process and in the forked child
    master = tmp_path / "master.xlsx"
    with pytest.raises(XlcrmError, match="no space left"):
        merge([team], master, S, now=NOW, today=NOW.date())
    # No master.db, no workbook, no temp file, and no error workbooks of a run that did not happen.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_refused_replace_of_the_database_changes_nothing(team: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The replace of master.db is the commit: refused (Windows: the file is open elsewhere), the
    error must not claim the database was updated, and no workbook may appear."""
    real = os.replace

    def refuse_db(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if str(dst).endswith("master.db"):
            raise PermissionError(13, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_db)
    master = tmp_path / "master.xlsx"
    with pytest.raises(LockedError) as info:
        merge([team], master, S, now=NOW, today=NOW.date())
    assert "open in another program" in str(info.value)
    assert "database was updated" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_killed_runs_temp_files_are_removed_by_the_next_merge(team: Path, tmp_path: Path) -> None:
    master = tmp_path / "master.xlsx"
    left = [tmp_path / ".master.db.k2j4x.tmp", tmp_path / ".master.xlsx.p9q1z.tmp"]
    keep = [tmp_path / ".other.xlsx.a1b2c.tmp", tmp_path / "notes.tmp"]
    for p in [*left, *keep]:
        p.write_bytes(b"x" * 100)
    merge([team], master, S, now=NOW, today=NOW.date())
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in keep)  # not this master's


def test_only_a_new_master_from_bounded_inputs_is_built_in_memory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = [tmp_path / "a.xlsx", tmp_path / "b.xlsx"]
    for p in inputs:
        p.write_bytes(b"x" * 1000)
    target = tmp_path / "master.db"
    assert _build_in_memory(target, inputs)  # no database yet
    target.write_bytes(b"")
    assert _build_in_memory(target, inputs)  # an empty file is no database either
    target.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    assert not _build_in_memory(target, inputs)  # an existing master is changed in place
    target.unlink()
    monkeypatch.setattr(db, "MEMORY_BUILD_MAX_INPUT_BYTES", 1999)
    assert not _build_in_memory(target, inputs)  # 2,000 bytes of inputs: too large for memory
    assert not _build_in_memory(target, [tmp_path / "missing.xlsx"])  # unreadable: the safe way


def test_a_master_made_before_without_rowid_tables_merges_the_same(team: Path, tmp_path: Path) -> None:
    """origins and bases_* are WITHOUT ROWID tables since a first import stored each row twice; a
    master.db made before keeps its rowid tables, and merging into it must give the same result."""
    masters = {}
    for kind in ("new", "old"):
        master = tmp_path / kind / "master.xlsx"
        master.parent.mkdir()
        merge([team], master, S, now=NOW, today=NOW.date())
        masters[kind] = master
    conn = sqlite3.connect(masters["old"].with_suffix(".db"), isolation_level=None)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                             "(name = 'origins' OR name LIKE 'bases_%')")]
        assert len(tables) == 6
        conn.execute("BEGIN")
        for name in tables:
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
            assert sql.endswith("WITHOUT ROWID")
            conn.execute(re.sub(r'^CREATE TABLE "?\w+"?', "CREATE TABLE old_layout", sql)
                         .removesuffix(" WITHOUT ROWID"))
            conn.execute(f'INSERT INTO old_layout SELECT * FROM "{name}"')
            conn.execute(f'DROP TABLE "{name}"')
            conn.execute(f'ALTER TABLE old_layout RENAME TO "{name}"')
        conn.execute("COMMIT")
        assert not conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE sql LIKE '%WITHOUT ROWID%' AND "
                                "(name = 'origins' OR name LIKE 'bases_%')").fetchone()[0]
    finally:
        conn.close()
    for kind, master in masters.items():
        again = merge([team], master, S, now=NOW + dt.timedelta(days=1), today=NOW.date())
        assert again.history_rows == 0, kind  # the legacy rows are recognised by their origins
        assert again.files[0].total("unchanged") > 500, kind  # and compared with their bases
    assert dump(masters["old"]) == dump(masters["new"])
    assert history(masters["old"]) == history(masters["new"])
    assert _tables(masters["old"].with_suffix(".db")) == _tables(masters["new"].with_suffix(".db"))
