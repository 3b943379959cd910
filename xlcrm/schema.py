"""The single source of truth for every sheet, column, list and rule xlcrm knows.

Template, reader, validation, merge keys, search fields and reports all derive from the objects
built here; nothing else in the package may spell out a column list.  A column has a stable ASCII
``key`` (used in code, the master database and JSON output) and a Japanese and an English label
(used in workbooks).  Enumerations store a canonical ASCII key too, so that a team may mix
Japanese and English workbooks and still merge into one master.

``load_schema(config)`` applies an admin's ``xlcrm.toml``: custom columns per sheet, built-in
optional columns switched off, and replacement choice lists.  The result is an immutable
:class:`Schema`; pass it around instead of re-reading the config.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from xlcrm.errors import XlcrmError

#: Written into every generated workbook; the reader refuses a different *major* version.
SCHEMA_VERSION = "1.0"

#: The very hidden sheet holding schema version, owner, language, creation time and workbook id.
META_SHEET = "_xlcrm"
#: The hidden, protected sheet holding the dropdown lists.
LISTS_SHEET = "_lists"
#: The word before a row number in a customer reference: 佐藤運輸株式会社 (行5) (template, validate).
ROW_WORD: dict[str, str] = {"ja": "行", "en": "row "}
#: Keys written (in this order) into the meta sheet as key/value rows in columns A:B.
META_KEYS = ("schema_version", "owner", "lang", "created", "workbook_id", "generator")

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")

#: What a column holds; drives parsing (normalize), validation rules, Excel formats and SQL types.
ColumnType = Literal[
    "id",  # assigned by xlcrm (C-000001 ...)
    "text",  # free text, IME on
    "name",  # a person's or company's name, IME on
    "kana",  # フリガナ, full-width katakana
    "phone",  # Japanese phone/FAX number, hyphenated national form
    "postal",  # 123-4567
    "email",
    "url",
    "corporate_number",  # 法人番号, 13 digits with check digit
    "date",
    "int",
    "decimal",
    "choice",  # one of Column.choices
    "ref",  # reference to a customer (顧客ID or exact 顧客名 in the same workbook)
]

#: Excel data-validation IME modes (ECMA-376 ST_DataValidationImeMode).
ImeMode = Literal["noControl", "off", "on", "disabled", "hiragana", "fullKatakana", "halfKatakana",
                  "fullAlpha", "halfAlpha", "fullHangul", "halfHangul"]

_DEFAULT_IME: dict[str, ImeMode] = {
    "id": "halfAlpha",
    "text": "hiragana",
    "name": "hiragana",
    "kana": "fullKatakana",
    "phone": "halfAlpha",
    "postal": "halfAlpha",
    "email": "halfAlpha",
    "url": "halfAlpha",
    "corporate_number": "halfAlpha",
    "date": "halfAlpha",
    "int": "halfAlpha",
    "decimal": "halfAlpha",
    "choice": "noControl",
    "ref": "hiragana",
}

#: Excel number formats; "@" (Text) keeps leading zeros that Excel would otherwise drop.
_DEFAULT_FORMAT: dict[str, str] = {
    "id": "@",
    "phone": "@",
    "postal": "@",
    "corporate_number": "@",
    "date": "yyyy/mm/dd",
    "int": "#,##0",
    "decimal": "#,##0",
}

_DEFAULT_WIDTH: dict[str, float] = {
    "id": 11, "text": 30, "name": 24, "kana": 22, "phone": 15, "postal": 10, "email": 28, "url": 28,
    "corporate_number": 16, "date": 12, "int": 10, "decimal": 12, "choice": 12, "ref": 22,
}


@dataclass(frozen=True)
class Choice:
    """One value of an enumeration: canonical ``key`` plus what a person types or sees."""

    key: str
    ja: str
    en: str
    aliases: tuple[str, ...] = ()

    def label(self, lang: Lang) -> str:
        return self.ja if lang == "ja" else self.en


@dataclass(frozen=True)
class Column:
    key: str
    ja: str
    en: str
    type: ColumnType
    required: bool = False
    #: May an admin switch the column off in xlcrm.toml?
    optional: bool = True
    #: Filled by xlcrm, never typed by staff (IDs, 更新日).
    system: bool = False
    choices: tuple[Choice, ...] = ()
    #: Name of the shared choice list (several columns share e.g. DM可否); defaults to the key.
    choice_list: str = ""
    default: str | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    help_ja: str = ""
    help_en: str = ""
    #: Included in customer search and in the in-workbook duplicate check.
    search: bool = False
    custom: bool = False
    number_format_override: str | None = None
    width_override: float | None = None
    ime_override: ImeMode | None = None
    #: Other header spellings that mean this column (team workbooks and lists brought in by import).
    aliases: tuple[str, ...] = ()
    #: Headers of pieces that ``xlcrm import`` joins, in this order, into this column
    #: (住所1 + 住所2 -> 住所, 姓 + 名 -> 氏名).
    parts: tuple[str, ...] = ()

    def label(self, lang: Lang) -> str:
        return self.ja if lang == "ja" else self.en

    def help(self, lang: Lang) -> str:
        return self.help_ja if lang == "ja" else self.help_en

    @property
    def number_format(self) -> str | None:
        return self.number_format_override or _DEFAULT_FORMAT.get(self.type)

    @property
    def width(self) -> float:
        return self.width_override or _DEFAULT_WIDTH[self.type]

    @property
    def ime(self) -> ImeMode:
        return self.ime_override or _DEFAULT_IME[self.type]

    @property
    def list_name(self) -> str:
        return self.choice_list or self.key

    def choice(self, key: str) -> Choice:
        for c in self.choices:
            if c.key == key:
                return c
        raise KeyError(f"{self.key}: no choice {key!r}")

    def choice_label(self, key: str | None, lang: Lang) -> str | None:
        """Canonical key -> label in ``lang``; unknown keys pass through unchanged."""
        if key is None:
            return None
        for c in self.choices:
            if c.key == key:
                return c.label(lang)
        return key

    def choice_lookup(self) -> dict[str, str]:
        """Every accepted spelling (both languages, aliases, case-folded) -> canonical key."""
        out: dict[str, str] = {}
        for c in self.choices:
            for s in (c.key, c.ja, c.en, *c.aliases):
                out[s.casefold()] = c.key
        return out


# --- cross-field rules: declared here, enforced by validate, read by docs and reports --------------

@dataclass(frozen=True)
class RequiredWhen:
    """``target`` must be filled when column ``when`` holds one of ``values`` (canonical keys)."""

    target: str
    when: str
    values: tuple[str, ...]
    code: str = "required_when"


@dataclass(frozen=True)
class OnlyWhen:
    """``target`` may be filled only when column ``when`` holds one of ``values``."""

    target: str
    when: str
    values: tuple[str, ...]
    code: str = "only_when"


@dataclass(frozen=True)
class ProductEquals:
    """``target`` == product of ``factors`` when all are filled (金額 = 数量 x 単価)."""

    target: str
    factors: tuple[str, ...]
    code: str = "product_equals"


@dataclass(frozen=True)
class NotFuture:
    """A date no more than ``days`` after today (an activity cannot have happened next week)."""

    target: str
    days: int = 1
    code: str = "not_future"


Rule = RequiredWhen | OnlyWhen | ProductEquals | NotFuture


@dataclass(frozen=True)
class Entity:
    key: str  # customers, contacts, activities, deals, todos
    ja: str  # sheet name in Japanese workbooks
    en: str  # sheet name in English workbooks
    id_prefix: str  # C, P, A, D, T -> C-000001
    columns: tuple[Column, ...]
    rules: tuple[Rule, ...] = ()
    #: Fields that together identify a row without an ID, so re-merging it does not duplicate it.
    natural_key: tuple[str, ...] = ()

    def label(self, lang: Lang) -> str:
        return self.ja if lang == "ja" else self.en

    @property
    def id_column(self) -> Column:
        return self.columns[0]

    @property
    def ref_column(self) -> Column | None:
        return next((c for c in self.columns if c.type == "ref"), None)

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(f"{self.key}: no column {key!r}")

    def has(self, key: str) -> bool:
        return any(c.key == key for c in self.columns)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.columns]

    def part_lookup(self) -> dict[str, tuple[str, int]]:
        """Every header of a piece (folded) -> (column key, position among the pieces)."""
        out: dict[str, tuple[str, int]] = {}
        for c in self.columns:
            for i, s in enumerate(c.parts):
                out[fold_header(s)] = (c.key, i)
        return out

    def header_lookup(self) -> dict[str, str]:
        """Every accepted header spelling (both languages, aliases; case/space-folded) -> key."""
        out: dict[str, str] = {}
        for c in self.columns:
            for s in (c.key, c.ja, c.en, *c.aliases):
                out[fold_header(s)] = c.key
        return out

    def table_name(self, lang: Lang) -> str:
        """Excel table name (ASCII so formulas work in either language)."""
        return f"tbl_{self.key}"


@dataclass(frozen=True)
class Role:
    """Who may see what in exports: forbidden columns are dropped, not hidden."""

    name: str
    hide: tuple[str, ...] = ()  # column keys, or "entity.key"
    own_only: bool = False


@dataclass(frozen=True)
class Schema:
    version: str
    entities: tuple[Entity, ...]
    roles: tuple[Role, ...] = ()
    config_path: Path | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: xlcrm.toml's ``[store]``: ``url`` names a PostgreSQL master (xlcrm.store.url); none: master.db.
    store: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Entity]:
        return iter(self.entities)

    def entity(self, key: str) -> Entity:
        for e in self.entities:
            if e.key == key:
                return e
        raise KeyError(f"no entity {key!r}")

    def __getitem__(self, key: str) -> Entity:
        return self.entity(key)

    def sheet_lookup(self) -> dict[str, str]:
        """Sheet name in either language (case/space-folded) -> entity key."""
        out: dict[str, str] = {}
        for e in self.entities:
            for s in (e.key, e.ja, e.en):
                out[fold_header(s)] = e.key
        return out

    def choice_lists(self) -> dict[str, tuple[Choice, ...]]:
        """Every distinct choice list, by list name, in first-seen order (template's lists sheet)."""
        out: dict[str, tuple[Choice, ...]] = {}
        for e in self.entities:
            for c in e.columns:
                if c.type == "choice" and c.list_name not in out:
                    out[c.list_name] = c.choices
        return out

    def role(self, name: str) -> Role:
        for r in self.roles:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.roles) or "(none defined)"
        raise XlcrmError(f"unknown role {name!r}; roles in xlcrm.toml: {known}")


