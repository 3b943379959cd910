"""Duplicate detection: each rule, each trap that must never become a wrong automatic merge, the
evidence texts, and properties of the index.  Small hand-made records only; quality on real-sized
data is measured in benchmarks/bench_dedupe.py."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlcrm import normalize
from xlcrm.master.match import Match, MatchIndex, address_key, compare, customer_keys
from xlcrm.schema import DEFAULT_SCHEMA, build_schema

CORP_A = "7000012050002"  # valid check digit
CORP_B = "5010001008846"  # valid check digit, another company
CORP_A_TYPO = "8000012050002"  # CORP_A with a wrong check digit


def corporate(**kw: Any) -> dict[str, Any]:
    rec = {"kind": "corporate", "name": "株式会社山田製作所", "kana": "ヤマダセイサクショ", "prefecture": "東京都",
           "address": "千代田区丸の内1丁目2番3号", "postal_code": "100-0005", "phone": "03-1234-5678"}
    rec.update(kw)
    return rec


def person(**kw: Any) -> dict[str, Any]:
    rec = {"kind": "individual", "name": "山田 太郎", "kana": "ヤマダ タロウ", "prefecture": "大阪府",
           "address": "大阪市北区梅田2-4-9", "postal_code": "530-0001", "phone": "090-1111-2222"}
    rec.update(kw)
    return rec


def kind_of(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    m = compare(a, b, other_id="X")
    return m.kind if m else None


# --- rules and traps: (existing record, incoming record, expected kind, why) -----------------------

CASES: list[tuple[dict[str, Any], dict[str, Any], str | None, str]] = [
    # certain
    (corporate(corporate_number=CORP_A), corporate(name="山田製作所(株)", phone=None, address=None,
                                                   corporate_number=CORP_A), "certain", "same 法人番号"),
    (corporate(email="info@yamada.co.jp", phone=None), corporate(email="Info@YAMADA.co.jp", phone=None),
     "certain", "same e-mail, case folded"),
    (corporate(), corporate(name="山田製作所 株式会社", phone="０３（１２３４）５６７８", address=None),
     "certain", "same phone (full width, brackets) and 前株/後株"),
    (corporate(), corporate(name="㈱ 山田製作所", kana="やまだせいさくしょ", address="千代田区丸の内１－２－３"),
     "certain", "㈱, hiragana フリガナ"),
    (person(), person(name="山田太郎", kana="やまだ たろう", address=None), "certain",
     "same phone, name written without the space"),
    (person(name="渡辺 太郎", kana="ワタナベ タロウ"), person(name="渡邊 太郎", kana=None), "certain",
     "variant kanji 邊 = 辺"),
    (corporate(name="東和電気株式会社", kana="トウワデンキ"), corporate(name="東和電機株式会社", kana="トウワデンキ"),
     "certain", "kanji typo, same reading, same phone"),
    (corporate(name="有限会社山田製作所", corporate_number=CORP_A),
     corporate(name="株式会社山田製作所", corporate_number=CORP_A), "certain",
     "有限会社 became 株式会社: the 法人番号 stays"),
    # probable: name or reading similar plus a partial address or phone
    (corporate(phone=None), corporate(phone=None, address="千代田区丸の内一丁目2番3号 丸の内ビル5F"), "probable",
     "same company key, same address up to the building, no identifying key"),
    (corporate(phone=None, kana="ヤマダセイサクショ"),
     corporate(name="ヤマダ製作所", phone=None, address=None, kana="やまだせいさくしょ"), "probable",
     "similar name, same reading, postal code only"),
    (person(), person(phone="090-9999-0000", address="大阪市北区梅田2丁目4番9号"), "probable",
     "same person, new phone: name and address"),
    (corporate(), corporate(name="株式会社山田製作所 本社"), "probable", "branch named on one side only"),
    (corporate(), corporate(prefecture="北海道", address="札幌市中央区北1条西2丁目", postal_code="060-0001"),
     "probable", "same phone and name, another prefecture: moved, or another company"),
    (corporate(), corporate(name="有限会社山田製作所"), "probable", "same phone, another legal form"),
    (corporate(name="山田建設株式会社", kana=None), corporate(name="山田建設工業株式会社", kana=None),
     "probable", "a longer name at the same phone: a group company, or a fuller name"),
    (person(email="taro@example.ne.jp", birthday="1980-04-01"),
     person(name="田中 太郎", kana="タナカ タロウ", phone=None, email="taro@example.ne.jp", birthday="1980-04-01",
            address="東京都港区芝1-1-1", postal_code="105-0014"), "probable",
     "new family name after marriage: same given name, e-mail and birthday"),
    (person(birthday="1990-05-05"), person(name="山田 次郎", kana="ヤマダ ジロウ", birthday="1990-05-05"),
     "probable", "twins: same birthday, another given name"),
    (person(birthday="1980-04-01"), person(birthday="1980-04-10"), "probable",
     "same phone and name, birthday one digit apart: a typo, or father and son"),
    (corporate(phone=None, corporate_number=CORP_A),
     corporate(phone=None, corporate_number=CORP_A_TYPO), "probable",
     "法人番号 with a bad check digit is ignored; name and address still make a candidate"),
    # traps: never certain, mostly no match at all
    (corporate(name="ABCマート 渋谷店", kana="エービーシーマート", email="info@abc-mart.jp", corporate_number=CORP_A,
               address="渋谷区道玄坂2-1-1", postal_code="150-0043"),
     corporate(name="ABCマート 新宿店", kana="エービーシーマート", email="info@abc-mart.jp", corporate_number=CORP_A,
               address="新宿区新宿3-1-1", postal_code="160-0022"),
     None, "two branches of a chain share phone, e-mail and 法人番号"),
    (corporate(name="株式会社山田製作所 大阪支店", prefecture="大阪府", address="大阪市北区梅田1-1-1"),
     corporate(name="山田製作所(株)名古屋営業所", prefecture="愛知県", address="名古屋市中村区名駅1-1-1"),
     None, "支店 and 営業所 of one company"),
    (person(email="yamada.family@gmail.com"),
     person(name="山田 花子", kana="ヤマダ ハナコ", email="yamada.family@gmail.com"), None,
     "family members share phone, e-mail and address"),
    (person(name="山田太郎", kana=None), person(name="山田花子", kana=None), None,
     "family members, names written without space and no reading"),
    (person(name="佐々木 裕樹", kana="ササキ ユウキ"), person(name="佐々木 直樹", kana="ササキ ナオキ"), None,
     "one kanji apart, but the readings say two people"),
    (person(), person(name="鈴木 一郎", kana="スズキ イチロウ"), None,
     "another name altogether at the same phone and address: another member of the household"),
    (person(email="yamada@gmail.com", phone=None, address=None, postal_code=None),
     person(email="yamada@yahoo.co.jp", phone=None, address=None, postal_code=None), None,
     "same local part at another free-mail domain is not the same address"),
    (corporate(corporate_number=CORP_A, phone=None, address="港区芝1-1-1", postal_code="105-0014"),
     corporate(name="株式会社田中商事", kana="タナカショウジ", corporate_number=CORP_A_TYPO, phone=None), None,
     "a mistyped 法人番号 equal to another company's but for the check digit"),
    (corporate(phone="03-1111-1111"), corporate(phone="06-2222-2222", prefecture="大阪府",
                                                address="大阪市中央区本町1-1-1", postal_code="541-0053"),
     None, "same company name in another prefecture"),
    (person(phone="03-1111-1111", address="横浜市中区1-1-1", postal_code=None),
     person(phone="06-2222-2222", address="神戸市中央区2-2-2", postal_code=None, prefecture="兵庫県"), None,
     "同姓同名: same name, nothing else"),
    (corporate(name="株式会社昭和保険", email="kaikei@zeirishi.jp", phone=None),
     corporate(name="平和運輸株式会社", kana="ヘイワウンユ", email="kaikei@zeirishi.jp", phone=None,
               address="横浜市西区1-1-1", postal_code="220-0001", prefecture="神奈川県"), None,
     "one accountant's e-mail on two unrelated clients"),
    (person(name="山田 太郎", kana="ヤマダ タロウ"), corporate(name="山田商店", kana="ヤマダショウテン",
                                                          address="大阪市北区梅田2-4-9", prefecture="大阪府",
                                                          phone="090-1111-2222"),
     None, "a shop and its owner share a phone: different kind, different name"),
    (corporate(corporate_number=CORP_A), corporate(corporate_number=CORP_B), "probable",
     "two valid, different 法人番号 at one address and phone: never certain"),
    (person(name="山田 太郎", birthday="1950-01-01"), person(name="山田 太郎", birthday="1980-01-01"), "probable",
     "same name and phone, another birthday: father and son of one name"),
]


@pytest.mark.parametrize(("existing", "incoming", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_rules_and_traps(existing: dict[str, Any], incoming: dict[str, Any], expected: str | None, why: str) -> None:
    assert kind_of(incoming, existing) == expected, why
    assert kind_of(existing, incoming) == expected, f"{why} (other way round)"


@pytest.mark.parametrize(("existing", "incoming", "expected", "why"),
                         [c for c in CASES if c[2] != "certain"], ids=[c[3] for c in CASES if c[2] != "certain"])
def test_traps_through_the_index(existing: dict[str, Any], incoming: dict[str, Any], expected: str | None,
                                 why: str) -> None:
    index = MatchIndex(DEFAULT_SCHEMA)
    index.add("C-000001", existing)
    found = index.find(incoming)
    assert [m.kind for m in found] == ([expected] if expected else []), why


# --- evidence --------------------------------------------------------------------------------------

def test_evidence_japanese() -> None:
    m = compare(corporate(name="山田製作所(株)", phone="0312345678", corporate_number=CORP_A),
                corporate(corporate_number=CORP_A), other_id="C-000007")
    assert m is not None and m.other_id == "C-000007" and m.kind == "certain"
    assert m.evidence[:3] == ("法人番号が一致 (7000012050002)", "電話番号が一致 (03-1234-5678)", "社名が一致 (山田製作所(株))")
    assert "住所が一致 (千代田区丸の内1丁目2番3号)" in m.evidence
    assert "郵便番号が一致 (100-0005)" in m.evidence
    assert len(m.codes) == len(m.evidence)
    assert m.codes[:3] == ("corporate_number", "phone", "company_name")


def test_evidence_english() -> None:
    m = compare(person(email="Taro@Example.ne.jp"), person(email="taro@example.ne.jp"), lang="en")
    assert m is not None
    assert "Same e-mail address (taro@example.ne.jp)" in m.evidence
    assert "Same phone number (090-1111-2222)" in m.evidence
    assert "Same name (山田 太郎)" in m.evidence


def test_evidence_similarity_and_cautions() -> None:
    m = compare(corporate(name="株式会社山田製作所 本社"), corporate())
    assert m is not None and m.kind == "probable"
    assert any(re.fullmatch(r"社名が類似 \(0\.\d\d\)", e) for e in m.evidence)
    assert "支店・店舗名が片方のみ (本社)" in m.evidence
    # positives first, what argues against last
    assert m.codes.index("phone") < m.codes.index("branch_one_side")
    m = compare(person(birthday="1990-05-05"), person(name="山田 次郎", kana="ヤマダ ジロウ", birthday="1990-05-05"),
                lang="en")
    assert m is not None and "Different given name (太郎 / 次郎)" in m.evidence


def test_score_orders_matches() -> None:
    index = MatchIndex(DEFAULT_SCHEMA)
    index.add("C-1", corporate(phone=None, address="千代田区丸の内1-2-3"))  # probable: name + address
    index.add("C-2", corporate(phone=None, address="千代田区丸の内1-2-3", email="info@yamada.co.jp"))  # certain
    index.add("C-3", corporate(phone=None, address="千代田区丸の内1-2-3 丸の内ビル"))  # probable, weaker
    found = index.find(corporate(phone=None, email="INFO@yamada.co.jp"))
    assert [m.other_id for m in found] == ["C-2", "C-1", "C-3"]
    assert [m.kind for m in found] == ["certain", "probable", "probable"]
    assert found[1].score > found[2].score >= 0.5
    assert all(0.0 <= m.score <= 1.0 for m in found)


# --- keys ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("written", [
    "千代田区丸の内1-2-3", "千代田区丸の内1丁目2番3号", "千代田区丸の内１－２－３", "千代田区丸の内1丁目2-3",
    "千代田区丸の内一丁目二番三号", "千代田区丸の内1丁目2番地3", "千代田区丸の内1ー2ー3", "東京都千代田区丸の内1-2-3",
    "千代田区 丸の内 1-2-3", "千代田区丸の内1の2の3",
])
def test_address_key_one_form(written: str) -> None:
    assert address_key(written)[1] == "千代田区丸の内1-2-3"


def test_address_key_prefecture_and_building() -> None:
    assert address_key("東京都千代田区丸の内1-2-3 丸の内ビル5F") == ("東京都", "千代田区丸の内1-2-3丸の内ビル5f")
    assert address_key("千代田区丸の内1-2-3", "東京都")[0] == "東京都"
    assert address_key("大阪府大阪市北区1-1", "大阪府") == ("大阪府", "大阪市北区1-1")
    assert address_key("十日町市本町二十三番地") == (None, "十日町市本町23")
    assert address_key(None) == (None, "")


def test_customer_keys() -> None:
    k = customer_keys(corporate(corporate_number=CORP_A_TYPO, email=" Info@Yamada.CO.JP ", fax="03-1234-5679"))
    assert k.corporate_number is None  # a bad check digit never identifies anybody
    assert k.email == "info@yamada.co.jp"
    assert k.phones == ("0312345678", "0312345679")
    assert k.name == normalize.company_key("株式会社山田製作所") == "山田製作所"
    assert k.form == "株式会社"
    p = customer_keys(person(name="山田　太郎", kana="やまだ たろう", birthday="1980/4/1"))
    assert p.name_parts == ("山田", "太郎") and p.kana_parts == ("ヤマダ", "タロウ")
    assert p.birthday == "1980-04-01"
    assert customer_keys(person(email="someone@example.com")).email is None  # placeholder domain
    assert customer_keys({"kind": "corporate", "name": "有限会社スズキホケン"}).kana == "スズキホケン"


# --- the index -------------------------------------------------------------------------------------

def test_index_add_replace_remove() -> None:
    index = MatchIndex(DEFAULT_SCHEMA)
    index.add_many([("C-1", corporate()), ("C-2", person())])
    assert len(index) == 2 and "C-1" in index
    assert [m.other_id for m in index.find(corporate())] == ["C-1"]
    index.add("C-1", corporate(name="株式会社田中商事", kana="タナカショウジ", phone="06-9999-9999",
                               address="大阪市中央区1-1", postal_code="541-0001", prefecture="大阪府"))
    assert index.find(corporate()) == []  # re-indexed under its new values
    index.remove("C-1")
    index.remove("C-404")  # unknown: nothing to do
    assert len(index) == 1 and index.find(corporate(name="株式会社田中商事", phone="06-9999-9999")) == []


def test_index_honours_disabled_columns() -> None:
    schema = build_schema({"sheets": {"customers": {"disable": ["fax"]}}})
    index = MatchIndex(schema)
    index.add("C-1", corporate(phone=None, fax="03-5555-6666", address=None, postal_code=None))
    assert index.find(corporate(phone="03-5555-6666", address=None, postal_code=None)) == []
    index = MatchIndex(DEFAULT_SCHEMA)
    index.add("C-1", corporate(phone=None, fax="03-5555-6666", address=None, postal_code=None))
    assert [m.kind for m in index.find(corporate(phone="03-5555-6666", address=None, postal_code=None))] == ["certain"]


def test_index_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="lang"):
        MatchIndex(DEFAULT_SCHEMA, lang="fr")


def test_many_chain_branches_stay_apart() -> None:
    """A head-office phone on fifty branches: none of them is a duplicate of another."""
    index = MatchIndex(DEFAULT_SCHEMA)
    towns = ["渋谷", "新宿", "池袋", "上野", "品川", "目黒", "中野", "荻窪", "吉祥寺", "立川"]
    for i in range(50):
        index.add(f"C-{i}", corporate(name=f"ABCマート {towns[i % 10]}{i}号店", kana="エービーシーマート",
                                      address=f"渋谷区{i + 1}-1-1", postal_code=None))
    for i in range(50):
        rec = corporate(name=f"ABCマート {towns[i % 10]}{i}号店", kana="エービーシーマート",
                        address=f"渋谷区{i + 1}-1-1", postal_code=None)
        found = index.find(rec, exclude=f"C-{i}")
        assert found == [], found


# --- properties ------------------------------------------------------------------------------------

KANJI = "山田川中村小林佐藤鈴木高橋渡辺伊藤加松本井上木清水森池商事建設電気工業製作所ABC"
names = st.text(alphabet=KANJI + " ", min_size=1, max_size=12).filter(lambda s: s.strip() != "")
emails = st.from_regex(r"[a-z][a-z0-9._]{0,10}@(corp|shop|mail)\.(co\.jp|jp|com)", fullmatch=True)
bodies = st.from_regex(r"[0-9]{12}", fullmatch=True)
phones = st.from_regex(r"0[1-9]0-[1-9][0-9]{3}-[0-9]{4}", fullmatch=True)
records = st.fixed_dictionaries({
    "kind": st.sampled_from(["corporate", "individual"]),
    "name": names,
    "kana": st.none() | st.text(alphabet="アイウエオカキクケコサシスセソヤマダタロウ ", max_size=10),
    "email": st.none() | emails,
    "phone": st.none() | phones,
    "address": st.none() | st.sampled_from(["千代田区丸の内1-2-3", "大阪市北区梅田2丁目4番9号", "港区芝1-1-1"]),
    "postal_code": st.none() | st.sampled_from(["100-0005", "530-0001"]),
    "birthday": st.none() | st.dates().map(lambda d: d.isoformat()),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records, body=st.none() | bodies, others=st.lists(records, max_size=6), with_email=st.booleans())
def test_added_record_is_found_as_certain(record: dict[str, Any], body: str | None, others: list[dict[str, Any]],
                                          with_email: bool) -> None:
    record = dict(record)
    if body is not None:
        record["corporate_number"] = f"{normalize.corporate_number_check_digit(body)}{body}"
    if record["email"] is None and record.get("corporate_number") is None:
        record["email"] = "someone@corp.co.jp" if with_email else None
    index = MatchIndex(DEFAULT_SCHEMA)
    for i, other in enumerate(others):
        index.add(f"O-{i}", other)
    index.add("SELF", record)
    found = {m.other_id: m for m in index.find(record)}
    if record["email"] or record.get("corporate_number"):
        assert found["SELF"].kind == "certain"
    else:
        assert "SELF" not in found or found["SELF"].kind in ("certain", "probable")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records, min_size=1, max_size=8), pick=st.integers(min_value=0, max_value=7))
def test_find_never_returns_exclude_and_is_ordered(recs: list[dict[str, Any]], pick: int) -> None:
    index = MatchIndex(DEFAULT_SCHEMA)
    ids = [f"C-{i}" for i in range(len(recs))]
    index.add_many(zip(ids, recs, strict=True))
    me = ids[pick % len(ids)]
    found = index.find(recs[pick % len(recs)], exclude=me)
    assert me not in [m.other_id for m in found]
    assert all(isinstance(m, Match) and m.other_id in ids for m in found)
    keys = [(m.kind != "certain", -m.score) for m in found]
    assert keys == sorted(keys)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records, min_size=1, max_size=8), query=records)
def test_find_keys_skips_only_pairs_that_cannot_match(recs: list[dict[str, Any]], query: dict[str, Any]) -> None:
    """find_keys settles most candidates without the full comparison; it must agree with compare() on each."""
    index = MatchIndex(DEFAULT_SCHEMA, lang="en")
    index.add_many((f"C-{i}", r) for i, r in enumerate(recs))
    keys = index.keys_for(query)
    expected = [m for i, r in enumerate(recs) if f"C-{i}" in index.candidates(keys)
                and (m := compare(keys, r, lang="en", other_id=f"C-{i}")) is not None]
    expected.sort(key=lambda m: (m.kind != "certain", -m.score, m.other_id))
    assert index.find_keys(keys) == expected == index.find(query)


def test_keys_api_indexes_like_add() -> None:
    near = corporate(phone=None, postal_code=None, address="千代田区丸の内1-2-3 丸の内ビル5階")  # similar address only
    twin = person(phone=None, postal_code=None, address=None, birthday="1980-04-10")
    by_keys, by_record = MatchIndex(DEFAULT_SCHEMA), MatchIndex(DEFAULT_SCHEMA)
    for i, rec in enumerate((near, twin)):
        by_keys.add_keys(f"C-{i}", by_keys.keys_for(rec))
        by_record.add(f"C-{i}", rec)
    for q in (corporate(phone=None, postal_code=None), person(phone=None, postal_code=None, address=None,
                                                            birthday="1980-04-01")):
        found = by_keys.find_keys(by_keys.keys_for(q))
        assert found == by_record.find(q) and [m.kind for m in found] == ["probable"]


# --- the fast paths: same keys, same matches as the plain folds and the full comparison ----------------
# keys_for folds each value once and skips work a stored value does not need; find_keys tests candidates
# in bulk and settles most pairs before the full comparison.  Each shortcut must change nothing: these
# tests hold them against the definitions they shortcut (normalize's folds, _near_place_or_day,
# _compare/_decide over every candidate) on awkward spellings and on a generated team of customers.

NASTY = (" 　\t\n\u00a0\u200b\x00.,・、。&()（）-－ー‐—~〜+81０１２3456789abckloptyLTDİß株有同会社式限法人団組合ャ山田"
         "やまだヤマダｶﾞｶﾀ゛゜\u3099㈱㈲é\u0301_²Ⅻ")
FORMS = ["株式会社", "(株)", "（株）", "㈱", " ( 有 ) ", "有限会社", "合同会社", "co., ltd.", "Inc.", "K.K.", "kabushiki gaisha"]
nasty_text = st.lists(st.sampled_from(FORMS) | st.text(alphabet=NASTY, max_size=4), max_size=5).map("".join)


@settings(max_examples=600, deadline=None)
@given(value=nasty_text | st.none() | st.integers() | st.floats() | st.booleans() | st.dates())
def test_folds_of_text_equal_the_plain_folds(value: Any) -> None:
    assert normalize.stored_text(value) == normalize.text(value)
    t = normalize.text(value)
    if t is None or not isinstance(value, str):
        return
    assert normalize.code_of_text(t) == normalize.code(value)
    assert normalize.kana_of_text(t) == normalize.kana_text(value)
    assert normalize.phone_digits_of_text(t) == normalize.phone_digits(value)
    assert normalize.company_key_of_text(t) == normalize.company_key(value)


SAME_KEYS = [
    ("legal form: ㈱, (株), （株）, 前株 / 後株, spaced",
     [{"name": n} for n in ("㈱山田製作所", "(株)山田製作所", "（株）山田製作所", "株式会社 山田製作所", "山田製作所株式会社",
                            "山田製作所 ㈱")], ("name", "form")),
    ("full width and half width", [{"name": "ＡＢＣ商事株式会社", "kana": "ｴｰﾋﾞｰｼｰｼｮｳｼﾞ"},
                                    {"name": "ABC商事株式会社", "kana": "エービーシーショウジ"}], ("name", "kana")),
    ("hiragana and katakana readings", [{"kind": "individual", "name": "山田 太郎", "kana": k}
                                        for k in ("やまだ たろう", "ヤマダ タロウ", "ﾔﾏﾀﾞ ﾀﾛｳ")], ("kana", "kana_parts")),
    ("phone hyphens, brackets, width, ー", [{"phone": p} for p in ("03-1234-5678", "0312345678", "03(1234)5678",
                                                                   "０３（１２３４）５６７８", "03ー1234ー5678",
                                                                   "+81 3 1234 5678")], ("phones",)),
    ("e-mail case and spaces", [{"email": e} for e in ("info@yamada.co.jp", "Info@YAMADA.co.jp", " INFO@yamada.CO.JP ")],
     ("email",)),
    ("blank is missing", [{"name": "株式会社山田製作所", **blank} for blank in (
        {}, {"kana": None, "phone": "", "email": "  ", "address": "　", "birthday": None, "corporate_number": ""})],
     ("kana", "phones", "email", "address", "birthday", "corporate_number", "blocks")),
    ("法人番号 as a number", [{"corporate_number": n} for n in (CORP_A, int(CORP_A), "７０００-０１２０-５０００２")],
     ("corporate_number",)),
    ("dates as dates, text, 和暦", [{"kind": "individual", "birthday": d} for d in
                                     (date(1980, 4, 1), datetime(1980, 4, 1), "1980-04-01", "1980/4/1", "S55.4.1",
                                      "昭和55年4月1日")], ("birthday",)),
    ("address written five ways", [{"address": a, "prefecture": "東京都"} for a in (
        "千代田区丸の内1-2-3", "東京都千代田区丸の内1丁目2番3号", "千代田区丸の内１－２－３", "千代田区丸の内一丁目2-3",
        "千代田区 丸の内 1の2の3")], ("prefecture", "address")),
]


@pytest.mark.parametrize(("why", "records", "fields"), SAME_KEYS, ids=[c[0] for c in SAME_KEYS])
def test_spellings_fold_to_the_same_keys(why: str, records: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    keys = [customer_keys(r) for r in records]
    for field in fields:
        assert len({repr(getattr(k, field)) for k in keys}) == 1, (why, field, [getattr(k, field) for k in keys])


def _plain_keys(record: dict[str, Any]) -> tuple[Any, ...]:
    """customer_keys' fields the plain way: every key from its own normalize fold of the raw value."""
    from xlcrm.master.match import _FORM, _FORM_CANONICAL, _ITAIJI, _KANA_ONLY, _MID_FORM

    kind = normalize.text(record.get("kind"))
    kind = {"法人": "corporate", "個人": "individual"}.get(kind or "", kind)
    raw_name = normalize.text(record.get("name")) or ""
    raw_kana = normalize.kana_text(record.get("kana")) or ""
    if not raw_kana and raw_name:
        folded = normalize.kana_text(_FORM.sub("", raw_name)) or ""
        if _KANA_ONLY.match(folded):
            raw_kana = folded
    if kind == "individual":
        parts = tuple(p.casefold().translate(_ITAIJI) for p in raw_name.split())
        kana_parts = tuple(raw_kana.casefold().split())
        name, kana = "".join(parts), "".join(kana_parts)
        parts, kana_parts = (parts if len(parts) > 1 else ()), (kana_parts if len(kana_parts) > 1 else ())
    else:
        key = normalize.company_key(raw_name)
        name = _MID_FORM.sub("", key.translate(_ITAIJI)) or key
        kana, parts, kana_parts = normalize.company_key(raw_kana), (), ()
    phones: list[str] = []
    shown: dict[str, str] = {}
    for c in ("phone", "fax"):
        digits = normalize.phone_digits(record.get(c))
        if len(digits) >= 9 and digits not in phones:
            phones.append(digits)
            shown[digits] = normalize.text(record.get(c)) or digits
    number, problem = normalize.corporate_number(record.get("corporate_number"))
    email = normalize.text(record.get("email"))
    email = email.casefold() if email and "@" in email else None
    if email and email.rsplit("@", 1)[1] in ("example.com", "example.jp", "example.co.jp", "example.org",
                                              "example.net", "test.com", "none.com", "xxx.com", "xxx.co.jp"):
        email = None
    day = record.get("birthday")
    day = day if isinstance(day, date) and not isinstance(day, datetime) else \
        day.date() if isinstance(day, datetime) else normalize.parse_date(day)[0]
    for c, value in (("name", raw_name), ("kana", raw_kana), ("address", normalize.text(record.get("address"))),
                     ("postal_code", normalize.text(record.get("postal_code")))):
        if value:
            shown[c] = value
    form = ""
    if kind != "individual" and (m := _FORM.search(raw_name)) is not None:
        form = _FORM_CANONICAL.get(m.group(), m.group())
    pref, address = address_key(record.get("address"), record.get("prefecture"))
    return (kind, number if problem is None else None, email, tuple(phones), name, parts, kana, kana_parts,
            normalize.phone_digits(record.get("postal_code")), pref, address, day.isoformat() if day else None,
            shown, form)


