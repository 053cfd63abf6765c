"""The grid: its size, its fixed order, pinned dimensions and λ only with an evaluator."""

from __future__ import annotations

from loramerge.autotune.grid import MULTIPLIERS, densities_for, make_grid
from loramerge.enums import Optimization, RefineLevel, Sparsifier, StrategySet
from loramerge.presets import PRESETS

SD = PRESETS["sd_unet"]


def test_size_without_an_evaluator():
    # decision modes: auto × (per_group, global) × 3 strategy sets + auto additive + 2 forced = 9;
    # sparsifiers: none 1 + magnitude 3 densities + DARE and DELLA 3 densities × 2 dampenings = 16;
    # × 3 refinement levels × auto-strength on/off
    grid = make_grid(SD)
    assert len(grid.decision_modes) == 9
    assert len(list(grid.candidates())) == 9 * 16 * 3 * 2 == 864
    assert {c.multiplier for c in grid.candidates()} == {1.0}


def test_lambda_only_with_an_evaluator():
    grid = make_grid(SD, evaluator=True)
    candidates = list(grid.candidates())
    assert len(candidates) == 864 * 5
    assert [c.multiplier for c in candidates[:5]] == list(MULTIPLIERS) == [0.5, 0.75, 1.0, 1.25, 1.5]


def test_order_is_fixed_and_starts_with_the_defaults():
    first = list(make_grid(SD).candidates())
    assert first == list(make_grid(SD).candidates())
    assert first[0].as_dict == {
        "mode": "auto",
        "optimization": Optimization.PER_GROUP,
        "strategy_set": StrategySet.FULL,
        "sparsify": Sparsifier.NONE,
        "density": None,
        "dampening": 0.0,
        "refine": RefineLevel.NONE,
        "auto_strength": False,
        "multiplier": 1.0,
    }
    assert len({c for c in first}) == len(first)  # every candidate once


def test_pinned_dimensions_are_not_swept():
    grid = make_grid(SD, {"mode": "ties", "refine": "full", "sparsify": "none", "multiplier": 2}, evaluator=True)
    candidates = list(grid.candidates())
    assert len(candidates) == 2  # auto-strength on/off only
    assert {c.get("mode") for c in candidates} == {"ties"}
    assert {c.get("refine") for c in candidates} == {RefineLevel.FULL}
    assert {c.multiplier for c in candidates} == {2.0}  # a pinned λ is not swept, even with an evaluator
    # a pinned density is kept even where no sparsifier reads it (TIES does)
    assert {c.get("density") for c in make_grid(SD, {"density": 0.4}).candidates()} == {0.4}


def test_densities_follow_the_preset():
    assert densities_for(SD) == (0.5, 0.7, 0.9)
    assert densities_for(PRESETS["dit"]) == (0.6, 0.8, 0.95)  # 1.0 clamped to the preset's maximum
    assert densities_for(PRESETS["llm"]) == (0.3, 0.5, 0.7)