def fold_header(s: str) -> str:
    """Header comparison key: width-folded, case-folded, without spaces, so 'E-mail ' == 'e-mail'."""
    import unicodedata

    return "".join(unicodedata.normalize("NFKC", s).casefold().split())


# --- built-in choice lists ------------------------------------------------------------------------

def _choices(*rows: tuple[str, str, str] | tuple[str, str, str, tuple[str, ...]]) -> tuple[Choice, ...]:
    return tuple(Choice(*r) for r in rows)


KIND = _choices(("corporate", "法人", "Company", ("会社", "corporate")),
                ("individual", "個人", "Individual", ("person", "個人客")))
DM = _choices(("yes", "可", "Yes", ("ok", "○", "許可", "y")),
              ("no", "不可", "No", ("ng", "×", "拒否", "n")),
              ("unknown", "未確認", "Unconfirmed", ("unknown", "?", "不明")))
CUSTOMER_STATUS = _choices(("prospect", "見込み", "Prospect", ("見込",)),
                           ("negotiating", "商談中", "Negotiating"),
                           ("active", "取引中", "Active"),
                           ("dormant", "休眠", "Dormant"),
                           ("lost", "失注", "Lost"))
INDUSTRY = _choices(("manufacturing", "製造業", "Manufacturing"),
                    ("construction", "建設業", "Construction"),
                    ("wholesale", "卸売業", "Wholesale"),
                    ("retail", "小売業", "Retail"),
                    ("it", "情報通信業", "IT & Communications", ("IT",)),
                    ("real_estate", "不動産業", "Real estate"),
                    ("food", "飲食業", "Food service", ("飲食",)),
                    ("medical", "医療・福祉", "Healthcare", ("医療",)),
                    ("education", "教育", "Education"),
                    ("services", "サービス業", "Services"),
                    ("transport", "運輸業", "Transport"),
                    ("finance", "金融・保険業", "Finance & insurance"),
                    ("public", "官公庁", "Public sector"),
                    ("consumer", "個人", "Consumer"),
                    ("other", "その他", "Other"))
