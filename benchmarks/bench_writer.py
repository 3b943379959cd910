"""Writer throughput: rendered table rows (xlcrm.xlsx.sheetxml) against XlsxWriter cell by cell (run on demand).

    /tmp/venv/bin/python benchmarks/bench_writer.py [ROWS] [--master PATH/master.db] [--repeat N]

1. A team workbook with ROWS customers (default 100,000) through xlcrm.intake.template (tables, validation,
   formats, meta), written both ways in separate processes; prints seconds, rows/s, size, peak RSS and
   whether every zip member is byte-identical.
2. With ``--master``: ``masterbook.write_master`` of that master database (opened read-only), both ways.

Each figure is the best of ``--repeat`` runs (default 2; the spread is printed): on a shared 2-core
machine a single run says little.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CREATED = dt.datetime(2026, 1, 1)


def customers(n: int) -> list[dict[str, object]]:
    from xlcrm.schema import DEFAULT_SCHEMA

    rnd = random.Random(1)
    cols = DEFAULT_SCHEMA.entity("customers")
    prefs = [c.key for c in cols.column("prefecture").choices]
    inds = [c.key for c in cols.column("industry").choices]
    rows = []
    for i in range(n):
        rows.append({
            "customer_id": f"C-{i + 1:06d}",
            "kind": "corporate" if i % 3 else "individual",
            "name": f"株式会社テスト{i}",
            "kana": f"テスト{i}",
            "corporate_number": f"{rnd.randrange(10**12, 10**13)}",
            "industry": rnd.choice(inds),
            "employees": rnd.randrange(1, 5000),
            "postal_code": f"{rnd.randrange(1000000):07d}"[:3] + "-" + f"{rnd.randrange(10000):04d}",
            "prefecture": rnd.choice(prefs),
            "address": f"千代田区丸の内{i % 9 + 1}-{i % 20 + 1}-{i % 30 + 1}",
            "phone": f"03-{rnd.randrange(10000):04d}-{rnd.randrange(10000):04d}",
            "email": f"info{i}@example.co.jp",
            "dm_consent": "unknown",
            "status": "active",
            "owner": "山田太郎",
            "notes": "=1+1" if i % 1000 == 0 else "定期訪問",
            "updated_at": dt.date(2025, 1, 1) + dt.timedelta(days=i % 365),
        })
    return rows


def child(kind: str, mode: str, arg: str, out: Path) -> None:
    """One write in this process; prints a JSON line with seconds and peak RSS."""
    import xlcrm.xlsx.writer as writer

    fast = mode == "fast"
    real_init = writer.XlcrmWorkbook.__init__

    def init(self: writer.XlcrmWorkbook, *args: object, **kw: object) -> None:
        kw["fast_tables"] = fast
        real_init(self, *args, **kw)  # type: ignore[arg-type]

    writer.XlcrmWorkbook.__init__ = init  # type: ignore[method-assign]
    if kind == "team":
        from xlcrm.intake.template import write_team_workbook
        from xlcrm.schema import DEFAULT_SCHEMA

        rows = customers(int(arg))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        write_team_workbook(out, DEFAULT_SCHEMA, owner="山田太郎", rows={"customers": rows}, created=CREATED)
    else:
        from xlcrm.master.masterbook import write_master
        from xlcrm.schema import DEFAULT_SCHEMA

        conn = sqlite3.connect(f"file:{arg}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        write_master(conn, out, DEFAULT_SCHEMA, lang="ja", wb_id="bench", created=CREATED)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"secs": secs, "rss": rss, "base": base}))


def run(kind: str, mode: str, arg: str, out: Path, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, __file__, "--child", kind, mode, arg, str(out)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["secs"])
    return {**best, "worst": max(r["secs"] for r in runs), "size": out.stat().st_size}


def identical(a: Path, b: Path) -> bool:
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        return (sorted(za.namelist()) == sorted(zb.namelist())
                and all(za.read(n) == zb.read(n) for n in za.namelist()))


def report(label: str, kind: str, arg: str, repeat: int, rows: int | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        out = {m: Path(d) / f"{m}.xlsx" for m in ("fast", "cells")}
        res = {m: run(kind, m, arg, out[m], repeat) for m in ("fast", "cells")}
        same = identical(out["fast"], out["cells"])
    for mode, r in res.items():
        rate = f", {rows / r['secs']:,.0f} rows/s" if rows else ""
        print(f"{label} [{mode:5}] best {r['secs']:.2f} s (worst {r['worst']:.2f}){rate}, "
              f"{r['size'] / 1e6:.1f} MB, peak RSS {r['rss']:.0f} MB ({r['base']:.0f} MB before writing)")
    print(f"{label}: {res['cells']['secs'] / res['fast']['secs']:.1f}x faster; members byte-identical: {same}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="?", type=int, default=100_000)
    ap.add_argument("--master", type=Path, help="a master.db to export (read only)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    report(f"{args.rows:,} customers", "team", str(args.rows), args.repeat, args.rows)
    if args.master:
        report(f"master {args.master}", "master", str(args.master.resolve()), args.repeat, None)


if __name__ == "__main__":
    main()
