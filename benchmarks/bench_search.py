"""Search benchmark: index build, per-query latency and `xlcrm search` cold start on 100,000 customers.

    /tmp/venv/bin/python benchmarks/bench_search.py [--customers 100000] [--dir DIR] [--repeat 5]
    /tmp/venv/bin/python benchmarks/bench_search.py --index-only [--db MASTER.db] [--share 0.05]

Builds a master database the way merge stores it (canonical values, one row per record, bookkeeping
columns) with direct inserts of generated Japanese data from :mod:`xlcrm.demo.fakedata`'s vocabularies:
~70% companies (前株/後株, regions, branches), ~30% individuals, about one contact person and two
activities per customer.  Then measures:

- ``build_index`` seconds (target < 10 s);
- the index after a merge (``--index-only`` runs just this part, on a copy of ``--db`` if given, e.g.
  the merge benchmark's master.db): a full build into an empty index (the first merge), a full
  rebuild over a current one, and ``update_index`` after a re-merge that edited ``--share`` of the
  customers (and contacts) the way the merge benchmark does (status + 備考 + 更新日), and after edits
  of indexed names, phones and readings; each ``--repeat`` times, best / median / max;
- per-query latency over a mix of query kinds, each run ``--repeat`` times on a warm connection,
  opening a fresh connection per query as the ribbon does (target < 50 ms);
- wall time of ``xlcrm search --master M QUERY --json`` as a subprocess, from process start to the
  JSON on stdout (target < 1 s), and ``python -X importtime -c "import xlcrm.views.search"``.

With ``--pg URL`` (or ``--pg temp``: a throwaway server of the installed PostgreSQL, as the tests start
one, with a C.UTF-8 database) the master is also copied there with ``store copy`` (timed) and the
same queries run on the server through the reader ``xlcrm search`` uses with ``XLCRM_DB`` (a fresh
connection per query), each checked to give the same hits in the same order as on master.db.

Targets are printed next to the figures; nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from xlcrm.demo.fakedata import (
    BUILDINGS,
    COMPANY_BUSINESSES,
    COMPANY_REGIONS,
    COMPANY_STEMS,
    GIVEN_NAMES,
    PLACES,
    SURNAMES,
    corporate_number,
)
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.store import db
from xlcrm.store.searchindex import (
    BIGRAM_TABLE,
    FTS_TABLE,
    ROWS_TABLE,
    TEXT_BIGRAM_TABLE,
    TEXT_FTS_TABLE,
    TEXT_TABLE,
    VOCAB_TABLE,
    build_index,
    update_index,
)
from xlcrm.views.search import search

S = DEFAULT_SCHEMA
OWNERS = ("佐藤 花子", "鈴木 一郎", "高橋 健", "田中 美咲", "伊藤 大輔", "渡辺 直樹", "山本 陽子", "中村 誠")
NOTES = ("定期訪問先。", "年末に見積依頼あり。", "紹介元: 既存顧客", "展示会で名刺交換。", "支払は月末締め翌月末払い。",
         "担当者の異動に注意。", "新製品のカタログ送付済み。", "DM不要との連絡あり。", "", "", "", "")
LEGAL = ("株式会社", "有限会社", "合同会社")


def _phone(rng: random.Random, area: str, used: set[str]) -> str:
    while True:
        rest = 10 - len(area)
        local = f"{rng.randint(2, 9)}{rng.randrange(10 ** (rest - 1)):0{rest - 1}d}"
        exch = rest - 4
        p = f"{area}-{local[:exch]}-{local[exch:]}"
        if p not in used:
            used.add(p)
            return p


def _mobile(rng: random.Random, used: set[str]) -> str:
    while True:
        p = f"{rng.choice(('090', '080', '070'))}-{rng.randint(1000, 9999)}-{rng.randrange(10000):04d}"
        if p not in used:
            used.add(p)
            return p


def generate(n: int, seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    used: set[str] = set()
    customers, contacts, activities = [], [], []
    today = date(2025, 3, 31)
    for i in range(1, n + 1):
        pref, city, postals, area, towns = rng.choice(PLACES)
        street = f"{rng.choice(towns)}{rng.randint(1, 5)}-{rng.randint(1, 20)}-{rng.randint(1, 30)}"
        if rng.random() < 0.3:
            street += f" {rng.choice(BUILDINGS)}{rng.randint(2, 9)}F"
        row: dict[str, Any] = {"customer_id": f"C-{i:06d}", "prefecture": pref,
                               "postal_code": f"{rng.choice(postals)}-{rng.randrange(10000):04d}",
                               "address": f"{city}{street}", "phone": _phone(rng, area, used),
                               "owner": rng.choice(OWNERS), "notes": rng.choice(NOTES) or None,
                               "status": rng.choice(("prospect", "negotiating", "active", "active", "dormant")),
                               "dm_consent": rng.choice(("yes", "no", "unknown"))}
        if rng.random() < 0.7:
            stem = rng.choice(COMPANY_STEMS) if rng.random() < 0.6 else rng.choice(SURNAMES)
            region = rng.choice(COMPANY_REGIONS) if rng.random() < 0.5 else ("", "", "")
            bus = rng.choice(COMPANY_BUSINESSES)
            core = f"{stem[0]}{region[0]}{bus[0]}"
            legal = rng.choices(LEGAL, (80, 15, 5))[0]
            name = f"{legal}{core}" if rng.random() < 0.6 else f"{core}{legal}"
            if rng.random() < 0.2:
                name += f" {city.replace('市', '')[:3]}支店"
            romaji = "-".join(x for x in (stem[2], region[2], bus[2]) if x)
            row |= {"kind": "corporate", "name": name, "kana": f"{stem[1]}{region[1]}{bus[1]}",
                    "industry": bus[3], "employees": rng.randint(3, 3000),
                    "corporate_number": corporate_number(f"{rng.randrange(10 ** 12):012d}"),
                    "fax": _phone(rng, area, used) if rng.random() < 0.6 else None,
                    "email": f"info{i}@{romaji}.co.jp"}
            n_contacts = rng.choice((0, 1, 1, 1, 2, 2))
        else:
            sur, giv = rng.choice(SURNAMES), rng.choice(GIVEN_NAMES)
            row |= {"kind": "individual", "name": f"{sur[0]} {giv[0]}", "kana": f"{sur[1]} {giv[1]}",
                    "industry": "consumer", "email": f"{giv[2]}.{sur[2]}{i}@example.ne.jp",
                    "birthday": (date(1950, 1, 1) + timedelta(days=rng.randrange(18000))).isoformat()}
            n_contacts = 0
        customers.append(row)
        for _ in range(n_contacts):
            sur, giv = rng.choice(SURNAMES), rng.choice(GIVEN_NAMES)
            contacts.append({"contact_id": f"P-{len(contacts) + 1:06d}", "customer": row["customer_id"],
                             "name": f"{sur[0]} {giv[0]}", "kana": f"{sur[1]} {giv[1]}",
                             "department": rng.choice(("営業部", "総務部", "購買部", "経理部")),
                             "phone": row["phone"][:-1] + str(rng.randrange(10)) if rng.random() < 0.3 else None,
                             "mobile": _mobile(rng, used) if rng.random() < 0.5 else None,
                             "email": f"{giv[2]}.{sur[2]}{len(contacts)}@{row['email'].split('@')[1]}"})
        for _ in range(rng.choice((0, 1, 2, 3, 4))):
            activities.append({"activity_id": f"A-{len(activities) + 1:07d}",
                               "date": (today - timedelta(days=rng.randrange(1500))).isoformat(),
                               "customer": row["customer_id"], "type": rng.choice(("call", "visit", "email")),
                               "content": rng.choice(("定期訪問", "見積提出", "電話フォロー", "資料送付")),
                               "handled_by": row["owner"]})
    return customers, contacts, activities


def write_master(directory: Path, n: int) -> Path:
    master = directory / "master.xlsx"
    path = db.db_path_for(master)
    if path.exists():
        path.unlink()
    conn = db.connect(path, create=True)
    db.create_tables(conn, S)
    customers, contacts, activities = generate(n)
    with db.transaction(conn):
        for ekey, rows in (("customers", customers), ("contacts", contacts), ("activities", activities)):
            keys = S.entity(ekey).keys
            cols = ", ".join(f'"{k}"' for k in keys)
            conn.executemany(f'INSERT INTO "{ekey}" ({cols}) VALUES ({", ".join("?" * len(keys))})',
                             [tuple(r.get(k) for k in keys) for r in rows])
    conn.close()
    print(f"master: {len(customers):,} customers, {len(contacts):,} contacts, {len(activities):,} activities "
          f"-> {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return master


def query_mix(master: Path) -> dict[str, list[str]]:
    """Queries drawn from the data itself (so they hit), per kind, in the spellings people type."""
    conn = db.connect(db.db_path_for(master))
    rng = random.Random(3)
    n_cust = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
    n_cont = conn.execute("SELECT count(*) FROM contacts").fetchone()[0]
    picks = [f"C-{i:06d}" for i in rng.sample(range(1, n_cust + 1), 40)]
    byid = {r["customer_id"]: r for r in conn.execute(
        f"SELECT customer_id, name, kana, phone, email FROM customers WHERE customer_id IN "
        f"({', '.join('?' * len(picks))})", picks)}
    rows = [byid[p] for p in picks]
    cpicks = [f"P-{i:06d}" for i in rng.sample(range(1, n_cont + 1), min(200, n_cont))]
    people = conn.execute(f"SELECT name, kana, mobile FROM contacts WHERE mobile IS NOT NULL AND contact_id IN "
                          f"({', '.join('?' * len(cpicks))}) ORDER BY contact_id", cpicks).fetchall()[:10]
    conn.close()
    fw = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})
    hira = str.maketrans({chr(c): chr(c - 0x60) for c in range(0x30A1, 0x30F7)})
    corp = [r for r in rows if r["kana"] and "株式会社" in (r["name"] or "")]
    return {
        "phone exact (hyphens)": [r["phone"] for r in rows[:8]],
        "phone digits only": [r["phone"].replace("-", "") for r in rows[8:16]],
        "phone full-width": [r["phone"].translate(fw) for r in rows[16:24]],
        "phone partial (6 digits)": [r["phone"].replace("-", "")[:6] for r in rows[24:32]],
        "e-mail exact": [r["email"] for r in rows[:8]],
        "company part (3-4 chars)": [re.sub(r"株式会社|有限会社|合同会社|\s.*", "", r["name"])[:4] for r in corp[:8]],
        "kana in hiragana": [r["kana"].translate(hira)[:6] for r in rows[32:40]],
        "contact name": [p["name"] for p in people[:8]],
        "1-2 characters": ["山", "電機", "佐藤", "東", "商事", "さく", "ア", "09"],
        "customer ID": [r["customer_id"] for r in rows[:8]],
        "typo (fuzzy)": [_typo(re.sub(r"株式会社|有限会社|合同会社|\s.*", "", r["name"]), rng) for r in corp[8:14]],
        "place (2-3 chars)": ["札幌", "新宿", "東京", "東京都", "大阪", "博多", "横浜市", "名古屋"],
        "reading half kana": [_half_kana(r["kana"], r["name"]) for r in corp[14:22]],
        "activity words": ["見積", "定期訪問", "資料送付", "フォロー", "見積提出", "電話"],
        "no match": ["存在しない会社名", "zzzzqqq", "ヰヱヲン"],
    }


def _half_kana(kana: str, name: str) -> str:
    """やまだ精機 for 山田精機 (ヤマダセイキ): the reading's first half in hiragana, the name's kanji end."""
    hira = str.maketrans({chr(c): chr(c - 0x60) for c in range(0x30A1, 0x30F7)})
    core = re.sub(r"株式会社|有限会社|合同会社|\s.*", "", name)
    return kana[: max(2, len(kana) // 2)].translate(hira) + core[-2:]


def _typo(s: str, rng: random.Random) -> str:
    if len(s) < 4:
        return s + "ン"
    i = rng.randrange(1, len(s) - 1)
    return s[:i] + "書" + s[i + 1:]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench_queries(master: Path, repeat: int) -> list[float]:
    all_ms: list[float] = []
    print(f"\nper-query latency (fresh connection each, best of {repeat} / median over queries; target < 50 ms)")
    print(f"  {'kind':28s} {'n':>3s} {'median':>8s} {'p95':>8s} {'max':>8s}  hits")
    for kind, queries in query_mix(master).items():
        times = []
        hits = []
        for q in queries:
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                conn = db.connect(db.db_path_for(master))
                res = search(conn, S, q, limit=20)
                conn.close()
                best = min(best, time.perf_counter() - t0)
            times.append(best * 1000)
            hits.append(len(res))
        all_ms += times
        print(f"  {kind:28s} {len(times):3d} {statistics.median(times):7.1f}  {_p95(times):7.1f}  "
              f"{max(times):7.1f}  {hits}")
    print(f"  {'ALL':28s} {len(all_ms):3d} {statistics.median(all_ms):7.1f}  {_p95(all_ms):7.1f}  "
          f"{max(all_ms):7.1f}")
    return all_ms


def bench_pg(master: Path, url: str, repeat: int) -> None:
    """``store copy`` to ``url``, then the query mix on the server beside master.db, hits compared."""
    from xlcrm.store import pg
    from xlcrm.store.url import StoreURL

    store = StoreURL(url, "--pg")
    conn = db.connect(db.db_path_for(master))
    t0 = time.perf_counter()
    report = pg.copy_master(conn, store, S)
    conn.close()
    print(f"\nstore copy: {sum(report.rows.values()):,} rows in {time.perf_counter() - t0:.1f} s "
          f"(search_rows {report.rows.get('search_rows', 0):,}); pg_trgm indexes Japanese: "
          f"{report.japanese_trigrams}")
    print(f"per-query latency, master.db vs PostgreSQL (fresh connection each, best of {repeat}); load "
          f"average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {'kind':28s} {'n':>3s} {'sqlite med':>10s} {'pg med':>8s} {'pg p95':>8s} {'pg max':>8s}  same hits")
    lite_all: list[float] = []
    server_all: list[float] = []
    differ: list[str] = []
    for kind, queries in query_mix(master).items():
        lite_t, server_t = [], []
        for q in queries:
            results = []
            for opener, times in ((lambda: db.connect(db.db_path_for(master)), lite_t),
                                  (lambda: pg.reader(store), server_t)):
                best = float("inf")
                for _ in range(repeat):
                    t1 = time.perf_counter()
                    c = opener()
                    res = search(c, S, q, limit=20)  # type: ignore[arg-type]
                    c.close()
                    best = min(best, time.perf_counter() - t1)
                times.append(best * 1000)
                results.append([(h.customer_id, h.contact_id, h.score) for h in res])
            if results[0] != results[1]:
                differ.append(q)
        lite_all += lite_t
        server_all += server_t
        same = sum(1 for q in queries if q not in differ)
        print(f"  {kind:28s} {len(queries):3d} {statistics.median(lite_t):9.1f}  {statistics.median(server_t):7.1f}  "
              f"{_p95(server_t):7.1f}  {max(server_t):7.1f}  {same}/{len(queries)}")
    print(f"  {'ALL':28s} {len(server_all):3d} {statistics.median(lite_all):9.1f}  "
          f"{statistics.median(server_all):7.1f}  {_p95(server_all):7.1f}  {max(server_all):7.1f}  "
          f"{len(server_all) - len(differ)}/{len(server_all)}")
    if differ:
        print(f"  different hits for: {differ}")


def bench_pg_roles(master: Path, url: str, repeat: int) -> None:
    """After ``store copy``: ``store roles`` and two logins, the query mix as each.  ``sales`` sees the
    customers of the 担当営業 with the most (row-level security), ``analyst`` reads no phone number,
    e-mail, address or free text (column privileges, the reader's per-session views)."""
    from xlcrm.store import pg
    from xlcrm.store.url import StoreURL

    store = StoreURL(url, "--pg")
    conn = db.connect(db.db_path_for(master))
    owner, mine = conn.execute("SELECT owner, count(*) FROM customers WHERE _state = 'active' GROUP BY owner "
                               "ORDER BY 2 DESC LIMIT 1").fetchone()
    conn.close()
    t0 = time.perf_counter()
    pg.apply_roles(store, S)
    print(f"\nstore roles: {time.perf_counter() - t0:.2f} s; per-query latency as a login of each role "
          f"(fresh connection each, best of {repeat}); sales = {owner} ({mine:,} customers)")
    for login, role, who in (("bench_sales", "sales", owner), ("bench_analyst", "analyst", None)):
        pg.add_login(store, S, login, role, owner=who)
        reader_store = StoreURL(pg.login_url(url, login), "--pg")
        times: list[float] = []
        for queries in query_mix(master).values():
            for q in queries:
                best = float("inf")
                for _ in range(repeat):
                    t1 = time.perf_counter()
                    c = pg.reader(reader_store)
                    search(c, S, q, limit=20)  # type: ignore[arg-type]
                    c.close()
                    best = min(best, time.perf_counter() - t1)
                times.append(best * 1000)
        print(f"  {role:10s} {len(times):3d} queries: median {statistics.median(times):.1f}  p95 {_p95(times):.1f}  "
              f"max {max(times):.1f} ms (load {os.getloadavg()[0]:.2f})")


def temp_server() -> tuple[Any, str]:
    """A throwaway PostgreSQL server (tests/pgserver.py) and a C.UTF-8 database on it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgserver import PgServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("--pg temp: no PostgreSQL installed (initdb and pg_ctl not found)")
    server = PgServer(bin_dir).start()
    server.execute("CREATE DATABASE bench TEMPLATE template0 LC_CTYPE 'C.UTF-8' LC_COLLATE 'C.UTF-8'")
    return server, server.url("bench")


def bench_cli(master: Path, repeat: int) -> None:
    exe = shutil.which("xlcrm", path=str(Path(sys.executable).parent)) or shutil.which("xlcrm")
    cmd_base = [exe] if exe else [sys.executable, "-c", "from xlcrm.cli import main; main()"]
    print("\n`xlcrm search --json` as a subprocess, process start to JSON on stdout (target < 1 s)")
    for q in ("03-1234-5678", "山田", "やまだせいさくしょ", "C-000500"):
        walls = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            res = subprocess.run([*cmd_base, "search", "--master", str(master), q, "--json"],
                                 capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise SystemExit(f"xlcrm search failed: {res.stderr}")
        print(f"  {q:20s} median {statistics.median(walls) * 1000:6.0f} ms   min {min(walls) * 1000:6.0f} ms")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"  (bare `python -c pass`: {(time.perf_counter() - t0) * 1000:.0f} ms)")


def bench_imports() -> None:
    for mod in ("xlcrm.views.search", "xlcrm.views.history", "xlcrm.cli.search"):
        res = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {mod}"],
                             capture_output=True, text=True, check=True)
        total = 0
        heavy = []
        for line in res.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if m and len(m.group(3)) == 1:  # top-level imports only: cumulative times add up
                total += int(m.group(2))
                heavy.append((int(m.group(2)), m.group(4)))
        heavy.sort(reverse=True)
        top = ", ".join(f"{name} {us / 1000:.0f}" for us, name in heavy[:5])
        print(f"  import {mod}: {total / 1000:.0f} ms cumulative (top: {top} ms)")
    res = subprocess.run([sys.executable, "-c", "import sys, xlcrm.views.search, xlcrm.views.history; "
                          "print(','.join(m for m in ('pandas', 'pandera', 'numpy', 'openpyxl', 'rapidfuzz') "
                          "if m in sys.modules) or 'none')"], capture_output=True, text=True, check=True)
    print(f"  heavy modules loaded by `import xlcrm.views.search, xlcrm.views.history`: {res.stdout.strip()}")


def _spread(values: list[float]) -> str:
    return (f"best {min(values):5.2f} s  median {statistics.median(values):5.2f} s  max {max(values):5.2f} s  "
            f"(n={len(values)})")


def _edit_run(conn: Any, share: float, rng: random.Random, kind: str) -> tuple[int, int]:
    """One merge-like run in an open transaction: ``share`` of the active customers and contacts edited.

    ``remerge``: as the merge benchmark's re-merge (status and 備考 changed, 更新日 stamped); ``indexed``:
    names, phone numbers and readings changed (every edit rewrites index values).
    """
    run_id = db.start_run(conn, "bench-search", [], "2026-01-01T00:00:00")
    cust, cont = S.entity("customers"), S.entity("contacts")
    ids = [r[0] for r in conn.execute("SELECT customer_id FROM customers WHERE _state = 'active'")]
    picked = rng.sample(ids, int(len(ids) * share))
    changes: list[tuple[str, str, Any]] = []
    for i, cid in enumerate(picked):
        if kind == "remerge":
            changes += [(cid, "status", rng.choice(("prospect", "negotiating", "active", "dormant"))),
                        (cid, "notes", f"再訪問予定 {i}"), (cid, "updated_at", "2026-01-01")]
        else:
            field, value = [("name", f"株式会社ベンチ{i}"), ("phone", f"03-9{i % 1000:03d}-{i % 10000:04d}"),
                            ("kana", f"べんち{i}"), ("notes", f"メモ {i}")][i % 4]
            changes += [(cid, field, value), (cid, "updated_at", "2026-01-01")]
    db.update_fields(conn, cust, changes, run_id=run_id)
    pids = [r[0] for r in conn.execute("SELECT contact_id FROM contacts WHERE _state = 'active'")]
    ppicked = rng.sample(pids, int(len(pids) * share))
    field = "notes" if kind == "remerge" else "name"
    db.update_fields(conn, cont, [(pid, field, f"担当替え {i}") for i, pid in enumerate(ppicked)], run_id=run_id)
    return run_id, len(picked) + len(ppicked)


def bench_index(source: Path, directory: Path, repeat: int, share: float) -> None:
    """The search-index stage of a merge, on a copy of ``source`` (never written)."""
    work = directory / "index-bench.db"
    src = db.connect(source)
    dst = db.connect(work, create=True)
    src.backup(dst)
    src.close()
    conn = dst
    n_cust = conn.execute("SELECT count(*) FROM customers WHERE _state = 'active'").fetchone()[0]
    n_cont = conn.execute("SELECT count(*) FROM contacts WHERE _state = 'active'").fetchone()[0]
    print(f"\nsearch index after a merge: {source} copied to {work}; {n_cust:,} active customers, "
          f"{n_cont:,} contacts; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    def timed(step: Any) -> tuple[float, float]:
        conn.execute("BEGIN IMMEDIATE")
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        conn.execute("COMMIT")
        return t1 - t0, time.perf_counter() - t0

    def drop() -> None:
        with db.transaction(conn):
            for table in (VOCAB_TABLE, FTS_TABLE, ROWS_TABLE, TEXT_FTS_TABLE, TEXT_TABLE, BIGRAM_TABLE, TEXT_BIGRAM_TABLE):
                conn.execute(f"DROP TABLE IF EXISTS {table}")

    results: dict[str, list[tuple[float, float]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    rng = random.Random(11)
    for _ in range(repeat):
        drop()
        results.setdefault("full build, empty index (first merge)", []).append(timed(lambda: build_index(conn, S)))
        results.setdefault("full rebuild over a current index", []).append(timed(lambda: build_index(conn, S)))
        for kind, what in (("remerge", "as the merge benchmark (status, 備考, 更新日)"),
                           ("indexed", "in names, phones, readings")):
            label = f"update_index after a run that edited {share:.0%} {what}"
            conn.execute("BEGIN IMMEDIATE")
            run_id, edited = _edit_run(conn, share, rng, kind)
            t0 = time.perf_counter()
            written = update_index(conn, S, run_id)
            t1 = time.perf_counter()
            conn.execute("COMMIT")  # includes writing the edited records themselves
            results.setdefault(label, []).append((t1 - t0, time.perf_counter() - t0))
            sizes[label] = (edited, written)
    for label, runs in results.items():
        extra = f" ({sizes[label][0]:,} records, {sizes[label][1]:,} index rows written)" if label in sizes else ""
        print(f"  {label}{extra}")
        print(f"    in the transaction   {_spread([r[0] for r in runs])}")
        print(f"    with its COMMIT      {_spread([r[1] for r in runs])}")
    for table in (FTS_TABLE, TEXT_FTS_TABLE, BIGRAM_TABLE, TEXT_BIGRAM_TABLE):
        conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
    conn.close()
    work.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None, help="keep the master here (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="reuse the master already in --dir")
    ap.add_argument("--index-only", action="store_true", help="only the index build / update figures")
    ap.add_argument("--db", type=Path, default=None,
                    help="with --index-only: measure on a copy of this master.db (default: the generated one)")
    ap.add_argument("--share", type=float, default=0.05, help="share of records a re-merge edited")
    ap.add_argument("--pg", metavar="URL", default=None,
                    help="also copy the master to this PostgreSQL database and compare search there "
                         "('temp': a throwaway server of the installed PostgreSQL)")
    ap.add_argument("--pg-roles", action="store_true",
                    help="with --pg: also the query mix as an own-only (sales) and an analyst login "
                         "(creates the roles and two logins; needs the owner of the database)")
    ap.add_argument("--skip-cli", action="store_true", help="leave out the CLI and import-time figures")
    args = ap.parse_args(argv)
    tmp = None
    directory = args.dir
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="xlcrm-bench-search-")
        directory = Path(tmp.name)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}, "
          f"{os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    master = directory / "master.xlsx"
    if args.index_only and args.db is not None:
        bench_index(args.db, directory, args.repeat, args.share)
        if tmp is not None:
            tmp.cleanup()
        return 0
    if not (args.reuse and db.db_path_for(master).exists()):
        master = write_master(directory, args.customers)
        print(f"generate + insert: {time.perf_counter() - t0:.1f} s")
    print(f"load average before the build: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    conn = db.connect(db.db_path_for(master))
    t0 = time.perf_counter()
    n = build_index(conn, S)
    build = time.perf_counter() - t0
    conn.close()
    print(f"build_index: {n:,} rows in {build:.2f} s (target < 10 s); "
          f"db now {db.db_path_for(master).stat().st_size / 1e6:.0f} MB")
    if args.index_only:
        bench_index(db.db_path_for(master), directory, args.repeat, args.share)
        if tmp is not None:
            tmp.cleanup()
        return 0
    bench_queries(master, args.repeat)
    if args.pg:
        server, url = temp_server() if args.pg == "temp" else (None, args.pg)
        try:
            bench_pg(master, url, args.repeat)
            if args.pg_roles:
                bench_pg_roles(master, url, args.repeat)
        finally:
            if server is not None:
                server.stop()
    if not args.skip_cli:
        bench_cli(master, args.repeat)
        print("\nimport time (python -X importtime)")
        bench_imports()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
