"""Normalisation: table-driven cases for what people actually type, and hypothesis properties.

The properties carry most of the weight: every parser is idempotent on its own output, decorated
inputs (width, hyphen look-alikes, +81, era names, legal forms) land on the same canonical value as
the plain ones, and the phone fast path agrees with phonenumbers itself.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import typing
import unicodedata
from datetime import date, datetime, timedelta

import jaconv
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from xlcrm import normalize as N
from xlcrm.normalize import (
    PARSERS,
    Problem,
    code,
    company_key,
    corporate_number,
    corporate_number_check_digit,
    decimal,
    email,
    fold_search,
    integer,
    kana,
    kana_text,
    parse_date,
    phone,
    phone_digits,
    postal,
    text,
    url,
)
from xlcrm.schema import ColumnType

TODAY = date(2024, 6, 15)


def fullwidth(s: str) -> str:
    """ASCII to full width, the way a Japanese IME in full-width mode types it."""
    return "".join(
        "\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s
    )


def halfwidth_kana(s: str) -> str:
    return jaconv.z2h(s, kana=True, ascii=False, digit=False)


def P(code: str, suggestion: str | None = None) -> tuple[None, Problem]:
    return None, Problem(code, suggestion)


OK = None  # readability: (value, OK)

# --- text / code ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("\u3000\t\n", None),
        ("  山田　　太郎  ", "山田 太郎"),
        ("ＡＢＣ１２３", "ABC123"),
        ("ｶﾞｽﾊﾟｰ", "ガスパー"),  # half-width kana with dakuten compose to one character
        ("やまだ たろう", "やまだ たろう"),  # the space between kana names survives
        ("０９０－１２３４", "090-1234"),  # not 090ー1234 as neologdn would make it
        ("㈱山田", "(株)山田"),
        ("a\u200bb\ufeff", "ab"),  # zero-width space and BOM from web pages
        ("x\x00y\x07", "xy"),
        (12, "12"),
        (12.0, "12"),
        (-3.0, "-3"),
        (12.5, "12.5"),
        (0.1 + 0.2, "0.3"),  # what Excel shows, not 0.30000000000000004
        (float("nan"), None),
        (True, "TRUE"),
        (False, "FALSE"),
        (date(2024, 4, 1), "2024-04-01"),
        (datetime(2024, 4, 1), "2024-04-01"),
        (datetime(2024, 4, 1, 9, 30), "2024-04-01 09:30:00"),
    ],
)
def test_text(raw, expected):
    assert text(raw) == expected


def test_text_multiline_keeps_line_breaks():
    raw = "  1. 見積送付 \r\n\n\n2.　再訪問  \n  "
    assert text(raw, multiline=True) == "1. 見積送付\n\n2. 再訪問"
    assert text(raw) == "1. 見積送付 2. 再訪問"
    assert text(" \n \n", multiline=True) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("０３－１２３４－５６７８", "03-1234-5678"),
        ("03ー1234ー5678", "03-1234-5678"),  # IME long-vowel mark between digits
        ("03ｰ1234ｰ5678", "03-1234-5678"),
        ("03‐1234‐5678", "03-1234-5678"),
        ("03‑1234‑5678", "03-1234-5678"),
        ("03‒1234–5678", "03-1234-5678"),
        ("03—1234―5678", "03-1234-5678"),
        ("03−1234﹣5678", "03-1234-5678"),
        ("〒１００ー０００１", "〒100-0001"),
        ("1ーー2", "1--2"),
        ("スーパー1", "スーパー1"),  # ー between kana is a long vowel, not a hyphen
        ("A1ーB", "A1ーB"),
        ("  ", None),
        (1180301018771, "1180301018771"),
    ],
)
def test_code(raw, expected):
    assert code(raw) == expected


# --- phone ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("03-1234-5678", ("03-1234-5678", OK)),
        ("0312345678", ("03-1234-5678", OK)),
        ("０３－１２３４－５６７８", ("03-1234-5678", OK)),
        ("03ー1234ー5678", ("03-1234-5678", OK)),
        ("０９０(１２３４)５６７８", ("090-1234-5678", OK)),
        ("(03)1234-5678", ("03-1234-5678", OK)),
        ("03 1234 5678", ("03-1234-5678", OK)),
        ("031-234-5678", ("03-1234-5678", OK)),  # wrong split typed: area code fixed
        ("+81 3 1234 5678", ("03-1234-5678", OK)),
        ("+81-(0)3-1234-5678", ("03-1234-5678", OK)),
        ("+819012345678", ("090-1234-5678", OK)),
        ("TEL: 03-1234-5678", ("03-1234-5678", OK)),
        ("09012345678", ("090-1234-5678", OK)),
        ("080-1234-5678", ("080-1234-5678", OK)),
        ("07012345678", ("070-1234-5678", OK)),
        ("0120123456", ("0120-123-456", OK)),
        ("0120-12-3456", ("0120-123-456", OK)),
        ("05012345678", ("050-1234-5678", OK)),
        ("0570123456", ("0570-123-456", OK)),
        ("08001234567", ("0800-123-4567", OK)),
        ("0612345678", ("06-1234-5678", OK)),
        ("0452123456", ("045-212-3456", OK)),
        ("0112345678", ("011-234-5678", OK)),
        ("0995123456", ("0995-12-3456", OK)),  # 4-digit area code (鹿児島 姶良)
        ("+1 650 253 0000", ("+1 650-253-0000", OK)),  # foreign numbers stay international
        (312345678, P("phone.leading_zero", "03-1234-5678")),  # numeric cell lost its 0
        (312345678.0, P("phone.leading_zero", "03-1234-5678")),
        (9012345678, P("phone.leading_zero", "090-1234-5678")),
        ("312345678", P("phone.leading_zero", "03-1234-5678")),  # text that lost it (CSV import)
        ("3-1234-5678", P("phone.leading_zero", "03-1234-5678")),
        ("03-1234-5678 内線12", P("phone.invalid", "03-1234-5678")),
        ("03-1234-5678(代)", P("phone.invalid", "03-1234-5678")),
        ("03-1234-5678 ext. 12", P("phone.invalid", "03-1234-5678")),
        ("03-1234-567", P("phone.invalid")),
        ("110", P("phone.invalid")),
        (110, P("phone.invalid")),
        (3.5, P("phone.invalid")),
        ("O3-1234-5678", P("phone.invalid")),  # letter O
        ("電話してください", P("phone.invalid")),
        (True, P("phone.invalid")),
        (None, (None, None)),
        ("  ", (None, None)),
    ],
)
def test_phone(raw, expected):
    assert phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("03-1234-5678", "0312345678"),
        ("０３－１２３４－５６７８", "0312345678"),
        ("+81 3 1234 5678", "0312345678"),
        ("+81-(0)3-1234-5678", "0312345678"),
        ("+1 650-253-0000", "16502530000"),
        (312345678, "312345678"),  # no repair here either
        (312345678.0, "312345678"),
        ("なし", ""),
        (None, ""),
        (True, ""),
    ],
)
def test_phone_digits(raw, expected):
    assert phone_digits(raw) == expected


# --- postal, email, url --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("100-0001", ("100-0001", OK)),
        ("1000001", ("100-0001", OK)),
        ("〒１００ー０００１", ("100-0001", OK)),
        ("〒 100-0001", ("100-0001", OK)),
        ("１００－０００１", ("100-0001", OK)),
        (1000001, ("100-0001", OK)),
        (1000001.0, ("100-0001", OK)),
        (600001, P("postal.leading_zero", "060-0001")),  # 札幌: the number cell dropped the 0
        (10010, P("postal.leading_zero", "001-0010")),
        ("〒100-0001 東京都千代田区千代田1-1", P("postal.invalid", "100-0001")),
        ("100-001", P("postal.invalid")),
        ("600001", P("postal.invalid")),  # a text cell did not lose a zero: no guess
        ("東京都", P("postal.invalid")),
        (12345678, P("postal.invalid")),
        (None, (None, None)),
    ],
)
def test_postal(raw, expected):
    assert postal(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yamada@example.co.jp", ("yamada@example.co.jp", OK)),
        ("Yamada.Taro@EXAMPLE.CO.JP", ("Yamada.Taro@example.co.jp", OK)),  # local part case kept
        ("ｙａｍａｄａ＠ｅｘａｍｐｌｅ．ｃｏ．ｊｐ", ("yamada@example.co.jp", OK)),
        (" mailto:info@example.jp ", ("info@example.jp", OK)),
        ("山田 <yamada@example.jp>", P("email.invalid", "yamada@example.jp")),
        ("yamada@example,co,jp", P("email.invalid", "yamada@example.co.jp")),
        ("yamada@example。jp", ("yamada@example.jp", OK)),  # IDNA reads the ideographic full stop as a dot
        ("yamada @example.jp", P("email.invalid", "yamada@example.jp")),
        ("山田@example.jp", P("email.invalid")),  # IME left on: not a real address
        ("yamada", P("email.invalid")),
        ("yamada@", P("email.invalid")),
        ("a@b@example.jp", P("email.invalid")),
        ("a@example.jp b@example.jp", P("email.invalid")),
        (12, P("email.invalid")),
        ("", (None, None)),
    ],
)
def test_email(raw, expected):
    assert email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://example.co.jp", ("https://example.co.jp", OK)),
        ("HTTPS://Example.CO.JP/Path?q=A", ("https://example.co.jp/Path?q=A", OK)),
        ("http://www.example.jp:8080/", ("http://www.example.jp:8080/", OK)),
        ("www.example.jp", ("www.example.jp", OK)),  # nothing added
        ("ｈｔｔｐｓ：／／ｅｘａｍｐｌｅ．ｊｐ", ("https://example.jp", OK)),
        ("https://日本語.jp/", ("https://日本語.jp/", OK)),
        ("example.jp", P("url.invalid", "https://example.jp")),
        ("ftp://example.jp", P("url.invalid")),
        ("http://localhost", P("url.invalid")),
        ("https://exa mple.jp", P("url.invalid")),
        ("info@example.jp", P("url.invalid")),
        (1, P("url.invalid")),
    ],
)
def test_url(raw, expected):
    assert url(raw) == expected


# --- kana ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ヤマダ タロウ", ("ヤマダ タロウ", OK)),
        ("やまだ たろう", ("ヤマダ タロウ", OK)),  # hiragana, space between names kept
        ("やまだ　たろう", ("ヤマダ タロウ", OK)),  # full-width space becomes one space
        ("ﾔﾏﾀﾞ ﾀﾛｳ", ("ヤマダ タロウ", OK)),
        ("ｶﾌﾞｼｷｶﾞｲｼｬ", ("カブシキガイシャ", OK)),
        ("ﾊﾟｰﾄﾅｰ", ("パートナー", OK)),
        ("スーパー", ("スーパー", OK)),
        ("ｽ-ﾊﾟ-", ("スーパー", OK)),  # hyphen typed for the long vowel
        ("エヌ・ティ・ティ", ("エヌ・ティ・ティ", OK)),
        ("ゔぁいおりん", ("ヴァイオリン", OK)),
        ("いすゞ", ("イスヾ", OK)),
        ("山田", P("kana.invalid")),
        ("yamada", P("kana.invalid")),
        ("ヤマダ1", P("kana.invalid")),
        (123, P("kana.invalid")),
        ("  ", (None, None)),
    ],
)
def test_kana(raw, expected):
    assert kana(raw) == expected


# --- company key ---------------------------------------------------------------------------------

SAME_COMPANY = [
    ["山田製作所", "(株)山田製作所", "株式会社 山田製作所", "株式会社山田製作所", "山田製作所㈱", "（株）山田製作所",
     "山田製作所 株式会社", "山田製作所（株）", "㍿山田製作所", "山田製作所 Co., Ltd.", "山田 製作所"],
    ["ABC商事", "ＡＢＣ商事（株）", "abc 商事", "有限会社ABC商事", "(有)ABC商事", "ABC商事㈲"],
    ["やまだ", "ヤマダ", "ﾔﾏﾀﾞ", "ヤマダ合同会社", "(同)ヤマダ"],
    ["Yamada Seisakusho", "Yamada Seisakusho Co.,Ltd.", "YAMADA SEISAKUSHO K.K.", "Yamada Seisakusho Inc.",
     "Yamada Seisakusho Corporation", "yamada seisakusho, ltd", "Kabushiki Kaisha Yamada Seisakusho"],
    ["さくら会", "一般社団法人さくら会", "一般社団法人 さくら会", "特定非営利活動法人さくら会", "NPO法人さくら会"],
]


@pytest.mark.parametrize("names", SAME_COMPANY, ids=lambda names: names[0])
def test_company_key_ignores_legal_form_width_and_spaces(names):
    keys = {company_key(n) for n in names}
    assert keys == {company_key(names[0])}, keys
    assert company_key(names[0]) != ""


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("山田製作所", "山田製作"),
        ("山田株式会社東京支店", "山田東京支店"),  # legal form in the middle is part of the name
        ("Zinc", "Z"),  # "inc" only at a word boundary
        ("Co-op Kobe", "op Kobe"),  # English forms only at the end
        ("山田製作所", "ﾔﾏﾀﾞ製作所"),  # reading is not the name
        ("株式会社", ""),  # a bare legal form keeps itself
    ],
)
def test_company_key_distinguishes(a, b):
    assert company_key(a) != company_key(b)


def test_company_key_blank():
    assert company_key(None) == company_key("  ") == ""


# --- search folding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("山田 太郎", "山田太郎"),
        ("山田　太郎", "山田太郎"),
        ("やまだ", "ヤマダ"),
        ("ﾔﾏﾀﾞ", "ヤマダ"),
        ("ＡＢＣ", "abc"),
        ("03-1234-5678", "0312345678"),
        ("０３ー１２３４ー５６７８", "0312345678"),
        ("Straße", "STRASSE"),
    ],
)
def test_fold_search_equal(a, b):
    assert fold_search(a) == fold_search(b)


def test_fold_search_keeps_long_vowel_and_blank():
    assert fold_search("スーパー") != fold_search("スパ")
    assert fold_search("スーパー") == "スーパー"
    assert fold_search(None) == fold_search("  ") == ""


# --- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (date(2024, 4, 1), (date(2024, 4, 1), OK)),
        (datetime(2024, 4, 1, 13, 5), (date(2024, 4, 1), OK)),
        ("2024/4/1", (date(2024, 4, 1), OK)),
        ("2024/04/01", (date(2024, 4, 1), OK)),
        ("2024-04-01", (date(2024, 4, 1), OK)),
        ("2024.4.1", (date(2024, 4, 1), OK)),
        ("20240401", (date(2024, 4, 1), OK)),
        ("2024年4月1日", (date(2024, 4, 1), OK)),
        ("2024 年 4 月 1 日", (date(2024, 4, 1), OK)),
        ("２０２４／４／１", (date(2024, 4, 1), OK)),
        ("２０２４ー０４ー０１", (date(2024, 4, 1), OK)),
        ("2024/4/1(月)", (date(2024, 4, 1), OK)),
        ("2024年4月1日（月曜日）", (date(2024, 4, 1), OK)),
        ("2024-04-01 00:00:00", (date(2024, 4, 1), OK)),
        ("2024-04-01T09:30", (date(2024, 4, 1), OK)),
        ("R6.4.1", (date(2024, 4, 1), OK)),
        ("R6/4/1", (date(2024, 4, 1), OK)),
        ("r06.04.01", (date(2024, 4, 1), OK)),
        ("R6年4月1日", (date(2024, 4, 1), OK)),
        ("令和6年4月1日", (date(2024, 4, 1), OK)),
        ("令6.4.1", (date(2024, 4, 1), OK)),
        ("㋿6.4.1", (date(2024, 4, 1), OK)),
        ("令和元年5月1日", (date(2019, 5, 1), OK)),
        ("R元.5.1", (date(2019, 5, 1), OK)),
        ("H31.4.30", (date(2019, 4, 30), OK)),
        ("H.31.4.30", (date(2019, 4, 30), OK)),
        ("平成31年4月30日", (date(2019, 4, 30), OK)),
        ("㍻31年4月30日", (date(2019, 4, 30), OK)),
        ("H31.5.1", P("date.impossible", "2019/05/01")),  # Heisei had ended: Reiwa 1
        ("R1.4.30", P("date.impossible", "2019/04/30")),  # Reiwa had not begun
        ("H1.1.8", (date(1989, 1, 8), OK)),
        ("H1.1.7", P("date.impossible", "1989/01/07")),
        ("S64.1.7", (date(1989, 1, 7), OK)),
        ("S64.1.8", P("date.impossible", "1989/01/08")),
        ("昭和50年5月5日", (date(1975, 5, 5), OK)),
        ("T15.12.25", (date(1926, 12, 25), OK)),  # the last day of Taisho is also the first of Showa
        ("S1.12.25", (date(1926, 12, 25), OK)),
        ("S1.12.24", P("date.impossible", "1926/12/24")),
        ("大正1年7月30日", (date(1912, 7, 30), OK)),
        ("M45.7.30", (date(1912, 7, 30), OK)),
        ("明治33年1月1日", (date(1900, 1, 1), OK)),
        ("M3.1.1", P("date.invalid")),  # lunisolar calendar: no guess
        ("R0.1.1", P("date.invalid")),
        ("2024/2/29", (date(2024, 2, 29), OK)),
        ("2023/2/29", P("date.impossible")),
        ("2024/2/30", P("date.impossible")),
        ("R6.13.1", P("date.impossible")),
        ("2024/4/31", P("date.impossible")),
        ("2024/0/1", P("date.impossible")),
        ("2024/4/1(火)", P("date.invalid")),  # weekday contradicts the date
        ("24/4/1", P("date.invalid", "2024/04/01")),  # two-digit year: a guess only
        ("4/1", P("date.invalid", "2024/04/01")),
        ("4月1日", P("date.invalid", "2024/04/01")),
        ("2024/4-1", P("date.invalid")),
        ("来週", P("date.invalid")),
        ("2024/4/1 頃", P("date.invalid")),
        (45383, (date(2024, 4, 1), OK)),  # Excel serial
        (45383.75, (date(2024, 4, 1), OK)),  # serial with a time of day
        (61, (date(1900, 3, 1), OK)),
        (60, P("date.impossible")),  # Excel's phantom 1900-02-29
        (59, (date(1900, 2, 28), OK)),
        (1, (date(1900, 1, 1), OK)),
        (2958465, (date(9999, 12, 31), OK)),
        (0, P("date.invalid")),
        (-5, P("date.invalid")),
        (2958466, P("date.invalid")),
        (20240401, (date(2024, 4, 1), OK)),  # yyyymmdd typed into a number cell
        (20240231, P("date.impossible")),
        (float("inf"), P("date.invalid")),
        (True, P("date.invalid")),
        (None, (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_date(raw, expected):
    assert parse_date(raw, today=TODAY) == expected


# --- 法人番号 -------------------------------------------------------------------------------------

#: Published numbers (国税庁法人番号公表サイト): 国税庁, トヨタ自動車, ソニーグループ.
REAL_CORPORATE_NUMBERS = ["7000012050002", "1180301018771", "5010401067252"]


@pytest.mark.parametrize("number", REAL_CORPORATE_NUMBERS)
def test_corporate_number_check_digit_on_published_numbers(number):
    assert corporate_number_check_digit(number[1:]) == int(number[0])
    assert corporate_number(number) == (number, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1180301018771, ("1180301018771", OK)),
        (1180301018771.0, ("1180301018771", OK)),
        ("１１８０３０１０１８７７１", ("1180301018771", OK)),
        ("1-1803-0101-8771", ("1180301018771", OK)),
        ("1180 3010 18771", ("1180301018771", OK)),
        ("1180301018772", P("corporate_number.check_digit")),
        ("2180301018771", P("corporate_number.check_digit")),
        ("118030101877", P("corporate_number.format")),
        ("11803010187711", P("corporate_number.format")),
        ("T1180301018771", P("corporate_number.format", "1180301018771")),  # invoice number pasted
        ("118030101877A", P("corporate_number.format")),
        (1.5, P("corporate_number.format")),
        (True, P("corporate_number.format")),
        (None, (None, None)),
    ],
)
def test_corporate_number(raw, expected):
    assert corporate_number(raw) == expected


@pytest.mark.parametrize("bad", ["", "12345678901", "1234567890123", "12345678901a", "１２３４５６７８９０１２"])
def test_corporate_number_check_digit_rejects_bad_body(bad):
    with pytest.raises(ValueError):
        corporate_number_check_digit(bad)


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (12, (12, OK)),
        (12.0, (12, OK)),
        ("1,234", (1234, OK)),
        ("１２３", (123, OK)),
        ("１，２３４", (1234, OK)),
        ("12.00", (12, OK)),
        ("-3", (-3, OK)),
        ("−3", (-3, OK)),
        ("△5", (-5, OK)),
        ("50人", (50, OK)),
        ("3 個", (3, OK)),
        ("80%", (80, OK)),
        (12.5, P("int.not_whole")),
        ("12.5", P("int.not_whole")),
        ("1,23", P("int.invalid")),
        ("約50", P("int.invalid")),
        ("五", P("int.invalid")),
        (float("nan"), (None, None)),
        (float("inf"), P("int.invalid")),
        (True, P("int.invalid")),
        (" ", (None, None)),
    ],
)
def test_integer(raw, expected):
    assert integer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1500, (1500.0, OK)),
        (1.5, (1.5, OK)),
        ("1.5", (1.5, OK)),
        ("¥1,234", (1234.0, OK)),
        ("￥１，２３４", (1234.0, OK)),
        ("\\1,234", (1234.0, OK)),  # the yen sign as a Japanese keyboard types it
        ("1,234円", (1234.0, OK)),
        ("1,234.50", (1234.5, OK)),
        ("△1,000", (-1000.0, OK)),
        ("-¥500", (-500.0, OK)),
        (".5", (0.5, OK)),
        ("1.2.3", P("decimal.invalid")),
        ("-", P("decimal.invalid")),
        ("$100", P("decimal.invalid")),
        ("無料", P("decimal.invalid")),
        (True, P("decimal.invalid")),
        (float("inf"), P("decimal.invalid")),
        (None, (None, None)),
    ],
)
def test_decimal(raw, expected):
    assert decimal(raw) == expected


# --- wiring --------------------------------------------------------------------------------------


def test_parsers_cover_the_schema_types():
    types = set(typing.get_args(ColumnType))
    assert set(PARSERS) <= types
    assert types - set(PARSERS) == {"id", "choice", "ref"}  # validate resolves these against the schema


def test_pandas_and_numpy_scalars_are_understood():
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    assert phone(np.int64(312345678)) == P("phone.leading_zero", "03-1234-5678")
    assert parse_date(pd.Timestamp("2024-04-01 10:00")) == (date(2024, 4, 1), None)
    assert parse_date(pd.NaT) == (None, None)
    assert text(np.float64("nan")) is None
    assert text(pd.NA) is None
    assert integer(np.int64(5)) == (5, None)
    assert text(np.float64(12.0)) == "12"


def test_import_stays_light():
    """Search imports this module; pandas, phonenumbers and email-validator must not come with it."""
    probe = (
        "import sys, xlcrm.normalize as n\n"
        "n.fold_search('山田'); n.company_key('㈱山田'); n.phone_digits('03-1234-5678'); n.parse_date('R6.4.1')\n"
        "heavy = [m for m in ('pandas', 'numpy', 'phonenumbers', 'email_validator', 'jaconv') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_phone_fast_path_on_known_numbers():
    """The metadata-driven fast path must give phonenumbers' own answer (here on fixed examples)."""
    for digits in ["0312345678", "09012345678", "0120123456", "0570123456", "08001234567", "0995123456",
                   "0471234567", "0112345678", "05012345678", "0299123456", "0312345"]:
        fast = N._fast_jp(digits)
        assert fast is None or fast == N._slow_phone(digits, False), digits
        assert N._format_phone(digits, False) == N._slow_phone(digits, False), digits


