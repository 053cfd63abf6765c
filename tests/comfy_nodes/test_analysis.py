"""Conflict Analysis: pass 1 and the plan only (nothing merged, nothing written) → the report and
an IMAGE heatmap; the heatmap's colours checked on hand-made groups."""

from __future__ import annotations

import loramerge
import torch

from ._util import SDXL_PAIR, library_inputs, stack


def _colors(image: torch.Tensor) -> set[tuple[int, int, int]]:
    pixels = (image[0] * 255).round().to(torch.int64).reshape(-1, 3)
    return {tuple(p) for p in torch.unique(pixels, dim=0).tolist()}


def test_analysis_report_and_heatmap(pack, loras):
    files_before = sorted(loras.rglob("*"))
    text, image = pack.ConflictAnalysis().analyze(stack(pack, *SDXL_PAIR))
    assert sorted(loras.rglob("*")) == files_before
    _, plan, _ = loramerge.analyze(library_inputs(loras, SDXL_PAIR))
    counts = plan.strategy_counts()
    assert "strategies " + ", ".join(f"{k}: {v}" for k, v in counts.items()) in text
    assert image.dtype == torch.float32 and image.dim() == 4 and image.shape[0] == 1 and image.shape[3] == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    colors = _colors(image)
    assert {pack.heatmap.strategy_color(s) for s in counts} <= colors


def test_heatmap_colors_on_hand_made_groups(pack):
    hm = pack.heatmap
    block = "diffusion_model.input_blocks.4.1"
    groups = [
        {"key": f"{block}.proj_in", "strategy": "ties", "n_loras": 2, "effective_conflict": 1.0},
        {"key": f"{block}.proj_out", "strategy": "slerp", "n_loras": 2, "effective_conflict": 0.0},
        {"key": "diffusion_model.middle_block.1.proj_in", "strategy": "weighted_sum", "n_loras": 1,
         "effective_conflict": None},
    ]
    assert [name for name, _ in hm.rows_of(groups)] == ["input_blocks.4", "middle_block.1"]
    colors = _colors(hm.render(groups))
    assert {hm.conflict_color(1.0), hm.conflict_color(0.0), hm.NO_CONFLICT} <= colors
    assert {hm.strategy_color("ties"), hm.strategy_color("slerp"), hm.strategy_color("weighted_sum")} <= colors
    assert hm.conflict_color(0.0) == (25, 65, 155) and hm.conflict_color(1.0) == (215, 25, 25)
    assert hm.conflict_color(0.5) == (240, 215, 60) and hm.conflict_color(7.0) == hm.conflict_color(1.0)
    assert len({hm.strategy_color(s) for s in loramerge.strategies.names()}) == len(loramerge.strategies.names())
