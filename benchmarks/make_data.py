"""Large team workbooks for the validation and merge benchmarks (run on demand, not in the test suite).

    python benchmarks/make_data.py OUT.xlsx --customers 100000 --activities 300000
    python benchmarks/make_data.py --team DIR --files 10 --customers 100000 --activities 300000

Files are real standard workbooks written by :func:`xlcrm.intake.template.write_team_workbook` (tables,
validation, formats), so the benchmark reads what staff would hand in.  The data has the variety of a
real list (tens of thousands of distinct phones, e-mails, names and dates), the spellings people use
(full-width digits, phones without hyphens, 和暦 and 2024年4月1日 dates, hiragana フリガナ, ㈱ and (株),
e-mail case), a few real errors (about 0.1% of rows), and, in a team, customers that two people both
entered.  Same-name individuals occur as in any real list of this size; they are duplicate warnings.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from xlcrm.demo.fakedata import (
    COMPANY_BUSINESSES,
    COMPANY_REGIONS,
    COMPANY_STEMS,
    GIVEN_NAMES,
    LEGAL_FORM_SPELLINGS,
    LEGAL_FORMS,
    PLACES,
    PRODUCTS,
    SURNAMES,
    corporate_number,
    spoil_check_digit,
    to_fullwidth,
    to_hiragana,
    to_wareki,
)
from xlcrm.intake.template import write_team_workbook
from xlcrm.schema import DEFAULT_SCHEMA, Schema

Row = dict[str, Any]

#: Fixed "today" and creation time: the same arguments give the same file on any day.
TODAY = date(2025, 6, 30)
CREATED = datetime(2025, 6, 30, 9, 0)

# Rates of spellings that only need normalising, and of real errors (per row).
VARIANT_RATE = {"phone_plain": 0.03, "phone_fullwidth": 0.01, "kana_hiragana": 0.02, "email_upper": 0.01,
                "legal_short": 0.05, "date_wareki": 0.01, "date_text": 0.005}
ERROR_RATE = {"phone_leading_zero": 0.0005, "email_bad": 0.0003, "corp_check_digit": 0.0003,
              "date_impossible": 0.0002, "complaint_no_response": 0.0002, "ref_unknown": 0.0001}

_STEMS = tuple({s[0]: s for s in COMPANY_STEMS + SURNAMES}.values())  # 小林 is in both lists

# Composed names, so 15,000 individuals share names about as rarely as real people do (a few %),
# instead of the demo's 3,000 real combinations. (kanji, katakana, romaji)
_SUR_HEAD = (("山", "ヤマ", "yama"), ("中", "ナカ", "naka"), ("小", "コ", "ko"), ("大", "オオ", "o"),
             ("高", "タカ", "taka"), ("石", "イシ", "ishi"), ("松", "マツ", "matsu"), ("竹", "タケ", "take"),
             ("川", "カワ", "kawa"), ("森", "モリ", "mori"), ("藤", "フジ", "fuji"), ("長", "ナガ", "naga"),
             ("西", "ニシ", "nishi"), ("東", "ヒガシ", "higashi"), ("北", "キタ", "kita"), ("岡", "オカ", "oka"),
             ("宮", "ミヤ", "miya"), ("上", "ウエ", "ue"), ("今", "イマ", "ima"), ("浅", "アサ", "asa"),
             ("福", "フク", "fuku"), ("吉", "ヨシ", "yoshi"), ("平", "ヒラ", "hira"), ("村", "ムラ", "mura"))
_SUR_TAIL = (("田", "ダ", "da"), ("村", "ムラ", "mura"), ("川", "カワ", "kawa"), ("山", "ヤマ", "yama"),
             ("本", "モト", "moto"), ("野", "ノ", "no"), ("口", "グチ", "guchi"), ("井", "イ", "i"),
             ("島", "シマ", "shima"), ("沢", "サワ", "sawa"), ("原", "ハラ", "hara"), ("崎", "サキ", "saki"),
             ("谷", "タニ", "tani"), ("尾", "オ", "o"), ("岡", "オカ", "oka"), ("内", "ウチ", "uchi"),
             ("林", "バヤシ", "bayashi"), ("橋", "ハシ", "hashi"), ("浦", "ウラ", "ura"), ("坂", "サカ", "saka"))
_GIVEN_HEAD = (("健", "ケン", "ken"), ("翔", "ショウ", "sho"), ("大", "ダイ", "dai"), ("拓", "タク", "taku"),
               ("直", "ナオ", "nao"), ("和", "カズ", "kazu"), ("達", "タツ", "tatsu"), ("浩", "コウ", "ko"),
               ("隆", "タカ", "taka"), ("康", "ヤス", "yasu"), ("正", "マサ", "masa"), ("秀", "ヒデ", "hide"),
               ("智", "トモ", "tomo"), ("俊", "トシ", "toshi"), ("裕", "ヒロ", "hiro"), ("悠", "ユウ", "yu"),
               ("美", "ミ", "mi"), ("真", "マ", "ma"), ("由", "ユ", "yu"), ("明", "アキ", "aki"),
               ("彩", "サ", "sa"), ("千", "チ", "chi"), ("沙", "サ", "sa"), ("理", "リ", "ri"))
_GIVEN_TAIL = (("太", "タ", "ta"), ("一", "イチ", "ichi"), ("也", "ヤ", "ya"), ("樹", "キ", "ki"),
               ("介", "スケ", "suke"), ("人", "ト", "to"), ("司", "ジ", "ji"), ("平", "ヘイ", "hei"),
               ("子", "コ", "ko"), ("香", "カ", "ka"), ("奈", "ナ", "na"), ("花", "カ", "ka"),
               ("里", "リ", "ri"), ("穂", "ホ", "ho"), ("菜", "ナ", "na"), ("希", "キ", "ki"))
_SURNAMES_BIG = SURNAMES + tuple((a[0] + b[0], a[1] + b[1], a[2] + b[2]) for a in _SUR_HEAD for b in _SUR_TAIL
                                 if a[0] != b[0])
_GIVEN_BIG = GIVEN_NAMES + tuple((a[0] + b[0], a[1] + b[1], a[2] + b[2]) for a in _GIVEN_HEAD
                                 for b in _GIVEN_TAIL)
_MIDDLES = (("", "", ""), *COMPANY_REGIONS, *COMPANY_STEMS)
_ACT_TYPES = ("call", "email", "visit", "meeting", "store_visit", "inquiry", "complaint", "survey", "event",
              "other")
_ACT_WEIGHTS = (28, 18, 14, 10, 5, 12, 5, 3, 3, 2)
_CATEGORIES = ("product", "service", "price", "delivery", "other")
_CONTENT = {
    "ja": ("{p}の件で電話。", "見積書No.{n}を送付。", "{p}のデモを実施。", "定期訪問。", "{p}の提案。",
           "来店。{p}について相談。", "{p}について問い合わせ。", "{p}に関するご指摘。", "アンケート回収。",
           "セミナー参加。", "その他連絡。"),
    "en": ("Called about the {p}.", "Sent quote no. {n}.", "Demonstrated the {p}.", "Regular visit.",
           "Proposed the {p}.", "Came in about the {p}.", "Asked about the {p}.", "Complained about the {p}.",
           "Returned the survey.", "Attended the seminar.", "Other contact."),
}
_CONTENT_INDEX = {"call": 0, "email": 1, "visit": 2, "meeting": 4, "store_visit": 5, "inquiry": 6,
                  "complaint": 7, "survey": 8, "event": 9, "other": 10}
_RESPONSE = {"ja": ("資料を送付し説明。", "交換品を手配。", "見積を再提出。", "折り返し電話で回答。"),
             "en": ("Sent documents and explained.", "Sent a replacement.", "Re-sent the quote.",
                    "Called back with the answer.")}


class _Gen:
    """Fast row generator: uniqueness by construction (sampled serials), not by retrying."""

    def __init__(self, seed: int, n_customers: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        n = max(n_customers, 1)
        self._phones: set[str] = set()
        self._mobile_serials = iter(rng.sample(range(30_000_000), min(30_000_000, 2 * n + 10)))
        self._corp_serials = iter(rng.sample(range(1_000_000), min(1_000_000, n + 10)))
        combos = len(_STEMS) * len(_MIDDLES) * len(COMPANY_BUSINESSES)
        self._company_ids = iter(rng.sample(range(combos), min(combos, n + 1000)))
        self._email_seen: set[str] = set()
        self._company_names: set[str] = set()
        self.counts: Counter[str] = Counter()

    def hit(self, what: str, table: dict[str, float]) -> bool:
        if self.rng.random() < table[what]:
            self.counts[what] += 1
            return True
        return False

    def phone(self, area: str) -> str:
        rest = 10 - len(area)
        while True:
            first = self.rng.choice("235678" if area == "011" else "23456789")
            local = f"{first}{self.rng.randrange(10 ** (rest - 1)):0{rest - 1}d}"
            phone = f"{area}-{local[:rest - 4]}-{local[rest - 4:]}"
            if phone not in self._phones:
                self._phones.add(phone)
                return phone

    def mobile(self) -> str:
        s = next(self._mobile_serials)
        prefix, q = ("090", "080", "070")[s % 3], s // 3
        return f"{prefix}-{1000 + q // 10000 * 9}-{q % 10000:04d}"

    def email(self, local: str, domain: str) -> str:
        cand, n = f"{local}@{domain}", 1
        while cand in self._email_seen:
            n += 1
            cand = f"{local}{n}@{domain}"
        self._email_seen.add(cand)
        return cand

    def variant_phone(self, phone: str) -> Any:
        if self.hit("phone_leading_zero", ERROR_RATE):
            return int(phone.replace("-", ""))
        if self.hit("phone_plain", VARIANT_RATE):
            return phone.replace("-", "")
        if self.hit("phone_fullwidth", VARIANT_RATE):
            return to_fullwidth(phone)
        return phone

    def variant_date(self, d: date) -> Any:
        if self.hit("date_impossible", ERROR_RATE):
            return f"{d.year}/2/30"
        if self.hit("date_wareki", VARIANT_RATE):
            return to_wareki(d, self.rng.choice(("short", "kanji")))
        if self.hit("date_text", VARIANT_RATE):
            return self.rng.choice((f"{d.year}/{d.month}/{d.day}", f"{d.year}年{d.month}月{d.day}日"))
        return d

    def customer(self, owner: str) -> Row:
        rng = self.rng
        pref, city, postals, area, towns = rng.choice(PLACES)
        row: Row = {"postal_code": f"{rng.choice(postals)}-{rng.randrange(10000):04d}", "prefecture": pref,
                    "address": f"{city}{rng.choice(towns)}{rng.randint(1, 5)}-{rng.randint(1, 20)}-"
                               f"{rng.randint(1, 30)}",
                    "owner": owner, "dm_consent": rng.choice(("yes", "no", "unknown", "unknown")),
                    "status": rng.choice(("prospect", "negotiating", "active", "active", "dormant", "lost"))}
        if rng.random() < 0.85:
            while True:  # different parts can still spell the same name (旭 + 日 ...): skip those
                cid, b = divmod(next(self._company_ids), len(COMPANY_BUSINESSES))
                s, m = divmod(cid, len(_MIDDLES))
                stem, mid, bus = _STEMS[s], _MIDDLES[m], COMPANY_BUSINESSES[b]
                if f"{stem[0]}{mid[0]}{bus[0]}" not in self._company_names:
                    self._company_names.add(f"{stem[0]}{mid[0]}{bus[0]}")
                    break
            form = rng.choices(("kabushiki", "yugen", "godo"), (80, 15, 5))[0]
            spellings = LEGAL_FORM_SPELLINGS[form]
            legal = rng.choice(spellings[1:]) if len(spellings) > 1 and self.hit("legal_short", VARIANT_RATE) \
                else spellings[0]
            text = f"{stem[0]}{mid[0]}{bus[0]}"
            kana = f"{stem[1]}{mid[1]}{bus[1]}"
            domain = "-".join(x for x in (stem[2], mid[2], bus[2]) if x) + ".co.jp"
            phone = self.phone(area)
            corp = corporate_number(f"{rng.randint(1, 99):02d}{rng.randint(1, 4):02d}{LEGAL_FORMS[form]}"
                                    f"{next(self._corp_serials):06d}")
            if rng.random() < 0.2:
                corp = None  # not everyone looks the 法人番号 up
            elif self.hit("corp_check_digit", ERROR_RATE):
                corp = spoil_check_digit(corp)
            row.update(kind="corporate", name=f"{legal}{text}" if rng.random() < 0.6 else f"{text}{legal}",
                       kana=kana, corporate_number=corp,
                       industry=bus[3], employees=rng.choice((3, 5, 8, 12, 20, 35, 50, 80, 120, 300, 1200)),
                       phone=self.variant_phone(phone), email=self.email(rng.choice(("info", "sales")), domain),
                       website=f"https://www.{domain}/")
            if rng.random() < 0.5:
                head, last = phone.rsplit("-", 1)
                row["fax"] = f"{head}-{(int(last) + 1) % 10 ** len(last):0{len(last)}d}"
        else:
            sur, given = rng.choice(_SURNAMES_BIG), rng.choice(_GIVEN_BIG)
            kana = f"{sur[1]} {given[1]}"
            row.update(kind="individual", name=f"{sur[0]} {given[0]}", kana=kana, phone=self.variant_phone(
                self.mobile()), birthday=self.variant_date(TODAY - timedelta(days=rng.randint(20 * 365,
                                                                                              85 * 365))))
            if rng.random() < 0.7:
                row["email"] = self.email(f"{given[2]}.{sur[2]}", rng.choice(("example.ne.jp", "example.jp")))
        if self.hit("kana_hiragana", VARIANT_RATE):
            row["kana"] = to_hiragana(row["kana"])
        if row.get("email"):
            if self.hit("email_bad", ERROR_RATE):
                row["email"] = row["email"].replace("@", "", 1)
            elif self.hit("email_upper", VARIANT_RATE):
                row["email"] = row["email"].upper()
        return row

    def activity(self, customer: str, owner: str, lang: str) -> Row:
        rng = self.rng
        kind = rng.choices(_ACT_TYPES, _ACT_WEIGHTS)[0]
        product = rng.choice(PRODUCTS)[0 if lang == "ja" else 1]
        content = _CONTENT[lang][_CONTENT_INDEX[kind]].format(p=product, n=rng.randint(10000, 99999))
        row: Row = {"date": self.variant_date(TODAY - timedelta(days=rng.randint(0, 3 * 365))),
                    "customer": customer, "type": kind, "content": content, "handled_by": owner}
        if kind in ("inquiry", "complaint"):
            row["category"] = rng.choice(_CATEGORIES)
            row["response"] = rng.choice(_RESPONSE[lang])
            row["result"] = rng.choice(("resolved", "resolved", "in_progress", "unresolved"))
            if kind == "complaint" and self.hit("complaint_no_response", ERROR_RATE):
                row["response"] = None
        if self.hit("ref_unknown", ERROR_RATE):
            row["customer"] = "株式会社存在しない商会"
        return row


def _referable(customers: list[Row]) -> list[str]:
    """Names an activity may point at: unique in the workbook (a shared name is an ambiguous ref)."""
    counts = Counter(c["name"] for c in customers)
    return [c["name"] for c in customers if counts[c["name"]] == 1]


def _write(path: Path, schema: Schema, owner: str, lang: str, customers: list[Row],
           activities: list[Row]) -> None:
    write_team_workbook(path, schema, owner=owner, lang=lang,  # type: ignore[arg-type]
                        rows={"customers": customers, "activities": activities}, created=CREATED)


def make_large_workbook(path: str | Path, n_customers: int = 100_000, n_activities: int = 300_000,
                        seed: int = 1, schema: Schema = DEFAULT_SCHEMA, owner: str = "佐藤 健一",
                        lang: str = "ja") -> dict[str, Any]:
    """One team workbook of that size; returns what was planted and how long each step took."""
    t0 = time.perf_counter()
    g = _Gen(seed, n_customers)
    customers = [g.customer(owner) for _ in range(n_customers)]
    names = _referable(customers)
    activities = [g.activity(g.rng.choice(names), owner, lang) for _ in range(n_activities)]
    activities.sort(key=lambda r: r["date"] if isinstance(r["date"], date) else TODAY)
    t1 = time.perf_counter()
    _write(Path(path), schema, owner, lang, customers, activities)
    t2 = time.perf_counter()
    return {"path": str(path), "customers": n_customers, "activities": n_activities,
            "generate_s": round(t1 - t0, 1), "write_s": round(t2 - t1, 1), "planted": dict(g.counts)}


def make_team(directory: str | Path, n_files: int = 10, total_customers: int = 100_000,
              total_activities: int = 300_000, seed: int = 1, shared_rate: float = 0.03,
              schema: Schema = DEFAULT_SCHEMA) -> list[Path]:
    """``n_files`` staff workbooks for the merge benchmark; one in English, as teams mix languages.

    ``shared_rate`` of the customers are also in another person's file, spelled differently (legal
    form, phone hyphens, e-mail case), so merge has real duplicates to link.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    g = _Gen(seed, total_customers)
    rng = g.rng
    owners = [f"{SURNAMES[i][0]} {GIVEN_NAMES[i * 3 % len(GIVEN_NAMES)][0]}" for i in range(n_files)]
    langs = ["en" if i == n_files - 1 and n_files > 1 else "ja" for i in range(n_files)]
    per_file: list[list[Row]] = [[] for _ in range(n_files)]
    n_shared = int(total_customers * shared_rate)
    for i in range(total_customers - n_shared):
        f = i % n_files
        per_file[f].append(g.customer(owners[f]))
    originals = rng.sample([(f, i) for f in range(n_files) for i in range(len(per_file[f]))],
                           min(n_shared, total_customers - n_shared)) if n_files > 1 else []
    for src, i in originals:  # a customer from one file, typed again by someone else
        dst = (src + rng.randrange(1, n_files)) % n_files
        original = per_file[src][i]
        copy = {**original, "owner": owners[dst]}
        copy["name"] = _respell(str(original["name"]), rng)
        if isinstance(copy.get("phone"), str):
            copy["phone"] = copy["phone"].replace("-", "") if "-" in copy["phone"] else copy["phone"]
        if isinstance(copy.get("email"), str):
            copy["email"] = copy["email"].upper() if rng.random() < 0.5 else copy["email"]
        per_file[dst].append(copy)
    paths = []
    for f in range(n_files):
        names = _referable(per_file[f])
        share = len(per_file[f]) / max(1, sum(len(p) for p in per_file))
        acts = [g.activity(rng.choice(names), owners[f], langs[f]) for _ in range(round(total_activities * share))]
        acts.sort(key=lambda r: r["date"] if isinstance(r["date"], date) else TODAY)
        path = directory / f"staff_{f + 1:02d}.xlsx"
        _write(path, schema, owners[f], langs[f], per_file[f], acts)
        paths.append(path)
    return paths


def _respell(name: str, rng: random.Random) -> str:
    for spellings in LEGAL_FORM_SPELLINGS.values():
        for s in spellings:
            if s in name:
                others = [x for x in spellings if x != s] or [s]
                return name.replace(s, rng.choice(others))
    return name.replace(" ", "\u3000")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="the workbook to write (single-file mode)")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--activities", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--team", metavar="DIR", help="write a team of workbooks into DIR instead")
    ap.add_argument("--files", type=int, default=10, help="team size with --team")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.team:
        paths = make_team(args.team, args.files, args.customers, args.activities, args.seed)
        print(f"{len(paths)} workbooks in {args.team} ({time.perf_counter() - t0:.1f} s)")
    elif args.out:
        info = make_large_workbook(args.out, args.customers, args.activities, args.seed)
        print(f"{info['path']}: {info['customers']:,} customers, {info['activities']:,} activities; "
              f"generated in {info['generate_s']} s, written in {info['write_s']} s; planted {info['planted']}")
    else:
        ap.error("give OUT.xlsx or --team DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