# --- hypothesis properties -----------------------------------------------------------------------

JA_CHARS = "山田製作所東京商事太郎花子やまだたろうヤマダタロウｶﾞｷﾞﾊﾟｰーｰ・、。〒㈱㈲（）()"
NOISE = "０１２３４５６７８９0123456789-‐‑‒–—―−﹣－ー ー\u3000\t\n.／/,，年月日RHS令和平成元+＋@＠abcＡＢＣ"
raw_text = st.text(alphabet=st.sampled_from(JA_CHARS + NOISE), max_size=20) | st.text(max_size=12)
raw_values = (
    raw_text
    | st.none()
    | st.booleans()
    | st.integers(min_value=-(10**14), max_value=10**14)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.dates()
    | st.datetimes()
)


@settings(max_examples=300)
@given(raw_values)
def test_text_helpers_are_idempotent(raw):
    for f in (text, code, kana_text):
        once = f(raw)
        assert f(once) == once, f.__name__
    assert text(text(raw, multiline=True), multiline=True) == text(raw, multiline=True)
    folded = fold_search(raw)
    assert fold_search(folded) == folded


@settings(max_examples=300)
@given(raw_values)
@example("03ー1234ー5678")
@example(312345678)
@example("R元.5.1")
def test_parsers_are_idempotent_and_total(raw):
    """Normalising twice changes nothing, and no input makes a parser raise."""
    for name, parse in PARSERS.items():
        value, problem = parse(raw)
        assert value is None or problem is None, name
        if problem is not None:
            assert re.fullmatch(r"[a-z_]+\.[a-z_]+", problem.code), problem
        if value is not None:
            assert parse(value) == (value, None), (name, raw, value)


