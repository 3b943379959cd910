"""Shared fixtures: real workbooks written by xlcrm's own template writer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pgserver import PgServer, find_bin_dir

from xlcrm.intake.template import write_team_workbook
from xlcrm.schema import DEFAULT_SCHEMA, Schema

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

MakeBook = Callable[..., Path]


@pytest.fixture(autouse=True)
def _outputs_ledger(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test records the outputs xlcrm writes (xlcrm.store.outputs) in its own ledger, not the user's."""
    monkeypatch.setenv("XLCRM_STATE_DIR", str(tmp_path_factory.mktemp("xlcrm-state")))
    # The store is SQLite beside master.xlsx unless a test says otherwise (a developer's XLCRM_DB
    # must not move every test onto their server).
    monkeypatch.delenv("XLCRM_DB", raising=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of the installed PostgreSQL, started once for the session (tests/pgserver.py)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL installed (initdb and pg_ctl not found in /usr/lib/postgresql/*/bin "
                    "or on PATH); .ci/run installs the Debian package postgresql")
    server = PgServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh empty database on the session's server, as a postgresql:// URL of its superuser."""
    return pg_server.url(pg_server.database())


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


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Each test of a module marked ``pytestmark = pytest.mark.usefixtures("store")`` runs twice: with
    the master in master.db beside master.xlsx, and with the master on a fresh database of the session's
    PostgreSQL server (``XLCRM_DB``, as an admin sets it), which the commands then use."""
    if request.param == "sqlite":
        return None
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.url(server.database())
    monkeypatch.setenv("XLCRM_DB", url)
    return url
