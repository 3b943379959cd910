"""A realistic small sales team in Excel, generated, so people can try xlcrm before typing anything.

Four staff workbooks (three Japanese, one English: a team may mix languages) with companies and
individuals, contact persons, visits and calls, inquiries and complaints with the response given,
deals at every stage and TODOs, all dated relative to ``today`` so the demo looks current.

The realities xlcrm exists for are planted on purpose and listed in module-level tables, so tests,
the demo output and the docs can point at them:

* :data:`SHARED_CUSTOMERS`: the same customer entered by two or three people, spelled differently
  (株式会社 / ㈱ / (株), hyphens, full-width digits, e-mail case, another phone number).
* :data:`PLANTED_MISTAKES`: a few typical entry mistakes per workbook, each at a known row.  Some are
  only variations that normalisation absorbs (``expect="fine"``) — the demo shows that those are *not*
  reported.

Everything is drawn from ``random.Random(seed)`` (no Faker at runtime), and driven by the schema:
column keys and choice keys come from :mod:`xlcrm.schema`; a column an admin switched off is simply
not filled, and a mistake planted in it is dropped from the plan.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from xlcrm.demo.fakedata import (
    DEPARTMENTS,
    PRODUCTS,
    TITLES,
    Faker,
    corporate_number,
    spoil_check_digit,
    to_fullwidth,
    to_wareki,
)
from xlcrm.intake.importer import import_sources
from xlcrm.master.distribute import distribute
from xlcrm.schema import CLOSED_PHASES, Entity, Lang, Schema
from xlcrm.store import db, outputs
from xlcrm.store.url import refuse_server, store_url
from xlcrm.views.history import customer_history
from xlcrm.views.search import search

Row = dict[str, Any]


# --- the team -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Staff:
    file: str  # file stem: <file>.xlsx
    owner: str
    lang: Lang


TEAM: tuple[Staff, ...] = (
    Staff("sato", "佐藤 健一", "ja"),
    Staff("suzuki", "鈴木 美咲", "ja"),
    Staff("takahashi", "高橋 大輔", "ja"),
    Staff("tanaka", "Tanaka Shota", "en"),
)

#: Customers per workbook (shared customers included).
CUSTOMERS_PER_WORKBOOK = (25, 40)

#: Planted customer mistakes live in the first rows; shared customers are placed after them.
_FIRST_SHARED_INDEX = 8

#: Named by the planted "unknown customer" reference; no workbook contains it.
UNKNOWN_CUSTOMER = "株式会社ミライ技研"


# --- planted realities --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SharedCustomer:
    """One real customer that several staff entered, each in their own way."""

    key: str
    why: str
    #: Column values common to every copy (canonical).
    common: Mapping[str, Any]
    #: file stem -> the values that person typed (raw, as they reach the cell).
    variants: Mapping[str, Mapping[str, Any]]


_CN_YAMADA = corporate_number("011001023456")
_CN_SAKURA = corporate_number("120001098765")

SHARED_CUSTOMERS: tuple[SharedCustomer, ...] = (
    SharedCustomer(
        "yamada_seiki", "株式会社 / ㈱ / (株); phone with, without hyphens and full-width; e-mail case",
        {"kind": "corporate", "kana": "ヤマダセイキ", "industry": "manufacturing", "employees": 48,
         "postal_code": "143-0006", "prefecture": "東京都", "address": "大田区平和島3-5-12"},
        {"sato": {"name": "株式会社山田精機", "phone": "03-3761-2841", "email": "info@yamada-seiki.co.jp",
                  "corporate_number": _CN_YAMADA},
         "suzuki": {"name": "㈱山田精機", "phone": "0337612841", "email": "Info@Yamada-Seiki.co.jp",
                    "corporate_number": _CN_YAMADA},
         "takahashi": {"name": "(株)山田精機", "kana": "やまだせいき", "phone": "０３－３７６１－２８４１"}},
    ),
    SharedCustomer(
        "sakura_shoji", "same 法人番号; another phone number (a second line); e-mail case",
        {"kind": "corporate", "kana": "サクラショウジ", "industry": "wholesale", "employees": 120,
         "postal_code": "530-0001", "prefecture": "大阪府", "address": "大阪市北区梅田2-4-9",
         "corporate_number": _CN_SAKURA},
        {"suzuki": {"name": "さくら商事株式会社", "phone": "06-6312-4577", "email": "sales@sakura-shoji.co.jp"},
         "tanaka": {"name": "さくら商事㈱", "phone": "06-6312-4500", "email": "SALES@sakura-shoji.co.jp"}},
    ),
    SharedCustomer(
        "nakamura_yumi", "an individual: half/full-width space in the name, hiragana kana, phone hyphens",
        {"kind": "individual", "birthday": date(1984, 7, 15), "postal_code": "220-0012",
         "prefecture": "神奈川県", "address": "横浜市西区みなとみらい4-3-8"},
        {"sato": {"name": "中村 由美", "kana": "ナカムラ ユミ", "phone": "090-2745-8812",
                  "email": "yumi.nakamura@example.ne.jp"},
         "takahashi": {"name": "中村\u3000由美", "kana": "なかむら ゆみ", "phone": "09027458812",
                       "email": "Yumi.Nakamura@example.ne.jp"}},
    ),
    SharedCustomer(
        "matsumoto_komuten", "有限会社 / (有); e-mail case",
        {"kind": "corporate", "kana": "マツモトコウムテン", "industry": "construction", "employees": 9,
         "postal_code": "220-0004", "prefecture": "神奈川県", "address": "横浜市西区北幸1-8-2",
         "phone": "045-862-3310"},
        {"takahashi": {"name": "有限会社松本工務店", "email": "info@matsumoto-komuten.jp"},
         "tanaka": {"name": "(有)松本工務店", "email": "INFO@matsumoto-komuten.jp"}},
    ),
    SharedCustomer(
        "hokuto_denki", "probable only: same reading and address written two ways, but another phone "
        "and no e-mail or 法人番号 — a person decides on 重複候補",
        {"kind": "corporate", "kana": "ホクトデンキ", "industry": "retail", "postal_code": "060-0001",
         "prefecture": "北海道"},
        {"sato": {"name": "北斗電機株式会社", "address": "札幌市中央区北1条西2-1", "phone": "011-231-4410"},
         "suzuki": {"name": "ホクト電機", "address": "札幌市中央区北一条西2丁目1番", "phone": "011-231-4455"}},
    ),
)


#: Names without legal form (Faker's uniqueness key) that random customers must not take.
SHARED_NAME_KEYS = frozenset({"山田精機", "さくら商事", "松本工務店", "中村 由美", "ミライ技研", "北斗電機",
                              "ホクト電機"})


@dataclass(frozen=True)
class Plant:
    """A deliberate entry mistake: ``entity`` row ``index`` (0-based data row) of ``file``, ``column``."""

    file: str
    entity: str
    index: int
    column: str
    kind: str
    #: "error": validation must report this cell; "fine": only needs normalising, must not be an error.
    expect: Literal["error", "fine"]
    why: str


PLANTED_MISTAKES: tuple[Plant, ...] = (
    Plant("sato", "customers", 2, "phone", "phone.leading_zero", "error",
          "typed as a number, so Excel dropped the leading 0"),
    Plant("sato", "activities", 3, "date", "date.wareki", "fine", "a 和暦 (era) date such as R6.4.1"),
    Plant("sato", "deals", 1, "amount", "amount.mismatch", "error", "金額 is tax-included, not 数量×単価"),
    Plant("sato", "activities", 5, "response", "complaint.no_response", "error",
          "a complaint without 対応内容"),
    Plant("suzuki", "customers", 3, "phone", "phone.fullwidth", "fine", "full-width digits and hyphens"),
    Plant("suzuki", "activities", 2, "date", "date.impossible", "error", "February 30th"),
    Plant("suzuki", "activities", 6, "category", "inquiry.no_category", "error", "an inquiry without 分類"),
    Plant("suzuki", "customers", 5, "corporate_number", "corporate_number.check_digit", "error",
          "法人番号 with a wrong check digit"),
    Plant("suzuki", "customers", 7, "notes", "text.formula_like", "fine",
          "text starting with '=' typed as text: data, never a formula"),
    Plant("takahashi", "customers", 4, "email", "email.invalid", "error", "a comma instead of a dot"),
    Plant("takahashi", "activities", 4, "customer", "ref.unknown", "error",
          f"names a customer that is not in the workbook ({UNKNOWN_CUSTOMER})"),
    Plant("takahashi", "customers", 6, "name", "required.blank", "error", "顧客名 left blank"),
    Plant("takahashi", "todos", 2, "done_on", "todo.done_without_date", "error", "完了 without 完了日"),
    Plant("tanaka", "customers", 2, "phone", "phone.leading_zero", "error", "typed as a number, so Excel dropped the leading 0"),
    Plant("tanaka", "deals", 0, "amount", "amount.mismatch", "error", "金額 is tax-included"),
    Plant("tanaka", "activities", 3, "category", "inquiry.no_category", "error", "an inquiry without 分類"),
    Plant("tanaka", "customers", 4, "email", "email.invalid", "error", "a comma instead of a dot"),
)

#: Columns (besides the planted one) a plant needs in the schema to be meaningful.
_PLANT_NEEDS: dict[str, tuple[str, ...]] = {
    "amount.mismatch": ("quantity", "unit_price", "amount"),
    "complaint.no_response": ("response",),
    "inquiry.no_category": ("category",),
    "todo.done_without_date": ("status", "done_on"),
}


# --- the plan: canonical rows plus the raw planted values -----------------------------------------------

@dataclass
class PlantedCell:
    plant: Plant
    #: The raw value written into the cell (None = left blank).
    value: Any
    #: Excel row (header row + 1 + index); set when the workbook layout is known.
    row: int = 0


@dataclass
class StaffPlan:
    staff: Staff
    #: entity key -> rows of {column key: value}; canonical except the planted cells and variants.
    rows: dict[str, list[Row]]
    planted: list[PlantedCell] = field(default_factory=list)
    #: SharedCustomer.key -> index in rows["customers"]
    shared: dict[str, int] = field(default_factory=dict)

    @property
    def path_name(self) -> str:
        return f"{self.staff.file}.xlsx"


@dataclass
class TeamPlan:
    seed: int
    today: date
    workbooks: list[StaffPlan]

    @property
    def planted(self) -> list[tuple[StaffPlan, PlantedCell]]:
        return [(wb, pc) for wb in self.workbooks for pc in wb.planted]


def plan_team(schema: Schema, *, seed: int = 7, today: date | None = None) -> TeamPlan:
    """The demo team's rows, without writing anything (tests compare files against this)."""
    today = today or date.today()
    rng = random.Random(seed)
    fk = Faker(rng)
    # Reserve the shared customers' identifiers so no random customer duplicates them by accident.
    for sc in SHARED_CUSTOMERS:
        for v in sc.variants.values():
            for k in ("phone", "email", "corporate_number"):
                for val in (v.get(k), sc.common.get(k)):
                    if isinstance(val, str):
                        fk.reserved.add(val.lower() if k == "email" else val)
    fk.reserved.update(SHARED_NAME_KEYS)
    workbooks = [_StaffBuilder(schema, staff, fk, random.Random(f"{seed}:{staff.file}"), today).build()
                 for staff in TEAM]
    return TeamPlan(seed, today, workbooks)