JP_PREFIXES = ["03", "06", "011", "045", "052", "092", "0422", "0467", "0995", "090", "080", "070", "050",
               "0120", "0570", "0800"]


@st.composite
def jp_numbers(draw):
    """Plain digit strings that phonenumbers accepts as Japanese numbers."""
    prefix = draw(st.sampled_from(JP_PREFIXES))
    length = 11 if prefix in ("090", "080", "070", "050", "0800") else 10
    rest = draw(st.text(alphabet="0123456789", min_size=length - len(prefix), max_size=length - len(prefix)))
    digits = prefix + rest
    assume(phone(digits)[0] is not None)
    return digits


@st.composite
def decorate_phone(draw, digits: str) -> str:
    formatted = phone(digits)[0]
    style = draw(st.sampled_from(["hyphen", "plain", "spaces", "intl", "intl0", "paren"]))
    if style == "plain":
        s = digits
    elif style == "spaces":
        s = formatted.replace("-", " ")
    elif style == "intl":
        s = "+81 " + formatted[1:]
    elif style == "intl0":
        s = "+81-(0)" + formatted[1:]
    elif style == "paren":
        area, *rest = formatted.split("-")
        s = f"({area}){'-'.join(rest)}"
    else:
        s = formatted
    dash = draw(st.sampled_from("-‐−－ー"))
    s = s.replace("-", dash)
    if draw(st.booleans()):
        s = fullwidth(s)
    return draw(st.sampled_from(["", " ", "\u3000"])) + s + draw(st.sampled_from(["", " "]))


