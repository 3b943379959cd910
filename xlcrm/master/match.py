"""Customer duplicate detection: is this row a customer the master (or another team file) already has?

Merge links a *certain* match to the existing customer without asking anyone, so a wrong certain match
silently fuses two customers' histories; a missed duplicate only costs a person a look at 重複候補.  The
rules are therefore lopsided on purpose:

* **certain** needs one identifying key that agrees - the same valid 法人番号, the same e-mail address,
  or the same phone/FAX number - *and* nothing that contradicts it: a similar name (for phone and
  e-mail), the same kind, no different branch, given name, birthday, prefecture, legal form (for phone
  and e-mail) or 法人番号.  A 法人番号 with a wrong check digit is ignored: it is a typo, and a typo may
  equal someone else's number.
* **probable** is everything else whose weighted evidence passes a threshold *and* has support beyond
  the name: name or フリガナ similar plus some of address, postal code, phone, e-mail or birthday
  (同姓同名 and same-named companies are common, so a name alone is never a candidate).  These go to
  重複候補 and a person decides.
* **no match** for what is plainly two customers, however much else agrees: two differently named
  branches (渋谷店 / 新宿店 of one chain share the head office's phone, e-mail and 法人番号), and two
  people of one household (same family name and address, phone or e-mail, another given name - or
  another name altogether) unless their birthdays agree.

The evidence weights are log-odds in the Fellegi-Sunter spirit, set by hand and checked against the
FEBRL sets and a generated Japanese set in ``benchmarks/bench_dedupe.py`` (figures in benchmarks/README.md).

Evidence texts come in Japanese or English, chosen once per index (``MatchIndex(schema, lang="en")``),
because one merge writes one report in the master's language; :attr:`Match.codes` carries the same
evidence as stable codes (in the same order) for history rows, tests and a caller that wants to word
it differently.  Positive evidence comes first, what argues against after it.

Speed: merge folds every customer row it cannot identify by ID, looks it up and indexes it, so that
loop is what the module is built for (figures in benchmarks/README.md).  :func:`customer_keys` (and
:meth:`MatchIndex.keys_for_values`, which takes a row as merge holds it) passes each value through
text() once - a value already in the stored form costs a few checks - and derives every key from that.
:class:`MatchIndex` keeps blocking dictionaries (法人番号, e-mail, phone digits, company key, フリガナ, name
parts, postal code, address, birthday) whose entries carry each record's address key: the candidates
of a lookup that share only a name (most of them) are tested for a near address or birthday with one
rapidfuzz call per test, without touching their keys; the few that pass and those sharing a key that
is evidence itself are compared, and :func:`_hopeless` settles most of those from the cheap evidence
before the full comparison.  A caller that looks a record up and then indexes it (merge) folds it
once: ``keys = index.keys_for_values(row)``, ``index.find_keys(keys)``, ``index.add_keys(record_id, keys)``.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from math import exp, log2
from operator import itemgetter
from typing import Any, Literal, NamedTuple

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Hamming, Indel, Prefix

from xlcrm import normalize
from xlcrm.address import compare_folded as _compare_address
from xlcrm.address import fold as fold_address
from xlcrm.schema import Schema

__all__ = ["PROPOSALS_PER_RECORD", "CustomerKeys", "Match", "MatchIndex", "address_key", "compare", "customer_keys",
           "proposals"]

Kind = Literal["certain", "probable"]


@dataclass(frozen=True)
class Match:
    """One existing record that may be the same customer as the one looked up."""

    other_id: str
    kind: Kind
    #: 0..1, ordering and display only; ``kind`` is what merge acts on.
    score: float
    #: Human-readable, in the index's language: "電話番号が一致 (03-1234-5678)".
    evidence: tuple[str, ...]
    #: The same evidence as stable codes ("phone", "name_similar", "branch_differs", ...).
    codes: tuple[str, ...] = ()


# --- keys -----------------------------------------------------------------------------------------

#: Old and variant kanji that registries and people mix freely in names (渡邊 = 渡辺).
_ITAIJI = str.maketrans({
    "邊": "辺", "邉": "辺", "齋": "斎", "齊": "斎", "斉": "斎", "髙": "高", "﨑": "崎", "嵜": "崎",
    "濱": "浜", "濵": "浜", "澤": "沢", "櫻": "桜", "國": "国", "廣": "広", "藏": "蔵", "德": "徳",
    "眞": "真", "嶋": "島", "嶌": "島", "冨": "富", "龍": "竜", "實": "実", "惠": "恵", "壽": "寿",
    "彌": "弥", "條": "条", "與": "与", "淺": "浅", "黑": "黒", "圓": "円", "戶": "戸", "榮": "栄",
    "萬": "万", "學": "学", "關": "関", "鐵": "鉄", "硏": "研", "舘": "館",
    "ヶ": "ケ", "ヵ": "カ",
})
#: Legal forms left in the middle of a company key (山田株式会社東京支店) do not tell companies apart.
_MID_FORM = re.compile(r"株式会社|有限会社|合同会社|合資会社|合名会社|\((?:株|有|同|資|名)\)")
#: What the differing tail of two company names ends with when it names a branch, not a company.
_BRANCH_END = re.compile(
    r"(?:店|支社|本社|営業所|出張所|事業所|事業部|工場|センター|事務所|研究所|倉庫|病院|医院|クリニック|"
    r"教室|校|館|ホール|営業部|部|課|オフィス|ショップ|ストア|branch|office|store|shop)$"
)
#: Legal forms told apart (after NFKC ㈱ is (株)); 有限会社 -> 株式会社 is a common change, so a
#: different form only argues against a match, it never excludes one.
_FORM = re.compile(r"株式会社|有限会社|合同会社|合資会社|合名会社|\((?:株|有|同|資|名)\)")
_FORM_CANONICAL = {"(株)": "株式会社", "(有)": "有限会社", "(同)": "合同会社", "(資)": "合資会社", "(名)": "合名会社"}
_KANA_ONLY = re.compile(r"^[\u30a1-\u30fa\u30fc\u30fb ]+$")
_DIGITS = re.compile(r"[0-9]+")
_hamming = Hamming.distance
_indel_similarity = Indel.normalized_similarity
_prefix_similarity = Prefix.similarity
_extract = process.extract
#: Placeholders typed when the real value is unknown; never an identity.
_JUNK_EMAIL_DOMAINS = frozenset({"example.com", "example.jp", "example.co.jp", "example.org", "example.net",
                                 "test.com", "none.com", "xxx.com", "xxx.co.jp"})


def address_key(address: Any, prefecture: Any = None) -> tuple[str | None, str]:
    """``(prefecture, comparable address)``: 1-2-3, 1丁目2番3号, １－２－３ and 一丁目2-3 all read 1-2-3.

    Spaces are dropped, case folded, a leading prefecture is split off (people repeat it in the address
    column), kanji numerals before 丁目/番/号 become digits, and 丁目, 番(地), の between numbers and a
    trailing 号 become hyphens.  Building names stay: comparison treats a key that extends the other
    (建物名 added or dropped) as the same address.
    """
    pref, key, _ = _address(address, prefecture)
    return pref, key


def _address(address: Any, prefecture: Any) -> tuple[str | None, str, str | None]:
    """:func:`address_key` plus the address's text() (shown in evidence), from one text() pass."""
    pref = normalize.stored_text(prefecture)
    shown = normalize.stored_text(address)
    if shown is None:
        return pref, "", None
    written_pref, s = fold_address(shown)
    return pref or written_pref, s, shown


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ANY_ITAIJI = re.compile("[" + "".join(re.escape(chr(c)) for c in _ITAIJI) + "]")