ODD_RECORDS = [
    {"kind": "corporate", "name": 12345, "kana": 0, "phone": 312345678, "fax": 3.5, "postal_code": 1000005,
     "email": 42, "address": 7, "prefecture": True, "birthday": 29000, "corporate_number": 7.000012050002e12},
    {"kind": "法人", "name": "　株式会社　山田\u200b製作所　", "kana": "ｶﾌﾞｼｷｶﾞｲｼｬ ﾔﾏﾀﾞ", "phone": "tel: 03-1234-5678",
     "email": "mailto:a@b.jp", "address": "東京都千代田区丸の内一丁目２番地３号 ビル", "birthday": "2024-02-30"},
    {"kind": "個人", "name": "髙橋　一郎", "kana": "たかはし いちろう", "phone": "090ー1111ー2222", "birthday": "19800401"},
    {"kind": " individual ", "name": "Smith  John", "address": "12  Main St  Springfield", "postal_code": "〒100-0005"},
    {"kind": "corporate", "name": "有限会社スズキホケン", "fax": "+81-3-1234-5678", "email": "x@EXAMPLE.COM"},
    {"name": "(株)ミライ", "kana": "ミライ-", "birthday": date(1999, 1, 1), "corporate_number": "T7000012050002"},
    {},
]


@pytest.mark.parametrize("record", ODD_RECORDS + [r for _, records, _ in SAME_KEYS for r in records])
def test_keys_equal_the_plain_folds(record: dict[str, Any]) -> None:
    """Values the stored form never has (numbers, stray spaces, old variants) fold as the plain way does."""
    k = customer_keys(record)
    assert tuple(k)[:14] == _plain_keys(record)
    index = MatchIndex(DEFAULT_SCHEMA)
    values = [record.get(c) for c in DEFAULT_SCHEMA.entity("customers").keys]
    assert index.keys_for_values(values) == index.keys_for(record) == k
    from xlcrm.master.match import _blocks

    # the blocking keys customer_keys keeps are the ones the fields give
    assert list(_blocks(k)) == list(_blocks(k._replace(blocks=())))


