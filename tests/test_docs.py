"""The README's promises: CI runs exactly its test command, and every command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from xlcrm.cli import _register, app

REPO = Path(__file__).resolve().parents[1]


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = sh_blocks(readme())[1]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    last = [ln for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")][-1]
    assert last == test_command
    assert "pytest" in test_command


def test_first_command_installs_and_runs_the_demo() -> None:
    first = sh_blocks(readme())[0]
    assert "pip install ." in first and "xlcrm demo" in first


def test_every_cli_command_is_in_the_reference() -> None:
    _register()
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    text = readme()
    missing = sorted(n for n in names if f"`xlcrm {n}" not in text)
    assert missing == []


def test_readme_images_exist() -> None:
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme()):
        assert (REPO / target).is_file(), target
