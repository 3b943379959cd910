"""The Python API: one object for a master and two functions for staff workbooks.

(The two are named ``template_workbook`` and ``validate_workbooks``, not after the commands: the
package's modules ``xlcrm.intake.template`` and ``xlcrm.intake.validate`` hold those names.)

Everything the ``xlcrm`` commands and the ribbon do is a call here, in the spirit of sqlite-utils'
``Database``: open a master once (its schema, password and language come with it), then call what
you need.  Results are the library's own typed objects; each serialises with ``to_dict()``.

    >>> from xlcrm import Master, template_workbook
    >>> template_workbook("佐藤.xlsx", owner="佐藤")                 # doctest: +SKIP
    >>> m = Master("顧客/master.xlsx")                               # doctest: +SKIP
    >>> m.merge(["team/"]).records_created                          # doctest: +SKIP
    >>> [h.name for h in m.search("やまだ精機")]                     # doctest: +SKIP

Heavy modules (pandas, pandera, XlsxWriter) are imported by the call that needs them, so ``import
xlcrm`` stays instant for the ribbon's search.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from xlcrm.errors import XlcrmError
from xlcrm.schema import Lang, Schema, load_schema
from xlcrm.store import db
from xlcrm.store.outputs import open_master
from xlcrm.store.url import StoreURL, refuse_server, store_url

if TYPE_CHECKING:
    from xlcrm.intake.importer import ImportResult
    from xlcrm.intake.validate import Unreadable, ValidationResult
    from xlcrm.master.handover import HandoverResult
    from xlcrm.master.merge import MergeReport
    from xlcrm.master.resolve import ResolveReport
    from xlcrm.store.pg import CopyReport, InitReport, LoginReport, RolePlan
    from xlcrm.store.working import ServerSession
    from xlcrm.views.export import ExportResult, MailingResult, ThirdParty
    from xlcrm.views.history import CustomerHistory
    from xlcrm.views.report import ReportOptions, ReportResult
    from xlcrm.views.search import SearchHit

__all__ = ["Master", "copy_store", "copy_store_out", "import_lists", "init_store", "store_roles", "store_user",
           "template_workbook", "validate_workbooks"]


def _schema(schema: Schema | None, config: str | Path | None) -> Schema:
    return schema if schema is not None else load_schema(Path(config) if config is not None else None)


class Master:
    """A master: ``master.xlsx`` and the ``master.db`` beside it (created by the first :meth:`merge`).

    ``schema``: the firm's schema (default: ``config``'s xlcrm.toml, else the built-in one).
    ``password``: opens an encrypted master.xlsx and seals every workbook the calls write.
    ``progress``: told ``(stage, done, total)`` while a call reads or writes a PostgreSQL master.
    ``store``: the PostgreSQL master configured (``XLCRM_DB``, xlcrm.toml ``[store] url``), if any: then
    search and history read the server, and every other call works on a copy of the server's master
    under its lock and writes its changes back (:mod:`xlcrm.store.working`); master.xlsx stays at
    ``path``.
    """

    def __init__(self, path: str | Path, *, schema: Schema | None = None, config: str | Path | None = None,
                 password: str | None = None, progress: Callable[[str, int, int], None] | None = None) -> None:
        self.path = Path(path)
        self.schema = _schema(schema, config)
        self.password = password
        self.store = store_url(self.schema)
        #: Told (stage, done, total) of the work on a PostgreSQL server: reading, waiting, writing.
        self.progress = progress

    def _on_sqlite(self, command: str) -> None:
        refuse_server(self.store, command)

    @contextmanager
    def _on_store(self, command: str, *, progress: Callable[..., None] | None = None,
                  creates: bool = False) -> Iterator[ServerSession | None]:
        """The body runs on master.db; with a PostgreSQL master, on a working copy of it under the
        master's lock on the server, its commits written there (:mod:`xlcrm.store.working`)."""
        if self.store is None:
            from xlcrm.store.outputs import server_of

            if (server := server_of(self.path)) is not None:
                db_file = db.db_path_for(self.path)
                raise XlcrmError(f"belongs to the master on {server} (moved there from this PC), and no "
                                 f"PostgreSQL master is configured for `xlcrm {command}`; set XLCRM_DB (or "
                                 f"[store] url in xlcrm.toml) to it, or move the master back first: `xlcrm store "
                                 f"copy --from {server} --to {db_file} --force`", path=str(self.path))
            yield None
            return
        from xlcrm.store.working import working_copy

        with working_copy(self.store, self.path, self.schema, command, progress=progress or self.progress,
                          creates=creates) as session:
            yield session

    def __repr__(self) -> str:
        return f"Master({str(self.path)!r})"

    @property
    def db_path(self) -> Path:
        """The master database beside the workbook (``master.xlsx`` -> ``master.db``)."""
        return db.db_path_for(self.path)

    def connect(self) -> sqlite3.Connection:
        """The master database, for reading (one line and :class:`~xlcrm.XlcrmError` when missing)."""
        self._on_sqlite("Master.connect")
        return open_master(self.path)

    def _reader(self) -> sqlite3.Connection:
        """The master for the views that only read it: master.db, or the PostgreSQL master's
        :class:`~xlcrm.store.pg.ServerReader`, which takes the same queries."""
        if self.store is None:
            return self.connect()
        from xlcrm.store.pg import reader

        return cast(sqlite3.Connection, reader(self.store))

    # --- the weekly loop ------------------------------------------------------------------------------

    def merge(self, inputs: Sequence[str | Path], *, dry_run: bool = False, strict: bool = False,
              today: dt.date | None = None, progress: Callable[..., None] | None = None,
              skip_unreadable: bool = False) -> MergeReport:
        """Merge staff workbooks (files or folders) into the master: ``xlcrm merge``."""
        from xlcrm.master.run import merge

        with self._on_store("merge", progress=progress, creates=True) as server:
            report = merge(inputs, self.path, self.schema, dry_run=dry_run, strict=strict, today=today,
                           progress=progress, password=self.password, skip_unreadable=skip_unreadable)
        if server is not None:
            report.timings.update(server.timings)
            if note := server.wait_note():
                report.warnings.insert(0, note)
        return report

    def resolve(self) -> ResolveReport:
        """Apply the decisions typed into the review sheets now: ``xlcrm resolve``."""
        from xlcrm.master.run import resolve

        with self._on_store("resolve"):
            return resolve(self.path, self.schema, password=self.password)

    def distribute(self, out_dir: str | Path, *, owners: Sequence[str] | None = None, lang: Lang | None = None,
                   force: bool = False) -> list[Path]:
        """One fresh workbook per 担当営業 into ``out_dir``: ``xlcrm distribute``."""
        from xlcrm.master.distribute import distribute

        with self._on_store("distribute"):
            return distribute(self.path, out_dir, self.schema, owners=owners, lang=lang, password=self.password,
                              force=force)

    def export_master(self, *, lang: Lang | None = None) -> Path:
        """Rebuild master.xlsx from the database: ``xlcrm export-master``."""
        from xlcrm.master.masterbook import export_master

        with self._on_store("export-master"):
            return export_master(self.path, self.schema, lang=lang, password=self.password)

    def import_(self, sources: Sequence[str | Path], *, out_dir: str | Path | None = None, owner: str = "",
                map_path: str | Path | None = None, dry_run: bool = False, lang: Lang = "ja") -> ImportResult:
        """Existing lists into standard workbooks, matched against this master's customers:
        ``xlcrm import --master``."""
        return import_lists(sources, schema=self.schema, out_dir=out_dir, owner=owner, master=self.path,
                            map_path=map_path, dry_run=dry_run, password=self.password, lang=lang)

    # --- reading ------------------------------------------------------------------------------------

    def search(self, query: str = "", *, limit: int = 20, lang: Lang = "ja", me: str | None = None,
               owner: str | None = None, status: str | None = None, prefecture: str | None = None,
               extra_rows: Iterable[Mapping[str, Any]] | None = None) -> list[SearchHit]:
        """Customers and contact persons, best first: ``xlcrm search`` (on the PostgreSQL master when one
        is configured).  ``extra_rows``: rows of the caller's workbook not merged yet, ranked among the
        master's (the ribbon's search)."""
        from xlcrm.views.search import search

        conn = self._reader()
        try:
            return search(conn, self.schema, query, limit=limit, lang=lang, me=me, owner=owner, status=status,
                          prefecture=prefecture, extra_rows=extra_rows)
        finally:
            conn.close()

    def history(self, customer: str, *, today: dt.date | None = None, lang: Lang = "ja") -> CustomerHistory:
        """A customer's summary, records and changes: ``xlcrm history`` (on the PostgreSQL master when
        one is configured)."""
        from xlcrm.views.history import customer_history

        conn = self._reader()
        try:
            return customer_history(conn, self.schema, customer, today=today, lang=lang)
        finally:
            conn.close()

    # --- writing outputs ------------------------------------------------------------------------------

    def report(self, out: str | Path, *, as_of: dt.date | None = None, lang: Lang = "ja",
               png_dir: str | Path | None = None, options: ReportOptions | None = None,
               force: bool = False) -> ReportResult:
        """The management report workbook (and PNG charts): ``xlcrm report``."""
        from xlcrm.views.report import make_report

        with self._on_store("report"):
            return make_report(self.path, out, self.schema, as_of=as_of, lang=lang, png_dir=png_dir, options=options,
                               password=self.password, force=force)

    def export(self, out: str | Path, *, role: str, owner: str | None = None, lang: Lang = "ja",
               third_party: ThirdParty | None = None, who: str | None = None, force: bool = False) -> ExportResult:
        """The records ``role`` may see: ``xlcrm export``."""
        from xlcrm.views.export import export_for_role

        with self._on_store("export"):
            return export_for_role(self.path, out, self.schema, role, owner=owner, lang=lang, password=self.password,
                                   third_party=third_party, who=who, force=force)

    def mailing_list(self, out: str | Path, *, lang: Lang = "ja", third_party: ThirdParty | None = None,
                     who: str | None = None, force: bool = False) -> MailingResult:
        """Who may receive DM (consent, refusals shared across records): ``xlcrm mailing-list``."""
        from xlcrm.views.export import mailing_list

        with self._on_store("mailing-list"):
            return mailing_list(self.path, out, self.schema, lang=lang, password=self.password,
                                third_party=third_party, who=who, force=force)

    def handover(self, from_owner: str, to_owner: str, *, customers: Sequence[str] | None = None,
                 out: str | Path | None = None, lang: Lang = "ja", who: str = "admin",
                 force: bool = False, **kw: Any) -> HandoverResult:
        """Move one person's customers to another and write the handover book: ``xlcrm handover``."""
        from xlcrm.master.handover import handover

        with self._on_store("handover"):
            return handover(self.path, self.schema, from_owner, to_owner, customers=customers, out=out, lang=lang,
                            who=who, password=self.password, force=force, **kw)