SOURCE = _choices(("referral", "紹介", "Referral"),
                  ("web", "Webサイト", "Website", ("HP", "ホームページ")),
                  ("exhibition", "展示会", "Trade show"),
                  ("phone", "電話", "Phone"),
                  ("dm", "DM", "Direct mail"),
                  ("ads", "広告", "Advertising"),
                  ("existing", "既存顧客", "Existing customer"),
                  ("cold", "飛び込み", "Cold call"),
                  ("other", "その他", "Other"))
ACTIVITY_TYPE = _choices(("call", "電話", "Call"),
                         ("email", "メール", "E-mail"),
                         ("visit", "訪問", "Visit"),
                         ("meeting", "商談", "Meeting"),
                         ("store_visit", "来店", "Store visit"),
                         ("inquiry", "問い合わせ", "Inquiry", ("問合せ", "問い合せ")),
                         ("complaint", "クレーム", "Complaint", ("苦情",)),
                         ("survey", "アンケート", "Survey"),
                         ("event", "イベント", "Event"),
                         ("other", "その他", "Other"))
ACTIVITY_CATEGORY = _choices(("product", "商品", "Product"),
                             ("service", "サービス", "Service"),
                             ("price", "価格", "Price"),
                             ("delivery", "納期", "Delivery"),
                             ("other", "その他", "Other"))
ACTIVITY_RESULT = _choices(("resolved", "解決", "Resolved"),
                           ("unresolved", "未解決", "Unresolved"),
                           ("in_progress", "対応中", "In progress"))
DEAL_PHASE = _choices(("lead", "見込み", "Lead", ("見込",)),
                      ("proposal", "提案", "Proposal"),
                      ("quote", "見積", "Quote", ("見積もり",)),
                      ("negotiation", "交渉", "Negotiation"),
                      ("won", "受注", "Won"),
                      ("lost", "失注", "Lost"))
PAYMENT = _choices(("bank_transfer", "銀行振込", "Bank transfer", ("振込",)),
                   ("credit_card", "クレジットカード", "Credit card", ("カード",)),
                   ("cash", "現金", "Cash"),
                   ("direct_debit", "口座振替", "Direct debit"),
                   ("invoice", "請求書払い", "Invoice"),
                   ("other", "その他", "Other"))
TODO_STATUS = _choices(("todo", "未着手", "Not started"),
                       ("doing", "進行中", "In progress"),
                       ("done", "完了", "Done"))
