"""Hostile team workbooks for the memory figures (run on demand, not in the test suite).

    python benchmarks/make_hostile.py DIR

Writes into DIR a 200-customer standard workbook (``base.xlsx``) and copies of it altered the way a
stray keystroke or a crafted file alters one:

* ``far_XFD1048576.xlsx``, ``far_GR1048576.xlsx``, ``far_A1048576.xlsx``: one more filled cell on the
  顧客 sheet, at that address;
* ``lying_sizes.xlsx``: 300,000 more full rows on the 顧客 sheet while the archive still states the
  sheet's old size (a few MB that inflate to 330 MB);
* ``one_column.xlsx``: the header row, then 1,048,575 rows with only the company name filled;
* ``merged_cells.xlsx``: one merged range from A300 to XFD1048576 (17 billion cells) on the 顧客 sheet;
* ``dimension.xlsx``: the 顧客 sheet's ``<dimension>`` claims A1:XFD1048576.

Then measure each with ``python benchmarks/bench_hostile.py DIR`` (benchmarks/README.md, Hostile
inputs).
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_data import make_large_workbook

CUSTOMERS = "xl/worksheets/sheet1.xml"


def rewrite(src: Path, out: Path, change: Callable[[bytes], bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info.filename, change(data) if info.filename == CUSTOMERS else data)
    return out


def far_cell(src: Path, out: Path, cell: str, text: str = "x") -> Path:
    """One more filled cell on the customers sheet, as a slip of the keyboard leaves it."""
    row = re.search(r"\d+", cell).group()  # type: ignore[union-attr]
    extra = f'<row r="{row}"><c r="{cell}" t="inlineStr"><is><t>{text}</t></is></c></row></sheetData>'.encode()
    return rewrite(src, out, lambda d: d.replace(b"</sheetData>", extra))


def one_column(src: Path, out: Path, rows: int) -> Path:
    def change(data: bytes) -> bytes:
        head, rest = data.split(b"<sheetData>")
        body, tail = rest.split(b"</sheetData>")
        header = re.match(rb'<row r="1".*?</row>', body).group(0)  # type: ignore[union-attr]
        filled = "".join(f'<row r="{r}"><c r="C{r}" t="inlineStr"><is><t>会社{r}</t></is></c></row>'
                         for r in range(2, rows + 2)).encode()
        return head + b"<sheetData>" + header + filled + b"</sheetData>" + tail
    return rewrite(src, out, change)


def lying_sizes(src: Path, out: Path, rows: int, first: int = 1000) -> Path:
    """The customers sheet grows by ``rows`` full rows from row ``first`` while the archive still
    states its old size."""
    with zipfile.ZipFile(src) as z:
        stated = z.getinfo(CUSTOMERS).file_size
    cells = "".join(f'<c r="{chr(65 + j)}{{r}}" t="inlineStr"><is><t>text{j}</t></is></c>' for j in range(20))
    body = "".join(f'<row r="{r}">' + cells.replace("{r}", str(r)) + "</row>"
                   for r in range(first, first + rows)).encode()
    rewrite(src, out, lambda d: d.replace(b"</sheetData>", body + b"</sheetData>"))
    raw = bytearray(out.read_bytes())
    name = CUSTOMERS.encode()
    # The uncompressed size in the local header (+22) and in the central directory (+24).
    for sig, name_at, size_at, header in ((b"PK\x03\x04", 26, 22, 30), (b"PK\x01\x02", 28, 24, 46)):
        i = raw.find(sig)
        while i >= 0:
            n = struct.unpack_from("<H", raw, i + name_at)[0]
            if raw[i + header:i + header + n] == name:
                struct.pack_into("<I", raw, i + size_at, stated)
            i = raw.find(sig, i + 4)
    out.write_bytes(bytes(raw))
    return out


def merged_cells(src: Path, out: Path, ref: str) -> Path:
    merge = f'</sheetData><mergeCells count="1"><mergeCell ref="{ref}"/></mergeCells>'.encode()
    return rewrite(src, out, lambda d: d.replace(b"</sheetData>", merge, 1))


def dimension(src: Path, out: Path, ref: str) -> Path:
    return rewrite(src, out, lambda d: re.sub(rb'<dimension ref="[^"]*"/>', f'<dimension ref="{ref}"/>'.encode(), d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / "base.xlsx"
    make_large_workbook(base, 200, 600)
    for cell in ("XFD1048576", "GR1048576", "A1048576"):
        far_cell(base, args.out / f"far_{cell}.xlsx", cell)
    lying_sizes(base, args.out / "lying_sizes.xlsx", 300_000)
    one_column(base, args.out / "one_column.xlsx", 1_048_575)
    merged_cells(base, args.out / "merged_cells.xlsx", "A300:XFD1048576")
    dimension(base, args.out / "dimension.xlsx", "A1:XFD1048576")
    for p in sorted(args.out.glob("*.xlsx")):
        print(f"{p}  {p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
