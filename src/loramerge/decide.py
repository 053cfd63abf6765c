"""Per-group strategy selection (METHOD.md §3): statistics in, decisions out. Pure.

`plan_groups` applies the decision tree; `loramerge.plan.make_plan` then resolves every parameter
the merge engine needs (strategy params, sparsifier, execution path, output rank) into each
`GroupDecision`, so that pass 2 only executes what the plan says.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .analysis.stats import GroupStats, block_of
from .enums import Optimization, RefineLevel, Rules, StrategySet
from .presets import Preset


@dataclass(frozen=True)
class Metrics:
    """The statistics a decision reads (raw, or block-smoothed)."""

    cosine: float
    min_cosine: float
    conflict: float  # effective conflict (excess-based unless disabled)
    overlap: float
    magnitude_ratio: float

    @classmethod
    def of(cls, s: GroupStats, use_excess: bool = True) -> Metrics:
        conflict = s.effective_conflict if use_excess else s.conflict
        return cls(s.cosine, s.min_cosine, conflict, s.overlap, s.magnitude_ratio)


@dataclass(frozen=True, slots=True)  # one per group: no per-instance dict
class GroupDecision:
    key: str
    strategy: str
    n_loras: int
    reason: str
    sign_method: str | None = None
    density: float | None = None
    metrics: Metrics | None = None  # what the decision used (smoothed)
    raw: Metrics | None = None
    # resolved for execution by `loramerge.plan.make_plan`:
    params: Any = None  # the strategy's params dataclass
    sparsifier: Any = None  # SparsifyParams, or None
    refine: RefineLevel = RefineLevel.NONE
    path: str = ""  # "exact" (Σ a_i ΔW_i from factors), "basis" or "dense"
    rank: int | None = None  # output rank; None: exact, or the sum of the input ranks
    rel_error: float | None = None  # relative-error target of the re-factorisation instead

    def to_dict(self) -> dict:
        return asdict(self)


_SMOOTHED = ("cosine", "min_cosine", "conflict", "overlap")


def smooth(stats: dict[str, GroupStats], lam: float, use_excess: bool = True) -> dict[str, Metrics]:
    """``m̂ = (1−λ)·m + λ·m̄_block``, the block mean weighted by each group's Σ‖ΔW_i‖²."""
    raw = {k: Metrics.of(s, use_excess) for k, s in stats.items() if s.n > 1}
    if lam == 0:
        return raw
    blocks: dict[str, list[str]] = defaultdict(list)
    for key in raw:
        blocks[block_of(key)].append(key)
    out = {}
    for keys in blocks.values():
        total = sum(stats[k].energy for k in keys)
        weights = {k: (stats[k].energy / total if total > 0 else 1 / len(keys)) for k in keys}
        mean = {f: sum(weights[k] * getattr(raw[k], f) for k in keys) for f in _SMOOTHED}
        for k in keys:
            m = raw[k]
            mixed = {f: (1 - lam) * getattr(m, f) + lam * mean[f] for f in _SMOOTHED}
            out[k] = Metrics(**mixed, magnitude_ratio=m.magnitude_ratio)
    return out


def decide(
    key: str,
    s: GroupStats,
    m: Metrics,
    preset: Preset,
    strategy_set: StrategySet,
    rules: Rules = Rules.PAPER,
    text_encoder: bool = False,
) -> GroupDecision:
    """The decision tree of `rules` (docs/DECISIONS.md, "Rule sets")."""
    d = decide_paper(key, s, m, preset, strategy_set)
    return d if rules is Rules.PAPER else measured(d, text_encoder)


def measured(d: GroupDecision, text_encoder: bool = False) -> GroupDecision:
    """The measured rules: the paper tree, except that the denoiser's groups that the paper averages
    or SLERPs because their LoRAs compose are summed (exact, rank Σr), so that each LoRA acts at its
    own strength; auto-strength then acts on the merged groups. That is rule 3 (near-orthogonal) and
    the low-conflict average where the LoRAs partly agree (cos ≥ 0: averaging would halve what each
    LoRA does alone to avoid doubling what they share). Text-encoder groups keep the paper's
    average/SLERP: every LoRA there moves the one conditioning embedding that all of them are read
    through, and stacking them overshoots it (docs/DECISIONS.md, "Rule sets", both benchmark domains)."""
    if d.strategy not in ("weighted_average", "slerp"):
        return d
    cos = d.metrics.cosine if d.metrics is not None else None
    orthogonal = d.reason.startswith("orthogonal")
    agreeing = d.reason.startswith("low conflict") and cos is not None and cos >= 0.0
    if not (orthogonal or agreeing):
        return d
    if text_encoder:
        note = "; measured rules: text encoder, kept (a shared embedding: stacking overshoots)"
        return replace(d, reason=d.reason + note)
    why = "the LoRAs compose" if orthogonal else f"the LoRAs partly agree, cos {cos:.2f} ≥ 0"
    reason = d.reason.split("; ")[0] + f"; measured rules: summed ({why})"
    return replace(d, strategy="weighted_sum", reason=reason)


