"""Two new customers with the same name (佐藤運輸株式会社 in two cities) can be told apart before they
have IDs: the 顧客 dropdown offers a qualified reference, validate resolves it, and an ambiguous name
says exactly what to type.  Driven through the CLI, as a person uses it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from helpers import soffice
from merge_fixtures import activity, book, connect, customer

from xlcrm.schema import LISTS_SHEET

pytestmark = pytest.mark.usefixtures("store")

OSAKA = customer("佐藤運輸株式会社", phone="06-1234-5678", address="大阪市北区梅田1-1")
NAGOYA = customer("佐藤運輸株式会社", phone="052-123-4567", address="名古屋市中区栄2-2")


def xlcrm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def findings(path: Path) -> list[dict[str, Any]]:
    proc = xlcrm("validate", str(path), "--json", "--today", "2024-06-01", cwd=path.parent)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["findings"]


def activity_customers(master: Path) -> dict[str, str]:
    """activity 内容 -> the phone of its customer in the master."""
    conn = connect(master)
    try:
        return dict(conn.execute("SELECT a.content, c.phone FROM activities a JOIN customers c "
                                 "ON c.customer_id = a.customer"))
    finally:
        conn.close()


def _recalculated_lists(path: Path, out: Path) -> list[str]:
    """The _lists sheet as LibreOffice computes it on load (recalculation forced in a private profile)."""
    exe = soffice()
    assert exe is not None, "LibreOffice (soffice) is needed: apt-get install -y libreoffice-calc-nogui"
    profile = out / "lo-profile"
    (profile / "user").mkdir(parents=True)
    (profile / "user" / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="OOXMLRecalcMode" '
        'oor:op="fuse"><value>0</value></prop></item></oor:items>\n', encoding="utf-8")
    proc = subprocess.run(
        [exe, f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to",
         "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1",
         "--outdir", str(out), str(path)], capture_output=True, text=True, timeout=180, check=False)
    target = out / f"{path.stem}-{LISTS_SHEET}.csv"
    assert proc.returncode == 0 and target.exists(), proc.stdout + proc.stderr
    rows = list(csv.reader(target.read_text(encoding="utf-8").splitlines()))
    col = rows[0].index("customer_labels")
    return [r[col] for r in rows[1:] if len(r) > col and r[col]]


def test_dropdown_offers_references_that_tell_same_named_customers_apart(tmp_path: Path) -> None:
    """A blank template, customers typed in the spreadsheet (no add-in), the list recalculated by a real
    spreadsheet engine; the references it offers attach each activity to the right customer."""
    path = tmp_path / "sato.xlsx"
    assert xlcrm("template", str(path), "--owner", "佐藤", cwd=tmp_path).returncode == 0
    wb = openpyxl.load_workbook(path)
    ws = wb["顧客"]
    head = [c.value for c in ws[1]]
    typed = [("法人", "佐藤運輸株式会社", "06-1234-5678", "大阪市北区"), ("法人", "山田商事", None, None),
             ("法人", "佐藤運輸株式会社", "052-123-4567", "名古屋市中区"), ("法人", "佐藤運輸株式会社", None, None)]
    for r, (kind, name, phone, address) in enumerate(typed, start=2):
        for label, v in (("区分", kind), ("顧客名", name), ("電話番号", phone), ("住所", address)):
            ws.cell(r, head.index(label) + 1).value = v
    labels = ["佐藤運輸株式会社 (06-1234-5678)", "山田商事", "佐藤運輸株式会社 (052-123-4567)",
              "佐藤運輸株式会社 (行5)"]
    acts = wb["活動履歴"]
    ahead = [c.value for c in acts[1]]
    for r, label in enumerate(labels, start=2):
        for key, v in (("日付", date(2024, 5, 1)), ("顧客", label), ("種別", "電話"), ("内容", f"call {r}")):
            acts.cell(r, ahead.index(key) + 1).value = v
    wb.save(path)

    assert _recalculated_lists(path, tmp_path / "lo") == labels

    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    proc = xlcrm("merge", str(path), "--master", str(master), "--today", "2024-06-01", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert activity_customers(master) == {"call 2": "06-1234-5678", "call 4": "052-123-4567",
                                          "call 3": None, "call 5": None}
    conn = connect(master)
    linked = dict(conn.execute("SELECT a.content, c.name || '@' || c.customer_id FROM activities a "
                               "JOIN customers c ON c.customer_id = a.customer"))
    conn.close()
    assert linked["call 3"].startswith("山田商事@") and linked["call 5"].startswith("佐藤運輸株式会社@")
    assert len(set(linked.values())) == 4


def test_an_ambiguous_name_says_exactly_what_to_type_and_that_works(tmp_path: Path, store: str | None,
                                                                    request: pytest.FixtureRequest,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = book(tmp_path / "sato.xlsx", {"customers": [OSAKA, customer("山田商事"), NAGOYA],
                                         "activities": [activity("佐藤運輸株式会社", "どちら?")]})
    (f,) = [f for f in findings(path) if f["sheet"] == "活動履歴"]
    assert f["rule"] == "ref.ambiguous" and f["cell"] == "C2"
    assert "「佐藤運輸株式会社 (06-1234-5678)」、「佐藤運輸株式会社 (052-123-4567)」のどれかを入力" in f["message"]

    # Typing what the message says, or the city, or the row, resolves the reference.
    for typed, phone in (("佐藤運輸株式会社 (052-123-4567)", "052-123-4567"), ("佐藤運輸株式会社（大阪市）", "06-1234-5678"),
                         ("佐藤運輸株式会社 (行4)", "052-123-4567"), ("佐藤運輸株式会社 (0612345678)", "06-1234-5678")):
        folder = tmp_path / f"t{abs(hash(typed))}"
        p = book(folder / "sato.xlsx", {"customers": [OSAKA, customer("山田商事"), NAGOYA],
                                        "activities": [activity(typed, "これ")]})
        assert findings(p) == [], typed
        (folder / "m").mkdir()
        if store:  # a master of its own, as the folder is: on the server, that is a database of its own
            server = request.getfixturevalue("pg_server")
            monkeypatch.setenv("XLCRM_DB", server.url(server.database()))
        proc = xlcrm("merge", str(p), "--master", str(folder / "m" / "master.xlsx"), "--today", "2024-06-01",
                     cwd=folder)
        assert proc.returncode == 0, proc.stderr
        assert activity_customers(folder / "m" / "master.xlsx") == {"これ": phone}


def test_a_reference_to_a_row_that_is_not_that_customer_says_what_to_type(tmp_path: Path) -> None:
    """A row reference gone stale (the 顧客 sheet was sorted) is refused, never re-pointed silently."""
    path = book(tmp_path / "sato.xlsx", {"customers": [OSAKA, customer("山田商事"), NAGOYA],
                                         "activities": [activity("佐藤運輸株式会社 (行3)", "x")]})
    (f,) = findings(path)
    assert f["rule"] == "ref.qualified"
    assert "（行3）に当たるものがありません" in f["message"] and "「佐藤運輸株式会社 (06-1234-5678)」" in f["message"]


def test_same_name_warning_only_when_nothing_tells_the_two_apart(tmp_path: Path) -> None:
    def name_warnings(rows: list[dict[str, Any]]) -> list[str]:
        folder = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
        p = book(folder / "sato.xlsx", {"customers": rows})
        return [f["cell"] for f in findings(p) if f["rule"] == "duplicate" and f["key"] == "name"]

    assert name_warnings([OSAKA, NAGOYA]) == []  # phone and address differ
    assert name_warnings([customer("佐藤運輸株式会社", email="a@sato.example"),
                          customer("㈱佐藤運輸", email="b@sato.example")]) == []
    assert name_warnings([customer("佐藤運輸株式会社", corporate_number="7000012050002"),
                          customer("佐藤運輸株式会社", corporate_number="7000020010006")]) == []
    assert name_warnings([customer("佐藤運輸株式会社"), customer("㈱佐藤運輸")]) == ["C3"]  # nothing to tell
    assert name_warnings([OSAKA, customer("佐藤運輸株式会社")]) == ["C3"]  # one side blank tells nothing
    assert name_warnings([OSAKA, NAGOYA, customer("佐藤運輸株式会社", phone="052-123-4567")]) == ["C4"]


def test_new_activity_button_writes_the_reference_the_dropdown_offers(tmp_path: Path) -> None:
    from xlcrm.excel.openpyxl_adapter import OpenpyxlBook
    from xlcrm.excel.ribbon import dispatch

    path = book(tmp_path / "sato.xlsx", {"customers": [OSAKA, customer("山田商事"), NAGOYA]})
    for row, expected in ((4, "佐藤運輸株式会社 (052-123-4567)"), (3, "山田商事")):
        b = OpenpyxlBook(path)
        b.select("顧客", row, 3)
        assert dispatch("new_activity", b, today=date(2024, 6, 1)) is None
        ws = openpyxl.load_workbook(path)["活動履歴"]
        head = [c.value for c in ws[1]]
        assert ws.cell(ws.max_row, head.index("顧客") + 1).value == expected


def test_the_weekly_loop_keeps_same_named_customers_apart(tmp_path: Path) -> None:
    """merge → distribute → a new activity picked from the handout's dropdown → merge: it lands on the
    customer it names, and the handout's own rows (by 顧客ID) stay where they were."""
    book(tmp_path / "team" / "sato.xlsx", {
        "customers": [OSAKA, NAGOYA],
        "activities": [activity("佐藤運輸株式会社 (06-1234-5678)", "大阪で訪問"),
                       activity("佐藤運輸株式会社 (名古屋市)", "名古屋で訪問")]}, owner="佐藤")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert xlcrm("merge", "team", "--master", str(master), "--today", "2024-06-01", cwd=tmp_path).returncode == 0
    assert xlcrm("distribute", "--master", str(master), "--out", "handout", cwd=tmp_path).returncode == 0
    handout = tmp_path / "handout" / "佐藤.xlsx"
    lists = openpyxl.load_workbook(handout, data_only=True)[LISTS_SHEET]  # the values the dropdown shows
    labels = [c.value for c in lists[openpyxl.utils.get_column_letter(lists.max_column)]]
    assert "佐藤運輸株式会社 (052-123-4567)" in labels and "佐藤運輸株式会社 (06-1234-5678)" in labels
    wb = openpyxl.load_workbook(handout)
    acts = wb["活動履歴"]
    head = [c.value for c in acts[1]]
    row = acts.max_row + 1
    for key, v in (("日付", date(2024, 5, 20)), ("顧客", "佐藤運輸株式会社 (052-123-4567)"), ("種別", "電話"),
                   ("内容", "名古屋に電話")):
        acts.cell(row, head.index(key) + 1).value = v
    wb.save(handout)
    proc = xlcrm("merge", str(handout), "--master", str(master), "--today", "2024-06-01", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert activity_customers(master) == {"大阪で訪問": "06-1234-5678", "名古屋で訪問": "052-123-4567",
                                          "名古屋に電話": "052-123-4567"}
