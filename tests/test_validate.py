"""Validation finds each planted error at its exact cell, and nothing on clean or merely untidy rows."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import openpyxl
import pytest

from xlcrm.errors import UnreadableWorkbook
from xlcrm.intake.validate import annotate, fix, planned_fixes, validate_workbook
from xlcrm.schema import build_schema

TODAY = date(2026, 11, 23)
CO = {"kind": "corporate", "name": "株式会社アクメ", "owner": "佐藤"}
PERSON = {"kind": "individual", "name": "山田 花子", "owner": "佐藤"}


def findings_by_cell(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in result.findings:
        out.setdefault(f.address, []).append(f.rule)
    return out


def letter(schema, entity: str, key: str) -> str:
    from xlcrm.xlsx.cells import column_letter

    return column_letter(schema[entity].keys.index(key))


def test_clean_and_untidy_rows_give_no_findings(make_book, schema) -> None:
    """Values that only need normalising (width, wareki, hiragana, 〒, e-mail case) are not errors."""
    path = make_book({
        "customers": [
            dict(CO, kana="あくめ", phone="０３－１２３４－５６７８", postal_code="〒１００ー０００１",
                 email="Info@Acme.CO.JP", corporate_number="7000012050002", employees="１，２００"),
            dict(PERSON, kana="ﾔﾏﾀﾞ ﾊﾅｺ", phone="090 1234 5678", birthday="S60.4.1", dm_consent="不可"),
        ],
        "contacts": [{"customer": "株式会社アクメ", "name": "鈴木 次郎", "mobile": "09012345678"}],
        "activities": [
            {"date": "R6.4.1", "customer": "株式会社アクメ", "type": "complaint", "category": "product",
             "content": "破損", "response": "交換", "result": "resolved"},
            {"date": "令和元年5月1日", "customer": "山田 花子", "type": "問い合わせ", "category": "価格",
             "content": "値段"},
        ],
        "deals": [{"customer": "株式会社アクメ", "title": "更新", "quantity": 2, "unit_price": 1500,
                   "amount": 3000, "phase": "won", "closed_on": date(2024, 5, 1)},
                  {"customer": "株式会社アクメ", "title": "追加", "phase": "proposal",
                   "expected_close": "2026/12/1", "probability": 40}],
        "todos": [{"due": date(2026, 12, 1), "customer": "山田 花子", "content": "電話", "status": "done",
                   "done_on": date(2026, 11, 1)}],
    })
    result = validate_workbook(path, schema, today=TODAY)
    assert result.findings == []
    assert result.ok
    cust = result.frames["customers"]
    assert cust.at[2, "phone"] == "03-1234-5678" and cust.at[2, "postal_code"] == "100-0001"
    assert cust.at[2, "kana"] == "アクメ" and cust.at[2, "employees"] == 1200
    assert cust.at[3, "birthday"] == date(1985, 4, 1) and cust.at[3, "dm_consent"] == "no"
    assert cust.at[2, "dm_consent"] == "unknown"  # the default
    acts = result.frames["activities"]
    assert acts.at[3, "type"] == "inquiry" and acts.at[3, "category"] == "price"
    assert acts.at[2, "handled_by"] == "佐藤"  # blank: the workbook owner
    assert acts.at[2, "_customer_row"] == 2 and acts.at[3, "_customer_row"] == 3


def test_planted_errors_are_found_at_their_cells(make_book, schema) -> None:
    path = make_book({
        "customers": [
            dict(CO, phone=312345678, email="bad@", corporate_number="7000012050003", birthday=date(1990, 1, 1)),
            dict(PERSON, postal_code="12345", employees=-3, industry="宇宙産業"),
            {"kind": "法人", "owner": "佐藤", "kana": "カブシキガイシャエックス"},  # no 顧客名
        ],
        "activities": [
            {"date": "2024/2/30", "customer": "株式会社アクメ", "type": "call", "content": "x"},
            {"date": date(2026, 11, 30), "customer": "株式会社アクメ", "type": "complaint", "content": "遅延"},
            {"date": date(2024, 4, 1), "customer": "アクメ", "type": "inquiry", "content": "q"},
        ],
        "deals": [{"customer": "株式会社アクメ", "title": "A", "quantity": 2, "unit_price": 1000,
                   "amount": 3000, "phase": "won"}],
        "todos": [{"due": date(2026, 1, 1), "customer": "株式会社アクメ", "content": "x", "status": "完了"}],
    })
    result = validate_workbook(path, schema, today=TODAY)
    got = findings_by_cell(result)
    L = lambda e, k: letter(schema, e, k)  # noqa: E731
    expected = {
        f"顧客!{L('customers', 'phone')}2": ["phone.leading_zero"],
        f"顧客!{L('customers', 'email')}2": ["email.invalid"],
        f"顧客!{L('customers', 'corporate_number')}2": ["corporate_number.check_digit"],
        f"顧客!{L('customers', 'birthday')}2": ["only_when"],
        f"顧客!{L('customers', 'postal_code')}3": ["postal.invalid"],
        f"顧客!{L('customers', 'employees')}3": ["min"],
        f"顧客!{L('customers', 'industry')}3": ["choice"],
        f"顧客!{L('customers', 'name')}4": ["required"],
        f"活動履歴!{L('activities', 'date')}2": ["date.impossible"],
        f"活動履歴!{L('activities', 'date')}3": ["not_future"],
        f"活動履歴!{L('activities', 'category')}3": ["required_when"],
        f"活動履歴!{L('activities', 'response')}3": ["required_when"],
        f"活動履歴!{L('activities', 'customer')}4": ["ref.unknown"],
        f"活動履歴!{L('activities', 'category')}4": ["required_when"],
        f"取引!{L('deals', 'amount')}2": ["product_equals"],
        f"取引!{L('deals', 'closed_on')}2": ["required_when"],
        f"TODO!{L('todos', 'done_on')}2": ["required_when"],
    }
    assert got == expected
    msg = {f.address: f.message for f in result.findings}
    assert "312345678 → 03-1234-5678" in msg[f"顧客!{L('customers', 'phone')}2"]
    assert "もしかして「株式会社アクメ」" in msg[f"活動履歴!{L('activities', 'customer')}4"]
    assert result.error_rows["customers"] == {2, 3, 4}
    assert result.error_rows["contacts"] == set()
    assert all(f.severity == "error" for f in result.findings)


def test_english_workbook_gets_english_messages(make_book, schema) -> None:
    path = make_book({"customers": [{"kind": "corporate", "name": "Acme", "phone": 312345678}]},
                     owner="Tanaka", lang="en")
    result = validate_workbook(path, schema, today=TODAY)
    [f] = result.findings
    assert f.sheet == "Customers" and f.column == "Phone"
    assert f.message == "Phone lost its leading 0: 312345678 → type it as text, like 03-1234-5678"


def test_references_by_id_by_name_and_ambiguous(make_book, schema) -> None:
    path = make_book({
        "customers": [dict(CO, customer_id="C-000007"), dict(PERSON), dict(PERSON)],
        "todos": [{"due": date(2026, 1, 1), "customer": "C-000007", "content": "a"},
                  {"due": date(2026, 1, 1), "customer": "山田 花子", "content": "b"},
                  {"due": date(2026, 1, 1), "customer": "C-000999", "content": "c"}],
    })
    result = validate_workbook(path, schema, today=TODAY)
    todos = result.frames["todos"]
    assert todos.at[2, "customer"] == "C-000007" and todos.at[2, "_customer_row"] == 2
    rules = {(f.sheet, f.row): f.rule for f in result.findings if f.severity == "error"}
    assert rules == {("TODO", 3): "ref.ambiguous"}
    # An ID not on this 顧客 sheet refers to the master (merge checks it there): no customer row here.
    assert todos.at[4, "customer"] == "C-000999" and todos.at[4, "_customer_row"] is None
    # Two individuals with the same name are usually two people: no duplicate warning for them.
    assert [f for f in result.warnings if f.rule == "duplicate"] == []


def test_duplicate_customers_inside_one_workbook_are_warnings(make_book, schema) -> None:
    path = make_book({"customers": [dict(CO, phone="03-1111-2222"),
                                    dict(CO, name="アクメ株式会社", phone="0311112222", email="a@b.jp"),
                                    dict(PERSON, email="A@B.JP")]})
    result = validate_workbook(path, schema, today=TODAY)
    assert result.ok
    assert sorted((f.row, f.key) for f in result.warnings) == [(3, "name"), (3, "phone"), (4, "email")]


def test_custom_columns_from_config_are_validated(make_book) -> None:
    schema = build_schema({"sheets": {"顧客": {
        "disable": ["FAX", "Webサイト"],
        "columns": [{"label": "会員ランク", "type": "choice", "choices": ["金", "銀"], "required": True},
                    {"label": "来店回数", "en": "Visits", "type": "int", "min": 0}],
    }}})
    cust = schema["customers"]
    assert not cust.has("fax") and not cust.has("website")
    rank, visits = cust.columns[-2:]
    path = make_book({"customers": [dict(CO, **{rank.key: "金", visits.key: 3}),
                                    dict(PERSON, **{visits.key: -1})]}, schema=schema)
    result = validate_workbook(path, schema, today=TODAY)
    assert sorted((f.row, f.column, f.rule) for f in result.findings) == [
        (3, "会員ランク", "required"), (3, "来店回数", "min")]


def test_formula_where_a_value_belongs(make_book, schema) -> None:
    path = make_book({"customers": [CO]})
    book = openpyxl.load_workbook(path)
    col = schema["customers"].keys.index("phone") + 1
    book["顧客"].cell(2, col).value = '="03"&"12345678"'
    book.save(path)
    result = validate_workbook(path, schema, today=TODAY)
    [f] = result.findings
    assert (f.rule, f.row, f.key) == ("formula", 2, "phone")
    assert "数式" in f.message


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_annotated_copy_marks_cells_and_lists_findings(make_book, schema, tmp_path: Path) -> None:
    path = make_book({"customers": [dict(CO, phone=312345678), dict(CO, phone="03-9999-0000")]})
    before = _sha(path)
    result = validate_workbook(path, schema, today=TODAY)
    out = annotate(result, tmp_path / "out" / "annotated.xlsx")
    assert _sha(path) == before  # the original is never modified
    book = openpyxl.load_workbook(out)
    assert book.sheetnames[0] == "エラー一覧"
    phone_cell = f"{letter(schema, 'customers', 'phone')}2"
    name_cell = f"{letter(schema, 'customers', 'name')}3"
    ws = book["顧客"]
    assert ws[phone_cell].fill.start_color.rgb.endswith("FFC7CE")
    assert "先頭の0" in ws[phone_cell].comment.text
    assert ws[name_cell].fill.start_color.rgb.endswith("FFEB9C")  # the duplicate: a warning
    summary = list(book["エラー一覧"].iter_rows(min_row=2, values_only=True))
    assert [(r[0], r[1], r[2]) for r in summary] == [("エラー", "顧客", phone_cell), ("警告", "顧客", name_cell)]
    assert book["エラー一覧"].cell(2, 3).hyperlink.location == f"'顧客'!{phone_cell}" or \
        book["エラー一覧"].cell(2, 3).hyperlink.target == f"#'顧客'!{phone_cell}"
    # The annotated copy is still a team workbook that validates the same way.
    again = validate_workbook(out, schema, today=TODAY)
    assert [(f.address, f.rule) for f in again.findings] == [(f.address, f.rule) for f in result.findings]


def test_fixed_copy_normalises_unambiguous_values(make_book, schema, tmp_path: Path) -> None:
    path = make_book({"customers": [dict(CO, kana="あくめ", phone="０３－１２３４－５６７８", postal_code="1000001",
                                         email="X@ACME.JP", birthday=None),
                                    dict(PERSON, phone=312345678, birthday="R2.2.2", kind="個人")],
                      "activities": [{"date": "令和6年4月1日", "customer": "株式会社アクメ", "type": "電話",
                                      "content": "=SUM(A1)"}]})
    before = _sha(path)
    result = validate_workbook(path, schema, today=TODAY)
    out, fixes = fix(result, tmp_path / "fixed.xlsx")
    assert _sha(path) == before
    changed = {(f.sheet, f.cell): f.after for f in fixes}
    L = lambda k: letter(schema, "customers", k)  # noqa: E731
    assert changed[("顧客", f"{L('kana')}2")] == "アクメ"
    assert changed[("顧客", f"{L('phone')}2")] == "03-1234-5678"
    assert changed[("顧客", f"{L('postal_code')}2")] == "100-0001"
    assert changed[("顧客", f"{L('birthday')}3")] == date(2020, 2, 2)
    assert ("顧客", f"{L('phone')}3") not in changed  # the lost zero is reported, never repaired
    book = openpyxl.load_workbook(out)
    assert book["顧客"][f"{L('phone')}2"].value == "03-1234-5678"
    content = book["活動履歴"][f"{letter(schema, 'activities', 'content')}2"]
    assert content.value == "=SUM(A1)" and content.data_type == "s"  # text stays text
    assert "修正一覧" in book.sheetnames
    # Fixing is idempotent: the fixed copy needs no further fixes, and keeps the real error.
    again = validate_workbook(out, schema, today=TODAY)
    assert planned_fixes(again) == []
    assert [f.rule for f in again.errors] == ["phone.leading_zero"]


# --- the command line -----------------------------------------------------------------------------

def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, check=False)


def test_cli_exit_codes_and_json(make_book, tmp_path: Path) -> None:
    good = make_book({"customers": [CO]}, name="good.xlsx")
    bad = make_book({"customers": [dict(CO, phone=312345678)]}, name="bad.xlsx")
    junk = tmp_path / "junk.xlsx"
    junk.write_text("a,b\n1,2\n")
    assert run_cli("validate", str(good)).returncode == 0
    proc = run_cli("validate", str(good), str(bad), "--json", "--annotate", str(tmp_path / "ann"))
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert [f["status"] for f in data["files"]] == ["ok", "errors"]
    [finding] = data["findings"]
    assert finding["rule"] == "phone.leading_zero" and finding["severity"] == "error"
    assert finding["value"] == "312345678" and finding["address"].startswith("顧客!")
    assert Path(data["files"][1]["annotated"]).exists()
    proc = run_cli("validate", str(good), str(junk))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "text/CSV file renamed" in proc.stdout


def test_cli_usage_error_is_exit_2(tmp_path: Path) -> None:
    proc = run_cli("validate", str(tmp_path))  # a folder without workbooks
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no team workbooks (.xlsx, .xlsm)" in proc.stderr


# --- fuzz: damaged files end in a clean refusal or a read, never a traceback or a hang -------------

class _Hang(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Hang


def test_fuzz_truncated_and_mutated_workbooks(make_book, schema, tmp_path: Path) -> None:
    src = make_book({"customers": [dict(CO, phone="03-1234-5678"), PERSON],
                     "activities": [{"date": date(2024, 4, 1), "customer": "株式会社アクメ", "type": "call",
                                     "content": "x"}]}).read_bytes()
    rng = random.Random(20261123)
    cases: list[bytes] = [src[:n] for n in sorted(rng.sample(range(1, len(src)), 40))]
    for _ in range(120):
        data = bytearray(src)
        for _ in range(rng.choice((1, 2, 8, 64))):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    outcomes = {"read": 0, "refused": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i, data in enumerate(cases):
            p = tmp_path / f"fuzz{i}.xlsx"
            p.write_bytes(data)
            signal.alarm(20)
            try:
                validate_workbook(p, schema, today=TODAY)
                outcomes["read"] += 1
            except UnreadableWorkbook as exc:
                assert "\n" not in str(exc) and str(p) in str(exc)
                outcomes["refused"] += 1
            except _Hang:
                pytest.fail(f"case {i} hung")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["refused"] >= 40  # every truncation is refused, plus damaged mutations
    assert sum(outcomes.values()) == len(cases)
    # And through the command line: exit 0/1/2 with no traceback.
    for i in rng.sample(range(len(cases)), 6):
        proc = run_cli("validate", str(tmp_path / f"fuzz{i}.xlsx"))
        assert proc.returncode in (0, 1, 2)
        assert "Traceback" not in proc.stdout + proc.stderr


# --- the shortcuts: each computes what the plain code it replaced computed ------------------------

def test_all_null_rows_as_pandas_finds_them() -> None:
    import pandas as pd

    from xlcrm.intake.validate import _all_null

    frame = pd.DataFrame({"a": [None, "x", None, None, None], "b": pd.array([None, None, 1.5, None, None],
                                                                               dtype="Float64"),
                          "c": [None, None, None, date(2024, 4, 1), None]}, index=[2, 3, 5, 8, 9])
    assert _all_null(frame).equals(frame.isna().all(axis="columns"))
    assert list(_all_null(frame)) == [True, False, False, False, True]
    assert _all_null(frame.iloc[0:0]).equals(frame.iloc[0:0].isna().all(axis="columns"))


@pytest.mark.parametrize("value", ["03-1234-5678", "+81 3-1234-5678", "０３－１２３４", " 03 1234 ", "", "内線",
                                   312345678, 3.5, True, None])
def test_duplicate_keys_equal_the_normalize_folds(value) -> None:
    from xlcrm import normalize as nz

    # validate's duplicate check folds with normalize's stored-form shortcuts (shared with match, search)
    _phone_key, _company_key = nz.phone_digits_of_stored, nz.company_key_of_stored
    assert _phone_key(value) == nz.phone_digits(value)
    for name in (value, "㈱山田製作所", "山田製作所 Co., Ltd.", " 株式会社  ", "やまだ　商事"):
        assert _company_key(name) == nz.company_key(name)


def test_validation_leaves_the_garbage_collector_as_it_found_it(make_book, schema, tmp_path: Path) -> None:
    import gc

    path = make_book({"customers": [CO]})
    assert gc.isenabled()
    validate_workbook(path, schema, today=TODAY)
    assert gc.isenabled()
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UnreadableWorkbook):
        validate_workbook(bad, schema, today=TODAY)
    assert gc.isenabled()


def test_a_parser_bug_is_reported_as_an_invalid_cell(make_book, schema, monkeypatch) -> None:
    """One value crashing its parser must not hide the cell, nor stop the others being parsed."""
    import xlcrm.intake.validate as validate_module

    real = validate_module._parser

    def parser(col, entity):
        parse = real(col, entity)
        if col.key != "address":
            return parse

        def flaky(v):
            if v == "壊れる住所":
                raise RuntimeError("parser bug")
            return parse(v)

        return flaky

    monkeypatch.setattr(validate_module, "_parser", parser)
    path = make_book({"customers": [dict(CO, address="東京都千代田区１－１"), dict(CO, name="B社", address="壊れる住所")]})
    result = validate_workbook(path, schema, today=TODAY)
    col = letter(schema, "customers", "address")
    assert findings_by_cell(result) == {f"顧客!{col}3": ["invalid"]}
    assert result.frames["customers"]["address"].tolist() == ["東京都千代田区1-1", None]
