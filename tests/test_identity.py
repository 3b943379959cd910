"""A workbook cannot act in a colleague's name: a copied workbook_id is checked against what the file
holds (its owner, its rows' IDs against the base handed to that id) before the file may propose
deletions or edits as that workbook; every review row names the file that caused it."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import openpyxl
from merge_fixtures import activity, book, customer, edit_cells

from xlcrm.schema import META_SHEET
from xlcrm.store import db


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180)


def _meta(path: Path) -> dict[str, str]:
    wb = openpyxl.load_workbook(path)
    return {str(r[0]): str(r[1]) for r in wb[META_SHEET].iter_rows(values_only=True) if r[0]}


def _set_meta(path: Path, **values: str) -> None:
    wb = openpyxl.load_workbook(path)
    ws = wb[META_SHEET]
    for row in ws.iter_rows():
        if row[0].value in values:
            row[1].value = values[str(row[0].value)]
    wb.save(path)


def _queues(master: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(db.db_path_for(master)) as conn:
        return {"deletions": conn.execute("SELECT record_id, source_file, who FROM deletions").fetchall(),
                "conflicts": conn.execute("SELECT record_id, field FROM conflicts").fetchall()}


def _team(tmp_path: Path) -> Path:
    book(tmp_path / "team" / "sato.xlsx", {
        "customers": [customer(f"佐藤商事{i}株式会社", phone=f"03-1111-{i:04d}") for i in range(5)],
        "activities": [activity("佐藤商事0株式会社", "初回訪問")],
    }, owner="佐藤 健")
    book(tmp_path / "team" / "suzuki.xlsx", {
        "customers": [customer(f"鈴木工業{i}株式会社", phone=f"06-2222-{i:04d}", prefecture="大阪府",
                                address=f"大阪市北区梅田{i}-1-1") for i in range(4)],
    }, owner="鈴木 美咲")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert _cli("merge", "team", "--master", str(master), cwd=tmp_path).returncode == 0
    assert _cli("distribute", "--master", str(master), "--out", "out", cwd=tmp_path).returncode == 0
    return master


def test_a_copied_workbook_id_neither_deletes_nor_blocks_the_colleagues_records(tmp_path: Path) -> None:
    master = _team(tmp_path)
    sato, suzuki = tmp_path / "out" / "佐藤 健.xlsx", tmp_path / "out" / "鈴木 美咲.xlsx"
    forged = tmp_path / "forged" / "佐藤 健.xlsx"
    forged.parent.mkdir()
    forged.write_bytes(sato.read_bytes())
    _set_meta(forged, workbook_id=_meta(suzuki)["workbook_id"])

    proc = _cli("merge", str(forged), "--master", str(master), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "鈴木 美咲" in ln and "forged" in ln]
    assert len(line) == 1 and "別のブックとして取り込みました" in line[0], proc.stdout + proc.stderr
    assert _queues(master) == {"deletions": [], "conflicts": []}

    # Even with the owner forged as well, the rows' IDs give it away.
    _set_meta(forged, owner="鈴木 美咲")
    proc = _cli("merge", str(forged), "--master", str(master), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "別のブックとして取り込みました" in proc.stdout + proc.stderr
    assert _queues(master) == {"deletions": [], "conflicts": []}

    # 鈴木's genuine edit is an edit, not a 競合, and 鈴木's deletion is proposed in 鈴木's name.
    assert edit_cells(suzuki, "顧客", {"顧客名": "鈴木工業1株式会社"}, {"電話番号": "06-9999-0001"}) == 1
    proc = _cli("merge", str(suzuki), "--master", str(master), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "別のブック" not in proc.stdout + proc.stderr
    with sqlite3.connect(db.db_path_for(master)) as conn:
        assert conn.execute("SELECT phone FROM customers WHERE name = '鈴木工業1株式会社'").fetchone() == \
            ("06-9999-0001",)
    assert _queues(master)["conflicts"] == []


def test_a_blank_workbook_with_a_copied_id_is_its_own_copy(tmp_path: Path) -> None:
    master = _team(tmp_path)
    suzuki = tmp_path / "out" / "鈴木 美咲.xlsx"
    blank = tmp_path / "blank.xlsx"
    assert _cli("template", str(blank), "--owner", "鈴木 美咲", cwd=tmp_path).returncode == 0
    _set_meta(blank, workbook_id=_meta(suzuki)["workbook_id"])
    digest = hashlib.sha256(db.db_path_for(master).read_bytes()).hexdigest()
    proc = _cli("merge", str(blank), "--master", str(master), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "別のブックとして取り込みました" in proc.stdout + proc.stderr
    assert _queues(master) == {"deletions": [], "conflicts": []}
    assert digest != hashlib.sha256(db.db_path_for(master).read_bytes()).hexdigest()  # the run is logged


def test_every_review_row_names_the_file_that_caused_it(tmp_path: Path) -> None:
    master = _team(tmp_path)
    suzuki = tmp_path / "out" / "鈴木 美咲.xlsx"
    with sqlite3.connect(db.db_path_for(master)) as conn:
        (cid,) = conn.execute("SELECT customer_id FROM customers WHERE name = '鈴木工業1株式会社'").fetchone()
    assert edit_cells(suzuki, "顧客", {"顧客ID": cid}, {"電話番号": "06-9999-0001"}) == 1
    book(tmp_path / "yamada" / "yamada.xlsx", {"customers": [
        customer("鈴木工業1株式会社", customer_id=cid, phone="06-8888-0001"),
        customer("(株)鈴木工業3", prefecture="大阪府", address="大阪市北区梅田3-1-1",
                 phone="06-7777-0003")]}, owner="山田")
    proc = _cli("merge", str(suzuki), "yamada", "--master", str(master), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wb = openpyxl.load_workbook(master)
    sheet = {ws.title: list(ws.iter_rows(values_only=True)) for ws in wb.worksheets}
    head, *rows = sheet["競合"]
    assert rows, "a conflict"
    files = {rows[0][head.index(f"候補{n} ブック")] for n in (1, 2)}
    assert files == {"鈴木 美咲.xlsx", "yamada.xlsx"}
    head, *rows = sheet["重複候補"]
    files = {r[head.index("ブック")] for r in rows}
    assert "yamada.xlsx" in files and None not in files
