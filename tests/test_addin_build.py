"""The built add-in (xlcrm.xlam) and its ribbon, checked with real tools on Linux.

What these tests can show: the ribbon XML is valid customUI14, ids and handlers match both ways, the
VBA we ship is the VBA we meant (re-parsed by pyOpenVBA and by olevba, listed by LibreOffice), the rest
of Excel's project is untouched, the build is reproducible, and the VBA's encoding of the search text
round-trips (run by pyOpenVBA's VBA interpreter).  What they cannot show: that desktop Excel loads the
ribbon and RunPython starts Python — see the manual checklist in docs/addin.md.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import zipfile
from pathlib import Path

import olefile
import pytest
from defusedxml import ElementTree as ET
from helpers import soffice

from xlcrm.excel import build
from xlcrm.excel.actions import ACTIONS
from xlcrm.excel.ribbon import SEARCH_BOX_ID, command_for, decode_query, encode_query

REPO = Path(__file__).resolve().parents[1]
#: Microsoft's customUI14 schema, vendored (tests/data/customui/README.md).
XSD = REPO / "tests" / "data" / "customui" / "customui14.xsd"
NS = {"c": build.RIBBON_NS}
#: A query that would break a naive command line: both quotes, Japanese, full-width, an emoji, cmd/sh
#: metacharacters.
NASTY = "O'Brien \"株式会社\" ﾔﾏﾀﾞ 03−1234 & | % ^ $HOME `x` \\ 😀"


def _ribbon() -> ET.Element:
    return ET.fromstring(build.RIBBON_XML.read_bytes())


def _zip(path_or_bytes: Path | bytes) -> zipfile.ZipFile:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return zipfile.ZipFile(io.BytesIO(data))


def _ole(xlam: Path | bytes) -> olefile.OleFileIO:
    return olefile.OleFileIO(io.BytesIO(_zip(xlam).read(build.VBA_PART)))


# --- the ribbon XML ---------------------------------------------------------------------------------

def test_ribbon_xml_validates_against_customui14_xsd() -> None:
    import xmlschema

    schema = xmlschema.XMLSchema(str(XSD))
    errors = list(schema.iter_errors(str(build.RIBBON_XML)))
    assert errors == []
    # ... and the built add-in carries exactly that part.
    assert _zip(build.SHIPPED).read(build.RIBBON_PART) == build.RIBBON_XML.read_bytes()


def test_every_button_has_a_handler_and_every_handler_a_button() -> None:
    root = _ribbon()
    assert root.tag == f"{{{build.RIBBON_NS}}}customUI"
    buttons = {b.get("id"): b for b in root.iterfind(".//c:button", NS)}
    assert set(buttons) == set(ACTIONS)
    assert all(b.get("onAction") == "OnAction" for b in buttons.values())
    boxes = root.findall(".//c:editBox", NS)
    assert [b.get("id") for b in boxes] == [SEARCH_BOX_ID]
    assert boxes[0].get("onChange") == "OnSearchChange"
    tab = root.find(".//c:tab", NS)
    assert tab is not None and tab.get("label") == "顧客管理"
    labels = {b.get("id"): b.get("label") for b in buttons.values()}
    assert labels == {"search": "顧客検索", "history": "顧客履歴", "validate": "入力チェック",
                      "new_activity": "活動を追加", "refresh": "最新化"}
    # English names live in the screentips (labels are Japanese; see docs/addin.md).
    assert all(re.search(r"\([A-Z][a-z]", b.get("screentip", "")) for b in buttons.values())


def test_callbacks_named_in_the_ribbon_exist_in_the_vba_with_ribbon_signatures() -> None:
    source = build.ribbon_source()
    assert re.search(r"^Public Sub OnAction\(control As IRibbonControl\)\r$", source, re.M)
    assert re.search(r"^Public Sub OnSearchChange\(control As IRibbonControl, text As String\)\r$", source, re.M)
    callbacks = {a for el in _ribbon().iter() for k, a in el.attrib.items() if k in ("onAction", "onChange")}
    for name in callbacks:
        assert re.search(rf"^Public Sub {name}\(", source, re.M), name


def test_command_string_for_each_id_compiles_and_names_the_action() -> None:
    for action in ACTIONS:
        for query in ("", NASTY):
            cmd = command_for(action, query)
            tree = ast.parse(cmd)  # SyntaxError fails the test
            compile(cmd, "<ribbon>", "exec")
            call = tree.body[-1].value  # type: ignore[attr-defined]
            assert call.func.attr == "dispatch"
            assert call.args[0].value == action
            hex_arg = call.keywords[0].value.value
            assert re.fullmatch(r"[0-9A-F]*", hex_arg)  # nothing a shell or cmd.exe interprets
            assert decode_query(hex_arg) == query


def test_vba_encodes_the_query_like_python_decodes_it() -> None:
    """Runs the shipped VBA (XlcrmCommand / HexUtf16) in pyOpenVBA's VBA interpreter, not in Excel."""
    from pyopenvba.apps.excel import ExcelApplication

    app = ExcelApplication.open(str(build.SHIPPED))
    for query in (NASTY, "", "やまだ", "C-000001"):
        # A VBA string is UTF-16 code units (an emoji is two); the interpreter holds Python str, so
        # hand it the code units as Excel would.
        units = query.encode("utf-16-be")
        as_vba = "".join(chr(int.from_bytes(units[i:i + 2], "big")) for i in range(0, len(units), 2))
        for action in ("search", "history"):
            vba_cmd = app.run("XlcrmCommand", action, as_vba)
            assert vba_cmd == command_for(action, query)
        assert app.run("HexUtf16", as_vba) == encode_query(query)