def _team(n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Customers as a team types them: companies and people, a third typed again with another spelling
    (legal form, width, hiragana, phone without hyphens, e-mail case, 丁目 or a building, a typo in the
    birthday), branches sharing the head office's phone, family members sharing an address."""
    import random

    from xlcrm.demo.fakedata import (
        COMPANY_BUSINESSES,
        COMPANY_STEMS,
        GIVEN_NAMES,
        LEGAL_FORM_SPELLINGS,
        PLACES,
        SURNAMES,
        corporate_number,
        to_fullwidth,
        to_hiragana,
    )

    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []

    def place() -> tuple[str, str, str]:
        pref, city, postals, _area, towns = rng.choice(PLACES)
        return pref, f"{city}{rng.choice(towns)}", f"{rng.choice(postals)}-{rng.randrange(10000):04d}"

    def respell(rec: dict[str, Any]) -> dict[str, Any]:
        r = dict(rec)
        for field, change in (
                ("name", lambda s: s.replace("株式会社", rng.choice(LEGAL_FORM_SPELLINGS["kabushiki"]))
                 if "株式会社" in s and rng.random() < 0.5 else
                 ("株式会社" + s.replace("株式会社", "") if s.endswith("株式会社") else s.replace(" ", "　"))),
                ("kana", lambda s: to_hiragana(s) if rng.random() < 0.5 else s.replace(" ", "")),
                ("phone", lambda s: rng.choice([s.replace("-", ""), to_fullwidth(s), s.replace("-", "ー"), None])),
                ("email", lambda s: rng.choice([s.upper(), s.capitalize(), None])),
                ("address", lambda s: rng.choice([s.replace("-", "丁目", 1).replace("-", "番", 1) + "号",
                                                  s + rng.choice([" 第一ビル", "センタービル3F"]), s[:-2], to_fullwidth(s)])),
                ("postal_code", lambda s: rng.choice([s.replace("-", ""), "〒" + s, None])),
                ("birthday", lambda s: rng.choice([s[:-1] + str((int(s[-1]) + 1) % 10), s[:5] + s[6] + s[5] + s[7:],
                                                   s.replace("-", "/"), None])),
                ("corporate_number", lambda s: rng.choice([None, f"{(int(s[0]) + 1) % 10}{s[1:]}", s]))):
            if r.get(field) and rng.random() < 0.4:
                r[field] = change(r[field])
        return r

    for _ in range(n):
        pref, town, postal = place()
        address = f"{town}{rng.randint(1, 4)}-{rng.randint(1, 9)}-{rng.randint(1, 9)}"
        if rng.random() < 0.6:
            stem, bus = rng.choice(COMPANY_STEMS + SURNAMES), rng.choice(COMPANY_BUSINESSES)
            name = f"株式会社{stem[0]}{bus[0]}" if rng.random() < 0.6 else f"{stem[0]}{bus[0]}株式会社"
            rec: dict[str, Any] = {
                "kind": "corporate", "name": name, "kana": f"{stem[1]}{bus[1]}",
                "corporate_number": corporate_number(f"{rng.randrange(10 ** 12):012d}") if rng.random() < 0.5 else None,
                "phone": f"0{rng.randint(3, 9)}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                "email": f"info@{stem[2]}-{bus[2]}.co.jp" if rng.random() < 0.6 else None}
        else:
            sur, giv = rng.choice(SURNAMES), rng.choice(GIVEN_NAMES)
            rec = {"kind": "individual", "name": f"{sur[0]} {giv[0]}", "kana": f"{sur[1]} {giv[1]}",
                   "phone": f"090-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                   "email": f"{giv[2]}.{sur[2]}{rng.randrange(99)}@mail.jp" if rng.random() < 0.5 else None,
                   "birthday": f"{rng.randint(1940, 2000)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}
        rec.update(prefecture=pref, address=address, postal_code=postal)
        out.append((f"C-{len(out):05d}", rec))
        if rng.random() < 0.3:
            out.append((f"C-{len(out):05d}", respell(rec)))
        if rec["kind"] == "corporate" and rng.random() < 0.05:  # a branch: head office phone, own address
            out.append((f"C-{len(out):05d}", dict(rec, name=rec["name"] + rng.choice(["渋谷店", " 大阪支店"]),
                                                   address=f"{place()[1]}1-1-1", corporate_number=None)))
        if rec["kind"] == "individual" and rng.random() < 0.08:  # family: same address and landline
            giv = rng.choice(GIVEN_NAMES)
            out.append((f"C-{len(out):05d}", dict(rec, name=rec["name"].split()[0] + " " + giv[0],
                                                   kana=rec["kana"].split()[0] + " " + giv[1], email=None)))
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def team() -> list[tuple[str, dict[str, Any]]]:
    return _team(1500, seed=7)


def test_find_agrees_with_comparing_every_candidate(team: list[tuple[str, dict[str, Any]]]) -> None:
    """On a generated team: find() returns exactly what the full comparison of every candidate gives."""
    from xlcrm.master.match import _compare, _decide

    index = MatchIndex(DEFAULT_SCHEMA)
    index.add_many(team)
    records = dict(team)
    kinds = {"certain": 0, "probable": 0}
    for rid, rec in team:
        keys = index.keys_for(rec)
        expected = []
        common = index.frequencies(keys)
        for other in index.candidates(keys) - {rid}:
            kind = _decide(_compare(keys, customer_keys(records[other]), common))
            if kind is not None:
                m = compare(keys, records[other], other_id=other, common=common)
                assert m is not None and m.kind == kind
                expected.append(m)
        expected.sort(key=lambda m: (m.kind != "certain", -m.score, m.other_id))
        assert index.find(rec, exclude=rid) == expected
        for m in expected:
            kinds[m.kind] += 1
    assert kinds["certain"] > 100 and kinds["probable"] > 10  # the set exercises both


def test_generated_keys_equal_the_plain_folds(team: list[tuple[str, dict[str, Any]]]) -> None:
    for _, rec in team:
        assert tuple(customer_keys(rec))[:14] == _plain_keys(rec)


def test_index_by_values_equals_index_by_records(team: list[tuple[str, dict[str, Any]]]) -> None:
    schema = build_schema({"sheets": {"customers": {"disable": ["fax"]}}})
    for s in (DEFAULT_SCHEMA, schema):
        cols = s.entity("customers").keys
        by_values, by_records = MatchIndex(s), MatchIndex(s)
        by_values.add_many((rid, [rec.get(c) for c in cols]) for rid, rec in team[:600])
        by_records.add_many(team[:600])
        for _, rec in team[:600]:
            values = [rec.get(c) for c in cols]
            assert by_values.keys_for_values(values) == by_records.keys_for(rec)
            assert by_values.find_keys(by_values.keys_for_values(values)) == by_records.find(rec)


def test_remove_and_re_add_restore_the_index(team: list[tuple[str, dict[str, Any]]]) -> None:
    index = MatchIndex(DEFAULT_SCHEMA)
    index.add_many(team[:400])
    before = [index.find(rec, exclude=rid) for rid, rec in team[:400]]
    for rid, _ in team[:400:3]:
        index.remove(rid)
    assert len(index) == 400 - len(team[:400:3])
    for rid, rec in team[:400:3]:
        index.add(rid, rec)
    assert [index.find(rec, exclude=rid) for rid, rec in team[:400]] == before


def test_near_test_in_bulk_equals_the_pairwise_test() -> None:
    """_near_ids (one rapidfuzz call per test over all candidates) against _near_place_or_day pair by pair:
    addresses extending each other (with and without a digit), one character off, Latin words reordered;
    birthdays one digit off, two neighbouring digits swapped (across a hyphen too), two digits off."""
    import random

    from xlcrm.master.match import _near_ids, _near_place_or_day

    rng = random.Random(3)
    bases = ["千代田区丸の内1-2-3", "大阪市北区梅田2-4-9サンビル", "札幌市中央区北一条", "12 main st springfield nsw",
             "flat 4 27 king street sydney", "港区芝1-1-1-101"]

    def address_like(a: str) -> str | None:
        i = rng.randrange(len(a))
        return rng.choice([a, a + "ビル5f", a + " tower", a[:i], a[i:], a[:i] + "x" + a[i + 1:], a[:i] + a[i + 1:],
                           " ".join(reversed(a.split())), "x" + a, rng.choice(bases), ""])

    def day_like(d: str) -> str | None:
        x = d.replace("-", "")
        i = rng.randrange(7)
        y = rng.choice([x, x[:i] + str((int(x[i]) + 1) % 10) + x[i + 1:], x[:i] + x[i + 1] + x[i] + x[i + 2:],
                        x[:i] + "99" + x[i + 2:], "19000101"])
        return rng.choice([f"{y[:4]}-{y[4:6]}-{y[6:]}", None])

    base = customer_keys(person())
    hits = 0
    for _ in range(400):
        q = base._replace(address=rng.choice(bases), birthday=rng.choice([None, "1980-04-10", "1975-12-31"]))
        others = {f"C-{i}": base._replace(address=address_like(q.address) or "",
                                          birthday=day_like(q.birthday or "1980-04-10"))
                  for i in range(rng.randrange(1, 30))}
        cand = {i: o.address for i, o in others.items()}
        days = {i: o.birthday for i, o in others.items() if o.birthday}
        big = [dict.fromkeys(rng.sample(sorted(others), 1), "")] if rng.random() < 0.2 else []
        expected = {i for i, o in others.items() if _near_place_or_day(q, o) or any(i in b for b in big)}
        assert set(_near_ids(q, cand, days, big)) == expected
        hits += len(expected)
    assert hits > 1000


def test_pairs_settled_early_cannot_match(team: list[tuple[str, dict[str, Any]]]) -> None:
    """_hopeless settles a pair without the full comparison only when that comparison finds no match."""
    from xlcrm.master.match import _compare, _decide, _hopeless

    keys = [customer_keys(rec) for _, rec in team]
    index = MatchIndex(DEFAULT_SCHEMA)
    index.add_many(team)
    ids = {rid: i for i, (rid, _) in enumerate(team)}
    settled = 0
    for i, q in enumerate(keys):
        for other in index.candidates(q):
            o = keys[ids[other]]
            if _hopeless(q, o):
                settled += 1
                assert _decide(_compare(q, o)) is None, (team[i], team[ids[other]])
    assert settled > 1000
