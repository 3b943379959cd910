"""A small but rich master database, built the way merge stores it (canonical values, bookkeeping).

Search and history tests (and the add-in's) read a master without waiting for merge: this builds
one with :func:`xlcrm.store.db.connect` / :func:`xlcrm.store.db.create_tables` and plain inserts.  Values are what
merge would store: hyphenated phone numbers, full-width katakana フリガナ, ISO dates, canonical choice
keys.  It holds a merged-away duplicate (C-000007 -> C-000001), a deleted customer (C-000008), contacts
of both, and for C-000001 a full story (activities, deals, TODOs, change history) dated around
:data:`TODAY`, so timeline order and overdue flags are known in advance.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from xlcrm.schema import DEFAULT_SCHEMA, Schema
from xlcrm.store import db

#: "Today" for the fixture's story: T-000001 (due 2024-05-10, open) is overdue, T-000002 is not.
TODAY = date(2024, 6, 1)

CUSTOMERS: list[dict[str, Any]] = [
    {"customer_id": "C-000001", "kind": "corporate", "name": "株式会社山田製作所", "kana": "ヤマダセイサクショ",
     "corporate_number": "1010001000006", "industry": "manufacturing", "employees": 120,
     "postal_code": "100-0005", "prefecture": "東京都", "address": "千代田区丸の内1-2-3 丸の内ビル5F",
     "phone": "03-1234-5678", "fax": "03-1234-5679", "email": "info@yamada-ss.co.jp",
     "dm_consent": "yes", "status": "active", "source": "referral", "owner": "佐藤 花子",
     "notes": "精密部品の加工。年2回の定期訪問。", "updated_at": "2024-05-20"},
    {"customer_id": "C-000002", "kind": "corporate", "name": "山田商事株式会社", "kana": "ヤマダショウジ",
     "industry": "wholesale", "prefecture": "大阪府", "address": "大阪市北区梅田2-4-9",
     "phone": "06-6123-4567", "email": "sales@yamada-shoji.jp", "dm_consent": "unknown",
     "status": "prospect", "owner": "鈴木 一郎"},
    {"customer_id": "C-000003", "kind": "corporate", "name": "ABCトレーディング合同会社",
     "kana": "エービーシートレーディング", "prefecture": "神奈川県", "address": "横浜市西区みなとみらい3-1-1",
     "phone": "045-123-4567", "email": "contact@abc-trading.com", "dm_consent": "no",
     "status": "negotiating", "owner": "鈴木 一郎"},
    {"customer_id": "C-000004", "kind": "individual", "name": "田中 花子", "kana": "タナカ ハナコ",
     "prefecture": "埼玉県", "address": "さいたま市浦和区高砂1-1-1", "phone": "090-1111-2222",
     "email": "hanako.tanaka@example.ne.jp", "dm_consent": "yes", "status": "active",
     "owner": "佐藤 花子", "birthday": "1980-04-01"},
    {"customer_id": "C-000005", "kind": "corporate", "name": "有限会社スズキ電機", "kana": "スズキデンキ",
     "prefecture": "愛知県", "address": "名古屋市中区栄3-5-1", "phone": "052-987-6543",
     "dm_consent": "unknown", "status": "dormant", "owner": "高橋 健"},
    {"customer_id": "C-000006", "kind": "corporate", "name": "さくら不動産株式会社", "kana": "サクラフドウサン",
     "prefecture": "福岡県", "address": "福岡市中央区天神1-10-20", "phone": "0120-123-456",
     "email": "info@sakura-fudosan.jp", "status": "active", "owner": "高橋 健"},
    # A duplicate of C-000001 that merge folded into it: its old ID must still lead to C-000001.
    {"customer_id": "C-000007", "kind": "corporate", "name": "山田製作所", "kana": "ヤマダセイサクショ",
     "phone": "03-1234-5678", "owner": "鈴木 一郎", "status": "active",
     "_state": "merged", "_merged_into": "C-000001"},
    # Deleted after review: neither it nor its contacts may be found.
    {"customer_id": "C-000008", "kind": "corporate", "name": "株式会社削除済商会", "kana": "サクジョズミショウカイ",
     "phone": "011-222-3333", "owner": "高橋 健", "_state": "deleted"},
    {"customer_id": "C-000009", "kind": "corporate", "name": "株式会社東京システム", "kana": "トウキョウシステム",
     "prefecture": "東京都", "address": "港区芝浦4-6-8", "phone": "03-5555-0001",
     "email": "info@tokyo-system.co.jp", "status": "active", "owner": "佐藤 花子",
     "notes": "山田製作所様からの紹介。"},
    {"customer_id": "C-000010", "kind": "corporate", "name": "Acme Japan K.K.", "kana": "アクメジャパン",
     "prefecture": "東京都", "address": "渋谷区神南1-2-3", "phone": "03-6789-0123",
     "email": "hello@acme.example.com", "status": "prospect", "owner": "高橋 健"},
]

CONTACTS: list[dict[str, Any]] = [
    {"contact_id": "P-000001", "customer": "C-000001", "name": "高橋 一郎", "kana": "タカハシ イチロウ",
     "department": "営業部", "title": "部長", "phone": "03-1234-5600", "mobile": "090-3333-4444",
     "email": "ichiro.takahashi@yamada-ss.co.jp", "dm_consent": "yes"},
    {"contact_id": "P-000002", "customer": "C-000002", "name": "伊藤 美咲", "kana": "イトウ ミサキ",
     "department": "購買部", "mobile": "080-5555-6666", "email": "misaki.ito@yamada-shoji.jp"},
    # Still points at the merged-away duplicate: a hit must lead to the survivor C-000001.
    {"contact_id": "P-000003", "customer": "C-000007", "name": "木村 健太", "kana": "キムラ ケンタ",
     "department": "製造部", "phone": "03-1234-5601"},
    # Belongs to the deleted customer: never found.
    {"contact_id": "P-000004", "customer": "C-000008", "name": "森 誠", "kana": "モリ マコト"},
    {"contact_id": "P-000005", "customer": "C-000004", "name": "田中 一郎", "kana": "タナカ イチロウ",
     "mobile": "070-1234-9876", "notes": "花子様のご主人。"},
]

ACTIVITIES: list[dict[str, Any]] = [
    {"activity_id": "A-000001", "date": "2024-01-15", "customer": "C-000001", "contact": "高橋 一郎",
     "type": "visit", "content": "新年のご挨拶と年間計画のヒアリング", "result": "resolved", "handled_by": "佐藤 花子"},
    {"activity_id": "A-000002", "date": "2024-04-10", "customer": "C-000001", "contact": "高橋 一郎",
     "type": "complaint", "category": "delivery", "content": "納品が2日遅れたとのご指摘",
     "response": "配送業者を変更し、次回から前日発送にすると説明", "result": "resolved",
     "handled_by": "佐藤 花子"},
    {"activity_id": "A-000003", "date": "2024-05-25", "customer": "C-000001", "type": "call",
     "content": "新ライン設備の見積について電話", "result": "in_progress", "handled_by": "佐藤 花子"},
    # Recorded against the duplicate before the merge: part of the survivor's story.
    {"activity_id": "A-000004", "date": "2024-03-01", "customer": "C-000007", "type": "email",
     "content": "カタログ送付", "handled_by": "鈴木 一郎"},
    {"activity_id": "A-000005", "date": "2024-02-20", "customer": "C-000002", "type": "call",
     "content": "初回の問い合わせ対応", "handled_by": "鈴木 一郎"},
    # Deleted activity: not in any timeline.
    {"activity_id": "A-000006", "date": "2024-05-30", "customer": "C-000001", "type": "call",
     "content": "誤登録", "handled_by": "佐藤 花子", "_state": "deleted"},
]

DEALS: list[dict[str, Any]] = [
    {"deal_id": "D-000001", "customer": "C-000001", "title": "部品加工 年間契約", "product": "精密部品",
     "quantity": 12, "unit_price": 100000, "amount": 1200000, "phase": "won", "probability": 100,
     "closed_on": "2024-03-15", "payment_method": "bank_transfer", "owner": "佐藤 花子"},
    {"deal_id": "D-000002", "customer": "C-000001", "title": "新ライン設備", "amount": 5000000,
     "phase": "proposal", "probability": 40, "expected_close": "2024-07-31", "owner": "佐藤 花子"},
    {"deal_id": "D-000003", "customer": "C-000001", "title": "保守サービス", "amount": 300000,
     "phase": "lost", "closed_on": "2024-02-10", "owner": "佐藤 花子"},
    {"deal_id": "D-000004", "customer": "C-000007", "title": "試作品", "amount": 250000, "phase": "won",
     "closed_on": "2023-12-01", "owner": "鈴木 一郎"},
    {"deal_id": "D-000005", "customer": "C-000002", "title": "事務用品一括", "amount": 80000, "phase": "won",
     "closed_on": "2024-04-01", "owner": "鈴木 一郎"},
]

TODOS: list[dict[str, Any]] = [
    {"todo_id": "T-000001", "due": "2024-05-10", "customer": "C-000001", "content": "見積書を送る",
     "assignee": "佐藤 花子", "status": "todo"},
    {"todo_id": "T-000002", "due": "2024-06-20", "customer": "C-000001", "content": "設備導入の打合せ日程を決める",
     "assignee": "佐藤 花子", "status": "doing"},
    {"todo_id": "T-000003", "due": "2024-04-05", "customer": "C-000001", "content": "お詫び状を送る",
     "assignee": "佐藤 花子", "status": "done", "done_on": "2024-04-11"},
]

#: Change history as merge writes it (entity, record_id, field, old, new, who, how, at, source_file).
HISTORY: list[dict[str, Any]] = [
    {"run_id": 1, "at": "2024-01-05T09:00:00", "entity": "customers", "record_id": "C-000001",
     "field": None, "old": None, "new": None, "source_file": "sato.xlsx", "who": "佐藤 花子", "how": "new"},
    {"run_id": 2, "at": "2024-02-01T17:30:00", "entity": "customers", "record_id": "C-000001",
     "field": "status", "old": "prospect", "new": "active", "source_file": "sato.xlsx", "who": "佐藤 花子",
     "how": "edit"},
    {"run_id": 3, "at": "2024-04-20T10:15:00", "entity": "customers", "record_id": "C-000001",
     "field": "phone", "old": "03-1234-0000", "new": "03-1234-5678", "source_file": "sato.xlsx",
     "who": "佐藤 花子", "how": "edit"},
    # As merge and resolve write them: the duplicate linked to C-000001, then folded into it.
    {"run_id": 3, "at": "2024-04-20T10:15:00", "entity": "customers", "record_id": "C-000001",
     "field": None, "old": None, "new": "電話番号が一致", "source_file": "suzuki.xlsx", "who": "鈴木 一郎",
     "how": "link"},
    {"run_id": 3, "at": "2024-04-20T10:16:00", "entity": "customers", "record_id": "C-000007",
     "field": "_merged_into", "old": None, "new": "C-000001", "source_file": None, "who": "管理者",
     "how": "merge"},
    {"run_id": 4, "at": "2024-05-20T18:00:00", "entity": "deals", "record_id": "D-000002",
     "field": "phase", "old": "lead", "new": "proposal", "source_file": "sato.xlsx", "who": "佐藤 花子",
     "how": "edit"},
    {"run_id": 4, "at": "2024-05-20T18:00:00", "entity": "customers", "record_id": "C-000002",
     "field": "owner", "old": "佐藤 花子", "new": "鈴木 一郎", "source_file": "suzuki.xlsx", "who": "鈴木 一郎",
     "how": "edit"},
]


def insert(conn: sqlite3.Connection, schema: Schema, entity_key: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows keyed by schema column keys (plus bookkeeping ``_state``/``_merged_into``)."""
    entity = schema.entity(entity_key)
    allowed = set(entity.keys) | {name for name, _ in db.BOOKKEEPING}
    n = 0
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise KeyError(f"{entity_key}: not schema columns: {sorted(unknown)}")
        keys = list(row)
        cols = ", ".join('"' + k + '"' for k in keys)
        marks = ", ".join("?" * len(keys))
        conn.execute(f'INSERT INTO "{entity_key}" ({cols}) VALUES ({marks})', [row[k] for k in keys])
        n += 1
    return n