class _StaffBuilder:
    def __init__(self, schema: Schema, staff: Staff, fk: Faker, rng: random.Random, today: date) -> None:
        self.schema, self.staff, self.fk, self.rng, self.today = schema, staff, fk, rng, today
        self.lang = staff.lang
        self.plants = {(p.entity, p.index): p for p in PLANTED_MISTAKES
                       if p.file == staff.file and self._applicable(p)}
        self.planted: list[PlantedCell] = []

    def _applicable(self, p: Plant) -> bool:
        e = self.schema.entity(p.entity)
        return all(e.has(c) for c in (p.column, *_PLANT_NEEDS.get(p.kind, ())))

    # Choice keys come from the schema: an admin may have replaced a list in xlcrm.toml.
    def choice(self, entity: str, column: str, preferred: str | None = None) -> str | None:
        e = self.schema.entity(entity)
        if not e.has(column):
            return None
        keys = [c.key for c in e.column(column).choices]
        if preferred in keys:
            return preferred
        return self.rng.choice(keys) if keys else None

    def t(self, ja: str, en: str) -> str:
        return ja if self.lang == "ja" else en

    def build(self) -> StaffPlan:
        n = self.rng.randint(*CUSTOMERS_PER_WORKBOOK)
        shared = [sc for sc in SHARED_CUSTOMERS if self.staff.file in sc.variants]
        slots: list[SharedCustomer | None] = [None] * (n - len(shared))
        shared_at: dict[str, int] = {}
        for sc in shared:
            pos = self.rng.randint(_FIRST_SHARED_INDEX, len(slots))
            slots.insert(pos, sc)
        customers: list[Row] = []
        children: dict[str, list[Row]] = {"contacts": [], "activities": [], "deals": [], "todos": []}
        for i, slot in enumerate(slots):
            if slot is None:
                cust, contacts = self.customer(i)
            else:
                cust, contacts = self.shared_customer(slot)
                shared_at[slot.key] = i
            customers.append(cust)
            if cust.get("name") is None:
                continue  # the planted blank-name row: nothing can refer to it
            children["contacts"] += contacts
            deals = self.deals(cust)
            children["deals"] += deals
            children["activities"] += self.activities(cust, contacts)
            children["todos"] += self.todos(cust)
            cust["status"] = self.choice("customers", "status", self.status(deals))
        children["activities"].sort(key=lambda r: r["date"])
        children["todos"].sort(key=lambda r: r["due"])
        rows = {"customers": customers, **children}
        for (entity, index), plant in sorted(self.plants.items()):
            if entity != "customers":
                if index >= len(rows[entity]):
                    raise RuntimeError(f"demo plan: {self.staff.file} has only {len(rows[entity])} {entity} "
                                       f"rows, cannot plant at {index}")
                self.planted.append(PlantedCell(plant, self.apply(plant, rows[entity][index])))
        self.planted.sort(key=lambda pc: (pc.plant.entity, pc.plant.index))
        fitted = {e.key: [self.fit(e, r) for r in rows.get(e.key, [])] for e in self.schema}
        return StaffPlan(self.staff, fitted, self.planted, shared_at)

    def fit(self, e: Entity, row: Row) -> Row:
        """Keep the schema's columns only; give required custom columns a plausible value."""
        out = {k: row[k] for k in e.keys if k in row}
        for c in e.columns:
            if c.custom and c.required and out.get(c.key) is None:
                if c.type == "choice":
                    out[c.key] = c.choices[0].key
                elif c.type == "date":
                    out[c.key] = self.today
                elif c.type in ("int", "decimal"):
                    out[c.key] = int(c.min or 1)
                else:
                    out[c.key] = self.t("特になし", "none")
        return out

    # --- customers ----------------------------------------------------------------------------------

    def customer(self, index: int) -> tuple[Row, list[Row]]:
        fk, rng = self.fk, self.rng
        plant = self.plants.get(("customers", index))
        corporate = rng.random() < 0.68 or (plant is not None and plant.column == "corporate_number")
        place = fk.place()
        row: Row = {"postal_code": place.postal_code, "prefecture": self.choice("customers", "prefecture",
                                                                               place.prefecture),
                    "address": place.address, "owner": self.staff.owner,
                    "dm_consent": self.choice("customers", "dm_consent",
                                              rng.choices(("yes", "no", "unknown"), (50, 15, 35))[0]),
                    "source": self.choice("customers", "source")}
        contacts: list[Row] = []
        if corporate:
            co = fk.company()
            name = co.name
            if rng.random() < 0.15 and co.form in ("kabushiki", "yugen"):  # people do type ㈱ and (株)
                short = rng.choice({"kabushiki": ("㈱", "(株)"), "yugen": ("(有)",)}[co.form])
                legal = "株式会社" if co.form == "kabushiki" else "有限会社"
                name = name.replace(legal, short)
            phone = fk.phone(place.area_code)
            row.update(kind=self.choice("customers", "kind", "corporate"), name=name, kana=co.kana,
                       industry=self.choice("customers", "industry", co.industry),
                       employees=rng.choice((3, 5, 8, 12, 20, 35, 50, 80, 120, 300, 1200)),
                       phone=phone, email=fk.email(rng.choice(("info", "contact", "sales")), co.domain),
                       website=f"https://www.{co.domain}/")
            if rng.random() < 0.85 or (plant is not None and plant.column == "corporate_number"):
                row["corporate_number"] = fk.corporate_number(co.form)
            if rng.random() < 0.6:
                row["fax"] = fk.fax_for(phone)
            for _ in range(rng.choices((1, 2, 3), (65, 30, 5))[0]):
                contacts.append(self.contact(name, co.domain, phone))
        else:
            p = fk.person()
            row.update(kind=self.choice("customers", "kind", "individual"), name=p.name, kana=p.kana,
                       phone=fk.mobile() if rng.random() < 0.8 else fk.phone(place.area_code))
            if rng.random() < 0.75:
                row["email"] = fk.personal_email(p)
            if rng.random() < 0.6:
                row["birthday"] = fk.date_between(self.today - timedelta(days=80 * 365),
                                                  self.today - timedelta(days=20 * 365))
        if rng.random() < 0.3:
            row["notes"] = rng.choice(self.NOTES)[0 if self.lang == "ja" else 1]
        if plant is not None:
            self.planted.append(PlantedCell(plant, self.apply(plant, row)))
        return row, contacts

    NOTES = (("支払は月末締め翌月末払い", "Pays at the end of the following month"),
             ("年末は繁忙期のため訪問不可", "No visits in December (busy season)"),
             ("駐車場あり（2台）", "Parking for 2 cars"), ("紹介元: 既存顧客", "Referred by a customer"),
             ("電話は午前中が望ましい", "Prefers calls in the morning"),
             ("担当者が4月に異動予定", "Contact moves to another post in April"))

    def shared_customer(self, sc: SharedCustomer) -> tuple[Row, list[Row]]:
        row: Row = {"owner": self.staff.owner, "source": self.choice("customers", "source", "referral"),
                    "dm_consent": self.choice("customers", "dm_consent", "unknown")}
        for k, v in {**sc.common, **sc.variants[self.staff.file]}.items():
            row[k] = self.choice("customers", k, v) if k in ("kind", "industry", "prefecture") else v
        contacts: list[Row] = []
        if sc.common.get("kind") == "corporate":
            domain = str(row.get("email", "@example.co.jp")).split("@")[1].lower()
            contacts.append(self.contact(row["name"], domain, None))
        return row, contacts

    def contact(self, customer: str, domain: str, phone: str | None) -> Row:
        fk, rng = self.fk, self.rng
        p = fk.person()
        dept, title = rng.choice(DEPARTMENTS), rng.choice(TITLES)
        row: Row = {"customer": customer, "name": p.name, "kana": p.kana,
                    "department": self.t(*dept), "title": self.t(*title),
                    "dm_consent": self.choice("contacts", "dm_consent",
                                              rng.choices(("yes", "no", "unknown"), (40, 10, 50))[0])}
        if rng.random() < 0.5:
            row["mobile"] = fk.mobile()
        if phone is None or rng.random() < 0.3:
            row["email"] = fk.email(f"{p.romaji_given[0]}.{p.romaji_surname}", domain)
        else:
            row["email"] = fk.email(f"{p.romaji_surname}", domain)
        return row

    # --- deals --------------------------------------------------------------------------------------

    PROBABILITY: ClassVar[dict[str, tuple[int, int]]] = {"lead": (10, 20), "proposal": (30, 40), "quote": (50, 60), "negotiation": (70, 80),
                   "won": (100, 100), "lost": (0, 0)}

    def deals(self, cust: Row) -> list[Row]:
        rng, today = self.rng, self.today
        corporate = cust.get("kind") == "corporate"
        n = rng.choices((0, 1, 2, 3), (25, 40, 25, 10) if corporate else (40, 45, 15, 0))[0]
        products = [p for p in PRODUCTS if p[5] == corporate]
        out: list[Row] = []
        for _ in range(n):
            ja, en, price, (qlo, qhi), subscription, _corp = rng.choice(products)
            phase = rng.choices(("lead", "proposal", "quote", "negotiation", "won", "lost"),
                                (15, 12, 12, 10, 35, 16))[0]
            qty = rng.randint(qlo, qhi)
            unit = int(round(price * rng.choice((1, 1, 1, 0.95, 0.9)), -2))
            suffix = rng.choice((("導入", "new"), ("追加", "additional"), ("更新", "renewal"),
                                 ("入替", "replacement")))
            row: Row = {"customer": cust["name"], "title": f"{ja} {suffix[0]}" if self.lang == "ja"
                        else f"{en} ({suffix[1]})", "product": self.t(ja, en),
                        "phase": self.choice("deals", "phase", phase),
                        "probability": rng.randint(*self.PROBABILITY[phase]), "owner": self.staff.owner}
            if rng.random() < 0.85:
                row.update(quantity=qty, unit_price=unit, amount=qty * unit)
            else:
                row["amount"] = qty * unit  # only a lump sum agreed
            if phase in CLOSED_PHASES:
                closed = today - timedelta(days=rng.randint(1, 400))
                row["closed_on"] = closed
                if rng.random() < 0.6:
                    row["expected_close"] = closed + timedelta(days=rng.randint(-14, 14))
                if phase == "won":
                    row["payment_method"] = self.choice("deals", "payment_method")
                    if subscription:
                        renewal = closed + timedelta(days=365)
                        row["renewal_date"] = renewal
                        if renewal < today and rng.random() < 0.3:
                            row["cancel_date"] = renewal
            else:
                row["expected_close"] = today + timedelta(days=rng.randint(7, 150))
            out.append(row)
        return out

    def status(self, deals: list[Row]) -> str:
        phases = {d["phase"] for d in deals}
        if phases - set(CLOSED_PHASES):
            return "negotiating"
        if "won" in phases:
            recent = any(d["phase"] == "won" and (self.today - d["closed_on"]).days < 365 for d in deals)
            return "active" if recent else "dormant"
        if "lost" in phases:
            return "lost"
        return "dormant" if self.rng.random() < 0.15 else "prospect"

    # --- activities ---------------------------------------------------------------------------------

    #: type -> (ja, en) templates; {p} = a product
    TEXTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "call": (("{p}の件で電話。来週訪問のアポイントを取得。", "Called about the {p}; booked a visit next week."),
                 ("見積内容の確認の電話。", "Call to go through the quote."),
                 ("納品日の調整の電話。", "Call to agree the delivery date.")),
        "email": (("見積書をメールで送付。", "Sent the quote by e-mail."),
                  ("{p}の資料を送付。", "Sent the {p} brochure.")),
        "visit": (("訪問し{p}のデモを実施。", "Visited and demonstrated the {p}."),
                  ("定期訪問。近況を伺う。", "Regular visit; caught up on their plans.")),
        "meeting": (("{p}の提案。決裁者同席。", "Proposed the {p} with the decision maker."),
                    ("価格と納期の条件交渉。", "Negotiated price and delivery terms.")),
        "store_visit": (("来店。{p}について相談。", "Came to the shop to ask about the {p}."),),
        "survey": (("満足度アンケートを回収（満足）。", "Satisfaction survey returned (satisfied)."),),
        "event": (("新製品セミナーに参加いただく。", "Attended our new-product seminar."),),
        "other": (("年賀状を送付。", "Sent a New Year card."),),
    }
    #: (category, content ja/en, response ja/en, result)
    INQUIRIES = (
        ("delivery", ("{p}の納期について問い合わせ。", "Asked when the {p} can be delivered."),
         ("在庫を確認し、2週間で納品可能と回答。", "Checked stock; told them two weeks."), "resolved"),
        ("price", ("{p}の価格について問い合わせ。", "Asked about the price of the {p}."),
         ("見積書を作成して送付。", "Prepared and sent a quote."), "resolved"),
        ("product", ("{p}の仕様について問い合わせ。", "Asked about the {p} specifications."),
         ("カタログを送付し仕様を説明。", "Sent the catalogue and explained."), "resolved"),
        ("service", ("保守サービスの範囲について問い合わせ。", "Asked what the support contract covers."),
         ("保守契約の範囲を説明。後日資料送付。", "Explained the scope; documents to follow."), "in_progress"),
    )
    COMPLAINTS = (
        ("product", ("納品された{p}に傷があるとのご指摘。", "The delivered {p} was scratched."),
         ("翌日交換品を手配し、お詫びに訪問。", "Sent a replacement next day and visited to apologise."),
         "resolved"),
        ("delivery", ("{p}の納品が予定より3日遅れた。", "The {p} arrived three days late."),
         ("お詫びし、配送業者と再発防止策を確認。", "Apologised and agreed a fix with the carrier."),
         "resolved"),
        ("price", ("請求金額が見積と違うとのご指摘。", "The invoice did not match the quote."),
         ("請求書を訂正して再発行。", "Corrected and reissued the invoice."), "resolved"),
        ("service", ("サポート窓口に電話がつながらない。", "Could not reach our support line."),
         ("担当直通番号を案内し、折り返し対応。", "Gave the direct number and called back."), "in_progress"),
    )

    def activities(self, cust: Row, contacts: list[Row]) -> list[Row]:
        rng, today = self.rng, self.today
        corporate = cust.get("kind") == "corporate"
        weights = {"call": 25, "email": 15, "visit": 15 if corporate else 0,
                   "store_visit": 0 if corporate else 12, "meeting": 10 if corporate else 3,
                   "inquiry": 12, "complaint": 6, "survey": 3, "event": 3, "other": 2}
        out = []
        for _ in range(rng.choices(range(7), (10, 20, 22, 18, 14, 10, 6))[0]):
            kind = rng.choices(list(weights), list(weights.values()))[0]
            out.append(self.activity(cust["name"], kind, contacts,
                                     today - timedelta(days=rng.randint(0, 420))))
        return out

    def activity(self, customer: str, kind: str, contacts: list[Row], when: date) -> Row:
        rng = self.rng
        product = self.t(*rng.choice([(p[0], p[1]) for p in PRODUCTS]))
        row: Row = {"date": when, "customer": customer, "type": self.choice("activities", "type", kind),
                    "handled_by": self.staff.owner}
        if contacts and rng.random() < 0.8:
            row["contact"] = rng.choice(contacts)["name"]
        if kind in ("inquiry", "complaint"):
            cat, content, response, result = rng.choice(self.INQUIRIES if kind == "inquiry" else self.COMPLAINTS)
            row.update(category=self.choice("activities", "category", cat),
                       content=self.t(*content).format(p=product), response=self.t(*response),
                       result=self.choice("activities", "result", result))
        else:
            row["content"] = self.t(*rng.choice(self.TEXTS[kind])).format(p=product)
            if rng.random() < 0.2:
                row["result"] = self.choice("activities", "result", "resolved")
        return row

    # --- todos --------------------------------------------------------------------------------------

    TODO_TEXTS = (("見積書を送付する", "Send the quote"), ("デモの日程を調整する", "Schedule the demo"),
                  ("契約書を郵送する", "Post the contract"), ("入金を確認する", "Check the payment"),
                  ("お礼状を送る", "Send a thank-you letter"), ("定期訪問のアポを取る", "Book the regular visit"),
                  ("再発防止策を報告する", "Report the corrective action"), ("カタログを持参する", "Bring the catalogue"))

    def todos(self, cust: Row) -> list[Row]:
        rng, today = self.rng, self.today
        out = []
        for _ in range(rng.choices((0, 1, 2), (50, 38, 12))[0]):
            due = today + timedelta(days=rng.randint(-40, 60))
            if due < today:
                status = rng.choices(("done", "todo", "doing"), (70, 18, 12))[0]  # some overdue
            else:
                status = rng.choices(("todo", "doing", "done"), (70, 25, 5))[0]
            row: Row = {"due": due, "customer": cust["name"], "content": self.t(*rng.choice(self.TODO_TEXTS)),
                        "assignee": self.staff.owner, "status": self.choice("todos", "status", status)}
            if status == "done":
                row["done_on"] = min(today, due + timedelta(days=rng.randint(-5, 2)))
            out.append(row)
        return out

    # --- planting -----------------------------------------------------------------------------------

    def apply(self, plant: Plant, row: Row) -> Any:
        """Spoil ``row`` as ``plant`` says; return the raw value that will reach the planted cell."""
        fk, today, kind = self.fk, self.today, plant.kind
        if kind.startswith("phone.") and not row.get("phone"):
            row["phone"] = fk.mobile()
        if kind == "phone.leading_zero":
            row["phone"] = int(str(row["phone"]).replace("-", ""))
        elif kind == "phone.fullwidth":
            row["phone"] = to_fullwidth(row["phone"])
        elif kind == "date.wareki":
            row["date"] = to_wareki(row["date"])
        elif kind == "date.impossible":
            row["date"] = f"{row['date'].year}/2/30"
        elif kind == "complaint.no_response":
            product = self.t(PRODUCTS[0][0], PRODUCTS[0][1])
            cat, content, _response, _result = self.COMPLAINTS[0]
            row.update(type=self.choice("activities", "type", "complaint"),
                       category=self.choice("activities", "category", cat),
                       content=self.t(*content).format(p=product), response=None,
                       result=self.choice("activities", "result", "in_progress"))
        elif kind == "inquiry.no_category":
            _cat, content, response, result = self.INQUIRIES[1]
            row.update(type=self.choice("activities", "type", "inquiry"), category=None,
                       content=self.t(*content).format(p=self.t(PRODUCTS[2][0], PRODUCTS[2][1])),
                       response=self.t(*response), result=self.choice("activities", "result", result))
        elif kind == "amount.mismatch":
            if row.get("quantity") is None:
                row["quantity"], row["unit_price"] = 2, int(row["amount"]) // 2 or 1000
            row["amount"] = round(row["quantity"] * row["unit_price"] * 1.1)  # 税込 typed into 金額
        elif kind == "email.invalid":
            if not row.get("email"):
                row["email"] = fk.email("info", "example.co.jp")
            local, domain = str(row["email"]).split("@")
            row["email"] = f"{local}@{domain.replace('.', ',', 1)}"
        elif kind == "corporate_number.check_digit":
            row["corporate_number"] = spoil_check_digit(row["corporate_number"])
        elif kind == "ref.unknown":
            row.update(customer=UNKNOWN_CUSTOMER, contact=None)
        elif kind == "required.blank":
            row["name"] = None
        elif kind == "todo.done_without_date":
            row.update(status=self.choice("todos", "status", "done"), done_on=None,
                       due=min(row["due"], today - timedelta(days=3)))
        elif kind == "text.formula_like":
            row["notes"] = self.t("=前回と同条件で見積", "=same terms as the last order")
        else:  # pragma: no cover - a new Plant kind without its implementation
            raise ValueError(f"unknown plant kind {kind}")
        return row.get(plant.column)


