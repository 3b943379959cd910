"""Annotated copy: zip patching (xlcrm.xlsx.annotate) vs the openpyxl load + save it replaces (run on demand).

    /tmp/venv/bin/python benchmarks/bench_annotate.py [--customers 10000 --activities 30000]
    /tmp/venv/bin/python benchmarks/bench_annotate.py --team /tmp/bm/work/team-10-100000-300000 [--no-openpyxl]

Generated workbook (default): make_data plants errors at its own rate (16 findings at the default
size); the list is topped up to ``--findings`` (default 50) with findings on evenly spread rows of the
customer and activity sheets, filled and blank cells alike.  Annotation does not care which rule a
finding came from.

``--team FILE|DIR ...``: what ``xlcrm merge`` does for each file of a team (the merge benchmark's
ten ~2 MB staff workbooks, ``make_data.py --team``): validate it as merge does
(``workers.validate_job``: rules plus cascaded rejections), slim the result as merge sends it to a
worker, and write its error workbook, timed alone.  The merge writes these copies in worker processes
while it merges, so the CPU seconds (``time.process_time``) are the figure that matters there.

Each path runs ``--repeat`` times; the best wall and CPU times are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_data import make_large_workbook

from xlcrm.intake.validate import _annotate_openpyxl, validate_workbook
from xlcrm.schema import DEFAULT_SCHEMA
from xlcrm.xlsx.annotate import annotate_fast

TODAY = date(2026, 11, 23)


def _best(fn: Callable[[Any, Path], Any], result: Any, out_dir: Path, name: str, repeat: int) -> dict[str, float]:
    wall = cpu = float("inf")
    for i in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(result, out_dir / f"{name}{i}.xlsx")
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return {"wall": round(wall, 3), "cpu": round(cpu, 3)}


def _paths(items: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in items:
        out += sorted(p.glob("*.xlsx")) if p.is_dir() else [p]
    return out


def bench_team(paths: list[Path], repeat: int, openpyxl: bool) -> None:
    from xlcrm.master.workers import _slim, validate_job

    total = {"zip_patch_cpu": 0.0, "zip_patch_wall": 0.0}
    with tempfile.TemporaryDirectory() as d:
        for path in paths:
            result, _ = validate_job(path, DEFAULT_SCHEMA, TODAY)
            if result is None:
                print(json.dumps({"file": str(path), "error": "unreadable"}))
                continue
            slim = _slim(result)
            row: dict[str, Any] = {"file": path.name, "file_mb": round(path.stat().st_size / 1e6, 2),
                                   "findings": len(slim.findings),
                                   "zip_patch": _best(annotate_fast, slim, Path(d), "zip_patch", repeat)}
            if openpyxl:
                row["openpyxl"] = _best(_annotate_openpyxl, slim, Path(d), "openpyxl", repeat)
            total["zip_patch_cpu"] += row["zip_patch"]["cpu"]
            total["zip_patch_wall"] += row["zip_patch"]["wall"]
            print(json.dumps(row, ensure_ascii=False))
    print(json.dumps({"files": len(paths), **{k: round(v, 3) for k, v in total.items()}}))


def bench_generated(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "team.xlsx"
        make_large_workbook(path, args.customers, args.activities)
        result = validate_workbook(path, DEFAULT_SCHEMA, today=TODAY)
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
        paths = (("openpyxl", _annotate_openpyxl),) if not args.no_openpyxl else ()
        times = {name: _best(fn, result, Path(d), name, args.repeat)
                 for name, fn in (*paths, ("zip_patch", annotate_fast))}
        report: dict[str, Any] = {
            "customers": args.customers, "activities": args.activities,
            "file_mb": round(path.stat().st_size / 1e6, 1), "findings": len(result.findings),
            "sheets_with_findings": len({f.sheet for f in result.findings}), "seconds": times}
        if "openpyxl" in times:
            report["speedup"] = round(times["openpyxl"]["wall"] / times["zip_patch"]["wall"], 1)
        print(json.dumps(report))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--activities", type=int, default=30_000)
    ap.add_argument("--findings", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--team", type=Path, nargs="+", help="team workbooks (files or folders) annotated as merge does")
    ap.add_argument("--no-openpyxl", action="store_true", help="time the zip patching only")
    args = ap.parse_args()
    if args.team:
        bench_team(_paths(args.team), args.repeat, not args.no_openpyxl)
    else:
        bench_generated(args)


if __name__ == "__main__":
    main()
