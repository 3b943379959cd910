"""Benchmark: `xlcrm validate` on 100,000 customers + 300,000 activities vs a plain openpyxl read.

Run on demand (not a test):  python benchmarks/bench_validate.py [--customers N --activities M]
Each measurement runs in its own process so that peak RSS (ru_maxrss) belongs to it alone.  The
baseline is what a user would write first: ``pandas.read_excel(path, sheet_name=None,
engine="openpyxl")``, measured in the same run on the same file.

``--team DIR`` instead measures the CPU time of validating every workbook of a team folder in one
process (``time.process_time``, so the formula-scan thread counts too), split into reading and the
checks: what `xlcrm merge`'s two validation workers spend while the merge wants the same two cores.
Make the folder with ``python benchmarks/make_data.py --team DIR``.
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
    from xlcrm.intake.validate import validate_workbook
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


TEAM_CHILD = r"""
import json, sys, tempfile, time
from datetime import date
from pathlib import Path
from xlcrm.xlsx.reader import read_workbook
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.intake.template import write_team_workbook
from xlcrm.intake.validate import validate_workbook
today = date(2026, 11, 23)
paths = sorted(p for p in Path(sys.argv[1]).glob("*.xlsx") if not p.name.startswith("~$"))
with tempfile.TemporaryDirectory() as tmp:  # warm up (imports, phone metadata) on another workbook
    rows = {"customers": [{"kind": "corporate", "name": "株式会社アクメ", "phone": "03-1234-5678",
                           "email": "info@acme.co.jp", "owner": "佐藤"}]}
    validate_workbook(write_team_workbook(Path(tmp) / "w.xlsx", DEFAULT_SCHEMA, owner="佐藤", rows=rows),
                      DEFAULT_SCHEMA, today=today)
read = checks = 0.0
rows = errors = warnings = 0
for path in paths:
    t0 = time.process_time()
    wb = read_workbook(path, DEFAULT_SCHEMA)
    t1 = time.process_time()
    r = validate_workbook(wb, DEFAULT_SCHEMA, today=today)
    t2 = time.process_time()
    read, checks = read + t1 - t0, checks + t2 - t1
    rows += sum(wb.rows_read.values())
    errors, warnings = errors + len(r.errors), warnings + len(r.warnings)
print(json.dumps({"files": len(paths), "rows": rows, "cpu_read_s": round(read, 2),
                  "cpu_checks_s": round(checks, 2), "cpu_total_s": round(read + checks, 2),
                  "errors": errors, "warnings": warnings}))
"""


def measure_team(directory: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", TEAM_CHILD, str(directory)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
    ap.add_argument("--team", type=Path, help="CPU seconds to validate every workbook in this folder")
    ap.add_argument("--repeat", type=int, default=3, help="--team runs (the fastest is the figure)")
    args = ap.parse_args()
    if args.team:
        runs = [measure_team(args.team) for _ in range(args.repeat)]
        for r in runs:
            print(json.dumps(r))
        best = min(runs, key=lambda r: r["cpu_total_s"])  # type: ignore[arg-type,return-value]
        print(f"fastest of {len(runs)}: {best['cpu_total_s']} s CPU for {best['files']} files "
              f"(read {best['cpu_read_s']} s, checks {best['cpu_checks_s']} s)")
        return
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