# --- writing ------------------------------------------------------------------------------------------

def generate_team(out_dir: Path, schema: Schema, *, seed: int = 7, today: date | None = None) -> list[Path]:
    """Write the demo team's workbooks into ``out_dir``; return their paths (TEAM order)."""
    return write_plan(plan_team(schema, seed=seed, today=today), Path(out_dir), schema)


def write_plan(plan: TeamPlan, out_dir: Path, schema: Schema) -> list[Path]:
    from xlcrm.intake.template import write_team_workbook

    out_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.combine(plan.today, time(9, 0))
    paths = []
    for wb in plan.workbooks:
        path = out_dir / wb.path_name
        write_team_workbook(path, schema, owner=wb.staff.owner, lang=wb.staff.lang, rows=wb.rows,
                            workbook_id="", created=created)
        paths.append(path)
    _locate_planted(plan, paths, schema)
    return paths


def _locate_planted(plan: TeamPlan, paths: list[Path], schema: Schema) -> None:
    """Turn each planted data-row index into the Excel row, from the header row actually written."""
    from xlcrm.xlsx.reader import read_workbook

    for wb, path in zip(plan.workbooks, paths, strict=True):
        if not wb.planted:
            continue
        book = read_workbook(path, schema)
        for pc in wb.planted:
            pc.row = book.sheets[pc.plant.entity].header_row + 1 + pc.plant.index


