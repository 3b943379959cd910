"""Build ``xlcrm.xlam``, the ribbon add-in, from xlwings' Excel-made quickstart add-in.

Why not write a VBA project from scratch: projects generated without Excel open, but their macros do
not run.  So the build starts from ``quickstart_addin_ribbon.xlam``, which Excel itself saved and
which the xlwings wheel ships (BSD licence, see ``LICENSE.xlwings``; a verbatim copy lives in
``template/`` so that a build needs no network), and changes only what it must:

- the source text of two existing modules, with pyOpenVBA: ``RibbonMyAddin`` becomes xlcrm's ribbon
  callbacks (``vba/RibbonMyAddin.bas``) and ``xlwings`` gets ``PROJECT_NAME = "xlcrm"`` so that
  RunPython reads ``xlcrm.conf``; every other module stream stays byte-identical;
- the ribbon: ``customUI/customUI.xml`` (2006 schema) is replaced by ``customUI/customUI14.xml``;
- the add-in's own config sheet is renamed ``_xlcrm.conf`` and the document title set.

Every zip member is written with a fresh ``ZipInfo`` (fixed date, no extra fields) and *stored*, not
deflated: the output is then byte-for-byte reproducible whatever zlib the machine has, which lets a
test rebuild the shipped add-in and compare bytes.  Stored costs about 40 KB; Excel does not care.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlcrm.errors import XlcrmError

HERE = Path(__file__).resolve().parent
#: The add-in shipped inside the package; `xlcrm addin install` copies this file.
SHIPPED = HERE / "xlcrm.xlam"
TEMPLATE = HERE / "template" / "quickstart_addin_ribbon.xlam"
#: xlwings release the template comes from.  The VBA calls ``xlwings-<version>.applescript`` on macOS,
#: so the Python side must run this exact xlwings version (the ``excel`` extra pins it).
XLWINGS_VERSION = "0.37.8"
TEMPLATE_SHA256 = "43010e1abd6e7a48b4693367f062196654a21c256683dccbaec810df7a6f4dbb"
RIBBON_XML = HERE / "customUI14.xml"
VBA_DIR = HERE / "vba"

RIBBON_PART = "customUI/customUI14.xml"
OLD_RIBBON_PART = "customUI/customUI.xml"
#: Root relationship type that makes Office 2010+ load a customUI14 part.
RIBBON_REL_TYPE = "http://schemas.microsoft.com/office/2007/relationships/ui/extensibility"
RIBBON_NS = "http://schemas.microsoft.com/office/2009/07/customui"
VBA_PART = "xl/vbaProject.bin"
CONF_SHEET = "_xlcrm.conf"
PROJECT_NAME = "xlcrm"
#: Module whose source xlcrm replaces wholesale (file in vba/ of the same name).
RIBBON_MODULE = "RibbonMyAddin"
#: The one line of xlwings' module xlcrm changes, before and after.
PROJECT_LINE = ('Public Const PROJECT_NAME As String = "myaddin"',
                f'Public Const PROJECT_NAME As String = "{PROJECT_NAME}"')
#: Modules left exactly as Excel saved them in the template.
UNTOUCHED_MODULES = ("ThisWorkbook", "Dictionary", "Sheet2")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
TITLE = "xlcrm 顧客管理 (CRM)"


@dataclass(frozen=True)
class BuildResult:
    path: Path
    sha256: str
    modules: dict[str, str]


def template_bytes() -> bytes:
    """The pinned template, refused if it is not the file the build was written against."""
    try:
        data = TEMPLATE.read_bytes()
    except OSError:
        raise XlcrmError(f"{TEMPLATE}: add-in template missing; reinstall xlcrm") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != TEMPLATE_SHA256:
        raise XlcrmError(f"{TEMPLATE}: template differs from xlwings {XLWINGS_VERSION}'s "
                         f"quickstart_addin_ribbon.xlam (sha256 {digest[:12]}...); restore it from the "
                         "xlwings wheel or from git")
    return data


def ribbon_source() -> str:
    """Our ribbon module exactly as it is stored in the project: CRLF lines, ASCII only."""
    text = (VBA_DIR / f"{RIBBON_MODULE}.bas").read_text(encoding="ascii")
    return to_crlf(text)


def to_crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def patch_xlwings_module(source: str) -> str:
    old, new = PROJECT_LINE
    if source.count(old) != 1:
        raise XlcrmError(f"template module xlwings: expected one line {old!r}; the template changed — "
                         "update xlcrm/excel/build.py for the new xlwings version")
    return source.replace(old, new)


def _pyopenvba() -> Any:
    """pyOpenVBA's ``ExcelFile``, or one line saying how to install the version the build is pinned to."""
    try:
        from pyopenvba import ExcelFile
    except ImportError:
        raise XlcrmError(f"building the add-in needs pyOpenVBA: pip install \"{_pyopenvba_requirement()}\" "
                         "(installing it is not needed for `xlcrm addin install`, which uses the add-in "
                         "shipped with xlcrm)") from None
    return ExcelFile


