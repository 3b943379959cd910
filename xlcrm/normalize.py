"""Japanese-aware normalisation of single cell values: pure functions, shared by validate, merge and search.

Every ``parse`` style function takes a raw cell value as python-calamine (or a pandas frame built from
it) hands it over - ``str``, ``int``, ``float``, ``bool``, ``datetime``, ``date`` or ``None`` - and
returns ``(canonical value, problem)``.  A blank cell is ``(None, None)``: whether a blank is allowed is
the schema's business, not ours.  A problem never comes with a silently repaired value: when a repair is
a guess (a phone number that lost its leading zero, a Heisei date after the era ended) the guess goes
into :attr:`Problem.suggestion` for the message and the value stays ``None``.

Why hand-written and not neologdn / ``jaconv.normalize``: those turn ``090－1234`` into ``090ー1234``
and drop the space between family and given name in kana.  Plain NFKC plus two small tables (hyphen
look-alikes, hiragana to katakana) does what the fields need and nothing else.

Why no pandas and lazy ``phonenumbers`` / ``email_validator``: search and the add-in import this module
on every keystroke-driven call; they only need :func:`fold_search`, :func:`phone_digits` and
:func:`company_key`, which must not pay 30 ms of imports.  Validation calls the parsers once per
*unique* value, so per-call cost matters but per-process setup does not.

Every parser is idempotent on its own output: ``parse(parse(x)[0]) == (parse(x)[0], None)``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, TypeAlias, TypeVar

__all__ = [
    "PARSERS",
    "Parsed",
    "Problem",
    "code",
    "code_of_text",
    "company_key",
    "company_key_of_stored",
    "company_key_of_text",
    "corporate_number",
    "corporate_number_check_digit",
    "decimal",
    "email",
    "fold_search",
    "hira_to_kata",
    "integer",
    "kana",
    "kana_of_text",
    "kana_text",
    "parse_date",
    "parse_text",
    "phone",
    "phone_digits",
    "phone_digits_of_stored",
    "phone_digits_of_text",
    "postal",
    "stored_text",
    "text",
    "url",
]


class Problem(NamedTuple):
    """Why a value was refused; ``code`` is ``<type>.<what>``, validate turns it into words."""

    code: str
    #: What the user should type instead, when it can be guessed (never applied silently).
    suggestion: str | None = None


T = TypeVar("T")
#: ``(canonical value or None, problem or None)``
Parsed: TypeAlias = tuple[T | None, Problem | None]

_BLANK: Parsed[Any] = (None, None)

# --- character tables ----------------------------------------------------------------------------

#: Invisible characters that sneak in from web pages and PDFs; C0 controls other than whitespace.
_DROP = dict.fromkeys(
    [*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F, 0x00AD, 0x200B, 0x2060, 0xFEFF], None
)
#: Hyphen look-alikes that survive NFKC (NFKC already maps － ﹣ to "-" and ‑ to ‐).
_HYPHENS = "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u02d7\ufe58\ufe63\uff0d"
_HYPHEN_TABLE = str.maketrans(dict.fromkeys(_HYPHENS, "-"))
#: The long-vowel mark typed by a Japanese IME in place of a hyphen between digits (03ー1234).
_CHOON_BETWEEN_DIGITS = re.compile(r"(?<=[0-9])ー+(?=[0-9])")
_HIRA_TO_KATA = {cp: cp + 0x60 for cp in range(0x3041, 0x3097)} | {0x309D: 0x30FD, 0x309E: 0x30FE}
_ASCII_DIGITS = re.compile(r"[0-9]+")
_NON_DIGITS = re.compile(r"[^0-9]+")


def _scalar(value: Any) -> Any:
    """numpy/pandas scalars to Python ones and NaN/NaT to None, so every parser sees six types only."""
    if value is None or type(value) in (str, int, float, bool, date, datetime):
        return None if type(value) is float and value != value else value
    if isinstance(value, datetime | date):  # pandas.Timestamp; NaT is not equal to itself
        return None if value != value else value
    try:
        if value != value:  # numpy.nan, pandas.NA raises
            return None
    except (TypeError, ValueError):
        return None
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value


def _float_text(f: float) -> str | None:
    if math.isnan(f):
        return None
    if f.is_integer():
        return str(int(f))
    return format(f, ".15g")  # what Excel shows; repr would give 0.30000000000000004


def text(value: Any, *, multiline: bool = False) -> str | None:
    """Canonical text: NFKC, trimmed, whitespace runs collapsed to one space; None when blank.

    ``multiline=True`` keeps line breaks (each line trimmed, blank-line runs collapsed to one) for
    free-text notes, where flattening a list someone typed with Alt+Enter would destroy it.
    Numbers become what Excel shows (12.0 -> "12"), dates ISO.
    """
    if type(value) is str:  # nearly every call: skip the type dispatch
        s = value
    elif (value := _scalar(value)) is None:
        return None
    elif isinstance(value, str):
        s = value
    elif isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    elif isinstance(value, int):
        return str(value)
    elif isinstance(value, float):
        return _float_text(value)
    elif isinstance(value, datetime):
        if value.hour == value.minute == value.second == value.microsecond == 0:
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, date):
        return value.isoformat()
    else:
        s = str(value)
    # Every character in _DROP is non-printable, so isprintable() (C speed) guards the translate.
    printable = s.isprintable()
    if not printable:
        s = s.translate(_DROP)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
        printable = s.isprintable()
    if printable and s[:1] != " " and s[-1:] != " " and "  " not in s:
        # One line with single spaces (the ASCII space is the only printable whitespace): what the
        # splitting below gives back.  Returning the very object keeps its cached hash for later.
        return s or None
    if multiline:
        lines = [" ".join(line.split()) for line in s.splitlines()]
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        while out and not out[-1]:
            out.pop()
        s = "\n".join(out)
    else:
        s = " ".join(s.split())
    return s or None


def parse_text(value: Any) -> Parsed[str]:
    """:func:`text` in the parser shape, for columns of type text/name (never a problem)."""
    return text(value), None


def code(value: Any) -> str | None:
    """Text for codes (phone, postal, 法人番号): hyphen look-alikes and ー between digits become "-"."""
    s = text(value)
    if s is None or s.isascii():
        return s
    s = s.translate(_HYPHEN_TABLE)
    if "ー" in s:
        s = _CHOON_BETWEEN_DIGITS.sub(lambda m: "-" * len(m.group()), s)
    return s


def hira_to_kata(s: str) -> str:
    """Hiragana to katakana (ゝゞ too); everything else untouched."""
    return s.translate(_HIRA_TO_KATA)


# --- phone ---------------------------------------------------------------------------------------

_PHONE_PREFIX = re.compile(r"^(?:tel|phone|fax|電話|携帯|☎|℡)\s*(?:番号)?\s*[:.]?\s*", re.IGNORECASE)
_PHONE_CHARS = re.compile(r"^\+?[0-9()\-. ]*[0-9][0-9()\-. ]*")
_pn: Any = None
_jp: _JpPlan | None = None


def _phonenumbers() -> Any:
    global _pn
    if _pn is None:
        import phonenumbers

        _pn = phonenumbers
    return _pn


class _JpPlan(NamedTuple):
    """phonenumbers' own JP metadata, compiled once, to validate and format without ``parse``.

    ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number`` cost ~30 µs a number, a third of
    the validation budget on 100k customers.  For a national number written "0" + [1-9]..., which is
    nearly every Japanese number, the three reduce to: strip the 0, match the type patterns, apply the
    first matching format - the same steps phonenumbers takes, on the same data.  Anything else (and
    anything the fast path finds invalid) goes through phonenumbers itself; tests compare both.
    """

    general: tuple[tuple[int, ...], re.Pattern[str]]
    types: tuple[tuple[tuple[int, ...], re.Pattern[str]], ...]
    formats: tuple[tuple[re.Pattern[str] | None, re.Pattern[str], str], ...]
    #: Per number length, the formats whose pattern can match that many digits, in order (see _apply).
    formats_by_length: dict[int, tuple[_Format, ...]]


class _Format(NamedTuple):
    lead: re.Pattern[str] | None
    pattern: re.Pattern[str]
    rule: str
    #: ``rule`` as a str.format template of the groups ("0\\1-\\2" -> "0{0}-{1}"); None: use re.sub.
    template: str | None


#: A format pattern made of digit groups only, like ``(\d{4})(\d)(\d{3,4})``: its lengths are known.
_DIGIT_GROUP = r"\(\\d(?:\{(\d+)(?:,(\d+))?\})?\)"
_DIGIT_GROUPS = re.compile(f"(?:{_DIGIT_GROUP})+")
_SIMPLE_RULE = re.compile(r"(?:\\[1-9](?![0-9])|[^\\])*")
_RULE_PART = re.compile(r"\\([1-9])|[^\\]+")


def _format_lengths(pattern: str) -> range | None:
    """The lengths a digit-groups format pattern matches (None: any, for a pattern of another shape)."""
    if not _DIGIT_GROUPS.fullmatch(pattern):
        return None
    low = high = 0
    for m in re.finditer(_DIGIT_GROUP, pattern):
        low += int(m.group(1) or 1)
        high += int(m.group(2) or m.group(1) or 1)
    return range(low, high + 1)


def _compile_format(lead: re.Pattern[str] | None, pattern: re.Pattern[str], rule: str) -> _Format:
    template: str | None = None
    if _format_lengths(pattern.pattern) is not None and _SIMPLE_RULE.fullmatch(rule):
        parts = []
        for m in _RULE_PART.finditer(rule):
            group = m.group(1)
            parts.append(f"{{{int(group) - 1}}}" if group else m.group().replace("{", "{{").replace("}", "}}"))
        template = "".join(parts)
    return _Format(lead, pattern, rule, template)


def _apply(f: _Format, nsn: str) -> str:
    """``f.pattern.sub(f.rule, nsn)`` for a number the pattern fullmatches.

    re.sub expands the template in Python (2 µs, half the cost of a phone number).  A digit-groups
    pattern cannot match an empty string and its first match is the whole number, so the result is that
    one match with the rule's group references filled in.
    """
    if f.template is not None:
        m = f.pattern.match(nsn)
        if m is not None and m.end() == len(nsn):
            return f.template.format(*m.groups())
    return f.pattern.sub(f.rule, nsn)


def _jp_plan() -> _JpPlan:
    global _jp
    if _jp is None:
        pn = _phonenumbers()
        md = pn.PhoneMetadata.metadata_for_region("JP")

        def desc(d: Any) -> tuple[tuple[int, ...], re.Pattern[str]]:
            return tuple(d.possible_length or ()), re.compile(d.national_number_pattern)

        # Only whether any type matches counts, so the types nearly every number is (mobile, fixed
        # line) come first: the rest are never tried for them.
        kinds = ("mobile", "fixed_line", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number",
                 "pager", "uan", "voicemail")
        types = tuple(desc(d) for k in kinds if (d := getattr(md, k)) is not None and d.national_number_pattern)
        formats = []
        for f in md.number_format:
            rule = f.format
            if f.national_prefix_formatting_rule:  # "0\\1": the trunk 0 goes in front of the first group
                rule = re.sub(r"(\\\d)", lambda _m, r=f.national_prefix_formatting_rule: r, rule, count=1)
            lead = re.compile(f.leading_digits_pattern[-1]) if f.leading_digits_pattern else None
            formats.append((lead, re.compile(f.pattern), rule))
        compiled = [_compile_format(*f) for f in formats]
        # The first format that matches wins; one that cannot match the length is skipped up front.
        by_length = {n: tuple(c for c in compiled if (ls := _format_lengths(c.pattern.pattern)) is None or n in ls)
                     for n in range(1, 18)}
        _jp = _JpPlan(desc(md.general_desc), types, tuple(formats), by_length)
    return _jp


def _fast_jp(digits: str) -> str | None:
    """National form of "0" + nsn when phonenumbers would call it valid, else None (= ask phonenumbers)."""
    plan = _jp or _jp_plan()
    nsn = digits[1:]
    n = len(nsn)
    lengths, general = plan.general
    if (lengths and n not in lengths) or not general.fullmatch(nsn):
        return None
    for ls, pat in plan.types:
        if (not ls or n in ls) and pat.fullmatch(nsn):
            break
    else:
        return None
    f = _pick_format(plan, nsn)
    return None if f is None else _apply(f, nsn)


def _pick_format(plan: _JpPlan, nsn: str) -> _Format | None:
    """The first format whose leading digits and pattern match (phonenumbers' own rule)."""
    formats = plan.formats_by_length.get(len(nsn))
    if formats is None:
        formats = tuple(_compile_format(lead, pattern, rule) for lead, pattern, rule in plan.formats)
    for f in formats:
        if (f.lead is None or f.lead.match(nsn)) and f.pattern.fullmatch(nsn):
            return f
    return None


@lru_cache(maxsize=65536)
def _format_phone(digits: str, international: bool) -> str | None:
    """Formatted number or None when phonenumbers says invalid; cached because parsing is the slow bit."""
    if not international and len(digits) > 2 and digits[0] == "0" and digits[1] != "0":
        fast = _fast_jp(digits)
        if fast is not None:
            return fast
    return _slow_phone(digits, international)


def _slow_phone(digits: str, international: bool) -> str | None:
    pn = _phonenumbers()
    try:
        n = pn.parse("+" + digits if international else digits, "JP")
    except pn.NumberParseException:
        return None
    if not pn.is_valid_number(n):
        return None
    fmt = pn.PhoneNumberFormat.NATIONAL if n.country_code == 81 else pn.PhoneNumberFormat.INTERNATIONAL
    return pn.format_number(n, fmt)


def _phone_from_chars(s: str) -> str | None:
    """``s`` holds only phone characters; canonical number or None."""
    digits = _NON_DIGITS.sub("", s)
    if s.startswith("+"):
        if digits.startswith("81"):  # +81 3 ..., +81 (0)3 ...
            national = digits[2:]
            digits = national if national.startswith("0") else "0" + national
        else:
            return _format_phone(digits, True)
    if not digits.startswith("0"):
        return None
    return _format_phone(digits, False)


def _lost_zero(digits: str) -> Problem | None:
    """A 9/10-digit number that becomes a valid Japanese number with a 0 in front lost it to Excel."""
    if len(digits) in (9, 10) and not digits.startswith("0"):
        fixed = _format_phone("0" + digits, False)
        if fixed is not None:
            return Problem("phone.leading_zero", fixed)
    return None


#: How nearly every number is typed (or stored): ASCII digits and hyphens after a leading 0.
_PLAIN_PHONE = re.compile(r"0[0-9-]*")


def _plain_phone(s: str) -> Parsed[str]:
    """:func:`phone` of a string matching ``_PLAIN_PHONE``, which text() and code() keep as it is.

    :func:`_phone_text` gives the same answer for it, step by step: no prefix to strip, nothing after
    the number, a leading 0 (so no lost zero to suggest); only the number check is left.
    """
    canonical = _format_phone(s.replace("-", ""), False)
    return (canonical, None) if canonical is not None else (None, Problem("phone.invalid"))


def phone(value: Any) -> Parsed[str]:
    """Japanese phone/FAX number in hyphenated national form (03-1234-5678); foreign ones as +CC ....

    A number whose leading zero was eaten by Excel (numeric cell, or 312345678 typed into a text cell)
    is reported with the repaired number as suggestion, never repaired here: the digits may just as
    well be a typo, and only the person who typed them knows.
    """
    if type(value) is str and _PLAIN_PHONE.fullmatch(value):
        return _plain_phone(value)
    value = _scalar(value)
    if value is None:
        return _BLANK
    if isinstance(value, bool):
        return None, Problem("phone.invalid")
    if isinstance(value, int | float):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return None, Problem("phone.invalid")
        return None, _lost_zero(str(abs(int(value)))) or Problem("phone.invalid")
    s = code(value)
    if s is None:
        return _BLANK
    if _PLAIN_PHONE.fullmatch(s):
        return _plain_phone(s)
    return _phone_text(s)


def _phone_text(s: str) -> Parsed[str]:
    """:func:`phone` of text already through code()."""
    s = _PHONE_PREFIX.sub("", s.replace("ー", "-"))  # no kana in a phone number: ー is a dash here
    m = _PHONE_CHARS.match(s)
    if m is None:
        return None, Problem("phone.invalid")
    head = m.group().rstrip(" (")
    if len(head) < len(s.rstrip()):  # 内線, ext., (代), a second number: suggest the first one alone
        rest = s[len(head):].strip()
        if rest:
            return None, Problem("phone.invalid", _phone_from_chars(head))
    canonical = _phone_from_chars(head)
    if canonical is not None:
        return canonical, None
    if not head.startswith("+"):
        lost = _lost_zero(_NON_DIGITS.sub("", head))
        if lost is not None:
            return None, lost
    return None, Problem("phone.invalid")


def phone_digits(value: Any) -> str:
    """Digits only, +81 folded to a leading 0: the match key for merge and search; "" when none."""
    value = _scalar(value)
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return ""
        return str(abs(int(value)))
    s = text(value)
    if s is None:
        return ""
    digits = "".join(_ASCII_DIGITS.findall(s))
    if s.lstrip().startswith("+81"):
        digits = digits[2:]
        if not digits.startswith("0"):
            digits = "0" + digits
    return digits


# --- postal code ---------------------------------------------------------------------------------

_POSTAL = re.compile(r"^〒?\s*([0-9]{3})\s*-?\s*([0-9]{4})$")
_POSTAL_PREFIX = re.compile(r"^〒?\s*([0-9]{3})\s*-?\s*([0-9]{4})(?![0-9])")


def postal(value: Any) -> Parsed[str]:
    """Postal code as 123-4567; 〒, full width and a missing hyphen are fine."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if isinstance(value, bool):
        return None, Problem("postal.invalid")
    if isinstance(value, int | float):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return None, Problem("postal.invalid")
        n = int(value)
        if 0 <= n <= 9_999_999:
            digits = f"{n:07d}"
            canonical = f"{digits[:3]}-{digits[3:]}"
            if n >= 1_000_000:
                return canonical, None
            # a number cell drops the leading zero of 060-0001 (Sapporo) and 001-0010
            return None, Problem("postal.leading_zero", canonical)
        return None, Problem("postal.invalid")
    s = code(value)
    if s is None:
        return _BLANK
    m = _POSTAL.match(s)
    if m is not None:
        return f"{m.group(1)}-{m.group(2)}", None
    m = _POSTAL_PREFIX.match(s)  # "〒100-0001 東京都千代田区..." pasted whole
    return None, Problem("postal.invalid", f"{m.group(1)}-{m.group(2)}" if m else None)


# --- e-mail --------------------------------------------------------------------------------------

_ev: Any = None
_EMAIL_BRACKETED = re.compile(r"<\s*([^<>\s]+@[^<>\s]+)\s*>")


def _email_validator() -> Any:
    global _ev
    if _ev is None:
        import email_validator

        _ev = email_validator
    return _ev


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_EMAIL = re.compile(
    rf"^(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$")
#: RFC 6761 special-use names email-validator refuses; the fast path must refuse them too.
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_email(s: str) -> str | None:
    """The common case (ASCII dot-atom @ ASCII host) without email-validator's per-character work.

    email-validator checks ~8,000 addresses a second; a team file has tens of thousands.  Anything
    unusual (IDN, quoted local parts, special-use names) falls through to the full validator, and a
    property test checks both agree on what the fast path accepts.
    """
    m = _PLAIN_EMAIL.match(s)
    if m is None or len(s) > 254 or len(m.group("local")) > 64:
        return None
    domain = m.group("domain").lower()
    if "xn--" in domain or domain.rsplit(".", 1)[-1] in _SPECIAL_TLDS or len(domain) > 253:
        return None
    return f"{m.group('local')}@{domain}"


@lru_cache(maxsize=65536)
def _check_email(s: str) -> str | None:
    fast = _plain_email(s)
    if fast is not None:
        return fast
    ev = _email_validator()
    try:
        # SMTPUTF8 off: a kanji local part in a CRM is an IME left on, not a real address.
        return ev.validate_email(s, check_deliverability=False, allow_smtputf8=False).normalized
    except ev.EmailNotValidError:
        return None


def email(value: Any) -> Parsed[str]:
    """E-mail address, syntax only (no DNS), domain lower-cased, local part kept as typed."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if not isinstance(value, str):
        return None, Problem("email.invalid")
    s = text(value)
    if s is None:
        return _BLANK
    if s[:7].lower() == "mailto:":
        s = s[7:].strip()
    canonical = _check_email(s) if " " not in s else None
    if canonical is not None:
        return canonical, None
    # guess: 山田 <a@b.jp>, 山田太郎 a@b.jp, a@b,co,jp, a@b。jp, stray spaces
    guess = s.replace("。", ".").replace(",", ".").replace("、", ".")
    bracketed = _EMAIL_BRACKETED.findall(guess)
    tokens = guess.split()
    with_at = [t for t in tokens if "@" in t]
    if len(bracketed) == 1:
        candidate = bracketed[0]
    elif len(with_at) == 1 and all(not t.isascii() for t in tokens if t is not with_at[0]):
        candidate = with_at[0]
    else:
        candidate = "".join(tokens)
    suggestion = _check_email(candidate.strip(".")) if candidate.count("@") == 1 else None
    return None, Problem("email.invalid", suggestion if suggestion != s else None)


# --- kana ----------------------------------------------------------------------------------------

#: A hyphen typed after kana in half-width mode is a long-vowel mark (ス-パ- -> スーパー).
_KANA_HYPHEN = re.compile(r"(?<=[\u30a1-\u30fa\u30fc])[-~〜" + _HYPHENS + "]+")
_KANA_OK = re.compile(r"^[\u30a1-\u30fa\u30fb\u30fc\u30fd\u30fe ]+$")


def kana_text(value: Any) -> str | None:
    """フリガナ folding without judgement: NFKC (half-width kana to full), hiragana to katakana."""
    s = text(value)
    if s is None or s.isascii():
        return s
    s = hira_to_kata(s)
    if "-" in s or "~" in s or "〜" in s or not s.isascii():
        s = _KANA_HYPHEN.sub(lambda m: "ー" * len(m.group()), s)
    return s


def kana(value: Any) -> Parsed[str]:
    """フリガナ as full-width katakana; one space between family and given name is kept."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if not isinstance(value, str):
        return None, Problem("kana.invalid")
    s = text(value)
    if s is None:
        return _BLANK
    s = kana_of_text(s)  # = kana_text(value), without its translate and regex when they change nothing
    if _KANA_OK.match(s):
        return s, None
    return None, Problem("kana.invalid")


# --- company match key ---------------------------------------------------------------------------

_JA_FORMS = sorted(
    [
        "株式会社", "有限会社", "合同会社", "合名会社", "合資会社", "相互会社",
        "一般社団法人", "一般財団法人", "公益社団法人", "公益財団法人", "特定非営利活動法人", "npo法人",
        "社会福祉法人", "医療法人社団", "医療法人財団", "社会医療法人", "医療法人", "学校法人", "宗教法人",
        "独立行政法人", "地方独立行政法人", "国立大学法人", "税理士法人", "弁護士法人", "司法書士法人",
        "行政書士法人", "社会保険労務士法人", "土地家屋調査士法人", "有限責任監査法人", "監査法人",
        "特許業務法人", "有限責任事業組合", "農事組合法人", "事業協同組合", "協同組合",
        "カブシキガイシャ", "カブシキカイシャ", "ユウゲンガイシャ", "ユウゲンカイシャ",
        "ゴウドウガイシャ", "ゴウドウカイシャ",
    ],
    key=len,
    reverse=True,
)
#: (株) ㈱ （株） and friends, after NFKC.
_JA_ABBR = (
    r"\(\s*(?:株|有|同|名|資|合|社|財|一社|一財|公社|公財|特非|医|医社|医財|学|宗|福|社福|独|税|弁|監|協)\s*\)"
)
_JA_FORM = "(?:" + "|".join(map(re.escape, _JA_FORMS)) + "|" + _JA_ABBR + ")"
_EN_FORM = (
    r"(?:co\.?\s*,?\s*ltd|company\s*,?\s*limited|co\.?\s*,?\s*limited|corporation|corp|incorporated|inc"
    r"|limited|ltd|l\.?\s*l\.?\s*c|l\.?\s*l\.?\s*p|k\.?\s*k|g\.?\s*k|y\.?\s*k|plc|gmbh|company|co"
    r"|kabushiki\s*[gk]aisha|godo\s*[gk]aisha|yugen\s*[gk]aisha)\.?"
)
_FORM_AT_START = re.compile(r"^(?:" + _JA_FORM + r"|kabushiki\s*[gk]aisha(?![a-z0-9]))[\s.,・]*")
_FORM_AT_END = re.compile(r"[\s.,・]*(?:" + _JA_FORM + r"|(?<![a-z0-9])" + _EN_FORM + r")[\s.,]*$")
_TRIM = " .,・、。&"
_NOT_WORD = re.compile(r"[\W_]+")


def company_key(name: Any) -> str:
    """Match key for a company name: legal-form words before or after, width, case and spaces ignored.

    ``(株)山田製作所``, ``株式会社 山田製作所``, ``山田製作所㈱`` and ``山田製作所 Co., Ltd.`` share a key.
    Legal forms are only removed at the start or end (山田株式会社東京支店 keeps its middle), English
    ones only at the end (so "Co-op" stays), and a name that is nothing but a legal form keeps it.
    """
    s = text(name)
    if s is None:
        return ""
    s = hira_to_kata(s.casefold())
    while True:
        stripped = _FORM_AT_END.sub("", _FORM_AT_START.sub("", s)).strip(_TRIM)
        if stripped == s or not _NOT_WORD.sub("", stripped):
            break
        s = stripped
    return _NOT_WORD.sub("", s)


_JA_FORM_ANYWHERE = re.compile(_JA_FORM)


def has_legal_form(name: Any) -> bool:
    """Whether a name carries a legal-form word: a Japanese one anywhere (株式会社, ㈱, 医療法人社団,
    山田株式会社東京支店), an English one at the end (Co., Ltd., Inc.) -- the words :func:`company_key`
    removes."""
    s = text(name)
    if s is None:
        return False
    s = hira_to_kata(s.casefold())
    return bool(_JA_FORM_ANYWHERE.search(s) or _FORM_AT_END.search(s))


# --- the same folds for text already through text() ----------------------------------------------
#
# Merge folds every customer row for duplicate detection, and its values are already canonical (the
# stored form).  These are the parsers' folds split at the text() step, so a caller that holds text()'s
# result folds it once for several keys instead of once per key; each equals its counterpart exactly:
# ``code(v) == code_of_text(text(v))`` whenever text(v) is not None, and so on (tests/test_match.py
# checks that on generated text).

_is_nfkc = unicodedata.is_normalized
# One-character-class scans that tell when a translate or a regex substitution has nothing to do
# (str.translate looks every character up in a dict, however few it changes).
_ANY_HIRAGANA = re.compile("[\u3041-\u3096\u309d\u309e]")
_ANY_HYPHEN = re.compile("[" + _HYPHENS + "]")
_ANY_KANA_HYPHEN = re.compile("[-~〜" + _HYPHENS + "]")


def stored_text(value: Any) -> str | None:
    """:func:`text`, answered without copying when ``value`` already is its own text() (a stored value).

    Printable means no control characters and no whitespace but the ASCII space (every other Unicode
    space is a separator, not printable), so a printable NFKC string without a space at either end or two
    in a row is what text() would return.
    """
    if value is None:
        return None
    if (type(value) is str and value.isprintable() and (value.isascii() or _is_nfkc("NFKC", value))
            and value[:1] != " " and value[-1:] != " " and "  " not in value):
        return value or None
    return text(value)


def _hira_to_kata(s: str) -> str:
    return s.translate(_HIRA_TO_KATA) if _ANY_HIRAGANA.search(s) else s


def _words(s: str) -> str:
    """``_NOT_WORD.sub("", s)``: the regex's \\w is str.isalnum() or "_"."""
    return s if s.isalnum() else _NOT_WORD.sub("", s)


def code_of_text(s: str) -> str:
    """:func:`code` of a string already through text()."""
    if s.isascii():
        return s
    if _ANY_HYPHEN.search(s):
        s = s.translate(_HYPHEN_TABLE)
    if "ー" in s:
        s = _CHOON_BETWEEN_DIGITS.sub(lambda m: "-" * len(m.group()), s)
    return s


def kana_of_text(s: str) -> str:
    """:func:`kana_text` of a string already through text()."""
    if s.isascii():
        return s
    s = _hira_to_kata(s)
    if _ANY_KANA_HYPHEN.search(s):
        s = _KANA_HYPHEN.sub(lambda m: "ー" * len(m.group()), s)
    return s


def phone_digits_of_text(s: str) -> str:
    """:func:`phone_digits` of a string already through text()."""
    if s.isascii():
        plain = s.replace("-", "")
        digits = plain if plain.isdigit() else _NON_DIGITS.sub("", s)  # isdigit: only 0-9 in ASCII
    else:
        digits = _NON_DIGITS.sub("", s)
    if s.lstrip().startswith("+81"):
        digits = digits[2:]
        if not digits.startswith("0"):
            digits = "0" + digits
    return digits


#: The characters a legal form can start / end with (for the cheap test before each regex below):
#: ``_FORM_AT_START`` is a Japanese form, an abbreviation in brackets or kabushiki gaisha; what
#: ``_FORM_AT_END`` removes ends with a Japanese form's last character, ")" or the last letter of an
#: English one (ltd, limited, incorporated / corporation / corp, llp / inc, llc, plc / k.k., g.k., y.k.
#: / gmbh / company / co / ...gaisha), then only spaces, dots and commas.
_FORM_FIRST = frozenset(f[0] for f in _JA_FORMS) | {"(", "k"}
_FORM_LAST = frozenset(f[-1] for f in _JA_FORMS) | {")"} | set("dnpckhyoa")


def _may_end_with_form(s: str) -> bool:
    last = s[-1:]
    if last in _FORM_LAST:
        return True
    if last not in ".," and not last.isspace():  # ("" is in ".,": an empty string takes the loop)
        return False
    i = len(s)
    while i and (s[i - 1] in ".," or s[i - 1].isspace()):
        i -= 1
    return i > 0 and s[i - 1] in _FORM_LAST


def company_key_of_text(s: str) -> str:
    """:func:`company_key` of a string already through text() ("" for blank).

    The two legal-form regexes try every position of the name; most names cannot start or end with a
    legal form at all, which one character tells, so the regexes only run when they might remove one.
    """
    if not s:
        return ""
    s = _hira_to_kata(s.casefold())
    while True:
        head = _FORM_AT_START.sub("", s) if s[:1] in _FORM_FIRST else s
        stripped = (_FORM_AT_END.sub("", head) if _may_end_with_form(head) else head).strip(_TRIM)
        if stripped == s or not _words(stripped):
            break
        s = stripped
    return _words(s)


def company_key_of_stored(value: Any) -> str:
    """:func:`company_key` of a value in stored (normalised) form: a str that is its own text() skips
    the text() pass (validate's duplicate check, match and the search index fold thousands)."""
    return company_key_of_text(stored_text(value) or "") if type(value) is str else company_key(value)


def phone_digits_of_stored(value: Any) -> str:
    """:func:`phone_digits` of a value in stored (normalised) form, by way of :func:`stored_text`."""
    return phone_digits_of_text(stored_text(value) or "") if type(value) is str else phone_digits(value)


# --- search folding ------------------------------------------------------------------------------

_SEARCH_DROP = re.compile(r"[\s\-]+")


def fold_search(value: Any) -> str:
    """One folding for the search index and for the query, so either side may be typed any way.

    NFKC, case-folded, hiragana to katakana, half-width kana to full; whitespace and hyphen look-alikes
    (and ー between digits) are removed, so 03-1234-5678 is found by 0312345678 and 山田 太郎 by 山田太郎.
    The long-vowel mark between kana is kept: スーパー and スパ are different words.
    """
    s = code(value)
    if s is None:
        return ""
    s = s.casefold()
    if s.isascii():
        return _SEARCH_DROP.sub("", s)
    s = _SEARCH_DROP.sub("", hira_to_kata(unicodedata.normalize("NFKC", s)))
    if "ー" in s:  # dropping "0-ー0" to "0ー0" makes a new ー between digits
        s = _CHOON_BETWEEN_DIGITS.sub("", s)
    # dropping a space can put a combining mark next to a letter it composes with ("A ́")
    return unicodedata.normalize("NFKC", s)


# --- dates ---------------------------------------------------------------------------------------

_EXCEL_EPOCH = date(1899, 12, 30)
_EXCEL_MAX_SERIAL = 2_958_465  # 9999-12-31
_WEEKDAYS = "月火水木金土日"
_WD = r"(?:\s*\(\s*([月火水木金土日])(?:曜日?)?\s*\))?"
_TIME = r"(?:(?:\s+|T)\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_D_YMD = re.compile(r"^([0-9]{4})\s*([/.\-])\s*([0-9]{1,2})\s*\2\s*([0-9]{1,2})" + _WD + _TIME + "$")
_D_KANJI = re.compile(r"^([0-9]{4})\s*年\s*([0-9]{1,2})\s*月\s*([0-9]{1,2})\s*日" + _WD + _TIME + "$")
_D_COMPACT = re.compile(r"^([0-9]{4})([0-9]{2})([0-9]{2})$")
_ERA = r"(明治|大正|昭和|平成|令和|[明大昭平令MTSHRmtshr])\.?"
_D_WAREKI = re.compile(
    "^" + _ERA + r"\s*([0-9]{1,3}|元)\s*(?:年\s*([0-9]{1,2})\s*月\s*([0-9]{1,2})\s*日"
    r"|([/.\-])\s*([0-9]{1,2})\s*\5\s*([0-9]{1,2}))" + _WD + "$"
)
_D_SHORT_YEAR = re.compile(r"^([0-9]{2})\s*([/.\-])\s*([0-9]{1,2})\s*\2\s*([0-9]{1,2})" + _WD + "$")
_D_NO_YEAR = re.compile(r"^([0-9]{1,2})\s*(?:/\s*([0-9]{1,2})|月\s*([0-9]{1,2})\s*日)" + _WD + "$")


class _Era(NamedTuple):
    offset: int  # gregorian year = offset + era year
    first: date
    last: date | None


_ERAS: dict[str, _Era] = {
    # Meiji 1-5 counted days by the lunisolar calendar; only Meiji 6 (1873) on is Gregorian.
    "M": _Era(1867, date(1873, 1, 1), date(1912, 7, 30)),
    "T": _Era(1911, date(1912, 7, 30), date(1926, 12, 25)),
    "S": _Era(1925, date(1926, 12, 25), date(1989, 1, 7)),
    "H": _Era(1988, date(1989, 1, 8), date(2019, 4, 30)),
    "R": _Era(2018, date(2019, 5, 1), None),
}
_ERA_LETTER = {
    "明治": "M", "明": "M", "大正": "T", "大": "T", "昭和": "S", "昭": "S",
    "平成": "H", "平": "H", "令和": "R", "令": "R",
}


def _fmt(d: date) -> str:
    return f"{d.year:04d}/{d.month:02d}/{d.day:02d}"


def _ymd(y: int, m: int, d: int, weekday: str | None) -> Parsed[date]:
    try:
        result = date(y, m, d)
    except ValueError:
        return None, Problem("date.impossible")
    if weekday is not None and _WEEKDAYS[result.weekday()] != weekday:
        return None, Problem("date.invalid")  # 2024/4/1(火): the date or the weekday is wrong
    return result, None


def _serial(n: float) -> Parsed[date]:
    if not math.isfinite(n):
        return None, Problem("date.invalid")
    if n >= 10_000_000:  # a number cell holding 20240401
        digits = str(int(n))
        if n.is_integer() and len(digits) == 8:
            return _ymd(int(digits[:4]), int(digits[4:6]), int(digits[6:]), None)
        return None, Problem("date.invalid")
    day = int(n)
    if not 1 <= day <= _EXCEL_MAX_SERIAL:
        return None, Problem("date.invalid")
    if day == 60:  # Excel's 1900-02-29, inherited from Lotus 1-2-3; the day never existed
        return None, Problem("date.impossible")
    if day < 60:
        return _EXCEL_EPOCH + timedelta(days=day + 1), None
    return _EXCEL_EPOCH + timedelta(days=day), None


def parse_date(value: Any, *, today: date | None = None) -> Parsed[date]:
    """A date from an Excel date cell, an Excel serial, or text in the usual Japanese ways, wareki too.

    ``today`` only feeds suggestions for dates typed without a year or with two digits ("4/1",
    "24/4/1"): those are refused, since the year is a guess.
    """
    value = _scalar(value)
    if value is None:
        return _BLANK
    if isinstance(value, datetime):
        return value.date(), None
    if isinstance(value, date):
        return value, None
    if isinstance(value, bool):
        return None, Problem("date.invalid")
    if isinstance(value, int | float):
        return _serial(float(value))
    s = code(value)
    if s is None:
        return _BLANK
    m = _D_YMD.match(s)
    if m is not None:
        return _ymd(int(m.group(1)), int(m.group(3)), int(m.group(4)), m.group(5))
    m = _D_KANJI.match(s)
    if m is not None:
        return _ymd(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4))
    m = _D_COMPACT.match(s)
    if m is not None:
        return _ymd(int(m.group(1)), int(m.group(2)), int(m.group(3)), None)
    m = _D_WAREKI.match(s)
    if m is not None:
        return _wareki(m)
    m = _D_SHORT_YEAR.match(s)
    today = today or date.today()
    if m is not None:
        yy = int(m.group(1))
        year = 2000 + yy if 2000 + yy <= today.year + 10 else 1900 + yy
        guess, _ = _ymd(year, int(m.group(3)), int(m.group(4)), m.group(5))
        return None, Problem("date.invalid", _fmt(guess) if guess else None)
    m = _D_NO_YEAR.match(s)
    if m is not None:
        guess, _ = _ymd(today.year, int(m.group(1)), int(m.group(2) or m.group(3)), m.group(4))
        return None, Problem("date.invalid", _fmt(guess) if guess else None)
    return None, Problem("date.invalid")