# --- a list kept outside xlcrm, brought in with `xlcrm import` ---------------------------------------

#: The customer list a salesperson kept in their own layout before xlcrm: a title row and a blank row
#: above the header, the address in two columns, a last-visit date, a notes column with a line break
#: and a totals row.  The demo brings it in with :func:`xlcrm.intake.importer.import_sources`.
LEGACY_FILE = "顧客リスト_旧.xlsx"
LEGACY_TITLE = "顧客リスト（旧・佐藤）"
LEGACY_HEADER = ("会社名", "部署", "担当者名", "TEL", "〒", "住所1", "住所2", "最終訪問日", "メモ")
LEGACY_ROWS: tuple[tuple[Any, ...], ...] = (
    ("瑞穂精工株式会社", "営業部", "小野寺 亮", "022-215-7788", "980-0021", "宮城県仙台市青葉区中央2-1",
     "瑞穂ビル4F", 120, "年2回の定期点検\n次回は見積持参"),
    ("(株)白鷺ロジテック", "物流部", "河合 真理", "078-331-2040", "650-0021", "兵庫県神戸市中央区三宮町1-5",
     None, 45, None),
    ("琴平醸造合資会社", None, "大西 徹", "0877-75-2211", "766-0001", "香川県仲多度郡琴平町600", None, None,
     "紹介: 瑞穂精工 小野寺様"),
    ("紅葉木材有限会社", "総務課", "森 千尋", "0246-22-7310", "970-8026", "福島県いわき市平字田町3",
     "紅葉会館2F", 300, None),
)


