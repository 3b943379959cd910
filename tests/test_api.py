"""The Python API: docs/api.md's example runs as written, every Master method appears in it, and the
package's public names are what docs/api.md lists."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import xlcrm
from xlcrm.api import Master

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "api.md").read_text(encoding="utf-8")


def test_the_documented_example_runs(tmp_path: Path) -> None:
    code = "\n".join(re.findall(r"```python\n(.*?)```", DOC, re.S))
    assert code.strip()
    env = {**os.environ, "XLCRM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "顧客" / "master.db").exists() and (work / "report.xlsx").exists()
    assert (work / "imported").is_dir() and (work / "引き継ぎ.xlsx").exists()


def test_every_call_is_documented_and_shown() -> None:
    methods = [n for n, v in inspect.getmembers(Master, inspect.isfunction) if not n.startswith("_")]
    assert methods
    example = "\n".join(re.findall(r"```python\n(.*?)```", DOC, re.S))
    for name in methods:
        assert f"`Master.{name}(" in DOC, name  # in the reference table
        assert f"m.{name}(" in example, name  # and run by the example
    for name in ("template_workbook", "validate_workbooks"):
        assert f"`{name}(" in DOC and f"{name}(" in example


def test_public_names() -> None:
    assert {"Master", "template_workbook", "validate_workbooks", "XlcrmError"} <= set(xlcrm.__all__)
    for name in xlcrm.__all__:
        assert getattr(xlcrm, name) is not None
    # The functions do not shadow the modules of the same stage.
    for module in ("xlcrm.intake.template", "xlcrm.intake.validate"):
        importlib.import_module(module)
    assert inspect.ismodule(xlcrm.intake.template) and inspect.ismodule(xlcrm.intake.validate)
    assert callable(xlcrm.template_workbook) and callable(xlcrm.validate_workbooks)
