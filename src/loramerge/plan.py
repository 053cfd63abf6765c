"""`MergePlan`: every decision of one merge, resolved to the parameters pass 2 executes.

`make_plan` is pure: pass-1 statistics and the configuration in, a plan out. Each group's
`GroupDecision` carries its strategy, the strategy's params, the sparsifier, the refinement level,
the execution path and the output rank, so that the engine never re-decides anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Protocol

from . import strategies
from .analysis.stats import GroupStats
from .config import MergeConfig
from .decide import GroupDecision, plan_groups
from .energy import AutoStrength, auto_strength
from .enums import Optimization, RefineLevel, Rules, Sparsifier
from .errors import OptionError
from .presets import MERGE_RETENTION_FLOOR, Preset, preset_for
from .strategies import SignMethod, SparsifyParams, TiesParams

if TYPE_CHECKING:
    import torch

    from .analysis.pass1 import Analysis
    from .inputs import Inputs


class MergedNorms(Protocol):
    """What `suggested_max_strength` reads of a merged group (an `engine.GroupResult`)."""

    @property
    def norm2_inputs(self) -> dict[int, float]: ...

    @property
    def norm2_merged(self) -> float: ...


@dataclass(frozen=True)
class MergePlan:
    architecture: str
    preset: Preset
    decisions: dict[str, GroupDecision]
    auto: dict[str, AutoStrength] = field(default_factory=dict)  # "model" / "text_encoder"
    rank: int | None = None  # output rank of groups without a decision (preserved only)
    rel_error: float | None = None
    suggested_max_strength: float | None = None  # set from the merge results (`with_results`)
    scale_after: bool = False  # auto-strength multiplies each merged group (measured rules), not the inputs
    retention_floor: float = 0.0  # auto's averaged groups are scaled up until every LoRA keeps this (measured rules)

    def scale(self, text_encoder: bool) -> float:
        branch = self.auto.get("text_encoder" if text_encoder else "model")
        return branch.scale if branch else 1.0

    def strategy_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.decisions.values():
            counts[d.strategy] = counts.get(d.strategy, 0) + 1
        return dict(sorted(counts.items()))

    def with_results(self, results: Sequence[MergedNorms]) -> MergePlan:
        """The plan with `suggested_max_strength` from the merged groups' norms."""
        return replace(self, suggested_max_strength=suggested_max_strength(results, self.preset))

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "preset": self.preset.name,
            "auto_strength": {k: asdict(v) for k, v in self.auto.items()},
            "rank": self.rank,
            "rel_error": self.rel_error,
            "suggested_max_strength": self.suggested_max_strength,
            "scale_after": self.scale_after,
            "retention_floor": self.retention_floor,
            "decisions": {k: d.to_dict() for k, d in self.decisions.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def make_plan(inputs: Inputs, analysis: Analysis) -> MergePlan:
    """Decisions per group and auto-strength per branch from pass-1 statistics (pure)."""
    cfg = inputs.cfg
    preset = preset_for(inputs.architecture, cfg.preset)
    override = None if cfg.mode == "auto" else cfg.mode
    decisions = plan_groups(
        analysis.stats,
        preset,
        optimization=cfg.optimization,
        strategy_set=cfg.strategy_set,
        override=override,
        smoothing=cfg.smoothing,
        use_excess=cfg.use_excess,
        rules=cfg.rules,
        text_encoder=inputs.is_text_encoder,
    )
    resolved = {k: resolve(d, analysis.stats[k], cfg, preset) for k, d in decisions.items()}
    auto = _auto_strength(inputs, analysis, preset) if cfg.auto_strength else {}
    scale_after = cfg.rules is Rules.MEASURED
    auto = {b: _inert_note(a, b, resolved, inputs, after=scale_after) for b, a in auto.items()}
    floor = 0.0
    if scale_after and cfg.mode == "auto":  # a forced average stays one
        floor = retention_target(inputs, analysis, resolved, MERGE_RETENTION_FLOOR, preset.opposing_cos)
    return MergePlan(
        inputs.architecture,
        preset,
        resolved,
        auto,
        cfg.rank,
        cfg.rel_error,
        scale_after=scale_after,
        retention_floor=floor,
    )


RETENTION_SPARE = 1e-3  # the whole-merge target's margin: the output dtype rounds the merge (fp16: ~1e-6 here)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def retention_target(
    inputs: Inputs, analysis: Analysis, decisions: dict[str, GroupDecision], floor: float, opposing_cos: float
) -> float:
    """The per-group retention target t ≥ `floor` of the retention floor (engine.retention_floor_scale):
    the smallest t for which every LoRA keeps ≥ `floor` of itself over the whole merge, energy-weighted
    as the report counts it, where the groups whose LoRAs oppose keep their plain average (1/N each)
    and pull a LoRA's whole-merge figure down. Estimated at plan time, exactly, from pass 1's Grams over
    the groups whose merge is a known combination Σ a_k X_k (single-LoRA groups count 1); dense
    strategies are left out of the estimate. The whole-merge goal has `RETENTION_SPARE` to spare;
    `floor` itself where no t ≤ 1 reaches it."""
    from .engine import composes, floor_factor, group_retentions

    fixed_num: dict[int, float] = {}  # what the lift does not change: single-LoRA and non-lifted groups
    den: dict[int, float] = {}
    lifted: list[tuple[list[int], list[float | None], list[float]]] = []  # loras, ret_k, energy_k
    for key, s in analysis.stats.items():
        weights = [inputs.cfg.inputs[i].strength(inputs.is_text_encoder(key)) for i in s.loras]
        ret: list[float | None]
        if s.n == 1:  # a single LoRA is kept whole
            ret, energy, lift = [1.0], [weights[0] ** 2 * s.norms2[0]], False
        else:
            d = decisions.get(key)
            strategy = strategies.get(d.strategy) if d else None
            if d is None or strategy is None or strategy.coefficients is None or d.path != "exact":
                continue
            gram = s.inner_matrix()
            coefficients = strategy.coefficients(weights, partial(_same, gram), d.params)
            ret, energy = group_retentions(gram, coefficients, weights)
            lift = strategy.scale_invariant and composes(gram, weights, opposing_cos)
        if lift:
            lifted.append((list(s.loras), ret, energy))
        for i, r, e in zip(s.loras, ret, energy):
            if r is not None and e > 0:
                den[i] = den.get(i, 0.0) + e
                if not lift:
                    fixed_num[i] = fixed_num.get(i, 0.0) + r * e
    if not lifted:
        return floor

    def worst(t: float) -> float:
        num = dict(fixed_num)
        for loras, ret, energy in lifted:
            c = floor_factor(ret, t)
            for i, r, e in zip(loras, ret, energy):
                if r is not None and e > 0:
                    num[i] = num.get(i, 0.0) + c * r * e
        return min(num.get(i, 0.0) / den[i] for i in den)

    goal = floor + RETENTION_SPARE
    if worst(floor) >= goal or worst(1.0) < goal:
        return floor
    low, high = floor, 1.0
    for _ in range(40):  # bisection: worst(t) does not decrease as t grows
        mid = (low + high) / 2
        low, high = (mid, high) if worst(mid) < goal else (low, mid)
    return high


