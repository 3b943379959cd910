"""CLI: `xlcrm store init`, `xlcrm store roles`, `xlcrm store user` and `xlcrm store copy` (the master on a
PostgreSQL server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from xlcrm.api import copy_store, copy_store_out, init_store, store_roles, store_user
from xlcrm.cli.app import app
from xlcrm.cli.common import ConfigOpt, master_path, out, progress_bar
from xlcrm.cli.common import load_config as _schema
from xlcrm.errors import XlcrmError
from xlcrm.terminal import add_whole_column, narrow_table

store_app = typer.Typer(name="store", help="The master on a PostgreSQL server: its tables and its roles.",
                        no_args_is_help=True)
app.add_typer(store_app, name="store")

DbOpt = Annotated[str | None, typer.Option(
    "--db", help="The PostgreSQL database of the master: postgresql://USER@HOST:PORT/DATABASE (default: "
                 "XLCRM_DB, else [store] url in xlcrm.toml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON for scripts.")]


@store_app.command("init")
def init(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Create the master's tables in a PostgreSQL database (those missing; safe to run again)."""
    report = init_store(db, schema=_schema(config))
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    out.print(f"{escape(report.store)}: {len(report.created)} tables created, {len(report.kept)} already there"
              + (f", columns added: {', '.join(report.columns_added)}" if report.columns_added else ""))


@store_app.command("copy")
def copy(master: Annotated[Path | None, typer.Option(
             "--master", "-m", callback=master_path, help="The master workbook whose master.db is copied to "
                                                         "the server (the same as --from master.db).")] = None,
         db: DbOpt = None,
         source: Annotated[str | None, typer.Option(
             "--from", help="What to copy: a master.db (or the master.xlsx beside it), or the server's URL.")]
         = None,
         target: Annotated[str | None, typer.Option(
             "--to", help="Where to: the server's URL (default: as --db), or a master.db to copy the server's "
                          "master out into.")] = None,
         force: Annotated[bool, typer.Option(
             "--force", help="Replace a master.db given with --to (a copy of it is kept beside it).")] = False,
         config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Copy a master.db into the PostgreSQL master (records, history, review state and search index),
    replacing what is there, in one transaction; or, with --from the server and --to a master.db, back
    out of it.  Safe to run again."""
    schema = _schema(config)
    server = [v for v in (source, target) if v is not None and "://" in v]
    files = [v for v in (source, target) if v is not None and "://" not in v]
    if len(server) > 1 or len(files) > 1 or (master is not None and (files or (source and "://" in source))):
        raise typer.BadParameter("copy one way: --from master.db --to postgresql://… (or --master), or "
                                 "--from postgresql://… --to master.db", param_hint="--from/--to")
    url = server[0] if server else db
    given_as = ("--from" if source == url else "--to") if server else "--db"
    if server and db is not None and db != url:
        raise typer.BadParameter("give the server once, with --from/--to or with --db", param_hint="--db")
    if source is not None and "://" in source and target is None:
        raise typer.BadParameter("give --to master.db: where to copy the server's master", param_hint="--to")
    if target is not None and "://" not in target:
        with progress_bar(not as_json) as bar:
            report = copy_store_out(target, url, force=force, schema=schema, progress=bar, given_as=given_as)
    else:
        given = master if master is not None else (Path(files[0]) if files else None)
        if given is None:
            raise typer.BadParameter("name the master to copy: --from master.db (or --master master.xlsx)",
                                     param_hint="--from")
        with progress_bar(not as_json) as bar:
            report = copy_store(given, url, schema=schema, progress=bar, given_as=given_as)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    total = sum(report.rows.values())
    out.print(f"{escape(report.store)}: {total} rows copied in {len(report.rows)} tables "
              f"({report.seconds:.1f} s)")
    if not report.japanese_trigrams:
        out.print("note: this database's LC_CTYPE does not count kanji and kana as letters, so pg_trgm cannot "
                  "index Japanese text and each search reads every row; create the database with "
                  "LC_CTYPE 'C.UTF-8' (or ja_JP.UTF-8) for fast search")


@store_app.command("roles")
def roles(db: DbOpt = None, config: ConfigOpt = None,
          prefix: Annotated[str | None, typer.Option(
              "--prefix", help="Prefix of the PostgreSQL roles (default: xlcrm_): roles are shared by every "
                               "database of the server.")] = None,
          as_json: JsonOpt = False) -> None:
    """Create a PostgreSQL role per role of xlcrm.toml, with the column privileges the server enforces
    (safe to run again: the privileges become exactly what xlcrm.toml says)."""
    plans = store_roles(db, prefix=prefix, schema=_schema(config))
    if as_json:
        print(json.dumps([p.to_dict() for p in plans], ensure_ascii=False, indent=2))
        return
    table = narrow_table("PostgreSQL roles")
    rows = [(p.role, p.pg_role, p.access,
             ", ".join(f"{t}: {len(c)}" for t, c in p.withheld.items()) or "-", p.note) for p in plans]
    for i, head in enumerate(("role", "PostgreSQL role", "access")):
        add_whole_column(table, head, (r[i] for r in rows))
    table.add_column("columns withheld")
    table.add_column("why")
    for r in rows:
        table.add_row(*(escape(v) for v in r))
    out.print(table)
    example = next((p.role for p in plans if p.access == "read" and not p.own_only), plans[0].role if plans else "ROLE")
    out.print(f"give each person a login in one role: xlcrm store user LOGIN --role {escape(example)} (a role that "
              "sees only its own customers also takes --owner NAME, the 担当営業)")


@store_app.command("user")
def user(login: Annotated[str, typer.Argument(help="The person's PostgreSQL login (created when missing).")],
         role: Annotated[str, typer.Option("--role", help="The role of xlcrm.toml the login is in (exactly one).")],
         owner: Annotated[str | None, typer.Option(
             "--owner", help="The 担当営業 (as on the 顧客 sheet) whose customers an own-only role such as sales "
                             "sees; required for such a role.")] = None,
         password_env: Annotated[str | None, typer.Option(
             "--password-env", help="Set the login's password from this environment variable (never typed on "
                                    "the command line); without it an existing login keeps its password.")] = None,
         db: DbOpt = None, config: ConfigOpt = None,
         prefix: Annotated[str | None, typer.Option(
             "--prefix", help="Prefix of the PostgreSQL roles, as given to `xlcrm store roles`.")] = None,
         as_json: JsonOpt = False) -> None:
    """Give a person a login to the PostgreSQL master in one role of xlcrm.toml (safe to run again: a
    login moved to another role leaves the old one; a new --owner replaces the old)."""
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise XlcrmError(f"--password-env {password_env}: the environment variable is not set or empty")
    report = store_user(login, role, owner=owner, password=password, db_url=db, prefix=prefix,
                        schema=_schema(config))
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    what = "created" if report.created else "updated"
    line = f"login {escape(report.login)} {what}: role {escape(report.role)} ({escape(report.pg_role)})"
    if report.owner is not None:
        line += f", 担当営業 {escape(report.owner)} ({report.customers} customers)"
    out.print(line)
    out.print(f"on the person's PC, xlcrm.toml: {escape('[store]')} url = \"{escape(report.url)}\" (the password "
              "goes in libpq's password file, not the URL)")