def _itaiji(s: str) -> str:
    return s.translate(_ITAIJI) if _ANY_ITAIJI.search(s) else s


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is str and _ISO_DATE.fullmatch(value):
        # the stored form: parse_date would read it as that very day, or refuse an impossible one
        try:
            date.fromisoformat(value)
        except ValueError:
            return None
        return value
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    d, _ = normalize.parse_date(value)
    return d.isoformat() if d is not None else None


def _valid_corporate_number(value: Any) -> str | None:
    if type(value) is str and len(value) == 13 and value.isascii() and value.isdigit():
        # the stored form: only the check digit to test (normalize.corporate_number_check_digit's sum:
        # from the right of the 12-digit body, weights 1, 2, 1, 2 ...; ASCII "0" is 48)
        b = value.encode("ascii")
        total = sum(b[2::2]) + 2 * sum(b[1::2]) - 18 * 48
        return value if 9 - total % 9 == b[0] - 48 else None
    number, problem = normalize.corporate_number(value)
    return number if problem is None else None


def _email_key(value: Any) -> str | None:
    s = normalize.stored_text(value)
    if s is None or "@" not in s:
        return None
    s = s.casefold()
    if s.rsplit("@", 1)[1] in _JUNK_EMAIL_DOMAINS:
        return None
    return s


def _digits_and_text(value: Any) -> tuple[str, str | None]:
    """``(normalize.phone_digits(value), normalize.text(value))`` from one text() pass."""
    if value is None:
        return "", None
    t = normalize.stored_text(value)
    if type(value) is str:
        return (normalize.phone_digits_of_text(t) if t else ""), t
    return normalize.phone_digits(value), t


def _kana_text(value: Any) -> str | None:
    t = normalize.stored_text(value)
    return None if t is None else normalize.kana_of_text(t)


def _company_key(s: str, stored: bool = False) -> str:
    """``normalize.company_key(s)``; ``stored``: ``s`` is known to be its own text() already."""
    return normalize.company_key_of_text(s) if stored else normalize.company_key_of_stored(s)


class CustomerKeys(NamedTuple):
    """A customer record folded once into what duplicate detection compares and blocks on.

    A named tuple rather than a dataclass: an index holds one per customer, and the cyclic garbage
    collector stops tracking a tuple of strings (and a dict of strings) once it has looked at it, while
    it would walk 100,000 dataclass instances again on every full pass - a fifth of merge's matching time.
    """

    kind: str | None
    #: Only a number with a valid check digit; a typo must never identify anybody.
    corporate_number: str | None
    email: str | None
    #: Digits of phone and FAX (phone first), at least 9 digits each.
    phones: tuple[str, ...]
    #: company_key (companies) or the name without spaces (people), variant kanji folded.
    name: str
    #: A person's name parts as written apart ("山田 太郎" -> 山田, 太郎); () when written together.
    name_parts: tuple[str, ...]
    #: Katakana reading without spaces, legal-form readings removed for companies.
    kana: str
    kana_parts: tuple[str, ...]
    postal: str
    prefecture: str | None
    address: str
    birthday: str | None
    #: Display values for evidence texts (canonical spellings of the record).
    shown: Mapping[str, str]
    #: Legal form written in the company name (株式会社 -> "株式会社"), "" when none.
    form: str = ""
    #: The blocking keys (:func:`_blocks`: tag and key in turn), computed once by :func:`customer_keys`
    #: for the lookup, the indexing and a later removal.
    blocks: tuple[str, ...] = ()

    @property
    def corporate(self) -> bool:
        return self.kind != "individual"


#: The customers columns duplicate detection reads, in the order :func:`_fold` takes them.
_FOLD_COLUMNS = ("kind", "name", "kana", "corporate_number", "email", "phone", "fax", "postal_code", "prefecture",
                 "address", "birthday")
_READ = frozenset(_FOLD_COLUMNS)
#: Public name: an edit of one of these columns may make a customer a duplicate of another.
MATCH_COLUMNS = _READ
_KINDS = {"法人": "corporate", "個人": "individual"}
#: Kinds as stored (choice keys) or typed, mapped without a text() pass.
_KIND_FAST = {**_KINDS, "corporate": "corporate", "individual": "individual"}


def customer_keys(record: Mapping[str, Any]) -> CustomerKeys:
    """Fold a customers record (``{column key: canonical value}``) into comparable keys.

    Raw spellings are accepted too (every fold is idempotent), so a caller may pass values straight
    from a team workbook.
    """
    get = record.get
    return _fold(get("kind"), get("name"), get("kana"), get("corporate_number"), get("email"), get("phone"),
                 get("fax"), get("postal_code"), get("prefecture"), get("address"), get("birthday"))


def _fold(kind_value: Any, name_value: Any, kana_value: Any, corporate_number: Any, email_value: Any,
          phone: Any, fax: Any, postal_code: Any, prefecture: Any, address_value: Any,
          birthday_value: Any) -> CustomerKeys:
    """:func:`customer_keys` on the values of :data:`_FOLD_COLUMNS`.

    Each value goes through text() once (:func:`normalize.stored_text` answers a stored value without
    copying it) and every key built from it starts from that; so the folds are the ones their
    ``normalize`` counterparts apply, without repeating the text() step for each key.
    """
    kind = _KIND_FAST.get(kind_value) if type(kind_value) is str else None
    if kind is None:
        kind = normalize.text(kind_value)
        kind = _KINDS.get(kind or "", kind)
    raw_name = normalize.stored_text(name_value) or ""
    raw_kana = _kana_text(kana_value) or ""
    if not raw_kana and raw_name:
        # a name written in kana (スズキホケン, やまだ たろう) is its own reading
        folded = _kana_text(_FORM.sub("", raw_name)) or ""
        if _KANA_ONLY.match(folded):
            raw_kana = folded
    form = ""
    if kind == "individual":
        # casefold and the variant table map character by character and never make or take a space,
        # so folding before splitting gives the same parts
        parts = tuple(_itaiji(raw_name.casefold()).split())
        name = "".join(parts)
        kana_parts = tuple(raw_kana.casefold().split())
        kana = "".join(kana_parts)
        if len(parts) < 2:
            parts = ()
        if len(kana_parts) < 2:
            kana_parts = ()
    else:
        # a value stored_text returned as it was is its own text(), and so is kana_of_text's result then
        key = _company_key(raw_name, raw_name is name_value)
        folded = _itaiji(key)
        # every legal form _MID_FORM and _FORM know has 会社 or a bracket in it
        name = (_MID_FORM.sub("", folded) if "会社" in folded or "(" in folded else folded) or key
        kana = _company_key(raw_kana, raw_kana is kana_value)
        parts, kana_parts = (), ()
        if ("会社" in raw_name or "(" in raw_name) and (m := _FORM.search(raw_name)) is not None:
            form = _FORM_CANONICAL.get(m.group(), m.group())
    phones: list[str] = []
    shown: dict[str, str] = {}
    for value in (phone, fax):
        digits, phone_text = _digits_and_text(value)
        if len(digits) >= 9 and digits not in phones:
            phones.append(digits)
            shown[digits] = phone_text or digits
    pref, address, address_text = _address(address_value, prefecture)
    postal, postal_text = _digits_and_text(postal_code)
    corp = _valid_corporate_number(corporate_number)
    email = _email_key(email_value)
    birthday = _iso(birthday_value)
    if raw_name:
        shown["name"] = raw_name
    if raw_kana:
        shown["kana"] = raw_kana
    if address_text:
        shown["address"] = address_text
    if postal_text:
        shown["postal_code"] = postal_text
    phones_t = tuple(phones)
    corporate = kind != "individual"
    return CustomerKeys(kind, corp, email, phones_t, name, parts, kana, kana_parts, postal, pref, address, birthday,
                        shown, form, _block_keys(corporate, corp, email, phones_t, name, parts, kana, kana_parts,
                                                 postal, address, birthday))


