"""Wall seconds and peak memory of xlcrm on the hostile workbooks of make_hostile.py (run on demand).

    python benchmarks/make_hostile.py /tmp/hostile
    python benchmarks/bench_hostile.py /tmp/hostile [--limit-gb 3]

For every workbook in the folder, each command runs in a fresh process, one at a time:
``xlcrm validate FILE``, ``xlcrm validate FILE --annotate D --fix D`` (the copies) and
``xlcrm merge FILE --master M`` into a new master; then one merge of all of them with
``--skip-unreadable``.  Peak RSS is the largest resident set of the command or of any process it
waited for (its validation workers), from ``getrusage(RUSAGE_CHILDREN)`` of a process that runs only
that command; each command's address space is capped (``--limit-gb``) so a regression ends in a
MemoryError instead of swapping the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = """
import resource, subprocess, sys, time
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
t = time.perf_counter()
p = subprocess.run([sys.executable, "-m", "xlcrm", *sys.argv[2:]], capture_output=True, text=True, preexec_fn=cap)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
last = (p.stderr.strip().splitlines() or [""])[-1]
print(f"{wall:.2f}\\t{rss}\\t{p.returncode}\\t{'Traceback' in p.stderr}\\t{last}")
"""


def measure(limit: int, *args: str | Path) -> tuple[float, int, int, bool, str]:
    """(wall s, peak RSS KB, exit code, traceback?, last stderr line) of ``xlcrm ARGS``."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(limit), *map(str, args)], capture_output=True,
                         text=True, check=True).stdout.strip().split("\t", 4)
    return float(out[0]), int(out[1]), int(out[2]), out[3] == "True", out[4] if len(out) > 4 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--limit-gb", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    limit = int(args.limit_gb * 1024**3)
    files = sorted(args.folder.glob("*.xlsx"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            row: dict[str, object] = {"file": f.name}
            for what, cmd in (("validate", ["validate", f]),
                              ("copies", ["validate", f, "--annotate", Path(tmp) / f.stem, "--fix", Path(tmp) / f.stem]),
                              ("merge", ["merge", f, "--master", Path(tmp) / f"m-{f.stem}" / "master.xlsx"])):
                wall, rss, code, tb, last = measure(limit, *cmd)
                row[what] = {"s": wall, "mb": round(rss / 1024), "exit": code, "traceback": tb, "line": last}
            rows.append(row)
            print(f"{f.name:24} " + "  ".join(f"{k} {v['s']:6.1f} s {v['mb']:5} MB exit {v['exit']}"  # type: ignore[index]
                                              + (" TRACEBACK" if v["traceback"] else "")  # type: ignore[index]
                                              for k, v in row.items() if k != "file"), flush=True)
        wall, rss, code, tb, last = measure(limit, "merge", *files, "--master", Path(tmp) / "all" / "master.xlsx",
                                            "--skip-unreadable")
        print(f"merge of all {len(files)} --skip-unreadable: {wall:.1f} s {round(rss / 1024)} MB exit {code}"
              + (" TRACEBACK" if tb else ""))
        rows.append({"file": "(all, --skip-unreadable)", "merge": {"s": wall, "mb": round(rss / 1024), "exit": code,
                                                                   "traceback": tb, "line": last}})
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        print()


if __name__ == "__main__":
    main()