def _wareki(m: re.Match[str]) -> Parsed[date]:
    era_name, year_s, km, kd, _sep, sm, sd, weekday = m.groups()
    letter = _ERA_LETTER.get(era_name) or era_name.upper()
    era = _ERAS[letter]
    year = 1 if year_s == "元" else int(year_s)
    month, day = int(km or sm), int(kd or sd)
    if year == 0:
        return None, Problem("date.invalid")
    if letter == "M" and year < 6:
        return None, Problem("date.invalid")  # lunisolar calendar; no reliable conversion
    result, problem = _ymd(era.offset + year, month, day, weekday)
    if result is None:
        return None, problem
    if result < era.first or (era.last is not None and result > era.last):
        # H31.5.1: the era had ended; the Gregorian day it names is the likely intent
        return None, Problem("date.impossible", _fmt(result))
    return result, None


# --- 法人番号 -------------------------------------------------------------------------------------

_CORP_T = re.compile(r"^[tT]([0-9]{13})$")


def corporate_number_check_digit(body12: str) -> int:
    """国税庁's check digit for the 12-digit body: 9 - (Σ digit × (1, 2, 1, 2 ... from the right) mod 9)."""
    if len(body12) != 12 or not body12.isascii() or not body12.isdigit():
        raise ValueError(f"expected 12 ASCII digits, got {body12!r}")
    backwards = body12[::-1]  # weights 1, 2, 1, 2 ... from the right
    total = sum(map(int, backwards[::2])) + 2 * sum(map(int, backwards[1::2]))
    return 9 - total % 9


