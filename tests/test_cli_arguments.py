"""Every command and every option of the command line, driven with malformed values (hypothesis): the
command ends in one line on stderr with exit code 2 (or does its job, exit 0/1, where the value is
valid after all), never a traceback.  The commands and options are read from the typer app itself, so
a command added later is covered without touching this file."""

from __future__ import annotations

import io
import itertools
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from merge_fixtures import activity, book, customer
from typer.main import get_command

from xlcrm.cli import _register, app, run

_register()
ROOT = get_command(app)


def _commands(group: Any = ROOT, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd, (*path, name)))
        else:
            out.append(((*path, name), cmd))
    return out


COMMANDS = _commands()
#: (command path, parameter name) for every option and argument that takes a value.
PARAMS = [(path, p.name) for path, cmd in COMMANDS for p in cmd.params if not getattr(p, "is_flag", False)]

INTS = ["abc", "", "1.5", "-1", "0", "1e3", "99999999999999999999999", "１２", "7"]
DATES = ["2024/13/1", "4/1/2024", "yesterday", "2024-02-30", "0000-01-01", "2024/4/1", "9999-12-31", ""]
LANGS = ["fr", "", "JA", "en ", "日本語", "en"]
TEXTS = ["", " ", "-", "../x", "x" * 300, "C-999999", "佐藤", "\t", "'", "[red]x[/]", "%s"]
PATHS = ["missing", "dir", "garbage", "empty", "under_file", "deep_missing", "dot"]


class Env:
    """A tiny master, a team folder and a supply of fresh paths, shared by every example."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.team = root / "team"
        book(self.team / "sato.xlsx", {"customers": [customer("株式会社青空商事", phone="03-1111-2222")],
                                       "activities": [activity("株式会社青空商事", "訪問")]}, owner="佐藤")
        self.master = root / "m" / "master.xlsx"
        self.master.parent.mkdir()
        assert _run("merge", self.team, "--master", self.master, "--today", "2024-06-01")[0] == 0
        self.garbage = root / "garbage.xlsx"
        self.garbage.write_text("not a workbook\n", encoding="utf-8")
        self.text = root / "plain.txt"
        self.text.write_text("x\n", encoding="utf-8")
        self.pristine = root / "pristine"
        shutil.copytree(self.master.parent, self.pristine)
        self._n = itertools.count()

    def fresh(self, suffix: str = "") -> Path:
        return self.root / "out" / f"{next(self._n)}{suffix}"

    def reset_master(self) -> None:
        """Commands that change the master (merge, handover, resolve) start from the same one."""
        shutil.rmtree(self.master.parent)
        shutil.copytree(self.pristine, self.master.parent)

    def path(self, kind: str, suffix: str) -> str:
        return {"missing": str(self.root / f"missing{suffix}"), "dir": str(self.team), "garbage": str(self.garbage),
                "empty": "", "under_file": str(self.text / f"x{suffix}"),
                "deep_missing": str(self.root / "no" / "such" / f"folder{suffix}"), "dot": "."}[kind]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("cli_args")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLCRM_STATE_DIR", str(root / "state"))
        mp.chdir(root)  # "." and relative defaults (xlcrm-demo, import's folder) land here
        yield Env(root)


def _run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _annotation(param: Any) -> str:
    return str(param.type_descriptor.annotation)


def _kind(param: Any) -> str:
    ann = _annotation(param)
    if param.name in ("today", "as_of"):
        return "date"
    if param.name == "lang":
        return "lang"
    if "int" in ann:
        return "int"
    if "Path" in ann:
        return "path"
    return "text"


def _valid(cmd_path: tuple[str, ...], param: Any, env: Env) -> list[str]:
    """A value that lets the command run (for the required parameters not under test)."""
    name = param.name
    if name == "master":
        return [str(env.master)]
    if name in ("inputs", "sources"):
        return [str(env.team / "sato.xlsx")]
    if name in ("out", "out_path"):
        return [str(env.fresh(".xlam" if cmd_path == ("addin", "build") else ".xlsx"))]
    if name in ("out_dir", "dest", "png"):
        return [str(env.fresh())]
    return {"customer": ["C-000001"], "query": ["青空"], "from_owner": ["佐藤"], "to_owner": ["鈴木"],
            "role": ["admin"]}.get(name, ["x"])


#: Where a valid value runs the whole command for seconds (the demo pipeline, every chart as PNG),
#: which their own tests do: here only malformed values (paths by kind).
COSTLY: dict[tuple[tuple[str, ...], str], list[str]] = {
    (("demo",), "out_dir"): ["garbage", "under_file"],
    (("demo",), "seed"): ["abc", "", "1.5", "1e3", "１２"],
    (("demo",), "today"): [d for d in DATES if d not in ("", "2024/4/1")],
    (("report",), "png"): ["garbage", "under_file"],
}

def _bad(kind: str, only: list[str] | None = None) -> st.SearchStrategy[tuple[str, str]]:
    """(value or path kind, kind) pairs; paths are turned into real paths by the test."""
    values = only or {"int": INTS, "date": DATES, "lang": LANGS, "text": TEXTS, "path": PATHS}[kind]
    return st.sampled_from(values).map(lambda v: (v, kind))


def _must_fail(kind: str, value: str, param: Any) -> bool:
    """Values no command may accept (exit 2 expected)."""
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            return True
        return param.min is not None and number < param.min
    if kind == "date":
        return value not in ("", "2024/4/1")
    if kind == "lang":
        return value not in ("en", "")  # "" is the default where the option is optional
    return kind == "path" and param.name == "config" and value != "."


@pytest.mark.parametrize(("cmd_path", "name"), PARAMS, ids=[f"{' '.join(c)}:{n}" for c, n in PARAMS])
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_malformed_value_ends_in_one_line(env: Env, cmd_path: tuple[str, ...], name: str,
                                          data: st.DataObject) -> None:
    cmd = dict(COMMANDS)[cmd_path]
    target = next(p for p in cmd.params if p.name == name)
    kind = _kind(target)
    value, _ = data.draw(_bad(kind, COSTLY.get((cmd_path, name))), label=name)
    if kind == "path":
        value = env.path(value, ".xlsx" if "out" in name or name == "master" else "")
    if cmd_path[0] in ("merge", "handover", "resolve", "export-master", "distribute"):
        env.reset_master()
    options: list[str] = []
    arguments: list[str] = []
    for p in cmd.params:
        if getattr(p, "is_flag", False):
            continue
        if p is target:
            values = [value]
        elif p.required:
            values = _valid(cmd_path, p, env)
        else:
            continue
        if p.param_type_name == "argument":
            arguments.extend(values)
        else:
            options.extend(itertools.chain.from_iterable((p.opts[0], v) for v in values))
    dash = ["--"] if any(v.startswith("-") for v in arguments) else []  # a value, not an option
    args = [*cmd_path, *options, *dash, *arguments]
    code, out, err = _run(*args)
    where = f"xlcrm {' '.join(args)}\nexit {code}\nstdout: {out[-500:]}\nstderr: {err[-1500:]}"
    assert "Traceback" not in out + err, where
    assert code in (0, 1, 2), where
    if _must_fail(kind, value, target):
        assert code == 2, where
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xlcrm"), where
