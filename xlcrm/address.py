"""Japanese addresses into their parts, and compared by them.

``1-2-3``, ``１丁目２番３号``, ``1丁目2-3``, ``一丁目2番3号`` and ``1丁目2番地3`` are one address;
``1丁目3番4号`` and ``1丁目5番6号`` are two, however alike the texts look.  :func:`fold` writes an address
in one comparable spelling (the key duplicate detection blocks on), :func:`parse` splits that into
prefecture, city/ward, town, 丁目, 番, 号 and building/floor, and :func:`compare` says whether two
addresses are the same place, the same street number in another building or floor, or different.

Latin addresses (``12 Main Street``) are folded the same way but not split: :func:`parse` returns None
for an address without a street number after a Japanese place name, and callers fall back to comparing
the texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from xlcrm import normalize
from xlcrm.schema import PREFECTURES_JA

__all__ = ["Address", "canonical", "comparable", "compare", "compare_folded", "fold", "parse", "parse_folded"]

_PREF_AT_START = re.compile("^(?:" + "|".join(PREFECTURES_JA) + ")")
_KANJI_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
                 "九": 9}
_KANJI_NUMBER = re.compile(r"[〇零一二三四五六七八九十百千]+(?=丁目|番地|番|号|の[0-9〇一二三四五六七八九十]|-|$)")
_ANY_KANJI_DIGIT = re.compile(r"[〇零一二三四五六七八九十百千]")
_BLOCK_MARK = re.compile(r"丁目|番地の?|番|の(?=[0-9])")
_GO = re.compile(r"(?<=[0-9])号")
_DASHES = re.compile(r"-{2,}")
_DASH_NOT_BEFORE_DIGIT = re.compile(r"-(?![0-9])")
#: The street number: up to four numbers joined by hyphens after the place name (丁目-番-号 and a room).
_NUMBERS = re.compile(r"([0-9]+(?:-[0-9]+){0,3})(?![0-9]*(?:条|線|地割|区|町|丁(?!目)))")
#: Where the city / ward ends in the place name (大阪市北区, 港区, 上田郡上田町, 町田市).
_CITY = re.compile(r"^(?:.+?郡.+?[町村]|.+?市.+?区|.+?[市区町村])")
_FLOOR = re.compile(r"([0-9]+)(?:f|階)")
_NUMBER_SPACE = re.compile(r"(?<=[0-9号]) +(?=[0-9])")


def _kanji_to_int(s: str) -> int:
    """一 -> 1, 十二 -> 12, 二十三 -> 23, 三〇五 -> 305 (digit-by-digit form too)."""
    if not any(c in "十百千" for c in s):
        return int("".join(str(_KANJI_DIGITS[c]) for c in s))
    total, current = 0, 0
    for c in s:
        if c in _KANJI_DIGITS:
            current = current * 10 + _KANJI_DIGITS[c]
        else:
            unit = {"十": 10, "百": 100, "千": 1000}[c]
            total += (current or 1) * unit
            current = 0
    return total + current


def fold(text: str) -> tuple[str | None, str]:
    """``(prefecture written at the start or None, the rest in one comparable spelling)`` of an address
    already in text() form.

    Spaces are dropped (Japanese addresses are written with or without them; Latin ones keep them
    between words), width and case folded, kanji numerals before 丁目/番/号 become digits, and 丁目,
    番(地), の between numbers and a trailing 号 become hyphens: ``博多駅前3丁目13番26号`` and
    ``博多駅前３－１３－２６`` both read ``博多駅前3-13-26``.
    """
    s = normalize.code_of_text(text)
    if not s.isascii() and " " in s:
        # a space between two numbers parts the street number from a floor or room (1-3-4 2F)
        s = _NUMBER_SPACE.sub("-", s).replace(" ", "")
    s = s.casefold()
    pref = None
    m = _PREF_AT_START.match(s)
    if m is not None:
        pref = m.group()
        s = s[m.end():]
    if not s.isascii():
        # each substitution only when its literal text is there at all (the scans cost more than the tests)
        if _ANY_KANJI_DIGIT.search(s):
            s = _KANJI_NUMBER.sub(lambda mm: str(_kanji_to_int(mm.group())), s)
        if "丁目" in s or "番" in s or "の" in s:
            s = _BLOCK_MARK.sub("-", s)
        if "号" in s:
            s = _GO.sub("", s)
        if "--" in s:
            s = _DASHES.sub("-", s)
        if "-" in s:
            s = _DASH_NOT_BEFORE_DIGIT.sub("", s)
    return pref, s


@dataclass(frozen=True, slots=True)
class Address:
    """An address by its parts (numbers as written digits, building and floor as folded text)."""

    prefecture: str | None
    #: 市区町村 (大阪市北区, 千代田区); "" when the place name does not show where it ends.
    city: str
    #: 町名 (博多駅前, 丸の内), or the whole place name when ``city`` is "".
    town: str
    chome: int | None
    ban: int | None
    go: int | None
    #: Building, floor and room as written after the street number ("センタービル5f"), "" when none.
    building: str = ""

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(n for n in (self.chome, self.ban, self.go) if n is not None)

    @property
    def floor(self) -> int | None:
        m = _FLOOR.search(self.building)
        return int(m.group(1)) if m else None


def parse(address: Any, prefecture: Any = None) -> Address | None:
    """The parts of a Japanese address, or None when it has no street number after a place name."""
    text = normalize.text(address)
    if text is None:
        return None
    pref, key = fold(text)
    return parse_folded(key, pref or normalize.text(prefecture))


def parse_folded(key: str, prefecture: str | None = None) -> Address | None:
    """:func:`parse` of an address already folded by :func:`fold` (the match keys hold that form)."""
    parts = _split(key)
    if parts is None:
        return None
    place, numbers, building = parts
    m = _CITY.match(place)
    city, town = (m.group(), place[m.end():]) if m and m.end() < len(place) else ("", place)
    nums = [int(n) for n in numbers.split("-")]
    chome, ban, go = [*nums, None, None, None][:3]
    return Address(prefecture, city, town, chome, ban, go, building)


@lru_cache(maxsize=65536)
def _split(key: str) -> tuple[str, str, str] | None:
    """``(place name, "1-2-3", building)`` of a folded Japanese address, or None."""
    if key.isascii():
        return None
    m = _NUMBERS.search(key)
    if m is None or m.start() == 0:
        return None
    place = key[:m.start()]
    if place.isascii():
        return None
    numbers = m.group(1).split("-")
    # a fourth number is a floor or room (1-3-4-502): the building's part, not the street number's
    return place, "-".join(numbers[:3]), ("-".join(numbers[3:]) + key[m.end():]).lstrip("-")


def comparable(address: Any) -> str:
    """:func:`fold` of an address as typed, the prefecture kept in front: two spellings of one address
    give one string (``博多駅前3丁目13番26号`` and ``博多駅前３－１３－２６``); "" for no address."""
    text = normalize.text(address)
    if text is None:
        return ""
    pref, key = fold(text)
    return f"{pref or ''}{key}"


def canonical(address: Any, prefecture: Any = None) -> str | None:
    """One spelling for addresses that differ only in how they are written (for 競合: a respelt
    address is not a change).  ``博多駅前3丁目13番26号`` and ``博多駅前3-13-26`` give the same."""
    text = normalize.text(address)
    if text is None:
        return None
    pref, key = fold(text)
    return f"{pref or normalize.text(prefecture) or ''}|{key}"


Verdict = Literal["same", "building", "building_differs", "number_differs", "place_differs", "unknown"]


def compare_folded(a: str, b: str) -> tuple[Verdict, str, str]:
    """How two folded addresses (:func:`fold`, prefecture split off) relate, by their parts, with the
    street numbers of each as written ("1-3-4"; the buildings for ``building_differs``) for a reason
    shown to a person:

    * ``same``: one place name (or one is the other's tail: the city left out), the same numbers and
      building (or neither names one);
    * ``building``: the same street number, the building or floor on one side only;
    * ``building_differs``: the same street number, another building or floor;
    * ``number_differs``: one place name, other street numbers (1丁目3番4号 / 1丁目5番6号): another
      address, however alike the texts;
    * ``place_differs``: other place names;
    * ``unknown``: one of them has no parts (a Latin address, no street number): compare the texts.
    """
    pa, pb = _split(a), _split(b)
    if pa is None or pb is None:
        return "unknown", "", ""
    (place_a, num_a, bld_a), (place_b, num_b, bld_b) = pa, pb
    same_place = place_a == place_b or (
        min(len(place_a), len(place_b)) >= 2 and (place_a.endswith(place_b) or place_b.endswith(place_a)))
    if not same_place:
        return "place_differs", num_a, num_b
    na, nb = num_a.split("-"), num_b.split("-")
    if na != nb:
        # 3-13 / 3-13-26: the shorter leaves the 号 out; the numbers written agree
        shorter, longer = (na, nb) if len(na) < len(nb) else (nb, na)
        if len(shorter) >= 2 and longer[:len(shorter)] == shorter and len(na) != len(nb):
            return "building", num_a, num_b
        return "number_differs", num_a, num_b
    if bld_a == bld_b:
        return "same", num_a, num_b
    if not bld_a or not bld_b or bld_a.startswith(bld_b) or bld_b.startswith(bld_a):
        return "building", num_a, num_b
    return "building_differs", bld_a, bld_b


def compare(a: Any, b: Any) -> Verdict:
    """:func:`compare_folded` of two addresses as typed."""
    ta, tb = normalize.text(a), normalize.text(b)
    if ta is None or tb is None:
        return "unknown"
    return compare_folded(fold(ta)[1], fold(tb)[1])[0]
