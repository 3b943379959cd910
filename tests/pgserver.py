"""A real PostgreSQL server for the tests: initdb and pg_ctl of the installed PostgreSQL, in a temp folder.

The server listens on 127.0.0.1 at a free port and on a Unix socket in the same temp folder, trusts
every local connection (no passwords: the tests log in as the roles they create), keeps no data past
the session (fsync off) and is stopped and removed at the end of the session.  initdb refuses to run
as root, so under root the server runs as the ``postgres`` user with the temp folder given to it.

:func:`find_bin_dir` looks in Debian's ``/usr/lib/postgresql/<version>/bin`` (newest first), then on
``PATH``; where neither has initdb and pg_ctl the tests that need a server are skipped with that reason
(.ci/run installs the Debian package ``postgresql``, so CI runs them).
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None where no PostgreSQL server is installed."""
    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.name)) or (0,)

    candidates = sorted(DEBIAN_ROOT.glob("*/bin"), key=lambda p: version(p.parent), reverse=True) \
        if DEBIAN_ROOT.is_dir() else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One throwaway cluster; :meth:`database` hands out a fresh, empty database per test."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="xlcrm-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise RuntimeError(f"running as root: initdb needs another user to run as, and there is no "
                                   f"{SUPERUSER!r} user (the Debian package postgresql creates it)") from None
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", SUPERUSER, "--"]
        self._names = itertools.count(1)
        self.running = False

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as, *args], cwd=self.root, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> PgServer:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions")
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
                   "-c max_connections=30")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")
        self.running = True
        return self

    def stop(self) -> None:
        try:
            if self.running:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A URL as a user writes it in xlcrm.toml: TCP to 127.0.0.1 at the server's port."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """The same server through its Unix socket (libpq's ``host`` is then a folder)."""
        return f"postgresql://{user}@/{database}?host={self.socket_dir}&port={self.port}"

    def database(self) -> str:
        """A new empty database; its name."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run ``sql`` as the superuser (the test's own setup: logins, checks)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
