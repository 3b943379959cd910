"""Duplicate detection where customers crowd: evidence against, addresses by their parts, bounded review.

Through ``xlcrm merge`` as a user runs it (the CLI), on real team workbooks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from merge_fixtures import book, customer, records, sheet_rows
from typer.testing import CliRunner

from xlcrm import address
from xlcrm.master.match import PROPOSALS_PER_RECORD, MatchIndex, compare
from xlcrm.schema import DEFAULT_SCHEMA as S

pytestmark = pytest.mark.usefixtures("store")


def run_merge(inputs: list[Path], master: Path) -> dict:
    from xlcrm.cli import _register, app

    _register()
    master.parent.mkdir(exist_ok=True)
    result = CliRunner().invoke(app, ["merge", *map(str, inputs), "--master", str(master), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def hakata(name: str, kana: str, number: str, phone: str, email: str, **kw: object) -> dict:
    return customer(name, kana=kana, postal_code="812-0011", prefecture="福岡県",
                    address=f"福岡市博多区博多駅前{number}", phone=phone, email=email, **kw)


def test_look_alikes_with_their_own_phone_email_and_street_number_are_not_candidates(tmp_path: Path) -> None:
    # one kana apart, one postal code, one block: before, every pair went to 重複候補
    a = book(tmp_path / "a.xlsx", {"customers": [
        hakata("株式会社アイウエ商事", "アイウエショウジ", "1丁目3番4号", "092-411-1001", "info@aiue.co.jp"),
        hakata("株式会社アイウオ商事", "アイウオショウジ", "1丁目5番6号", "092-411-1002", "info@aiuo.co.jp"),
        hakata("株式会社アイカエ商事", "アイカエショウジ", "1-3-8", "092-411-1003", "info@aikae.co.jp"),
    ]})
    b = book(tmp_path / "b.xlsx", {"customers": [
        hakata("アイウカ商事株式会社", "アイウカショウジ", "1-3-5", "092-411-1004", "info@aiuka.co.jp"),
    ]}, owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    out = run_merge([a, b], master)
    assert out["duplicates_new"] == 0
    assert sheet_rows(master, "重複候補") == []
    assert len(records(master)) == 4


def test_colleagues_re_entry_is_still_found_and_reasons_against_are_worded(tmp_path: Path) -> None:
    # the same company typed again: another phone (a new line), the building left out - a 重複候補 whose
    # 根拠 says what argues against it as well
    a = book(tmp_path / "a.xlsx", {"customers": [
        hakata("株式会社アイウエ商事", "アイウエショウジ", "1丁目3番4号 駅前ビル5F", "092-411-1001", "info@aiue.co.jp"),
        hakata("株式会社アイウオ商事", "アイウオショウジ", "1丁目5番6号", "092-411-1002", "info@aiuo.co.jp"),
    ]})
    b = book(tmp_path / "b.xlsx", {"customers": [
        hakata("(株)アイウエ商事", "アイウエショウジ", "1-3-4", "092-999-0000", None),
    ]}, owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    run_merge([a, b], master)
    pairs = sheet_rows(master, "重複候補")
    assert len(pairs) == 1
    assert {pairs[0]["ID (A)"], pairs[0]["ID (B)"]} == {"C-000001", "C-000003"}
    why = pairs[0]["根拠"]
    assert "住所が番地まで一致" in why and "電話番号が違う (092-999-0000 / 092-411-1001)" in why


def test_address_spelling_is_not_a_conflict(tmp_path: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [customer("株式会社博多物産", email="info@hakata-bussan.jp",
                                                          address="福岡市博多区博多駅前3丁目13番26号")]})
    b = book(tmp_path / "b.xlsx", {"customers": [customer("博多物産(株)", email="INFO@hakata-bussan.jp",
                                                          address="福岡市博多区博多駅前３－１３－２６")]},
             owner="鈴木")
    c = book(tmp_path / "c.xlsx", {"customers": [customer("博多物産(株)", email="info@hakata-bussan.jp",
                                                          address="福岡市博多区博多駅前3-13-28")]},
             owner="田中")
    master = tmp_path / "m" / "master.xlsx"
    out = run_merge([a, b], master)
    assert out["conflicts_new"] == 0 and sheet_rows(master, "競合") == []
    # another street number is a change, and with the colleague's it is a 競合 for a person
    run_merge([c], master)
    assert [r["項目"] for r in sheet_rows(master, "競合")] == ["住所"]


def test_each_record_proposes_only_its_best_candidates(tmp_path: Path) -> None:
    # six records that all look like the new one (same name, address; no phone or e-mail to tell them
    # apart): the new one proposes its best few, not all six
    olds = [customer("株式会社アイウエ商事", kana="アイウエショウジ", postal_code="812-0011", prefecture="福岡県",
                     address=f"福岡市博多区博多駅前1丁目3番4号 {n}F") for n in range(2, 8)]
    a = book(tmp_path / "a.xlsx", {"customers": olds})
    b = book(tmp_path / "b.xlsx", {"customers": [
        customer("(株)アイウエ商事", kana="アイウエショウジ", postal_code="812-0011", prefecture="福岡県",
                 address="福岡市博多区博多駅前1-3-4")]}, owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    run_merge([a], master)
    before = len(sheet_rows(master, "重複候補"))
    run_merge([b], master)
    new = [p for p in sheet_rows(master, "重複候補") if "C-000007" in (p["ID (A)"], p["ID (B)"])]
    assert len(new) == PROPOSALS_PER_RECORD
    assert len(sheet_rows(master, "重複候補")) == before + PROPOSALS_PER_RECORD


@pytest.mark.parametrize("written", ["博多駅前1-2-3", "博多駅前１丁目２番３号", "博多駅前1丁目2-3",
                                     "博多駅前一丁目2番3号", "博多駅前1丁目2番地3", "博多駅前１－２－３"])
def test_address_parts_one_form(written: str) -> None:
    parts = address.parse(written)
    assert parts is not None
    assert (parts.town, parts.chome, parts.ban, parts.go) == ("博多駅前", 1, 2, 3)


def test_address_parts_and_comparison() -> None:
    p = address.parse("福岡県福岡市博多区博多駅前3丁目13番26号 博多駅前ビル５Ｆ")
    assert p == address.Address("福岡県", "福岡市博多区", "博多駅前", 3, 13, 26, "博多駅前ビル5f")
    assert p.floor == 5
    assert address.compare("博多駅前1丁目3番4号", "博多駅前1丁目5番6号") == "number_differs"
    assert address.compare("博多駅前1丁目3番4号", "福岡市博多区博多駅前1-3-4") == "same"
    assert address.compare("博多駅前1-3-4 駅前ビル", "博多駅前1丁目3番4号") == "building"
    assert address.compare("博多駅前1-3-4 駅前ビル2F", "博多駅前1-3-4 駅前ビル7F") == "building_differs"
    assert address.compare("丸の内1-3-4", "梅田1-3-4") == "place_differs"
    assert address.compare("12 Main Street", "12 Main St") == "unknown"
    assert address.parse("12 Main Street") is None
    assert address.comparable("博多駅前3丁目13番26号") == address.comparable("博多駅前３－１３－２６")
    assert address.comparable("博多駅前1-23") != address.comparable("博多駅前12-3")


def test_street_numbers_that_differ_count_against() -> None:
    a = {"kind": "corporate", "name": "株式会社アイウエ商事", "address": "博多駅前1丁目3番4号"}
    b = {"kind": "corporate", "name": "株式会社アイウエ商事", "address": "博多駅前1丁目5番6号"}
    assert compare(a, b) is None  # before: 住所が類似 (0.83) made it a candidate
    assert compare(a, {**b, "address": "博多駅前1-3-4 駅前ビル"}) is not None


def test_a_common_name_counts_for_less() -> None:
    index = MatchIndex(S)
    for i in range(40):  # 佐藤建設 all over Japan
        index.add(f"C{i}", {"kind": "corporate", "name": "佐藤建設株式会社", "address": f"仙台市青葉区本町{i}-1-1",
                            "phone": f"022-200-{i:04d}"})
    index.add("R", {"kind": "corporate", "name": "株式会社山鹿建設", "address": "熊本市中央区手取本町9-9-9"})
    common = {"kind": "corporate", "name": "佐藤建設(株)", "postal_code": "980-0014",
              "address": "仙台市青葉区本町3-1-1 本町ビル"}
    rare = {"kind": "corporate", "name": "山鹿建設(株)", "postal_code": "860-0806",
            "address": "熊本市中央区手取本町9-9-9 手取ビル"}
    c = [m for m in index.find(common) if m.other_id == "C3"]
    r = [m for m in index.find(rare) if m.other_id == "R"]
    assert c and r and c[0].score < r[0].score
    assert any(e.startswith("よくある名称") for e in c[0].evidence)


def test_a_common_name_counts_for_less_through_the_merge(tmp_path: Path) -> None:
    # 佐藤建設 in twelve cities, each with its own phone; a colleague types one of them again without
    # a phone, and a rare name the same way: both proposed, the common one with less weight and saying so
    cities = ("仙台市青葉区本町", "札幌市中央区北一条西", "盛岡市中央通", "秋田市山王", "山形市旅篭町", "福島市杉妻町",
              "水戸市笠原町", "宇都宮市塙田", "前橋市大手町", "さいたま市浦和区高砂", "千葉市中央区市場町", "新潟市中央区新光町")
    a = book(tmp_path / "a.xlsx", {"customers": [
        *(customer("佐藤建設株式会社", kana="サトウケンセツ", postal_code=f"9{i:02d}-0014", address=f"{city}3-1-1",
                   phone=f"022-200-{i:04d}") for i, city in enumerate(cities)),
        customer("株式会社山鹿建設", kana="ヤマガケンセツ", postal_code="860-0806", address="熊本市中央区手取本町9-9-9",
                 phone="096-300-0001")]})
    b = book(tmp_path / "b.xlsx", {"customers": [
        customer("佐藤建設(株)", kana="サトウケンセツ", postal_code="900-0014", address="仙台市青葉区本町3-1-1 本町ビル"),
        customer("山鹿建設(株)", kana="ヤマガケンセツ", postal_code="860-0806", address="熊本市中央区手取本町9-9-9 手取ビル")]},
        owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    run_merge([a, b], master)
    pairs = {frozenset((p["ID (A)"], p["ID (B)"])): p for p in sheet_rows(master, "重複候補")}
    common, rare = pairs[frozenset(("C-000001", "C-000014"))], pairs[frozenset(("C-000013", "C-000015"))]
    assert len(pairs) == 2
    assert "よくある名称 (同名 13 件)" in common["根拠"] and "よくある名称" not in rare["根拠"]
    assert common["スコア"] < rare["スコア"]


def run_cli(*args: str) -> dict:
    from xlcrm.cli import _register, app

    _register()
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def three_alike(tmp_path: Path) -> Path:
    # one company typed three times by three colleagues: no phone or e-mail to link it certainly
    rows = [("株式会社アイウエ商事", "福岡市博多区博多駅前1丁目3番4号", "佐藤"),
            ("アイウエ商事(株)", "福岡市博多区博多駅前1-3-4", "鈴木"),
            ("㈱アイウエ商事", "博多駅前一丁目3-4 駅前ビル", "田中")]
    books = [book(tmp_path / f"{i}.xlsx", {"customers": [customer(
        name, kana="アイウエショウジ", postal_code="812-0011", prefecture="福岡県", address=addr)]}, owner=who)
        for i, (name, addr, who) in enumerate(rows)]
    master = tmp_path / "m" / "master.xlsx"
    run_merge(books, master)
    return master


def test_records_that_all_look_alike_are_one_group_with_one_decision(tmp_path: Path) -> None:
    from merge_fixtures import edit_cells

    master = three_alike(tmp_path)
    pairs = sheet_rows(master, "重複候補")
    assert len(pairs) == 3 and {p["グループ"] for p in pairs} == {1}
    # one 統合 on the group's first row merges all three into the oldest record
    edit_cells(master, "重複候補", {"候補番号": pairs[0]["候補番号"]}, {"判断": "統合"})
    out = run_cli("resolve", "--master", str(master))
    assert out["duplicates_pending"] == 0
    assert list(records(master)) == ["C-000001"]
    assert sheet_rows(master, "重複候補") == []


def test_a_group_whose_rows_disagree_decides_only_the_rows_that_say_something(tmp_path: Path) -> None:
    from merge_fixtures import edit_cells

    master = three_alike(tmp_path)
    pairs = sheet_rows(master, "重複候補")
    edit_cells(master, "重複候補", {"候補番号": pairs[0]["候補番号"]}, {"判断": "別"})
    edit_cells(master, "重複候補", {"候補番号": pairs[1]["候補番号"]}, {"判断": "保留"})
    out = run_cli("resolve", "--master", str(master))
    assert out["duplicates_pending"] == 2 and len(records(master)) == 3


def test_a_contact_person_typed_by_two_colleagues_is_proposed_and_merged_on_decision(tmp_path: Path) -> None:
    from merge_fixtures import activity, edit_cells, history

    a = book(tmp_path / "a.xlsx", {
        "customers": [customer("株式会社青空商事", email="info@aozora.co.jp")],
        "contacts": [{"customer": "株式会社青空商事", "name": "山田 太郎", "email": "T.Yamada@aozora.co.jp",
                      "phone": "03-1234-5678", "title": "部長"},
                     {"customer": "株式会社青空商事", "name": "山田 花子", "email": "h.yamada@aozora.co.jp"}],
        "activities": [activity("株式会社青空商事", "見積依頼", contact="山田 太郎"),
                       activity("株式会社青空商事", "請求書送付", contact="山田 花子")]})
    b = book(tmp_path / "b.xlsx", {
        "customers": [customer("青空商事(株)", email="INFO@aozora.co.jp")],
        "contacts": [{"customer": "青空商事(株)", "name": "山田太郎", "email": "t.yamada@aozora.co.jp",
                      "phone": "0312345678", "mobile": "090-1111-2222"}],
        "activities": [activity("青空商事(株)", "訪問", contact="山田太郎")]}, owner="鈴木")
    master = tmp_path / "m" / "master.xlsx"
    out = run_merge([a, b], master)
    assert len(records(master)) == 1  # the customer linked by its e-mail
    assert len(records(master, "contacts")) == 3
    pairs = sheet_rows(master, "重複候補")
    assert out["duplicates_new"] == 1 and len(pairs) == 1
    assert {pairs[0]["ID (A)"], pairs[0]["ID (B)"]} == set(list(records(master, "contacts"))[::2])
    assert "同じ顧客の担当者" in pairs[0]["根拠"] and "メールアドレスが一致" in pairs[0]["根拠"]
    edit_cells(master, "重複候補", {"候補番号": pairs[0]["候補番号"]}, {"判断": "統合"})
    run_cli("resolve", "--master", str(master))
    contacts = records(master, "contacts")
    assert len(contacts) == 2
    taro = next(c for c in contacts.values() if c["title"] == "部長")
    assert taro["mobile"] == "090-1111-2222"  # the empty field filled from the other record
    assert sheet_rows(master, "重複候補") == []
    # the activities that name the other spelling of the person now name the one kept, with history
    by_content = {r["content"]: r["contact"] for r in records(master, "activities").values()}
    assert by_content == {"見積依頼": "山田 太郎", "請求書送付": "山田 花子", "訪問": "山田 太郎"}
    moved = [h for h in history(master) if h["entity"] == "activities" and h["field"] == "contact"]
    assert [(h["old"], h["new"], h["how"]) for h in moved] == [("山田太郎", "山田 太郎", "decision")]


def test_a_customer_typed_twice_in_one_workbook_is_matched_with_the_same_model(tmp_path: Path) -> None:
    a = book(tmp_path / "a.xlsx", {"customers": [
        hakata("株式会社アイウエ商事", "アイウエショウジ", "1丁目3番4号", "092-411-1001", "info@aiue.co.jp"),
        hakata("アイウエ商事(株)", "アイウエショウジ", "1-3-4", "0924111001", None),  # the same, again
        hakata("株式会社アイウオ商事", "アイウオショウジ", "1丁目5番6号", "092-411-1002", "info@aiuo.co.jp"),
        hakata("(株)アイウエ商事", "アイウエショウジ", "1-3-4 駅前ビル", None, None)]})  # again, no phone
    master = tmp_path / "m" / "master.xlsx"
    out = run_merge([a], master)
    assert len(records(master)) == 3  # the second row linked to the first by its phone
    pairs = sheet_rows(master, "重複候補")
    assert out["duplicates_new"] == 1 and {pairs[0]["ID (A)"], pairs[0]["ID (B)"]} == {"C-000001", "C-000003"}
