"""Duplicate review work of a merge where customers crowd, and of the same volume spread out.

    python benchmarks/bench_crowd.py                       # both sets, 10 x 2,000 companies, 100 re-entries
    python benchmarks/bench_crowd.py --sets crowded --workdir /tmp/crowd --repeat 3
    python benchmarks/bench_crowd.py --sets crowded --seed 2          # another draw of the same set

Makes the sets with ``make_crowd.py`` (cached in the work folder), merges each into an empty master in a
fresh process (``xlcrm.master.run.merge``, as ``xlcrm merge`` runs it; wall seconds include start-up) and reads
the master database: every row carries its company's number in 備考 (``真:<n>``), so

* a planted re-entry is *found* when it was linked to its company (one record for the number) or its
  two records are on 重複候補 together (one pair or one group);
* a *wrong link* is a row linked to another company (its 備考 differs: a 競合 on 備考);
* *review rows* are the rows of 重複候補 (one per pair; *groups* counts its グループ, the decisions a
  person has to make at most) and *beyond the planted* those that do not join a re-entry to its company
  (a planted re-entry proposed costs one row, its pair);
* precision / recall / F1 count pairs: linked and proposed pairs against the planted ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

MERGE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from xlcrm.master.run import merge
    from xlcrm.schema import DEFAULT_SCHEMA
    t0 = time.perf_counter()
    r = merge([Path(sys.argv[1])], Path(sys.argv[2]), DEFAULT_SCHEMA)
    print(json.dumps({"merge_s": time.perf_counter() - t0, "timings": r.timings,
                      "duplicates_new": r.duplicates_new}))
""")


def merge_once(team: Path, out: Path) -> dict[str, Any]:
    import resource
    import shutil

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MERGE, str(team), str(out / "master.xlsx")],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the merge process and its workers: what other jobs on the machine change least
    res["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return res


def figures(db_path: Path, planted: int) -> dict[str, Any]:
    conn = sqlite3.connect(db_path)
    tag = {rid: (notes or "").split()[0] for rid, notes in conn.execute("SELECT customer_id, notes FROM customers")}
    by_tag: dict[str, list[str]] = defaultdict(list)
    for rid, t in tag.items():
        by_tag[t].append(rid)
    from xlcrm.master.masterbook import duplicate_groups

    pending = [{"pair_id": i, "entity": "customers", "a_id": a, "b_id": b} for i, a, b in conn.execute(
        "SELECT pair_id, a_id, b_id FROM duplicates WHERE status = 'pending' AND entity = 'customers'")]
    pairs = [(p["a_id"], p["b_id"]) for p in pending]
    rows = len(pairs)
    groups = len(set(duplicate_groups(pending).values()))
    wrong_links = conn.execute("SELECT count(*) FROM conflicts WHERE entity = 'customers' AND field = 'notes'"
                               ).fetchone()[0]
    linked = sum(1 for ids in by_tag.values() if len(ids) == 1) - (len(by_tag) - planted)
    true_proposed = {(a, b) for a, b in pairs if tag[a] == tag[b]}
    planted_tags = {t for t, ids in by_tag.items() if len(ids) == 2}
    proposed_tags = {tag[a] for a, b in true_proposed}
    found = linked + len(proposed_tags & planted_tags)
    tp = linked - wrong_links + len(true_proposed)
    predicted = linked + len(pairs)
    precision = tp / predicted if predicted else 1.0
    recall = found / planted if planted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    customers = len(by_tag)
    beyond = rows - len(true_proposed)
    return {"customers": customers, "records": len(tag), "review_rows": rows, "review_groups": groups,
            "rows_per_1000": round(1000 * rows / customers, 2),
            "rows_beyond_planted": beyond, "rows_beyond_planted_per_100": round(100 * beyond / customers, 3),
            "rows_beyond_planted_per_1000": round(1000 * beyond / customers, 2),
            "linked": linked, "proposed_planted": len(proposed_tags & planted_tags), "found": found,
            "recall": round(recall, 4), "precision": round(precision, 4), "f1": round(f1, 4),
            "wrong_links": wrong_links}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="crowded,spread")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_crowd"))
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--per-file", type=int, default=2000)
    ap.add_argument("--reentries", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1,
                    help="merges per set, the sets taken in turn (times: best and worst)")
    ap.add_argument("--seed", type=int, default=1, help="of make_crowd.py")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from make_crowd import make

    kinds = args.sets.split(",")
    teams = {}
    for kind in kinds:
        suffix = "" if args.seed == 1 else f"-seed{args.seed}"
        teams[kind] = args.workdir / f"{kind}-{args.files}-{args.per_file}-{args.reentries}{suffix}"
        if not teams[kind].exists():
            print(kind, make(kind, teams[kind], args.files, args.per_file, args.reentries, args.seed),
                  file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeat):
        for kind in kinds:  # in turn, so that a busy spell on the machine falls on both sets
            runs[kind].append(merge_once(teams[kind], args.workdir / f"run-{kind}"))
            print(kind, f"{runs[kind][-1]['merge_s']:.2f} s, CPU {runs[kind][-1]['cpu_s']:.2f} s, "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for kind in kinds:
        times = [r["merge_s"] for r in runs[kind]]
        cpu = [r["cpu_s"] for r in runs[kind]]
        fig = figures(args.workdir / f"run-{kind}" / "master.db", args.reentries)
        best = min(runs[kind], key=lambda r: r["merge_s"])
        print(json.dumps({"set": kind, "merge_s_best": round(min(times), 2), "merge_s_worst": round(max(times), 2),
                          "cpu_s_best": round(min(cpu), 2), "timings": best["timings"], **fig},
                         ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
