"""CLI commands (search)."""

from __future__ import annotations

from xlcrm.cli import app  # noqa: F401