@settings(max_examples=200)
@given(st.data())
def test_phone_decorations_land_on_one_form(data):
    digits = data.draw(jp_numbers())
    decorated = data.draw(decorate_phone(digits))
    value, problem = phone(decorated)
    assert problem is None, decorated
    assert value == phone(digits)[0]
    assert phone_digits(value) == re.sub(r"\D", "", value) == digits
    assert phone_digits(decorated) == digits
    # the lost-zero case: the number without its 0, as a number cell and as text
    zero_less = int(digits)
    assert phone(zero_less) == (None, Problem("phone.leading_zero", value))
    assert phone(str(zero_less)) == (None, Problem("phone.leading_zero", value))


@settings(max_examples=300)
@given(st.text(alphabet="0123456789", min_size=8, max_size=11).map(lambda s: "0" + s))
def test_phone_fast_path_agrees_with_phonenumbers(digits):
    assert N._format_phone(digits, False) == N._slow_phone(digits, False)
    fast = N._fast_jp(digits)
    assert fast is None or fast == N._slow_phone(digits, False)


def _era(d: date) -> tuple[str, str, int]:
    for first, letter, name, offset in [
        (date(2019, 5, 1), "R", "令和", 2018),
        (date(1989, 1, 8), "H", "平成", 1988),
        (date(1926, 12, 25), "S", "昭和", 1925),
        (date(1912, 7, 30), "T", "大正", 1911),
        (date(1873, 1, 1), "M", "明治", 1867),
    ]:
        if d >= first:
            return letter, name, d.year - offset
    raise AssertionError(d)


