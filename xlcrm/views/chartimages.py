"""The report's charts as PNG images (``xlcrm report --png DIR``), for e-mail and chat.

Why matplotlib with a bundled font: the images must show Japanese labels on any machine, including a
server with no Japanese fonts installed.  ``matplotlib-fontja`` ships IPAex Gothic (IPA Font License)
inside the wheel; we register that one file and ask for it by name, so the result does not depend
on which fonts the system happens to have.  The charts are drawn from the same
:class:`~xlcrm.views.report.ChartSpec` and block cells as the native Excel charts.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlcrm.errors import XlcrmError, extra_hint

if TYPE_CHECKING:
    from xlcrm.store.outputs import Claim
    from xlcrm.views.report import Block, ChartSpec, Report

PALETTE = ["#4472C4", "#ED7D31", "#A5A5A5", "#FFC000", "#5B9BD5", "#70AD47", "#264478", "#9E480E"]


def _japanese_font() -> str:
    """Register the bundled IPAex Gothic with matplotlib and return its family name."""
    try:
        from matplotlib import font_manager
        from matplotlib_fontja import get_font_ttf_path
    except ImportError:
        raise XlcrmError("--png needs matplotlib and matplotlib-fontja (the report extra): "
                         + extra_hint("report")) from None
    path = get_font_ttf_path()
    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else 0.0


def render_chart(spec: ChartSpec, block: Block, path: Path, family: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = block.rows[: spec.max_points] if spec.max_points else block.rows
    with plt.rc_context({"font.family": family, "axes.unicode_minus": False}):
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
        if spec.by_row:
            cats = [block.columns[c].header for c in spec.values]
            series = [(str(r[spec.category]), [_num(r[c]) for c in spec.values]) for r in rows]
        else:
            cats = ["" if r[spec.category] is None else str(r[spec.category]) for r in rows]
            series = [(block.columns[c].header, [_num(r[c]) for r in rows]) for c in spec.values]
        pos = list(range(len(cats)))
        horizontal = spec.kind in ("bar", "clustered_bar")
        stacked = spec.kind == "stacked"
        n = max(len(series), 1)
        width = 0.8 if stacked or n == 1 else 0.8 / n
        bottom = [0.0] * len(cats)
        for i, (name, vals) in enumerate(series):
            offs = pos if stacked else [p - 0.4 + width * (i + 0.5) for p in pos] if n > 1 else pos
            color = PALETTE[i % len(PALETTE)]
            if horizontal:
                ax.barh(offs, vals, height=width, label=name, color=color)
            else:
                ax.bar(offs, vals, width=width, bottom=bottom if stacked else None, label=name, color=color)
            if stacked:
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        fmt = FuncFormatter(lambda x, _p: f"{x:,.0f}")
        if horizontal:
            ax.set_yticks(pos, cats)
            ax.invert_yaxis()
            ax.xaxis.set_major_formatter(fmt)
            ax.grid(axis="x", color="#D9D9D9")
        else:
            ax.set_xticks(pos, cats, rotation=60 if len(cats) > 8 else 0, ha="right" if len(cats) > 8 else "center")
            ax.yaxis.set_major_formatter(fmt)
            ax.grid(axis="y", color="#D9D9D9")
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(spec.title, fontsize=12)  # IPAex Gothic has no bold face
        if spec.y_title and not horizontal:
            ax.set_ylabel(spec.y_title)
        if len(series) > 1:
            ax.legend(loc="best", fontsize=9, frameon=False)
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
        plt.close(fig)
    return path


def png_path(folder: str | Path, key: str) -> Path:
    """Where :func:`write_pngs` writes the chart ``key``."""
    return Path(folder) / f"{key}.png"


def write_pngs(report: Report, folder: str | Path, *, claim: Claim | None = None) -> list[Path]:
    """One PNG per chart, named after the chart (``sales_monthly.png`` ...); returns the paths.

    ``claim`` (from :func:`xlcrm.store.outputs.claim`, checked before): keeps the copies ``--force`` asked
    for and records each file written.
    """
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XlcrmError(f"{out}: cannot create the PNG folder ({exc.strerror})") from None
    family = _japanese_font()
    paths = []
    for spec, block in report.charts():
        target = png_path(out, spec.key)
        tmp = out / f".{spec.key}.png.tmp"
        render_chart(spec, block, tmp, family)
        with claim.write(target) if claim is not None else contextlib.nullcontext():
            tmp.replace(target)
        paths.append(target)
    return paths
