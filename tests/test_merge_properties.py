"""Property tests: rows are conserved, a merge is idempotent, and input order does not matter.

Hypothesis draws small teams from a pool of companies that several people may have typed in
different spellings (株式会社 / (株), with or without e-mail and phone), with activities, and now and
then an invalid row.  Few examples (each writes real workbooks and runs three merges).
"""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from merge_fixtures import TODAY, book, dump

from xlcrm.master.merge import OUTCOMES
from xlcrm.master.run import merge
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.xlsx.reader import read_workbook

COMPANIES = [
    ("青空商事", "アオゾラショウジ", "info@aozora.co.jp", "03-1111-2222"),
    ("緑山工業", "ミドリヤマコウギョウ", "sales@midori.co.jp", "045-222-3333"),
    ("白浜物産", "シラハマブッサン", "contact@shirahama.jp", "06-3333-4444"),
    ("山田製作所", "ヤマダセイサクショ", "info@yamada-ss.co.jp", "052-444-5555"),
    ("東西電機", "トウザイデンキ", "support@tozai.co.jp", "092-555-6666"),
]
CONTENTS = ["初回訪問", "見積提出", "電話フォロー", "新製品の案内"]
STATUSES = ["prospect", "negotiating", "active"]


@st.composite
def team(draw: st.DrawFn) -> list[dict[str, Any]]:
    people = draw(st.lists(st.sampled_from(["佐藤", "鈴木", "高橋"]), min_size=2, max_size=3, unique=True))
    books = []
    for owner in people:
        # Not unique: now and then the same customer twice in one workbook (validate warns about it).
        picks = draw(st.lists(st.integers(0, len(COMPANIES) - 1), min_size=1, max_size=4))
        customers, activities = [], []
        for i in picks:
            name, kana, email, phone = COMPANIES[i]
            spelled = draw(st.sampled_from([f"株式会社{name}", f"(株){name}", f"{name}株式会社"]))
            row: dict[str, Any] = {"kind": "corporate", "name": spelled, "kana": kana}
            if draw(st.booleans()):
                row["email"] = email
            if draw(st.booleans()):
                row["phone"] = phone
            if draw(st.integers(0, 9)) == 0:
                row["phone"] = "312345678"  # an invalid row: lost leading zero
            row["status"] = draw(st.sampled_from(STATUSES))
            customers.append(row)
            for _ in range(draw(st.integers(0, 2))):
                activities.append({"date": date(2024, 5, 1) + timedelta(days=draw(st.integers(0, 20))),
                                   "customer": spelled, "type": "call",
                                   "content": draw(st.sampled_from(CONTENTS))})
        books.append({"owner": owner, "rows": {"customers": customers, "activities": activities}})
    return books


def _write(folder: Path, books: list[dict[str, Any]]) -> list[Path]:
    return [book(folder / f"{b['owner']}.xlsx", b["rows"], owner=b["owner"]) for b in books]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(team())
def test_conservation_idempotence_and_order_independence(books: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = _write(root / "team", books)
        m1 = root / "m1" / "master.xlsx"
        m1.parent.mkdir()
        report = merge(paths, m1, S, today=TODAY)

        # Conservation: every row read ends in exactly one outcome, per file and sheet.
        for f in report.files:
            wb = read_workbook(f.file, S)
            for ekey, counts in f.sheets.items():
                assert counts.rows_read == len(wb.sheets[ekey].frame)
                assert counts.accounted == counts.rows_read, (f.file, ekey, counts)
        total_new = sum(f.total("new") for f in report.files)
        assert total_new == sum(report.records_created.values())

        # Idempotence: the same inputs again change nothing.
        first = dump(m1)
        again = merge(paths, m1, S, today=TODAY)
        assert dump(m1) == first
        assert again.history_rows == 0 and again.records_created == {}
        for f in again.files:
            assert f.total("updated") == f.total("new") == f.total("linked") == 0
            assert set(OUTCOMES) >= {k for k in OUTCOMES if f.total(k)}

        # Order independence: the inputs in reverse order give the same master.
        m2 = root / "m2" / "master.xlsx"
        m2.parent.mkdir()
        merge(list(reversed(paths)), m2, S, today=TODAY)
        assert dump(m2) == first
