"""Search finds what people mean, best first: place names and prefectures, readings typed half in kana,
a company before contact persons, one's own customers first, list filters, and words from activities,
deals and TODOs.  On a team merged through the CLI, as an admin runs it; the right answers are known
from the workbooks written here.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from merge_fixtures import activity, book, customer, delete_rows, edit_cells
from typer.testing import CliRunner

from xlcrm.cli import _register, app

runner = CliRunner()
_register()


def _c(name: str, kana: str, pref: str, address: str, phone: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("status", "active")
    return customer(name, kana=kana, prefecture=pref, address=address, phone=phone, dm_consent="yes", **kw)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("team")
    sato = book(root / "team" / "sato.xlsx", {
        "customers": [
            _c("山田精機株式会社", "ヤマダセイキ", "北海道", "札幌市中央区北一条西2-1", "011-200-0001"),
            _c("北斗電機株式会社", "ホクトデンキ", "東京都", "新宿区西新宿1-2-3", "03-3300-0002"),
            _c("中村商事株式会社", "ナカムラショウジ", "大阪府", "大阪市北区梅田1-1-1", "06-6300-0003"),
            _c("青空商事株式会社", "アオゾラショウジ", "東京都", "千代田区丸の内1-1-1", "03-3300-0004",
               status="prospect"),
        ],
        "contacts": [{"customer": "青空商事株式会社", "name": "山田 太郎", "kana": "ヤマダ タロウ"},
                     {"customer": "山田精機株式会社", "name": "佐々木 一郎", "kana": "ササキ イチロウ"}],
        "activities": [
            activity("北斗電機株式会社", "LED照明の点灯不良でクレーム", date(2024, 5, 10), type="complaint",
                     category="product", response="交換品を発送"),
            activity("中村商事株式会社", "ソファの見積を提出", date(2024, 5, 12)),
        ],
        "deals": [{"customer": "青空商事株式会社", "title": "応接室ソファ一式", "product": "革張りソファ",
                   "phase": "proposal", "amount": 480000, "expected_close": date(2024, 7, 31)}],
        "todos": [{"customer": "山田精機株式会社", "content": "保守契約の更新案内を送る", "due": date(2024, 6, 30),
                   "assignee": "佐藤"}],
    }, owner="佐藤")
    suzuki = book(root / "team" / "suzuki.xlsx", {
        "customers": [
            _c("中村工業株式会社", "ナカムラコウギョウ", "愛知県", "名古屋市中区栄1-1-1", "052-200-0005"),
            _c("ホクセイ電機株式会社", "ホクセイデンキ", "北海道", "函館市本町1-1", "0138-20-0006"),
            _c("ホクリク電機株式会社", "ホクリクデンキ", "富山県", "富山市桜町1-1", "076-400-0007"),
            _c("ホクトウ電設株式会社", "ホクトウデンセツ", "宮城県", "仙台市青葉区1-1", "022-200-0008"),
            _c("やまだ物産株式会社", "ヤマダブッサン", "東京都", "新宿区高田馬場1-1", "03-3300-0009"),
        ],
    }, owner="鈴木")
    m = root / "m" / "master.xlsx"
    m.parent.mkdir()
    res = runner.invoke(app, ["merge", str(sato), str(suzuki), "--master", str(m), "--today", "2024-06-01"])
    assert res.exit_code in (0, 1), res.output
    return m


def find(master: Path, *args: str) -> list[dict[str, Any]]:
    res = runner.invoke(app, ["search", "--master", str(master), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def names(hits: list[dict[str, Any]]) -> list[str | None]:
    return [h["contact_name"] or h["name"] for h in hits]


def test_place_names_and_prefectures(master: Path) -> None:
    assert names(find(master, "札幌")) == ["山田精機株式会社"]
    shinjuku = set(names(find(master, "新宿")))
    assert {"北斗電機株式会社", "やまだ物産株式会社"} <= shinjuku
    tokyo = {h["name"] for h in find(master, "東京")}
    assert tokyo == {"北斗電機株式会社", "青空商事株式会社", "やまだ物産株式会社"}
    assert {h["name"] for h in find(master, "東京都")} == tokyo


@pytest.mark.parametrize(("typed", "expected"), [
    ("やまだ精機", "山田精機株式会社"), ("ほくと電機", "北斗電機株式会社"), ("ﾎｸﾄ電機", "北斗電機株式会社"),
    ("ホクト電機", "北斗電機株式会社"),
])
def test_reading_half_in_kana_finds_the_company_first(master: Path, typed: str, expected: str) -> None:
    hits = find(master, typed)
    assert hits and hits[0]["name"] == expected, [(h["name"], h["why"]) for h in hits]
    assert "フリガナ" in hits[0]["why"]


def test_company_before_contact_persons(master: Path) -> None:
    hits = find(master, "やまだ")
    order = names(hits)
    assert order.index("山田精機株式会社") < order.index("山田 太郎")
    assert order.index("やまだ物産株式会社") < order.index("山田 太郎")


def test_own_customers_first_at_equal_relevance(master: Path) -> None:
    assert names(find(master, "中村", "--me", "鈴木"))[:2] == ["中村工業株式会社", "中村商事株式会社"]
    assert names(find(master, "中村", "--me", "佐藤"))[:2] == ["中村商事株式会社", "中村工業株式会社"]


def test_filters_make_lists(master: Path) -> None:
    assert {h["name"] for h in find(master, "--owner", "鈴木", "--prefecture", "北海道")} == {"ホクセイ電機株式会社"}
    assert {h["name"] for h in find(master, "電機", "--owner", "佐藤")} == {"北斗電機株式会社"}
    assert {h["name"] for h in find(master, "--status", "見込み")} == {"青空商事株式会社"}
    assert {h["name"] for h in find(master, "商事", "--prefecture", "東京")} == {"青空商事株式会社"}
    res = runner.invoke(app, ["search", "--master", str(master), "--status", "ねている"])
    assert res.exit_code == 2 and "ステータス" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["search", "--master", str(master)])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("typed", "customer", "record"), [
    ("LED照明", "北斗電機株式会社", "A-"), ("ＬＥＤ", "北斗電機株式会社", "A-"), ("点灯不良", "北斗電機株式会社", "A-"),
    ("交換品", "北斗電機株式会社", "A-"), ("見積", "中村商事株式会社", "A-"), ("革張り", "青空商事株式会社", "D-"),
    ("更新案内", "山田精機株式会社", "T-"),
])
def test_words_from_activities_deals_and_todos(master: Path, typed: str, customer: str, record: str) -> None:
    hits = find(master, typed)
    assert hits and hits[0]["name"] == customer, hits
    assert hits[0]["record_id"].startswith(record) and hits[0]["snippet"]
    assert typed in hits[0]["why"] or "LED" in hits[0]["why"]


def test_record_words_rank_below_the_customer_itself(master: Path) -> None:
    # ソファ is in 中村商事's activity and 青空商事's deal; neither name holds it
    assert {h["name"] for h in find(master, "ソファ")} == {"中村商事株式会社", "青空商事株式会社"}
    hits = find(master, "商事")
    assert all(h["record_id"] is None for h in hits[:2])  # names first


def test_record_words_follow_merges(master: Path, tmp_path: Path) -> None:
    # a re-merge that adds an activity indexes its words (update, not rebuild)
    extra = book(tmp_path / "later.xlsx", {
        "customers": [_c("中村工業株式会社", "ナカムラコウギョウ", "愛知県", "名古屋市中区栄1-1-1", "052-200-0005")],
        "activities": [activity("中村工業株式会社", "フォークリフトの点検を依頼された", date(2024, 6, 3))],
    }, owner="鈴木")
    res = runner.invoke(app, ["merge", str(extra), "--master", str(master), "--today", "2024-06-05"])
    assert res.exit_code in (0, 1), res.output
    hits = find(master, "フォークリフト")
    assert hits and hits[0]["name"] == "中村工業株式会社"
    assert names(find(master, "LED照明"))[:1] == ["北斗電機株式会社"]


def test_two_character_words_follow_merges_edits_and_deletions(tmp_path: Path) -> None:
    # 末広 / 帯広 only in a 住所, 雨漏 / 棚卸 only in an activity: two-character words no name holds
    # are looked up in the index of character pairs, which every merge keeps current.
    team = book(tmp_path / "team" / "sato.xlsx", {
        "customers": [_c("丸山精機株式会社", "マルヤマセイキ", "北海道", "函館市末広町1-1", "0138-20-1001"),
                      _c("川口商事株式会社", "カワグチショウジ", "北海道", "釧路市北大通1-1", "0154-20-1002"),
                      _c("大森物産株式会社", "オオモリブッサン", "北海道", "帯広市西二条南1-1", "0155-20-1003")],
        "activities": [activity("川口商事株式会社", "屋根の雨漏りを点検", date(2024, 5, 10)),
                       activity("大森物産株式会社", "倉庫の棚卸を手伝う", date(2024, 5, 11))],
    }, owner="佐藤")
    m = tmp_path / "m" / "master.xlsx"
    m.parent.mkdir()

    def run(*args: str) -> None:
        res = runner.invoke(app, [*args, "--master", str(m)])
        assert res.exit_code in (0, 1), res.output

    def found(word: str) -> list[str | None]:
        return names(find(m, word))

    run("merge", str(team), "--today", "2024-06-01")
    assert found("末広") == ["丸山精機株式会社"] and found("帯広") == ["大森物産株式会社"]
    assert found("雨漏") == ["川口商事株式会社"] and found("棚卸") == ["大森物産株式会社"]

    # 佐藤 edits the distributed workbook: a new 住所, another activity text, a customer deleted.
    run("distribute", "--out", str(tmp_path / "out"))
    wb = tmp_path / "out" / "佐藤.xlsx"
    assert edit_cells(wb, "顧客", {"顧客名": "丸山精機株式会社"}, {"住所": "函館市宝来町2-2"}) == 1
    assert edit_cells(wb, "活動履歴", {"内容": "屋根の雨漏りを点検"}, {"内容": "外壁の塗装を相談"}) == 1
    assert delete_rows(wb, "顧客", {"顧客名": "大森物産株式会社"}) == 1
    run("merge", str(wb), "--today", "2024-06-05")
    assert found("宝来") == ["丸山精機株式会社"] and found("末広") == []
    assert found("塗装") == ["川口商事株式会社"] and found("雨漏") == []

    # The deletion, decided in 削除候補, takes the customer and its activity out of search.
    assert edit_cells(m, "削除候補", {"ID": "C-000003"}, {"判断": "削除"}) == 1
    run("resolve")
    assert found("帯広") == [] and found("棚卸") == []
    assert found("宝来") == ["丸山精機株式会社"] and found("塗装") == ["川口商事株式会社"]
