"""Work on a copy of the open merge transaction in a second process, so both cores of a small PC work.

The end of a large merge is two independent, single-threaded jobs: building the search index (in the
transaction) and writing ``master.xlsx`` (which only reads it).  They cannot share one SQLite
connection at the same time, and a thread would share the GIL, so the workbook is written by a
forked child from ``Connection.serialize()`` — a byte copy of the database *as this connection sees
it*, uncommitted changes included — while the parent builds the index.  Nothing is committed before
the child has finished: a failed write still rolls the whole merge back.

A master database built in memory (a first import, :data:`xlcrm.store.db.MEMORY_BUILD_MAX_INPUT_BYTES`)
needs no copy: the child works on the connection it inherits, whose pages are the parent's as they
were at the fork (copy-on-write), and nothing of it is on disk for the two processes to share.  There
the roles swap (``masterbook.write_and_commit``): the child builds the index into its copy and writes
that copy as the new master.db, the parent writes the workbook.

Only where ``fork`` is safe and cheap (Linux); elsewhere, and for small masters, the caller runs the
job in-process.  The child never touches a parent's connection to a database *file* (it opens its own
in-memory copy: SQLite's file locks and journal belong to the parent) and leaves with ``os._exit`` so
no parent finaliser, atexit handler or buffered output runs twice.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.store.db import in_memory

#: Masters with fewer active records than this are written in-process: the fork and the copy of the
#: database cost more than they save (a 100,000-customer master saves about 2 s).
MIN_ROWS = 20_000


def available() -> bool:
    """Forking a process that holds threads is safe enough on Linux; macOS and Windows use spawn."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(sqlite3.Connection, "serialize")


class ForkedJob:
    """``job(conn)`` run in a forked child on an in-memory copy of ``conn`` as it is now.

    Call :meth:`wait` (always; it reaps the child): it returns what the job returned (pickled back)
    when the child is done and re-raises the child's exception — an :class:`XlcrmError` keeps its
    one-line message.
    """

    def __init__(self, conn: sqlite3.Connection, job: Callable[[sqlite3.Connection], Any]) -> None:

        # In a list, so the child can drop its only reference; a database in memory is not copied.
        data = [] if in_memory(conn) else [conn.serialize()]
        #: whether the child works on a serialized copy (a database file) or on its inherited pages
        self.copied = bool(data)
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        # Objects the collector would walk (and so write to) while the child runs are frozen: every
        # page written after fork is copied for the parent (seconds of system time for a large master).
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            die_with(parent)
            _child(data, job, write_fd, conn)
        del data  # the parent's copy: freed before the parent goes on
        os.close(write_fd)
        self.pid: int | None = pid
        self._read_fd = read_fd

    def wait(self) -> Any:
        if self.pid is None:
            return None
        try:
            chunks = []
            while chunk := os.read(self._read_fd, 1 << 16):
                chunks.append(chunk)
            _, status = os.waitpid(self.pid, 0)
        except BaseException:  # Ctrl-C while waiting: the child's half-written file is not wanted
            self.kill()
            raise
        finally:
            self._close()
        self.pid = None
        gc.unfreeze()
        payload = b"".join(chunks)
        if os.waitstatus_to_exitcode(status) == 0 and payload.startswith(b"ok"):
            return pickle.loads(payload[2:])
        error: BaseException | None = None
        if payload.startswith(b"E"):
            with contextlib.suppress(Exception):
                error = pickle.loads(payload[1:])
        if isinstance(error, BaseException):
            raise error
        raise XlcrmError(f"the process writing the master workbook ended unexpectedly "
                         f"(exit status {os.waitstatus_to_exitcode(status)}); nothing was changed — run "
                         "the command again")

    def kill(self) -> None:
        """Stop the child (the parent's own work failed): nothing it writes is wanted."""
        self._close()
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.pid = None
        gc.unfreeze()

    def _close(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1


def _child(data: list[bytes], job: Callable[[sqlite3.Connection], Any], write_fd: int,
           inherited: sqlite3.Connection) -> None:
    code = 0
    try:
        gc.disable()  # no collection may finalise an object (a cursor) that belongs to the parent
        if data:
            conn = sqlite3.connect(":memory:")
            conn.deserialize(data.pop())  # copied into SQLite's memory; the bytes are freed here
        else:
            conn = inherited  # in memory: this process's own copy since the fork
        result = pickle.dumps(job(conn))
        _write_all(write_fd, b"ok" + result)
    except BaseException as exc:  # everything goes back to the parent
        code = 1
        try:
            blob = pickle.dumps(exc)
            pickle.loads(blob)  # an exception that cannot come back becomes its text
        except Exception:
            blob = pickle.dumps(XlcrmError(f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(Exception):
            _write_all(write_fd, b"E" + blob)
    finally:
        os._exit(code)


def die_with(parent: int) -> None:
    """A killed merge must not leave a child working on: ask Linux for SIGKILL when the parent dies.

    Called first thing in a child forked by ``parent`` (this module's job, merge's worker processes).
    Elsewhere (no prctl) it does nothing: spawned workers end when their pipe to the parent closes.
    """
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
