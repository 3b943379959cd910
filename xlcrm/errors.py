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
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def about(self, path: str) -> XlcrmError:
        """The same refusal naming ``path`` (the file a temp file was written for)."""
        other = type(self)(self.message, path=path)
        other.exit_code = self.exit_code
        return other


class UnreadableWorkbook(XlcrmError):
    """The file cannot be read as a team workbook (not xlsx, corrupt, encrypted, bomb, ...)."""


class LockedError(XlcrmError):
    """The master is open in Excel or another merge holds its lock."""


def extra_hint(extra: str) -> str:
    """How to add an optional extra, as commands print it.

    xlcrm is not on a package index, so the hint names the two ways it is installed (README,
    "Installing on the firm's PCs"): from its folder, or from the wheel the admin put on the share.
    """
    return (f"pip install \".[{extra}]\" in the xlcrm folder, or pip install \"<the xlcrm wheel, "
            f"e.g. \\\\server\\share\\xlcrm-….whl>[{extra}]\"")
