"""The HTML report's figures, drawn with matplotlib (the ``report`` extra) into inline SVG.

Every figure is deterministic: fixed SVG hash salt, no date or creator in the metadata, text kept
as text. Each cell or bar carries an id (``conflict-17``: group 17 of ``report.groups``;
``retention-2-5``: LoRA 2 in block row 5) and a ``<title>`` with its key and value, shown on hover.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable, Sequence

from ..errors import MissingExtraError
from .layout import BlockRow
from .model import GroupRow, Report

NO_VALUE = "#d9d9d9"  # groups one LoRA touches: no pairwise statistic
EMPTY_ROW = "#f4f4f4"  # a block no group reaches


def require_matplotlib() -> None:
    """Raise a clear error naming the extra when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "the HTML report needs matplotlib, which is not installed; "
            "install the extra: pip install 'loramerge[report]' (or pip install matplotlib)"
        ) from exc


def _svg(fig, salt: str, titles: dict[str, str], cells: tuple[str, list[str]] | None = None) -> str:
    """The figure as an inline ``<svg>`` element. Each element whose id is in `titles` gets that ``<title>``;
    `cells` = (collection id, cell ids): the collection's paths, in order, become ``<g id=cell>`` each."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"loramerge-{salt}", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    if cells is not None:
        group, ids = cells
        start = text.index(f'<g id="{group}">') + len(f'<g id="{group}">')
        paths = list(re.finditer(r"<path [^>]*/>", text[start:]))[: len(ids)]
        out, at = [text[:start]], start
        for cell, m in zip(ids, paths):
            out += [text[at : start + m.start()], f'<g id="{cell}">', m.group(0), "</g>"]
            at = start + m.end()
        text = "".join(out) + text[at:]

    def titled(m: re.Match) -> str:
        title = titles.get(m.group(1))
        return m.group(0) if title is None else f"{m.group(0)}<title>{html.escape(title)}</title>"

    return re.sub(r'<g id="([A-Za-z0-9_-]+)">', titled, text)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=72)
    fig.set_facecolor("white")
    return fig


def _grid(rows: Sequence[BlockRow], title: str):
    """A figure with one row per block and one cell column per module position; returns (fig, ax, cols)."""
    cols = max((len(r.groups) for r in rows), default=1) or 1
    label_w, cell_w, row_h = 2.2, min(0.28, 9.0 / cols), 0.24
    width, height = label_w + cols * cell_w + 1.4, 0.9 + len(rows) * row_h
    fig = _figure(width, height)
    ax = fig.add_axes((label_w / width, 0.3 / height, cols * cell_w / width, (height - 0.8) / height))
    ax.set_xlim(0, cols)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [r.name for r in rows], fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=11, loc="left")
    return fig, ax, cols


def _cells(ax, rows: Sequence[BlockRow], index: dict[str, int], prefix: str, color: Callable[[GroupRow], str], cols):
    """One rectangle per group, drawn as one collection (fast); returns (collection id, cell ids in order)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    empty = [Rectangle((0, y + 0.1), cols, 0.8) for y, row in enumerate(rows) if not row.groups]
    ax.add_collection(PatchCollection(empty, facecolors=EMPTY_ROW, edgecolors="none"), autolim=False)
    rects, colours, ids = [], [], []
    for y, row in enumerate(rows):
        for x, g in enumerate(row.groups):
            rects.append(Rectangle((x + 0.05, y + 0.1), 0.9, 0.8))
            colours.append(color(g))
            ids.append(f"{prefix}-{index[g.key]}")
    collection = PatchCollection(rects, facecolors=colours, edgecolors="none")
    collection.set_gid(f"{prefix}-cells")
    ax.add_collection(collection, autolim=False)
    return f"{prefix}-cells", ids