def corporate_number(value: Any) -> Parsed[str]:
    """法人番号: 13 digits whose first digit is the check digit; number cells, width and hyphens fine."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if isinstance(value, bool):
        return None, Problem("corporate_number.format")
    if isinstance(value, int | float):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return None, Problem("corporate_number.format")
        s = str(int(value))
    else:
        s = code(value)
        if s is None:
            return _BLANK
        s = s.replace("-", "").replace(" ", "")
    m = _CORP_T.match(s)
    if m is not None:  # an invoice registration number (T + 法人番号) pasted into the column
        digits = m.group(1)
        ok = corporate_number_check_digit(digits[1:]) == int(digits[0])
        return None, Problem("corporate_number.format", digits if ok else None)
    if len(s) != 13 or not s.isascii() or not s.isdigit():
        return None, Problem("corporate_number.format")
    if corporate_number_check_digit(s[1:]) != int(s[0]):
        return None, Problem("corporate_number.check_digit")
    return s, None


# --- numbers -------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^([+-]?)([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)?(?:\.([0-9]+))?$")
#: Counters people append to counts (従業員数 "50人", 数量 "3個"); "%" for 確度.
_INT_UNIT = re.compile(r"\s*(?:人|名|件|個|台|本|枚|点|回|社|口|%)$")
_YEN_PREFIX = re.compile(r"^(?:[¥\\]|jpy)\s*", re.IGNORECASE)
_YEN_SUFFIX = re.compile(r"\s*(?:円|jpy)$", re.IGNORECASE)


def _number_text(value: str) -> str | None:
    """Text of a typed number with width, minus look-alikes and 会計 negatives (△1,000) folded."""
    s = code(value)
    if s is None:
        return None
    if s[0] in "△▲":
        s = "-" + s[1:].lstrip()
    return s


def integer(value: Any) -> Parsed[int]:
    """A whole number: "1,234", "１２３", 12.0, "50人" are fine; 12.5 is not whole."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if isinstance(value, bool):
        return None, Problem("int.invalid")
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, Problem("int.invalid")
        return (int(value), None) if value.is_integer() else (None, Problem("int.not_whole"))
    if not isinstance(value, str):
        return None, Problem("int.invalid")
    s = _number_text(value)
    if s is None:
        return _BLANK
    m = _NUMBER.match(_INT_UNIT.sub("", s))
    if m is None or m.group(2) is None:
        return None, Problem("int.invalid")
    sign, whole, frac = m.groups()
    if frac and frac.strip("0"):
        return None, Problem("int.not_whole")
    n = int(whole.replace(",", ""))
    return (-n if sign == "-" else n), None


