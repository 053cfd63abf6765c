"""Phase 1 over the whole grid: per-group decisions once per decision mode, six components per
candidate, and the candidates that would merge identically counted once (METHOD §9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.pass1 import Analysis
from ..config import MergeConfig
from ..decide import GroupDecision
from ..enums import Sparsifier
from ..inputs import Inputs
from ..plan import MergePlan, make_plan
from ..presets import Preset
from . import heuristic as H
from .grid import Candidate


@dataclass(frozen=True)
class Scored:
    index: int  # place in the grid
    candidate: Candidate
    components: dict[str, float]
    score: float
    fingerprint: tuple[Any, ...]


def candidate_config(cfg: MergeConfig, candidate: Candidate) -> MergeConfig:
    """`cfg` with the candidate's options (validated like any configuration)."""
    return MergeConfig(**{**cfg.model_dump(), **candidate.as_dict})


def plan_for(inputs: Inputs, analysis: Analysis, candidate: Candidate) -> tuple[Inputs, MergePlan]:
    """The candidate's inputs (its configuration) and its plan, from the shared pass 1."""
    inputs_c = replace(inputs, cfg=candidate_config(inputs.cfg, candidate))
    return inputs_c, make_plan(inputs_c, analysis)


def auto_scale(plan: MergePlan, analysis: Analysis) -> float:
    """The plan's auto-strength scale, weighted by each branch's input energy (1 without branches)."""
    weights = {b: sum(analysis.norms2[b].values()) for b in plan.auto}
    total = sum(weights.values())
    if not plan.auto or total <= 0:
        return 1.0
    return sum(weights[b] * plan.auto[b].scale for b in plan.auto) / total


def _signature(decisions: Mapping[str, GroupDecision]) -> tuple[Any, ...]:
    return tuple((k, d.strategy, d.sign_method, d.density) for k, d in sorted(decisions.items()))


def score_grid(inputs: Inputs, analysis: Analysis, preset: Preset, candidates: Sequence[Candidate]) -> list[Scored]:
    """Every candidate scored, in grid order; the plan of each decision mode is made once."""
    probe = Candidate((("auto_strength", True),))
    profile = H.profile(analysis.stats, preset, auto_scale(plan_for(inputs, analysis, probe)[1], analysis))
    decisions: dict[tuple[Any, ...], tuple[dict[str, GroupDecision], tuple[Any, ...], float]] = {}
    out = []
    for index, c in enumerate(candidates):
        o = c.as_dict
        mode_key = (o["mode"], o["optimization"], o["strategy_set"])
        if mode_key not in decisions:
            base = Candidate(
                tuple((k, o[k]) for k in ("mode", "optimization", "strategy_set")) + (("auto_strength", True),)
            )
            plan = plan_for(inputs, analysis, base)[1]
            decisions[mode_key] = (
                plan.decisions,
                _signature(plan.decisions),
                H.mode_fit(plan.decisions, analysis.stats, preset),
            )
        planned, signature, mode_fit = decisions[mode_key]
        components = {
            "mode_fit": mode_fit,
            "sparsification_fit": H.sparsification_fit(profile, o["sparsify"], o["density"], o["dampening"], preset),
            "quality_fit": H.quality_fit(profile, o["refine"]),
            "auto_strength_fit": H.auto_strength_fit(profile, o["auto_strength"]),
            "optimization_fit": H.optimization_fit(profile, o["mode"], o["optimization"]),
            "strategy_set_fit": H.strategy_set_fit(profile, o["mode"], o["optimization"], o["strategy_set"]),
        }
        out.append(Scored(index, c, components, H.composite(components), fingerprint(c, signature, planned, profile)))
    return out


def fingerprint(c: Candidate, signature: tuple, planned: Mapping[str, GroupDecision], p: H.Profile) -> tuple[Any, ...]:
    """What decides the merged bytes: candidates with equal fingerprints merge identically."""
    o = c.as_dict
    sparsify = o["sparsify"]
    uses_density = sparsify is not Sparsifier.NONE or any(d.strategy == "ties" for d in planned.values())
    scaled = o["auto_strength"] and p.auto_scale != 1.0
    return (
        signature,
        sparsify,
        o["density"] if uses_density else None,
        o["dampening"] if sparsify.random else 0.0,
        o["refine"],
        scaled,
        c.multiplier,
    )


def unique(scored: Sequence[Scored]) -> tuple[list[Scored], dict[int, int]]:
    """The best-scoring candidate of each fingerprint (first in grid order on equal scores), by
    score; and for every other candidate, the grid index of the one it merges like."""
    best: dict[tuple[Any, ...], Scored] = {}
    for s in scored:
        held = best.get(s.fingerprint)
        if held is None or s.score > held.score:
            best[s.fingerprint] = s
    same_as = {s.index: best[s.fingerprint].index for s in scored if best[s.fingerprint] is not s}
    return sorted(best.values(), key=lambda s: (-s.score, s.index)), same_as
