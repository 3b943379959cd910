"""Benchmark: `xlcrm validate` on 100,000 customers + 300,000 activities vs a plain openpyxl read.

Run on demand (not a test):  python benchmarks/bench_validate.py [--customers N --activities M]
Each measurement runs in its own process so that peak RSS (ru_maxrss) belongs to it alone.  The
baseline is what a user would write first: ``pandas.read_excel(path, sheet_name=None,
engine="openpyxl")``, measured in the same run on the same file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
kind, path = sys.argv[1], sys.argv[2]
if kind == "xlcrm":
    from datetime import date
    from xlcrm.schema import DEFAULT_SCHEMA
    from xlcrm.validate import validate_workbook
    r = validate_workbook(path, DEFAULT_SCHEMA, today=date(2026, 11, 23))
    extra = {"errors": len(r.errors), "warnings": len(r.warnings)}
elif kind == "openpyxl":
    import pandas as pd
    frames = pd.read_excel(path, sheet_name=None, engine="openpyxl")
    extra = {"rows": sum(len(f) for f in frames.values())}
else:
    import pandas as pd
    frames = pd.read_excel(path, sheet_name=None, engine="calamine")
    extra = {"rows": sum(len(f) for f in frames.values())}
wall = time.perf_counter() - t0
print(json.dumps({"kind": kind, "seconds": round(wall, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}))
"""


def measure(kind: str, path: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--activities", type=int, default=300_000)
    ap.add_argument("--file", type=Path, default=HERE / "out" / "validate_100k.xlsx")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    if not args.file.exists():
        sys.path.insert(0, str(HERE))
        from make_data import make_large_workbook

        args.file.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        make_large_workbook(args.file, args.customers, args.activities)
        print(f"generated {args.file} in {time.perf_counter() - t:.1f} s")
    results = [measure("xlcrm", args.file)]
    if not args.skip_baseline:
        results += [measure("openpyxl", args.file), measure("calamine", args.file)]
    for r in results:
        print(json.dumps(r))
    if not args.skip_baseline:
        ratio = results[1]["seconds"] / results[0]["seconds"]  # type: ignore[operator]
        print(f"xlcrm validate is {ratio:.1f}x faster than pandas.read_excel(engine='openpyxl') alone")


if __name__ == "__main__":
    main()
