"""Every branch of the decision tree under every preset, from hand-made statistics."""

import pytest

from loramerge.analysis.metrics import PairStats
from loramerge.analysis.stats import GroupStats
from loramerge.presets import PRESETS, preset_for
from loramerge.enums import Optimization, Rules, StrategySet
from loramerge.decide import Metrics, decide, plan_groups, smooth


def stats(key="diffusion_model.input_blocks.4.1.proj_in", *, cos=0.0, excess=0.0, conflict=0.5, overlap=0.0,
          norms=(1.0, 1.0), ranks=(4, 4), density=None):
    pair = PairStats(0, 1, cos, cos, conflict, conflict, conflict, cos, 0.5, excess, overlap, 100)
    return GroupStats(key, (0, 1), 100, ranks, tuple(norms), (pair,), density or {0.05: 0.8, 0.10: 0.6, 0.15: 0.3})


def go(s, preset, strategy_set=StrategySet.FULL):
    return decide(s.key, s, Metrics.of(s), preset, strategy_set)


ALL = list(PRESETS.values())


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_single_lora_is_weighted_sum(preset):
    s = GroupStats("k", (0,), 10, (4,), (1.0,))
    assert go(s, preset).strategy == "weighted_sum"


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_aligned_low_conflict_overlapping_is_consensus(preset):
    assert go(stats(cos=0.8, excess=0.05, overlap=0.6), preset).strategy == "consensus"
    # basic set has no consensus: falls through to the low-conflict weighted average
    assert go(stats(cos=0.8, excess=0.05, overlap=0.6), preset, StrategySet.BASIC).strategy == "weighted_average"


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_orthogonal_becomes_slerp_in_full_set_and_average_otherwise(preset):
    s = stats(cos=0.02, excess=0.0, overlap=0.1)
    assert go(s, preset).strategy == "slerp"
    assert go(s, preset, StrategySet.NO_SLERP).strategy == "weighted_average"
    assert go(s, preset, StrategySet.BASIC).strategy == "weighted_average"


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_opposing_dead_band(preset):
    # cos -0.04 is inside the dead band: still SLERP; -0.06 is opposing: plain average
    assert go(stats(cos=-0.04, overlap=0.1), preset).strategy == "slerp"
    assert go(stats(cos=-0.06, overlap=0.1), preset).strategy == "weighted_average"


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_high_effective_conflict_is_ties_with_sign_method_and_density(preset):
    # overlap 1 keeps the full excess: effective = excess
    s = stats(cos=-0.6, excess=preset.ties_conflict + 0.05, overlap=1.0)
    d = go(s, preset)
    assert d.strategy == "ties" and d.sign_method == "frequency"
    assert preset.density_min <= d.density <= preset.density_max
    expected = min(max(s.density_at[preset.noise_ratio], preset.density_min), preset.density_max)
    assert d.density == pytest.approx(expected)
    strong = go(stats(cos=-0.6, excess=preset.ties_conflict + 0.05, overlap=1.0, norms=(9.0, 1.0)), preset)
    assert strong.sign_method == "total"  # magnitude ratio 3 > 2


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_fallback_is_weighted_average(preset):
    # |cos| 0.4 is not orthogonal, not aligned enough for consensus, conflict below the TIES threshold
    d = go(stats(cos=-0.4, excess=0.1, overlap=0.8), preset)
    assert d.strategy == "weighted_average" and "opposing" in d.reason


def test_overlap_discounts_excess_conflict():
    preset = PRESETS["sd_unet"]
    # excess 0.3 at overlap 0.2: effective = 0.3 * 0.6 = 0.18 < 0.25 -> not TIES
    assert go(stats(cos=0.4, excess=0.3, overlap=0.2), preset).strategy != "ties"
    # overlap 0 means no discount: 0.3 > 0.25 -> TIES
    assert go(stats(cos=0.4, excess=0.3, overlap=0.0), preset).strategy == "ties"


def test_acestep_thresholds_differ():
    s = stats(cos=0.28, excess=0.0, overlap=0.1)
    assert go(s, PRESETS["sd_unet"]).strategy == "slerp"       # fallback average -> slerp
    assert "orthogonal" in go(s, PRESETS["acestep_dit"]).reason  # |cos| 0.28 < 0.30
    assert "orthogonal" not in go(s, PRESETS["sd_unet"]).reason


def test_full_rank_slerp_disable_flag():
    from dataclasses import replace
    p = replace(PRESETS["sd_unet"], disable_slerp_full_rank=True)
    assert go(stats(cos=0.0, overlap=0.1, ranks=(None, 4)), p).strategy == "weighted_average"
    assert go(stats(cos=0.0, overlap=0.1, ranks=(4, 4)), p).strategy == "slerp"


