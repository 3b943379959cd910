"""Which store holds the master: ``master.db`` beside master.xlsx (the default) or a PostgreSQL server.

A PostgreSQL master is named by a ``postgresql://`` URL, taken from the first of: the command's
``--db`` option, the environment variable ``XLCRM_DB``, ``[store] url`` in xlcrm.toml.  None of them:
SQLite beside master.xlsx, exactly as without this module.

Every command works on either store (on a server, through :mod:`xlcrm.store.working` or, for search
and history, the server's own queries).  What needs a master.db file of its own — the demo, which
writes one into its folder, and :meth:`xlcrm.Master.connect` — refuses a configured server in one line
(:func:`refuse_server`) rather than quietly using a master.db while the admin believes the server holds
the truth.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from xlcrm.errors import XlcrmError
from xlcrm.schema import Schema

#: The environment variable naming the master's PostgreSQL URL.
ENV = "XLCRM_DB"
SCHEMES = ("postgresql", "postgres")



@dataclass(frozen=True)
class StoreURL:
    """A PostgreSQL master's URL and where it was given (``--db``, ``XLCRM_DB``, ``xlcrm.toml [store] url``)."""

    url: str
    source: str

    def __str__(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    """``url`` fit to print: a password in it (``user:secret@``, ``?password=secret``) becomes ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def store_url(schema: Schema, given: str | None = None, *, environ: Mapping[str, str] | None = None,
              given_as: str = "--db") -> StoreURL | None:
    """The PostgreSQL master configured for this run, or None: the master is ``master.db`` beside
    master.xlsx.  ``given`` is a ``--db`` option (or the option ``given_as`` names); an empty value counts
    as not given.  A value that is not a ``postgresql://`` URL is refused in one line naming where it
    came from."""
    env = os.environ if environ is None else environ
    config = f"{schema.config_path or 'xlcrm.toml'} [store] url"
    for value, source in ((given, given_as), (env.get(ENV), ENV), (schema.store.get("url"), config)):
        if value is None or not str(value).strip():
            continue
        text = str(value).strip()
        if "://" not in text or urlsplit(text).scheme.lower() not in SCHEMES:
            raise XlcrmError(f"{source}: {redact(text)!r} is not a PostgreSQL URL; give "
                             "postgresql://USER@HOST:PORT/DATABASE, or nothing for master.db beside master.xlsx")
        return StoreURL(text, source)
    return None


def refuse_server(store: StoreURL | None, command: str) -> None:
    """One line, exit 2, when ``command``, which needs a master.db file, is given a PostgreSQL master."""
    if store is None:
        return
    undo = {"--db": "leave out --db", ENV: f"unset {ENV}"}.get(store.source, f"remove {store.source}")
    raise XlcrmError(f"{command}: works on a master.db file, and the master is on PostgreSQL ({store}, from "
                     f"{store.source}); {undo} to use {command} (`xlcrm store copy --to master.db` copies the "
                     "server's master into one)")
