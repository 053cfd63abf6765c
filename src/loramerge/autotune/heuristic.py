"""Phase 1 of the AutoTuner: score a candidate from pass-1 statistics alone, nothing merged (pure).

Six components in [0, 1], weighted as in the paper (seed 000 §3.9, METHOD §9); every threshold
comes from the architecture preset. `Profile` condenses pass 1 into the few numbers they read;
each component is a small function of (profile, candidate values) with its rule in docs/TUNER.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..analysis.stats import GroupStats
from ..decide import GroupDecision, Metrics, ties_density
from ..enums import Optimization, RefineLevel, Sparsifier, StrategySet
from ..presets import Preset

WEIGHTS = {
    "mode_fit": 0.40,
    "sparsification_fit": 0.15,
    "quality_fit": 0.15,
    "auto_strength_fit": 0.15,
    "optimization_fit": 0.10,
    "strategy_set_fit": 0.05,
}

REGIMES = ("aligned", "orthogonal", "conflicting", "moderate")
FIT: dict[str, dict[str, float]] = {
    # how well a strategy suits a group of each regime; strategies not listed: OTHER_FIT
    "aligned": {"consensus": 1.0, "weighted_average": 0.9, "slerp": 0.9, "ties": 0.6, "weighted_sum": 0.5},
    "orthogonal": {"weighted_average": 1.0, "slerp": 1.0, "weighted_sum": 0.8, "ties": 0.5, "consensus": 0.3},
    "conflicting": {"ties": 1.0, "consensus": 0.5, "weighted_average": 0.4, "slerp": 0.3, "weighted_sum": 0.2},
    "moderate": {"weighted_average": 1.0, "slerp": 1.0, "ties": 0.6, "consensus": 0.6, "weighted_sum": 0.6},
}
OTHER_FIT = 0.5
IMBALANCED_RATIO = 2.0  # an orthogonal pair this unequal suits a plain weighted sum (METHOD §11)
REFINE_NEED = (0.2, 0.5)  # conflicting energy share from which `refine`, then `full`, is justified
AUTO_NEED_SPAN = 0.3  # an auto-strength scale this far below 1 makes normalisation fully needed
DAMPENING_COST = 0.25  # dampening trades retention for less noise: unmeasured here, a small cost


@dataclass(frozen=True)
class Profile:
    """Pass 1 in a few energy-weighted numbers (over the groups with 2+ LoRAs)."""

    shares: dict[str, float]  # regime -> share of the energy
    opposing: float  # share of the energy in groups with an opposing pair
    density: float  # mean measured TIES density (the preset's noise ratio, clamped to its range)
    auto_scale: float  # the auto-strength scale the plan would apply (energy-weighted over branches)


def regime(m: Metrics, preset: Preset) -> str:
    """The decision tree's regime of one group's raw metrics (METHOD §3)."""
    if (
        m.cosine > preset.consensus_cos
        and m.conflict < preset.consensus_conflict
        and m.overlap >= preset.consensus_overlap
    ):
        return "aligned"
    if abs(m.cosine) < preset.orth_cos and m.conflict < preset.orth_conflict and m.overlap < preset.orth_overlap:
        return "orthogonal"
    if m.conflict > preset.ties_conflict:
        return "conflicting"
    return "moderate"


def profile(stats: Mapping[str, GroupStats], preset: Preset, auto_scale: float) -> Profile:
    multi = [s for s in stats.values() if s.n > 1]
    total = sum(s.energy for s in multi)
    shares = dict.fromkeys(REGIMES, 0.0)
    opposing = density = 0.0
    for s in multi:
        w = s.energy / total if total > 0 else 1 / len(multi)
        m = Metrics.of(s)
        shares[regime(m, preset)] += w
        opposing += w * (m.min_cosine < preset.opposing_cos)
        density += w * ties_density(s, preset)
    return Profile(shares, opposing, density if multi else preset.dare_density, auto_scale)


def mode_fit(decisions: Mapping[str, GroupDecision], stats: Mapping[str, GroupStats], preset: Preset) -> float:
    """Energy-weighted fit of each multi-LoRA group's strategy to the regime of its raw metrics."""
    multi = [(k, s) for k, s in stats.items() if s.n > 1 and k in decisions]
    total = sum(s.energy for _, s in multi)
    if not multi:
        return 1.0
    score = 0.0
    for key, s in multi:
        m = Metrics.of(s)
        kind = regime(m, preset)
        fit = FIT[kind].get(decisions[key].strategy, OTHER_FIT)
        if kind == "orthogonal" and decisions[key].strategy == "weighted_sum" and m.magnitude_ratio >= IMBALANCED_RATIO:
            fit = 1.0
        score += (s.energy / total if total > 0 else 1 / len(multi)) * fit
    return score


def sparsification_fit(
    p: Profile, sparsify: Sparsifier, density: float | None, dampening: float, preset: Preset
) -> float:
    """No sparsifier: the share of non-conflicting energy. A sparsifier: the conflicting share times
    how close its density is to the measured one (1 at equal, 0 a whole preset range away), less a
    small cost per unit of dampening."""
    conflicting = p.shares["conflicting"]
    if sparsify is Sparsifier.NONE:
        return 1.0 - conflicting
    kept = density if density is not None else preset.dare_density
    span = max(preset.density_max - preset.density_min, 1e-9)
    closeness = max(0.0, 1.0 - abs(kept - p.density) / span)
    return conflicting * closeness * (1.0 - DAMPENING_COST * dampening)


def quality_fit(p: Profile, refine: RefineLevel) -> float:
    """1 at the refinement level the conflicting energy share calls for (none below 0.2, refine
    below 0.5, full above), ½ one level off, 0 two levels off."""
    wanted = sum(p.shares["conflicting"] >= t for t in REFINE_NEED)
    level = list(RefineLevel).index(refine)
    return 1.0 - abs(level - wanted) / 2


def auto_strength_fit(p: Profile, on: bool) -> float:
    """need = min((1 − scale)/0.3, 1) for the scale auto-strength would apply; on: ½ + ½·need, off: 1 − need."""
    need = min(max(1.0 - p.auto_scale, 0.0) / AUTO_NEED_SPAN, 1.0)
    return 0.5 + 0.5 * need if on else 1.0 - need


def optimization_fit(p: Profile, mode: str, optimization: Optimization) -> float:
    """Per-group decisions: 1. One decision for all (global, or a forced strategy): the dominant
    regime's energy share. Plain addition: the orthogonal share (sums suit independent LoRAs only)."""
    if mode == "auto" and optimization is Optimization.PER_GROUP:
        return 1.0
    if mode == "auto" and optimization is Optimization.ADDITIVE:
        return p.shares["orthogonal"]
    return max(p.shares.values())


def strategy_set_fit(p: Profile, mode: str, optimization: Optimization, strategy_set: StrategySet) -> float:
    """Only auto mode with decisions reads the set (else ½). full: 1 − ½·opposing share (SLERP
    guards opposing pairs itself); no_slerp: ½ + ½·opposing share; basic (no consensus): 1 − aligned share."""
    if mode != "auto" or optimization is Optimization.ADDITIVE:
        return 0.5
    if strategy_set is StrategySet.FULL:
        return 1.0 - 0.5 * p.opposing
    if strategy_set is StrategySet.NO_SLERP:
        return 0.5 + 0.5 * p.opposing
    return 1.0 - p.shares["aligned"]


def composite(components: Mapping[str, float]) -> float:
    """Σ weight·component over the six components."""
    return math.fsum(WEIGHTS[k] * components[k] for k in WEIGHTS)
