"""Hostile team workbooks: memory bounded by what a file holds, not by what it claims.

Each file is a real workbook from the template, altered the way a stray keystroke or a crafted file
would alter it; the CLI runs in a subprocess whose address space is capped (RLIMIT_AS), so a
regression fails here instead of swapping.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import MakeBook

# The hostile workbooks are built as benchmarks/make_hostile.py builds them for its figures.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from make_hostile import CUSTOMERS, far_cell, lying_sizes, one_column, rewrite

#: Address space for the CLI: a clean validate needs about half of it.
LIMIT = 1024 * 1024**2
def capped_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    return subprocess.run([sys.executable, "-m", "xlcrm", *map(str, args)], cwd=cwd, preexec_fn=cap,
                          capture_output=True, text=True, timeout=300, check=False)


def test_far_cells_liars_and_sparse_sheets_cost_memory_by_content(make_book: MakeBook, tmp_path: Path) -> None:
    base = make_book({"customers": [{"name": "山田精機株式会社", "kind": "corporate", "phone": "03-1234-5678"},
                                    {"name": "川口商店", "kind": "corporate"}]}, name="base.xlsx")
    far = far_cell(base, tmp_path / "far.xlsx", "XFD1048576", "メモ")
    low = far_cell(base, tmp_path / "low.xlsx", "A1048576")
    liar = lying_sizes(base, tmp_path / "liar.xlsx", 20_000, first=50)
    sparse = one_column(base, tmp_path / "sparse.xlsx", 200_000)
    proc = capped_cli("validate", far, low, liar, sparse, base, "--json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    status = {Path(f["file"]).name: f for f in report["files"]}
    # The far cells are read as what they are: one finding each; the table itself is read as usual.
    assert status["far.xlsx"]["status"] == status["base.xlsx"]["status"] != "unreadable"
    assert status["low.xlsx"]["status"] == status["base.xlsx"]["status"]
    strays = {(Path(f["file"]).name, f["address"], f["value"]) for f in report["findings"]
              if f["rule"] == "stray_cell"}
    assert strays == {("far.xlsx", "顧客!XFD1048576", "メモ"), ("low.xlsx", "顧客!A1048576", "x")}
    rows = {Path(f["file"]).name: f["rows"] for f in report["files"] if f["status"] != "unreadable"}
    assert rows["far.xlsx"] == rows["low.xlsx"] == rows["base.xlsx"]
    # A part larger than it says, and a sheet too sparse to hold in memory: one line each.
    assert "inflates to more than" in status["liar.xlsx"]["message"]
    assert "too sparse to read safely" in status["sparse.xlsx"]["message"]
    assert "Traceback" not in proc.stderr

    # Merge reads them the same way, in the same memory: the far cells' tables are merged, the two
    # files that cannot be read are named, and neither stops the others.
    master = tmp_path / "m" / "master.xlsx"
    proc = capped_cli("merge", far, low, liar, sparse, base, "--master", master, "--skip-unreadable", "--json",
                      cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    merged = {Path(f["file"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert {n for n, f in merged.items() if f["status"] == "unreadable"} == {"liar.xlsx", "sparse.xlsx"}
    read = {n: merged[n]["counts"]["rows_read"] for n in ("base.xlsx", "far.xlsx", "low.xlsx")}
    assert read["base.xlsx"] == read["far.xlsx"] == read["low.xlsx"] > 0, read
    # The far cells were not merged, and the summary says so (also in 取込ログ).
    assert "XFD1048576" in merged["far.xlsx"]["message"] and "メモ" in merged["far.xlsx"]["message"]
    assert "A1048576" in merged["low.xlsx"]["message"] and not merged["base.xlsx"]["message"]
    assert master.is_file()


def test_a_merged_range_over_the_whole_sheet_gets_no_copy_and_stops_no_other(make_book: MakeBook,
                                                                             tmp_path: Path) -> None:
    base = make_book({"customers": [{"name": "山田精機株式会社", "kind": "corporate", "phone": "0312345678x"}]},
                     name="base.xlsx")
    merged = rewrite(base, tmp_path / "merged.xlsx", lambda d: d.replace(
        b"</sheetData>", b'</sheetData><mergeCells count="1"><mergeCell ref="A300:XFD1048576"/></mergeCells>', 1))
    proc = capped_cli("validate", merged, base, "--fix", "fixed", "--annotate", "checked", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "merged.xlsx" in lines[0] and "A300:XFD1048576" in lines[0] and "unmerge" in lines[0], lines[0]
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == ["base_修正済.xlsx"]
    assert sorted(p.name for p in (tmp_path / "checked").iterdir()) == ["base_チェック結果.xlsx",
                                                                         "merged_チェック結果.xlsx"]


VBA = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b'Attribute VB_Name = "Module1"\nSub Auto_Open()\nEnd Sub\n'


def as_xlsm(src: Path, out: Path) -> Path:
    """``src`` saved as Excel saves a macro-enabled workbook: a VBA project, its relationship and type."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"spreadsheetml.sheet.main+xml", b"").replace(
                    b'ContentType="application/vnd.openxmlformats-officedocument."',
                    b'ContentType="application/vnd.ms-excel.sheet.macroEnabled.main+xml"')
                data = data.replace(b"</Types>", b'<Default Extension="bin" '
                                    b'ContentType="application/vnd.ms-office.vbaProject"/></Types>')
            if info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", b'<Relationship Id="rId99" Type="http://schemas.'
                                    b'microsoft.com/office/2006/relationships/vbaProject" Target="vbaProject.bin"/>'
                                    b"</Relationships>")
            zout.writestr(info.filename, data)
        zout.writestr("xl/vbaProject.bin", VBA)
    return out


