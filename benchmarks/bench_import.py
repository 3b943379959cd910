"""`xlcrm import` throughput: a 50,000-row CP932 business-card CSV and a 200,000-row sales ledger (run on demand).

    .venv/bin/python benchmarks/bench_import.py [--cards 50000] [--ledger 200000] [--repeat 2] [--dir DIR]

1. Writes the two sources (CP932, as Excel's 「CSV (コンマ区切り)」 writes them on a Japanese Windows):
   cards of 10,000 companies (five people each, company names spelled 株式会社 / (株) / ㈱ in turn),
   and ledger rows whose 得意先 spell the same companies differently again.
2. ``xlcrm import`` of both into standard workbooks (one per owner), in a child process: seconds and
   peak RSS; then ``xlcrm merge`` of the result into a new master, likewise.
3. The baseline: the same two CSV files read with ``pandas.read_csv`` and written with openpyxl
   (``DataFrame.to_excel(engine="openpyxl")``), in a child process.

Each figure is the best of ``--repeat`` runs (the spread is printed): on a shared 2-core machine a
single run says little.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMS = ("株式会社{}", "(株){}", "{}㈱", "{}株式会社")
PREFS = ("東京都千代田区丸の内", "大阪府大阪市北区梅田", "愛知県名古屋市中区栄", "福岡県福岡市中央区天神")
FAMILY = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤")
GIVEN = ("太郎", "花子", "一郎", "美咲", "健一", "陽子", "大輔", "さくら")
PRODUCTS = ("ボルトM6", "ナットM6", "ワッシャー", "スプリング", "ベアリング", "シャフト", "ギア", "カバー")
OWNERS = ("佐藤", "鈴木", "高橋", "田中")


def company(i: int) -> str:
    return f"テスト精機{i:05d}"


def write_sources(directory: Path, n_cards: int, n_ledger: int) -> tuple[Path, Path]:
    rnd = random.Random(1)
    n_companies = max(n_cards // 5, 1)
    cards = directory / "名刺.csv"
    lines = ["会社名,部署名,役職,姓,名,e-mail,郵便番号,住所,TEL会社,携帯"]
    for i in range(n_cards):
        c = i % n_companies
        name = FORMS[(i // n_companies) % 2].format(company(c))
        lines.append(",".join((
            name, "営業部", "課長" if i % 3 else "", FAMILY[i % 10], GIVEN[i % 8], f"p{i}@c{c}.example.jp",
            f"{100 + c % 800:03d}-{c % 10000:04d}", f"{PREFS[c % 4]}{c % 9 + 1}-{c % 20 + 1}",
            f"03-{c % 10000:04d}-{(c * 7) % 10000:04d}", f"090-{i % 10000:04d}-{(i * 3) % 10000:04d}")))
    cards.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp932"))
    ledger = directory / "売上台帳.csv"
    lines = ["伝票日付,伝票番号,得意先名,商品名,数量,単価,金額,担当者"]
    for i in range(n_ledger):
        c = rnd.randrange(n_companies)
        q, price = rnd.randrange(1, 100), rnd.choice((30, 120, 450, 1200))
        lines.append(",".join((
            f"2024/{i % 12 + 1}/{i % 28 + 1}", str(100000 + i), FORMS[2 + i % 2].format(company(c)),
            PRODUCTS[i % 8], str(q), str(price), str(q * price), OWNERS[c % 4])))
    ledger.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp932"))
    return cards, ledger


def child(kind: str, args: list[str]) -> None:
    """One measured step in this process; prints a JSON line with seconds and peak RSS (MB)."""
    t0 = time.perf_counter()
    if kind == "import":
        from xlcrm.intake.importer import import_sources
        from xlcrm.schema import DEFAULT_SCHEMA

        *sources, out = args
        res = import_sources([Path(s) for s in sources], DEFAULT_SCHEMA, out_dir=Path(out), owner="佐藤")
        extra = {"workbooks": len(res.workbooks), "rows": sum(s.counts.rows_written for s in res.sources
                                                               if s.counts),
                 "exit_code": res.exit_code}
    elif kind == "merge":
        from xlcrm.master.run import merge
        from xlcrm.schema import DEFAULT_SCHEMA

        team, master = args
        rep = merge([Path(team)], Path(master), DEFAULT_SCHEMA)
        extra = {"history_rows": rep.history_rows}
    else:
        import pandas as pd

        *sources, out = args
        with pd.ExcelWriter(out, engine="openpyxl") as xw:
            for i, s in enumerate(sources):
                pd.read_csv(s, encoding="cp932", dtype=str).to_excel(xw, sheet_name=f"s{i}", index=False)
        extra = {}
    seconds = time.perf_counter() - t0
    me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = me.ru_maxrss / 1024
    # CPU seconds (this process and its workers, start-up included) say less about the machine's load.
    cpu = me.ru_utime + me.ru_stime + workers.ru_utime + workers.ru_stime
    print(json.dumps({"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(rss),
                      **extra}))


def measure(kind: str, args: list[str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cards", type=int, default=50_000)
    ap.add_argument("--ledger", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--child", nargs="+", default=None)
    ns = ap.parse_args()
    if ns.child:
        child(ns.child[0], ns.child[1:])
        return
    base = ns.dir or Path(tempfile.mkdtemp(prefix="bench_import_"))
    base.mkdir(parents=True, exist_ok=True)
    cards, ledger = write_sources(base, ns.cards, ns.ledger)
    print(f"sources: {cards} ({cards.stat().st_size / 1e6:.1f} MB), {ledger} ({ledger.stat().st_size / 1e6:.1f} MB)")
    runs: dict[str, list[dict[str, float]]] = {"import": [], "merge": [], "pandas+openpyxl": []}
    for r in range(ns.repeat):
        team, master = base / f"team{r}", base / f"master{r}"
        shutil.rmtree(team, ignore_errors=True)
        shutil.rmtree(master, ignore_errors=True)
        master.mkdir()
        runs["import"].append(measure("import", [str(cards), str(ledger), str(team)]))
        runs["merge"].append(measure("merge", [str(team), str(master / "master.xlsx")]))
        runs["pandas+openpyxl"].append(measure("baseline", [str(cards), str(ledger), str(base / "baseline.xlsx")]))
    best = {k: min(v, key=lambda d: d["seconds"]) for k, v in runs.items()}
    for k, v in runs.items():
        spread = ", ".join(f"{d['seconds']:.2f}" for d in v)
        print(f"{k:16s} best {best[k]['seconds']:6.2f} s  CPU {best[k]['cpu_seconds']:6.2f} s  peak RSS {best[k]['peak_rss_mb']:5.0f} MB  (runs: {spread}) "
              f"{ {k2: v2 for k2, v2 in best[k].items() if k2 not in ('seconds', 'cpu_seconds', 'peak_rss_mb')} }")
    print(f"import is {best['pandas+openpyxl']['seconds'] / best['import']['seconds']:.1f}x faster than "
          f"pandas.read_csv + openpyxl ({best['pandas+openpyxl']['cpu_seconds'] / best['import']['cpu_seconds']:.1f}x "
          "in CPU seconds)")


if __name__ == "__main__":
    main()
