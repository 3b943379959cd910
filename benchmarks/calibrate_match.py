"""How often each "differs" level of duplicate detection occurs among true duplicates (m) and among
different customers (u), measured on the generated sets, beside the values ``xlcrm.master.match.M_U`` uses.

    python benchmarks/calibrate_match.py                         # FEBRL 1-4, ja, crowded and spread sets
    python benchmarks/calibrate_match.py --sets ja --n 20000

The pairs counted are the ones duplicate detection looks at: every record against the candidates its
blocking keys give (``MatchIndex.candidates``), once per pair.  A level applies when both records hold
the field: ``phone_differs`` (phones and FAX on both, none shared), ``email_differs``,
``postal_code_differs``, ``address_number_differs`` (both addresses split into their parts, one place,
other street numbers; :func:`xlcrm.address.compare_folded`).  m = the share of true pairs where the
field differs, u = the same among different customers; the Fellegi-Sunter weight is log2(m/u).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from math import log2
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LEVELS = ("phone_differs", "email_differs", "postal_code_differs", "address_number_differs")


def levels(q: Any, o: Any) -> dict[str, bool]:
    """level -> whether it occurs, for the levels that apply to the pair (the field on both rows)."""
    from xlcrm.address import compare_folded

    out: dict[str, bool] = {}
    if q.phones and o.phones:
        out["phone_differs"] = not set(q.phones) & set(o.phones)
    if q.email and o.email:
        out["email_differs"] = q.email != o.email
    if q.postal and o.postal:
        out["postal_code_differs"] = q.postal != o.postal
    if q.address and o.address:
        verdict = compare_folded(q.address, o.address)[0]
        if verdict in ("same", "building", "building_differs", "number_differs"):
            out["address_number_differs"] = verdict == "number_differs"
    return out


def count(records: list[tuple[str, dict[str, Any]]], entity: dict[str, str]) -> dict[str, Counter[str]]:
    from bench_dedupe import SCHEMA

    from xlcrm.master.match import MatchIndex

    index = MatchIndex(SCHEMA)
    index.add_many(records)
    keys = {rid: index.keys_for(rec) for rid, rec in records}
    tally: dict[str, Counter[str]] = {lv: Counter() for lv in LEVELS}
    for rid, q in keys.items():
        for oid in index.candidates(q):
            if oid <= rid:
                continue
            side = "m" if entity[rid] == entity[oid] else "u"
            for lv, differs in levels(q, keys[oid]).items():
                tally[lv][side] += 1
                tally[lv][side + "_differs"] += differs
    return tally


def crowd_records(kind: str) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    from bench_dedupe import canonical
    from make_crowd import rows

    books, _ = rows(kind)
    records, entity = [], {}
    for f, book in enumerate(books):
        for r, row in enumerate(book):
            rid = f"{f}-{r}"
            records.append((rid, canonical(row)))
            entity[rid] = row["notes"]
    return records, entity


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="febrl1,febrl2,febrl3,febrl4,ja,crowded,spread")
    ap.add_argument("--n", type=int, default=4000, help="base entities in the Japanese set")
    ap.add_argument("--seed", type=int, default=20240401)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_dedupe import JapaneseSet, febrl_sets

    from xlcrm.master.match import M_U

    total: dict[str, Counter[str]] = {lv: Counter() for lv in LEVELS}
    print("| set | level | true pairs (field on both) | m | other pairs | u | log2(m/u) |")
    print("|---|---|---:|---:|---:|---:|---:|")

    def row(name: str, lv: str, c: Counter[str]) -> None:
        m = c["m_differs"] / c["m"] if c["m"] else float("nan")
        u = c["u_differs"] / c["u"] if c["u"] else float("nan")
        w = log2(m / u) if c["m"] and c["u"] and m > 0 and u > 0 else float("nan")
        print(f"| {name} | {lv} | {c['m']:,} | {m:.3f} | {c['u']:,} | {u:.3f} | {w:+.1f} |", flush=True)

    for name in args.sets.split(","):
        if name == "ja" or name.startswith("febrl"):
            ds = JapaneseSet(args.seed).build(args.n) if name == "ja" else febrl_sets([name])[0]
            records, entity = ds.records, ds.entity
        else:
            records, entity = crowd_records(name)
        tally = count(records, entity)
        for lv in LEVELS:
            row(name, lv, tally[lv])
            total[lv].update(tally[lv])
    for lv in LEVELS:
        row("all", lv, total[lv])
    for lv in LEVELS:
        m, u = M_U[lv]
        print(f"| model (xlcrm.master.match.M_U) | {lv} | | {m:.3f} | | {u:.3f} | {log2(m / u):+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
