"""Helpers shared by tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def libreoffice_convert(src: Path, out_dir: Path, fmt: str = "pdf", timeout: int = 180) -> Path:
    """Convert with LibreOffice headless in a private profile; skip (with the reason) when absent."""
    exe = soffice()
    if exe is None:
        pytest.skip("LibreOffice (soffice) is not installed: apt-get install -y libreoffice-calc-nogui")
    profile = out_dir / "lo-profile"
    proc = subprocess.run(
        [exe, f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to", fmt,
         "--outdir", str(out_dir), str(src)],
        capture_output=True, text=True, timeout=timeout, check=False)
    target = out_dir / (src.stem + "." + fmt.split(":")[0])
    assert proc.returncode == 0 and target.exists(), f"LibreOffice failed: {proc.stdout} {proc.stderr}"
    return target


# --- a minimal Excel binary workbook (.xlsb, MS-XLSB) -------------------------------------------------
# Neither LibreOffice nor a Python library writes .xlsb, which some accounting and sales systems
# export; these few records are what a reader needs: per sheet BrtBundleSh in workbook.bin, and
# BrtWsDim, BrtBeginSheetData, BrtRowHdr, BrtCellReal / BrtCellSt and BrtEndSheetData in the sheet.

_XLSB_TYPES = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/'
               '2006/content-types"><Default Extension="bin" ContentType="application/vnd.ms-excel.sheet.'
               'binary.macroEnabled.main"/><Default Extension="rels" ContentType="application/'
               'vnd.openxmlformats-package.relationships+xml"/></Types>')
_RELS = '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
_REL = '<Relationship Id="{id}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/{kind}" Target="{to}"/>'


def _xlsb_record(typ: int, data: bytes = b"") -> bytes:
    head = bytes([typ]) if typ < 0x80 else bytes([(typ & 0x7F) | 0x80, typ >> 7])
    n, size = len(data), b""
    while True:
        low, n = n & 0x7F, n >> 7
        size += bytes([low | (0x80 if n else 0)])
        if not n:
            return head + size + data


def _xlsb_text(s: str) -> bytes:
    import struct

    return struct.pack("<I", len(s)) + s.encode("utf-16-le")


def write_xlsb(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    """An .xlsb of text and number cells (None is a blank cell), one sheet per entry."""
    import struct
    import zipfile

    rels, book = [], b""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", _XLSB_TYPES)
        zf.writestr("_rels/.rels", _RELS + _REL.format(id="rId1", kind="officeDocument", to="xl/workbook.bin")
                    + "</Relationships>")
        for i, (name, rows) in enumerate(sheets.items(), start=1):
            rels.append(_REL.format(id=f"rId{i}", kind="worksheet", to=f"worksheets/sheet{i}.bin"))
            book += _xlsb_record(0x9C, struct.pack("<II", 0, i) + _xlsb_text(f"rId{i}") + _xlsb_text(name))
            width = max(len(r) for r in rows)
            body = _xlsb_record(0x94, struct.pack("<IIII", 0, len(rows) - 1, 0, width - 1)) + _xlsb_record(0x91)
            for r, row in enumerate(rows):
                body += _xlsb_record(0x00, struct.pack("<I", r) + bytes(13))
                for c, v in enumerate(row):
                    cell = struct.pack("<II", c, 0)
                    if isinstance(v, int | float):
                        body += _xlsb_record(0x05, cell + struct.pack("<d", v))
                    elif v is not None:
                        body += _xlsb_record(0x06, cell + _xlsb_text(str(v)))
            zf.writestr(f"xl/worksheets/sheet{i}.bin", body + _xlsb_record(0x92))
        zf.writestr("xl/workbook.bin", book + _xlsb_record(0x90) + _xlsb_record(0x9D))
        zf.writestr("xl/_rels/workbook.bin.rels", _RELS + "".join(rels) + "</Relationships>")
    return path