def assert_no_macros(path: Path) -> None:
    import openpyxl

    assert path.suffix == ".xlsx"
    with zipfile.ZipFile(path) as z:
        assert not [n for n in z.namelist() if "vba" in n.lower()]
        types = z.read("[Content_Types].xml")
        assert b"macroEnabled" not in types and b"vbaProject" not in types
        assert b"vbaProject" not in z.read("xl/_rels/workbook.xml.rels")
        assert b"spreadsheetml.sheet.main+xml" in types
    openpyxl.load_workbook(path)  # a package whose parts and types agree


def test_macros_of_an_xlsm_never_travel_into_a_copy(make_book: MakeBook, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xlcrm.cli import _register, app

    _register()
    base = make_book({"customers": [{"name": "山田精機株式会社", "kind": "corporate", "phone": "0312345678x"}]},
                     name="base.xlsx")
    book = as_xlsm(base, tmp_path / "佐藤.xlsm")
    with zipfile.ZipFile(book) as z:
        assert b"macroEnabled" in z.read("[Content_Types].xml")
    run = CliRunner().invoke(app, ["validate", str(book), "--annotate", str(tmp_path / "checked"),
                                   "--fix", str(tmp_path / "fixed"), "--json"])
    assert run.exit_code == 1, run.output
    report = json.loads(run.stdout)
    assert [f["rule"] for f in report["findings"]].count("macros") == 1
    copies = [Path(report["files"][0][k]) for k in ("annotated", "fixed")]
    assert [p.name for p in copies] == ["佐藤_チェック結果.xlsx", "佐藤_修正済.xlsx"]
    for copy in copies:
        assert_no_macros(copy)

    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    run = CliRunner().invoke(app, ["merge", str(book), "--master", str(master)])
    assert run.exit_code == 0, run.output
    errors = list((tmp_path / "m" / "errors").rglob("*.xlsx"))
    assert len(errors) == 1
    assert_no_macros(errors[0])


def _cli(*args: str | Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from xlcrm.cli import _register, app

    _register()
    run = CliRunner().invoke(app, [str(a) for a in args])
    assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
    return run.exit_code, run.output


def test_control_characters_in_cells_are_shown_escaped_and_fixed_copies_keep_them(
        make_book: MakeBook, tmp_path: Path) -> None:
    book = make_book({"customers": [{"name": "株式会社\x1b[2J\x1b]0;pwned\x07青空", "kind": "corporate",
                                     "phone": "０３-1234-5678", "notes": "行1\x01\x9b行2"},
                                    {"name": "川口商店", "kind": "corporate", "phone": "03-1234-5678\x1b[31m"}]},
                     name="ctl.xlsx")
    code, text = _cli("validate", book, "--fix", tmp_path / "fixed")
    assert code == 1
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert "\\x1b[31m" in text
    fixed = tmp_path / "fixed" / "ctl_修正済.xlsx"
    import openpyxl

    sheet = openpyxl.load_workbook(fixed).worksheets[-1]
    assert "株式会社_x001B_[2J_x001B_]0;pwned_x0007_青空" in [c.value for row in sheet.iter_rows() for c in row]

    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert _cli("merge", book, "--master", master)[0] == 0
    code, text = _cli("search", "--master", master, "pwned")
    assert code == 0 and "顧客" in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), repr(text)
    code, text = _cli("history", "--master", master, "pwned")
    assert code == 0 and "顧客" in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), repr(text)
    # The handout's customer dropdown caches the names too: a package Excel and openpyxl open.
    assert _cli("distribute", "--master", master, "--out", tmp_path / "out")[0] == 0
    handout = openpyxl.load_workbook(tmp_path / "out" / "佐藤.xlsx", data_only=True)
    assert any("pwned" in str(c.value) for row in handout["_lists"].iter_rows() for c in row)


