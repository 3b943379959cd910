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


def doc_texts() -> list[tuple[str, str]]:
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [(p.relative_to(REPO).as_posix(), p.read_text(encoding="utf-8")) for p in paths]


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def test_every_toml_example_loads_and_xlcrm_accepts_it() -> None:
    import tomllib

    from xlcrm.schema import build_schema

    blocks = [(name, b) for name, text in doc_texts() for b in fenced(text, "toml")]
    assert blocks, "the README documents xlcrm.toml with an example"
    for name, block in blocks:
        data = tomllib.loads(block)  # a TOMLDecodeError names the line
        build_schema(data)  # an XlcrmError says what xlcrm refuses in it
        assert name


def _xlcrm_commands(block: str) -> list[list[str]]:
    """Each `xlcrm ...` invocation of a shell block, as argument lists (after `xlcrm`, up to a pipe)."""
    import shlex

    out = []
    for line in block.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        for i, word in enumerate(words):
            if word == "xlcrm" and (i == 0 or words[i - 1] in ("|", "&&", ";", "||")):
                args = []
                for w in words[i + 1:]:
                    if w in ("|", "&&", ";", "||"):
                        break
                    args.append(w)
                out.append(args)
    return out


def test_every_shell_example_is_a_command_xlcrm_parses() -> None:
    import typer

    _register()
    group = typer.main.get_command(app)
    seen = 0
    for name, text in doc_texts():
        for block in fenced(text, "sh"):
            for args in _xlcrm_commands(block):
                seen += 1
                where = f"{name}: xlcrm {' '.join(args)}"
                assert args and args[0] in group.commands, where  # type: ignore[attr-defined]
                command = group.commands[args[0]]  # type: ignore[attr-defined]
                try:
                    command.make_context(args[0], args[1:])
                except typer.TyperException as exc:
                    raise AssertionError(f"{where}: {exc}") from None
    assert seen >= 10


def test_a_toml_section_in_prose_is_quoted_when_it_must_be() -> None:
    # `[sheets.顧客]` in running text would be copied into xlcrm.toml as invalid TOML.
    for name, text in doc_texts():
        assert not re.search(r"\[sheets\.[^\x00-\x7f\]]", text), name


def test_install_hints_never_name_a_package_index_install() -> None:
    """xlcrm is not on a package index: no doc or message says ``pip install xlcrm`` or ``xlcrm[extra]``."""
    texts = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "xlcrm").rglob("*.py")]
    index_install = re.compile(r"pip install\s+['\"]?xlcrm\b(?!-)|['\"]xlcrm\[")
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in texts
             for m in index_install.finditer(p.read_text(encoding="utf-8"))]
    assert found == []
    assert "python -m build" in readme() and ".whl[excel]" in readme()
    assert ".whl[excel]" in (REPO / "docs" / "addin.md").read_text(encoding="utf-8")


def test_addin_schema_is_vendored() -> None:
    assert (REPO / "tests" / "data" / "customui" / "customui14.xsd").is_file()
    assert "MS-CUSTOMUI" in (REPO / "tests" / "data" / "customui" / "README.md").read_text(encoding="utf-8")


def test_every_missing_extra_is_pointed_at_the_folder_or_the_wheel() -> None:
    """A command needing an extra that is not installed names the two ways xlcrm is installed."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['psycopg'] = None; from xlcrm.cli import main; "
            "sys.argv = ['xlcrm', 'store', 'init', '--db', 'postgresql://nobody@127.0.0.1:1/x']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert 'pip install ".[postgres]"' in proc.stderr and ".whl>[postgres]" in proc.stderr
