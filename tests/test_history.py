"""Customer history on the fixture master: resolution, summary, timeline order, `xlcrm history`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_master import ACTIVITIES, DEALS, HISTORY, TODAY, TODOS, build_master
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.errors import XlcrmError
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.store import db
from xlcrm.views.history import customer_history, resolve_customer

S = DEFAULT_SCHEMA


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_master(tmp_path_factory.mktemp("master"))


@pytest.fixture
def conn(master: Path) -> Iterator[sqlite3.Connection]:
    c = db.connect(db.db_path_for(master))
    yield c
    c.close()


def _changes(h) -> list:  # type: ignore[no-untyped-def]
    return [e for g in h.changes for e in g.entries]


def test_timeline_newest_first_with_every_kind(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000001", today=TODAY)
    mine = {"C-000001", "C-000007"}  # the survivor and the duplicate merged into it
    acts = [a["activity_id"] for a in ACTIVITIES if a["customer"] in mine and a.get("_state") is None]
    deals = [d["deal_id"] for d in DEALS if d["customer"] in mine]
    todos = [t["todo_id"] for t in TODOS if t["customer"] in mine]
    kinds: dict[str, list[str]] = {}
    for e in h.timeline:
        kinds.setdefault(e.kind, []).append(e.record_id)
    assert sorted(kinds["activity"]) == sorted(acts)  # A-000006 is deleted: left out
    assert sorted(kinds["deal"]) == sorted(deals)
    assert sorted(kinds["todo"]) == sorted(todos)
    assert "change" not in kinds  # field changes have their own section
    changes = [x for x in HISTORY if x["record_id"] in mine | set(deals)]
    assert len(_changes(h)) == len(changes)
    # newest first, whatever the kind
    keys = [e.at for e in h.timeline]
    assert keys == sorted(keys, reverse=True)
    order = [e.record_id for e in h.timeline]
    assert order.index("D-000002") < order.index("T-000002") < order.index("A-000003") \
        < order.index("T-000001") < order.index("A-000002") < order.index("D-000001") \
        < order.index("A-000004") < order.index("A-000001")
    # the change section: one group per run, newest run first, each titled with its size
    ats = [g.at for g in h.changes]
    assert ats == sorted(ats, reverse=True)
    assert all(g.title.endswith(f"{len(g.entries)} 項目") for g in h.changes)
    phone = next(g for g in h.changes if any(e.data.get("field") == "phone" for e in g.entries))
    assert "電話番号" in phone.detail and phone.date == "2024-04-20"


def test_same_day_activity_before_deal_and_todo(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000001", today=TODAY)
    rank = {"activity": 0, "deal": 1, "todo": 2}
    for a, b in zip(h.timeline, h.timeline[1:], strict=False):
        if a.at == b.at:
            assert rank[a.kind] <= rank[b.kind], (a, b)


def test_overdue_flagged(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000001", today=TODAY)
    todo = {e.record_id: e for e in h.timeline if e.kind == "todo"}
    assert todo["T-000001"].overdue and "期限切れ" in (todo["T-000001"].status or "")
    assert not todo["T-000002"].overdue  # due after today
    assert not todo["T-000003"].overdue  # done, though its due date passed
    later = customer_history(conn, S, "C-000001", today=TODAY.replace(month=7))
    assert {e.record_id for e in later.timeline if e.overdue} == {"T-000001", "T-000002"}


def test_summary(conn: sqlite3.Connection) -> None:
    s = customer_history(conn, S, "C-000001", today=TODAY).summary
    won = [d for d in DEALS if d["customer"] in ("C-000001", "C-000007") and d["phase"] == "won"]
    assert s.won_total == sum(d["amount"] for d in won) and s.won_deals == len(won)
    assert (s.owner, s.status, s.status_label, s.dm_consent, s.dm_consent_label) == (
        "佐藤 花子", "active", "取引中", "yes", "可")
    assert s.last_contact == "2024-05-25"  # A-000006 (2024-05-30) is deleted
    assert (s.open_todos, s.overdue_todos, s.open_deals) == (2, 1, 1)


def test_activity_response_and_outcome(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000001", today=TODAY, lang="en")
    complaint = next(e for e in h.timeline if e.record_id == "A-000002")
    assert complaint.title.startswith("Complaint:") and complaint.status == "Resolved"
    assert complaint.detail and "配送業者を変更" in complaint.detail
    deal = next(e for e in h.timeline if e.record_id == "D-000002")
    assert deal.status == "Proposal" and deal.date == "2024-07-31"
    change = next(e for e in _changes(h) if e.data.get("field") == "status")
    assert change.who == "佐藤 花子" and "Prospect -> Active" in change.title and change.at.startswith("2024-02-01")


def test_change_rows_show_who_when_old_new(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000001", today=TODAY)
    phone = next(e for e in _changes(h) if e.data.get("field") == "phone")
    assert (phone.who, phone.date, phone.data["old"], phone.data["new"]) == (
        "佐藤 花子", "2024-04-20", "03-1234-0000", "03-1234-5678")
    assert "電話番号" in phone.title and "03-1234-0000 → 03-1234-5678" in phone.title
    # another customer's changes stay out
    assert all(e.record_id != "C-000002" for e in [*h.timeline, *_changes(h)])
    # the duplicate's story: linked (with merge's evidence), then folded into the survivor
    link = next(e for e in _changes(h) if e.data.get("how") == "link")
    assert "重複リンク" in link.title and "電話番号が一致" in link.title
    merged = next(e for e in _changes(h) if e.data.get("field") == "_merged_into")
    assert merged.record_id == "C-000007" and "統合先" in merged.title and "C-000001" in merged.title


def test_merged_id_resolves_to_survivor(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000007", today=TODAY)
    assert (h.customer_id, h.resolved_from, h.merged_ids) == ("C-000001", "C-000007", ["C-000007"])
    merged_on = next(x["at"] for x in HISTORY if x["record_id"] == "C-000007" and x.get("field") == "_merged_into")
    assert h.merged_away == f"C-000007 は C-000001 に統合されました ({merged_on[:10]})"
    direct = customer_history(conn, S, "C-000001", today=TODAY)
    assert direct.resolved_from is None and direct.merged_away is None
    assert len(direct.timeline) == len(h.timeline)


@pytest.mark.parametrize(("typed", "expected"), [
    ("C-000002", "C-000002"), ("c2", "C-000002"), ("山田商事株式会社", "C-000002"), ("山田商事", "C-000002"),
    ("やまだしょうじ", "C-000002"), ("(株)山田製作所", "C-000001"), ("山田商字", "C-000002"),
    ("D-000005", "C-000002"), ("P-000003", "C-000001"), ("ＡＢＣトレーディング", "C-000003"),
])
def test_resolve_by_id_or_name(conn: sqlite3.Connection, typed: str, expected: str) -> None:
    assert resolve_customer(conn, S, typed)[0] == expected


def test_ambiguous_and_unknown_names(conn: sqlite3.Connection) -> None:
    with pytest.raises(XlcrmError) as e:
        customer_history(conn, S, "山田")
    msg = str(e.value)
    assert "C-000001" in msg and "C-000002" in msg and "\n" not in msg
    for typed in ("C-000099", "存在しない会社", ""):
        with pytest.raises(XlcrmError):
            customer_history(conn, S, typed)


def test_customer_without_records(conn: sqlite3.Connection) -> None:
    h = customer_history(conn, S, "C-000010", today=TODAY)
    assert h.timeline == [] and h.summary.won_total == 0 and h.summary.last_contact is None
    assert h.summary.open_todos == 0


runner = CliRunner()
_register()


def test_cli_history_json(master: Path) -> None:
    res = runner.invoke(app, ["history", "--master", str(master), "C-000007", "--json", "--today", "2024-06-01"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["customer_id"] == "C-000001" and data["resolved_from"] == "C-000007"
    assert data["summary"]["overdue_todos"] == 1
    assert [e["record_id"] for e in data["timeline"] if e["overdue"]] == ["T-000001"]
    assert {"kind", "date", "title", "who", "status", "overdue"} <= set(data["timeline"][0])


def test_cli_history_limit(master: Path) -> None:
    full = json.loads(runner.invoke(app, ["history", "-m", str(master), "C-000001", "--json"]).stdout)
    res = runner.invoke(app, ["history", "-m", str(master), "C-000001", "--json", "--limit", "3"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["timeline"] == full["timeline"][:3] and len(full["timeline"]) > 3


def test_cli_history_table(master: Path) -> None:
    res = runner.invoke(app, ["history", "--master", str(master), "山田製作所", "--today", "2024-06-01"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "C-000001" in res.stdout and "期限切れ" in res.stdout and "A-000002" in res.stdout
    out = res.stdout
    # records first, then the change section with one line per run; each field only with --changes
    assert out.index("A-000002") < out.index("変更履歴（取込・判断ごと")
    assert "03-1234-0000 → 03-1234-5678" not in out
    each = runner.invoke(app, ["history", "--master", str(master), "山田製作所", "--changes"], env={"COLUMNS": "200"})
    assert "03-1234-0000 → 03-1234-5678" in each.stdout
    away = runner.invoke(app, ["history", "--master", str(master), "C-000007"], env={"COLUMNS": "200"})
    assert "C-000007 は C-000001 に統合されました" in away.stdout


def test_cli_history_errors(master: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["history", "--master", str(master), "山田"])
    assert res.exit_code == 2 and "C-000001" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["history", "--master", str(tmp_path / "x.xlsx"), "C-000001"])
    assert res.exit_code == 2 and "x.db" in res.stderr
    res = runner.invoke(app, ["history", "--master", str(master), "C-000001", "--today", "June"])
    assert res.exit_code == 2