@settings(max_examples=300)
@given(st.dates(min_value=date(1900, 3, 1), max_value=date(2200, 12, 31)))
def test_dates_round_trip_through_every_spelling(d):
    letter, name, era_year = _era(d)
    nen = "元" if era_year == 1 else str(era_year)
    spellings = [
        f"{d.year}/{d.month}/{d.day}",
        d.isoformat(),
        f"{d.year}.{d.month:02d}.{d.day:02d}",
        f"{d:%Y%m%d}",
        f"{d.year}年{d.month}月{d.day}日",
        fullwidth(f"{d.year}/{d.month}/{d.day}"),
        f"{letter}{era_year}.{d.month}.{d.day}",
        f"{letter.lower()}{era_year:02d}/{d.month:02d}/{d.day:02d}",
        f"{name}{nen}年{d.month}月{d.day}日",
        f"{d.year}/{d.month}/{d.day}({'月火水木金土日'[d.weekday()]})",
        (d - date(1899, 12, 30)).days,
        datetime(d.year, d.month, d.day, 12),
    ]
    for s in spellings:
        assert parse_date(s) == (d, None), s


@settings(max_examples=200)
@given(st.integers(min_value=2019, max_value=2100), st.integers(1, 12), st.integers(29, 31))
def test_impossible_days_are_reported_not_rolled_over(year, month, day):
    try:
        date(year, month, day)
    except ValueError:
        assert parse_date(f"{year}/{month}/{day}") == P("date.impossible")
        assert parse_date(f"R{year - 2018}.{month}.{day}") == P("date.impossible")
    else:
        assert parse_date(f"{year}/{month}/{day}") == (date(year, month, day), None)


