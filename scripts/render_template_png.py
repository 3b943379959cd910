"""Render the standard workbook's 顧客 sheet as LibreOffice prints it, for the README.

    /tmp/venv/bin/python scripts/render_template_png.py [--lang ja|en] [--empty] [--out docs/template-ja.png]

Writes the template (built-in schema, fixed creation time) with three example customers unless
``--empty``, converts it to PDF with LibreOffice headless in a private profile, and turns the top of
page 1 into a PNG with ``pdftoppm -png -r 80`` (poppler-utils).  Japanese glyphs need a CJK font
(``apt-get install fonts-noto-cjk``); without one LibreOffice draws boxes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from xlcrm.intake.template import TEMPLATE_CREATED, write_team_workbook
from xlcrm.schema import DEFAULT_SCHEMA

DPI = 80
#: Top strip of an A4 landscape page at 80 dpi (935 x 661 px): header row and the example rows.
CROP = {"x": 24, "y": 40, "W": 836, "H": 80}

EXAMPLES: list[dict[str, Any]] = [
    {"customer_id": "C-000001", "kind": "corporate", "name": "株式会社みなと精機", "kana": "ミナトセイキ",
     "corporate_number": "1010001000006", "industry": "manufacturing", "employees": 48,
     "postal_code": "105-0011", "prefecture": "東京都", "address": "港区芝公園1-2-3",
     "phone": "03-1234-5678", "dm_consent": "yes", "status": "active", "owner": "佐藤",
     "updated_at": dt.date(2025, 12, 1)},
    {"customer_id": "C-000002", "kind": "individual", "name": "山本 花子", "kana": "ヤマモト ハナコ",
     "postal_code": "060-0001", "prefecture": "北海道", "address": "札幌市中央区北1条西2丁目",
     "phone": "090-1234-5678", "dm_consent": "unknown", "status": "prospect", "owner": "佐藤"},
    {"kind": "corporate", "name": "合同会社あおば食品", "kana": "アオバショクヒン", "industry": "food",
     "employees": 12, "postal_code": "980-0811", "prefecture": "宮城県", "address": "仙台市青葉区一番町4-5-6",
     "phone": "022-123-4567", "status": "negotiating"},
]


def render(out: Path, lang: str = "ja", empty: bool = False) -> Path:
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    pdftoppm = shutil.which("pdftoppm")
    if soffice is None or pdftoppm is None:
        sys.exit("needs LibreOffice (soffice) and pdftoppm: apt-get install libreoffice-calc-nogui "
                 "poppler-utils fonts-noto-cjk")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        book = tmp / f"template_{lang}.xlsx"
        rows = None if empty else {"customers": EXAMPLES}
        write_team_workbook(book, DEFAULT_SCHEMA, owner="佐藤" if lang == "ja" else "Sato", lang=lang,  # type: ignore[arg-type]
                            rows=rows, created=TEMPLATE_CREATED)
        subprocess.run([soffice, f"-env:UserInstallation=file://{tmp / 'profile'}", "--headless",
                        "--convert-to", "pdf", "--outdir", str(tmp), str(book)],
                       check=True, capture_output=True, timeout=180)
        args = [a for k, v in CROP.items() for a in (f"-{k}", str(v))]
        subprocess.run([pdftoppm, "-png", "-r", str(DPI), "-f", "1", "-l", "1", "-singlefile", *args,
                        str(book.with_suffix(".pdf")), str(tmp / "page")], check=True, timeout=60)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "page.png", out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", choices=("ja", "en"), default="ja")
    ap.add_argument("--empty", action="store_true", help="the bare template, without example rows")
    ap.add_argument("--out", type=Path)
    ns = ap.parse_args()
    print(render(ns.out or Path("docs") / f"template-{ns.lang}.png", ns.lang, ns.empty))


if __name__ == "__main__":
    main()
