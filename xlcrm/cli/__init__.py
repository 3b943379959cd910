"""The `xlcrm` command line: a thin layer over the library; one module per command group.

Every command's :class:`~xlcrm.errors.XlcrmError` and every malformed argument end in one line on
stderr and exit code 2 (:func:`run`), so an admin never sees a traceback for a problem they can fix.
"""

from __future__ import annotations

import errno
import sys

from xlcrm.cli.app import app
from xlcrm.errors import XlcrmError


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from xlcrm.cli import excel, foundation, importing, master, report, search, store  # noqa: F401


def main() -> None:
    sys.exit(run())


def run(args: list[str] | None = None) -> int:
    """Run the command line (``args``, else ``sys.argv``) and return its exit code.

    Every mistake a person can make ends in one line on stderr: an :class:`~xlcrm.errors.XlcrmError`
    (exit 2, or the error's own code) and a malformed argument alike (a missing option, a word where a
    number goes, an unknown option: exit 2, with the command's ``--help`` named), never a traceback.
    """
    from typer._click import exceptions as click_errors
    from typer.exceptions import Abort

    from xlcrm.terminal import shown

    _register()
    try:
        code = app(args=args, prog_name="xlcrm", standalone_mode=False)
    except XlcrmError as exc:
        print(f"xlcrm: {shown(exc, one_line=True)}", file=sys.stderr)
        return exc.exit_code
    except click_errors.NoArgsIsHelpError as exc:
        return exc.exit_code  # the help was printed: what a bare `xlcrm` or `xlcrm addin` asks for
    except click_errors.ClickException as exc:
        print(shown(usage_line(exc), one_line=True), file=sys.stderr)
        return exc.exit_code
    except Abort:
        print("xlcrm: aborted", file=sys.stderr)
        return 1
    except OSError as exc:
        line = machine_fault(exc)
        if line is None:
            raise  # a bug: its traceback is worth having
        print(shown(line, one_line=True), file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0


#: errno values of a machine's fault (no room, no right, a failing disk) rather than a bug.
_FAULTS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EIO, errno.EROFS,
           errno.EACCES, errno.EPERM}


def machine_fault(exc: OSError) -> str | None:
    """One line for a fault of the machine met while writing a file (a full disk, a read-only
    folder) that no command turned into its own message; None for any other error.  The file being
    written is a temp file removed on the way out (:func:`xlcrm.xlsx.writer.atomic_write`), so nothing is
    half-written."""
    if exc.errno not in _FAULTS:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return (f"xlcrm: {where}cannot write ({exc.strerror or exc}); free some space or check the folder's "
            "permissions, then run again (no file was left half-written)")


def usage_line(exc: Exception) -> str:
    """A usage error as one line: the command, what was wrong, where the help is."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "xlcrm"
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return f"{command}: {message} (see {command} --help)"
