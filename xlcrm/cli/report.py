"""CLI: `xlcrm report`, `xlcrm handover`, `xlcrm export`, `xlcrm mailing-list`.

Thin: parse options, call :mod:`xlcrm.views.report`, :mod:`xlcrm.master.handover` and :mod:`xlcrm.views.export`,
print one summary line per result to stderr.  Passwords come from ``--password`` or the
``XLCRM_PASSWORD`` environment variable (typer's ``envvar``), never from a prompt in scripts.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from xlcrm.cli.app import app
from xlcrm.cli.common import (
    ConfigOpt,
    ForceOpt,
    LangOpt,
    MasterOpt,
    OutputPasswordOpt,
    err,
    folder_path,
    keeping_copies,
    opened_master,
    parse_date,
)
from xlcrm.cli.common import check_lang as _lang
from xlcrm.cli.common import load_config as _schema
from xlcrm.errors import XlcrmError

OutArg = Annotated[Path, typer.Argument(metavar="OUT.xlsx", help="Where to write the workbook.")]
ThirdPartyOpt = Annotated[str | None, typer.Option(
    "--to-third-party", help="Recipient outside the company (個人情報保護法 Art. 29): records the provision "
    "in the master's 提供記録.")]
PurposeOpt = Annotated[str | None, typer.Option("--purpose", help="What the recipient uses the data for "
                                                "(required with --to-third-party).")]
WhoOpt = Annotated[str | None, typer.Option("--who", help="Your name for the records (default: login name).")]






def _date(value: str | None) -> dt.date | None:
    return parse_date(value, "--as-of")


def _party(name: str | None, purpose: str | None):  # type: ignore[no-untyped-def]
    from xlcrm.views.export import ThirdParty

    if name is None and purpose is None:
        return None
    if name is None:
        raise XlcrmError("--purpose is recorded only for a third-party provision; add --to-third-party NAME")
    return ThirdParty(name, purpose or "")


@app.command()
def report(
    out: OutArg,
    master: MasterOpt,
    png: Annotated[Path | None, typer.Option("--png", metavar="DIR", callback=folder_path, help="Also write every chart as a "
                                             "PNG image into DIR (for e-mail).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Report date, year first: 2024-04-01 or 2024/4/1 (default: today).")] = None,
    lang: LangOpt = "ja",
    lapsed_days: Annotated[int, typer.Option(min=1, help="Lapsed: bought before, nothing for this many "
                                             "days.")] = 365,
    no_contact_days: Annotated[int, typer.Option(min=1, help="Follow-up: customers with no activity for "
                                                 "this many days.")] = 90,
    top: Annotated[int, typer.Option(min=1, help="How many top customers to list.")] = 20,
    password: OutputPasswordOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Sales, RFM, lapsed customers, pipeline, complaints, follow-ups and data quality, with charts."""
    from xlcrm.views.report import ReportOptions

    with keeping_copies(), opened_master(master, _schema(config), password) as m:
        result = m.report(out, as_of=_date(as_of), lang=_lang(lang), png_dir=png, force=force,  # type: ignore[arg-type]
                          options=ReportOptions(lapsed_days=lapsed_days, no_contact_days=no_contact_days,
                                                top_n=top))
    pages = len(result.report.pages)
    charts = len(result.report.charts())
    err.print(f"[green]wrote[/] {result.path}  ({pages} sheets, {charts} charts, as of "
              f"{result.report.as_of}{', encrypted' if password else ''})")
    if result.pngs:
        err.print(f"[green]wrote[/] {len(result.pngs)} PNG charts into {png}")
    for line in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}")