def template_workbook(path: str | Path, *, owner: str = "", lang: Lang = "ja", schema: Schema | None = None,
             config: str | Path | None = None, rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
             force: bool = False) -> Path:
    """The standard workbook a salesperson fills in: ``xlcrm template``.  ``rows`` fills it (entity key
    -> rows of canonical values by column key, e.g. ``{"customers": [{"kind": "corporate", "name": …}]}``)."""
    from xlcrm.intake.template import build_template

    return build_template(path, _schema(schema, config), owner=owner, lang=lang, force=force, rows=rows)


def import_lists(sources: Sequence[str | Path], *, out_dir: str | Path | None = None, owner: str = "",
                 master: str | Path | None = None, map_path: str | Path | None = None, dry_run: bool = False,
                 password: str | None = None, lang: Lang = "ja", schema: Schema | None = None,
                 config: str | Path | None = None, force: bool = False) -> ImportResult:
    """Existing lists (.xlsx/.xls/.csv …) into standard team workbooks in ``out_dir``: ``xlcrm import``.
    With ``master``, rows are matched against its customers (:meth:`Master.import_`).  An existing file
    it would write is refused unless ``force`` (a copy is kept beside it first)."""
    from xlcrm.intake.importer import import_sources

    s = _schema(schema, config)
    if master is None:
        return import_sources(sources, s, out_dir=out_dir, owner=owner, map_path=map_path, dry_run=dry_run,
                              password=password, lang=lang, force=force)
    with Master(master, schema=s, password=password)._on_store("import --master"):
        return import_sources(sources, s, out_dir=out_dir, owner=owner, master=Path(master), map_path=map_path,
                              dry_run=dry_run, password=password, lang=lang, force=force)