NAME_CHARS = "山田製作所東京商事花子電機工業やまだヤマダさくらｻｸﾗABCXYZxyz0123456789&・ "
LEGAL_FORMS_BEFORE = ["株式会社", "株式会社 ", "(株)", "（株）", "㈱", "㍿", "有限会社", "(有)", "㈲", "合同会社",
                      "一般社団法人"]
LEGAL_FORMS_AFTER = ["株式会社", " 株式会社", "(株)", "（株）", "㈱", "有限会社", "㈲", "合同会社", " Co., Ltd.",
                     " Inc.", " K.K.", ", Ltd."]


@settings(max_examples=300)
@given(
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=15),
    st.sampled_from(LEGAL_FORMS_BEFORE),
    st.sampled_from(LEGAL_FORMS_AFTER),
)
def test_company_key_invariant_under_legal_form_and_width(name, before, after):
    assume(re.search(r"[^\W_]", name))  # a name, not just punctuation
    key = company_key(name)
    assert key != ""
    assert company_key(before + name) == key
    assert company_key(name + after) == key
    assert company_key(fullwidth(name)) == key
    assert company_key(halfwidth_kana(name)) == key
    assert company_key(fullwidth(before + name)) == key
    assert company_key(name.replace(" ", "\u3000  ")) == key


