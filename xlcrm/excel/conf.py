"""``xlcrm.conf``: where the add-in finds Python and the master, shared by VBA and Python.

The add-in's VBA (xlwings' RunPython with ``PROJECT_NAME = "xlcrm"``) reads the interpreter from this
file, so its format is the one VBA's ``Write #`` / ``Input #`` use: one ``"KEY","value"`` line per
setting.  Python reads the same file for the master path.  Lookup order matches xlwings' VBA: a
``xlcrm.conf`` beside the active workbook first, then the user's file:

- Windows: ``%USERPROFILE%\\.xlcrm\\xlcrm.conf``
- macOS: ``~/Library/Containers/com.microsoft.Excel/Data/xlcrm.conf`` (Excel's sandbox home)
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from xlcrm.errors import XlcrmError

CONF_NAME = "xlcrm.conf"
KEY_MASTER = "XLCRM_MASTER"
KEY_SCHEMA = "XLCRM_SCHEMA"
KEY_INTERPRETER = {"win": "INTERPRETER_WIN", "mac": "INTERPRETER_MAC"}


def platform_kind(platform: str = sys.platform) -> str:
    """``win``, ``mac`` or ``other`` (Linux: no Excel, but the CLI and tests still use the file)."""
    if platform.startswith("win"):
        return "win"
    if platform == "darwin":
        return "mac"
    return "other"


def user_conf_path(platform: str = sys.platform, home: Path | None = None,
                   env: Mapping[str, str] | None = None) -> Path:
    """The per-user file the add-in's VBA reads (same place as xlwings' ``GetConfigFilePath``)."""
    env = os.environ if env is None else env
    kind = platform_kind(platform)
    base = Path(home) if home is not None else Path.home()
    if kind == "win":
        profile = Path(env["USERPROFILE"]) if home is None and env.get("USERPROFILE") else base
        return profile / ".xlcrm" / CONF_NAME
    if kind == "mac":
        return base / "Library" / "Containers" / "com.microsoft.Excel" / "Data" / CONF_NAME
    return base / ".xlcrm" / CONF_NAME


def conf_encoding(platform: str = sys.platform) -> str:
    """VBA on Windows reads files in the ANSI code page (cp932 on Japanese Windows), not UTF-8."""
    if platform_kind(platform) == "win":
        try:
            "".encode("mbcs")
            return "mbcs"
        except LookupError:  # simulating Windows on another OS (tests)
            return "cp932"
    return "utf-8"


def read_conf(path: Path, *, encoding: str = "utf-8") -> dict[str, str]:
    """Settings in the file, keys upper-cased (VBA compares them case-insensitively); {} if absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise XlcrmError(f"cannot read settings ({exc.strerror})", path=str(path)) from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    out: dict[str, str] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0].strip():
            out[row[0].strip().upper()] = row[1]
    return out


def write_conf(path: Path, values: Mapping[str, str], *, encoding: str = "utf-8") -> dict[str, str]:
    """Merge ``values`` into the file (other keys are kept) and write it atomically; return the result."""
    merged = read_conf(path, encoding=encoding)
    for key, value in values.items():
        if '"' in value or "\n" in value or "\r" in value:
            raise XlcrmError(f"setting {key}: a value cannot contain quotes or line breaks: {value!r}")
        merged[key.upper()] = value
    text = "".join(f'"{k}","{v}"\r\n' for k, v in merged.items())
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        raise XlcrmError(f"{path}: a path in the settings has characters this Windows code page cannot "
                         "store; move Python or the master to a folder with an ASCII name") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return merged


def lookup(key: str, workbook: Path | None = None, *, platform: str = sys.platform,
           home: Path | None = None) -> str | None:
    """A setting from the directory file beside ``workbook``, else from the user's file."""
    encoding = conf_encoding(platform)
    candidates = []
    if workbook is not None:
        candidates.append(Path(workbook).parent / CONF_NAME)
    candidates.append(user_conf_path(platform, home))
    for path in candidates:
        value = read_conf(path, encoding=encoding).get(key.upper())
        if value:
            return os.path.expandvars(value)
    return None
