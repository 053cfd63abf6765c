"""The two passes over the groups, one group's tensors in memory at a time.

Pass 1 keeps scalars only (`GroupStats` and per-branch energy accumulators). Pass 2 recomputes
each group's patches, merges them with the planned strategy, and re-factorises the result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .analysis.gram import joint_gram
from .analysis.metrics import inner, prepare
from .analysis.stats import GroupStats, group_stats
from .compress import factorize_dense, factorize_lowrank
from .config import MergeConfig, RefineMode, SparsifyMode
from .plan import MergePlan
from .presets import Preset
from .select import GroupDecision
from .session import Session, group_generator
from .spool import PatchLike
from .types import Dense, LowRank, Patch

LINEAR = {"weighted_sum", "weighted_average", "normalize"}
BASIS_SPACE = {"ties", "magnitude_prune", "consensus"}  # element-wise strategies that can act on basis coefficients
Progress = Callable[[str, int, int], None]  # (group key, index, total)


@dataclass
class Analysis:
    stats: dict[str, GroupStats] = field(default_factory=dict)
    norms2: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    dots: dict[str, dict[tuple[int, int], float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))


def branch_name(session: Session, key: str) -> str:
    return "text_encoder" if session.is_text_encoder(key) else "model"


def pass1(session: Session, progress: Progress | None = None) -> Analysis:
    out = Analysis()
    keys = session.keys
    for n, key in enumerate(keys):
        loras = session.groups[key]
        if progress:
            progress(key, n, len(keys))
        if not loras:
            continue
        patches = [session.load(i, key) for i in loras]
        s = group_stats(key, tuple(loras), patches, generator=group_generator(session.cfg.seed, key),
                        sample_size=session.cfg.sample_size)
        out.stats[key] = s
        branch = branch_name(session, key)
        for i, n2 in zip(loras, s.norms2):
            out.norms2[branch][i] += n2
        for p in s.pairs:
            out.dots[branch][(p.i, p.j)] += p.dot
    return out


@dataclass(frozen=True, slots=True)  # thousands per merge: no per-instance dict
class GroupResult:
    key: str
    patch: PatchLike  # in memory from `merge_group`; a spool handle once `pipeline.run` has stored it
    rank: int
    rel_error: float
    retention: dict[int, float]  # LoRA index -> ⟨M, w_iΔW_i⟩/‖w_iΔW_i‖² (preserved LoRAs included)
    exact: bool
    norm2_inputs: dict[int, float]  # LoRA index -> ‖w_iΔW_i‖²
    norm2_merged: float


def pass2(session: Session, plan: MergePlan, progress: Progress | None = None) -> Iterator[GroupResult]:
    keys = session.keys
    for n, key in enumerate(keys):
        if progress:
            progress(key, n, len(keys))
        yield merge_group(session, plan, key)


def merge_group(session: Session, plan: MergePlan, key: str) -> GroupResult:
    cfg = session.cfg
    loras, kept = session.groups[key], session.preserved[key]
    te = session.is_text_encoder(key)
    scale = plan.scale(te)
    patches = [session.load(i, key) for i in loras]
    weights = [cfg.inputs[i].strength(te) * scale for i in loras]
    extra = [session.load(i, key).scaled(cfg.inputs[i].strength(te)) for i in kept]
    decision = plan.decisions.get(key)
    gram = InputGram(patches + extra)  # computed at most once, by SLERP or by the metrics below
    merged, exact, coefficients = None, True, []
    if patches:
        merged, exact, coefficients = _merge(patches, weights, decision, cfg, plan.preset,
                                             group_generator(cfg.seed, key), gram)
    for p in extra:
        merged = p if merged is None else _concat(merged, p)
    combined = merged
    merged, err = _refactor(merged, patches + extra, cfg, group_generator(cfg.seed, key + "#svd"))
    # retention against each LoRA at its *user* strength: auto-strength attenuation shows in it
    strengths = [cfg.inputs[i].strength(te) for i in loras] + [1.0] * len(extra)  # extras are already scaled
    if merged is combined and coefficients is not None:  # M = Σ a_k X_k exactly: everything from the Gram
        norms2, dots, norm2_merged = _combination_metrics(gram.matrix, coefficients + [1.0] * len(extra), strengths)
    else:
        norms2, dots, norm2_merged = _generic_metrics(merged, patches + extra, strengths)
    retention = {i: (dots[k] / norms2[k] if norms2[k] > 0 else 0.0) for k, i in enumerate(loras + kept)}
    rank = merged.rank if isinstance(merged, LowRank) else 0
    return GroupResult(key, merged, rank, err, retention, exact and err == 0.0,
                       dict(zip(loras + kept, norms2)), norm2_merged)


class InputGram:
    """The [n, n] matrix of ⟨X_i, X_j⟩ over a group's inputs, computed once, on first use: from the
    joint Gram of the factors when all are low-rank, else from float64 products."""

    def __init__(self, inputs: list[Patch]):
        self.inputs = inputs

    @cached_property
    def matrix(self) -> torch.Tensor:
        if all(isinstance(p, LowRank) for p in self.inputs):
            return joint_gram(self.inputs).matrix()
        prepared = [prepare(p) for p in self.inputs]
        return torch.tensor([[inner(a, b) for b in prepared] for a in prepared], dtype=torch.float64)


def _combination_metrics(gram: torch.Tensor, coefficients: list[float], strengths: list[float]):
    """(‖s_k X_k‖², ⟨M, s_k X_k⟩, ‖M‖²) for M = Σ a_k X_k, from the inputs' Gram matrix (exact, no
    product of factors of the merged patch is formed)."""
    a = torch.tensor(coefficients, dtype=torch.float64)
    s = torch.tensor(strengths, dtype=torch.float64)
    ga = gram @ a
    return (s * s * gram.diagonal()).tolist(), (s * ga).tolist(), float(a @ ga)


def _generic_metrics(merged: Patch, inputs: list[Patch], strengths: list[float]):
    m = prepare(merged)  # one float64 copy of the merged patch for all products
    contributions = [prepare(p.scaled(s)) for p, s in zip(inputs, strengths)]
    return [inner(c, c) for c in contributions], [inner(m, c) for c in contributions], inner(m, m)


def _merge(patches: list[Patch], weights: list[float], d: GroupDecision | None, cfg: MergeConfig, preset: Preset,
           generator: torch.Generator, gram: InputGram) -> tuple[Patch, bool, list[float] | None]:
    """(merged, exact, coefficients a with merged = Σ a_i ΔW_i exactly, or None)."""
    strategy = d.strategy if d else "weighted_sum"
    plain = cfg.sparsify is SparsifyMode.NONE and cfg.refine is RefineMode.NONE
    lowrank = all(isinstance(p, LowRank) for p in patches)
    if strategy in LINEAR and plain and lowrank:
        coefficients = linear_coefficients(weights, strategy)
        return _combine_lowrank(patches, coefficients), True, coefficients
    if strategy == "slerp" and plain and lowrank:
        n = len(patches)  # the merged LoRAs come first in the group's inputs
        coefficients = _slerp_coefficients(gram.matrix[:n, :n], weights)
        return _combine_lowrank(patches, coefficients), True, coefficients
    if cfg.basis_space and lowrank and cfg.refine is RefineMode.NONE and strategy in BASIS_SPACE:
        return _basis_merge(patches, weights, strategy, d, cfg, preset, generator), True, None
    try:
        merged = _dense_merge(patches, weights, strategy, d, cfg, preset, generator, torch.device(cfg.device))
    except torch.OutOfMemoryError:  # METHOD §10: fall back to the CPU for this group only
        merged = _dense_merge(patches, weights, strategy, d, cfg, preset, generator, torch.device("cpu"))
    return Dense(merged), False, None


def linear_coefficients(weights: list[float], strategy: str) -> list[float]:
    if strategy == "weighted_sum":
        return list(weights)
    if strategy == "weighted_average":
        total = sum(abs(w) for w in weights)
        return [w / total if total else 0.0 for w in weights]
    norm = sum(w * w for w in weights) ** 0.5
    return [w / norm if norm else 0.0 for w in weights]


def _slerp_coefficients(gram: torch.Tensor, weights: list[float]) -> list[float]:
    """SLERP/Karcher is a linear combination of its inputs: its coefficients from the exact Gram."""
    from .strategies import SlerpParams
    from .strategies.spherical import slerp_combination

    return slerp_combination(gram, weights, SlerpParams()).tolist()


def _combine_lowrank(patches: list[LowRank], coefficients: list[float]) -> LowRank:
    """Exact low-rank patch Σ c_i ΔW_i: up = [c_1·s_1·up_1 | …], down = [down_1; …], rank Σr_i."""
    up = torch.cat([p.up * (p.scale * c) for p, c in zip(patches, coefficients)], dim=1)
    down = torch.cat([p.down for p in patches], dim=0)
    return LowRank(up, down, 1.0, patches[0].shape)


def _concat(a: Patch, b: Patch) -> Patch:
    from .formats.align import add_patches

    return add_patches(a, b)


def _strategy_params(strategy, d, cfg, preset):
    """(params, sparsifier) of the planned strategy, from the decision and the options."""
    from . import strategies as S

    params = None
    if strategy == "ties":
        density = cfg.density or (d.density if d and d.density else None) or preset.dare_density  # user's first
        params = S.TiesParams(density=density, sign_method=(d.sign_method if d and d.sign_method else "total"))
    sparsifier = None
    if cfg.sparsify is not SparsifyMode.NONE:
        sparsifier = S.SparsifyParams(cfg.sparsify.value, cfg.density or preset.dare_density, cfg.dampening)
    return params, sparsifier


def _basis_merge(patches, weights, strategy, d, cfg, preset, generator) -> LowRank:
    """The strategy on the coefficients of a shared orthonormal basis: the result is exactly low-rank."""
    from .strategies import merge_in_basis, qr_basis

    params, sparsifier = _strategy_params(strategy, d, cfg, preset)
    basis = qr_basis([p.up * p.scale for p in patches], [p.down for p in patches])
    out = merge_in_basis(strategy, basis, weights, params, generator=generator, sparsifier=sparsifier)
    return LowRank(out.up.float().contiguous(), out.down.float().contiguous(), 1.0, patches[0].shape)


def _dense_merge(patches, weights, strategy, d, cfg, preset, generator, device) -> torch.Tensor:
    from .refine import RefineParams, refined_merge

    shape = _common_shape(patches)
    deltas = [p.dense().reshape(shape).to(device) for p in patches]
    params, sparsifier = _strategy_params(strategy, d, cfg, preset)
    refine = RefineParams.for_level(cfg.refine.value)
    merged = refined_merge(strategy, deltas, weights, params, generator=generator, refine=refine, sparsifier=sparsifier)
    return merged.float().cpu()


def _common_shape(patches: list[Patch]) -> tuple[int, ...]:
    shapes = [p.shape for p in patches if p.shape is not None]
    return max(shapes, key=len) if shapes else tuple(patches[0].dense().shape)


def _refactor(merged: Patch, inputs: list[Patch], cfg: MergeConfig, generator: torch.Generator) -> tuple[Patch, float]:
    """Write-ready low-rank form: exact when possible, else truncated SVD at the chosen rank."""
    if merged.shape is not None and len(merged.shape) == 1:
        return merged, 0.0  # norm/bias deltas stay dense
    total_rank = sum(p.rank if isinstance(p, LowRank) else min(_dims(p)) for p in inputs)
    if isinstance(merged, LowRank):
        if cfg.rank is None and cfg.rel_error is None:
            return merged, 0.0
        f = factorize_lowrank(merged, rank=cfg.rank, rel_error=cfg.rel_error)
        return f.patch, f.rel_error
    rank = cfg.rank if cfg.rank is not None else (None if cfg.rel_error is not None else total_rank)
    f = factorize_dense(merged.delta, rank=rank, rel_error=cfg.rel_error, shape=merged.shape, generator=generator)
    return f.patch, f.rel_error


def _dims(p: Patch) -> tuple[int, int]:
    d = p.dense()
    return int(d.shape[0]), int(d.numel() // d.shape[0])
