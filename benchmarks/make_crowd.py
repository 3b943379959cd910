"""Team workbooks for duplicate detection where customers crowd, and the same volume spread over Japan.

    python benchmarks/make_crowd.py crowded /tmp/crowd/crowded      # 10 x 2,000 companies, 3 postal codes
    python benchmarks/make_crowd.py spread /tmp/crowd/spread        # surnames x trades all over Japan

* ``crowded``: every company sits in one of three business districts (three postal codes: 博多駅前,
  丸の内, 梅田), about three companies per street number (one building, other floors), and the names are
  made of four katakana from a ten-kana alphabet plus a trade (アイウエ商事, アイウオ商事: one kana
  apart).  Every company has its own phone and e-mail, 70% a 法人番号.
* ``spread``: names are a common surname and a trade (佐藤建設, 鈴木商店), so the same name recurs in
  many cities; places, phones and e-mails as in a real list all over Japan.

Both sets hold ``files`` x ``per_file`` distinct companies plus ``reentries`` companies typed again by a
colleague in another workbook, in four styles (a quarter each):

* ``phone``: the legal form spelt another way (株式会社 / ㈱), the phone without hyphens, no e-mail;
* ``email``: the e-mail in capitals, フリガナ in hiragana, the address as 1丁目2番3号, no phone;
* ``address``: the name respelt, the address in full-width 丁目/番/号 form, no phone, e-mail or 法人番号;
* ``moved_phone``: the same name and address without the building, a new phone number, no e-mail.

The truth is in 備考 (``真:<company number>``) of every row, for ``bench_crowd.py``: a re-entry carries
the same tag as the company it repeats.  The same arguments give the same files.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from xlcrm.demo.fakedata import (
    COMPANY_BUSINESSES,
    PLACES,
    SURNAMES,
    corporate_number,
    to_fullwidth,
    to_hiragana,
)
from xlcrm.intake.template import write_team_workbook
from xlcrm.schema import DEFAULT_SCHEMA

CREATED = datetime(2025, 6, 30, 9, 0)
STYLES = ("phone", "email", "address", "moved_phone")
#: The three districts of the crowded set: (postal code, prefecture, city, town, area code, 丁目 count).
DISTRICTS = (("812-0011", "福岡県", "福岡市博多区", "博多駅前", "092", 4),
             ("100-0005", "東京都", "千代田区", "丸の内", "03", 3),
             ("530-0001", "大阪府", "大阪市北区", "梅田", "06", 3))
_KANA = "アイウエオカキクケコ"
_ROMAJI = dict(zip(_KANA, ("a", "i", "u", "e", "o", "ka", "ki", "ku", "ke", "ko"), strict=True))
_TRADES = (("商事", "ショウジ"), ("商会", "ショウカイ"), ("物産", "ブッサン"))
_BUILDINGS = ("センタービル", "第一ビル", "駅前ビル", "スクエア", "タワー", "プラザ")
_OWNERS = ("佐藤 健一", "鈴木 美加", "高橋 翔", "田中 直子", "伊藤 拓也", "渡辺 由美", "山本 大輔", "中村 理恵",
           "小林 浩", "加藤 彩")


class _Make:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._phones: set[str] = set()
        self._corp = iter(self.rng.sample(range(1_000_000), 200_000))

    def phone(self, area: str) -> str:
        rng = self.rng
        rest = 10 - len(area)
        while True:
            first = rng.choice("235678" if area == "011" else "23456789")
            local = f"{first}{rng.randrange(10 ** (rest - 1)):0{rest - 1}d}"
            p = f"{area}-{local[:rest - 4]}-{local[rest - 4:]}"
            if p not in self._phones:
                self._phones.add(p)
                return p

    def corporate_number(self) -> str | None:
        if self.rng.random() < 0.3:
            return None
        return corporate_number(f"{self.rng.randint(1, 99):02d}{self.rng.randint(1, 4):02d}01{next(self._corp):06d}")


def _crowded(m: _Make, n: int) -> list[dict[str, Any]]:
    rng = m.rng
    names = rng.sample([(s, t) for s in itertools.product(_KANA, repeat=4) for t in _TRADES], n)
    out = []
    for i, (stem, (trade, trade_kana)) in enumerate(names):
        postal, pref, city, town, area, chome = rng.choice(DISTRICTS)
        c, b, g = rng.randint(1, chome), rng.randint(1, 20), rng.randint(1, 30)
        building = f"{town}{_BUILDINGS[(b + g) % len(_BUILDINGS)]} {rng.randint(2, 12)}F"
        text = "".join(stem) + trade
        domain = "".join(_ROMAJI[k] for k in stem) + f"{i}.co.jp"
        out.append({"kind": "corporate", "name": f"株式会社{text}" if rng.random() < 0.6 else f"{text}株式会社",
                    "kana": "".join(stem) + trade_kana, "corporate_number": m.corporate_number(),
                    "postal_code": postal, "prefecture": pref, "address": f"{city}{town}{c}-{b}-{g} {building}",
                    "phone": m.phone(area), "email": f"info@{domain}", "status": "active",
                    "notes": f"真:{i}"})
    return out


def _spread(m: _Make, n: int) -> list[dict[str, Any]]:
    rng = m.rng
    trades = [t for t in COMPANY_BUSINESSES if len(t[0]) <= 3]
    out = []
    for i in range(n):
        # common surnames far more often than rare ones (a Zipf-like spread over the 75)
        sur = SURNAMES[min(int(rng.paretovariate(1.2)) - 1, len(SURNAMES) - 1) if rng.random() < 0.7
                       else rng.randrange(len(SURNAMES))]
        trade = rng.choice(trades)
        pref, city, postals, area, towns = rng.choice(PLACES)
        text = sur[0] + trade[0]
        out.append({"kind": "corporate", "name": f"株式会社{text}" if rng.random() < 0.5 else f"{text}株式会社",
                    "kana": sur[1] + trade[1], "corporate_number": m.corporate_number(),
                    "postal_code": f"{rng.choice(postals)}-{rng.randrange(10000):04d}", "prefecture": pref,
                    "address": f"{city}{rng.choice(towns)}{rng.randint(1, 5)}-{rng.randint(1, 20)}-"
                               f"{rng.randint(1, 30)}",
                    "phone": m.phone(area), "email": f"info@{sur[2]}-{trade[2]}-{i}.co.jp", "status": "active",
                    "notes": f"真:{i}"})
    return out


_FORMS = {"株式会社": ("㈱", "(株)", "（株）")}


def _respell(name: str, rng: random.Random) -> str:
    bare = name.replace("株式会社", "")
    short = rng.choice(_FORMS["株式会社"])
    return f"{bare}{short}" if name.startswith("株式会社") else f"{short}{bare}"


def _block_form(address: str, full_width: bool) -> str:
    """1-2-3 -> 1丁目2番3号 (the building kept), optionally full width."""
    head, _, rest = address.partition(" ")
    import re

    def sub(mm: re.Match[str]) -> str:
        return f"{mm.group(1)}丁目{mm.group(2)}番{mm.group(3)}号"

    out = re.sub(r"([0-9]+)-([0-9]+)-([0-9]+)$", sub, head)
    if full_width:
        out = to_fullwidth(out)
    return f"{out} {rest}".strip()


def reentry(base: dict[str, Any], style: str, m: _Make) -> dict[str, Any]:
    """The company of ``base`` as a colleague types it again, in ``style``."""
    rng = m.rng
    row = dict(base)
    if style == "phone":
        row["name"] = _respell(base["name"], rng)
        row["phone"] = base["phone"].replace("-", "")
        row["email"] = None
    elif style == "email":
        row["email"] = base["email"].upper()
        row["kana"] = to_hiragana(base["kana"])
        row["address"] = _block_form(base["address"], False)
        row["phone"] = None
    elif style == "address":
        row["name"] = _respell(base["name"], rng)
        row["address"] = _block_form(base["address"], True)
        row["phone"] = row["email"] = row["corporate_number"] = None
    else:
        row["address"] = base["address"].partition(" ")[0]
        row["phone"] = m.phone(base["phone"].split("-")[0])
        row["email"] = None
    return row


def rows(kind: str, files: int = 10, per_file: int = 2000, reentries: int = 100,
         seed: int = 1) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """The customers rows of each workbook of the set, and how many re-entries of each style."""
    m = _Make(seed)
    n = files * per_file
    companies = _crowded(m, n) if kind == "crowded" else _spread(m, n)
    books: list[list[dict[str, Any]]] = [companies[f * per_file:(f + 1) * per_file] for f in range(files)]
    planted: dict[str, int] = {s: 0 for s in STYLES}
    for k, i in enumerate(m.rng.sample(range(n), reentries)):
        style = STYLES[k % len(STYLES)]
        home = i // per_file
        other = (home + 1 + m.rng.randrange(files - 1)) % files if files > 1 else home
        books[other].append(reentry(companies[i], style, m))
        planted[style] += 1
    return books, planted


def make(kind: str, directory: str | Path, files: int = 10, per_file: int = 2000, reentries: int = 100,
         seed: int = 1) -> dict[str, Any]:
    """Write the set; returns what was planted."""
    books, planted = rows(kind, files, per_file, reentries, seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for f, customers in enumerate(books):
        write_team_workbook(out / f"team{f:02d}.xlsx", DEFAULT_SCHEMA, owner=_OWNERS[f % len(_OWNERS)],
                            rows={"customers": customers}, created=CREATED)
    return {"companies": files * per_file, "rows": sum(map(len, books)), "reentries": planted}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("crowded", "spread"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--per-file", type=int, default=2000)
    ap.add_argument("--reentries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(make(args.kind, args.dir, args.files, args.per_file, args.reentries, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
