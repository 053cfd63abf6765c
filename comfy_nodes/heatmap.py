"""The Conflict Analysis heatmap: one row per block, one cell per weight group.

Cell colour: the group's effective conflict (blue 0 → yellow 0.5 → red 1); groups only one LoRA
touches have no conflict and are grey. The lower third of each cell is the colour of the strategy
the plan chose for it; the legend above names both scales. Drawn with Pillow (a ComfyUI
dependency); returned as ComfyUI's IMAGE, a float tensor [1, H, W, 3] in [0, 1].
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from loramerge.analysis.stats import block_of

STRATEGY_COLORS: dict[str, tuple[int, int, int]] = {
    "weighted_sum": (150, 150, 150),
    "weighted_average": (60, 180, 75),
    "slerp": (70, 200, 220),
    "consensus": (60, 110, 255),
    "ties": (230, 50, 230),
    "magnitude_prune": (255, 140, 0),
    "normalize": (170, 110, 40),
    "l2_weighted_average": (128, 128, 0),
    "add_difference": (255, 255, 255),
    "ziplora": (250, 190, 212),
}
NO_CONFLICT = (75, 75, 75)
BACKGROUND = (18, 18, 22)
TEXT = (230, 230, 230)
_STOPS = ((0.0, (25, 65, 155)), (0.5, (240, 215, 60)), (1.0, (215, 25, 25)))


def conflict_color(value: float) -> tuple[int, int, int]:
    """Blue (0) → yellow (0.5) → red (1), clamped."""
    v = min(max(float(value), 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(_STOPS, _STOPS[1:]):
        if v <= x1:
            t = (v - x0) / (x1 - x0)
            r, g, b = (round(a + (z - a) * t) for a, z in zip(c0, c1))
            return r, g, b
    return _STOPS[-1][1]


def strategy_color(name: str) -> tuple[int, int, int]:
    if name in STRATEGY_COLORS:
        return STRATEGY_COLORS[name]
    h = hashlib.sha256(name.encode()).digest()
    return (80 + h[0] % 176, 80 + h[1] % 176, 80 + h[2] % 176)


def rows_of(groups: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    """Report group rows by block, in key order."""
    rows: dict[str, list[dict]] = {}
    for g in sorted(groups, key=lambda g: g["key"]):
        rows.setdefault(block_of(g["key"]).removeprefix("diffusion_model."), []).append(g)
    return list(rows.items())


def render(groups: Sequence[dict], *, max_width: int = 1600) -> torch.Tensor:
    """The heatmap of a report's ``groups`` (key, strategy, n_loras, effective_conflict)."""
    rows = rows_of(groups)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = _text_size(measure, "Ag", font)[1]
    label_w = max((_text_size(measure, name, font)[0] for name, _ in rows), default=0) + 8
    widest = max((len(cells) for _, cells in rows), default=1)
    cell = int(min(14, max(3, (max_width - label_w) // max(widest, 1) - 1)))
    row_h = max(cell, text_h) + 2
    strategies = sorted({g["strategy"] for g in groups})
    legend_h = 2 * (text_h + 6) + 4
    legend_w = sum(text_h + 15 + _text_size(measure, name, font)[0] for name in strategies)
    width = max(label_w + widest * (cell + 1) + 4, legend_w + 4, 420)
    height = legend_h + max(len(rows), 1) * row_h + 4
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    _legend(draw, font, strategies, text_h)
    y = legend_h
    for name, cells in rows:
        draw.text((2, y), name, fill=TEXT, font=font)
        x = label_w
        for g in cells:
            conflict = g.get("effective_conflict")
            fill = conflict_color(conflict) if g.get("n_loras", 0) > 1 and conflict is not None else NO_CONFLICT
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill)
            mark = max(1, cell // 3)
            draw.rectangle([x, y + cell - mark, x + cell - 1, y + cell - 1], fill=strategy_color(g["strategy"]))
            x += cell + 1
        y += row_h
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())[None]


def _legend(draw, font, strategies: list[str], text_h: int) -> None:
    draw.text((2, 2), "effective conflict  0", fill=TEXT, font=font)
    x0 = 2 + _text_size(draw, "effective conflict  0 ", font)[0]
    for i in range(120):
        draw.line([x0 + i, 2, x0 + i, 2 + text_h], fill=conflict_color(i / 119))
    draw.text((x0 + 124, 2), "1    grey: one LoRA", fill=TEXT, font=font)
    x, y = 2, text_h + 8
    for name in strategies:
        draw.rectangle([x, y, x + text_h - 1, y + text_h - 1], fill=strategy_color(name))
        draw.text((x + text_h + 3, y), name, fill=TEXT, font=font)
        x += text_h + 3 + _text_size(draw, name, font)[0] + 12


def _text_size(draw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)
