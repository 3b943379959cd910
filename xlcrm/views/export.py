"""Personal data out of the master, only to whom and for what it may go (個人情報保護法).

Three exits, each deliberately narrow:

- :func:`export_for_role`: the records a role may see.  Columns a role may not see are *dropped*
  from the file (not hidden, not blanked: a hidden column is one right-click away).  ``own_only``
  roles see only the customers whose 担当営業 is ``--owner``, with what is attached to them.
  A ``hide`` entry that names no column is refused, so a typo can never leak a column.
- :func:`mailing_list`: customers and contact persons with DM可否 = 可, where a 不可 anywhere for the
  same person wins (see :func:`refusal_keys` for what "the same person" means).
- The third-party provision record (Art. 29 個人データの第三者提供に係る記録): every export made with
  ``--to-third-party`` adds a row to the master database's ``provisions`` table — when, to whom,
  for what purpose, which columns, how many records and which record IDs (the persons concerned) —
  in the same transaction that writes the file, so there is never a file without its record.  The
  master workbook shows the table as the 提供記録 sheet (:func:`xlcrm.store.provisions.provision_sheet`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.normalize import phone_digits
from xlcrm.schema import (
    MASKED_IN_TEXT,
    Column,
    Entity,
    Lang,
    Role,
    Schema,
    hidden_columns,
    hidden_types,
)
from xlcrm.store import db, lock, outputs
from xlcrm.store.provisions import ThirdParty, add_provision
from xlcrm.xlsx.writer import (
    TableColumn,
    atomic_write,
    close_workbook,
    entity_columns,
    open_workbook,
    sealed,
    write_table,
    write_text,
)

# --- roles ------------------------------------------------------------------------------------------

# The hiding rules (which columns a role may not see) live in the schema module, where the database's
# column privileges (xlcrm.store.pg) read them too.

_DIGIT = "[0-9０-９]"
_SEP = r"[\s\-‐‑‒–—―−－ー().（）]"
#: A phone number inside free text: 0 or +81 and 8 to 10 more digits, hyphens, spaces, brackets and
#: full-width forms allowed between them (03-1234-5678, ０９０－１２３４－５６７８, +81 3 1234 5678).
PHONE_IN_TEXT = re.compile(rf"(?<![0-9０-９])(?:[+＋](?:81|８１){_SEP}{{0,2}}(?:[(（][0０][)）])?|[(（]?[0０])"
                           rf"(?:{_SEP}{{0,2}}{_DIGIT}){{8,10}}(?![0-9０-９])")
_MAIL_CHAR = "A-Za-z0-9Ａ-Ｚａ-ｚ０-９"
#: An e-mail address inside free text, half- or full-width.
EMAIL_IN_TEXT = re.compile(rf"[{_MAIL_CHAR}._%+\-．＿＋－]+[@＠][{_MAIL_CHAR}\-－]+(?:[.．][{_MAIL_CHAR}\-－]+)+")
_MASKS: dict[str, dict[str, str]] = {"phone": {"ja": "［電話番号］", "en": "[phone]"},
                                     "email": {"ja": "［メール］", "en": "[e-mail]"}}
assert set(_MASKS) == set(MASKED_IN_TEXT)


def mask_text(text: str, types: set[str], lang: Lang = "ja") -> str:
    """``text`` with the phone numbers and/or e-mail addresses in it replaced by a placeholder."""
    if "email" in types:  # first: an address's digits must not be taken for a phone number
        text = EMAIL_IN_TEXT.sub(_MASKS["email"][lang], text)
    if "phone" in types:
        text = PHONE_IN_TEXT.sub(_MASKS["phone"][lang], text)
    return text


def _mask_free_text(cols: Mapping[str, Sequence[Column]], data: Mapping[str, list[dict[str, Any]]],
                    types: set[str], lang: Lang) -> None:
    """Mask, in place, phone numbers and e-mail addresses typed into the free-text columns (備考, 内容)
    of a role that hides those types: a column dropped is no use if its number sits in the note."""
    types = types & set(_MASKS)
    if not types:
        return
    for ekey, keep in cols.items():
        texts = [c.key for c in keep if c.type == "text"]
        for row in data.get(ekey, ()) if texts else ():
            for k in texts:
                v = row.get(k)
                if isinstance(v, str) and v:
                    row[k] = mask_text(v, types, lang)


def visible_columns(schema: Schema, role: Role) -> dict[str, list[Column]]:
    hidden = hidden_columns(schema, role)
    return {e.key: [c for c in e.columns if c.key not in hidden[e.key]] for e in schema}


@dataclass
class ExportResult:
    path: Path
    role: str
    counts: dict[str, int]
    columns: dict[str, list[str]]
    provision_id: int | None = None
    excluded: dict[str, int] = field(default_factory=dict)


def _now() -> dt.datetime:
    return dt.datetime.now().replace(microsecond=0)


def default_who(who: str | None) -> str:
    if who:
        return who
    try:
        return getpass.getuser()
    except Exception:  # no login name in some service contexts
        return "admin"


def _rows(conn: sqlite3.Connection, entity: Entity) -> list[dict[str, Any]]:
    return [dict(zip(entity.keys, r, strict=True)) for r in db.iter_records(conn, entity)]


def _cell(col: Column, value: Any) -> Any:
    return db.from_db(col, value)


def export_for_role(master: str | Path, out: str | Path, schema: Schema, role_name: str, *,
                    owner: str | None = None, lang: Lang = "ja", password: str | None = None,
                    third_party: ThirdParty | None = None, who: str | None = None,
                    now: dt.datetime | None = None, force: bool = False) -> ExportResult:
    """Write the records ``role_name`` may see to ``out`` (one sheet per entity, forbidden columns dropped).

    ``out`` never replaces the master's files, nor a file xlcrm did not write unless ``force`` (a copy
    is kept beside it): :mod:`xlcrm.store.outputs`.
    """
    role = schema.role(role_name)
    out = Path(out)
    _check_out(out)
    claim = outputs.claim(out, "export", force=force, master=_master_path(master))
    if role.own_only and not (owner and owner.strip()):
        raise XlcrmError(f"role {role.name} sees only its own customers; give --owner NAME (the 担当営業)")
    cols = visible_columns(schema, role)
    conn = outputs.open_master(master)
    try:
        data: dict[str, list[dict[str, Any]]] = {e.key: _rows(conn, e) for e in schema}
        if owner and owner.strip():
            data = _only_owner(schema, data, owner.strip())
        _mask_free_text(cols, data, hidden_types(role), lang)
        counts = {k: len(v) for k, v in data.items()}
        at = now or _now()
        kind = f"role:{role.name}" + (f" owner:{owner}" if owner else "")

        def write() -> None:
            with claim.write(out):
                _write_sheets(out, schema, cols, data, lang, password,
                              title=_export_title(role, owner, lang, at))

        provision_id = _write_with_record(conn, schema, write, third_party, kind=kind, cols=cols, data=data,
                                          file=out.name, who=default_who(who), at=at,
                                          master=_master_path(master))
    finally:
        conn.close()
    return ExportResult(out, role.name, counts, {k: [c.key for c in v] for k, v in cols.items()}, provision_id)


def _export_title(role: Role, owner: str | None, lang: Lang, at: dt.datetime) -> list[str]:
    if lang == "ja":
        lines = [f"顧客データ出力（ロール: {role.name}）", f"出力日時: {at:%Y-%m-%d %H:%M}"]
        if owner:
            lines.append(f"担当営業: {owner} の顧客のみ")
        if role.hide:
            lines.append("このロールに許されていない列は含まれていません。")
        if hidden_types(role) & set(_MASKS):
            lines.append("備考などの自由記述にある電話番号・メールアドレスは伏せています。")
        lines.append("個人情報を含みます。目的外の利用・複製・第三者への提供はしないでください。")
    else:
        lines = [f"Customer data export (role: {role.name})", f"Exported: {at:%Y-%m-%d %H:%M}"]
        if owner:
            lines.append(f"Only customers of sales rep {owner}")
        if role.hide:
            lines.append("Columns this role may not see are not included.")
        if hidden_types(role) & set(_MASKS):
            lines.append("Phone numbers and e-mail addresses in free-text columns (notes) are masked.")
        lines.append("Contains personal data: use it only for its purpose; do not copy or pass it on.")
    return lines


def _only_owner(schema: Schema, data: dict[str, list[dict[str, Any]]], owner: str) -> dict[str, list[dict[str, Any]]]:
    """The owner's customers and every record attached to them (contacts, activities, deals, TODOs)."""
    mine = [r for r in data["customers"] if (r.get("owner") or "").strip() == owner]
    if not mine:
        known = sorted({(r.get("owner") or "").strip() for r in data["customers"]} - {""})
        raise XlcrmError(f"no customer has 担当営業 {owner!r}; known: {', '.join(known) or '(none)'}")
    ids = {r["customer_id"] for r in mine}
    out = {"customers": mine}
    for e in schema:
        if e.key == "customers":
            continue
        ref = e.ref_column
        out[e.key] = [r for r in data[e.key] if ref is not None and r.get(ref.key) in ids]
    return out