@settings(max_examples=200)
@given(st.text(alphabet="".join(chr(c) for c in range(0x3041, 0x3094)) + "ー ", min_size=1, max_size=12))
def test_kana_hiragana_katakana_halfwidth_agree(hira):
    assume(hira.strip())
    value, problem = kana(hira)
    assert problem is None
    assert value == kana(jaconv.hira2kata(hira))[0] == kana(halfwidth_kana(jaconv.hira2kata(hira)))[0]
    assert all("\u30a1" <= c <= "\u30fc" or c == " " for c in value)
    assert kana(value) == (value, None)


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 11), st.integers(1, 8))
def test_corporate_number_detects_a_changed_digit(body, position, delta):
    number = f"{corporate_number_check_digit(body)}{body}"
    assert 1 <= int(number[0]) <= 9
    assert corporate_number(number) == (number, None)
    assert corporate_number(int(number)) == (number, None)
    changed = list(body)
    changed[position] = str((int(changed[position]) + delta) % 10)
    assume({body[position], changed[position]} != {"0", "9"})  # the formula's one blind spot (9 ≡ 0 mod 9)
    assert corporate_number(f"{number[0]}{''.join(changed)}") == P("corporate_number.check_digit")


@settings(max_examples=200)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integers_round_trip_with_grouping_and_width(n):
    for s in (str(n), f"{n:,}", fullwidth(f"{n:,}"), float(n) if abs(n) < 2**53 else n):
        assert integer(s) == (n, None), s
    assert decimal(f"{n:,}円") == (float(n), None)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=9_999_999))
def test_postal_round_trip(n):
    canonical = f"{n:07d}"[:3] + "-" + f"{n:07d}"[3:]
    assert postal(canonical) == (canonical, None)
    assert postal("〒" + fullwidth(canonical).replace("－", "ー")) == (canonical, None)
    assert postal(f"{n:07d}") == (canonical, None)
    expected = (canonical, None) if n >= 1_000_000 else P("postal.leading_zero", canonical)
    assert postal(n) == expected


@settings(max_examples=150)
@given(st.emails())
def test_email_idempotent_and_domain_lowercased(address):
    value, _ = email(address)
    if value is not None:
        assert email(value) == (value, None)
        assert value.split("@")[1] == value.split("@")[1].lower()
        assert email(fullwidth(address)) == (value, None) or not address.isascii()


@settings(max_examples=200)
@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_float_cells(f):
    assert decimal(f) == (f, None)
    if f.is_integer():
        assert integer(f) == (int(f), None)
        assert text(f) == str(int(f))
    else:
        assert integer(f) == P("int.not_whole")
        assert math.isclose(float(text(f)), f, rel_tol=1e-14)


def test_excel_serials_match_excel_day_count():
    """Serial n >= 61 is n days after 1899-12-30 (Excel's epoch after its phantom leap day)."""
    for n in (61, 366, 25569, 36526, 43586, 45383):
        assert parse_date(n) == (date(1899, 12, 30) + timedelta(days=n), None)
    assert parse_date(25569) == (date(1970, 1, 1), None)
    assert parse_date(43586) == (date(2019, 5, 1), None)


# --- the e-mail fast path agrees with email-validator ---------------------------------------------

_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
_local = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[A-Za-z0-9_+-]{1,6}){0,2}", fullmatch=True)
_tld = st.sampled_from(["jp", "com", "co.jp", "ne.jp", "TEST", "local", "Org", "x", "museum", "xn--p1ai"])


