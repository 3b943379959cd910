"""Errors a person can act on.

Every refusal xlcrm makes reaches the user as one line (file, sheet, cell, what to do) and exit code 2;
the CLI and the add-in catch :class:`XlcrmError` and never show a traceback for it.
"""

from __future__ import annotations


class XlcrmError(Exception):
    """A refusal with a one-line, user-facing message. ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UnreadableWorkbook(XlcrmError):
    """The file cannot be read as a team workbook (not xlsx, corrupt, encrypted, bomb, ...)."""


class LockedError(XlcrmError):
    """The master is open in Excel or another merge holds its lock."""
