"""The package's layers, checked by import-linter (contracts in pyproject.toml), and no import cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]


def test_layer_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    cmd = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    proc = subprocess.run([*cmd, "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "KEPT" in proc.stdout.upper()


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("xlcrm", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in modules:
        if m not in index:
            visit(m)
    assert cycles == [], cycles


def test_start_up_paths_load_no_heavy_library() -> None:
    """`import xlcrm`, the ribbon's search and history and the command line start without pandas,
    XlsxWriter, openpyxl or the PostgreSQL driver: each click of the ribbon starts a fresh Python."""
    code = ("import sys, xlcrm, xlcrm.views.search, xlcrm.views.history, xlcrm.excel.ribbon, xlcrm.excel.actions\n"
            "from xlcrm.cli import _register\n_register()\n"
            "heavy = ('pandas', 'numpy', 'pandera', 'xlsxwriter', 'openpyxl', 'matplotlib', 'psycopg')\n"
            "print(','.join(sorted(m for m in heavy if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"loaded at start-up: {proc.stdout.strip()}"
