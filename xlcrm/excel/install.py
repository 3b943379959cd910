"""`xlcrm addin install`: put the add-in where Excel loads it and write ``xlcrm.conf``.

Where, and why there:

- Windows: ``%APPDATA%\\Microsoft\\Excel\\XLSTART``.  Excel opens every file in XLSTART at start-up,
  and XLSTART is a trusted location by default, so the add-in's macros run without a security prompt.
  The file is copied by Python, which drops any Mark of the Web it had (the ``Zone.Identifier``
  stream); an existing stream on the target is removed as well.
- macOS: ``~/Library/Group Containers/UBF8T346G9.Office/User Content.localized/Startup.localized/Excel``
  (Excel's start-up folder, the one xlwings uses), plus xlwings' AppleScript in
  ``~/Library/Application Scripts/com.microsoft.Excel``, without which RunPython cannot start Python
  from the sandboxed Excel.

Everything is computed as a plan first (``dry_run`` prints it), so tests can check the plan for both
platforms on Linux with a fake home folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xlcrm.errors import XlcrmError, extra_hint
from xlcrm.excel.build import SHIPPED, XLWINGS_VERSION
from xlcrm.excel.conf import (
    KEY_INTERPRETER,
    KEY_MASTER,
    KEY_SCHEMA,
    conf_encoding,
    platform_kind,
    user_conf_path,
    write_conf,
)
from xlcrm.schema import load_schema
from xlcrm.store import db
from xlcrm.store.url import store_url

ADDIN_NAME = "xlcrm.xlam"
MAC_STARTUP = ("Library", "Group Containers", "UBF8T346G9.Office", "User Content.localized",
               "Startup.localized", "Excel")
MAC_SCRIPTS = ("Library", "Application Scripts", "com.microsoft.Excel")


@dataclass
class InstallPlan:
    platform: str
    addin: Path
    conf_path: Path
    conf: dict[str, str]
    applescript: tuple[Path, Path] | None = None  # (source, target) on macOS
    warnings: list[str] = field(default_factory=list)
    done: bool = False

    def describe(self) -> list[str]:
        lines = [f"copy {SHIPPED.name} -> {self.addin}",
                 f"write {self.conf_path}: " + ", ".join(f"{k}={v}" for k, v in self.conf.items())]
        if self.applescript is not None:
            lines.append(f"copy {self.applescript[0].name} -> {self.applescript[1]}")
        return lines


def addin_dir(platform: str = sys.platform, home: Path | None = None,
              env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    kind = platform_kind(platform)
    base = Path(home) if home is not None else Path.home()
    if kind == "win":
        appdata = Path(env["APPDATA"]) if home is None and env.get("APPDATA") else base / "AppData" / "Roaming"
        return appdata / "Microsoft" / "Excel" / "XLSTART"
    if kind == "mac":
        return base.joinpath(*MAC_STARTUP)
    raise XlcrmError("Excel runs on Windows and macOS only; on this system pass --dest FOLDER to copy the "
                     "add-in somewhere, or run `xlcrm addin install` on the Windows or Mac PC")


def _applescript_source() -> Path | None:
    try:
        import xlwings
    except ImportError:
        return None
    path = Path(xlwings.__file__).parent / f"xlwings-{xlwings.__version__}.applescript"
    return path if path.exists() else None


def plan_install(*, master: Path | None = None, config: Path | None = None, dest: Path | None = None,
                 platform: str = sys.platform, home: Path | None = None,
                 env: Mapping[str, str] | None = None, interpreter: str | None = None) -> InstallPlan:
    """What `install` will do; refuses (one line) a master path that holds no master database."""
    kind = platform_kind(platform)
    target_dir = Path(dest) if dest is not None else addin_dir(platform, home, env)
    conf: dict[str, str] = {}
    if kind in KEY_INTERPRETER:
        conf[KEY_INTERPRETER[kind]] = interpreter or sys.executable
    if master is not None:
        m = Path(master).expanduser().resolve()
        database = m if m.suffix.lower() == ".db" else db.db_path_for(m)
        if not database.exists():
            raise XlcrmError(f"{m}: no master database ({database.name}) beside it; check the path (is the "
                             "network drive connected?) or run `xlcrm merge` first")
        conf[KEY_MASTER] = str(m)
    server = None
    if config is not None:
        c = Path(config).expanduser().resolve()
        if not c.is_file():
            raise XlcrmError(f"{c}: configuration file not found; check the --config path")
        conf[KEY_SCHEMA] = str(c)
        # A [store] url: search, history and refresh read that PostgreSQL master (not this PC's XLCRM_DB).
        server = store_url(load_schema(c), environ={})
    plan = InstallPlan(platform, target_dir / ADDIN_NAME, user_conf_path(platform, home, env), conf)
    if not SHIPPED.exists():
        raise XlcrmError(f"{SHIPPED}: the built add-in is missing from this installation; run "
                         "`xlcrm addin build` or reinstall xlcrm")
    try:
        import xlwings

        if xlwings.__version__ != XLWINGS_VERSION:
            plan.warnings.append(f"xlwings {xlwings.__version__} is installed but the add-in was built for "
                                 f"{XLWINGS_VERSION}: pip install \"xlwings=={XLWINGS_VERSION}\"")
    except ImportError:
        plan.warnings.append("xlwings is not installed, so the ribbon cannot start Python: "
                             + extra_hint("excel"))
    if kind == "mac":
        source = _applescript_source()
        target = (Path(home) if home is not None else Path.home()).joinpath(*MAC_SCRIPTS) / \
            f"xlwings-{XLWINGS_VERSION}.applescript"
        if source is None:
            plan.warnings.append("xlwings' AppleScript was not found; after installing xlwings run "
                                 "`xlcrm addin install` again")
        else:
            plan.applescript = (source, target)
    if master is None and server is None:
        plan.warnings.append("no --master given: search, history and refresh need it (or an xlcrm.conf "
                             "with XLCRM_MASTER beside the team workbooks, or [store] url in the --config file)")
    return plan


def install_addin(*, master: Path | None = None, config: Path | None = None, dest: Path | None = None,
                  dry_run: bool = False, platform: str = sys.platform, home: Path | None = None,
                  env: Mapping[str, str] | None = None, interpreter: str | None = None) -> InstallPlan:
    plan = plan_install(master=master, config=config, dest=dest, platform=platform, home=home, env=env,
                        interpreter=interpreter)
    if dry_run:
        return plan
    _copy(SHIPPED, plan.addin)
    if platform_kind(platform) == "win" and os.name == "nt":
        _unblock(plan.addin)
    write_conf(plan.conf_path, plan.conf, encoding=conf_encoding(platform))
    if plan.applescript is not None:
        _copy(*plan.applescript)
    plan.done = True
    return plan


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except PermissionError:
        tmp.unlink(missing_ok=True)
        raise XlcrmError(f"{dst}: cannot replace the add-in while Excel has it open; quit Excel (all "
                         "windows) and run the command again") from None


def _unblock(path: Path) -> None:
    """Remove the Mark of the Web (an NTFS alternate data stream) so Excel does not block the macros."""
    with contextlib.suppress(OSError):
        os.remove(str(path) + ":Zone.Identifier")