def insert_history(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    for h in rows:
        keys = list(h)
        conn.execute(f"INSERT INTO history ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                     [h[k] for k in keys])


def build_master(directory: Path, schema: Schema = DEFAULT_SCHEMA, *, index: bool = True,
                 extra_customers: Iterable[Mapping[str, Any]] = ()) -> Path:
    """Write ``master.db`` into ``directory`` and return the *workbook* path ``master.xlsx`` beside it.

    The workbook itself is not written: search and history read only the database, and commands take
    ``--master master.xlsx`` and find ``master.db`` next to it.  ``index=False`` leaves the search index
    out (to test that search builds it when missing).
    """
    master = Path(directory) / "master.xlsx"
    conn = db.connect(db.db_path_for(master), create=True)
    try:
        db.create_tables(conn, schema)
        with db.transaction(conn):
            insert(conn, schema, "customers", [*CUSTOMERS, *extra_customers])
            insert(conn, schema, "contacts", CONTACTS)
            insert(conn, schema, "activities", ACTIVITIES)
            insert(conn, schema, "deals", DEALS)
            insert(conn, schema, "todos", TODOS)
            insert_history(conn, HISTORY)
        if index:
            from xlcrm.store.searchindex import build_index

            build_index(conn, schema)
    finally:
        conn.close()
    return master
