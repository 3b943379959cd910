"""CLI: `xlcrm search` and `xlcrm history`, the terminal twins of the ribbon's 顧客検索 and 顧客履歴.

Thin: open the master database beside ``--master``, call :mod:`xlcrm.views.search` / :mod:`xlcrm.views.history`,
print a rich table or JSON.  Heavy imports stay inside the commands so that `xlcrm search` answers
in well under a second from a cold start.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from xlcrm.api import Master
from xlcrm.cli.app import app
from xlcrm.cli.common import ConfigOpt, LangOpt, MasterOpt, load_config, parse_date
from xlcrm.cli.common import check_lang as _lang
from xlcrm.terminal import SafeConsole, shown

if TYPE_CHECKING:

    from xlcrm.schema import Lang, Schema
    from xlcrm.views.history import CustomerHistory
    from xlcrm.views.search import SearchHit

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

_HEAD = {
    "ja": {"n": "#", "contact": "担当者", "last": "最終接触", "why": "一致理由", "none": "該当する顧客はありません",
           "date": "日付", "kind": "種別", "id": "ID", "what": "内容", "who": "担当", "state": "状態",
           "owner": "担当営業", "status": "ステータス", "dm": "DM可否", "won": "受注合計", "todos": "未完了TODO",
           "overdue": "うち期限切れ", "merged": "統合済みの重複ID", "via": "（{id} は統合済み）",
           "activity": "活動", "deal": "取引", "todo": "TODO", "change": "変更", "contacts": "担当者",
           "changes": "変更履歴（取込・判断ごと、新しい順）", "source": "取込元"},
    "en": {"n": "#", "contact": "Contact", "last": "Last contact", "why": "Why", "none": "No customer matches",
           "date": "Date", "kind": "Kind", "id": "ID", "what": "What", "who": "Who", "state": "State",
           "owner": "Sales rep", "status": "Status", "dm": "DM consent", "won": "Won total",
           "todos": "Open TODOs", "overdue": "overdue", "merged": "Merged duplicate IDs",
           "via": "({id} was merged into it)", "activity": "Activity", "deal": "Deal", "todo": "TODO",
           "change": "Change", "contacts": "Contacts",
           "changes": "Changes (per import or decision, newest first)", "source": "From"},
}






def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@app.command("search")
def search_cmd(
    master: MasterOpt,
    query: Annotated[str, typer.Argument(metavar="[QUERY]", help="Part of a name, フリガナ, phone number, "
                                         "e-mail, address, place, words from an activity, deal or TODO, "
                                         "or an ID, typed any way (may be left out with a filter).")] = "",
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many results.")] = 20,
    owner: Annotated[str | None, typer.Option("--owner", help="Only customers of this 担当営業 (the start "
                                              "of the name is enough).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only customers with this ステータス "
                                               "(取引中, 見込み … or its English label).")] = None,
    prefecture: Annotated[str | None, typer.Option("--prefecture", help="Only customers in this 都道府県 "
                                                   "(東京 or 東京都).")] = None,
    me: Annotated[str | None, typer.Option("--me", help="Your name as 担当営業: your customers come first "
                                           "among equally good matches.")] = None,
    lang: LangOpt = "ja",
    config: ConfigOpt = None,
) -> None:
    """Find customers and contact persons in the master (exact ID/phone/e-mail first)."""
    lg = _lang(lang)
    m = Master(master, schema=load_config(config))
    hits = m.search(query, limit=limit, lang=lg, me=me, owner=owner, status=status, prefecture=prefecture)
    if as_json:
        _dump([h.to_dict() for h in hits])
        return
    _print_hits(hits, m.schema, lg)


def _print_hits(hits: list[SearchHit], schema: Schema, lang: Lang) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    head = _HEAD[lang]
    console = SafeConsole()
    if not hits:
        console.print(head["none"])
        return
    cust = schema.entity("customers")
    # Light borders and text folded, never cut: a name stays whole in an 80-column terminal.
    table = Table(show_lines=False, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(head["n"], justify="right")
    table.add_column(cust.column("customer_id").label(lang), no_wrap=True)
    table.add_column(cust.column("name").label(lang), overflow="fold", min_width=8)
    table.add_column(head["contact"], overflow="fold")
    table.add_column(cust.column("phone").label(lang), no_wrap=True)
    table.add_column(cust.column("owner").label(lang), overflow="fold")
    table.add_column(head["last"], no_wrap=True)
    table.add_column(head["why"], overflow="fold")
    for i, h in enumerate(hits, 1):
        cells = [h.customer_id or "-", h.name, h.contact_name, h.phone, h.owner, h.last_contact, h.why]
        table.add_row(str(i), *(escape(shown(c or "")) for c in cells),
                      style="dim" if h.source != "master" else None)
    console.print(table)


@app.command("history")
def history_cmd(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="Customer ID (C-000001) or name.")],
    master: MasterOpt,
    as_json: JsonOpt = False,
    lang: LangOpt = "ja",
    config: ConfigOpt = None,
    today: Annotated[str | None, typer.Option(help="Reference date for overdue TODOs, year first: 2024-04-01 "
                                              "(default: today).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Show only the newest N "
                                              "timeline entries and change groups (default: all).")] = None,
    changes: Annotated[bool, typer.Option("--changes", help="List each field change under its group "
                                          "(default: one line per import or decision).")] = False,
) -> None:
    """A customer's summary, its activities, deals and TODOs newest first, then its field changes
    grouped per import or decision."""
    lg = _lang(lang)
    ref_day = parse_date(today)
    m = Master(master, schema=load_config(config))
    hist = m.history(customer, today=ref_day, lang=lg)
    if limit is not None:
        hist.timeline = hist.timeline[:limit]
        hist.changes = hist.changes[:limit]
    if as_json:
        _dump(hist.to_dict())
        return
    _print_history(hist, lg, each_change=changes)


def _print_history(h: CustomerHistory, lang: Lang, *, each_change: bool = False) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    head = _HEAD[lang]
    console = SafeConsole()
    s = h.summary
    title = f"[bold]{h.customer_id} {escape(h.name or '')}[/]" + (f"  {escape(h.kana)}" if h.kana else "")
    console.print(title)
    if h.merged_away:
        console.print(f"[bold yellow]{escape(h.merged_away)}[/]")
    won = f"{s.won_total:,.0f} ({s.won_deals})"
    todos = f"{s.open_todos}" + (f" ([red]{head['overdue']} {s.overdue_todos}[/])" if s.overdue_todos else "")
    console.print(f"{head['owner']}: {escape(s.owner or '-')}   {head['status']}: {escape(s.status_label or '-')}   "
                  f"{head['dm']}: {escape(s.dm_consent_label or '-')}   {head['won']}: {won}   "
                  f"{head['last']}: {s.last_contact or '-'}   {head['todos']}: {todos}")
    if h.merged_ids:
        console.print(f"{head['merged']}: {', '.join(h.merged_ids)}")
    if h.contacts:
        people = []
        for c in h.contacts:
            tel = c.get("phone") or c.get("mobile")
            people.append(escape(str(c.get("name") or "")) + (f" ({escape(str(tel))})" if tel else ""))
        console.print(f"{head['contacts']}: " + ", ".join(people))
    # What people typed is folded onto more lines, never cut, however narrow the terminal.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for key in ("date", "kind", "id", "what", "who", "state"):
        table.add_column(head[key], no_wrap=key in ("date", "id"), overflow="fold")
    for e in h.timeline:
        what = escape(e.title) + (f"\n[dim]{escape(e.detail)}[/]" if e.detail else "")
        table.add_row(e.date or "", head.get(e.kind, e.kind), e.record_id, what, escape(e.who or ""),
                      escape(e.status or ""), style="red" if e.overdue else None)
    console.print(table)
    if not h.changes:
        return
    table = Table(title=head["changes"], title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for key in ("date", "what", "source", "who"):
        table.add_column(head[key], no_wrap=key == "date", overflow="fold")
    for g in h.changes:
        table.add_row(g.date or "", f"[bold]{escape(g.title)}[/]\n[dim]{escape(g.detail)}[/]",
                      escape(g.source_file or ""), escape(g.who or ""))
        if each_change:
            for e in g.entries:
                table.add_row("", f"  {escape(e.record_id)} {escape(e.title)}", "", "")
    console.print(table)
