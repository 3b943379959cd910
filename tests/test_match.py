"""Duplicate detection: each rule, each trap that must never become a wrong automatic merge, the
evidence texts, and properties of the index.  Small hand-made records only; quality on real-sized
data is measured in benchmarks/bench_dedupe.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlcrm import normalize
from xlcrm.match import Match, MatchIndex, address_key, compare, customer_keys
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