def test_block_smoothing_blends_toward_energy_weighted_block_mean():
    a = stats("diffusion_model.input_blocks.4.1.a", cos=1.0, norms=(1.0, 1.0))
    b = stats("diffusion_model.input_blocks.4.1.b", cos=0.0, norms=(3.0, 3.0))
    c = stats("diffusion_model.input_blocks.5.1.c", cos=0.5)
    m = smooth({s.key: s for s in (a, b, c)}, 0.25)
    block_mean = (2 * 1.0 + 6 * 0.0) / 8
    assert m[a.key].cosine == pytest.approx(0.75 * 1.0 + 0.25 * block_mean)
    assert m[b.key].cosine == pytest.approx(0.25 * block_mean)
    assert m[c.key].cosine == pytest.approx(0.5)  # alone in its block
    assert smooth({a.key: a}, 0.0)[a.key].cosine == 1.0


def test_plan_modes_and_override():
    groups = {s.key: s for s in (stats("x.layers.1.a", cos=0.02, overlap=0.1), stats("x.layers.2.b", cos=-0.6, excess=0.4, overlap=1.0),
                                 GroupStats("x.c", (0,), 10, (4,), (1.0,)))}
    preset = preset_for("sdxl")
    per_group = plan_groups(groups, preset)
    assert [per_group[k].strategy for k in ("x.layers.1.a", "x.layers.2.b", "x.c")] == ["slerp", "ties", "weighted_sum"]
    additive = plan_groups(groups, preset, optimization=Optimization.ADDITIVE)
    assert {d.strategy for d in additive.values()} == {"weighted_sum"}
    forced = plan_groups(groups, preset, override="ties")
    assert forced["x.layers.1.a"].strategy == "ties" and forced["x.c"].strategy == "weighted_sum"
    glob = plan_groups(groups, preset, optimization=Optimization.GLOBAL)
    assert glob["x.layers.1.a"].strategy == glob["x.layers.2.b"].strategy and glob["x.c"].strategy == "weighted_sum"


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_measured_rules_sum_orthogonal_groups_and_keep_the_rest(preset):
    measured = lambda s: decide(s.key, s, Metrics.of(s), preset, StrategySet.FULL, Rules.MEASURED)
    orth = stats(cos=0.02, excess=0.0, overlap=0.1)
    d = measured(orth)
    assert go(orth, preset).strategy == "slerp" and d.strategy == "weighted_sum"
    assert d.reason.startswith("orthogonal") and "summed" in d.reason
    # orthogonal but opposing (plain average under the paper rules): summed as well
    assert measured(stats(cos=-0.06, overlap=0.1)).strategy == "weighted_sum"
    # what is not near-orthogonal decides as before
    aligned = stats(cos=0.8, excess=0.05, overlap=0.6)
    assert measured(aligned).strategy == go(aligned, preset).strategy == "consensus"
    clash = stats(cos=-0.6, excess=preset.ties_conflict + 0.05, overlap=1.0)
    assert measured(clash) == go(clash, preset)
    # low conflict where the LoRAs partly agree (paper: average/SLERP, halving each LoRA): summed
    low = stats(cos=0.3, excess=0.0, overlap=0.5)
    assert go(low, preset).strategy in ("weighted_average", "slerp")
    d = measured(low)
    assert d.strategy == "weighted_sum" and d.reason.startswith("low conflict")
    assert d.reason.endswith("measured rules: summed (the LoRAs partly agree, cos 0.30 ≥ 0)")
    # low conflict but anti-aligned: no measurement says summing helps, the paper's average stays
    against = stats(cos=-0.3, excess=0.0, overlap=0.5)
    assert go(against, preset).reason.startswith("low conflict")
    assert measured(against) == go(against, preset)


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.name)
def test_measured_rules_keep_averaging_orthogonal_text_encoder_groups(preset):
    orth = stats(cos=0.02, excess=0.0, overlap=0.1)
    opposing = stats(cos=-0.06, overlap=0.1)
    agreeing = stats(cos=0.3, excess=0.0, overlap=0.5)
    for s, paper in ((orth, "slerp"), (opposing, "weighted_average"), (agreeing, go(agreeing, preset).strategy)):
        te = decide(s.key, s, Metrics.of(s), preset, StrategySet.FULL, Rules.MEASURED, text_encoder=True)
        assert go(s, preset).strategy == te.strategy == paper
        assert te.reason.endswith("measured rules: text encoder, kept (a shared embedding: stacking overshoots)")
        denoiser = decide(s.key, s, Metrics.of(s), preset, StrategySet.FULL, Rules.MEASURED, text_encoder=False)
        assert denoiser.strategy == "weighted_sum"


def test_plan_groups_passes_the_rule_set():
    groups = {s.key: s for s in (stats("x.layers.1.a", cos=0.02, overlap=0.1),)}
    preset = preset_for("sdxl")
    assert plan_groups(groups, preset)["x.layers.1.a"].strategy == "slerp"  # the function's default: paper
    assert plan_groups(groups, preset, rules=Rules.MEASURED)["x.layers.1.a"].strategy == "weighted_sum"
    te = plan_groups(groups, preset, rules=Rules.MEASURED, text_encoder=lambda key: key.startswith("x."))
    assert te["x.layers.1.a"].strategy == "slerp"
