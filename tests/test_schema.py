"""The schema module, the single source of truth: built-in entities, xlcrm.toml adaptations and their
one-line refusals, roles, and the header vocabulary other modules derive from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xlcrm.cli import _register, app
from xlcrm.errors import XlcrmError
from xlcrm.schema import DEFAULT_SCHEMA, build_schema, fold_header, load_schema

S = DEFAULT_SCHEMA
runner = CliRunner()
_register()


def test_builtin_entities_have_ids_refs_and_unique_labels() -> None:
    assert [e.key for e in S] == ["customers", "contacts", "activities", "deals", "todos"]
    for e in S:
        assert e.id_column.type == "id" and e.id_column.system
        labels = [fold_header(c.ja) for c in e.columns]
        assert len(labels) == len(set(labels)), e.key
        if e.key != "customers":
            assert e.ref_column is not None and e.ref_column.key == "customer"
    assert S.role("analyst").hide and not S.role("admin").hide


def test_choices_accept_every_spelling() -> None:
    status = S.entity("customers").column("status")
    lookup = status.choice_lookup()
    assert lookup["見込み"] == lookup["prospect"] == lookup["見込"] == "prospect"
    pref = S.entity("customers").column("prefecture").choice_lookup()
    assert pref["東京"] == pref["東京都"] == pref["tokyo"] == "東京都"


def test_toml_disables_adds_and_replaces(tmp_path: Path) -> None:
    cfg = tmp_path / "xlcrm.toml"
    cfg.write_text('''
[choices]
industry = ["木材", "建材"]

[sheets."顧客"]
disable = ["FAX"]
columns = [{key = "emergency", ja = "緊急連絡先", en = "Emergency phone", type = "phone"}]

[roles.intern]
hide = ["phone", "email"]
own_only = true
''', encoding="utf-8")
    s = load_schema(cfg)
    cust = s.entity("customers")
    assert not cust.has("fax") and cust.column("emergency").type == "phone"
    assert [c.ja for c in cust.column("industry").choices] == ["木材", "建材"]
    intern = s.role("intern")
    assert intern.own_only and set(intern.hide) == {"phone", "email"}
    # the template follows: the command writes the new column and drops the disabled one
    out = tmp_path / "t.xlsx"
    res = runner.invoke(app, ["template", str(out), "--owner", "佐藤", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    import openpyxl

    head = [c.value for c in openpyxl.load_workbook(out)["顧客"][1]]
    assert "緊急連絡先" in head and "FAX" not in head


@pytest.mark.parametrize(("toml", "words"), [
    ('[nonsense]\nx = 1\n', "unknown section"),
    ('[sheets."顧客"]\ndisable = ["顧客名"]\n', "required"),
    ('[sheets."請求"]\ndisable = []\n', "is not a sheet"),
    ('[choices]\nnot_a_list = ["a"]\n', "names no choice list"),
    ('[sheets."顧客"\n', "not valid TOML"),
])
def test_bad_config_is_one_line(tmp_path: Path, toml: str, words: str) -> None:
    cfg = tmp_path / "xlcrm.toml"
    cfg.write_text(toml, encoding="utf-8")
    with pytest.raises(XlcrmError) as e:
        load_schema(cfg)
    assert words in str(e.value) and "\n" not in str(e.value)
    res = subprocess.run([sys.executable, "-m", "xlcrm", "schema", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match="not found"):
        load_schema(tmp_path / "nope.toml")
    assert build_schema({}).entity("customers").has("fax")  # no file, the built-in schema
