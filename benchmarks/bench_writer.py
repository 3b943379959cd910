"""Writer throughput: a 100,000-row customers sheet through xlcrm.template (run on demand).

    /tmp/venv/bin/python benchmarks/bench_writer.py [ROWS]

Prints rows/s for the whole team workbook (tables, validation, formats, meta) and peak RSS.
"""

from __future__ import annotations

import datetime as dt
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.template import write_team_workbook


def customers(n: int) -> list[dict[str, object]]:
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


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rows = customers(n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "big.xlsx"
        t0 = time.perf_counter()
        write_team_workbook(out, DEFAULT_SCHEMA, owner="山田太郎", rows={"customers": rows},
                            created=dt.datetime(2026, 1, 1))
        secs = time.perf_counter() - t0
        size = out.stat().st_size
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n:,} customers: {secs:.2f} s, {n / secs:,.0f} rows/s, {size / 1e6:.1f} MB, peak RSS {rss:.0f} MB "
          f"({base:.0f} MB of it the input rows)")


if __name__ == "__main__":
    main()