PREFECTURES_JA = (
    "北海道", "青森県", "岩手県", "宮城県", "秋田県", "山形県", "福島県", "茨城県", "栃木県", "群馬県",
    "埼玉県", "千葉県", "東京都", "神奈川県", "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県",
    "岐阜県", "静岡県", "愛知県", "三重県", "滋賀県", "京都府", "大阪府", "兵庫県", "奈良県", "和歌山県",
    "鳥取県", "島根県", "岡山県", "広島県", "山口県", "徳島県", "香川県", "愛媛県", "高知県", "福岡県",
    "佐賀県", "長崎県", "熊本県", "大分県", "宮崎県", "鹿児島県", "沖縄県",
)
PREFECTURES_EN = (
    "Hokkaido", "Aomori", "Iwate", "Miyagi", "Akita", "Yamagata", "Fukushima", "Ibaraki", "Tochigi",
    "Gunma", "Saitama", "Chiba", "Tokyo", "Kanagawa", "Niigata", "Toyama", "Ishikawa", "Fukui",
    "Yamanashi", "Nagano", "Gifu", "Shizuoka", "Aichi", "Mie", "Shiga", "Kyoto", "Osaka", "Hyogo",
    "Nara", "Wakayama", "Tottori", "Shimane", "Okayama", "Hiroshima", "Yamaguchi", "Tokushima",
    "Kagawa", "Ehime", "Kochi", "Fukuoka", "Saga", "Nagasaki", "Kumamoto", "Oita", "Miyazaki",
    "Kagoshima", "Okinawa",
)
PREFECTURE = tuple(
    # Canonical key is the Japanese name: it is what addresses start with and what people search.
    Choice(ja, ja, en, (ja.rstrip("都府県") if ja != "北海道" else "北海道", f"{en}-ken", f"{en} Prefecture"))
    for ja, en in zip(PREFECTURES_JA, PREFECTURES_EN, strict=True)
)

#: Deal phases that close a deal; the rest are "open" (pipeline).
CLOSED_PHASES = ("won", "lost")
OPEN_PHASES = tuple(c.key for c in DEAL_PHASE if c.key not in CLOSED_PHASES)


def _c(key: str, ja: str, en: str, type: ColumnType, **kw: Any) -> Column:
    return Column(key, ja, en, type, **kw)


def _id(key: str, ja: str, en: str, example: str) -> Column:
    return _c(key, ja, en, "id", optional=False, system=True, width_override=11,
              help_ja=f"xlcrm が付番します（例 {example}）。入力・変更しないでください。",
              help_en=f"Assigned by xlcrm (e.g. {example}). Do not type or change it.")


#: What lists kept outside xlcrm call a company: customer names, and the customer column of child sheets.
_COMPANY_ALIASES = ("会社名", "社名", "企業名", "法人名", "取引先名", "得意先名", "取引先", "得意先", "屋号",
                    "お客様名", "顧客名", "会社", "Company", "Company name", "Customer name", "Client",
                    "Account name")
#: The ones that do not say whether the customer is a company or a person (every other name of the
#: customer column does: 会社名, 社名, 取引先名 ... make a 法人 row when ``xlcrm import`` brings a list in).
PERSON_OR_COMPANY_HEADERS = ("お客様名", "顧客名", "顧客", "Customer name")


def _ref() -> Column:
    return _c("customer", "顧客", "Customer", "ref", optional=False, search=False,
              aliases=(*_COMPANY_ALIASES, "訪問先", "顧客先"),
              help_ja="一覧から顧客を選ぶか、顧客IDを入力してください。",
              help_en="Pick the customer from the list or type its customer ID.")


def _dm() -> Column:
    return _c("dm_consent", "DM可否", "DM consent", "choice", choices=DM, choice_list="dm_consent",
              default="unknown",
              help_ja="ダイレクトメール送付の可否。本人の意思を確認したら 可 / 不可 を選んでください。",
              help_en="May we send direct mail? Choose Yes / No once the person has told you.")