def _block_keys(corporate: bool, corp: str | None, email: str | None, phones: tuple[str, ...], name: str,
                parts: tuple[str, ...], kana: str, kana_parts: tuple[str, ...], postal: str, address: str,
                birthday: str | None) -> tuple[str, ...]:
    """The blocking keys as one flat tuple, tag and key in turn (pairs would cost a tuple each, for
    every customer in the index)."""
    out: list[str] = []
    if corp:
        out += ("c", corp)
    if email:
        out += ("e", email)
    for p in phones:
        out += ("p", p)
    if name:
        out += ("n", name)
        if corporate and len(name) >= 4:
            out += ("n3", name[:3])
    for p in parts:
        if len(p) >= 2:
            out += ("t", p)
    if kana:
        out += ("k", kana)
    for p in kana_parts:
        if len(p) >= 2:
            out += ("t", p)
    if postal:
        out += ("z", postal)
    if address:
        out += ("a", address)
    if birthday:
        out += ("b", birthday)
    return tuple(out)


def _blocks(k: CustomerKeys) -> Iterator[tuple[str, str]]:
    """Blocking keys ``(tag, key)``: a pair is compared only when it shares at least one of these."""
    flat = k.blocks or _block_keys(k.corporate, k.corporate_number, k.email, k.phones, k.name, k.name_parts,
                                   k.kana, k.kana_parts, k.postal, k.address, k.birthday)
    it = iter(flat)
    return zip(it, it, strict=True)


#: Blocks this large say little (a common surname, a big postal district): skipped when looking up.
_WEAK_BLOCK_LIMIT = 200
_STRONG = frozenset({"c", "e", "p"})
#: Every tag _blocks uses: 法人番号, e-mail, phone, name, name start, name part, reading, postal code, address,
#: birthday.
_TAGS = ("c", "e", "p", "n", "n3", "t", "k", "z", "a", "b")
#: Blocks whose shared key is itself support (see ``_SUPPORT``): a pair sharing one needs the full comparison.
_SUPPORT_BLOCKS = frozenset({"c", "e", "p", "z", "a", "b"})


# --- comparison -----------------------------------------------------------------------------------

_TEXTS: dict[str, tuple[str, str]] = {
    "corporate_number": ("法人番号が一致 ({0})", "Same corporate number ({0})"),
    "email": ("メールアドレスが一致 ({0})", "Same e-mail address ({0})"),
    "phone": ("電話番号が一致 ({0})", "Same phone number ({0})"),
    "company_name": ("社名が一致 ({0})", "Same company name ({0})"),
    "company_name_similar": ("社名が類似 ({0:.2f})", "Similar company name ({0:.2f})"),
    "person_name": ("氏名が一致 ({0})", "Same name ({0})"),
    "person_name_similar": ("氏名が類似 ({0:.2f})", "Similar name ({0:.2f})"),
    "person_name_partial": ("氏名の一部が一致 ({0})", "Part of the name matches ({0})"),
    "kana": ("フリガナが一致 ({0})", "Same kana reading ({0})"),
    "kana_similar": ("フリガナが類似 ({0:.2f})", "Similar kana reading ({0:.2f})"),
    "address": ("住所が一致 ({0})", "Same address ({0})"),
    "address_building": ("住所が番地まで一致 ({0})", "Same address up to the building ({0})"),
    "address_similar": ("住所が類似 ({0:.2f})", "Similar address ({0:.2f})"),
    "postal_code": ("郵便番号が一致 ({0})", "Same postal code ({0})"),
    "birthday": ("誕生日が一致 ({0})", "Same birthday ({0})"),
    "birthday_similar": ("誕生日が1字違い ({0} / {1})", "Birthday one digit apart ({0} / {1})"),
    # what argues against, shown so the person deciding sees both sides
    "name_differs": ("名称が異なる ({0:.2f})", "Different name ({0:.2f})"),
    "branch_differs": ("支店・店舗名が異なる ({0} / {1})", "Different branch ({0} / {1})"),
    "branch_one_side": ("支店・店舗名が片方のみ ({0})", "Branch named on one side only ({0})"),
    "given_name_differs": ("名が異なる ({0} / {1})", "Different given name ({0} / {1})"),
    "prefecture_differs": ("都道府県が異なる ({0} / {1})", "Different prefecture ({0} / {1})"),
    "birthday_differs": ("誕生日が異なる ({0} / {1})", "Different birthday ({0} / {1})"),
    "corporate_number_differs": ("法人番号が異なる ({0} / {1})", "Different corporate number ({0} / {1})"),
    "legal_form_differs": ("法人格が異なる ({0} / {1})", "Different legal form ({0} / {1})"),
    "kind_differs": ("区分が異なる (法人 / 個人)", "Different type (company / individual)"),
    "phone_differs": ("電話番号が違う ({0} / {1})", "Different phone number ({0} / {1})"),
    "email_differs": ("メールアドレスが違う ({0} / {1})", "Different e-mail address ({0} / {1})"),
    "postal_code_differs": ("郵便番号が違う ({0} / {1})", "Different postal code ({0} / {1})"),
    "address_number_differs": ("番地が違う ({0} / {1})", "Different street number ({0} / {1})"),
    "address_place_differs": ("住所の町名が違う", "Different town in the address"),
    "address_floor_differs": ("番地は同じで建物・階が違う ({0} / {1})",
                              "Same street number, different building or floor ({0} / {1})"),
    "common_name": ("よくある名称 (同名 {0} 件)", "Common name ({0} records share it)"),
    "common_email": ("多くの顧客が使うメールアドレス ({0} 件)", "E-mail address shared by {0} records"),
}

#: Comparison levels whose weight comes from how often each occurs: (m, u) = the probability of the
#: level among true duplicates and among different customers (Fellegi-Sunter; the weight is log2(m/u),
#: rounded to half bits).  benchmarks/calibrate_match.py measures them on the candidate pairs of the
#: benchmark sets.  Another phone (a new line, a mobile instead of the office) and another street number
#: among different customers are as measured; m of another e-mail (a second mailbox) and of another
#: street number (a move within the town) are priors, as no set holds such a duplicate; the postal
#: code's m is set above the measured one (typos), since the name and address weights beside it are
#: not learnt and the measured weight costs recall on every set.
M_U: dict[str, tuple[float, float]] = {
    "phone_differs": (0.10, 0.995),
    "email_differs": (0.12, 0.995),
    "address_number_differs": (0.05, 0.94),
    "postal_code_differs": (0.45, 0.98),
}


def _bits(level: str) -> float:
    m, u = M_U[level]
    return round(2 * log2(m / u)) / 2