def heatmap(report: Report, rows: Sequence[BlockRow], metric: str, label: str, cmap: str, lo: float, hi: float) -> str:
    """One cell per group coloured by `metric` of its `GroupRow` on a fixed [lo, hi] scale."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize, to_hex

    norm, colors = Normalize(lo, hi, clip=True), colormaps[cmap]
    index = {g.key: i for i, g in enumerate(report.groups)}

    def color(g: GroupRow) -> str:
        value = getattr(g, metric)
        return NO_VALUE if value is None else to_hex(colors(norm(value)))

    fig, ax, cols = _grid(rows, f"{label} per group, by block (grey: one LoRA)")
    cells = _cells(ax, rows, index, metric, color, cols)
    width = fig.get_figwidth()
    cax = fig.add_axes((1 - 0.9 / width, 0.3 / fig.get_figheight(), 0.15 / width, 0.6))
    fig.colorbar(ScalarMappable(norm, colors), cax=cax)
    cax.tick_params(labelsize=8)
    titles = {
        f"{metric}-{i}": f"{g.key}: {label} {'-' if getattr(g, metric) is None else f'{getattr(g, metric):.3f}'}"
        for i, g in enumerate(report.groups)
    }
    return _svg(fig, metric, titles, cells)


STRATEGY_PALETTE = "tab10"


def strategy_colors(report: Report) -> dict[str, str]:
    """One colour per strategy used, in name order (the same in the map and its legend)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps[STRATEGY_PALETTE]
    names = sorted({g.strategy for g in report.groups})
    return {name: to_hex(palette(i % palette.N)) for i, name in enumerate(names)}


def strategy_map(report: Report, rows: Sequence[BlockRow]) -> str:
    """One cell per group coloured by the strategy the plan chose, on the block layout."""
    from matplotlib.patches import Patch

    colors = strategy_colors(report)
    index = {g.key: i for i, g in enumerate(report.groups)}
    fig, ax, cols = _grid(rows, "strategy chosen per group, by block")
    cells = _cells(ax, rows, index, "strategy", lambda g: colors[g.strategy], cols)
    handles = [Patch(facecolor=c, label=n) for n, c in colors.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    titles = {f"strategy-{i}": f"{g.key}: {g.strategy} ({g.reason})" for i, g in enumerate(report.groups)}
    return _svg(fig, "strategy", titles, cells)


def block_retention(report: Report, rows: Sequence[BlockRow]) -> tuple[dict[str, dict[str, float]], str | None]:
    """Per block and LoRA, the mean retention over the block's groups of 2+ LoRAs; and its bar chart (None when
    no group has a retention: an analysis, or no group of 2+ LoRAs)."""
    from matplotlib import colormaps

    from .build import GROUP_RETENTION_WARNING

    means: dict[str, dict[str, float]] = {}
    for row in rows:
        for lora in report.loras:
            values = [v for g in row.groups if g.n_loras > 1 and (v := g.retention.get(lora.name)) is not None]
            if values:
                means.setdefault(row.name, {})[lora.name] = sum(values) / len(values)
    shown = [(r, row.name) for r, row in enumerate(rows) if row.name in means]
    if not shown:  # an analysis (nothing merged), or no group of 2+ LoRAs
        return means, None
    n = max(len(report.loras), 1)
    height = 1.0 + len(shown) * (0.12 * n + 0.1)
    fig = _figure(9.5, height)
    ax = fig.add_axes((2.2 / 9.5, 0.5 / height, 5.0 / 9.5, (height - 0.85) / height))
    palette = colormaps["tab10"]
    titles = {}
    for k, lora in enumerate(report.loras):
        labelled = False
        for y, (r, name) in enumerate(shown):
            if lora.name not in means[name]:
                continue
            value = means[name][lora.name]
            offset = (k - (n - 1) / 2) * 0.8 / n
            label = None if labelled else lora.name
            (bar,) = ax.barh(y + offset, value, height=0.8 / n, color=palette(k % palette.N), label=label)
            labelled = True
            bar.set_gid(f"retention-{k}-{r}")
            titles[f"retention-{k}-{r}"] = f"{lora.name} in {name}: mean retention {value:.3f}"
    ax.axvline(1.0, color="#444444", linewidth=0.8)
    ax.axvline(GROUP_RETENTION_WARNING, color="#c0392b", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(shown)), [name for _, name in shown], fontsize=9)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlabel("retention (1: kept in full; dashed line: cancelled below)", fontsize=9)
    ax.set_title("retention per LoRA: mean over each block's groups of 2+ LoRAs", fontsize=11, loc="left")
    fig.legend(loc="upper right", fontsize=8, frameon=False)
    return means, _svg(fig, "retention", titles)