def builtin_entities() -> tuple[Entity, ...]:
    customers = Entity(
        "customers", "顧客", "Customers", "C",
        (
            _id("customer_id", "顧客ID", "Customer ID", "C-000001"),
            _c("kind", "区分", "Type", "choice", required=True, optional=False, choices=KIND,
               help_ja="法人 か 個人 を選んでください。", help_en="Company or Individual."),
            _c("name", "顧客名", "Name", "name", required=True, optional=False, search=True,
               max_length=100, width_override=28, aliases=(*_COMPANY_ALIASES, "氏名"),
               help_ja="会社名または氏名。株式会社は省略せず正式名称で。",
               help_en="Company or person name, in full."),
            _c("kana", "フリガナ", "Kana", "kana", search=True, max_length=100,
               aliases=("ふりがな", "カナ", "Furigana", "会社名フリガナ", "会社名カナ", "フリガナ(会社名)"),
               help_ja="全角カタカナで（ひらがなは自動で変換されます）。",
               help_en="Reading in katakana (hiragana is converted)."),
            _c("corporate_number", "法人番号", "Corporate number", "corporate_number", search=True,
               aliases=("法人No", "法人No."),
               help_ja="13桁の法人番号（国税庁）。", help_en="13-digit Japanese corporate number."),
            _c("industry", "業種", "Industry", "choice", choices=INDUSTRY, aliases=("業界",)),
            _c("employees", "従業員数", "Employees", "int", min=0, max=10_000_000, aliases=("社員数",),
               help_ja="0以上の整数。", help_en="A whole number, 0 or more."),
            _c("postal_code", "郵便番号", "Postal code", "postal",
               aliases=("〒", "〒番号", "郵便", "ZIP", "ZIP code", "Postcode"),
               help_ja="例 100-0001", help_en="e.g. 100-0001"),
            _c("prefecture", "都道府県", "Prefecture", "choice", choices=PREFECTURE, aliases=("県",), search=True),
            _c("address", "住所", "Address", "text", search=True, max_length=200, width_override=36,
               aliases=("所在地", "会社住所"),
               parts=("住所1", "住所2", "住所3", "番地", "ビル名", "建物名", "Address 1", "Address 2",
                      "Address 3", "Address line 1", "Address line 2"),
               help_ja="市区町村以降（都道府県は左の列）。",
               help_en="City and street (prefecture on the left)."),
            _c("phone", "電話番号", "Phone", "phone", search=True,
               aliases=("TEL", "電話", "代表電話", "代表TEL", "代表番号", "TEL会社", "会社TEL", "会社電話",
                        "電話番号(会社)", "Phone number", "Tel"),
               help_ja="例 03-1234-5678（先頭の0を忘れずに）。",
               help_en="e.g. 03-1234-5678 (keep the leading 0)."),
            _c("fax", "FAX", "Fax", "phone", search=True, aliases=("FAX番号", "ファックス", "ファクス"),
               help_ja="例 03-1234-5679", help_en="e.g. 03-1234-5679"),
            _c("email", "メールアドレス", "E-mail", "email", search=True, max_length=254,
               aliases=("メール", "Email", "mail", "E-mail", "会社メール"),
               help_ja="例 info@example.co.jp", help_en="e.g. info@example.com"),
            _c("website", "Webサイト", "Website", "url", max_length=500,
               aliases=("URL", "HP", "ホームページ", "Web")),
            _dm(),
            _c("status", "ステータス", "Status", "choice", choices=CUSTOMER_STATUS, default="prospect"),
            _c("source", "流入経路", "Source", "choice", choices=SOURCE),
            _c("owner", "担当営業", "Sales rep", "name", required=True, optional=False,
               aliases=("担当", "営業担当", "担当者(営業)", "自社担当", "Owner"),
               help_ja="空欄ならこのブックの担当者になります。",
               help_en="Left blank: the owner of this workbook."),
            _c("birthday", "誕生日", "Birthday", "date", help_ja="個人のお客様のみ。",
               help_en="Individuals only.", aliases=("生年月日",)),
            _c("notes", "備考", "Notes", "text", search=True, max_length=2000, width_override=40,
               aliases=("メモ", "Memo", "特記事項", "コメント", "Comment")),
            _c("updated_at", "更新日", "Updated", "date", system=True,
               help_ja="xlcrm が記録します。", help_en="Recorded by xlcrm."),
        ),
        rules=(OnlyWhen("birthday", "kind", ("individual",)),),
    )
    contacts = Entity(
        "contacts", "担当者", "Contacts", "P",
        (
            _id("contact_id", "担当者ID", "Contact ID", "P-000001"),
            _ref(),
            _c("name", "氏名", "Name", "name", required=True, optional=False, search=True, max_length=100,
               aliases=("担当者名", "担当者氏名", "名前", "お名前", "Contact name", "Full name"),
               parts=("姓", "名", "Last name", "First name")),
            _c("kana", "フリガナ", "Kana", "kana", search=True, max_length=100,
               aliases=("ふりがな", "カナ", "氏名フリガナ", "氏名カナ", "担当者フリガナ", "担当者カナ",
                        "担当者名フリガナ", "担当者名カナ"), parts=("セイ", "メイ")),
            _c("department", "部署", "Department", "text", max_length=100, width_override=18,
               aliases=("部署名", "所属", "部門", "Division")),
            _c("title", "役職", "Title", "text", max_length=100, width_override=14,
               aliases=("役職名", "肩書", "Position")),
            _c("phone", "電話番号", "Phone", "phone", search=True,
               aliases=("TEL", "電話", "直通", "TEL直通", "直通電話", "直通TEL")),
            _c("mobile", "携帯電話", "Mobile", "phone", search=True,
               aliases=("携帯", "携帯番号", "携帯TEL", "Mobile phone", "Cell")),
            _c("email", "メールアドレス", "E-mail", "email", search=True, max_length=254,
               aliases=("メール", "Email", "mail", "E-mail")),
            _dm(),
            _c("notes", "備考", "Notes", "text", search=True, max_length=2000, width_override=40,
               aliases=("メモ", "Memo")),
        ),
        natural_key=("customer", "name"),
    )
    activities = Entity(
        "activities", "活動履歴", "Activities", "A",
        (
            _id("activity_id", "活動ID", "Activity ID", "A-000001"),
            _c("date", "日付", "Date", "date", required=True, optional=False,
               aliases=("訪問日", "対応日", "受付日", "活動日", "面談日", "日時", "Visit date"),
               help_ja="対応した日（例 2024/4/1）。", help_en="When it happened (e.g. 2024-04-01)."),
            _ref(),
            _c("contact", "担当者", "Contact", "name", max_length=100, aliases=("先方担当者", "先方担当", "面談者", "担当者名"),
               help_ja="先方の担当者名。", help_en="The customer's person you dealt with."),
            _c("type", "種別", "Type", "choice", choices=ACTIVITY_TYPE, required=True, optional=False,
               aliases=("活動種別", "対応種別", "区分")),
            _c("category", "分類", "Category", "choice", choices=ACTIVITY_CATEGORY, aliases=("カテゴリ",),
               help_ja="問い合わせ・クレームでは必須。", help_en="Required for inquiries and complaints."),
            _c("content", "内容", "Details", "text", required=True, optional=False, max_length=4000,
               width_override=40, aliases=("用件", "詳細", "報告内容", "商談内容", "訪問内容", "問い合わせ内容",
                                           "相談内容"), parts=("件名", "Subject")),
            _c("response", "対応内容", "Response", "text", max_length=4000, width_override=40,
               aliases=("回答", "対応"),
               help_ja="クレームでは必須。どう対応したか。", help_en="Required for complaints: what we did."),
            _c("result", "結果", "Outcome", "choice", choices=ACTIVITY_RESULT, aliases=("対応結果",)),
            _c("handled_by", "対応者", "Handled by", "name", required=True, optional=False,
               aliases=("受付者", "訪問者", "自社担当", "営業担当", "担当営業", "担当"),
               help_ja="空欄ならこのブックの担当者になります。", help_en="Left blank: the workbook's owner."),
        ),
        rules=(
            RequiredWhen("category", "type", ("inquiry", "complaint")),
            RequiredWhen("response", "type", ("complaint",)),
            NotFuture("date", 1),
        ),
        natural_key=("customer", "date", "type", "content"),
    )
    deals = Entity(
        "deals", "取引", "Deals", "D",
        (
            _id("deal_id", "取引ID", "Deal ID", "D-000001"),
            _ref(),
            _c("title", "案件名", "Deal", "text", required=True, optional=False, max_length=200,
               width_override=28, parts=("伝票番号", "伝票No", "伝票No.", "請求書番号", "受注番号", "Invoice no",
                                         "Order no")),
            _c("product", "商品", "Product", "text", max_length=200, width_override=20,
               aliases=("商品名", "品名", "品目", "Item")),
            _c("quantity", "数量", "Quantity", "int", min=1, max=1e12, aliases=("個数", "Qty"),
               help_ja="1以上の整数。",
               help_en="A whole number, 1 or more."),
            _c("unit_price", "単価", "Unit price", "decimal", min=0, max=1e15),
            _c("amount", "金額", "Amount", "decimal", min=0, max=1e15,
               aliases=("売上金額", "売上額", "売上", "税抜金額"),
               help_ja="数量×単価（両方入力した場合は一致させてください）。",
               help_en="Quantity x unit price when both are given."),
            _c("phase", "フェーズ", "Stage", "choice", choices=DEAL_PHASE, required=True, optional=False),
            _c("probability", "確度", "Probability", "int", min=0, max=100,
               help_ja="受注の見込み（0〜100%）。", help_en="Chance of winning, 0-100 (%)."),
            _c("expected_close", "受注予定日", "Expected close", "date",
               help_ja="進行中の案件では必須。", help_en="Required while the deal is open."),
            _c("closed_on", "受注日", "Closed on", "date",
               aliases=("伝票日付", "売上日", "納品日", "取引日", "請求日", "日付", "Invoice date", "Order date"),
               help_ja="受注・失注したら必須。", help_en="Required once won or lost."),
            _c("payment_method", "支払方法", "Payment", "choice", choices=PAYMENT, aliases=("決済方法",)),
            _c("renewal_date", "契約更新日", "Renewal date", "date"),
            _c("cancel_date", "解約日", "Cancelled on", "date"),
            _c("owner", "担当営業", "Sales rep", "name", aliases=("担当", "営業担当", "担当者"),
               help_ja="空欄ならこのブックの担当者になります。", help_en="Left blank: the workbook's owner."),
        ),
        rules=(
            ProductEquals("amount", ("quantity", "unit_price")),
            RequiredWhen("expected_close", "phase", OPEN_PHASES),
            RequiredWhen("closed_on", "phase", CLOSED_PHASES),
        ),
        natural_key=("customer", "title"),
    )
    todos = Entity(
        "todos", "TODO", "TODO", "T",
        (
            _id("todo_id", "TODO ID", "TODO ID", "T-000001"),
            _c("due", "期限", "Due", "date", required=True, optional=False),
            _ref(),
            _c("content", "内容", "Action", "text", required=True, optional=False, max_length=2000,
               width_override=40),
            _c("assignee", "担当", "Assignee", "name", required=True, optional=False,
               help_ja="空欄ならこのブックの担当者になります。", help_en="Left blank: the workbook's owner."),
            _c("status", "状態", "Status", "choice", choices=TODO_STATUS, default="todo"),
            _c("done_on", "完了日", "Done on", "date", help_ja="完了したら必須。",
               help_en="Required when done."),
        ),
        rules=(RequiredWhen("done_on", "status", ("done",)),),
        natural_key=("customer", "due", "content"),
    )
    return (customers, contacts, activities, deals, todos)