def write_legacy_list(path: Path, today: date) -> Path:
    """The legacy list as the salesperson formatted it (最終訪問日 counted back from ``today``)."""
    import xlsxwriter

    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False, "strings_to_formulas": False})
    ws = wb.add_worksheet("顧客リスト")
    bold = wb.add_format({"bold": True})
    day = wb.add_format({"num_format": "yyyy/m/d"})
    ws.write_string(0, 0, LEGACY_TITLE, bold)
    for c, h in enumerate(LEGACY_HEADER):
        ws.write_string(2, c, h, bold)
    for r, row in enumerate(LEGACY_ROWS, start=3):
        for c, v in enumerate(row):
            if v is None:
                continue
            if LEGACY_HEADER[c] == "最終訪問日":
                ws.write_datetime(r, c, datetime.combine(today - timedelta(days=int(v)), time()), day)
            else:
                ws.write_string(r, c, str(v))
    ws.write_string(3 + len(LEGACY_ROWS), 0, "合計")
    ws.write_string(3 + len(LEGACY_ROWS), 1, f"{len(LEGACY_ROWS)}社")
    wb.close()
    return path


# --- the demo command ---------------------------------------------------------------------------------

@dataclass
class DemoResult:
    out_dir: Path
    files: list[Path]
    plan: TeamPlan
    #: file -> ValidationResult (empty when xlcrm.intake.validate is not available)
    validation: dict[Path, Any] = field(default_factory=dict)
    #: (step, what happened) in order, for the CLI and tests
    steps: list[tuple[str, str]] = field(default_factory=list)
    master: Path | None = None
    #: Workbooks ``xlcrm import`` made of the legacy list (merged with the team's).
    imported: list[Path] = field(default_factory=list)