def _check_out(out: Path) -> None:
    if out.suffix.lower() != ".xlsx":
        raise XlcrmError(f"{out}: exports are Excel workbooks; name the file ….xlsx")


def _master_path(master: str | Path) -> Path:
    m = Path(master)
    return m.with_suffix(".xlsx") if m.suffix.lower() == ".db" else m


def _write_with_record(conn: sqlite3.Connection, schema: Schema, write: Any, party: ThirdParty | None, *,
                       kind: str, cols: Mapping[str, Sequence[Column]], data: Mapping[str, list[dict[str, Any]]],
                       file: str, who: str, at: dt.datetime, master: Path) -> int | None:
    """Write the file; with a third party, inside the transaction that records the provision (holding
    the master's lock: a merge running meanwhile would otherwise replace the database without it)."""
    if party is None:
        write()
        return None

    with lock.master_lock(master, "export"), db.transaction(conn):
        pid = add_provision(
            conn, party, kind=kind,
            columns={k: [c.key for c in v] for k, v in cols.items() if data.get(k)},
            counts={k: len(v) for k, v in data.items() if v},
            record_ids={e.key: [r[e.id_column.key] for r in data[e.key]]
                        for e in schema if e.key in ("customers", "contacts") and data.get(e.key)},
            file=file, who=who, at=at)
        write()  # a failed write rolls the record back; a written file always has its record
    return pid