#: Columns that default to the workbook owner's name when left blank.
OWNER_DEFAULTED: dict[str, str] = {"customers": "owner", "activities": "handled_by", "deals": "owner",
                                   "todos": "assignee"}

_CUSTOM_TYPES: dict[str, ColumnType] = {
    "text": "text", "name": "name", "kana": "kana", "phone": "phone", "postal": "postal",
    "email": "email", "url": "url", "date": "date", "int": "int", "integer": "int",
    "decimal": "decimal", "number": "decimal", "choice": "choice", "list": "choice",
}

#: Column types that say how to reach a person: a ``hide`` entry naming one of them (``phone``,
#: ``email``, ``postal``) hides every column of that type, built-in or added in xlcrm.toml.
CONTACT_TYPES: tuple[str, ...] = ("phone", "email", "postal")


def hidden_types(role: Role) -> set[str]:
    """The contact types (:data:`CONTACT_TYPES`) a role hides as a whole."""
    return {fold_header(str(item)) for item in role.hide} & set(CONTACT_TYPES)


def hidden_columns(schema: Schema, role: Role) -> dict[str, set[str]]:
    """Entity key -> column keys the role may not see.

    A ``hide`` entry is a column type of :data:`CONTACT_TYPES` (``phone``: every phone-number column
    of every sheet, 電話番号, FAX, 携帯電話 and custom ones such as 緊急連絡先 alike), a column key or
    label (``address``, ``住所``: that column on every sheet that has it) or ``sheet.column``
    (``customers.phone``, ``顧客.電話番号``: that sheet only); keys are tried first, then Japanese
    labels, then English ones.  An entry that names nothing is refused: silently ignoring a typo would
    leak the column it meant.
    """
    out: dict[str, set[str]] = {e.key: set() for e in schema}
    sheets = schema.sheet_lookup()
    where = f"{schema.config_path or 'xlcrm.toml'} [roles.{role.name}] hide"
    for item in role.hide:
        text = str(item).strip()
        entity_part, _, col_part = text.rpartition(".")
        targets: list[Entity]
        if entity_part and fold_header(entity_part) in sheets:
            targets = [schema[sheets[fold_header(entity_part)]]]
        else:
            targets, col_part = list(schema), text
        want = fold_header(col_part)
        hit = False
        if not entity_part and want in CONTACT_TYPES:
            for e in targets:
                for c in e.columns:
                    if c.type == want:
                        out[e.key].add(c.key)
                        hit = True
        # A key wins over a label, a Japanese label over an English one: "type" is the activity type,
        # not the customer column whose English label happens to be "Type".
        for spelling in (lambda c: c.key, lambda c: c.ja, lambda c: c.en):
            for e in targets:
                for c in e.columns:
                    if fold_header(spelling(c)) == want:
                        out[e.key].add(c.key)
                        hit = True
            if hit:
                break
        if not hit:
            raise XlcrmError(f"{where}: {text!r} names no column; use a column key such as 'phone' or "
                             "'customers.phone', or its label such as '電話番号'")
    return out