def validate_workbooks(inputs: str | Path | Sequence[str | Path], *, schema: Schema | None = None,
             config: str | Path | None = None, today: dt.date | None = None,
             password: str | None = None) -> list[ValidationResult | Unreadable]:
    """Check workbooks (files or folders) cell by cell: ``xlcrm validate``.  One result per file."""
    from xlcrm.intake.validate import validate_paths

    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    return validate_paths(paths, _schema(schema, config), today=today, password=password)


# --- the master on PostgreSQL ------------------------------------------------------------------------

def _server(schema: Schema, db_url: str | None, given_as: str = "--db") -> StoreURL:
    store = store_url(schema, db_url, given_as=given_as)
    if store is None:
        raise XlcrmError("no PostgreSQL master given: pass --db postgresql://USER@HOST/DATABASE, set XLCRM_DB "
                         "or [store] url in xlcrm.toml (without one the master is master.db, which needs no "
                         "`xlcrm store`)")
    return store


def init_store(db_url: str | None = None, *, schema: Schema | None = None,
               config: str | Path | None = None) -> InitReport:
    """Create the master's tables on a PostgreSQL server: ``xlcrm store init``.  ``db_url`` (else
    ``XLCRM_DB``, else xlcrm.toml's ``[store] url``) names the database."""
    from xlcrm.store.pg import init_master

    s = _schema(schema, config)
    return init_master(_server(s, db_url), s)


