"""Shared fixtures: real workbooks written by xlcrm's own template writer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from xlcrm.intake.template import write_team_workbook
from xlcrm.schema import DEFAULT_SCHEMA, Schema

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

MakeBook = Callable[..., Path]


@pytest.fixture(autouse=True)
def _outputs_ledger(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test records the outputs xlcrm writes (xlcrm.store.outputs) in its own ledger, not the user's."""
    monkeypatch.setenv("XLCRM_STATE_DIR", str(tmp_path_factory.mktemp("xlcrm-state")))


@pytest.fixture
def schema() -> Schema:
    return DEFAULT_SCHEMA


@pytest.fixture
def make_book(tmp_path: Path) -> MakeBook:
    """Write a real team workbook: ``make_book({"customers": [{...}]}, owner=..., lang=...)``."""
    counter = iter(range(10_000))

    def make(rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, *, owner: str = "佐藤",
             lang: str = "ja", name: str | None = None, schema: Schema = DEFAULT_SCHEMA) -> Path:
        path = tmp_path / (name or f"book{next(counter)}.xlsx")
        return write_team_workbook(path, schema, owner=owner, lang=lang, rows=rows)  # type: ignore[arg-type]

    return make
