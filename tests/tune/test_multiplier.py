"""The `multiplier` option (the AutoTuner's λ): every merged group scaled by it, averages included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loramerge.api import merge

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STACK = [str(EXAMPLES / "style_kohya.safetensors"), f"{EXAMPLES / 'detail_kohya.safetensors'}:0.7"]


@pytest.mark.parametrize("mode", ["weighted_average", "auto"])
def test_multiplier_scales_every_merged_group(mode):
    with merge(STACK, mode=mode) as one, merge(STACK, mode=mode, multiplier=1.5) as more:
        assert [g.key for g in one.groups] == [g.key for g in more.groups]
        for a, b in zip(one.groups, more.groups):
            torch.testing.assert_close(b.patch.dense(), 1.5 * a.patch.dense(), rtol=1e-5, atol=1e-7)
        # retention is measured against the user's strengths: it grows with λ
        for a, b in zip(one.report.loras, more.report.loras):
            assert b.retention == pytest.approx(1.5 * a.retention, rel=1e-5)