def test_vba_no_workbook_message_spells_japanese_from_ascii_source() -> None:
    from pyopenvba.apps.excel import ExcelApplication

    app = ExcelApplication.open(str(build.SHIPPED))
    assert app.run("NoWorkbookMessage") == "ブックを開いてから押してください。\r\nOpen a workbook first."
    assert "If ActiveWorkbook Is Nothing Then" in build.ribbon_source()


def test_vba_sources_are_ascii() -> None:
    for path in build.VBA_DIR.glob("*.bas"):
        path.read_bytes().decode("ascii")  # UnicodeDecodeError fails the test
    for source in build.intended_modules().values():
        assert source.isascii()


# --- the built file ---------------------------------------------------------------------------------

def test_rebuild_is_byte_identical_to_the_shipped_addin(tmp_path: Path) -> None:
    out = build.build_addin(tmp_path / "xlcrm.xlam")
    assert out.path.read_bytes() == build.SHIPPED.read_bytes(), \
        "xlcrm/excel/xlcrm.xlam is stale: run `xlcrm addin build` and commit it"
    assert build.build_bytes() == out.path.read_bytes()  # deterministic within a process too


def test_zip_members_are_fresh_and_fixed() -> None:
    z = _zip(build.SHIPPED)
    for info in z.infolist():
        assert info.date_time == build.FIXED_DATE
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.extra == b""
    assert z.testzip() is None
    names = z.namelist()
    assert build.RIBBON_PART in names and build.OLD_RIBBON_PART not in names


def test_pyopenvba_reparses_strictly_and_modules_are_what_we_intended() -> None:
    from pyopenvba import ExcelFile, check_file

    report = check_file(build.SHIPPED)
    assert report.ok, report.issues
    with ExcelFile(build.SHIPPED) as wb:
        assert wb.validate() == []
        got = {name: wb.get_module(name) for name in wb.module_names()}
    assert got == build.intended_modules()
    assert got[build.RIBBON_MODULE] == build.ribbon_source()
    assert build.PROJECT_LINE[1] in got["xlwings"] and build.PROJECT_LINE[0] not in got["xlwings"]


def test_vba_project_stream_stays_the_seven_byte_header() -> None:
    data = _ole(build.SHIPPED).openstream("VBA/_VBA_PROJECT").read()
    assert len(data) == 7
    assert data[:2] == b"\xcc\x61" and data[2:4] == b"\xff\xff" and data[4] == 0