def decide_paper(key: str, s: GroupStats, m: Metrics, preset: Preset, strategy_set: StrategySet) -> GroupDecision:
    """The seed's decision tree (METHOD §3), first match wins, then the SLERP upgrade."""
    raw = Metrics.of(s)
    if s.n == 1:
        return GroupDecision(key, "weighted_sum", 1, "one LoRA in the group", metrics=m, raw=raw)
    if (
        m.cosine > preset.consensus_cos
        and m.conflict < preset.consensus_conflict
        and m.overlap >= preset.consensus_overlap
        and strategy_set is not StrategySet.BASIC
    ):
        return GroupDecision(
            key,
            "consensus",
            s.n,
            f"aligned: cos {m.cosine:.2f} > {preset.consensus_cos}, conflict {m.conflict:.2f}, overlap {m.overlap:.2f}",
            metrics=m,
            raw=raw,
        )
    if abs(m.cosine) < preset.orth_cos and m.conflict < preset.orth_conflict and m.overlap < preset.orth_overlap:
        return _maybe_slerp(
            GroupDecision(
                key,
                "weighted_average",
                s.n,
                f"orthogonal: |cos| {abs(m.cosine):.2f} < {preset.orth_cos}, overlap {m.overlap:.2f}",
                metrics=m,
                raw=raw,
            ),
            s,
            m,
            preset,
            strategy_set,
        )
    if m.conflict > preset.ties_conflict:
        sign = "total" if m.magnitude_ratio > preset.total_sign_ratio else "frequency"
        density = ties_density(s, preset)
        return GroupDecision(
            key,
            "ties",
            s.n,
            f"conflict {m.conflict:.2f} > {preset.ties_conflict}; sign vote {sign} "
            f"(magnitude ratio {m.magnitude_ratio:.2f})",
            sign,
            density,
            m,
            raw,
        )
    return _maybe_slerp(
        GroupDecision(key, "weighted_average", s.n, f"low conflict {m.conflict:.2f}", metrics=m, raw=raw),
        s,
        m,
        preset,
        strategy_set,
    )


def ties_density(s: GroupStats, preset: Preset) -> float:
    """Fraction of sampled magnitudes above ``noise_ratio·max``, clamped to the preset's range."""
    raw = s.density_at.get(preset.noise_ratio, preset.dare_density)
    return min(max(raw, preset.density_min), preset.density_max)


def _maybe_slerp(
    d: GroupDecision, s: GroupStats, m: Metrics, preset: Preset, strategy_set: StrategySet
) -> GroupDecision:
    if strategy_set is not StrategySet.FULL or s.n < 2:
        return d
    if s.full_rank and preset.disable_slerp_full_rank:
        return d
    if m.min_cosine < preset.opposing_cos:
        return GroupDecision(
            d.key,
            d.strategy,
            d.n_loras,
            d.reason + f"; opposing (cos {m.min_cosine:.2f} < {preset.opposing_cos}): no SLERP",
            metrics=m,
            raw=d.raw,
        )
    return GroupDecision(d.key, "slerp", d.n_loras, d.reason + "; not opposing: SLERP upgrade", metrics=m, raw=d.raw)


def plan_groups(
    stats: dict[str, GroupStats],
    preset: Preset,
    *,
    optimization: Optimization = Optimization.PER_GROUP,
    strategy_set: StrategySet = StrategySet.FULL,
    override: str | None = None,
    smoothing: float = 0.25,
    use_excess: bool = True,
    rules: Rules = Rules.PAPER,
    text_encoder: Callable[[str], bool] = lambda key: False,
) -> dict[str, GroupDecision]:
    """A decision for every group, in key order (`text_encoder(key)`: whether a group belongs to a
    text encoder, which the measured rules treat apart)."""
    smoothed = smooth(stats, smoothing, use_excess)
    collective = _collective(stats, use_excess) if optimization is Optimization.GLOBAL else None
    out: dict[str, GroupDecision] = {}
    for key in sorted(stats):
        s = stats[key]
        if s.n == 1:
            out[key] = decide(key, s, Metrics.of(s), preset, strategy_set)
        elif override is not None:
            out[key] = GroupDecision(
                key,
                override,
                s.n,
                "forced by --mode",
                _override_sign(override, s, preset),
                ties_density(s, preset) if override == "ties" else None,
                Metrics.of(s),
                Metrics.of(s),
            )
        elif optimization is Optimization.ADDITIVE:
            out[key] = GroupDecision(
                key, "weighted_sum", s.n, "additive mode", metrics=Metrics.of(s), raw=Metrics.of(s)
            )
        elif collective is not None:
            d = decide(key, s, collective, preset, strategy_set, rules, text_encoder(key))
            out[key] = GroupDecision(
                key, d.strategy, d.n_loras, "global: " + d.reason, d.sign_method, d.density, collective, d.raw
            )
        else:
            out[key] = decide(key, s, smoothed[key], preset, strategy_set, rules, text_encoder(key))
    return out


def _override_sign(strategy: str, s: GroupStats, preset: Preset) -> str | None:
    if strategy != "ties":
        return None
    return "total" if s.magnitude_ratio > preset.total_sign_ratio else "frequency"


def _collective(stats: dict[str, GroupStats], use_excess: bool) -> Metrics:
    """Collection-level metrics: energy-weighted means over the multi-LoRA groups."""
    multi = [s for s in stats.values() if s.n > 1]
    total = sum(s.energy for s in multi) or 1.0
    ms = [(s.energy / total, Metrics.of(s, use_excess)) for s in multi]
    fields = ("cosine", "min_cosine", "conflict", "overlap", "magnitude_ratio")
    return Metrics(*(sum(w * getattr(m, f) for w, m in ms) for f in fields))
