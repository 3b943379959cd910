"""A small, realistic master database for report, export and handover tests.

Built with plain INSERTs (not through merge) so these tests do not depend on merge's code path; the
layout comes from ``xlcrm.store.db.create_tables``.  Deterministic for a seed.  It plants the cases the
tests need: merged and deleted rows that must never be counted, DM refusals shared by e-mail / phone
across records, overdue TODOs, unresolved complaints, deals in every pipeline bucket, a customer
whose only sale is older than a year, and blanks in key fields.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path

from xlcrm.demo.fakedata import Faker
from xlcrm.schema import DEFAULT_SCHEMA, Schema
from xlcrm.store import db

AS_OF = date(2025, 6, 15)
OWNERS = ("佐藤 花子", "鈴木 一郎", "高橋 健")
INDUSTRIES = ("manufacturing", "construction", "retail", "it", "services", "food")
SOURCES = ("referral", "web", "exhibition", "phone", None)
CATEGORIES = ("product", "service", "price", "delivery", "other")


def insert(conn: sqlite3.Connection, table: str, row: dict[str, object]) -> None:
    cols = ", ".join(f'"{k}"' for k in row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', tuple(row.values()))


def iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def build_master(folder: Path, *, seed: int = 7, customers: int = 40, schema: Schema = DEFAULT_SCHEMA,
                 as_of: date = AS_OF) -> Path:
    """Create ``folder/master.db`` and return the (not yet existing) ``folder/master.xlsx`` path."""
    master = Path(folder) / "master.xlsx"
    master.parent.mkdir(parents=True, exist_ok=True)
    conn = db.connect(db.db_path_for(master), create=True)
    db.create_tables(conn, schema)
    rng = random.Random(seed)
    fk = Faker(rng)
    counters = {"A": 0, "D": 0, "T": 0, "P": 0}

    def next_id(prefix: str) -> str:
        counters[prefix] += 1
        return f"{prefix}-{counters[prefix]:06d}"

    conn.execute("BEGIN")
    for i in range(1, customers + 1):
        cid = f"C-{i:06d}"
        individual = i % 6 == 0
        place = fk.place()
        owner = OWNERS[i % len(OWNERS)]
        if individual:
            p = fk.person()
            name, kana, email, industry = p.name, p.kana, fk.personal_email(p), "consumer"
            phone = fk.mobile()
        else:
            c = fk.company()
            name, kana, email = c.name, c.kana, fk.email("info", c.domain)
            industry = rng.choice(INDUSTRIES) if i % 9 else None  # some blanks for data quality
            phone = fk.phone(place.area_code)
        dm = rng.choices(("yes", "no", "unknown"), (60, 15, 25))[0]
        updated = as_of - timedelta(days=rng.randint(0, 700))
        insert(conn, "customers", {
            "customer_id": cid, "kind": "individual" if individual else "corporate", "name": name,
            "kana": kana, "industry": industry, "postal_code": place.postal_code,
            "prefecture": place.prefecture, "address": place.address,
            "phone": phone if i % 11 else None, "email": email if i % 7 else None,
            "dm_consent": dm, "status": rng.choice(("active", "active", "negotiating", "prospect", "dormant")),
            "source": rng.choice(SOURCES), "owner": owner,
            "birthday": iso(date(1960 + i % 30, 1 + i % 12, 1 + i % 28)) if individual else None,
            "notes": "=HYPERLINK(\"http://x\")" if i == 3 else None, "updated_at": iso(updated),
        })
        if not individual:
            for _ in range(rng.randint(0, 3)):
                person = fk.person()
                insert(conn, "contacts", {
                    "contact_id": next_id("P"), "customer": cid, "name": person.name, "kana": person.kana,
                    "department": rng.choice(("営業部", "総務部", "購買部")), "title": rng.choice(("部長", "課長", None)),
                    "phone": phone, "mobile": fk.mobile(), "email": fk.email(person.romaji_surname, "example.co.jp"),
                    "dm_consent": rng.choices(("yes", "no", "unknown"), (65, 10, 25))[0],
                })
        # Deals: past sales over three years, some lost, a few open ones in every pipeline bucket.
        for _ in range(rng.randint(0 if i % 5 == 0 else 1, 7)):
            closed = as_of - timedelta(days=rng.randint(0, 3 * 365))
            qty = rng.randint(1, 20)
            price = rng.choice((5000, 12000, 30000, 98000, 150000))
            won = rng.random() < 0.75
            insert(conn, "deals", {
                "deal_id": next_id("D"), "customer": cid, "title": f"{name} 案件{counters['D']}",
                "product": rng.choice(("保守契約", "システム導入", "消耗品", "研修")), "quantity": qty,
                "unit_price": price, "amount": qty * price if rng.random() < 0.9 else None,
                "phase": "won" if won else "lost", "probability": 100 if won else 0,
                "closed_on": iso(closed), "owner": owner if rng.random() < 0.8 else None,
            })
        if i % 3 == 0:
            month_start = as_of.replace(day=1)
            expected = rng.choice((month_start - timedelta(days=20), as_of + timedelta(days=5),
                                   as_of + timedelta(days=35), as_of + timedelta(days=65),
                                   as_of + timedelta(days=120), None))
            insert(conn, "deals", {
                "deal_id": next_id("D"), "customer": cid, "title": f"{name} 新規提案",
                "quantity": 1, "unit_price": 500000, "amount": 500000,
                "phase": rng.choice(("lead", "proposal", "quote", "negotiation")),
                "probability": rng.choice((20, 50, 80, None)), "expected_close": iso(expected),
                "owner": owner if i % 4 else OWNERS[(i + 1) % 3],
            })
        # Activities, including complaints and inquiries.
        for _ in range(rng.randint(0 if i % 8 == 0 else 1, 6)):
            kind = rng.choices(("call", "visit", "email", "complaint", "inquiry"), (30, 20, 20, 15, 15))[0]
            when = as_of - timedelta(days=rng.randint(0, 500))
            voice = kind in ("complaint", "inquiry")
            insert(conn, "activities", {
                "activity_id": next_id("A"), "date": iso(when), "customer": cid, "type": kind,
                "category": rng.choice(CATEGORIES) if voice else None,
                "content": f"{kind} の内容 {counters['A']}",
                "response": f"対応 {counters['A']}" if kind == "complaint" or (voice and rng.random() < 0.5) else None,
                "result": rng.choice(("resolved", "unresolved", "in_progress", None)) if voice else None,
                "handled_by": owner,
            })
        for _ in range(rng.randint(0, 2)):
            due = as_of + timedelta(days=rng.randint(-60, 30))
            status = rng.choice(("todo", "doing", "done"))
            insert(conn, "todos", {
                "todo_id": next_id("T"), "due": iso(due), "customer": cid, "content": f"{name} へ連絡",
                "assignee": owner, "status": status,
                "done_on": iso(due) if status == "done" else None,
            })

    # A lapsed customer: bought twice long ago and never since.
    insert(conn, "customers", {"customer_id": "C-900001", "kind": "corporate", "name": "株式会社むかし商事",
                               "owner": OWNERS[0], "dm_consent": "yes", "status": "dormant",
                               "industry": "wholesale", "prefecture": "大阪府", "source": "referral",
                               "email": "info@mukashi.example.jp", "updated_at": iso(as_of - timedelta(days=900))})
    for n, days in ((1, 700), (2, 500)):
        insert(conn, "deals", {"deal_id": f"D-90000{n}", "customer": "C-900001", "title": f"むかし案件{n}",
                               "amount": 2_000_000, "phase": "won", "closed_on": iso(as_of - timedelta(days=days)),
                               "owner": OWNERS[0]})
    # A DM refusal on a merged duplicate: its e-mail is reused by an active contact that says yes.
    insert(conn, "customers", {"customer_id": "C-900002", "kind": "individual", "name": "山田 太郎",
                               "owner": OWNERS[1], "dm_consent": "no", "email": "TARO@Example.jp",
                               "_state": "merged", "_merged_into": "C-000001"})
    insert(conn, "contacts", {"contact_id": "P-900001", "customer": "C-000001", "name": "山田 太郎",
                              "email": "taro@example.jp", "dm_consent": "yes"})
    # The same person registered twice: one contact says no, the other (same mobile) says yes.
    insert(conn, "contacts", {"contact_id": "P-900002", "customer": "C-000002", "name": "田中 次郎",
                              "mobile": "090-1111-2222", "dm_consent": "no"})
    insert(conn, "contacts", {"contact_id": "P-900003", "customer": "C-000004", "name": "田中 次郎",
                              "mobile": "09011112222", "dm_consent": "yes"})
    # A customer that refused: its contacts who said yes are still not mailed.
    insert(conn, "customers", {"customer_id": "C-900003", "kind": "corporate", "name": "有限会社おことわり",
                               "owner": OWNERS[2], "dm_consent": "no", "status": "active",
                               "updated_at": iso(as_of)})
    insert(conn, "contacts", {"contact_id": "P-900004", "customer": "C-900003", "name": "木村 三郎",
                              "email": "kimura@okotowari.example.jp", "dm_consent": "yes"})
    # Text that looks like a formula must reach every workbook as text.
    insert(conn, "customers", {"customer_id": "C-900004", "kind": "corporate", "name": "=HYPERLINK(\"http://evil\",\"x\")",
                               "owner": OWNERS[1], "dm_consent": "yes", "status": "active", "industry": "it",
                               "email": "-x@evil.example.jp", "updated_at": iso(as_of)})
    insert(conn, "deals", {"deal_id": "D-900010", "customer": "C-900004", "title": "+SUM(A1)", "amount": 30_000_000,
                           "phase": "won", "closed_on": iso(as_of - timedelta(days=40)), "owner": OWNERS[1]})
    # Rows that must never be counted anywhere: a huge won deal and an activity on merged/deleted states.
    insert(conn, "deals", {"deal_id": "D-999999", "customer": "C-000001", "title": "削除済み案件",
                           "amount": 99_000_000, "phase": "won", "closed_on": iso(as_of - timedelta(days=3)),
                           "_state": "deleted"})
    insert(conn, "activities", {"activity_id": "A-999999", "date": iso(as_of - timedelta(days=1)),
                                "customer": "C-000002", "type": "complaint", "category": "price",
                                "content": "統合済み", "response": "x", "handled_by": OWNERS[0],
                                "_state": "merged"})
    insert(conn, "history", {"run_id": 1, "at": f"{as_of - timedelta(days=30)}T10:00:00", "entity": "customers",
                             "record_id": "C-000002", "field": "phone", "old": None, "new": "03-0000-0000",
                             "source_file": "sato.xlsx", "who": OWNERS[0], "how": "edit"})
    conn.execute("COMMIT")
    conn.close()
    return master