def decimal(value: Any) -> Parsed[float]:
    """A number such as an amount: "¥1,234", "1,234円", "1.5", "△500" are fine."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if isinstance(value, bool):
        return None, Problem("decimal.invalid")
    if isinstance(value, int | float):
        f = float(value)
        return (f, None) if math.isfinite(f) else (None, Problem("decimal.invalid"))
    if not isinstance(value, str):
        return None, Problem("decimal.invalid")
    s = _number_text(value)
    if s is None:
        return _BLANK
    sign = ""
    if s[0] in "+-":
        sign, s = s[0], s[1:].lstrip()
    s = _YEN_SUFFIX.sub("", _YEN_PREFIX.sub("", s))
    m = _NUMBER.match(sign + s)
    if m is None or (m.group(2) is None and m.group(3) is None):
        return None, Problem("decimal.invalid")
    sign, whole, frac = m.groups()
    f = float(f"{sign}{(whole or '0').replace(',', '')}.{frac or '0'}")
    return f, None


# --- URL -----------------------------------------------------------------------------------------

#: Host names: letters (any script, for IDN) and digits in dot-separated labels, a letter TLD.
#: Written with \\w rather than a case-insensitive Unicode range, which costs 17 ms to compile.
#: A label is runs of letters and digits joined by hyphens, ``[^\W_]+(?:-+[^\W_]+)*``: the same names
#: as "a letter or digit, then letters, digits and hyphens ending in a letter or digit", spelt so that
#: each name splits into runs one way only, which lets every quantifier be possessive (no backtracking:
#: a third of the time per address).
_HOST = r"(?:[^\W_]++(?:-++[^\W_]++)*+\.)++[^\W\d_]{2,}"
_URL = re.compile(r"^(?:((?i:https?))://|(?=[wW]{3}\.))(" + _HOST + r")(:[0-9]{1,5})?([/?#]\S*)?$")
_BARE_HOST = re.compile(r"^(" + _HOST + r")([/?#]\S*)?$")


def url(value: Any) -> Parsed[str]:
    """A web address starting http(s):// or www.; scheme and host lower-cased, nothing added."""
    value = _scalar(value)
    if value is None:
        return _BLANK
    if not isinstance(value, str):
        return None, Problem("url.invalid")
    s = text(value)
    if s is None:
        return _BLANK
    m = _URL.match(s)
    if m is not None:
        scheme, host, port, rest = m.groups()
        prefix = f"{scheme.lower()}://" if scheme else ""
        return f"{prefix}{host.lower()}{port or ''}{rest or ''}", None
    if "@" not in s and _BARE_HOST.match(s):
        return None, Problem("url.invalid", "https://" + s)
    return None, Problem("url.invalid")


#: Parser per schema column type (``schema.ColumnType``); id, choice and ref are validate's business.
PARSERS: dict[str, Callable[[Any], Parsed[Any]]] = {
    "text": parse_text,
    "name": parse_text,
    "kana": kana,
    "phone": phone,
    "postal": postal,
    "email": email,
    "url": url,
    "corporate_number": corporate_number,
    "date": parse_date,
    "int": integer,
    "decimal": decimal,
}


def display_text(value: Any) -> str:
    """A cell value as a person reads it in a message: whole floats without .0, dates ISO, times only when set."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") if value.time() != datetime.min.time() \
            else value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