def _write_sheets(out: Path, schema: Schema, cols: Mapping[str, Sequence[Column]],
                  data: Mapping[str, list[dict[str, Any]]], lang: Lang, password: str | None,
                  title: list[str], sheet_names: Mapping[str, str] | None = None) -> None:
    with atomic_write(out) as tmp, sealed(tmp, password) as target:
        wb = open_workbook(target)
        info = wb.add_worksheet("出力情報" if lang == "ja" else "About")
        for i, line in enumerate(title):
            write_text(info, i, 0, line, wb, **({"bold": True, "font_size": 13} if i == 0 else {}))
        info.set_column(0, 0, 90)
        for e in schema:
            keep = cols.get(e.key)
            if not keep:
                continue
            ws = wb.add_worksheet((sheet_names or {}).get(e.key) or e.label(lang))
            allowed = {c.key for c in keep}
            tcols = [tc for tc in entity_columns(e, lang) if tc.key in allowed]
            write_table(wb, ws, e.table_name(lang), tcols,
                        ([_cell(c, r.get(c.key)) for c in keep] for r in data.get(e.key, ())))
        close_workbook(wb)


# --- mailing list -------------------------------------------------------------------------------------------

def _email_key(v: Any) -> str | None:
    if not isinstance(v, str) or "@" not in v:
        return None
    return "mail:" + unicodedata.normalize("NFKC", v).strip().casefold()


def _phone_key(v: Any) -> str | None:
    d = phone_digits(v)
    return f"tel:{d}" if len(d) >= 9 else None  # shorter is an extension or a typo, not a person


def _name_key(customer: Any, name: Any) -> str | None:
    if not customer or not isinstance(name, str) or not name.strip():
        return None
    return f"name:{customer}:" + "".join(unicodedata.normalize("NFKC", name).casefold().split())