#: Weights (log-odds, roughly bits) of each piece of evidence.
W_CORP, W_CORP_DIFF = 12.0, -12.0
W_PHONE_DIFF = _bits("phone_differs")
W_EMAIL_DIFF = _bits("email_differs")
W_ADDR_NUM_DIFF = _bits("address_number_differs")
W_EMAIL = 8.0
W_PHONE = 7.0
W_NAME_EXACT, W_NAME_HIGH, W_NAME_MID, W_NAME_LOW, W_NAME_DIFF = 6.0, 4.5, 2.5, 0.5, -5.0
W_NAME_PARTIAL = 0.0
W_ADDR_EXACT, W_ADDR_HIGH, W_ADDR_MID, W_ADDR_LOW, W_ADDR_DIFF = 5.0, 4.0, 2.0, 0.0, -2.0
W_POSTAL, W_POSTAL_DIFF = 2.0, _bits("postal_code_differs")
W_BIRTHDAY, W_BIRTHDAY_DIFF, W_BIRTHDAY_TYPO = 7.0, -2.0, 1.0
W_PREF_DIFF = -5.0
W_BRANCH_DIFF, W_BRANCH_ONE = -9.0, -3.0
W_KIND_DIFF = -3.0
W_FORM_DIFF = -2.0
#: Total weight from which a pair is a 重複候補; the score is 0.5 there.
PROBABLE_AT = 4.5
#: Name similarity that counts as "a similar name" for the certain rules.
CERTAIN_NAME = 0.85


def _shown_code(parse: Any, value: str) -> str:
    """The canonical spelling for evidence (03-1234-5678), formatted only for the matches shown."""
    canonical, _ = parse(value)
    return canonical or value