def store_roles(db_url: str | None = None, *, prefix: str | None = None, schema: Schema | None = None,
                config: str | Path | None = None) -> list[RolePlan]:
    """PostgreSQL roles for xlcrm.toml's roles, with the column privileges the server enforces:
    ``xlcrm store roles``."""
    from xlcrm.store.pg import ROLE_PREFIX, apply_roles

    s = _schema(schema, config)
    return apply_roles(_server(s, db_url), s, prefix=ROLE_PREFIX if prefix is None else prefix)


def store_user(login: str, role: str, *, owner: str | None = None, password: str | None = None,
               db_url: str | None = None, prefix: str | None = None, schema: Schema | None = None,
               config: str | Path | None = None) -> LoginReport:
    """A person's PostgreSQL login in one role of xlcrm.toml, with the 担当営業 whose customers an
    own-only role sees: ``xlcrm store user``."""
    from xlcrm.store.pg import ROLE_PREFIX, add_login

    s = _schema(schema, config)
    return add_login(_server(s, db_url), s, login, role, owner=owner, password=password,
                     prefix=ROLE_PREFIX if prefix is None else prefix)


def copy_store_out(target: str | Path, db_url: str | None = None, *, force: bool = False,
                   schema: Schema | None = None, config: str | Path | None = None,
                   progress: Callable[[str, int, int], None] | None = None, given_as: str = "--db") -> CopyReport:
    """Copy the PostgreSQL master into a master.db (``target``, or the one beside a master.xlsx
    ``target``): ``xlcrm store copy --to master.db``.  A target holding a master is refused unless
    ``force`` (a copy of it is kept beside it first)."""
    from xlcrm.store.outputs import keep_copy, note_server
    from xlcrm.store.working import copy_out

    s = _schema(schema, config)
    store = _server(s, db_url, given_as)
    path = Path(target)
    if path.suffix.lower() == ".xlsx":
        path = db.db_path_for(path)
    if path.suffix.lower() != ".db" or path.is_dir():
        raise XlcrmError("give the master database to write (…/master.db), or the master.xlsx it sits beside",
                         path=str(target))
    if path.exists() and path.stat().st_size > 0:
        if not force:
            raise XlcrmError("holds a master database already; give a new path, or --force to replace it "
                             "(a copy of it is kept beside it)", path=str(path))
        keep_copy(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = copy_out(store, s, path, progress=progress)
    note_server(path.with_suffix(".xlsx"), None)  # moved back: the master.xlsx beside it is master.db's again
    return report


def copy_store(master: str | Path, db_url: str | None = None, *, schema: Schema | None = None,
               config: str | Path | None = None, progress: Callable[[str, int, int], None] | None = None,
               given_as: str = "--db") -> CopyReport:
    """Copy the records of master.db (beside ``master``) into the PostgreSQL master, replacing what is
    there, in one transaction: ``xlcrm store copy``."""
    from xlcrm.store.outputs import note_server
    from xlcrm.store.pg import copy_master

    s = _schema(schema, config)
    store = _server(s, db_url, given_as)
    conn = open_master(master)
    try:
        report = copy_master(conn, store, s, progress=progress)
    finally:
        conn.close()
    # From now on the master is the server's: master.db beside master.xlsx is a stale copy, which the
    # commands refuse while no server is configured (search and history still read it).
    note_server(Path(master).with_suffix(".xlsx"), str(store))
    return report