#: The contact types exports mask inside free text (備考, 内容) for a role that hides them
#: (xlcrm.views.export.mask_text): a phone number typed into a note is still a phone number.
MASKED_IN_TEXT: tuple[str, ...] = ("phone", "email")


def text_hidden_with(role: Role) -> set[str]:
    """The contact types of :data:`MASKED_IN_TEXT` a role hides, whose values free text may hold too."""
    return hidden_types(role) & set(MASKED_IN_TEXT)


DEFAULT_ROLES = (
    Role("admin"),
    Role("sales", own_only=True),
    Role("analyst", hide=("phone", "fax", "mobile", "email", "postal_code", "address", "birthday")),
)


def load_schema(config: str | Path | None = None) -> Schema:
    """The built-in schema adapted by an admin's ``xlcrm.toml`` (see README, "Adapting the schema").

    ``config=None`` looks for ``xlcrm.toml`` in the current directory and uses the built-in schema
    when there is none, so a firm can start with no configuration at all.
    """
    path: Path | None
    if config is None:
        path = Path("xlcrm.toml") if Path("xlcrm.toml").is_file() else None
    else:
        path = Path(config)
        if not path.is_file():
            raise XlcrmError(f"{path}: configuration file not found; check the --config path")
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise XlcrmError(f"{path}: not valid TOML ({exc}); fix the file or remove it") from None
    return build_schema(data, path)


