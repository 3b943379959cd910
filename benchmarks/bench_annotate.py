"""Annotated copy: zip patching (xlcrm.annotate) vs the openpyxl load + save it replaces (run on demand).

    /tmp/venv/bin/python benchmarks/bench_annotate.py [--customers 10000 --activities 30000]

make_data plants errors at its own rate (16 findings at the default size); the list is topped up to
``--findings`` (default 50) with findings on evenly spread rows of the customer and activity sheets,
filled and blank cells alike, so the figure is the per-file cost ``xlcrm merge`` pays for a typical
team workbook.  Annotation does not care which rule a finding came from.  Each path runs ``--repeat`` times; the best wall time is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_data import make_large_workbook

from xlcrm.annotate import annotate_fast
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.validate import _annotate_openpyxl, validate_workbook


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--activities", type=int, default=30_000)
    ap.add_argument("--findings", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "team.xlsx"
        make_large_workbook(path, args.customers, args.activities)
        result = validate_workbook(path, DEFAULT_SCHEMA, today=date(2026, 11, 23))
        real = result.findings[:args.findings]
        templates = [next(f for f in real if f.sheet == sd.sheet_name) for sd in result.workbook.sheets.values()
                     if any(f.sheet == sd.sheet_name for f in real)]
        sizes = {"customers": args.customers, "activities": args.activities}
        extra = []
        for i in range(args.findings - len(real)):
            t = templates[i % len(templates)]
            n = sizes.get(t.entity, 10)
            row = 2 + (i * 7919) % max(n, 1)
            col = "BCDEFGHIJKLMNOPQRST"[i % 19]
            extra.append(dataclasses.replace(t, cell=f"{col}{row}", row=row, rule="bench", severity="warning",
                                             message=f"bench finding {i}"))
        result.findings = real + extra
        times: dict[str, float] = {}
        for name, fn in (("openpyxl", _annotate_openpyxl), ("zip_patch", annotate_fast)):
            best = float("inf")
            for i in range(args.repeat):
                t0 = time.perf_counter()
                fn(result, Path(d) / f"{name}{i}.xlsx")
                best = min(best, time.perf_counter() - t0)
            times[name] = round(best, 3)
        print(json.dumps({"customers": args.customers, "activities": args.activities,
                          "file_mb": round(path.stat().st_size / 1e6, 1), "findings": len(result.findings),
                          "sheets_with_findings": len({f.sheet for f in result.findings}),
                          "seconds": times, "speedup": round(times["openpyxl"] / times["zip_patch"], 1)}))


if __name__ == "__main__":
    main()