def _main(capsys, *args: str | Path) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """The installed entry point (``xlcrm.cli.main``, which prints a refusal as one line), in-process."""
    from xlcrm.cli import main

    argv = sys.argv
    sys.argv = ["xlcrm", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_long_and_path_like_names_get_one_line_and_nothing_half_written(
        make_book: MakeBook, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    long_owner = "営" * 200
    customers = [{"name": f"株式会社{i}", "kind": "corporate", "owner": long_owner if i % 2 else f"担当{i}"}
                 for i in range(15)]
    book = make_book({"customers": customers}, name="team.xlsx")
    master = tmp_path / "m" / "master.xlsx"
    master.parent.mkdir()
    assert _cli("merge", book, "--master", master)[0] == 0
    out = tmp_path / "handout"
    code, text = _cli("distribute", "--master", master, "--out", out)
    assert code == 0, text
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 9  # 担当0, 担当2 ... 担当14 and the long name
    assert all(len(n.encode()) <= 160 for n in written)

    # The new 担当営業's name is text: the default book lands beside the master, never above it.
    code, text = _cli("handover", "--master", master, "--from", "担当2", "--to", "../x", "--new-owner")
    assert code == 0, text
    assert [p.name for p in tmp_path.glob("*.xlsx")] == ["team.xlsx"]
    assert [p.name for p in master.parent.glob("引き継ぎ*")] == ["引き継ぎ_.._x.xlsx"]

    before = sorted(p.name for p in tmp_path.rglob("*"))
    too_long = "あ" * 100 + ".xlsx"
    for args in (("template", tmp_path / too_long), ("template", tmp_path),
                 ("handover", "--master", master, "--from", "担当4", "--to", "y", "--new-owner", master.parent / too_long)):
        code, text = _main(capsys, *args)
        assert code == 2, text
        assert len(text.strip().splitlines()) == 1 and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_the_vectorised_cell_scan_finds_what_expat_finds(make_book: MakeBook, tmp_path: Path) -> None:
    import numpy as np

    from xlcrm.xlsx import reader

    base = make_book({"customers": [{"name": f"株式会社{i}", "kind": "corporate", "phone": "03-1234-5678"}
                                    for i in range(30)],
                      "activities": [{"customer": "株式会社1", "date": "2024-04-01", "type": "visit"}]},
                     name="base.xlsx")
    extra = ('<row r="900000"><c r="B900000" s="1"/><c r="C900000"><v></v></c><c r="D900000"></c>'
             '<c r="E900000" t="s"><v>0</v></c><c r="AB900000"><f>1+1</f><v>2</v></c>'
             '<c r="XFD900001" t="inlineStr"><is><t>x&gt;y</t></is></c></row>')
    book = rewrite(base, tmp_path / "far.xlsx",
                    lambda d: d.replace(b"</sheetData>", extra.encode() + b"</sheetData>"))
    with zipfile.ZipFile(book) as z:
        raw = z.read(CUSTOMERS)
    fast = reader._filled_cells_fast(raw)
    assert fast is not None
    rows, cols, spans = reader._filled_cells(book, "顧客", raw)
    assert np.array_equal(fast[0], np.frombuffer(rows, dtype=np.int64))
    assert np.array_equal(fast[1], np.frombuffer(cols, dtype=np.int64))
    assert np.array_equal(fast[2], np.frombuffer(spans, dtype=np.int64))
    assert (899999, 27) in set(zip(fast[0].tolist(), fast[1].tolist(), strict=True))
    assert (899999, 1) not in set(zip(fast[0].tolist(), fast[1].tolist(), strict=True))
    # A second r attribute (calamine reads the last) leaves the sheet to expat.
    assert reader._filled_cells_fast(raw.replace(b'<c r="E900000"', b'<c r="E900000" r="A1"')) is None
