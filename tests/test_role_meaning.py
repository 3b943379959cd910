"""Roles hide by meaning: ``hide = ["phone"]`` drops every phone-number column, built-in or custom, and
phone numbers / e-mail addresses typed into free text are masked in that role's exports."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from merge_fixtures import activity, book, connect, customer

from xlcrm.schema import load_schema
from xlcrm.views.export import mask_text

pytestmark = pytest.mark.usefixtures("store")

CONFIG = """\
[sheets."顧客"]
columns = [
  { label = "緊急連絡先", en = "Emergency phone", type = "phone" },
  { label = "個人メール", en = "Private e-mail", type = "email" },
  { label = "紹介者", type = "text" },
]

[sheets."担当者"]
columns = [{ label = "自宅電話", en = "Home phone", type = "phone" }]

[roles.analyst]
hide = ["phone", "email", "address", "birthday"]
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlcrm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def _texts(path: Path) -> tuple[set[str], set[str]]:
    wb = openpyxl.load_workbook(path)
    headers = {str(c.value) for ws in wb.worksheets if ws.tables for c in ws[1] if c.value is not None}
    values = {str(c.value) for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None}
    return headers, values


def test_custom_phone_and_email_columns_and_numbers_in_notes_never_reach_the_analyst(tmp_path: Path) -> None:
    (tmp_path / "xlcrm.toml").write_text(CONFIG, encoding="utf-8")
    schema = load_schema(tmp_path / "xlcrm.toml")
    keys = {c.ja: c.key for e in schema for c in e.columns if c.custom}
    book(tmp_path / "team" / "佐藤.xlsx", {
        "customers": [customer("株式会社青葉", phone="03-1234-5678", **{
            keys["緊急連絡先"]: "090-1111-2222", keys["個人メール"]: "aoba.private@example.jp",
            keys["紹介者"]: "山田", "notes": "社長直通 ０９０－３３３３－４４４４、夜は aoba.home@example.jp へ"})],
        "contacts": [{"customer": "株式会社青葉", "name": "青葉 一郎", keys["自宅電話"]: "045-555-6666",
                      "email": "ichiro@example.jp"}],
        "activities": [activity("株式会社青葉", "折り返しは 045-777-8888 (自宅) か ichiro.home@example.jp")],
    }, schema=schema)
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    merged = _cli("merge", "team", "--master", str(master), cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in master.parent.iterdir() if p.is_file()}

    out = tmp_path / "analyst.xlsx"
    proc = _cli("export", str(out), "--master", str(master), "--role", "analyst", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    headers, values = _texts(out)
    assert not {"緊急連絡先", "個人メール", "自宅電話", "電話番号", "FAX", "携帯電話", "メールアドレス"} & headers
    assert "紹介者" in headers and "備考" in headers and "内容" in headers
    text = "\n".join(values)
    for secret in ("090-1111-2222", "aoba.private@example.jp", "045-555-6666", "ichiro@example.jp",
                   "090-3333-4444", "aoba.home@example.jp", "045-777-8888", "ichiro.home@example.jp",
                   "03-1234-5678"):
        assert secret not in text, secret
    assert "社長直通 ［電話番号］、夜は ［メール］ へ" in values
    assert "折り返しは ［電話番号］ (自宅) か ［メール］" in values
    # the admin still sees everything; nothing in the master changed
    full = tmp_path / "admin.xlsx"
    assert _cli("export", str(full), "--master", str(master), "--role", "admin", cwd=tmp_path).returncode == 0
    _, admin_values = _texts(full)
    assert {"090-1111-2222", "045-555-6666"} <= admin_values
    assert any("aoba.home@example.jp" in v for v in admin_values)
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in master.parent.iterdir()
                      if p.is_file()}
    with connect(master) as conn:  # the note itself is untouched in the master
        assert conn.execute("SELECT notes FROM customers").fetchone()[0].startswith("社長直通 090-3333-4444")


def test_hide_by_sheet_or_label_stays_narrow_and_masking_follows_the_hidden_types(tmp_path: Path) -> None:
    from xlcrm.schema import Role, build_schema
    from xlcrm.views.export import hidden_columns

    schema = build_schema({"sheets": {"顧客": {"columns": [{"label": "緊急連絡先", "type": "phone"}]}}})
    only_customers = hidden_columns(schema, Role("x", ("customers.phone",)))
    assert only_customers["customers"] == {"phone"} and not only_customers["contacts"]
    every_phone = hidden_columns(schema, Role("x", ("phone",)))
    emergency = next(c.key for c in schema["customers"].columns if c.ja == "緊急連絡先")
    assert every_phone["customers"] == {"phone", "fax", emergency}
    assert every_phone["contacts"] == {"phone", "mobile"}
    assert mask_text("TEL 03-1234-5678 / a@b.jp", {"phone"}) == "TEL ［電話番号］ / a@b.jp"
    assert mask_text("2024-05-01 1,200,000円 注文番号 12345678901", {"phone", "email"}) == \
        "2024-05-01 1,200,000円 注文番号 12345678901"
