"""Role exports drop what a role may not see; mailing lists never reach a person who said 不可;
third-party provisions are recorded with the file; encrypted exports need their password."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fixtures_report import OWNERS, build_master, insert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlcrm.errors import UnreadableWorkbook, XlcrmError
from xlcrm.normalize import phone_digits
from xlcrm.schema import DEFAULT_SCHEMA as S
from xlcrm.schema import build_schema
from xlcrm.store import db
from xlcrm.store.provisions import PROVISION_TABLE, ThirdParty, provision_sheet, provisions
from xlcrm.views.export import export_for_role, mailing_list
from xlcrm.xlsx.crypto import decrypt_bytes, is_encrypted, read_workbook_bytes

PERSONAL = ("phone", "fax", "mobile", "email", "postal_code", "address", "birthday")


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_master(tmp_path_factory.mktemp("exp"), customers=24)


def sheets(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    wb = openpyxl.load_workbook(path)
    out = {}
    for ws in wb.worksheets:
        rows = list(ws.iter_rows(values_only=True))
        if ws.tables:
            out[ws.title] = ([str(h) for h in rows[0]], [r for r in rows[1:] if any(v is not None for v in r)])
    return out


def all_text(path: Path) -> set[str]:
    wb = openpyxl.load_workbook(path)
    return {str(c.value) for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None}


def db_values(master: Path, entity: str, column: str) -> set[str]:
    with sqlite3.connect(db.db_path_for(master)) as conn:
        return {str(v) for (v,) in conn.execute(f'SELECT "{column}" FROM "{entity}" WHERE "{column}" IS NOT NULL')}


# --- roles --------------------------------------------------------------------------------------------

def test_analyst_export_drops_personal_columns_and_their_values(master: Path, tmp_path: Path) -> None:
    out = tmp_path / "analyst.xlsx"
    res = export_for_role(master, out, S, "analyst")
    got = sheets(out)
    for e in S:
        headers, rows = got[e.label("ja")]
        assert headers == [c.ja for c in e.columns if c.key not in PERSONAL]
        assert len(rows) == res.counts[e.key] == db.count_active(db.connect(db.db_path_for(master)), e)
    text = all_text(out)
    for e in S:
        for key in PERSONAL:
            if e.has(key):
                leaked = db_values(master, e.key, key) & text
                assert not leaked, (e.key, key, sorted(leaked)[:3])


def test_admin_export_keeps_everything_and_formula_text_stays_text(master: Path, tmp_path: Path) -> None:
    out = tmp_path / "admin.xlsx"
    export_for_role(master, out, S, "admin")
    wb = openpyxl.load_workbook(out)
    ws = wb[S["customers"].ja]
    assert [c.value for c in ws[1]] == [c.ja for c in S["customers"].columns]
    evil = [c for row in ws.iter_rows() for c in row if isinstance(c.value, str) and c.value.startswith("=")]
    assert evil and all(c.data_type == "s" for c in evil)


def test_own_only_role_needs_owner_and_sees_only_its_customers(master: Path, tmp_path: Path) -> None:
    with pytest.raises(XlcrmError, match="--owner"):
        export_for_role(master, tmp_path / "x.xlsx", S, "sales")
    out = tmp_path / "sato.xlsx"
    res = export_for_role(master, out, S, "sales", owner=OWNERS[0])
    got = sheets(out)
    headers, rows = got["顧客"]
    owner_i, id_i = headers.index("担当営業"), headers.index("顧客ID")
    ids = {r[id_i] for r in rows}
    assert rows and all(r[owner_i] == OWNERS[0] for r in rows)
    with sqlite3.connect(db.db_path_for(master)) as conn:
        want = {r[0] for r in conn.execute("SELECT customer_id FROM customers WHERE _state='active' AND owner=?",
                                           (OWNERS[0],))}
    assert ids == want
    for sheet in ("担当者", "活動履歴", "取引", "TODO"):
        h, rs = got[sheet]
        assert all(r[h.index("顧客")] in ids for r in rs)
    assert res.counts["deals"] > 0
    with pytest.raises(XlcrmError, match="known"):
        export_for_role(master, tmp_path / "y.xlsx", S, "sales", owner="誰でもない")
    assert not (tmp_path / "y.xlsx").exists()


def test_a_hide_entry_naming_no_column_is_refused(master: Path, tmp_path: Path) -> None:
    schema = build_schema({"roles": {"partner": {"hide": ["phone", "emial"]}}})
    with pytest.raises(XlcrmError, match="'emial' names no column"):
        export_for_role(master, tmp_path / "p.xlsx", schema, "partner")
    assert not (tmp_path / "p.xlsx").exists()
    with pytest.raises(XlcrmError, match="unknown role"):
        export_for_role(master, tmp_path / "p.xlsx", S, "intern")


_ENTRIES = sorted({c.key for e in S for c in e.columns}
                  | {f"{e.key}.{c.key}" for e in S for c in e.columns}
                  | {f"{e.ja}.{c.ja}" for e in S for c in e.columns}
                  | {c.ja for e in S for c in e.columns})


def _forbidden(entry: str) -> set[tuple[str, str]]:
    """Independent reading of a hide entry: (entity, column key) pairs it forbids.  A bare contact type
    (``phone``, ``email``) forbids every column of that type, whatever its key or label."""
    out = set()
    for e in S:
        for c in e.columns:
            if entry in (c.key, c.ja) or entry in (f"{e.key}.{c.key}", f"{e.ja}.{c.ja}") or (
                    entry in ("phone", "email", "postal") and c.type == entry):
                out.add((e.key, c.key))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hide=st.lists(st.sampled_from(_ENTRIES), max_size=12, unique=True), own_only=st.booleans(),
       owner=st.sampled_from(OWNERS))
def test_property_a_role_export_never_contains_a_forbidden_column(master: Path, tmp_path: Path, hide: list[str],
                                                                  own_only: bool, owner: str) -> None:
    schema = build_schema({"roles": {"random": {"hide": hide, "own_only": own_only}}})
    out = tmp_path / "random.xlsx"
    export_for_role(master, out, schema, "random", owner=owner if own_only else None)
    forbidden = set().union(*(_forbidden(h) for h in hide)) if hide else set()
    got = sheets(out)
    for e in S:
        allowed = [c for c in e.columns if (e.key, c.key) not in forbidden]
        if not allowed:
            assert e.ja not in got
            continue
        headers, _ = got[e.ja]
        assert headers == [c.ja for c in allowed]
        assert not {c.ja for c in e.columns if (e.key, c.key) in forbidden} & set(headers)
    # Values of forbidden e-mail/phone columns appear nowhere in the file (the column is gone, not
    # hidden), except where the same value sits in a column the role may see (a contact's phone that is
    # the company's main line).
    text = all_text(out)
    allowed_values: set[str] = set()
    for e in S:
        for c in e.columns:
            if c.type in ("email", "phone") and (e.key, c.key) not in forbidden:
                allowed_values |= db_values(master, e.key, c.key)
    for ek, ck in forbidden:
        if S[ek].column(ck).type in ("email", "phone"):
            assert not (db_values(master, ek, ck) & text) - allowed_values, (ek, ck)


# --- third-party provision record ------------------------------------------------------------------------

def test_third_party_export_is_recorded_with_what_was_given(tmp_path: Path) -> None:
    m = build_master(tmp_path, customers=10)
    out = tmp_path / "to_partner.xlsx"
    res = export_for_role(m, out, S, "analyst", third_party=ThirdParty("株式会社パートナー", "需要予測の共同研究"),
                          who="管理者")
    conn = db.connect(db.db_path_for(m))
    rec = provisions(conn)
    assert len(rec) == 1 and rec[0]["provision_id"] == res.provision_id
    r = rec[0]
    assert (r["recipient"], r["purpose"], r["who"], r["file"]) == ("株式会社パートナー", "需要予測の共同研究", "管理者",
                                                                   "to_partner.xlsx")
    got = sheets(out)
    assert r["records"] == sum(len(rows) for _, rows in got.values())
    assert r["counts"]["customers"] == len(got["顧客"][1])
    assert r["columns"]["customers"] == [c.key for c in S["customers"].columns if c.key not in PERSONAL]
    assert sorted(r["record_ids"]["customers"]) == sorted(row[0] for row in got["顧客"][1])
    name, headers, rows = provision_sheet(conn, S, "ja")
    assert name == "提供記録" and headers[2] == "提供先" and rows[0][2] == "株式会社パートナー"
    assert "顧客名" in rows[0][5] and "電話番号" not in rows[0][5]

    # No file, no record: a failed write rolls the record back.
    with pytest.raises(XlcrmError):
        export_for_role(m, tmp_path / "missing" / "x.xlsx", S, "analyst", third_party=ThirdParty("X社", "目的"))
    assert len(provisions(conn)) == 1
    with pytest.raises(XlcrmError, match="--purpose"):
        ThirdParty("X社", " ")
    conn.close()


# --- mailing list ---------------------------------------------------------------------------------------------

def _refusals(master: Path) -> tuple[set[str], set[str], set[str]]:
    """Independently: e-mails, personal phone digits and customer IDs of everyone who said 不可 (any state)."""
    conn = sqlite3.connect(db.db_path_for(master))
    conn.row_factory = sqlite3.Row
    mails, phones, custs = set(), set(), set()
    main_lines: dict[str, set[str]] = {}
    kinds = {}
    for r in conn.execute("SELECT * FROM customers"):
        kinds[r["customer_id"]] = r["kind"]
        main_lines[r["customer_id"]] = {phone_digits(r[k]) for k in ("phone", "fax") if r[k]}
        if r["dm_consent"] == "no":
            custs.add(r["customer_id"])
            if r["_merged_into"]:
                custs.add(r["_merged_into"])
            mails |= {r["email"].casefold()} if r["email"] else set()
            phones |= {phone_digits(r[k]) for k in ("phone", "fax") if r[k]}
    for r in conn.execute("SELECT * FROM contacts WHERE dm_consent = 'no'"):
        mails |= {r["email"].casefold()} if r["email"] else set()
        own = {phone_digits(r[k]) for k in ("phone", "mobile") if r[k]}
        if kinds.get(r["customer"]) != "individual":
            own -= main_lines.get(r["customer"], set())
        else:
            custs.add(r["customer"])
        phones |= own
    conn.close()
    return mails, phones, custs


def _check_mailing(master: Path, out: Path) -> list[tuple[Any, ...]]:
    got = sheets(out)
    headers, rows = got["DM送付先"]
    mails, phones, custs = _refusals(master)
    conn = sqlite3.connect(db.db_path_for(master))
    consent = dict(conn.execute("SELECT customer_id, dm_consent FROM customers"))
    consent |= dict(conn.execute("SELECT contact_id, dm_consent FROM contacts"))
    contact_phones = {r[0]: {phone_digits(v) for v in r[1:] if v}
                      for r in conn.execute("SELECT contact_id, phone, mobile FROM contacts")}
    conn.close()
    i_cust, i_cont, i_mail = headers.index("顧客ID"), headers.index("担当者ID"), headers.index("メールアドレス")
    i_tel = headers.index("電話番号")
    for r in rows:
        who = r[i_cont] or r[i_cust]
        assert consent[who] == "yes", r
        assert r[i_cust] not in custs, r
        if r[i_mail]:
            assert str(r[i_mail]).casefold() not in mails, r
        if r[i_cont]:
            assert not (contact_phones[r[i_cont]] & phones - {""}), r
        elif r[i_tel]:
            assert phone_digits(r[i_tel]) not in phones, r
    return rows


def test_mailing_list_never_contains_a_refusal(master: Path, tmp_path: Path) -> None:
    out = tmp_path / "dm.xlsx"
    res = mailing_list(master, out, S)
    rows = _check_mailing(master, out)
    ids = {r[2] or r[1] for r in rows}
    assert len(rows) == res.customers + res.contacts > 0
    # The planted cases: an e-mail refused on a merged duplicate (other case), the same mobile refused on
    # another record, and a contact of a customer that refused.
    assert not {"P-900001", "P-900003", "P-900004", "C-900003"} & ids
    assert res.refused >= 3
    # A yes with no refusal anywhere is in.
    conn = sqlite3.connect(db.db_path_for(master))
    mails, phones, custs = _refusals(master)
    clean = [cid for cid, em, ph in conn.execute("SELECT customer_id, email, phone FROM customers WHERE "
                                                 "_state='active' AND dm_consent='yes'")
             if cid not in custs and (not em or em.casefold() not in mails) and phone_digits(ph) not in phones]
    conn.close()
    assert clean and set(clean) <= ids


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_property_mailing_list_with_random_shared_identifiers(tmp_path_factory: pytest.TempPathFactory,
                                                              seed: int) -> None:
    """Random people sharing a small pool of e-mails and phones, random consent and states."""
    rng = random.Random(seed)
    folder = tmp_path_factory.mktemp("dm")
    m = folder / "master.xlsx"
    conn = db.connect(db.db_path_for(m), create=True)
    db.create_tables(conn, S)
    mails = [f"p{i}@Example.jp" for i in range(5)]
    phones = [f"090-0000-00{i:02d}" for i in range(5)]
    consent = ["yes", "yes", "no", "unknown", None]
    for i in range(8):
        cid = f"C-{i:06d}"
        insert(conn, "customers", {"customer_id": cid, "kind": rng.choice(["corporate", "individual"]),
                                   "name": f"顧客{i}", "owner": "佐藤", "dm_consent": rng.choice(consent),
                                   "email": rng.choice([*mails, None]), "phone": rng.choice([*phones, None]),
                                   "_state": rng.choice(["active"] * 4 + ["merged", "deleted"]),
                                   "_merged_into": f"C-{rng.randrange(8):06d}" if rng.random() < 0.2 else None})
        for j in range(rng.randint(0, 3)):
            insert(conn, "contacts", {"contact_id": f"P-{i:03d}{j:03d}", "customer": cid,
                                      "name": rng.choice(["山田", "田中", "佐藤"]), "dm_consent": rng.choice(consent),
                                      "email": rng.choice([*mails, mails[0].upper(), None]),
                                      "mobile": rng.choice([*phones, phones[0].replace("-", ""), None])})
    conn.close()
    out = folder / "dm.xlsx"
    mailing_list(m, out, S)
    _check_mailing(m, out)


# --- encryption ------------------------------------------------------------------------------------------------

def test_encrypted_export_opens_with_the_password_only(master: Path, tmp_path: Path) -> None:
    out = tmp_path / "secret.xlsx"
    export_for_role(master, out, S, "analyst", password="正しい-pass")
    data = out.read_bytes()
    assert is_encrypted(data)
    plain = read_workbook_bytes(out, "正しい-pass")
    assert plain[:2] == b"PK"
    out_plain = tmp_path / "plain.xlsx"
    out_plain.write_bytes(plain)
    assert sheets(out_plain)["顧客"][0][0] == "顧客ID"
    with pytest.raises(UnreadableWorkbook, match="password-protected"):
        read_workbook_bytes(out, None)
    with pytest.raises(UnreadableWorkbook, match="wrong password"):
        decrypt_bytes(data, "違う", path=out)
    # The team reader refuses it the same way without the password.
    from xlcrm.xlsx.reader import read_workbook

    with pytest.raises(UnreadableWorkbook, match="password"):
        read_workbook(out, S)


def test_cli_takes_the_password_from_the_environment(master: Path, tmp_path: Path) -> None:
    if shutil.which(sys.executable) is None:  # pragma: no cover
        pytest.skip("no interpreter path")
    env = {**os.environ, "XLCRM_PASSWORD": "env-secret"}
    out = tmp_path / "dm.xlsx"
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "mailing-list", "--master", str(master), str(out)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert is_encrypted(out.read_bytes())
    assert read_workbook_bytes(out, "env-secret")[:2] == b"PK"
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "export", "--master", str(master), "--role", "sales",
                           str(tmp_path / "s.xlsx")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--owner" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "xlcrm", "export", "--master", str(master), "--role", "analyst",
                           "--to-third-party", "X社", str(tmp_path / "t.xlsx")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and "--purpose" in proc.stderr and not (tmp_path / "t.xlsx").exists()


def test_provision_table_is_created_on_demand(tmp_path: Path) -> None:
    m = build_master(tmp_path, customers=3)
    conn = db.connect(db.db_path_for(m))
    assert provisions(conn) == []
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (PROVISION_TABLE,)).fetchone() is None
    conn.close()
    mailing_list(m, tmp_path / "dm.xlsx", S, third_party=ThirdParty("発送代行", "DM発送"))
    conn = db.connect(db.db_path_for(m))
    rec = provisions(conn)
    assert rec[0]["kind"] == "mailing-list" and json.dumps(rec[0]["columns"], ensure_ascii=False).count("email") == 1
    conn.close()