@app.command()
def handover(
    master: MasterOpt,
    from_owner: Annotated[str, typer.Option("--from", help="The 担当営業 handing over.")],
    to_owner: Annotated[str, typer.Option("--to", help="The 担当営業 taking over.")],
    out: Annotated[Path | None, typer.Argument(metavar="[OUT.xlsx]", help="Handover book for the new "
                                               "担当営業 (default: 引き継ぎ_<to>.xlsx beside the master).")] = None,
    customer: Annotated[list[str] | None, typer.Option("--customer", help="Only this customer ID (repeat "
                                                       "for several); default: all of --from's customers.")] = None,
    new_owner: Annotated[bool, typer.Option("--new-owner", help="--to is someone new (not yet a 担当営業 "
                                            "in the master); without it an unknown --to is refused.")] = False,
    lang: LangOpt = "ja",
    who: WhoOpt = None,
    password: OutputPasswordOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Reassign 担当営業 (customers, open deals, open TODOs) with history, and write the handover book."""
    # distribute loads XlsxWriter: imported by the one command that needs its file-name rule
    from xlcrm.master.distribute import file_name
    from xlcrm.views.export import default_who

    # The new 担当営業's name is text, not a path: "../x" names a file beside the master, not above it.
    target = out or Path(master).with_name(file_name(f"{'引き継ぎ' if lang == 'ja' else 'handover'}_{to_owner.strip()}"))
    with keeping_copies(), opened_master(master, _schema(config), password) as m:
        result = m.handover(from_owner, to_owner, customers=customer, out=target, lang=_lang(lang),  # type: ignore[arg-type]
                            who=default_who(who), force=force, new_owner=new_owner)
    err.print(f"[green]handed over[/] {len(result.customers)} customers, {result.count('deals')} open deals, "
              f"{result.count('todos')} open TODOs from {from_owner} to {to_owner}  "
              f"({len(result.changes)} history rows, run {result.run_id})")
    err.print(f"[green]wrote[/] {result.workbook}")
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")


@app.command()
def export(
    out: OutArg,
    master: MasterOpt,
    role: Annotated[str, typer.Option("--role", help="A role from xlcrm.toml [roles.*] (built in: admin, "
                                      "sales, analyst).")],
    owner: Annotated[str | None, typer.Option("--owner", help="Only this 担当営業's customers (required "
                                              "for own_only roles such as sales).")] = None,
    to_third_party: ThirdPartyOpt = None,
    purpose: PurposeOpt = None,
    lang: LangOpt = "ja",
    who: WhoOpt = None,
    password: OutputPasswordOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """The records a role may see; columns it may not see are dropped from the file."""
    schema = _schema(config)
    with keeping_copies(), opened_master(master, schema, password) as m:
        result = m.export(
            out, role=role, owner=owner, lang=_lang(lang), third_party=_party(to_third_party, purpose),  # type: ignore[arg-type]
            who=who, force=force)
    counts = ", ".join(f"{schema[k].label(_lang(lang))} {n}" for k, n in result.counts.items())  # type: ignore[arg-type]
    err.print(f"[green]wrote[/] {result.path}  (role {result.role}: {counts}"
              f"{', encrypted' if password else ''})")
    if result.provision_id is not None:
        err.print(f"[green]recorded[/] third-party provision #{result.provision_id} to {to_third_party}")


@app.command("mailing-list")
def mailing_list(
    out: OutArg,
    master: MasterOpt,
    to_third_party: ThirdPartyOpt = None,
    purpose: PurposeOpt = None,
    lang: LangOpt = "ja",
    who: WhoOpt = None,
    password: OutputPasswordOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Customers and contact persons with DM可否 = 可; a 不可 anywhere for the same person wins."""
    with keeping_copies(), opened_master(master, _schema(config), password) as m:
        r = m.mailing_list(
            out, lang=_lang(lang), third_party=_party(to_third_party, purpose), who=who, force=force)  # type: ignore[arg-type]
    err.print(f"[green]wrote[/] {r.path}  ({r.customers} customers, {r.contacts} contacts; left out: "
              f"{r.refused} with a 不可 elsewhere, {r.not_consented} without 可)")
    if r.provision_id is not None:
        err.print(f"[green]recorded[/] third-party provision #{r.provision_id} to {to_third_party}")
