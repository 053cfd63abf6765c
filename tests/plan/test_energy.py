"""Golden auto-strength values (issue 4) and its invariants."""

import math

import pytest

from loramerge.energy import auto_strength
from loramerge.presets import preset_for


def test_aligned_pair_halves():
    assert auto_strength([1, 1], [1, 1], {(0, 1): 1.0}, floor=0.85).scale == pytest.approx(0.5)


def test_dit_preset_for_wan_cross_half():
    floor = preset_for("wan").orthogonal_floor
    assert auto_strength([1, 1], [1, 1], {(0, 1): 0.5}, floor=floor).scale == pytest.approx(1 / math.sqrt(3))


def test_orthogonal_floor():
    result = auto_strength([1, 1], [1, 1], {(0, 1): 0.0}, floor=0.85)
    assert result.scale == pytest.approx(0.85) and result.floored


def test_video_floor_is_one():
    floor = preset_for("wan").orthogonal_floor
    assert floor == 1.0
    assert auto_strength([1, 1], [1, 1], {(0, 1): 0.0}, floor=floor).scale == pytest.approx(1.0)
    assert preset_for("ltx").orthogonal_floor == 1.0 and preset_for("flux").orthogonal_floor == 0.85


def test_opposing_is_capped_at_one():
    assert auto_strength([1, 1], [1, 1], {(0, 1): -0.8}, floor=0.85).scale == 1.0


def test_strengths_enter_energy():
    # s = [2, 1], n = [1, 4], d = 0: E² = 4 + 4 = 8, E_ref = max(2, 2) = 2 -> 2/sqrt(8); near-orthogonal floor 0.5 unused
    assert auto_strength([2, 1], [1, 4], {}, floor=0.5).scale == pytest.approx(2 / math.sqrt(8))


def test_single_lora_untouched():
    assert auto_strength([0.7], [3.0], {}, floor=0.85).scale == 1.0