def run_demo(out_dir: Path, schema: Schema, *, today: date | None = None, console: Any = None,
             seed: int = 7, force: bool = False) -> DemoResult:
    """Generate the team, validate it, and tell the user what happened and where the files are.

    The staff workbooks replace files in ``out_dir`` only where they are an earlier demo's, unchanged,
    or with ``force`` (a copy is kept beside each): :mod:`xlcrm.store.outputs`.
    """
    from rich.console import Console

    from xlcrm.terminal import add_whole_column, narrow_table

    refuse_server(store_url(schema), "demo")  # its master is master.db in out_dir: not a server's
    console = console or Console()
    out_dir = Path(out_dir)
    today = today or date.today()
    plan = plan_team(schema, seed=seed, today=today)
    claim = outputs.claim([out_dir / wb.path_name for wb in plan.workbooks], "demo", force=force)
    with contextlib.ExitStack() as stack:
        for wb in plan.workbooks:
            stack.enter_context(claim.write(out_dir / wb.path_name))
        files = write_plan(plan, out_dir, schema)
    result = DemoResult(out_dir, files, plan)
    result.steps.append(("generate", f"{len(files)} staff workbooks in {out_dir}"))

    files_table = narrow_table("チームのブック / Team workbooks")
    rows = [(path.name, wb.staff.owner, wb.staff.lang, *(str(len(wb.rows.get(e.key, []))) for e in schema))
            for wb, path in zip(plan.workbooks, files, strict=True)]
    for i, col in enumerate(("file", "owner", "lang", *(e.key for e in schema))):
        add_whole_column(files_table, col, (r[i] for r in rows), justify="right" if i >= 3 else "left")
    for r in rows:
        files_table.add_row(*r)
    console.print(files_table)

    from xlcrm.intake.validate import validate_workbook

    for path in files:
        result.validation[path] = validate_workbook(path, schema, today=today)
    n_err = sum(1 for r in result.validation.values() for f in r.findings if f.severity == "error")
    n_warn = sum(1 for r in result.validation.values() for f in r.findings if f.severity == "warning")
    result.steps.append(("validate", f"{n_err} errors, {n_warn} warnings (the planted mistakes below)"))

    planted = narrow_table("仕込んだ入力ミス / Planted entry mistakes")
    rows = []
    for wb, pc in plan.planted:
        entity = schema.entity(pc.plant.entity)
        found = _findings_at(result, out_dir / wb.path_name, pc)
        verdict = ", ".join(found) or "nothing reported"
        rows.append((wb.path_name, f"{entity.label(wb.staff.lang)} {pc.row} "
                     f"{entity.column(pc.plant.column).label(wb.staff.lang)}", repr(pc.value), pc.plant.why,
                     verdict))
    add_whole_column(planted, "file", (r[0] for r in rows))
    for col in ("row", "value", "mistake", "validation"):
        planted.add_column(col, overflow="fold")
    for r in rows:
        planted.add_row(*r)
    console.print(planted)

    shared = narrow_table("複数人が登録した同じ顧客 / Same customer entered by several people")
    add_whole_column(shared, "customer", (sc.key for sc in SHARED_CUSTOMERS))
    shared.add_column("as typed", overflow="fold")
    shared.add_column("variation", overflow="fold")
    for sc in SHARED_CUSTOMERS:
        typed = "; ".join(f"{f}: {v.get('name')}" for f, v in sc.variants.items())
        shared.add_row(sc.key, typed, sc.why)
    console.print(shared)

    _import_legacy(result, schema, today, console)
    _team_loop(result, schema, today, console)
    for step, what in result.steps:
        console.print(f"[bold]{step}[/bold]: {what}")
    console.print(f"Files: {out_dir.resolve()}")
    return result


