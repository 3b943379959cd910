"""Small embedded Japanese vocabularies and record generators for the demo team and the benchmarks.

Embedded rather than Faker: the demo must run from a plain install with no extra dependency, and its
output must stay byte-for-byte stable for a seed whatever Faker release is installed.  Every value
is drawn from the ``random.Random`` passed in, so a seed fully determines the data.

Values here are *canonical* (what a careful person types): hyphenated national phone numbers, 法人番号
with a valid check digit, ``datetime.date`` dates.  Deliberate mistakes and variations are applied by
the callers (``xlcrm.demo``, ``benchmarks/make_data.py``), where they are documented.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

T = TypeVar("T")

# --- vocabularies -----------------------------------------------------------------------------------

#: (kanji, katakana reading, romaji)
SURNAMES: tuple[tuple[str, str, str], ...] = (
    ("佐藤", "サトウ", "sato"), ("鈴木", "スズキ", "suzuki"), ("高橋", "タカハシ", "takahashi"),
    ("田中", "タナカ", "tanaka"), ("伊藤", "イトウ", "ito"), ("渡辺", "ワタナベ", "watanabe"),
    ("山本", "ヤマモト", "yamamoto"), ("中村", "ナカムラ", "nakamura"), ("小林", "コバヤシ", "kobayashi"),
    ("加藤", "カトウ", "kato"), ("吉田", "ヨシダ", "yoshida"), ("山田", "ヤマダ", "yamada"),
    ("佐々木", "ササキ", "sasaki"), ("山口", "ヤマグチ", "yamaguchi"), ("松本", "マツモト", "matsumoto"),
    ("井上", "イノウエ", "inoue"), ("木村", "キムラ", "kimura"), ("林", "ハヤシ", "hayashi"),
    ("斎藤", "サイトウ", "saito"), ("清水", "シミズ", "shimizu"), ("山崎", "ヤマザキ", "yamazaki"),
    ("森", "モリ", "mori"), ("池田", "イケダ", "ikeda"), ("橋本", "ハシモト", "hashimoto"),
    ("阿部", "アベ", "abe"), ("石川", "イシカワ", "ishikawa"), ("山下", "ヤマシタ", "yamashita"),
    ("中島", "ナカジマ", "nakajima"), ("石井", "イシイ", "ishii"), ("小川", "オガワ", "ogawa"),
    ("前田", "マエダ", "maeda"), ("岡田", "オカダ", "okada"), ("長谷川", "ハセガワ", "hasegawa"),
    ("藤田", "フジタ", "fujita"), ("後藤", "ゴトウ", "goto"), ("近藤", "コンドウ", "kondo"),
    ("村上", "ムラカミ", "murakami"), ("遠藤", "エンドウ", "endo"), ("青木", "アオキ", "aoki"),
    ("坂本", "サカモト", "sakamoto"), ("福田", "フクダ", "fukuda"), ("太田", "オオタ", "ota"),
    ("西村", "ニシムラ", "nishimura"), ("藤井", "フジイ", "fujii"), ("岡本", "オカモト", "okamoto"),
    ("藤原", "フジワラ", "fujiwara"), ("金子", "カネコ", "kaneko"), ("三浦", "ミウラ", "miura"),
    ("中野", "ナカノ", "nakano"), ("原田", "ハラダ", "harada"), ("小野", "オノ", "ono"),
    ("竹内", "タケウチ", "takeuchi"), ("松田", "マツダ", "matsuda"), ("中山", "ナカヤマ", "nakayama"),
    ("和田", "ワダ", "wada"), ("石田", "イシダ", "ishida"), ("上田", "ウエダ", "ueda"),
    ("森田", "モリタ", "morita"), ("柴田", "シバタ", "shibata"), ("酒井", "サカイ", "sakai"),
    ("工藤", "クドウ", "kudo"), ("横山", "ヨコヤマ", "yokoyama"), ("宮崎", "ミヤザキ", "miyazaki"),
    ("宮本", "ミヤモト", "miyamoto"), ("内田", "ウチダ", "uchida"), ("高木", "タカギ", "takagi"),
    ("安藤", "アンドウ", "ando"), ("谷口", "タニグチ", "taniguchi"), ("丸山", "マルヤマ", "maruyama"),
    ("今井", "イマイ", "imai"), ("武田", "タケダ", "takeda"), ("村田", "ムラタ", "murata"),
    ("上野", "ウエノ", "ueno"), ("杉山", "スギヤマ", "sugiyama"), ("増田", "マスダ", "masuda"),
)

#: (kanji, katakana reading, romaji)
GIVEN_NAMES: tuple[tuple[str, str, str], ...] = (
    ("翔太", "ショウタ", "shota"), ("大輔", "ダイスケ", "daisuke"), ("健一", "ケンイチ", "kenichi"),
    ("拓也", "タクヤ", "takuya"), ("直樹", "ナオキ", "naoki"), ("誠", "マコト", "makoto"),
    ("浩二", "コウジ", "koji"), ("和也", "カズヤ", "kazuya"), ("隆", "タカシ", "takashi"),
    ("剛", "ツヨシ", "tsuyoshi"), ("亮", "リョウ", "ryo"), ("雄一", "ユウイチ", "yuichi"),
    ("達也", "タツヤ", "tatsuya"), ("修", "オサム", "osamu"), ("健太", "ケンタ", "kenta"),
    ("蓮", "レン", "ren"), ("悠真", "ユウマ", "yuma"), ("陽斗", "ハルト", "haruto"),
    ("茂", "シゲル", "shigeru"), ("博", "ヒロシ", "hiroshi"), ("美咲", "ミサキ", "misaki"),
    ("由美", "ユミ", "yumi"), ("陽子", "ヨウコ", "yoko"), ("恵子", "ケイコ", "keiko"),
    ("花子", "ハナコ", "hanako"), ("愛", "アイ", "ai"), ("真由美", "マユミ", "mayumi"),
    ("さくら", "サクラ", "sakura"), ("優子", "ユウコ", "yuko"), ("明美", "アケミ", "akemi"),
    ("智子", "トモコ", "tomoko"), ("久美子", "クミコ", "kumiko"), ("麻衣", "マイ", "mai"),
    ("彩", "アヤ", "aya"), ("結衣", "ユイ", "yui"), ("陽菜", "ヒナ", "hina"),
    ("千尋", "チヒロ", "chihiro"), ("奈々", "ナナ", "nana"), ("直美", "ナオミ", "naomi"),
    ("香織", "カオリ", "kaori"),
)

#: First part of a company name: (kanji, katakana, romaji)
COMPANY_STEMS: tuple[tuple[str, str, str], ...] = (
    ("さくら", "サクラ", "sakura"), ("東和", "トウワ", "towa"), ("大和", "ダイワ", "daiwa"),
    ("日本", "ニホン", "nihon"), ("北斗", "ホクト", "hokuto"), ("三協", "サンキョウ", "sankyo"),
    ("富士", "フジ", "fuji"), ("みどり", "ミドリ", "midori"), ("青葉", "アオバ", "aoba"),
    ("光", "ヒカリ", "hikari"), ("丸正", "マルショウ", "marusho"), ("中央", "チュウオウ", "chuo"),
    ("太陽", "タイヨウ", "taiyo"), ("協和", "キョウワ", "kyowa"), ("昭和", "ショウワ", "showa"),
    ("大成", "タイセイ", "taisei"), ("新光", "シンコウ", "shinko"), ("平和", "ヘイワ", "heiwa"),
    ("朝日", "アサヒ", "asahi"), ("千代田", "チヨダ", "chiyoda"), ("浪速", "ナニワ", "naniwa"),
    ("若葉", "ワカバ", "wakaba"), ("ひまわり", "ヒマワリ", "himawari"), ("東邦", "トウホウ", "toho"),
    ("葵", "アオイ", "aoi"), ("明星", "ミョウジョウ", "myojo"), ("双葉", "フタバ", "futaba"),
    ("旭", "アサヒ", "asahi"), ("丸和", "マルワ", "maruwa"), ("山田", "ヤマダ", "yamada"),
    ("小林", "コバヤシ", "kobayashi"), ("岡村", "オカムラ", "okamura"), ("西田", "ニシダ", "nishida"),
    ("松本", "マツモト", "matsumoto"), ("石川", "イシカワ", "ishikawa"), ("前川", "マエカワ", "maekawa"),
)

#: Optional middle part (region), used when many distinct names are needed (benchmarks).
COMPANY_REGIONS: tuple[tuple[str, str, str], ...] = (
    ("東日本", "ヒガシニホン", "east"), ("西日本", "ニシニホン", "west"), ("関東", "カントウ", "kanto"),
    ("関西", "カンサイ", "kansai"), ("中部", "チュウブ", "chubu"), ("九州", "キュウシュウ", "kyushu"),
    ("北陸", "ホクリク", "hokuriku"), ("東北", "トウホク", "tohoku"), ("湘南", "ショウナン", "shonan"),
    ("京浜", "ケイヒン", "keihin"), ("阪神", "ハンシン", "hanshin"), ("東海", "トウカイ", "tokai"),
    ("信州", "シンシュウ", "shinshu"), ("四国", "シコク", "shikoku"), ("北海", "ホッカイ", "hokkai"),
)

#: Second part of a company name with the industry it suggests (INDUSTRY choice key).
COMPANY_BUSINESSES: tuple[tuple[str, str, str, str], ...] = (
    ("製作所", "セイサクショ", "ss", "manufacturing"), ("工業", "コウギョウ", "kogyo", "manufacturing"),
    ("精機", "セイキ", "seiki", "manufacturing"), ("電機", "デンキ", "denki", "manufacturing"),
    ("印刷", "インサツ", "insatsu", "manufacturing"), ("建設", "ケンセツ", "kensetsu", "construction"),
    ("工務店", "コウムテン", "komuten", "construction"), ("設備", "セツビ", "setsubi", "construction"),
    ("商事", "ショウジ", "shoji", "wholesale"), ("物産", "ブッサン", "bussan", "wholesale"),
    ("商店", "ショウテン", "shoten", "retail"), ("ストアー", "ストアー", "store", "retail"),
    ("システムズ", "システムズ", "systems", "it"), ("ソフト", "ソフト", "soft", "it"),
    ("ネットワーク", "ネットワーク", "network", "it"), ("不動産", "フドウサン", "fudosan", "real_estate"),
    ("ホーム", "ホーム", "home", "real_estate"), ("フーズ", "フーズ", "foods", "food"),
    ("食品", "ショクヒン", "shokuhin", "food"), ("メディカル", "メディカル", "medical", "medical"),
    ("運輸", "ウンユ", "unyu", "transport"), ("物流", "ブツリュウ", "logi", "transport"),
    ("サービス", "サービス", "service", "services"), ("企画", "キカク", "kikaku", "services"),
    ("学院", "ガクイン", "gakuin", "education"), ("保険サービス", "ホケンサービス", "hoken", "finance"),
)

#: Legal form: (form key, registry type code used in the 法人番号 base number)
LEGAL_FORMS = {"kabushiki": "01", "yugen": "02", "godo": "05"}

#: How people write the legal form around a name; the canonical spelling comes first.
LEGAL_FORM_SPELLINGS: dict[str, tuple[str, ...]] = {
    "kabushiki": ("株式会社", "㈱", "(株)", "（株）"),
    "yugen": ("有限会社", "(有)", "㈲"),
    "godo": ("合同会社",),
}

#: (prefecture choice key, city, postal-code prefixes, area code, towns)
PLACES: tuple[tuple[str, str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("東京都", "千代田区", ("100", "101"), "03", ("丸の内", "神田須田町", "九段北", "内神田")),
    ("東京都", "中央区", ("103", "104"), "03", ("日本橋", "銀座", "築地", "八丁堀")),
    ("東京都", "港区", ("105", "107"), "03", ("芝", "新橋", "赤坂", "浜松町")),
    ("東京都", "新宿区", ("160", "169"), "03", ("西新宿", "高田馬場", "四谷")),
    ("東京都", "大田区", ("143", "144"), "03", ("大森北", "蒲田", "平和島")),
    ("東京都", "八王子市", ("192",), "042", ("旭町", "明神町", "横山町")),
    ("神奈川県", "横浜市西区", ("220",), "045", ("みなとみらい", "北幸", "高島")),
    ("神奈川県", "川崎市川崎区", ("210",), "044", ("駅前本町", "砂子", "小川町")),
    ("埼玉県", "さいたま市大宮区", ("330",), "048", ("桜木町", "大門町", "宮町")),
    ("千葉県", "千葉市中央区", ("260",), "043", ("富士見", "中央", "新町")),
    ("大阪府", "大阪市北区", ("530",), "06", ("梅田", "天満", "中之島")),
    ("大阪府", "大阪市中央区", ("540", "541"), "06", ("本町", "北浜", "淡路町")),
    ("大阪府", "堺市堺区", ("590",), "072", ("大町東", "中瓦町", "熊野町西")),
    ("愛知県", "名古屋市中区", ("460",), "052", ("栄", "錦", "丸の内")),
    ("愛知県", "豊田市", ("471",), "0565", ("小坂本町", "喜多町", "西町")),
    ("京都府", "京都市下京区", ("600",), "075", ("四条通", "烏丸通", "東塩小路町")),
    ("兵庫県", "神戸市中央区", ("650",), "078", ("三宮町", "元町通", "栄町通")),
    ("福岡県", "福岡市博多区", ("812",), "092", ("博多駅前", "中洲", "祇園町")),
    ("北海道", "札幌市中央区", ("060",), "011", ("北一条西", "大通西", "南三条西")),
    ("宮城県", "仙台市青葉区", ("980",), "022", ("一番町", "中央", "本町")),
    ("広島県", "広島市中区", ("730",), "082", ("紙屋町", "八丁堀", "大手町")),
    ("静岡県", "静岡市葵区", ("420",), "054", ("呉服町", "紺屋町", "追手町")),
    ("新潟県", "新潟市中央区", ("950", "951"), "025", ("万代", "東大通", "古町通")),
)

#: First digits of subscriber numbers in use per area code where not all of 2-9 are (011-4…/9… are not).
_SUBSCRIBER_FIRST = {"011": "235678"}

BUILDINGS = ("第一ビル", "センタービル", "駅前ビル", "ハイツ", "ビジネスプラザ", "タワー")

#: (ja, en, unit price in yen, quantity range, subscription?, for companies?)
PRODUCTS: tuple[tuple[str, str, int, tuple[int, int], bool, bool], ...] = (
    ("業務用複合機リース", "MFP lease", 38_000, (1, 3), True, True),
    ("会計ソフトライセンス", "Accounting software licence", 52_000, (1, 20), True, True),
    ("ノートPC", "Laptop", 128_000, (1, 30), False, True),
    ("保守サポート年間契約", "Annual support contract", 240_000, (1, 1), True, True),
    ("ホームページ制作", "Website build", 450_000, (1, 1), False, True),
    ("オフィス家具一式", "Office furniture set", 85_000, (1, 10), False, True),
    ("業務用エアコン", "Commercial air conditioner", 320_000, (1, 4), False, True),
    ("LED照明工事", "LED lighting installation", 15_000, (10, 200), False, True),
    ("コピー用紙A4（5000枚）", "Copy paper A4 (5000 sheets)", 3_800, (5, 100), False, True),
    ("防犯カメラ設置", "Security camera installation", 68_000, (2, 16), False, True),
    ("クラウド勤怠システム", "Cloud time tracking", 3_300, (5, 80), True, True),
    ("社員研修", "Staff training", 180_000, (1, 3), False, True),
    ("住宅リフォーム", "Home renovation", 1_200_000, (1, 1), False, False),
    ("浄水器", "Water purifier", 45_000, (1, 2), False, False),
    ("太陽光パネル", "Solar panels", 1_500_000, (1, 1), False, False),
    ("ソファ", "Sofa", 98_000, (1, 2), False, False),
    ("定期メンテナンス", "Regular maintenance", 12_000, (1, 12), True, False),
)

DEPARTMENTS = (("営業部", "Sales"), ("総務部", "General affairs"), ("購買部", "Purchasing"),
               ("経理部", "Accounting"), ("情報システム部", "IT"), ("製造部", "Production"))
TITLES = (("部長", "Manager"), ("課長", "Section chief"), ("係長", "Supervisor"), ("主任", "Lead"),
          ("担当", "Staff"), ("代表取締役", "President"))

# --- check digits and date spellings ----------------------------------------------------------------


def corporate_check_digit(base12: str) -> int:
    """法人番号 check digit (国税庁): 9 - (sum of digits weighted 1,2,1,2... from the right) mod 9."""
    if len(base12) != 12 or not base12.isdigit():
        raise ValueError(f"a 法人番号 base is 12 digits, got {base12!r}")
    total = sum(int(d) * (1 if i % 2 == 0 else 2) for i, d in enumerate(reversed(base12)))
    return 9 - total % 9


def corporate_number(base12: str) -> str:
    return f"{corporate_check_digit(base12)}{base12}"


def spoil_check_digit(number: str) -> str:
    """The same 法人番号 with a wrong check digit (a one-digit typo in the first position)."""
    return f"{(int(number[0]) + 1) % 10}{number[1:]}"


_ERAS = ((date(2019, 5, 1), "R", "令和"), (date(1989, 1, 8), "H", "平成"), (date(1926, 12, 25), "S", "昭和"))


def to_wareki(d: date, style: str = "short") -> str:
    """``R6.4.1`` (short) or ``令和6年4月1日`` (kanji): how many Japanese forms still ask for dates."""
    for start, letter, kanji in _ERAS:
        if d >= start:
            year = d.year - start.year + 1
            if style == "short":
                return f"{letter}{year}.{d.month}.{d.day}"
            return f"{kanji}{'元' if year == 1 else year}年{d.month}月{d.day}日"
    raise ValueError(f"{d} is before the Showa era")


_FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})


def to_fullwidth(s: str) -> str:
    """ASCII to full-width (０３－１２３４): what a Japanese IME left in 全角 mode produces."""
    return s.replace("-", "－").translate(_FULLWIDTH)


def to_hiragana(katakana: str) -> str:
    return "".join(chr(ord(ch) - 0x60) if "ァ" <= ch <= "ヶ" else ch for ch in katakana)


# --- generators -------------------------------------------------------------------------------------


@dataclass
class Person:
    surname: str
    given: str
    kana: str  # "サトウ ハナコ"
    romaji_surname: str
    romaji_given: str

    @property
    def name(self) -> str:
        return f"{self.surname} {self.given}"


@dataclass
class Place:
    prefecture: str
    postal_code: str
    address: str  # city and street, without the prefecture
    area_code: str


@dataclass
class Company:
    name: str  # with the legal form, canonical spelling
    stem: str  # without the legal form
    kana: str  # reading of the stem (legal form is not read in フリガナ by convention)
    domain: str
    industry: str
    form: str  # LEGAL_FORMS key
    prefix_form: bool  # 前株 (株式会社X) or 後株 (X株式会社)


@dataclass
class Faker:
    """Draws realistic canonical values from ``rng``; remembers what it handed out to stay unique.

    Uniqueness matters because the demo must contain exactly the planted duplicates and no
    accidental ones (validation flags same phone / e-mail / 法人番号 / company name as duplicates).
    """

    rng: random.Random
    used: set[str] = field(default_factory=set)
    reserved: set[str] = field(default_factory=set)

    def _unique(self, make: Callable[[], T], key: Callable[[T], str] = str, tries: int = 50) -> T:
        value = make()
        for _ in range(tries):
            k = key(value)
            if k not in self.used and k not in self.reserved:
                break
            value = make()
        self.used.add(key(value))
        return value

    def person(self, unique: bool = True) -> Person:
        def make() -> Person:
            sur, given = self.rng.choice(SURNAMES), self.rng.choice(GIVEN_NAMES)
            return Person(sur[0], given[0], f"{sur[1]} {given[1]}", sur[2], given[2])

        return self._unique(make, lambda p: p.name) if unique else make()

    def company(self, *, regions: bool = False, unique: bool = True) -> Company:
        """A company; unique by its name without the legal form (what duplicate checks compare)."""
        def make() -> Company:
            stem, bus = self.rng.choice(COMPANY_STEMS), self.rng.choice(COMPANY_BUSINESSES)
            reg = self.rng.choice(COMPANY_REGIONS) if regions and self.rng.random() < 0.9 else ("", "", "")
            form = self.rng.choices(("kabushiki", "yugen", "godo"), (80, 15, 5))[0]
            prefix_form = form != "kabushiki" or self.rng.random() < 0.6
            stem_txt = f"{stem[0]}{reg[0]}{bus[0]}"
            legal = LEGAL_FORM_SPELLINGS[form][0]
            name = f"{legal}{stem_txt}" if prefix_form else f"{stem_txt}{legal}"
            romaji = "-".join(x for x in (stem[2], reg[2], bus[2]) if x)
            tld = self.rng.choice(("co.jp", "co.jp", "co.jp", "jp", "com"))
            return Company(name, stem_txt, f"{stem[1]}{reg[1]}{bus[1]}", f"{romaji}.{tld}", bus[3], form,
                           prefix_form)

        return self._unique(make, lambda c: c.stem) if unique else make()

    def place(self) -> Place:
        pref, city, postals, area, towns = self.rng.choice(PLACES)
        postal = f"{self.rng.choice(postals)}-{self.rng.randrange(10000):04d}"
        street = f"{self.rng.choice(towns)}{self.rng.randint(1, 5)}-{self.rng.randint(1, 20)}-{self.rng.randint(1, 30)}"
        if self.rng.random() < 0.3:
            street += f" {self.rng.choice(BUILDINGS)}{self.rng.randint(2, 9)}F"
        return Place(pref, postal, f"{city}{street}", area)

    def phone(self, area_code: str) -> str:
        """A fixed-line number in the hyphenated national form; 10 digits in all."""
        def make() -> str:
            rest = 9 - len(area_code) + 1  # digits after the area code
            first = self.rng.choice(_SUBSCRIBER_FIRST.get(area_code, "23456789"))
            local = f"{first}{self.rng.randrange(10 ** (rest - 1)):0{rest - 1}d}"
            exch_len = rest - 4
            return f"{area_code}-{local[:exch_len]}-{local[exch_len:]}"

        return self._unique(make)

    def mobile(self) -> str:
        def make() -> str:
            return (f"{self.rng.choice(('090', '080', '070'))}-{self.rng.randint(1000, 9999)}-"
                    f"{self.rng.randrange(10000):04d}")

        return self._unique(make)

    def fax_for(self, phone: str) -> str:
        """The FAX next to the main line (…-5678 -> …-5679), as many small offices have."""
        head, last = phone.rsplit("-", 1)
        for step in range(1, 10):
            cand = f"{head}-{(int(last) + step) % 10 ** len(last):0{len(last)}d}"
            if cand not in self.used and cand not in self.reserved:
                self.used.add(cand)
                return cand
        return self.phone(phone.split("-", 1)[0])

    def email(self, local: str, domain: str) -> str:
        base = local
        for n in range(2, 1000):
            cand = f"{local}@{domain}"
            if cand not in self.used and cand not in self.reserved:
                self.used.add(cand)
                return cand
            local = f"{base}{n}"
        raise RuntimeError("e-mail space exhausted")  # pragma: no cover - 1000 clashes on one name

    def personal_email(self, p: Person) -> str:
        local = self.rng.choice((f"{p.romaji_given}.{p.romaji_surname}", f"{p.romaji_surname}.{p.romaji_given}",
                                 f"{p.romaji_given[0]}{p.romaji_surname}{self.rng.randint(1, 99)}"))
        return self.email(local, self.rng.choice(("example.ne.jp", "example.jp", "example.com")))

    def corporate_number(self, form: str) -> str:
        def make() -> str:
            office = f"{self.rng.randint(1, 99):02d}{self.rng.randint(1, 4):02d}"
            return corporate_number(f"{office}{LEGAL_FORMS[form]}{self.rng.randrange(10 ** 6):06d}")

        return self._unique(make)

    def date_between(self, start: date, end: date) -> date:
        return start + timedelta(days=self.rng.randint(0, max(0, (end - start).days)))

    def pick(self, seq: Sequence[Any]) -> Any:
        return self.rng.choice(seq)