def _ratio(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    return Indel.normalized_similarity(a, b)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _branch(a: str, b: str) -> tuple[str, str] | None:
    """The differing tails of two company keys when at least one names a branch (渋谷店 / 新宿店)."""
    n = _common_prefix(a, b)
    if n == 0 or a == b:
        return None
    ta, tb = a[n:], b[n:]
    # a typo in a long name is not a branch: both tails must be branch-like (or one empty)
    if ta and tb:
        return (ta, tb) if _BRANCH_END.search(ta) and _BRANCH_END.search(tb) and n >= 2 else None
    tail = ta or tb
    return (ta, tb) if _BRANCH_END.search(tail) and n >= 2 and len(tail) <= 12 else None


def _person_parts(parts_a: tuple[str, ...], parts_b: tuple[str, ...]) -> tuple[float, float, str, str] | None:
    """(family similarity, given similarity, given a, given b), the parts aligned even when swapped."""
    if not parts_a or not parts_b:
        return None
    fa, ga = parts_a[0], "".join(parts_a[1:])
    fb, gb = parts_b[0], "".join(parts_b[1:])
    straight = (_ratio(fa, fb), _ratio(ga, gb))
    swapped = (_ratio(fa, gb), _ratio(ga, fb))
    if sum(swapped) > sum(straight):
        return swapped[0], swapped[1], ga, fb
    return straight[0], straight[1], ga, gb


def _one_typo(a: str, b: str) -> bool:
    """Two ISO dates one keystroke apart: one digit wrong, or two neighbouring digits swapped."""
    x, y = a.replace("-", ""), b.replace("-", "")
    if len(x) != len(y):
        return False
    n = _hamming(x, y, score_cutoff=2)  # positions that differ; 3 stands for "more than 2"
    if n == 1:
        return True
    if n != 2:
        return False
    i = 0
    while x[i] == y[i]:
        i += 1
    # the first two positions that differ are neighbours, swapped (if x[i] and x[i+1] trade places,
    # position i+1 differs too, so it is the second difference)
    return x[i] == y[i + 1] and x[i + 1] == y[i]


def _split_names(a: str, a_parts: tuple[str, ...], b: str, b_parts: tuple[str, ...]
                 ) -> tuple[float, str, str] | None:
    """(family similarity, given a, given b): parts when both are written apart, else the tails after
    a shared start (山田太郎 / 山田 花子 -> 太郎, 花子)."""
    aligned = _person_parts(a_parts, b_parts)
    if aligned is not None:
        return aligned[0], aligned[2], aligned[3]
    if not a or not b:
        return None
    n = _common_prefix(a, b)
    if n < 1 or n >= min(len(a), len(b)):
        return None
    return 1.0, a[n:], b[n:]


#: Long vowels and small kana are spelt both ways in readings (ユウキ / ユーキ, シヨウ / ショウ).
_KANA_FOLD = str.maketrans({"ー": None, "ァ": "ア", "ィ": "イ", "ゥ": "ウ", "ェ": "エ", "ォ": "オ", "ッ": "ツ",
                            "ャ": "ヤ", "ュ": "ユ", "ョ": "ヨ", "ヮ": "ワ"})


def _fold_reading(s: str) -> str:
    s = s.translate(_KANA_FOLD)
    return s[:1] + s[1:].replace("ウ", "") if len(s) > 1 else s


def _given_conflict(q: CustomerKeys, o: CustomerKeys, name_sim: float) -> tuple[str, str] | None:
    """Same family name and a plainly different given name: two people of one household.

    The reading decides when both have one (裕樹/祐樹 are one ユウキ; 美加子/裕美子 are not); without it
    the written given names must share less than half their characters.
    """
    names = _split_names(q.name, q.name_parts, o.name, o.name_parts)
    readings = _split_names(q.kana, q.kana_parts, o.kana, o.kana_parts) if q.kana and o.kana else None
    if names is None and readings is None:
        return None
    if (names is not None and names[0] < 0.75) or (readings is not None and readings[0] < 0.75):
        return None  # not one family name: the name comparison speaks
    if names is not None and names[1] == names[2]:
        return None
    if readings is not None:
        ra, rb = _fold_reading(readings[1]), _fold_reading(readings[2])
        if ra == rb or _ratio(ra, rb) >= 0.75:
            return None
        return (names[1], names[2]) if names is not None else (readings[1], readings[2])
    assert names is not None
    apart = bool(q.name_parts and o.name_parts)
    if _ratio(names[1], names[2]) < 0.5 and (apart or name_sim < 0.75):
        return names[1], names[2]
    return None


def _part_of(a: str, a_parts: tuple[str, ...], b: str, b_parts: tuple[str, ...]) -> str | None:
    """The part of two person names that agrees when the rest differs or is missing: 山田 / 山田太郎,
    山田 花子 / 田中花子 (a new family name), with one side written apart or neither."""
    if not a or not b or a == b:
        return None
    for x, x_parts, y, y_parts in ((a, a_parts, b, b_parts), (b, b_parts, a, a_parts)):
        if not x_parts and len(x) >= 2 and (x in y_parts or (not x.isascii() and y.startswith(x))):
            return x  # one part only on this side
        if x_parts and not y_parts and not y.isascii():
            family, given = x_parts[0], "".join(x_parts[1:])
            if y.startswith(family):
                return family
            if y.endswith(given):
                return given
    return None


def _address_similarity(a: str, b: str) -> float:
    s = _ratio(a, b)
    if " " in a and " " in b:
        # Latin addresses: words reordered or a locality left out (token set, a little discounted)
        s = max(s, fuzz.token_set_ratio(a, b) / 100 * 0.95)
    return s


def _near_place_or_day(q: CustomerKeys, o: CustomerKeys) -> bool:
    """Support from what is not a blocking key: a birthday one keystroke off, an address that extends
    the other or is similar.

    For a pair that shares no 法人番号, e-mail, phone, postal code, address or birthday this is exactly
    "some code of ``_SUPPORT`` will be found", without which :func:`_decide` says no match (certain needs
    an identifying key, probable needs support), so :meth:`MatchIndex.find_keys` skips the full
    comparison when it is False (it runs the same two tests, with the looked-up side prepared once).
    """
    qb, ob = q.birthday, o.birthday
    if qb and ob and _one_typo(qb, ob):
        return True
    a, b = q.address, o.address
    return bool(a and b and _near_address(a, b))


def _near_address(a: str, b: str) -> bool:
    """The address tests of :func:`_near_place_or_day` (both non-empty)."""
    if (a.startswith(b) or b.startswith(a)) and _DIGITS.search(min(a, b, key=len)):
        return True
    # score_cutoff lets rapidfuzz give up early (length difference alone); a score it does return is
    # the exact one, and the cut-offs sit a little below the 0.8 that _compare tests, so this agrees.
    if _indel_similarity(a, b, score_cutoff=0.79) >= 0.8:
        return True
    return " " in a and " " in b and fuzz.token_set_ratio(a, b, score_cutoff=83) / 100 * 0.95 >= 0.8


def _address_weight(a: str, b: str) -> tuple[str | None, float, tuple[Any, ...]]:
    """(evidence code or None, weight, the code's arguments) of two address keys, both non-empty.

    Japanese addresses are compared by their parts (:func:`xlcrm.address.compare_folded`): the same
    place and street number is the same address (the building on one side only: 建物名 added or
    dropped), another street number in the same town is another address however alike the texts, and
    another building or floor at one street number is a neighbour.  Other addresses (Latin, no street
    number) by their texts: the same, one extending the other, similar, or different.
    """
    if a == b:
        return "address", W_ADDR_EXACT, ()
    verdict, num_a, num_b = _compare_address(a, b)
    if verdict == "same":
        return "address", W_ADDR_EXACT, ()
    if verdict == "building":
        return "address_building", W_ADDR_HIGH, ()
    if verdict == "building_differs":
        return "address_floor_differs", W_ADDR_MID, (num_a, num_b)
    if verdict == "number_differs":
        return "address_number_differs", W_ADDR_NUM_DIFF, (num_a, num_b)
    if verdict == "place_differs":
        s = _ratio(a, b)
        if s >= 0.9 and num_a == num_b:  # a typo in the town's name
            return "address_similar", W_ADDR_HIGH, (s,)
        return "address_place_differs", W_ADDR_DIFF, ()
    if (a.startswith(b) or b.startswith(a)) and _DIGITS.search(min(a, b, key=len)):
        return "address_building", W_ADDR_HIGH, ()
    s = _address_similarity(a, b)
    if s >= 0.9:
        return "address_similar", W_ADDR_HIGH, (s,)
    if s >= 0.8:
        return "address_similar", W_ADDR_MID, (s,)
    return None, (W_ADDR_DIFF if s < 0.6 else W_ADDR_LOW), ()


def _hopeless(q: CustomerKeys, o: CustomerKeys) -> bool:
    """True only when :func:`_compare` would find neither an identifying key nor the weight of a
    重複候補, so :func:`_decide` says no match - from the cheap evidence and an upper bound of the rest.

    Most pairs a lookup compares share an address, postal code or birthday and nothing else: their
    names decide, and the plain similarity of two names (or readings) is most of what the full
    comparison computes.  Every weight is a multiple of 0.5, so the sums are exact in any order.
    """
    if q.corporate_number and q.corporate_number == o.corporate_number:
        return False
    if q.email and q.email == o.email:
        return False
    if q.phones and o.phones and any(p in o.phones for p in q.phones):
        return False
    w = 0.0
    if q.kind and o.kind and q.kind != o.kind:
        w += W_KIND_DIFF
    if q.phones and o.phones:  # no identifying key agrees, see above
        w += W_PHONE_DIFF
    if q.email and o.email:
        w += W_EMAIL_DIFF
    if q.corporate_number and o.corporate_number:  # not equal, see above
        w += W_CORP_DIFF
    if q.prefecture and o.prefecture and q.prefecture != o.prefecture:
        w += W_PREF_DIFF
    if q.postal and o.postal:
        w += W_POSTAL if q.postal == o.postal else W_POSTAL_DIFF
    qb, ob = q.birthday, o.birthday
    if qb and ob:
        w += W_BIRTHDAY if qb == ob else W_BIRTHDAY_TYPO if _one_typo(qb, ob) else W_BIRTHDAY_DIFF
    if q.form and o.form and q.form != o.form:
        w += W_FORM_DIFF
    # branches and a different given name only take weight away; the name's weight is _compare's,
    # except that a name that differs may count as a part that agrees (0) there
    if q.name and o.name:
        both_corporate = q.corporate and o.corporate
        name_sim = _ratio(q.name, o.name)
        if not both_corporate:
            aligned = _person_parts(q.name_parts, o.name_parts)
            if aligned is not None:
                name_sim = max(name_sim, (aligned[0] + aligned[1]) / 2)
        if name_sim == 1.0:
            w += W_NAME_EXACT
        else:
            if q.kana and o.kana:
                kana_sim = _ratio(q.kana, o.kana)
                if not both_corporate:
                    kaligned = _person_parts(q.kana_parts, o.kana_parts)
                    if kaligned is not None:
                        kana_sim = max(kana_sim, (kaligned[0] + kaligned[1]) / 2)
                best = max(name_sim, kana_sim) if kana_sim >= 0.9 else (name_sim + kana_sim) / 2
            else:
                best = name_sim
            if best >= 0.65:
                w += W_NAME_HIGH if best >= 0.9 else W_NAME_MID if best >= 0.8 else W_NAME_LOW
            else:
                w += W_NAME_DIFF if both_corporate else max(W_NAME_PARTIAL, W_NAME_DIFF)
    if q.address and o.address:
        if w + W_ADDR_EXACT < PROBABLE_AT:
            return True
        w += _address_weight(q.address, o.address)[1]
    return w < PROBABLE_AT


@dataclass(slots=True)
class _Pair:
    weight: float
    codes: list[str]
    args: list[tuple[Any, ...]]
    #: Something contradicts: never certain.
    veto: bool
    #: Plainly two customers (another branch, another family member): no match at all.
    exclude: bool
    corp: bool
    email: bool
    phone: bool
    similar_name: bool
    name_conflict: bool
    #: Something beyond the name agrees (an address, postal code, phone, e-mail, birthday, 法人番号).
    support: bool
    #: 有限会社 / 株式会社: one company after a change of form, or two companies of one name.
    form_differs: bool


def _compare(q: CustomerKeys, o: CustomerKeys, common: tuple[int, int, int] = (1, 1, 1)) -> _Pair:
    """The evidence of a pair; ``common``: how many known records share the looked-up record's exact name,
    its postal code and its e-mail (each counting the record itself), for the term-frequency adjustment."""
    codes: list[str] = []
    args: list[tuple[Any, ...]] = []
    w = 0.0
    veto = exclude = False

    def ev(code: str, weight: float, *a: Any) -> None:
        nonlocal w
        w += weight
        codes.append(code)
        args.append(a)

    both_corporate = q.corporate and o.corporate
    if q.kind and o.kind and q.kind != o.kind:
        ev("kind_differs", W_KIND_DIFF)
        veto = True

    # identifying keys
    corp = False
    if q.corporate_number and o.corporate_number:
        if q.corporate_number == o.corporate_number:
            ev("corporate_number", W_CORP, q.corporate_number)
            corp = True
        else:
            ev("corporate_number_differs", W_CORP_DIFF, q.corporate_number, o.corporate_number)
            veto = True
    email = bool(q.email and q.email == o.email)
    if email:
        ev("email", W_EMAIL, q.email)
        shared = _common_email_bits(common[2])
        if shared:  # one accountant's or head office's mailbox on many customers
            ev("common_email", -shared, common[2])
    shared_phone = next((p for p in q.phones if p in o.phones), None)
    if shared_phone is not None:
        ev("phone", W_PHONE, q.shown.get(shared_phone, shared_phone))  # formatted by _match, if shown
    # Another phone or e-mail on both rows argues against a pair that rests on its name and place; when
    # an identifying key agrees it is the customer's new line or address (a move), not another customer.
    identified = corp or email or shared_phone is not None
    if not identified:
        if q.phones and o.phones:
            ev("phone_differs", W_PHONE_DIFF, q.shown.get(q.phones[0], q.phones[0]),
               o.shown.get(o.phones[0], o.phones[0]))
        if q.email and o.email:
            ev("email_differs", W_EMAIL_DIFF, q.email, o.email)

    # name and reading
    name_sim = _ratio(q.name, o.name)
    kana_sim = _ratio(q.kana, o.kana)
    partial: str | None = None  # the name part that agrees when the rest does not (or is missing)
    given: tuple[str, str] | None = None
    if not both_corporate:
        aligned = _person_parts(q.name_parts, o.name_parts)
        if aligned is not None:
            name_sim = max(name_sim, (aligned[0] + aligned[1]) / 2)
            if max(aligned[0], aligned[1]) >= 0.85:
                partial = q.name_parts[0] if aligned[0] >= aligned[1] else "".join(q.name_parts[1:])
        else:
            partial = _part_of(q.name, q.name_parts, o.name, o.name_parts)
        if partial is None and q.kana and o.kana and kana_sim < 0.9:
            partial = _part_of(q.kana, q.kana_parts, o.kana, o.kana_parts)
        kaligned = _person_parts(q.kana_parts, o.kana_parts)
        if kaligned is not None:
            kana_sim = max(kana_sim, (kaligned[0] + kaligned[1]) / 2)
        given = _given_conflict(q, o, name_sim)
    if q.kana and o.kana:
        # the reading settles kanji variants and typos; a different reading drags a similar kanji down
        best = max(name_sim, kana_sim) if kana_sim >= 0.9 else (name_sim + kana_sim) / 2
    else:
        best = name_sim
    name_code = "company_name" if both_corporate else "person_name"
    if q.name and o.name:
        if name_sim == 1.0:
            ev(name_code, W_NAME_EXACT, q.shown.get("name", q.name))
            # a name many records share says less - unless an identifying key already tells them apart
            less = 0.0 if identified else _common_name_bits(common[0])
            if less:
                ev("common_name", -less, common[0])
        elif best >= 0.65:
            weight = W_NAME_HIGH if best >= 0.9 else W_NAME_MID if best >= 0.8 else W_NAME_LOW
            if name_sim >= 0.5:
                ev(name_code + "_similar", weight, name_sim)
            else:  # written in another script (ヤマダ製作所 / 山田製作所): the reading's evidence speaks
                w += weight
        elif partial:
            ev("person_name_partial", W_NAME_PARTIAL, partial)
        else:
            ev("name_differs", W_NAME_DIFF, best)
    if q.kana and o.kana and kana_sim >= 0.8:
        if kana_sim == 1.0:
            codes.append("kana")
            args.append((q.shown.get("kana", q.kana),))
        else:
            codes.append("kana_similar")
            args.append((kana_sim,))
    # place
    same_place = False
    if q.prefecture and o.prefecture and q.prefecture != o.prefecture:
        ev("prefecture_differs", W_PREF_DIFF, q.prefecture, o.prefecture)
        veto = True
    if q.address and o.address:
        a = q.address
        place, weight, place_args = _address_weight(a, o.address)
        if place is None:
            w += weight
        elif place in ("address", "address_building"):
            ev(place, weight, q.shown.get("address", a))
            same_place = True
        else:
            ev(place, weight, *place_args)
    if q.postal and o.postal:
        if q.postal == o.postal:
            ev("postal_code", W_POSTAL - _common_postal_bits(common[1]), q.shown.get("postal_code", q.postal))
        else:
            ev("postal_code_differs", W_POSTAL_DIFF, q.shown.get("postal_code", q.postal),
               o.shown.get("postal_code", o.postal))
    same_day = False
    if q.birthday and o.birthday:
        if q.birthday == o.birthday:
            ev("birthday", W_BIRTHDAY, q.birthday)
            same_day = True
        elif _one_typo(q.birthday, o.birthday):
            ev("birthday_similar", W_BIRTHDAY_TYPO, q.birthday, o.birthday)
            veto = True
            same_day = True
        else:
            ev("birthday_differs", W_BIRTHDAY_DIFF, q.birthday, o.birthday)
            veto = True

    if given is not None:
        # the same birthday says one person whose given name was mistyped or replaced (or twins)
        ev("given_name_differs", 0.0, *given)
        veto = True
        exclude = exclude or not same_day
    elif "name_differs" in codes and not both_corporate and not same_day:
        # a person of another name at the same address, phone or e-mail is someone else of the
        # household; a company of another name may be the same one renamed, and stays a candidate
        exclude = True
    branch = _branch(q.name, o.name) if both_corporate else None
    if branch is not None:
        veto = True
        if branch[0] and branch[1]:
            # two named branches are two customers, unless both rows put them at one address (renamed)
            ev("branch_differs", W_BRANCH_DIFF, branch[0], branch[1])
            exclude = exclude or not same_place
        else:
            ev("branch_one_side", W_BRANCH_ONE, branch[0] or branch[1])

    similar_name = name_sim >= CERTAIN_NAME or (kana_sim == 1.0 and name_sim >= 0.6)
    form_differs = bool(q.form and o.form and q.form != o.form)
    if form_differs:
        ev("legal_form_differs", W_FORM_DIFF, q.form, o.form)
    support = any(c in _SUPPORT for c in codes)
    return _Pair(w, codes, args, veto, exclude, corp, email, shared_phone is not None, similar_name,
                 bool(q.name and o.name and best < 0.65 and not partial), support, form_differs)


def _common_name_bits(n: int) -> float:
    """Term frequency: what an exact name shared by ``n`` records weighs less than a rare one: one bit
    for each doubling beyond 8 (the records of one customer typed several times share its name too),
    at most 4 (佐藤建設 in sixty cities still says a little)."""
    return min(round(2 * log2(n / 8)) / 2, 4.0) if n > 8 else 0.0


def _common_email_bits(n: int) -> float:
    """Term frequency of an e-mail address: one bit less for each doubling beyond 4 records (a company
    typed a few times shares its own), at most 6 (one accountant's mailbox on thirty clients)."""
    return min(round(2 * log2(n / 4)) / 2, 6.0) if n > 4 else 0.0


def _common_postal_bits(n: int) -> float:
    """Term frequency of a postal code: a code held by up to 64 records weighs in full, one bit less for
    each doubling beyond, nothing from 256 on (a business district where thousands share one code)."""
    return min(round(2 * log2(n / 64)) / 2, W_POSTAL) if n > 64 else 0.0


def _decide(pair: _Pair) -> Kind | None:
    if pair.exclude:
        return None
    if not pair.veto:
        # the 法人番号 survives a change of legal form; a phone or an e-mail says nothing about it
        if pair.corp and not pair.name_conflict:
            return "certain"
        if (pair.email or pair.phone) and pair.similar_name and not pair.form_differs:
            return "certain"
    # a name alone is never enough: 同姓同名 and same-named companies are common
    return "probable" if pair.weight >= PROBABLE_AT and pair.support else None


def _score(weight: float) -> float:
    return round(1.0 / (1.0 + exp(-(weight - PROBABLE_AT) / 3.0)), 3)


_SUPPORT = frozenset({"corporate_number", "email", "phone", "address", "address_building", "address_similar",
                      "address_floor_differs",
                      "postal_code", "birthday", "birthday_similar"})
_POSITIVE_ORDER = ("corporate_number", "email", "phone", "company_name", "company_name_similar", "person_name",
                   "person_name_similar", "person_name_partial", "kana", "kana_similar", "address", "address_building",
                   "address_similar", "postal_code", "birthday", "birthday_similar")


_ORDER = {c: i for i, c in enumerate(_POSITIVE_ORDER)}
#: Evidence whose value is parsed into its canonical spelling only when shown (most pairs compared are not).
_SHOWN_PARSERS = {"phone": normalize.phone, "postal_code": normalize.postal, "phone_differs": normalize.phone,
                  "postal_code_differs": normalize.postal}


def compare(a: Mapping[str, Any] | CustomerKeys, b: Mapping[str, Any] | CustomerKeys, *,
            lang: str = "ja", other_id: str = "", common: tuple[int, int, int] = (1, 1, 1)) -> Match | None:
    """Compare two records directly (no index): the match of ``b`` for ``a``, or None.  ``common``: how
    many records share ``a``'s name, postal code and e-mail (:meth:`MatchIndex.frequencies`)."""
    ka = a if isinstance(a, CustomerKeys) else customer_keys(a)
    kb = b if isinstance(b, CustomerKeys) else customer_keys(b)
    return _match(ka, kb, other_id, 0 if lang == "ja" else 1, common)


def _match(q: CustomerKeys, o: CustomerKeys, other_id: str, li: int, common: tuple[int, int, int] = (1, 1, 1)
           ) -> Match | None:
    if _hopeless(q, o):
        return None
    pair = _compare(q, o, common)
    kind = _decide(pair)
    if kind is None:
        return None
    order = _ORDER
    items = sorted(zip(pair.codes, pair.args, strict=True), key=lambda ca: order.get(ca[0], len(order)))
    evidence = tuple(_TEXTS[c][li].format(*(_shown_code(_SHOWN_PARSERS[c], x) for x in a)
                                          if c in _SHOWN_PARSERS else a)
                     for c, a in items)
    return Match(other_id, kind, _score(pair.weight), evidence, tuple(c for c, _ in items))


# --- the index ------------------------------------------------------------------------------------


class MatchIndex:
    """Customers already known (the master plus rows merged so far), searchable for duplicates."""

    def __init__(self, schema: Schema, lang: str = "ja") -> None:
        if lang not in ("ja", "en"):
            raise ValueError(f"lang must be 'ja' or 'en', not {lang!r}")
        # The keys come from the customers entity's own columns; a firm that switched one off simply
        # has no evidence from it.
        entity = schema.entity("customers")
        self._columns = frozenset(entity.keys)
        self._all_columns = self._columns >= _READ
        self._lang = 0 if lang == "ja" else 1
        self._keys: dict[str, CustomerKeys] = {}
        #: tag -> blocking key -> {record id: its address key}, or just the record id while only one record
        #: has the key (most keys: a dict per key would be a third of the index's memory).  The address
        #: travels with the id: a lookup tests most candidates on the address alone, and fetching each
        #: one's keys from ``_keys`` would cost more than the test (memory, not arithmetic, is what a
        #: lookup spends its time on).
        self._blocks: dict[str, dict[str, Any]] = {tag: {} for tag in _TAGS}
        #: record id -> birthday, for the ones that have one
        self._days: dict[str, str] = {}
        # where keys_for_values finds each value _fold takes (-1: a column this schema switched off)
        at = [entity.keys.index(c) if c in self._columns else -1 for c in _FOLD_COLUMNS]
        self._pick: Callable[[Sequence[Any]], tuple[Any, ...]]
        if min(at) >= 0:
            self._pick = itemgetter(*at)
        else:
            self._pick = lambda values: tuple(values[i] if i >= 0 else None for i in at)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._keys

    def keys_for(self, record: Mapping[str, Any]) -> CustomerKeys:
        """Fold ``record`` once, for :meth:`find_keys` and then :meth:`add_keys` (merge looks a row up and
        then indexes it: folding is a good part of a lookup's cost, and the keys do not change)."""
        if self._all_columns:
            return customer_keys(record)
        return customer_keys({k: v for k, v in record.items() if k in self._columns})

    def keys_for_values(self, values: Sequence[Any]) -> CustomerKeys:
        """:meth:`keys_for` of a row given as its values in the customers entity's column order
        (``schema.entity("customers").keys``), the way merge holds rows: no dict built per row."""
        return _fold(*self._pick(values))

    def add(self, record_id: str, record: Mapping[str, Any]) -> None:
        """Index (or re-index, after an update) one customer."""
        self.add_keys(record_id, self.keys_for(record))

    def add_keys(self, record_id: str, keys: CustomerKeys) -> None:
        """:meth:`add` with keys already folded by :meth:`keys_for`."""
        if record_id in self._keys:
            self.remove(record_id)
        self._keys[record_id] = keys
        if keys.birthday:
            self._days[record_id] = keys.birthday
        blocks = self._blocks
        address = keys.address
        for tag, value in _blocks(keys):
            by_value = blocks[tag]
            ids = by_value.get(value)
            if ids is None:
                by_value[value] = record_id
            elif type(ids) is dict:
                ids[record_id] = address
            elif ids != record_id:  # (a name part can also be a reading part of the same record)
                by_value[value] = {ids: self._keys[ids].address, record_id: address}

    def add_many(self, records: Iterable[tuple[str, Mapping[str, Any] | Sequence[Any]]]) -> None:
        """Bulk :meth:`add` (a whole master), each record a mapping or its values in the entity's column
        order (as :meth:`keys_for_values`): the cyclic GC is paused, since it would rescan the growing
        index again and again while nothing here makes cycles."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            for record_id, record in records:
                if isinstance(record, Mapping):
                    self.add_keys(record_id, self.keys_for(record))
                else:
                    self.add_keys(record_id, _fold(*self._pick(record)))
        finally:
            if enabled:
                gc.enable()

    def remove(self, record_id: str) -> None:
        """Forget a customer (merged into another, or about to be re-indexed)."""
        keys = self._keys.pop(record_id, None)
        if keys is None:
            return
        self._days.pop(record_id, None)
        for tag, value in _blocks(keys):
            by_value = self._blocks[tag]
            ids = by_value.get(value)
            if ids is None:
                continue
            if type(ids) is not dict:
                if ids == record_id:
                    del by_value[value]
            else:
                ids.pop(record_id, None)
                if not ids:
                    del by_value[value]

    def frequencies(self, keys: CustomerKeys) -> tuple[int, int, int]:
        """How many known records share the exact name, the postal code and the e-mail of ``keys``, each
        counting the record looked up (the term frequencies a lookup weighs its evidence by)."""
        return self._count("n", keys.name), self._count("z", keys.postal), self._count("e", keys.email or "")

    def _count(self, tag: str, value: str) -> int:
        """Records holding blocking key ``value`` of kind ``tag``, plus the one looked up."""
        if not value:
            return 1
        ids = self._blocks[tag].get(value)
        return 1 if ids is None else 2 if type(ids) is not dict else len(ids) + 1

    def candidates(self, keys: CustomerKeys) -> set[str]:
        """Ids sharing at least one blocking key with ``keys`` (weak keys only when selective)."""
        out: set[str] = set()
        for tag, value in _blocks(keys):
            ids = self._blocks[tag].get(value)
            if ids is None:
                continue
            if type(ids) is not dict:
                out.add(ids)
            elif tag in _STRONG or len(ids) <= _WEAK_BLOCK_LIMIT:
                out.update(ids)
        return out

    def find(self, record: Mapping[str, Any], *, exclude: str | None = None) -> list[Match]:
        """Known customers that may be ``record``: certain ones first, then by score (best first)."""
        return self.find_keys(self.keys_for(record), exclude=exclude)

    def find_keys(self, q: CustomerKeys, *, exclude: str | None = None) -> list[Match]:
        """:meth:`find` with keys already folded by :meth:`keys_for`.

        Most candidates (a shared surname, name start or reading) share nothing beyond the name and can
        never match: the ones sharing a key that is support are collected with set operations and
        compared in full, the rest only when :func:`_near_ids` finds support.
        """
        blocks = self._blocks
        cand: dict[str, str] = {}  # id -> address key
        supported: set[str] = set()
        big: list[dict[str, str]] = []  # support blocks too large to add candidates, still support for others
        known = self._keys
        for tag, value in _blocks(q):
            ids = blocks[tag].get(value)
            if ids is None:
                continue
            if type(ids) is not dict:  # one record
                cand[ids] = known[ids].address
                if tag in _SUPPORT_BLOCKS:
                    supported.add(ids)
            elif tag in _STRONG or len(ids) <= _WEAK_BLOCK_LIMIT:
                cand.update(ids)
                if tag in _SUPPORT_BLOCKS:
                    supported.update(ids)
            elif tag in _SUPPORT_BLOCKS:
                big.append(ids)
        if exclude is not None:
            cand.pop(exclude, None)
            supported.discard(exclude)
        if not cand:
            return []
        li = self._lang
        out: list[Match] = []
        common = self.frequencies(q)
        for other_id in supported:  # all in cand
            del cand[other_id]
            m = _match(q, known[other_id], other_id, li, common)
            if m is not None:
                out.append(m)
        if cand:
            for other_id in _near_ids(q, cand, self._days, big):
                m = _match(q, known[other_id], other_id, li, common)
                if m is not None:
                    out.append(m)
        if len(out) > 1:
            out.sort(key=_match_order)
        return out


#: A record proposes at most this many 重複候補, its best: in a crowd of look-alikes (an office building
#: of 〇〇商事) every record would otherwise be paired with every other.
PROPOSALS_PER_RECORD = 3


def proposals(matches: Sequence[Match]) -> list[Match]:
    """What a lookup (:meth:`MatchIndex.find_keys`, best first) puts on 重複候補: every certain match and
    the best :data:`PROPOSALS_PER_RECORD` probable ones."""
    certain = [m for m in matches if m.kind == "certain"]
    return certain + [m for m in matches if m.kind == "probable"][:PROPOSALS_PER_RECORD]


def _match_order(m: Match) -> tuple[bool, float, str]:
    return m.kind != "certain", -m.score, m.other_id


#: Up to this many candidates are tested one by one; more in one rapidfuzz call per test.
_FEW_CANDIDATES = 4


def _near_ids(q: CustomerKeys, cand: Mapping[str, str], days: Mapping[str, str],
              big: list[dict[str, str]]) -> list[str]:
    """The ids of ``cand`` (id -> address key; ``days``: id -> birthday) for which
    :func:`_near_place_or_day` holds, or that share a support block too big to make candidates.

    With more than a few candidates each test runs as one ``rapidfuzz.process.extract`` over all of them
    (C speed; a Python loop costs more than the comparisons it makes) with a cut-off that every pair
    passing the test passes too, and the few pairs it returns get the exact test.
    """
    qb = q.birthday
    a = q.address
    if len(cand) <= _FEW_CANDIDATES:
        return [i for i, b in cand.items()
                if (qb and (ob := days.get(i)) and _one_typo(qb, ob)) or (a and b and _near_address(a, b))
                or (big and any(i in ids for ids in big))]
    hits: set[str] = set()
    if qb and days:
        # ISO dates put their hyphens in the same places, so dates one keystroke apart differ in at most
        # two positions of the ISO text too (rapidfuzz skips the None of a candidate without a birthday)
        with_day = dict(zip(cand, map(days.get, cand), strict=True))
        for ob, _, i in _extract(qb, with_day, scorer=_hamming, score_cutoff=2, limit=None):
            if _one_typo(qb, ob):
                hits.add(i)
    if a:
        for _, score, i in _extract(a, cand, scorer=_indel_similarity, score_cutoff=0.79, limit=None):
            if score >= 0.8:
                hits.add(i)
        first_digit = _DIGITS.search(a)
        if first_digit is not None:
            # one address extending the other counts only when the shorter has a digit, so both share
            # at least the text up to the first digit of this one (no digit: the test cannot pass)
            for b, _, i in _extract(a, cand, scorer=_prefix_similarity, score_cutoff=first_digit.start() + 1,
                                    limit=None):
                if (a.startswith(b) or b.startswith(a)) and _DIGITS.search(min(a, b, key=len)):
                    hits.add(i)
        if " " in a:
            for b, score, i in _extract(a, cand, scorer=fuzz.token_set_ratio, score_cutoff=83, limit=None):
                if " " in b and score / 100 * 0.95 >= 0.8:
                    hits.add(i)
    if big:
        hits.update(i for i in cand if i not in hits and any(i in ids for ids in big))
    return list(hits)


# --- contact persons (担当者) -----------------------------------------------------------------------

#: The contacts columns contact matching reads.
CONTACT_COLUMNS = ("name", "kana", "email", "phone", "mobile")
_CONTACT_TEXTS: dict[str, tuple[str, str]] = {
    "same_customer": ("同じ顧客の担当者", "Contact of the same customer"),
    "person_name": ("氏名が一致 ({0})", "Same name ({0})"),
}


def contact_keys(record: Mapping[str, Any]) -> CustomerKeys:
    """A contact person (``{column key: value}`` of the contacts sheet) folded like an individual customer:
    name with or without its space, variant kanji, e-mail case, phone and mobile digits."""
    get = record.get
    return _fold("individual", get("name"), get("kana"), None, get("email"), get("phone"), get("mobile"),
                 None, None, None, None)


def same_contact(q: CustomerKeys, o: CustomerKeys, other_id: str, *, lang: str = "ja") -> Match | None:
    """Two contacts of one customer that may be one person typed by two colleagues: what the person
    model says (:func:`compare`), or - since both work for the same customer - the same name alone when
    no phone or e-mail on both rows says otherwise.  Always a 重複候補 (``probable``): a person decides."""
    li = 0 if lang == "ja" else 1
    m = _match(q, o, other_id, li)
    same_name = bool(q.name and q.name == o.name) or bool(q.kana and q.kana == o.kana and _ratio(q.name, o.name) >= 0.5)
    if m is None:
        if not same_name:
            return None
        if q.phones and o.phones and not set(q.phones) & set(o.phones):
            return None
        if q.email and o.email and q.email != o.email:
            return None
        evidence = (_CONTACT_TEXTS["person_name"][li].format(q.shown.get("name", q.name)),)
        m = Match(other_id, "probable", _score(PROBABLE_AT), evidence, ("person_name",))
    elif "given_name_differs" in m.codes:
        return None
    return Match(other_id, "probable", m.score, (*m.evidence, _CONTACT_TEXTS["same_customer"][li]),
                 (*m.codes, "same_customer"))