def _import_legacy(result: DemoResult, schema: Schema, today: date, console: Any) -> None:
    """`xlcrm import` of the legacy list into standard workbooks, which the merge then takes in."""
    from rich.table import Table

    legacy = write_legacy_list(result.out_dir / "legacy" / LEGACY_FILE, today)
    imported = import_sources([legacy], schema, out_dir=result.out_dir / "imported", owner=TEAM[0].owner)
    result.imported = [w.path for w in imported.workbooks]
    table = Table(title=f"既存リストの取り込み / xlcrm import {legacy.name}", title_justify="left")
    for col in ("column", "header", "to", "why"):
        table.add_column(col)
    for src in imported.sources:
        if src.map is None:
            continue
        for c in src.map.columns:
            table.add_row(c.letter, c.header, c.target, c.why)
    console.print(table)
    counts = [s.counts for s in imported.sources if s.counts is not None]
    read = sum(c.rows_read for c in counts)
    written = sum(c.rows_written for c in counts)
    skipped = sum(c.rows_skipped for c in counts)
    books = ", ".join(str(p) for p in result.imported)
    result.steps.append(("import", f"{legacy}: {read} rows read = {written} written + {skipped} skipped "
                         f"(the totals row) → {books} and {imported.map_path}"))


def _team_loop(result: DemoResult, schema: Schema, today: date, console: Any) -> None:
    """The weekly loop an admin runs: merge into one master, hand out fresh workbooks, report."""
    from xlcrm.master.run import merge
    from xlcrm.terminal import add_whole_column, narrow_table
    from xlcrm.views.report import make_report

    out_dir = result.out_dir
    master = out_dir / "master" / "master.xlsx"
    master.parent.mkdir(parents=True, exist_ok=True)
    report = merge([*result.files, *result.imported], master, schema, today=today)
    result.master = master
    merged = narrow_table("マージ / Merge into master.xlsx")
    rows = [(Path(f.file).name, *(str(f.total(k)) for k in
                                  ("rows_read", "new", "updated", "unchanged", "linked", "rejected")))
            for f in report.files]
    for i, col in enumerate(("file", "read", "new", "updated", "unchanged", "linked", "rejected")):
        add_whole_column(merged, col, (r[i] for r in rows), justify="right" if i else "left")
    for r in rows:
        merged.add_row(*r)
    console.print(merged)
    for f in report.files:
        if f.error_workbook:
            console.print(f"  → error workbook of {Path(f.file).name}: {f.error_workbook}")
    result.steps.append(("merge", f"{master}: {report.history_rows} history rows, "
                         f"{report.duplicates_pending} possible duplicates (重複候補) and "
                         f"{report.conflicts_pending} conflicts (競合) waiting for a person"))

    handed = distribute(master, out_dir / "handout", schema)
    result.steps.append(("distribute", f"{len(handed)} fresh workbooks in {out_dir / 'handout'}"))

    conn = db.connect(db.db_path_for(master))
    try:
        import jaconv

        # Typed in hiragana, as staff would: search folds it to the katakana フリガナ in the master.
        query = jaconv.kata2hira(str(SHARED_CUSTOMERS[0].common["kana"]))
        hits = search(conn, schema, query, limit=5)
        if hits:
            story = customer_history(conn, schema, hits[0].customer_id, today=today)
            result.steps.append(("search", f"{query!r} → {hits[0].customer_id} {hits[0].name} "
                                 f"({len(hits)} hits); history: {len(story.timeline)} timeline entries"))
    finally:
        conn.close()

    rep = make_report(master, out_dir / "report.xlsx", schema, as_of=today)
    result.steps.append(("report", str(rep.path)))
    result.steps.append(("next", f"open {master} (重複候補 / 競合 sheets), then try: "
                         f"xlcrm search --master {master} {query}"))


def _findings_at(result: DemoResult, path: Path, pc: PlantedCell) -> list[str]:
    res = result.validation.get(path)
    if res is None:
        return []
    return [f"{f.severity}: {f.rule}" for f in res.findings
            if f.row == pc.row and f.entity == pc.plant.entity and f.key == pc.plant.column]