def person_keys(entity: Entity, row: Mapping[str, Any], parent: Mapping[str, Any] | None = None) -> set[str]:
    """Everything that identifies the person a customer or contact record stands for.

    - every e-mail and phone column of the record (normalised: case, width, hyphens, +81);
    - a customer record: ``cust:<its id>``;
    - a contact: ``cust:<its customer>`` (a company's refusal covers its contact persons) and
      ``name:<customer>:<name>`` (the same name twice at one customer is one person).  With
      ``parent`` given (computing what a *refusal* covers), a contact's phone that is its company's
      main line or FAX is left out: a contact who refuses must not silence the switchboard everybody
      else at that company shares.
    """
    keys: set[str] = set()
    shared: set[str] = set()
    if parent is not None and parent.get("kind") != "individual":
        shared = {k for c in _phone_cols(parent) if (k := _phone_key(parent.get(c)))}
    for c in entity.columns:
        v = row.get(c.key)
        k = _email_key(v) if c.type == "email" else _phone_key(v) if c.type == "phone" else None
        if k and k not in shared:
            keys.add(k)
    if entity.key == "customers":
        keys.add(f"cust:{row['customer_id']}")
    elif entity.ref_column is not None:
        ref = row.get(entity.ref_column.key)
        if ref:
            keys.add(f"cust:{ref}")
            nk = _name_key(ref, row.get("name"))
            if nk:
                keys.add(nk)
    return keys


def _phone_cols(row: Mapping[str, Any]) -> list[str]:
    return [k for k in ("phone", "fax", "mobile") if k in row]


def refusal_keys(conn: sqlite3.Connection, schema: Schema) -> set[str]:
    """Keys of every person who said 不可, from *every* record whatever its state.

    Merged duplicates and deleted records count too: a refusal once given is not lost because the
    record that carried it was folded into another or removed.  A merged customer's refusal also
    covers its survivor.  A contact's refusal covers its customer only when that customer is an
    individual (個人): the contact of a private person is that person or their household.
    """
    refused: set[str] = set()
    customers = {r["customer_id"]: r for r in db.records_with_state(conn, schema["customers"])}
    for entity in (schema["customers"], schema["contacts"]):
        if not entity.has("dm_consent"):
            continue
        rows = customers.values() if entity.key == "customers" else db.records_with_state(conn, entity)
        for row in rows:
            if row.get("dm_consent") != "no":
                continue
            parent = customers.get(row.get("customer")) if entity.key == "contacts" else None
            keys = person_keys(entity, row, parent)
            if entity.key == "contacts" and not (parent and parent.get("kind") == "individual"):
                keys.discard(f"cust:{row.get('customer')}")
            refused |= keys
            if entity.key == "customers" and row.get("_merged_into"):
                refused.add(f"cust:{row['_merged_into']}")
    return refused


#: Columns of the mailing list: (entity, column key) in sheet order; missing ones are skipped.
MAILING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("customers", "customer_id"), ("contacts", "contact_id"), ("customers", "name"),
    ("contacts", "name"), ("contacts", "department"), ("contacts", "title"),
    ("customers", "postal_code"), ("customers", "prefecture"), ("customers", "address"),
    ("contacts", "email"), ("contacts", "phone"),
)


@dataclass
class MailingResult:
    path: Path
    customers: int
    contacts: int
    refused: int  # said 可 but a 不可 elsewhere for the same person won
    not_consented: int  # 不可, 未確認 or blank
    provision_id: int | None = None