@settings(max_examples=300, deadline=None)
@given(_local, st.lists(_label, min_size=1, max_size=3), _tld)
def test_email_fast_path_agrees_with_email_validator(local: str, labels: list[str], tld: str) -> None:
    import email_validator

    from xlcrm.normalize import _plain_email

    address = f"{local}@{'.'.join([*labels, tld])}"
    fast = _plain_email(address)
    try:
        full = email_validator.validate_email(address, check_deliverability=False,
                                              allow_smtputf8=False).normalized
    except email_validator.EmailNotValidError:
        full = None
    if fast is not None:
        assert fast == full


# --- the fast paths against the plain algorithms they shortcut -------------------------------------

def _fast_jp_reference(digits: str) -> str | None:
    """_fast_jp as first written: every type in metadata order, every format, re.sub."""
    plan = N._jp_plan()
    nsn, n = digits[1:], len(digits) - 1
    lengths, general = plan.general
    if (lengths and n not in lengths) or not general.fullmatch(nsn):
        return None
    if not any((not ls or n in ls) and pat.fullmatch(nsn) for ls, pat in plan.types):
        return None
    for lead, pattern, rule in plan.formats:
        if (lead is None or lead.match(nsn)) and pattern.fullmatch(nsn):
            return pattern.sub(rule, nsn)
    return None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789", max_size=6), st.text(alphabet="0123456789", min_size=1, max_size=12))
def test_phone_format_shortcuts_change_nothing(prefix, rest):
    """Formats picked by length, templates instead of re.sub: the same national form as before."""
    digits = "0" + prefix + rest
    assert N._fast_jp(digits) == _fast_jp_reference(digits)


def test_phone_format_shortcuts_on_every_area_code():
    for area in range(10_000):
        for tail in ("0000", "12345", "987654", "5555555"):
            digits = f"0{area}{tail}"
            assert N._fast_jp(digits) == _fast_jp_reference(digits), digits


def test_format_lengths():
    assert N._format_lengths(r"(\d{4})(\d)(\d{3,4})") == range(8, 10)
    assert N._format_lengths(r"(\d{8,10})") == range(8, 11)
    assert N._format_lengths(r"(\d{2})[1-9](\d)") is None
    assert N._format_lengths(r"(\d+)") is None


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="0123456789-", max_size=16).map(lambda s: "0" + s))
def test_plain_phone_shortcut_equals_the_general_path(s):
    assert N._plain_phone(s) == N._phone_text(s)
    assert phone(s) == N._phone_text(s)


_HOST_AS_FIRST_WRITTEN = r"(?:[^\W_](?:(?:[^\W_]|-)*[^\W_])?\.)+[^\W\d_]{2,}"
_URL_AS_FIRST_WRITTEN = re.compile(r"^(?:((?i:https?))://|(?=[wW]{3}\.))(" + _HOST_AS_FIRST_WRITTEN
                                   + r")(:[0-9]{1,5})?([/?#]\S*)?$")
_BARE_AS_FIRST_WRITTEN = re.compile(r"^(" + _HOST_AS_FIRST_WRITTEN + r")([/?#]\S*)?$")
_label = st.text(alphabet="ab9-_ü日١ｗ", max_size=6)
_hosts = st.builds(lambda labels, tld: ".".join(labels) + tld, st.lists(_label, min_size=1, max_size=4),
                   st.sampled_from(["", ".jp", ".com", ".c", ".c0m", ".co-jp", ".日本", ".x_y", "."]))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(["", "http://", "HTTPS://", "www.", "WwW.", "ftp://"]), _hosts,
       st.sampled_from(["", ":80", ":123456", "/", "/a b", "?q", "#f", ":", "/\n"]))
def test_possessive_host_pattern_matches_as_the_backtracking_one(prefix, host, suffix):
    s = prefix + host + suffix
    for fast, plain in ((N._URL, _URL_AS_FIRST_WRITTEN), (N._BARE_HOST, _BARE_AS_FIRST_WRITTEN)):
        m, ref = fast.match(s), plain.match(s)
        assert (m and m.groups()) == (ref and ref.groups()), s


@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_corporate_check_digit_formula(body):
    weights = [2 if i % 2 else 1 for i in range(12)]
    assert corporate_number_check_digit(body) == 9 - sum(int(c) * w for c, w in zip(reversed(body), weights,
                                                                                      strict=True)) % 9


def _text_reference(s: str, multiline: bool) -> str | None:
    """text() of a str as first written: drop, NFKC, then always split and join."""
    s = unicodedata.normalize("NFKC", s.translate(N._DROP))
    if multiline:
        out: list[str] = []
        for line in (" ".join(part.split()) for part in s.splitlines()):
            if line or (out and out[-1]):
                out.append(line)
        while out and not out[-1]:
            out.pop()
        s = "\n".join(out)
    else:
        s = " ".join(s.split())
    return s or None


_SPACES = " \u3000\u00a0\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029\x00\u200b\xad"


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=st.sampled_from(_SPACES + "ab山ｶﾞ¨①-ー"), max_size=12) | st.text(max_size=8),
       st.booleans())
def test_text_keeps_already_clean_strings_as_they_are(value, multiline):
    """The early return for one-line, single-spaced text gives what splitting and joining gives."""
    assert text(value, multiline=multiline) == _text_reference(value, multiline)