def check_forced_mode(inputs: Inputs) -> None:
    """Refuse, before any work, a ``--mode`` strategy that cannot take the number of LoRAs meeting in
    some group (ziplora: exactly 2; add_difference: exactly 3, in order A, B, C); groups where one LoRA
    is alone are copied whatever the mode."""
    cfg = inputs.cfg
    if cfg.mode == "auto":
        return
    strategy = strategies.get(cfg.mode)
    lo, hi = strategy.min_inputs, strategy.max_inputs
    bad = {k: n for k, v in inputs.groups.items() if (n := len(v)) >= 2 and (n < lo or (hi is not None and n > hi))}
    if not bad:
        return
    key, n = min(bad.items())
    labels = ", ".join(cfg.inputs[i].label for i in inputs.groups[key])
    wanted = f"exactly {lo}" if hi == lo else (f"{lo} to {hi}" if hi is not None else f"at least {lo}")
    raise OptionError(
        f"--mode {cfg.mode} merges {wanted} LoRAs per group, but {n} LoRAs ({labels}) meet in group '{key}' "
        f"(and {len(bad) - 1} more group(s)); give {wanted} LoRAs (hold others out with --preserve, or narrow "
        "them with --include/--exclude), or use --mode auto"
    )


def uses_sign_statistics(cfg: MergeConfig) -> bool:
    """Whether the plan can read pass 1's sign statistics (conflict, density): not when every group is
    forced to a linear combination (``--mode`` weighted_sum/weighted_average/normalize/slerp) or
    summed (``--optimization additive``); pass 1 then computes the exact norms and overlaps only."""
    if cfg.optimization is Optimization.ADDITIVE:
        return False
    return cfg.mode == "auto" or not strategies.get(cfg.mode).linear


