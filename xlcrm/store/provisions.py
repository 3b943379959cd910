"""The record of provisions to third parties (提供記録, 個人情報保護法 Art. 29): stored in the master
database's ``provisions`` table by ``xlcrm export --to-third-party`` and shown on master.xlsx's 提供記録 sheet."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xlcrm.errors import XlcrmError
from xlcrm.schema import Lang, Schema
from xlcrm.store import db

PROVISION_TABLE = db.PROVISION_TABLE
#: (key, ja, en): the columns of the provision record, in sheet order.
PROVISION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("provision_id", "記録番号", "No."),
    ("provided_at", "提供日時", "Provided at"),
    ("recipient", "提供先", "Recipient"),
    ("purpose", "利用目的", "Purpose"),
    ("kind", "出力の種類", "Export"),
    ("columns", "提供した項目", "Items provided"),
    ("records", "件数", "Records"),
    ("counts", "件数の内訳", "Records per sheet"),
    ("record_ids", "本人を特定する事項（ID）", "Persons concerned (IDs)"),
    ("file", "ファイル", "File"),
    ("who", "記録者", "Recorded by"),
)
PROVISION_SHEET = {"ja": "提供記録", "en": "Third-party provision"}

@dataclass(frozen=True)
class ThirdParty:
    """Who receives the data and why; both are required by Art. 29 and by the record."""

    recipient: str
    purpose: str

    def __post_init__(self) -> None:
        if not self.recipient.strip():
            raise XlcrmError("--to-third-party needs the recipient's name (会社名・氏名)")
        if not self.purpose.strip():
            raise XlcrmError("--to-third-party needs --purpose: what the recipient will use the data for")


def add_provision(conn: sqlite3.Connection, party: ThirdParty, *, kind: str, columns: Mapping[str, Sequence[str]],
                  counts: Mapping[str, int], record_ids: Mapping[str, Sequence[str]], file: str, who: str,
                  at: dt.datetime) -> int:
    return db.add_provision(
        conn, provided_at=at.isoformat(timespec="seconds"), recipient=party.recipient.strip(),
        purpose=party.purpose.strip(), kind=kind,
        columns=json.dumps({k: list(v) for k, v in columns.items()}, ensure_ascii=False),
        records=sum(counts.values()), counts=json.dumps(dict(counts), ensure_ascii=False),
        record_ids=json.dumps({k: list(v) for k, v in record_ids.items()}, ensure_ascii=False),
        file=file, who=who)


def provisions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every provision record, oldest first, with the JSON columns decoded."""
    keys = [k for k, _, _ in PROVISION_COLUMNS]
    out = []
    for row in db.provision_rows(conn, keys):
        d = dict(zip(keys, row, strict=True))
        for k in ("columns", "counts", "record_ids"):
            d[k] = json.loads(d[k])
        out.append(d)
    return out


def provision_sheet(conn: sqlite3.Connection, schema: Schema, lang: Lang) -> tuple[str, list[str], list[list[Any]]]:
    """(sheet name, headers, rows) of the 提供記録 sheet, for the master workbook writer."""
    headers = [ja if lang == "ja" else en for _, ja, en in PROVISION_COLUMNS]
    rows = []
    for p in provisions(conn):
        cols = "; ".join(f"{_entity_label(schema, e, lang)}: " + ", ".join(_column_label(schema, e, k, lang)
                                                                            for k in ks)
                         for e, ks in p["columns"].items())
        counts = ", ".join(f"{_entity_label(schema, e, lang)} {n}" for e, n in p["counts"].items())
        ids = "; ".join(f"{_entity_label(schema, e, lang)}: " + ", ".join(v) for e, v in p["record_ids"].items()
                        if v)
        rows.append([p["provision_id"], p["provided_at"], p["recipient"], p["purpose"], p["kind"], cols,
                     p["records"], counts, ids, p["file"], p["who"]])
    return PROVISION_SHEET[lang], headers, rows


def _entity_label(schema: Schema, key: str, lang: Lang) -> str:
    try:
        return schema[key].label(lang)
    except KeyError:
        return key


def _column_label(schema: Schema, entity: str, key: str, lang: Lang) -> str:
    try:
        return schema[entity].column(key).label(lang)
    except KeyError:
        return key
