"""The ribbon actions end to end through the openpyxl adapter, on real workbooks and a real master.

Each test writes a standard team workbook with xlcrm's own template writer, builds the fixture master
(tests/fixtures_master.py), "clicks" through :func:`xlcrm.excel.ribbon.dispatch` exactly as the VBA
does (minus Excel), saves, re-opens the file with openpyxl and checks what a person would see.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import MakeBook
from fixtures_master import TODAY, build_master

from xlcrm.excel import actions
from xlcrm.excel.adapter import ERROR_FILL, LOCAL_FILL, OVERDUE_FILL
from xlcrm.excel.conf import KEY_MASTER, write_conf
from xlcrm.excel.openpyxl_adapter import OpenpyxlBook
from xlcrm.excel.ribbon import LOG_NAME, command_for, dispatch
from xlcrm.store import db

REPO = Path(__file__).resolve().parents[1]
CREATED = dt.datetime(2024, 5, 1, 9, 0, 0)

ROWS: dict[str, list[dict[str, Any]]] = {
    "customers": [
        {"customer_id": "C-000001", "kind": "corporate", "name": "株式会社山田製作所", "kana": "ヤマダセイサクショ",
         "phone": "03-1234-5678", "owner": "佐藤 花子"},
        # Typed by the user, not merged yet: search must find it from the workbook itself.
        {"kind": "corporate", "name": "やまだ新商事", "kana": "ヤマダシンショウジ", "phone": "03-9999-0000",
         "owner": "佐藤 花子"},
    ],
    "contacts": [{"contact_id": "P-000001", "customer": "C-000001", "name": "高橋 一郎"}],
    "activities": [{"date": dt.date(2024, 5, 2), "customer": "C-000001", "type": "call",
                    "content": "見積の件で電話", "handled_by": "佐藤 花子"}],
}


@pytest.fixture
def master(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    return build_master(tmp_path / "m")


@pytest.fixture
def book_path(tmp_path: Path) -> Path:
    from xlcrm.intake.template import write_team_workbook
    from xlcrm.schema import DEFAULT_SCHEMA

    return write_team_workbook(tmp_path / "sato.xlsx", DEFAULT_SCHEMA, owner="佐藤 花子", lang="ja",
                               rows=ROWS, created=CREATED)


def click(path: Path, action: str, *, at: tuple[str, int, int] | None = None, **kw: Any) -> tuple[OpenpyxlBook, str | None]:
    """Open the file, put the cursor at ``at``, click ``action``; the action saves the file."""
    book = OpenpyxlBook(path)
    if at is not None:
        book.select(*at)
    kw.setdefault("today", TODAY)
    return book, dispatch(action, book, **kw)


def reopen(path: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(path)


def values(ws: Any) -> list[list[Any]]:
    return [[c.value for c in row] for row in ws.iter_rows()]


def header_index(rows: list[list[Any]], first: str) -> int:
    return next(i for i, r in enumerate(rows) if r and r[0] == first)


# --- 顧客検索 -----------------------------------------------------------------------------------------

def test_search_writes_results_sheet_with_links_and_unmerged_rows(book_path: Path, master: Path) -> None:
    book, msg = click(book_path, "search", query="やまだ", master=master)
    assert msg is None and book.messages == []
    wb = reopen(book_path)
    ws = wb["検索結果"]
    rows = values(ws)
    assert rows[0][:2] == ["検索語", "やまだ"]
    h = header_index(rows, "顧客ID")
    assert rows[h][:3] == ["顧客ID", "顧客名", "フリガナ"]
    body = [r for r in rows[h + 1:] if any(v is not None for v in r)]
    names = [r[1] for r in body]
    # Master customers whose kana or name matches, and the workbook's own unmerged row.
    assert {"株式会社山田製作所", "山田商事株式会社", "やまだ新商事"} <= set(names)
    assert "株式会社削除済商会" not in names
    local = next(i for i, r in enumerate(body) if r[1] == "やまだ新商事")
    assert body[local][0] is None and body[local][-1] == "このブック"
    assert ws.cell(h + 2 + local, 1).fill.fgColor.rgb.endswith(LOCAL_FILL)
    # Links: the unmerged row -> its own row; C-000001 -> its row on 顧客 (present in this workbook).
    assert ws.cell(h + 2 + local, 2).hyperlink.location == "'顧客'!C3"
    yamada = next(i for i, r in enumerate(body) if r[0] == "C-000001")
    assert ws.cell(h + 2 + yamada, 1).hyperlink.location == "'顧客'!A2"
    shoji = next(i for i, r in enumerate(body) if r[0] == "C-000002")
    assert ws.cell(h + 2 + shoji, 1).hyperlink is None  # not in this workbook: nothing to link to
    assert isinstance(body[yamada][7], dt.datetime)  # last contact is a real date cell
    assert wb.active.title == "検索結果"


def test_search_by_phone_in_another_format_and_no_hits_message(book_path: Path, master: Path) -> None:
    click(book_path, "search", query="０３（１２３４）５６７８", master=master)
    rows = values(reopen(book_path)["検索結果"])
    h = header_index(rows, "顧客ID")
    assert rows[h + 1][0] == "C-000001"
    book, msg = click(book_path, "search", query="存在しない会社ZZZ", master=master)
    assert msg is not None and "見つかりませんでした" in msg
    assert book.messages == [(msg, False)]
    book, msg = click(book_path, "search", query="   ", master=master)
    assert msg is not None and "検索語を入力してください" in msg and book.messages == [(msg, True)]


def test_query_from_the_vba_command_string_arrives_intact(book_path: Path, master: Path) -> None:
    """The exact statement the VBA builds, parsed and run against the workbook: the text survives."""
    nasty = "O'Brien \"山田\" ﾔﾏﾀﾞ & | % 😀"
    call = ast.parse(command_for("search", nasty)).body[-1].value  # type: ignore[attr-defined]
    kwargs = {k.arg: k.value.value for k in call.keywords}
    book = OpenpyxlBook(book_path)
    dispatch(call.args[0].value, book, master=master, today=TODAY, **kwargs)
    assert reopen(book_path)["検索結果"]["B1"].value == nasty


def test_search_text_that_looks_like_a_formula_is_stored_as_text(book_path: Path, master: Path) -> None:
    click(book_path, "search", query="=HYPERLINK(\"http://x\")", master=master)
    cell = reopen(book_path)["検索結果"]["B1"]
    assert cell.value == "=HYPERLINK(\"http://x\")" and cell.data_type == "s"


# --- 顧客履歴 -----------------------------------------------------------------------------------------

def test_history_for_the_active_customer_row(book_path: Path, master: Path) -> None:
    _, msg = click(book_path, "history", at=("顧客", 2, 5), master=master)
    assert msg is None
    ws = reopen(book_path)["顧客履歴"]
    rows = values(ws)
    top = {r[0]: r[1] for r in rows[:14] if r and r[0]}
    assert top["顧客ID"] == "C-000001" and top["顧客名"] == "株式会社山田製作所"
    assert top["担当営業"] == "佐藤 花子" and top["ステータス"] == "取引中" and top["DM可否"] == "可"
    assert top["受注金額合計"] == 1_450_000  # D-000001 + the merged duplicate's D-000004
    assert top["統合された重複ID"] == "C-000007"
    h = header_index(rows, "日付")
    end = next(i for i in range(h + 1, len(rows)) if not any(rows[i]))
    timeline = rows[h + 1:end]  # the records, then a blank row, then the changes per run
    dates = [r[0] for r in timeline]
    assert dates == sorted(dates, reverse=True)  # newest first
    assert {r[1] for r in timeline} <= {"活動", "取引", "TODO"}
    ids = [r[2] for r in timeline]
    assert {"A-000001", "A-000002", "A-000003", "A-000004", "D-000001", "D-000002", "T-000001"} <= set(ids)
    assert "A-000006" not in ids  # deleted
    overdue = ids.index("T-000001")
    assert ws.cell(h + 2 + overdue, 1).fill.fgColor.rgb.endswith(OVERDUE_FILL)
    not_overdue = ids.index("T-000002")
    assert ws.cell(h + 2 + not_overdue, 1).fill.fgColor.rgb == "00000000"
    assert rows[end + 1][0] == "変更履歴（取込・判断ごと、新しい順）"
    below = [r for r in rows[end + 2:] if any(r)]
    groups = [r for r in below if r[1] == "変更"]  # one bold line per run: 取込: N 項目 ...
    assert groups and all(re.fullmatch(r".+: \d+ 項目", r[3]) for r in groups)
    assert ws.cell(end + 3, 1).font.b
    assert any("03-1234-0000 → 03-1234-5678" in (r[3] or "") for r in below)  # field change: old -> new
    complaint = next(r for r in timeline if r[2] == "A-000002")
    assert "配送業者" in complaint[4]  # the response given


def test_history_from_a_search_result_row_and_from_an_activity_row(book_path: Path, master: Path) -> None:
    click(book_path, "search", query="ABCトレーディング", master=master)
    rows = values(reopen(book_path)["検索結果"])
    h = header_index(rows, "顧客ID")
    assert rows[h + 1][0] == "C-000003"
    click(book_path, "history", at=("検索結果", h + 2, 2), master=master)
    assert reopen(book_path)["顧客履歴"]["B1"].value == "C-000003"
    # 活動履歴 has a 顧客 column holding the customer ID.
    click(book_path, "history", at=("活動履歴", 2, 7), master=master)
    assert reopen(book_path)["顧客履歴"]["B1"].value == "C-000001"


def test_history_refuses_plainly(book_path: Path, master: Path) -> None:
    book, msg = click(book_path, "history", at=("顧客", 1, 1), master=master)  # the header row
    assert msg is not None and "顧客の行のセルを選んで" in msg and book.messages == [(msg, True)]
    _, msg = click(book_path, "history", at=("顧客", 3, 3), master=master)  # not merged yet
    assert msg is not None and "まだマスタに統合されていない" in msg
    assert "Traceback" not in msg


# --- 入力チェック -------------------------------------------------------------------------------------

def test_validate_marks_bad_cells_lists_them_and_clears_fixed_ones(tmp_path: Path, make_book: MakeBook,
                                                                  master: Path) -> None:
    path = make_book({"customers": [
        {"kind": "corporate", "name": "良い会社", "phone": "03-1111-2222", "owner": "佐藤"},
        {"kind": "corporate", "name": "悪い会社", "phone": "03-1111-2222", "email": "not-an-email",
         "owner": "佐藤"},
    ]})
    book, msg = click(path, "validate", master=master)
    assert msg is not None and "エラー" in msg and book.messages == [(msg, False)]
    wb = reopen(path)
    ws = wb["顧客"]
    email_col = next(c.column for c in ws[1] if c.value == "メールアドレス")
    bad = ws.cell(3, email_col)
    assert bad.fill.fgColor.rgb.endswith(ERROR_FILL)
    assert "メールアドレス" in bad.comment.text
    assert ws.cell(2, email_col).fill.fgColor.rgb == "00000000"  # the good row stays plain
    rows = values(wb["エラー一覧"])
    h = header_index(rows, "重要度")
    listed = [r for r in rows[h + 1:] if r[0]]
    entry = next(i for i, r in enumerate(listed) if r[1] == "顧客" and r[2] == bad.coordinate)
    assert listed[entry][0] == "エラー"
    assert wb["エラー一覧"].cell(h + 2 + entry, 3).hyperlink.location == f"'顧客'!{bad.coordinate}"

    # The user fixes the cell (in "Excel": here openpyxl) and checks again: the mark goes away.
    wb["顧客"].cell(3, email_col).value = "info@warui.example.jp"
    wb.save(path)
    _, msg2 = click(path, "validate", master=master)
    ws2 = reopen(path)["顧客"]
    assert ws2.cell(3, email_col).fill.fgColor.rgb == "00000000"
    assert ws2.cell(3, email_col).comment is None
    assert msg2 is not None


def test_validate_sees_unsaved_state_of_the_adapter_not_the_file(make_book: MakeBook, master: Path) -> None:
    path = make_book({"customers": [{"kind": "corporate", "name": "甲社", "owner": "佐藤"}]})
    book = OpenpyxlBook(path)
    assert book.read_sheet("顧客")[0][2] == "顧客名"
    book.write_block("顧客", 2, 3, [[None]])  # 顧客名 blanked in the open book only, not on disk
    msg = dispatch("validate", book, master=master, today=TODAY)
    assert msg is not None and "エラー 1 件" in msg


# --- 活動を追加 ---------------------------------------------------------------------------------------

def test_new_activity_adds_a_dated_row_for_the_selected_customer(book_path: Path, master: Path) -> None:
    book, msg = click(book_path, "new_activity", at=("顧客", 2, 3), master=master)
    assert msg is None and book.messages == []
    wb = reopen(book_path)
    ws = wb["活動履歴"]
    head = [c.value for c in ws[1]]
    new_row = 3  # the fixture has one activity in row 2
    row = {h: ws.cell(new_row, j + 1).value for j, h in enumerate(head)}
    assert row["日付"] == dt.datetime(2024, 6, 1) and ws.cell(new_row, head.index("日付") + 1).is_date
    assert row["顧客"] == "C-000001" and row["対応者"] == "佐藤 花子"
    assert row["活動ID"] is None and row["種別"] is None
    assert ws.tables["tbl_activities"].ref.endswith(str(new_row))  # the Excel table grew
    assert wb.active.title == "活動履歴"
    assert ws.sheet_view.selection[0].activeCell == f"{openpyxl.utils.get_column_letter(head.index('種別') + 1)}{new_row}"


def test_new_activity_for_an_unmerged_customer_uses_its_name(book_path: Path, master: Path) -> None:
    click(book_path, "new_activity", at=("顧客", 3, 1), master=master)
    ws = reopen(book_path)["活動履歴"]
    head = [c.value for c in ws[1]]
    assert ws.cell(3, head.index("顧客") + 1).value == "やまだ新商事"


# --- 最新化 -------------------------------------------------------------------------------------------

def test_refresh_rebuilds_views_from_the_current_master_and_says_when_to_ask_admin(book_path: Path,
                                                                                 master: Path) -> None:
    click(book_path, "search", query="山田製作所", master=master)
    click(book_path, "history", at=("顧客", 2, 3), master=master)
    _, msg = click(book_path, "refresh", master=master)
    assert msg is not None and "検索結果" in msg and "顧客履歴" in msg and "統合の記録がありません" in msg

    # The admin merges after this workbook was made: the master changes and a run is logged.
    conn = db.connect(db.db_path_for(master))
    conn.execute("UPDATE customers SET owner = '高橋 健' WHERE customer_id = 'C-000001'")
    conn.execute("INSERT INTO runs(started, finished, command, status) VALUES "
                 "('2024-05-31T18:00:00', '2024-05-31T18:05:00', 'merge', 'ok')")
    conn.close()
    _, msg = click(book_path, "refresh", master=master)
    assert msg is not None and "管理者に新しいブックの配布を依頼" in msg and "2024-05-31T18:05:00" in msg
    wb = reopen(book_path)
    top = {r[0]: r[1] for r in values(wb["顧客履歴"])[:6] if r and r[0]}
    assert top["担当営業"] == "高橋 健"  # rebuilt from the changed master
    rows = values(wb["検索結果"])
    h = header_index(rows, "顧客ID")
    assert rows[h + 1][5] == "高橋 健"
    # The workbook's own rows are untouched.
    head = [c.value for c in wb["顧客"][1]]
    assert wb["顧客"].cell(2, head.index("担当営業") + 1).value == "佐藤 花子"


# --- dispatch: every error is a plain message --------------------------------------------------------

def test_no_master_configured_is_a_plain_message(book_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_MASTER, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user xlcrm.conf
    book, msg = click(book_path, "search", query="山田")
    assert msg is not None and "xlcrm addin install --master" in msg
    assert book.messages == [(msg, True)]


def test_master_found_through_xlcrm_conf_beside_the_workbook(book_path: Path, master: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_MASTER, raising=False)
    write_conf(book_path.parent / "xlcrm.conf", {KEY_MASTER: str(master)})
    _, msg = click(book_path, "search", query="さくら")
    assert msg is None
    assert "さくら不動産株式会社" in [r[1] for r in values(reopen(book_path)["検索結果"])]


def test_unknown_action_and_unexpected_errors_never_show_a_traceback(book_path: Path, master: Path,
                                                                    tmp_path: Path) -> None:
    _, msg = click(book_path, "frobnicate", master=master)
    assert msg is not None and "frobnicate" in msg and "xlcrm の更新" in msg
    # A master database that is not a database: sqlite raises deep inside; the user gets one line.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "master.db").write_bytes(b"this is not sqlite" * 100)
    _, msg = click(book_path, "search", query="山田", master=broken / "master.xlsx")
    assert msg is not None and "Traceback" not in msg and "\n" not in msg.strip()


def test_unexpected_exception_is_logged_and_shown_as_one_line(book_path: Path, master: Path) -> None:
    book = OpenpyxlBook(book_path)
    book.read_sheet = None  # type: ignore[assignment,method-assign]  # any bug inside an action
    msg = dispatch("search", book, query="山田", master=master, today=TODAY)
    assert msg is not None and "予期しない問題" in msg and LOG_NAME in msg and "Traceback" not in msg
    log = Path(msg.split(": ")[-1])
    assert "Traceback" in log.read_text(encoding="utf-8")


# --- English workbooks -------------------------------------------------------------------------------

def test_english_workbook_gets_english_sheets_and_labels(make_book: MakeBook, master: Path) -> None:
    path = make_book({"customers": [{"customer_id": "C-000004", "kind": "individual", "name": "田中 花子",
                                     "owner": "Sato"}]}, lang="en", owner="Sato")
    click(path, "search", query="tanaka@", master=master)
    click(path, "search", query="タナカ", master=master)
    wb = reopen(path)
    rows = values(wb["Search results"])
    assert rows[0][:2] == ["Search", "タナカ"]
    assert "Customer ID" in rows[header_index(rows, "Customer ID")]
    click(path, "history", at=("Customers", 2, 3), master=master)
    rows = values(reopen(path)["Customer history"])
    assert rows[0] == ["Customer ID", "C-000004"] + [None] * (len(rows[0]) - 2)
    _, msg = click(path, "new_activity", at=("Customers", 2, 3), master=master)
    assert msg is None
    ws = reopen(path)["Activities"]
    head = [c.value for c in ws[1]]
    assert ws.cell(2, head.index("Handled by") + 1).value == "Sato"


# --- cost of a click ---------------------------------------------------------------------------------

def test_search_and_history_path_imports_no_pandas(book_path: Path, master: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from xlcrm.excel.ribbon import dispatch\n"
        "from xlcrm.excel.openpyxl_adapter import OpenpyxlBook\n"
        f"b = OpenpyxlBook(Path({str(book_path)!r}))\n"
        f"assert dispatch('search', b, query='山田', master=Path({str(master)!r})) is None\n"
        "b.select('顧客', 2, 3)\n"
        f"assert dispatch('history', b, master=Path({str(master)!r})) is None\n"
        "print(sorted(m for m in ('pandas', 'pandera') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_last_merge_reads_the_run_log(master: Path) -> None:
    conn = db.connect(db.db_path_for(master))
    assert actions.last_merge(conn) is None
    conn.execute("INSERT INTO runs(started, finished, status) VALUES ('2024-01-01T00:00:00', "
                 "'2024-01-01T00:01:00', 'ok')")
    conn.execute("INSERT INTO runs(started, finished, status) VALUES ('2024-02-01T00:00:00', NULL, 'running')")
    conn.execute("INSERT INTO runs(started, finished, command, status) VALUES ('2024-03-01T00:00:00', "
                 "'2024-03-01T00:01:00', 'merge --dry-run', 'done')")
    assert actions.last_merge(conn) == "2024-01-01T00:01:00"
    conn.close()


def test_both_adapters_implement_the_adapter_protocol() -> None:
    import inspect

    from xlcrm.excel.adapter import WorkbookAdapter

    members = [n for n, v in vars(WorkbookAdapter).items() if not n.startswith("_") and
               (callable(v) or isinstance(v, property))]
    classes = [OpenpyxlBook]
    try:
        from xlcrm.excel.xlwings_adapter import XlwingsBook
    except ImportError:
        print("xlwings not installed: only the openpyxl adapter's signatures are checked")
    else:
        classes.append(XlwingsBook)
    for cls in classes:
        for name in members:
            want = getattr(WorkbookAdapter, name)
            got = getattr(cls, name)
            if isinstance(want, property):
                assert isinstance(got, property), (cls.__name__, name)
                continue
            assert list(inspect.signature(got).parameters) == list(inspect.signature(want).parameters), \
                (cls.__name__, name)


def test_edited_workbook_keeps_its_validations_and_opens_in_libreoffice(book_path: Path, master: Path,
                                                                       tmp_path: Path) -> None:
    import re
    import zipfile

    from helpers import libreoffice_convert

    def validations(path: Path) -> dict[str, int]:
        with zipfile.ZipFile(path) as z:
            return {n: len(re.findall(rb"<dataValidation ", z.read(n))) for n in z.namelist()
                    if n.startswith("xl/worksheets/sheet")}

    before = sum(validations(book_path).values())
    assert before > 0
    click(book_path, "search", query="山田", master=master)
    click(book_path, "history", at=("顧客", 2, 3), master=master)
    click(book_path, "new_activity", at=("顧客", 2, 3), master=master)
    click(book_path, "validate", master=master)
    assert sum(validations(book_path).values()) == before  # dropdowns and IME modes survive openpyxl
    out = tmp_path / "lo"
    out.mkdir()
    pdf = libreoffice_convert(book_path, out)
    assert pdf.stat().st_size > 1000


def test_actions_on_a_distributed_workbook_against_a_merged_master(tmp_path: Path) -> None:
    """The real pipeline: team workbook -> xlcrm merge -> xlcrm distribute -> ribbon on the result."""
    from xlcrm.intake.template import write_team_workbook
    from xlcrm.master.distribute import distribute
    from xlcrm.master.run import merge
    from xlcrm.schema import DEFAULT_SCHEMA

    team = tmp_path / "team"
    team.mkdir()
    write_team_workbook(team / "sato.xlsx", DEFAULT_SCHEMA, owner="佐藤", rows={
        "customers": [{"kind": "corporate", "name": "株式会社山田製作所", "kana": "ヤマダセイサクショ",
                       "phone": "03-1234-5678", "owner": "佐藤"}],
        "todos": [{"due": dt.date(2024, 5, 10), "customer": "株式会社山田製作所", "content": "見積を送る",
                   "assignee": "佐藤", "status": "todo"}]})
    master = tmp_path / "master.xlsx"
    merge([team], master, DEFAULT_SCHEMA, today=TODAY)
    (handed,) = distribute(master, tmp_path / "out", DEFAULT_SCHEMA)

    _, msg = click(handed, "search", query="03-1234-5678", master=master)
    assert msg is None
    rows = values(reopen(handed)["検索結果"])
    hit = rows[header_index(rows, "顧客ID") + 1]
    assert hit[0].startswith("C-") and hit[1] == "株式会社山田製作所"
    assert reopen(handed)["検索結果"].cell(header_index(rows, "顧客ID") + 2, 1).hyperlink is not None
    _, msg = click(handed, "history", at=("顧客", 2, 3), master=master)
    assert msg is None
    rows = values(reopen(handed)["顧客履歴"])
    assert rows[0][1] == hit[0]
    assert any(r[2] and r[2].startswith("T-") and r[3] == "見積を送る" for r in rows)
    _, msg = click(handed, "refresh", master=master)
    assert msg is not None and "以降に作成されています" in msg  # handed out after the last merge