def test_modules_and_parts_we_did_not_touch_are_byte_identical_to_the_template() -> None:
    template = build.template_bytes()
    old, new = _ole(template), _ole(build.SHIPPED)
    changed = {"VBA/RibbonMyAddin", "VBA/xlwings", "VBA/dir", "VBA/_VBA_PROJECT"}
    old_streams = {"/".join(e) for e in old.listdir()}
    assert old_streams == {"/".join(e) for e in new.listdir()}
    for stream in sorted(old_streams - changed):
        assert old.openstream(stream).read() == new.openstream(stream).read(), stream
    for module in build.UNTOUCHED_MODULES:
        assert f"VBA/{module}" in old_streams
    for stream in changed - {"VBA/_VBA_PROJECT"}:
        assert old.openstream(stream).read() != new.openstream(stream).read(), stream
    tz, nz = _zip(template), _zip(build.SHIPPED)
    edited = {"_rels/.rels", "xl/workbook.xml", "docProps/core.xml", build.VBA_PART, build.OLD_RIBBON_PART}
    for name in tz.namelist():
        if name not in edited:
            assert tz.read(name) == nz.read(name), name


def test_package_parts_point_at_the_new_ribbon_and_config_sheet() -> None:
    z = _zip(build.SHIPPED)
    rels = ET.fromstring(z.read("_rels/.rels"))
    ui = [r for r in rels if r.get("Type") == build.RIBBON_REL_TYPE]
    assert [r.get("Target") for r in ui] == [build.RIBBON_PART]
    workbook = z.read("xl/workbook.xml").decode()
    assert f'name="{build.CONF_SHEET}"' in workbook and "felix" not in workbook.lower()
    assert build.TITLE in z.read("docProps/core.xml").decode()
    types = z.read("[Content_Types].xml").decode()
    assert "application/vnd.ms-excel.addin.macroEnabled.main+xml" in types


def test_olevba_extracts_the_modules() -> None:
    from oletools.olevba import VBA_Parser

    parser = VBA_Parser(str(build.SHIPPED))
    try:
        assert parser.detect_vba_macros()
        found = {stream.split("/")[-1]: code for _f, stream, _n, code in parser.extract_macros()}
    finally:
        parser.close()
    intended = build.intended_modules()
    assert set(found) == set(intended)
    assert found[build.RIBBON_MODULE] == intended[build.RIBBON_MODULE]
    assert build.PROJECT_LINE[1] in found["xlwings"]


def test_libreoffice_opens_the_addin_and_lists_the_modules(tmp_path: Path) -> None:
    exe = soffice()
    if exe is None:
        pytest.skip("LibreOffice (soffice) is not installed: apt-get install -y libreoffice-calc-nogui")
    proc = subprocess.run(
        [exe, f"-env:UserInstallation=file://{tmp_path / 'profile'}", "--headless",
         "--infilter=Calc MS Excel 2007 VBA XML", "--convert-to", "ods", "--outdir", str(tmp_path),
         str(build.SHIPPED)], capture_output=True, text=True, timeout=180, check=False)
    out = tmp_path / "xlcrm.ods"
    assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr
    with zipfile.ZipFile(out) as z:
        basic = {n.split("/")[-1][:-4]: z.read(n).decode("utf-8") for n in z.namelist()
                 if re.fullmatch(r"Basic/[^/]+/[^/]+\.xml", n) and not n.endswith("script-lb.xml")}
    assert set(basic) == set(build.intended_modules())
    assert "XlcrmCommand" in basic[build.RIBBON_MODULE] and "OnSearchChange" in basic[build.RIBBON_MODULE]
    assert '&quot;xlcrm&quot;' in basic["xlwings"] or '"xlcrm"' in basic["xlwings"]


def test_template_is_xlwings_own_file_when_xlwings_is_installed() -> None:
    xlwings = pytest.importorskip("xlwings", reason="xlwings not installed (pip install -e '.[test,excel]')")
    if xlwings.__version__ != build.XLWINGS_VERSION:
        pytest.skip(f"xlwings {xlwings.__version__} installed; the template is from {build.XLWINGS_VERSION}")
    shipped = Path(xlwings.__file__).parent / "quickstart_addin_ribbon.xlam"
    assert shipped.read_bytes() == build.TEMPLATE.read_bytes()
    assert (build.HERE / "LICENSE.xlwings").read_text(encoding="utf-8").count("Zoomer Analytics") >= 1