def build_schema(data: Mapping[str, Any], path: Path | None = None) -> Schema:
    entities = list(builtin_entities())
    where = str(path or "xlcrm.toml")
    known_sections = {"sheets", "choices", "roles", "settings", "store"}
    for k in data:
        if k not in known_sections:
            raise XlcrmError(f"{where}: unknown section [{k}]; expected one of {sorted(known_sections)}")

    # Replacement choice lists: [choices] industry = ["製造業", ...] or [{key=..., ja=..., en=...}]
    for list_name, values in (data.get("choices") or {}).items():
        new = _parse_choices(values, f"{where} [choices].{list_name}")
        found = False
        for i, e in enumerate(entities):
            cols = tuple(replace(c, choices=new) if c.type == "choice" and c.list_name == list_name else c
                         for c in e.columns)
            found = found or cols != e.columns
            entities[i] = replace(e, columns=cols)
        if not found:
            known = sorted({c.list_name for e in entities for c in e.columns if c.type == "choice"})
            raise XlcrmError(f"{where}: [choices].{list_name} names no choice list; known: {known}")

    sheets = data.get("sheets") or {}
    lookup = {fold_header(s): e.key for e in entities for s in (e.key, e.ja, e.en)}
    for sheet_name, spec in sheets.items():
        ekey = lookup.get(fold_header(sheet_name))
        if ekey is None:
            raise XlcrmError(f"{where}: [sheets.\"{sheet_name}\"] is not a sheet; use one of "
                             f"{[e.key for e in entities]}")
        i = next(i for i, e in enumerate(entities) if e.key == ekey)
        e = entities[i]
        off = spec.get("disable", [])
        cols = list(e.columns)
        for name in off:
            col = _find_col(e, name, where)
            if not col.optional:
                raise XlcrmError(f"{where}: [sheets.\"{sheet_name}\"] cannot disable {col.ja} ({col.key}): "
                                 "it is required by xlcrm")
            if any(getattr(r, "when", None) == col.key for r in e.rules):
                raise XlcrmError(f"{where}: [sheets.\"{sheet_name}\"] cannot disable {col.ja} ({col.key}): "
                                 "another column's rule depends on it")
            cols.remove(col)
        for j, cspec in enumerate(spec.get("columns", [])):
            cols.append(_custom_column(cspec, f"{where} [[sheets.\"{sheet_name}\".columns]] #{j + 1}",
                                       {c.key for c in cols}, {c.ja for c in cols} | {c.en for c in cols}))
        keep = {c.key for c in cols}
        rules = tuple(r for r in e.rules if r.target in keep
                      and all(f in keep for f in getattr(r, "factors", ())))
        entities[i] = replace(e, columns=tuple(cols), rules=rules)

    roles = list(DEFAULT_ROLES)
    for name, rspec in (data.get("roles") or {}).items():
        role = Role(name, tuple(rspec.get("hide", ())), bool(rspec.get("own_only", False)))
        roles = [r for r in roles if r.name != name] + [role]
    return Schema(SCHEMA_VERSION, tuple(entities), tuple(roles), path, dict(data.get("settings") or {}),
                  _store_section(data.get("store"), where))


def _store_section(spec: Any, where: str) -> dict[str, Any]:
    """``[store]``: where the master lives; ``url = "postgresql://…"`` is its only key."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise XlcrmError(f"{where}: [store] must be a table, e.g. [store] url = \"postgresql://HOST/DATABASE\"")
    unknown = sorted(set(spec) - {"url"})
    if unknown:
        raise XlcrmError(f"{where}: [store] has unknown keys {unknown}; its one key is url")
    if "url" in spec and not isinstance(spec["url"], str):
        raise XlcrmError(f"{where}: [store] url must be text, e.g. \"postgresql://HOST/DATABASE\"")
    return dict(spec)


def _find_col(e: Entity, name: str, where: str) -> Column:
    want = fold_header(name)
    for c in e.columns:
        if want in (fold_header(c.key), fold_header(c.ja), fold_header(c.en)):
            return c
    raise XlcrmError(f"{where}: sheet {e.ja} has no column {name!r}")


def _parse_choices(values: Iterable[Any], where: str) -> tuple[Choice, ...]:
    out = []
    for v in values:
        if isinstance(v, str):
            out.append(Choice(v, v, v))
        elif isinstance(v, Mapping) and "ja" in v:
            ja = str(v["ja"])
            out.append(Choice(str(v.get("key", ja)), ja, str(v.get("en", ja)),
                              tuple(str(a) for a in v.get("aliases", ()))))
        else:
            raise XlcrmError(f"{where}: each choice is a string or {{ja=..., en=...}}, got {v!r}")
    if not out:
        raise XlcrmError(f"{where}: a choice list needs at least one value")
    return tuple(out)


def _custom_column(spec: Mapping[str, Any], where: str, keys: set[str], labels: set[str]) -> Column:
    if not isinstance(spec, Mapping) or ("label" not in spec and "ja" not in spec):
        raise XlcrmError(f"{where}: a custom column needs label = \"...\" (and type = \"text\" ...)")
    ja = str(spec.get("ja", spec.get("label")))
    en = str(spec.get("en", ja))
    # A stable key derived from the label's code points, so the master's column survives restarts.
    key = str(spec.get("key") or "x_" + "".join(
        ch if ch.isascii() and ch.isalnum() else f"{ord(ch):x}" for ch in ja)[:40])
    if key in keys or ja in labels or en in labels:
        raise XlcrmError(f"{where}: column {ja!r} already exists on this sheet")
    tname = str(spec.get("type", "text"))
    ctype = _CUSTOM_TYPES.get(tname)
    if ctype is None:
        raise XlcrmError(f"{where}: unknown type {tname!r}; use one of {sorted(_CUSTOM_TYPES)}")
    choices: tuple[Choice, ...] = ()
    if ctype == "choice":
        choices = _parse_choices(spec.get("choices", ()), where)
    elif "choices" in spec:
        raise XlcrmError(f"{where}: choices given but type is {tname!r}; use type = \"choice\"")
    return Column(key, ja, en, ctype, required=bool(spec.get("required", False)), custom=True,
                  choices=choices, choice_list=key, min=spec.get("min"), max=spec.get("max"),
                  max_length=spec.get("max_length"), help_ja=str(spec.get("help", "")),
                  help_en=str(spec.get("help_en", spec.get("help", ""))),
                  search=bool(spec.get("search", False)))


DEFAULT_SCHEMA = build_schema({})