def _pyopenvba_requirement() -> str:
    """The pin in xlcrm's own metadata (its test extra), so the hint names the version the build needs."""
    from importlib import metadata

    try:
        for req in metadata.requires("xlcrm") or ():
            name = req.split(";")[0].strip()
            if name.lower().startswith("pyopenvba"):
                return name
    except metadata.PackageNotFoundError:
        pass
    return "pyOpenVBA"


def intended_modules(template: bytes | None = None) -> dict[str, str]:
    """Module name -> source the built add-in must hold (the template's, with our two edits)."""
    ExcelFile = _pyopenvba()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "template.xlam"
        path.write_bytes(template if template is not None else template_bytes())
        with ExcelFile(path) as wb:
            modules = {name: wb.get_module(name) for name in wb.module_names()}
    modules[RIBBON_MODULE] = ribbon_source()
    modules["xlwings"] = patch_xlwings_module(modules["xlwings"])
    return modules


def _vba_project(template: bytes) -> bytes:
    ExcelFile = _pyopenvba()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "template.xlam"
        path.write_bytes(template)
        with ExcelFile(path) as wb:
            names = wb.module_names()
            if RIBBON_MODULE not in names or "xlwings" not in names:
                raise XlcrmError(f"{TEMPLATE}: template lacks module {RIBBON_MODULE} or xlwings")
            wb.set_module(RIBBON_MODULE, ribbon_source())
            wb.set_module("xlwings", patch_xlwings_module(wb.get_module("xlwings")))
            wb.save()
        with zipfile.ZipFile(path) as z:
            return z.read(VBA_PART)


def _replace_once(text: str, old: str, new: str, part: str) -> str:
    if text.count(old) != 1:
        raise XlcrmError(f"template part {part}: expected exactly one {old!r}; update build.py")
    return text.replace(old, new)


def _rels(text: str) -> str:
    # The template points its (2006-schema) ribbon at customUI/customUI.xml; point it at ours.
    text = _replace_once(text, f'Type="{RIBBON_REL_TYPE}" Target="{OLD_RIBBON_PART}"',
                         f'Type="{RIBBON_REL_TYPE}" Target="{RIBBON_PART}"', "_rels/.rels")
    return text


def _workbook(text: str) -> str:
    text = _replace_once(text, 'name="_myaddin.conf"', f'name="{CONF_SHEET}"', "xl/workbook.xml")
    # The template records the xlwings developer's folder; it means nothing on a user's machine.
    return re.sub(r"<mc:AlternateContent\b.*?</mc:AlternateContent>", "", text, count=1, flags=re.S)


def _core(text: str) -> str:
    # Excel's Add-ins dialog lists an add-in by its title.
    return _replace_once(text, "<dc:title />", f"<dc:title>{TITLE}</dc:title>", "docProps/core.xml")


def build_bytes() -> bytes:
    """The add-in's bytes: same input, same output, on any machine."""
    template = template_bytes()
    vba = _vba_project(template)
    ribbon = RIBBON_XML.read_bytes()
    edits = {"_rels/.rels": _rels, "xl/workbook.xml": _workbook, "docProps/core.xml": _core}
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(template)) as src, zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            name = info.filename
            if name == OLD_RIBBON_PART:
                data = ribbon
                name = RIBBON_PART
            elif name == VBA_PART:
                data = vba
            elif name in edits:
                data = edits[name](src.read(name).decode("utf-8")).encode("utf-8")
            else:
                data = src.read(name)
            zi = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            zi.compress_type = zipfile.ZIP_STORED
            zi.create_system = 0
            zi.external_attr = 0
            out.writestr(zi, data)
    return buf.getvalue()


def build_addin(out: str | Path | None = None, *, force: bool = False) -> BuildResult:
    """Build the add-in to ``out`` (default: the copy shipped inside the package), atomically.

    An existing ``out`` that is neither an earlier build nobody changed nor these very bytes is
    refused (:func:`xlcrm.store.outputs.claim`) unless ``force``, which keeps a copy beside it first.
    """
    from xlcrm.store import outputs

    path = Path(out) if out is not None else SHIPPED
    if path.suffix.lower() != ".xlam":
        raise XlcrmError(f"{path}: an Excel add-in must end in .xlam")
    data = build_bytes()
    same = path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    claim = outputs.claim(path, "addin", force=force) if out is not None and not same else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with claim.write(path) if claim is not None else contextlib.nullcontext(path):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return BuildResult(path, hashlib.sha256(data).hexdigest(), intended_modules())


def extract_template(wheel: str | Path, dest: str | Path = TEMPLATE) -> Path:
    """Refresh ``template/`` from an xlwings wheel (``pip download xlwings==X --no-deps``).

    Used by a maintainer bumping xlwings: afterwards update XLWINGS_VERSION and TEMPLATE_SHA256.
    """
    with zipfile.ZipFile(wheel) as z, z.open("xlwings/quickstart_addin_ribbon.xlam") as src, \
            open(dest, "wb") as fh:
        shutil.copyfileobj(src, fh)
    return Path(dest)