def mailing_list(master: str | Path, out: str | Path, schema: Schema, *, lang: Lang = "ja",
                 password: str | None = None, third_party: ThirdParty | None = None, who: str | None = None,
                 now: dt.datetime | None = None, force: bool = False) -> MailingResult:
    """Customers and contact persons who said 可 and nobody (by the same e-mail, phone, customer) said 不可.

    ``out`` is claimed like :func:`export_for_role`'s.
    """
    out = Path(out)
    _check_out(out)
    claim = outputs.claim(out, "mailing-list", force=force, master=_master_path(master))
    for e in ("customers", "contacts"):
        if not schema[e].has("dm_consent"):
            raise XlcrmError(f"the {schema[e].ja} sheet has no DM可否 column (switched off in xlcrm.toml); "
                             "without consent there is no mailing list")
    conn = outputs.open_master(master)
    try:
        refused = refusal_keys(conn, schema)
        cust_e, cont_e = schema["customers"], schema["contacts"]
        customers = _rows(conn, cust_e)
        by_id = {r["customer_id"]: r for r in customers}
        rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        n_refused = n_not = 0
        for entity, records in ((cust_e, customers), (cont_e, _rows(conn, cont_e))):
            for r in records:
                if r.get("dm_consent") != "yes":
                    n_not += 1
                    continue
                parent = by_id.get(r.get("customer")) if entity.key == "contacts" else None
                # Every identifier of the candidate counts, its company's main line included: if anybody
                # refused on that number, this person is left out too (asymmetric on purpose).
                if person_keys(entity, r) & refused:
                    n_refused += 1
                    continue
                if entity.key == "customers":
                    rows.append(("customers", r, None))
                else:
                    if parent is None:  # its customer is not active: nowhere to send it
                        n_not += 1
                        continue
                    rows.append(("contacts", parent, r))
        at = now or _now()
        n_cust = sum(1 for k, _, _ in rows if k == "customers")
        n_cont = len(rows) - n_cust

        def write() -> None:
            with claim.write(out):
                _write_mailing(out, schema, rows, lang, password, at)

        data = {"customers": [r for k, r, _ in rows if k == "customers"],
                "contacts": [c for k, _, c in rows if k == "contacts" and c is not None]}
        cols = {e: [schema[e].column(k) for ent, k in MAILING_COLUMNS if ent == e and schema[e].has(k)]
                for e in ("customers", "contacts")}
        pid = _write_with_record(conn, schema, write, third_party, kind="mailing-list", cols=cols, data=data,
                                 file=out.name, who=default_who(who), at=at, master=_master_path(master))
    finally:
        conn.close()
    return MailingResult(out, n_cust, n_cont, n_refused, n_not, pid)


def _write_mailing(out: Path, schema: Schema, rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]],
                   lang: Lang, password: str | None, at: dt.datetime) -> None:
    ja = lang == "ja"
    spec = [(e, k) for e, k in MAILING_COLUMNS if schema[e].has(k)]
    labels = [schema[e].column(k).label(lang) for e, k in spec]
    # The same label from both sheets (English "Name") is told apart by its sheet's name.
    headers = [f"{schema[e].label(lang)} {lab}" if labels.count(lab) > 1 else lab
               for (e, _), lab in zip(spec, labels, strict=True)]
    kind_header = "宛先" if ja else "Addressee"
    tcols = [TableColumn(header=kind_header, width=10)]
    for (e, k), h in zip(spec, headers, strict=True):
        col = schema[e].column(k)
        tcols.append(TableColumn(header=h, width=col.width, num_format=col.number_format,
                                 labels={c.key: c.label(lang) for c in col.choices} if col.choices else None,
                                 key=f"{e}.{k}"))
    who_label = {"customers": "顧客" if ja else "Customer", "contacts": "担当者" if ja else "Contact"}

    def values() -> Iterable[list[Any]]:
        for kind, cust, contact in rows:
            out_row: list[Any] = [who_label[kind]]
            for e, k in spec:
                if e == "customers":
                    v = cust.get(k)
                elif contact is not None:
                    v = contact.get(k)
                elif k in ("email", "phone"):  # a customer addressed as itself: its own e-mail and phone
                    v = cust.get(k)
                else:
                    v = None
                out_row.append(db.from_db(schema[e].column(k), v))
            yield out_row

    with atomic_write(out) as tmp, sealed(tmp, password) as target:
        wb = open_workbook(target)
        ws = wb.add_worksheet("DM送付先" if ja else "Mailing list")
        write_table(wb, ws, "tbl_mailing", tcols, values())
        info = wb.add_worksheet("出力情報" if ja else "About")
        lines = ([f"DM送付先リスト（{at:%Y-%m-%d %H:%M} 出力）", "DM可否が 可 の顧客・担当者のみ。同じメール・電話・顧客で"
                  "一度でも 不可 があれば除外しています。", "送付の直前に出力し、使い終わったら削除してください。"]
                 if ja else [f"Mailing list (exported {at:%Y-%m-%d %H:%M})",
                             "Only customers and contacts with DM consent Yes; anyone with a No on the same e-mail, "
                             "phone or customer is left out.", "Export it right before sending; delete it after."])
        for i, line in enumerate(lines):
            write_text(info, i, 0, line, wb)
        info.set_column(0, 0, 100)
        close_workbook(wb)
