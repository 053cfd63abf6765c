"""Phase 1: every component on hand-made pass-1 statistics, values worked out by hand."""

from __future__ import annotations

import pytest

from loramerge.analysis.metrics import PairStats
from loramerge.analysis.stats import GroupStats
from loramerge.autotune import heuristic as H
from loramerge.decide import GroupDecision, Metrics
from loramerge.enums import Optimization, RefineLevel, Sparsifier, StrategySet
from loramerge.presets import PRESETS

SD = PRESETS["sd_unet"]


def _pair(cosine: float, excess: float, overlap: float) -> PairStats:
    return PairStats(0, 1, cosine, cosine, 0.0, 0.0, 0.0, cosine, 0.0, excess, overlap, 100)


def _group(key, norms2, cosine, excess, overlap, density):
    return GroupStats(key, (0, 1), 100, (4, 4), norms2, (_pair(cosine, excess, overlap),), {0.1: density})


# aligned (cos .8, no conflict, overlap .6), energy 2; orthogonal and opposing (cos −.1, effective
# conflict .1·(.5+.5·.1) = .055, overlap .1), energy 5, magnitude ratio √4/√1 = 2; conflicting
# (cos .3 ≥ orth_cos .25, effective conflict .5·.75 = .375 > .25), energy 3; a one-LoRA group (ignored).
STATS = {
    "a": _group("a", (1.0, 1.0), 0.8, 0.0, 0.6, 0.6),
    "o": _group("o", (4.0, 1.0), -0.1, 0.1, 0.1, 0.8),
    "c": _group("c", (1.5, 1.5), 0.3, 0.5, 0.5, 0.5),
    "s": GroupStats("s", (0,), 100, (4,), (9.0,)),
}
P = H.profile(STATS, SD, auto_scale=0.85)


def test_profile_shares_opposing_and_density():
    assert P.shares == pytest.approx({"aligned": 0.2, "orthogonal": 0.5, "conflicting": 0.3, "moderate": 0.0})
    assert P.opposing == pytest.approx(0.5)
    assert P.density == pytest.approx(0.2 * 0.6 + 0.5 * 0.8 + 0.3 * 0.5)  # 0.67
    assert P.auto_scale == 0.85


def _decisions(**strategies):
    return {k: GroupDecision(k, v, 2, "") for k, v in strategies.items()}


def test_mode_fit():
    ideal = _decisions(a="consensus", o="weighted_sum", c="ties")  # weighted_sum: orthogonal and ratio ≥ 2
    assert H.mode_fit(ideal, STATS, SD) == pytest.approx(1.0)
    averaged = _decisions(a="weighted_average", o="slerp", c="weighted_average")
    assert H.mode_fit(averaged, STATS, SD) == pytest.approx(0.2 * 0.9 + 0.5 * 1.0 + 0.3 * 0.4)  # 0.80
    odd = _decisions(a="ziplora", o="ties", c="slerp")
    assert H.mode_fit(odd, STATS, SD) == pytest.approx(0.2 * 0.5 + 0.5 * 0.5 + 0.3 * 0.3)  # 0.44


def test_sparsification_fit():
    assert H.sparsification_fit(P, Sparsifier.NONE, None, 0.0, SD) == pytest.approx(0.7)
    closeness = 1 - abs(0.7 - 0.67) / (0.9 - 0.1)  # 0.9625
    assert H.sparsification_fit(P, Sparsifier.DARE, 0.7, 0.0, SD) == pytest.approx(0.3 * closeness)
    assert H.sparsification_fit(P, Sparsifier.DELLA, 0.7, 0.3, SD) == pytest.approx(0.3 * closeness * 0.925)
    # the preset's density when none is given; a density a whole range away scores 0
    assert H.sparsification_fit(P, Sparsifier.MAGNITUDE, None, 0.0, SD) == pytest.approx(0.3 * closeness)
    far = H.Profile(P.shares, 0.0, 0.1, 1.0)
    assert H.sparsification_fit(far, Sparsifier.DARE, 0.9, 0.0, SD) == 0.0


def test_quality_fit():
    # conflicting share .3: refinement called for (≥ .2), full not (< .5)
    assert [H.quality_fit(P, r) for r in RefineLevel] == [0.5, 1.0, 0.5]
    calm = H.Profile({**P.shares, "conflicting": 0.1}, 0.0, 0.5, 1.0)
    assert [H.quality_fit(calm, r) for r in RefineLevel] == [1.0, 0.5, 0.0]
    torn = H.Profile({**P.shares, "conflicting": 0.5}, 0.0, 0.5, 1.0)
    assert [H.quality_fit(torn, r) for r in RefineLevel] == [0.0, 0.5, 1.0]


def test_auto_strength_fit():
    # scale .85: need = .15/.3 = .5
    assert H.auto_strength_fit(P, True) == pytest.approx(0.75)
    assert H.auto_strength_fit(P, False) == pytest.approx(0.5)
    unscaled = H.Profile(P.shares, 0.0, 0.5, 1.0)
    assert (H.auto_strength_fit(unscaled, True), H.auto_strength_fit(unscaled, False)) == (0.5, 1.0)
    halved = H.Profile(P.shares, 0.0, 0.5, 0.5)  # need capped at 1
    assert (H.auto_strength_fit(halved, True), H.auto_strength_fit(halved, False)) == (1.0, 0.0)


def test_optimization_fit():
    assert H.optimization_fit(P, "auto", Optimization.PER_GROUP) == 1.0
    assert H.optimization_fit(P, "auto", Optimization.GLOBAL) == pytest.approx(0.5)  # dominant: orthogonal
    assert H.optimization_fit(P, "auto", Optimization.ADDITIVE) == pytest.approx(0.5)  # orthogonal share
    assert H.optimization_fit(P, "ties", Optimization.PER_GROUP) == pytest.approx(0.5)


def test_strategy_set_fit():
    assert H.strategy_set_fit(P, "auto", Optimization.PER_GROUP, StrategySet.FULL) == pytest.approx(0.75)
    assert H.strategy_set_fit(P, "auto", Optimization.PER_GROUP, StrategySet.NO_SLERP) == pytest.approx(0.75)
    assert H.strategy_set_fit(P, "auto", Optimization.GLOBAL, StrategySet.BASIC) == pytest.approx(0.8)
    assert H.strategy_set_fit(P, "ties", Optimization.PER_GROUP, StrategySet.FULL) == 0.5
    assert H.strategy_set_fit(P, "auto", Optimization.ADDITIVE, StrategySet.FULL) == 0.5


def test_composite_uses_the_papers_weights():
    components = dict(
        mode_fit=1.0,
        sparsification_fit=0.7,
        quality_fit=1.0,
        auto_strength_fit=0.75,
        optimization_fit=1.0,
        strategy_set_fit=0.75,
    )
    assert H.composite(components) == pytest.approx(0.40 + 0.15 * 0.7 + 0.15 + 0.15 * 0.75 + 0.10 + 0.05 * 0.75)
    assert sum(H.WEIGHTS.values()) == pytest.approx(1.0)


def test_thresholds_come_from_the_preset():
    # effective conflict .4·(.5+.5·.5) = .3: conflicting for sd_unet (ties_conflict .25), moderate for
    # acestep_dit (.35)
    m = _group("m", (1.0, 1.0), 0.3, 0.4, 0.5, 0.5)

    assert H.regime(Metrics.of(m), SD) == "conflicting"
    assert H.regime(Metrics.of(m), PRESETS["acestep_dit"]) == "moderate"
