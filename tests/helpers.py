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