def resolve(d: GroupDecision, s: GroupStats, cfg: MergeConfig, preset: Preset) -> GroupDecision:
    """The decision with everything pass 2 needs: params, sparsifier, refinement, path, output rank."""
    strategy = strategies.get(d.strategy)
    params = strategy.params_cls()
    if isinstance(params, TiesParams):  # the user's density first, then the statistics', then the preset's
        params = TiesParams(
            density=cfg.density or d.density or preset.dare_density, sign_method=SignMethod(d.sign_method or "total")
        )
    sparsifier = None
    if cfg.sparsify is not Sparsifier.NONE:
        sparsifier = SparsifyParams(cfg.sparsify, cfg.density or preset.dare_density, cfg.dampening)
    lowrank, plain = not s.full_rank, sparsifier is None and cfg.refine is RefineLevel.NONE
    if strategy.linear and plain and lowrank:
        path = "exact"
    elif cfg.basis_space and lowrank and cfg.refine is RefineLevel.NONE and strategy.basis_space:
        path = "basis"
    else:
        path = "dense"
    return replace(
        d, params=params, sparsifier=sparsifier, refine=cfg.refine, path=path, rank=cfg.rank, rel_error=cfg.rel_error
    )


def _auto_strength(inputs: Inputs, analysis: Analysis, preset: Preset) -> dict[str, AutoStrength]:
    cfg, auto = inputs.cfg, {}
    for branch in sorted(analysis.norms2):
        te = branch == "text_encoder"
        loras = sorted(analysis.norms2[branch])
        # The measured rules never scale near-orthogonal LoRAs below the user's strengths (the image
        # benchmark's best λ under its content guard is ≥ 1 for N ≤ 4; DECISIONS.md, "Rule sets")
        if cfg.rules is Rules.MEASURED:
            floor = 1.0
        elif any(s.full_rank for k, s in analysis.stats.items() if inputs.is_text_encoder(k) == te):
            floor = preset.full_rank_floor
        else:
            floor = preset.orthogonal_floor
        index = {i: n for n, i in enumerate(loras)}
        auto[branch] = auto_strength(
            [cfg.inputs[i].strength(te) for i in loras],
            [analysis.norms2[branch][i] for i in loras],
            {(index[i], index[j]): v for (i, j), v in analysis.dots[branch].items()},
            floor=floor,
            near_orthogonal=preset.near_orthogonal_cos,
        )
    return auto


def _inert_note(
    a: AutoStrength, branch: str, decisions: dict[str, GroupDecision], inputs: Inputs, *, after: bool
) -> AutoStrength:
    """Say in the reason which merged groups a scale below 1 does not change: those whose strategy is
    scale invariant (average, SLERP, consensus, ...). Under the paper rules the scale multiplies the
    inputs, which such a strategy divides out again; under the measured rules it multiplies the
    merged groups, except those (an average already keeps about one LoRA's energy)."""
    if a.scale >= 1.0:
        return a
    te = branch == "text_encoder"
    merged = [d for k, d in decisions.items() if d.n_loras > 1 and inputs.is_text_encoder(k) == te]
    inert = sum(strategies.get(d.strategy).scale_invariant for d in merged)
    if not inert:
        return a
    if after:
        note = (
            f"; applied to the merged groups (measured rules), not to the {inert} of {len(merged)} "
            "whose strategy averages (they keep about one LoRA's energy already)"
        )
    else:
        note = (
            f"; applied to the inputs (paper rules): no effect on the {inert} of {len(merged)} merged groups "
            "whose strategy is scale invariant"
        )
    return replace(a, reason=a.reason + note)


def suggested_max_strength(results: Sequence[MergedNorms], preset: Preset) -> float | None:
    """How much stronger the merge could be applied before it outweighs its inputs on average:
    Σ_groups mean_i ‖w_iΔW_i‖ / Σ_groups ‖M‖, clamped to [1, the preset's cap]; None if M = 0."""
    sum_inputs = sum_merged = 0.0
    for r in results:
        if r.norm2_inputs:
            sum_inputs += sum(math.sqrt(v) for v in r.norm2_inputs.values()) / len(r.norm2_inputs)
            sum_merged += math.sqrt(max(r.norm2_merged, 0.0))
    if sum_merged <= 0:
        return None
    return min(max(sum_inputs / sum_merged, 1.0), preset.max_strength_cap)
