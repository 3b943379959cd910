"""Merge benchmark: a team of workbooks into an empty master, then again with 5% of rows edited.

    python benchmarks/bench_merge.py                      # 10 files, 100,000 customers, 300,000 activities
    python benchmarks/bench_merge.py --customers 20000 --activities 60000 --files 4
    python benchmarks/bench_merge.py --skip-naive --workdir /tmp/bench

Every measured step runs in a fresh Python process, so wall seconds include start-up and imports and
peak RSS is that process's own high-water mark (VmHWM; worker processes that write error workbooks are
reported separately).  Steps:

1. ``naive``: the script a user would write — ``pandas.read_excel(engine="openpyxl")`` of every file's
   顧客 and 活動履歴 sheets, ``concat``, ``drop_duplicates`` on the e-mail, ``to_excel`` with openpyxl.
2. ``first merge``: ``xlcrm.master.merge`` of the team into an empty master (validation, IDs, duplicate
   detection, history, error workbooks, search index, master.xlsx with review sheets).
3. ``distribute`` (shown for information), then 5% of the customer and activity rows of every
   distributed workbook are edited (not timed) and
4. ``re-merge``: merging those workbooks back (three-way against their bases).

With ``--pg URL`` (or ``--pg temp``: a throwaway server of the installed PostgreSQL, as the tests start
one) steps 2-4 run again with the master on that PostgreSQL database (``XLCRM_DB``), each right after
the same step on master.db, and then the two-admin case: the distributed workbooks split into two folders, merged
at the same time by two processes into the server's master (they run one after the other under its
lock; both must land).  Between the server's steps, untimed, ``VACUUM (ANALYZE)`` does what autovacuum
does in the days between two merges.

The data comes from ``benchmarks/make_data.py`` (cached in the work folder).  Prints a Markdown table
and, with ``--json``, writes every figure to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

_PEAK = textwrap.dedent("""
    import json, resource, sys
    def _peak():
        out = {}
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    out["peak_rss_mb"] = int(line.split()[1]) / 1024
        except OSError:
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["workers_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return out
""")

NAIVE = _PEAK + textwrap.dedent("""
    import pandas as pd
    from pathlib import Path
    files = sorted(Path(sys.argv[1]).glob("*.xlsx"))
    customers, activities = [], []
    for f in files:
        sheets = pd.read_excel(f, sheet_name=None, engine="openpyxl")
        names = list(sheets)
        customers.append(sheets[names[0]])
        activities.append(sheets[names[2]])
    cust = pd.concat(customers, ignore_index=True)
    email = [c for c in cust.columns if "メール" in str(c) or "mail" in str(c).lower()][0]
    cust = cust.drop_duplicates(subset=[email])
    acts = pd.concat(activities, ignore_index=True)
    with pd.ExcelWriter(sys.argv[2], engine="openpyxl") as w:
        cust.to_excel(w, sheet_name="customers", index=False)
        acts.to_excel(w, sheet_name="activities", index=False)
    print(json.dumps({"customers": len(cust), "activities": len(acts), **_peak()}))
""")

MERGE = _PEAK + textwrap.dedent("""
    from pathlib import Path
    from xlcrm.api import Master
    from xlcrm.schema import DEFAULT_SCHEMA
    r = Master(Path(sys.argv[2]), schema=DEFAULT_SCHEMA).merge([Path(sys.argv[1])])
    files = [f.to_dict()["counts"] for f in r.files]
    totals = {k: sum(f[k] for f in files) for k in files[0]} if files else {}
    print(json.dumps({"timings": r.timings, "totals": totals, "records_created": r.records_created,
                      "history_rows": r.history_rows, "duplicates_new": r.duplicates_new,
                      "conflicts_new": r.conflicts_new, "deletions_new": r.deletions_new,
                      "warnings": r.warnings[:5], **_peak()}, ensure_ascii=False))
""")

DISTRIBUTE = _PEAK + textwrap.dedent("""
    from pathlib import Path
    from xlcrm.api import Master
    from xlcrm.schema import DEFAULT_SCHEMA
    paths = Master(Path(sys.argv[1]), schema=DEFAULT_SCHEMA).distribute(Path(sys.argv[2]))
    print(json.dumps({"workbooks": len(paths), **_peak()}))
""")


def _env(db: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLCRM_DB"}
    if db:
        env["XLCRM_DB"] = db
    return env


def run_step(code: str, *args: str, db: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          env=_env(db))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(wall, 1)
    return out


def two_admins(dist: Path, master: Path, db: str) -> dict[str, Any]:
    """The distributed workbooks in two folders, merged at once by two processes into the server."""
    import shutil

    books = sorted(dist.glob("*.xlsx"))
    folders = [dist.parent / "office-a", dist.parent / "office-b"]
    for i, folder in enumerate(folders):
        folder.mkdir(exist_ok=True)
        for book in books[i::2]:
            shutil.copy(book, folder / book.name)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", MERGE, str(folder), str(master)], env=_env(db),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folder in folders]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit(f"two admins: a merge failed:\n{outs[0][1][-2000:]}\n{outs[1][1][-2000:]}")
    reports = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    waited = [next((w for w in r["warnings"] if w.startswith("waited")), "") for r in reports]
    return {"wall_s": round(wall, 1), "workbooks": [len(books[0::2]), len(books[1::2])],
            "rows": [r["totals"].get("rows_read", 0) for r in reports], "waited": waited}


def _settle(url: str) -> None:
    """What autovacuum does on the server in the days between two merges (its GIN pending lists, the
    planner's statistics), done now so that it does not run during the next timed step."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _pg_url(arg: str) -> tuple[Any, str]:
    if arg != "temp":
        return None, arg
    sys.path.insert(0, str(HERE))
    from bench_search import temp_server

    return temp_server()


def edit_workbooks(folder: Path, fraction: float, seed: int = 5) -> dict[str, int]:
    """Edit ``fraction`` of the customer and activity rows of each workbook, as its owner would."""
    import pandas as pd

    from xlcrm.intake.template import write_team_workbook
    from xlcrm.intake.validate import validate_workbook
    from xlcrm.schema import DEFAULT_SCHEMA as S

    rng = random.Random(seed)
    edited = {"customers": 0, "activities": 0}
    statuses = [c.key for c in S.entity("customers").column("status").choices]
    for path in sorted(folder.glob("*.xlsx")):
        res = validate_workbook(path, S)
        meta = res.workbook.meta
        rows: dict[str, list[dict[str, Any]]] = {}
        for e in S:
            frame = res.frames[e.key][e.keys]
            recs = [{k: (None if v is None or (isinstance(v, float) and pd.isna(v)) else v)
                     for k, v in zip(e.keys, r, strict=True)} for r in frame.itertuples(index=False)]
            if e.key in edited:
                for rec in rng.sample(recs, int(len(recs) * fraction)):
                    if e.key == "customers":
                        rec["status"] = rng.choice([s for s in statuses if s != rec.get("status")])
                        rec["notes"] = f"{rec.get('notes') or ''} 再訪問予定".strip()
                    else:
                        rec["response"] = f"{rec.get('response') or ''} 折り返し済み".strip()
                    edited[e.key] += 1
            rows[e.key] = recs
        write_team_workbook(path, S, owner=meta.owner, lang=meta.lang, rows=rows, workbook_id=meta.workbook_id)
    return edited


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--activities", type=int, default=300_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=Path("bench_merge_work"))
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--edit", type=float, default=0.05, help="fraction of rows edited before the re-merge")
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument("--pg", metavar="URL", help="also run with the master on this PostgreSQL database "
                    "(an empty one), or 'temp' for a throwaway server")
    args = ap.parse_args(argv)

    work: Path = args.workdir
    team = work / f"team-{args.files}-{args.customers}-{args.activities}"
    if not team.exists():
        sys.path.insert(0, str(HERE))
        from make_data import make_team

        t0 = time.perf_counter()
        make_team(team, args.files, args.customers, args.activities)
        print(f"data: {team} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    results: dict[str, Any] = {"files": args.files, "customers": args.customers, "activities": args.activities,
                               "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    out = work / "run"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    if not args.skip_naive:
        print("naive pandas + openpyxl ...", file=sys.stderr)
        results["naive"] = run_step(NAIVE, str(team), str(out / "naive.xlsx"))
    master = out / "master" / "master.xlsx"
    master.parent.mkdir()
    # With --pg each step runs on master.db and then on the server, one after the other, so that the
    # machine's load (shared, two cores) weighs on both alike.
    server, url = _pg_url(args.pg) if args.pg else (None, "")
    pg_master = out / "pg-master" / "master.xlsx"
    try:
        print("first merge ...", file=sys.stderr)
        results["first_merge"] = run_step(MERGE, str(team), str(master))
        if url:
            pg_master.parent.mkdir()
            results["pg_first_merge"] = run_step(MERGE, str(team), str(pg_master), db=url)
            _settle(url)
        print("distribute ...", file=sys.stderr)
        results["distribute"] = run_step(DISTRIBUTE, str(master), str(out / "dist"))
        results["edited_rows"] = edit_workbooks(out / "dist", args.edit)
        if url:
            results["pg_distribute"] = run_step(DISTRIBUTE, str(pg_master), str(out / "pg-dist"), db=url)
            edit_workbooks(out / "pg-dist", args.edit)
            _settle(url)
        print("re-merge ...", file=sys.stderr)
        results["re_merge"] = run_step(MERGE, str(out / "dist"), str(master))
        if url:
            results["pg_re_merge"] = run_step(MERGE, str(out / "pg-dist"), str(pg_master), db=url)
            print("PostgreSQL: two admins ...", file=sys.stderr)
            edit_workbooks(out / "pg-dist", args.edit, seed=6)
            _settle(url)
            results["pg_two_admins"] = two_admins(out / "pg-dist", pg_master, url)
    finally:
        if server is not None:
            server.stop()

    naive = results.get("naive", {}).get("wall_s")
    print(f"\n{args.files} files, {args.customers:,} customers, {args.activities:,} activities, "
          f"{os.cpu_count()} CPUs\n")
    print("| step | wall s | peak RSS MB | vs naive |")
    print("|---|---:|---:|---:|")
    for key, label in (("naive", "naive pandas+openpyxl"), ("first_merge", "first merge (empty master)"),
                       ("distribute", "distribute"), ("re_merge", f"re-merge, {args.edit:.0%} edited")):
        r = results.get(key)
        if not r:
            continue
        ratio = f"{naive / r['wall_s']:.2f}x" if naive and key != "naive" else ""
        print(f"| {label} | {r['wall_s']} | {r['peak_rss_mb']:.0f} | {ratio} |")
    if "pg_first_merge" in results:
        print("\n| step | master.db s | PostgreSQL s | ratio |")
        print("|---|---:|---:|---:|")
        for key, label in (("first_merge", "first merge"), ("distribute", "distribute"),
                           ("re_merge", f"re-merge, {args.edit:.0%} edited")):
            a, b = results[key]["wall_s"], results[f"pg_{key}"]["wall_s"]
            print(f"| {label} | {a} | {b} | {b / a:.2f}x |")
        two = results["pg_two_admins"]
        print(f"\ntwo admins at once ({two['workbooks'][0]} + {two['workbooks'][1]} workbooks, "
              f"{two['rows'][0]:,} + {two['rows'][1]:,} rows): both done in {two['wall_s']} s; "
              f"{'; '.join(w for w in two['waited'] if w) or 'neither waited'}")
        for key in ("pg_first_merge", "pg_re_merge"):
            print(f"{key} stages (s): {results[key]['timings']}")
    for key in ("first_merge", "re_merge"):
        print(f"\n{key} stages (s): {results[key]['timings']}")
        print(f"{key} rows: {results[key]['totals']}  created: {results[key]['records_created']}  "
              f"history rows: {results[key]['history_rows']}  conflicts: {results[key]['conflicts_new']}  "
              f"error-workbook workers peak RSS MB: {results[key]['workers_peak_rss_mb']:.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
