"""Tables the CLI prints stay readable in an 80-column terminal: file names are never cut."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from merge_fixtures import activity, book, customer
from rich.cells import cell_len


def _run80(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm"}
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300, check=False)


def test_merge_table_shows_whole_file_names_at_80_columns(tmp_path: Path) -> None:
    names = ["staff_takahashi_2024.xlsx", "営業部_佐藤_2024年度.xlsx"]
    for i, name in enumerate(names):
        book(tmp_path / "team" / name, {
            "customers": [customer(f"株式会社テスト{i}", phone=f"03-1234-000{i}"),
                          customer("", phone="03-0000-0000")],  # a rejected row: an error workbook
            "activities": [activity(f"株式会社テスト{i}", "訪問")]})
    (tmp_path / "m").mkdir()
    proc = _run80("merge", "team", "--master", "m/master.xlsx", "--today", "2024-06-01", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    for name in names:
        row = next(ln for ln in lines if ln.startswith(name))
        assert cell_len(row) <= 80 and "…" not in row
        assert any(ln.endswith(Path(name).stem + ".errors.xlsx") for ln in lines), proc.stdout
    assert all("…" not in ln for ln in lines)


def test_search_and_history_fold_what_people_typed_at_80_columns(tmp_path: Path) -> None:
    """Names and activity notes are folded onto more lines, never cut to "株式 …"."""
    name = "株式会社ヤマダ物流サービスセンター"
    note = "来週の打ち合わせで新しい見積書を持参し、納期と保守契約の範囲を説明する予定。"
    book(tmp_path / "team" / "営業部_佐藤_2024年度.xlsx", {
        "customers": [customer(name, phone="03-1234-5678"), customer("山田精機株式会社", phone="03-1234-9999")],
        "activities": [activity(name, note)]}, owner="佐藤 健一")
    (tmp_path / "m").mkdir()
    proc = _run80("merge", "team", "--master", "m/master.xlsx", "--today", "2024-06-01", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for args in (["search", "ヤマダ"], ["search", "株式会社"], ["history", name]):
        proc = _run80(*args, "--master", "m/master.xlsx", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert "…" not in proc.stdout and all(cell_len(ln) <= 80 for ln in lines), proc.stdout
        assert "株式会社" in proc.stdout
    shown = iter(proc.stdout)
    assert all(ch in shown for ch in note), proc.stdout  # every character of the note, in order
