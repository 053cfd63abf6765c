"""Pass 2, the merge engine: executes the plan, one group's tensors in memory at a time.

Each group's patches are read again, merged on the path the plan chose for it ("exact": a linear
combination written as concatenated factors; "basis": the strategy on shared-basis coefficients;
"dense": the strategy on materialised deltas) and brought to a write-ready low-rank form.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch

from . import strategies
from .analysis.gram import joint_gram
from .analysis.metrics import inner, prepare
from .analysis.stats import GroupStats
from .compress import factorize_dense, factorize_lowrank
from .decide import GroupDecision
from .enums import Progress, RefineLevel
from .errors import OptionError
from .formats.align import add_patches
from .inputs import Inputs
from .numerics import group_maths
from .patches import Dense, LowRank, Patch
from .plan import MergePlan
from .refine import RefineParams, refined_merge
from .rng import group_generator
from .spool import PatchLike
from .threads import ordered_map


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
    floor_scale: float = 1.0  # the retention floor's factor on this group (measured rules' averaged groups)


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "privateuseone")  # what torch computes on (privateuseone: DirectML)


def check_device(name: str) -> torch.device:
    """The torch device `name` names, refused before any work when torch cannot compute on it here
    (an unknown name, a CUDA device on a CPU-only torch, an index past the devices present)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise OptionError(
            f"--device {name!r} is not a device; choose one of {', '.join(DEVICE_TYPES[:4])} "
            f"(with an index: cuda:1); available here: {', '.join(available_devices())}"
        )
    try:
        torch.empty(1, device=device)  # the one device-agnostic test: what fails here fails in the merge
    except (AssertionError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise OptionError(
            f"--device {name}: torch {torch.__version__} cannot compute there ({reason}); "
            f"use --device cpu or one of the devices available here ({', '.join(available_devices())})"
        ) from None
    return device


def available_devices() -> list[str]:
    """The devices this torch build can compute on in this process."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        found.append("xpu")
    return found


def pass2(
    inputs: Inputs,
    plan: MergePlan,
    progress: Progress | None = None,
    *,
    threads: int = 1,
    stats: Mapping[str, GroupStats] | None = None,
) -> Iterator[GroupResult]:
    """Every group merged, `threads` at a time, yielded in key order. `stats` (pass 1's, optional):
    their inner products are reused instead of recomputed from the factors."""
    keys, stats = inputs.keys, stats or {}

    def merge(key: str) -> GroupResult:
        return merge_group(inputs, plan, key, stats.get(key))

    for n, (key, result) in enumerate(zip(keys, ordered_map(merge, keys, threads))):
        if progress:
            progress("merge", key, n, len(keys))
        yield result


def merge_group(inputs: Inputs, plan: MergePlan, key: str, stats: GroupStats | None = None) -> GroupResult:
    with group_maths(key, "merge"):
        return _merge_group(inputs, plan, key, stats)


def _merge_group(inputs: Inputs, plan: MergePlan, key: str, stats: GroupStats | None) -> GroupResult:
    cfg = inputs.cfg
    g = inputs.group(key)
    te, scale = g.text_encoder, plan.scale(g.text_encoder)
    # auto-strength scales the inputs (paper rules: inert for scale-invariant strategies) or, with
    # `scale_after`, the merged result (so that every reported scale acts; METHOD §6, DECISIONS.md)
    decision = plan.decisions.get(key)
    pre, post = (1.0, scale) if plan.scale_after else (scale, 1.0)
    if plan.scale_after and decision is not None and strategies.get(decision.strategy).scale_invariant:
        post = 1.0  # an average already keeps about one LoRA's energy: the sum's rule is not for it
    weights = [cfg.inputs[i].strength(te) * pre for i in g.loras]
    extra = [p.scaled(cfg.inputs[i].strength(te)) for i, p in zip(g.kept, g.kept_patches)]
    gram = InputGram(g.patches + extra)  # computed at most once, by SLERP or by the metrics below
    if stats is not None and not extra and tuple(stats.loras) == tuple(g.loras):
        gram.matrix = stats.inner_matrix()  # pass 1 measured these very products
    merged: Patch | None = None
    exact = True
    floor_scale = 1.0
    coefficients: list[float] | None = []
    if g.patches:
        assert decision is not None, f"{key}: no plan for a group with LoRAs to merge"
        merged, exact, coefficients = execute(
            decision, g.patches, weights, gram, cfg.device, group_generator(cfg.seed, key)
        )
        if plan.retention_floor > 0 and coefficients is not None and strategies.get(decision.strategy).scale_invariant:
            floor_scale = retention_floor_scale(
                gram.matrix[: len(coefficients), : len(coefficients)],
                coefficients,
                weights,
                plan.retention_floor,
                plan.preset.opposing_cos,
            )
            post *= floor_scale
        post *= cfg.multiplier  # λ scales the merge itself: scale-invariant strategies ignore the weights
        if post != 1.0:
            merged = merged.scaled(post)
            coefficients = None if coefficients is None else [c * post for c in coefficients]
    for p in extra:
        merged = p if merged is None else add_patches(merged, p)
    assert merged is not None
    combined = merged
    rank, rel_error = (decision.rank, decision.rel_error) if decision else (plan.rank, plan.rel_error)
    merged, err = _refactor(merged, g.patches + extra, rank, rel_error, group_generator(cfg.seed, key + "#svd"))
    # retention against each LoRA at its *user* strength: auto-strength attenuation shows in it
    strengths = [cfg.inputs[i].strength(te) for i in g.loras] + [1.0] * len(extra)  # extras are already scaled
    if merged is combined and coefficients is not None:  # M = Σ a_k X_k exactly: everything from the Gram
        norms2, dots, norm2_merged = _combination_metrics(gram.matrix, coefficients + [1.0] * len(extra), strengths)
    else:
        norms2, dots, norm2_merged = _generic_metrics(merged, g.patches + extra, strengths)
    everyone = g.loras + g.kept
    retention = {i: (dots[k] / norms2[k] if norms2[k] > 0 else 0.0) for k, i in enumerate(everyone)}
    out_rank = merged.rank if isinstance(merged, LowRank) else 0
    return GroupResult(
        key,
        merged,
        out_rank,
        err,
        retention,
        exact and err == 0.0,
        dict(zip(everyone, norms2)),
        norm2_merged,
        floor_scale,
    )


def group_retentions(
    gram: torch.Tensor, coefficients: list[float], weights: list[float]
) -> tuple[list[float | None], list[float]]:
    """Per LoRA of M = Σ a_k X_k: retention ⟨M, w_k X_k⟩/‖w_k X_k‖² (None where w_k X_k = 0) and
    energy ‖w_k X_k‖², from the group's Gram."""
    a = torch.tensor(coefficients, dtype=torch.float64)
    ret: list[float | None] = []
    energy: list[float] = []
    for k, w in enumerate(weights):
        g = float(gram[k, k])
        energy.append(w * w * g)
        ret.append(float(a @ gram[:, k]) / (w * g) if w != 0 and g > 0 else None)
    return ret, energy


def retention_floor_scale(
    gram: torch.Tensor, coefficients: list[float], weights: list[float], floor: float, opposing_cos: float
) -> float:
    """The factor c ≥ 1 by which an averaged group M = Σ a_k X_k is scaled so that every LoRA keeps at
    least `floor` of itself (`floor_factor` of its `group_retentions`). Only for LoRAs that compose
    (`composes`): a group with an opposing pair keeps its average, since scaling up a partial
    cancellation would restore the stronger LoRA, not the cancelled one."""
    if not composes(gram, weights, opposing_cos):
        return 1.0
    return floor_factor(group_retentions(gram, coefficients, weights)[0], floor)


def composes(gram: torch.Tensor, weights: list[float], opposing_cos: float) -> bool:
    """No pair of the group's LoRAs (zero weight or zero norm left out) has cosine below `opposing_cos`."""
    live = [k for k, w in enumerate(weights) if w != 0 and float(gram[k, k]) > 0]
    return not any(
        float(gram[i, j]) < opposing_cos * math.sqrt(float(gram[i, i]) * float(gram[j, j]))
        for n, i in enumerate(live)
        for j in live[n + 1 :]
    )


def floor_factor(retentions: list[float | None], floor: float) -> float:
    """c = min(floor / min_k ret_k, 1 / max_k ret_k), at least 1: every LoRA lifted to `floor` without
    any going past 1 (its user strength); 1 where a LoRA is cancelled (ret ≤ 0) or all keep `floor`."""
    live = [r for r in retentions if r is not None]
    if not live or min(live) <= 0 or min(live) >= floor:
        return 1.0
    return max(1.0, min(floor / min(live), 1.0 / max(live)))


def execute(
    d: GroupDecision,
    patches: list[Patch],
    weights: list[float],
    gram: InputGram,
    device: str,
    generator: torch.Generator,
) -> tuple[Patch, bool, list[float] | None]:
    """The planned merge of one group: (merged, exact, coefficients a with merged = Σ a_i ΔW_i, or None)."""
    strategy = strategies.get(d.strategy)
    if d.path == "exact":
        assert strategy.coefficients is not None
        n = len(patches)  # the merged LoRAs come first in the group's inputs
        coefficients = strategy.coefficients(weights, lambda: gram.matrix[:n, :n], d.params)
        return _combine_lowrank(patches, coefficients), True, coefficients
    if d.path == "basis":
        return _basis_merge(patches, weights, d, generator), True, None
    try:
        merged = _dense_merge(patches, weights, d, generator, torch.device(device))
    except torch.OutOfMemoryError:  # METHOD §10: fall back to the CPU for this group only
        merged = _dense_merge(patches, weights, d, generator, torch.device("cpu"))
    return Dense(merged), False, None


class InputGram:
    """The [n, n] matrix of ⟨X_i, X_j⟩ over a group's inputs, computed once, on first use: from the
    joint Gram of the factors when all are low-rank, else from float64 products."""

    def __init__(self, inputs: list[Patch]):
        self.inputs = inputs

    @cached_property
    def matrix(self) -> torch.Tensor:
        if all(isinstance(p, LowRank) for p in self.inputs):
            return joint_gram([p for p in self.inputs if isinstance(p, LowRank)]).matrix()
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


def _combine_lowrank(patches: list[Patch], coefficients: list[float]) -> LowRank:
    """Exact low-rank patch Σ c_i ΔW_i: up = [c_1·s_1·up_1 | …], down = [down_1; …], rank Σr_i."""
    lows = [p for p in patches if isinstance(p, LowRank)]
    assert len(lows) == len(patches), "the exact path takes low-rank inputs only"
    up = torch.cat([p.up * (p.scale * c) for p, c in zip(lows, coefficients)], dim=1)
    down = torch.cat([p.down for p in lows], dim=0)
    return LowRank(up, down, 1.0, lows[0].shape)


def _basis_merge(patches: list[Patch], weights: list[float], d: GroupDecision, generator: torch.Generator) -> LowRank:
    """The strategy on the coefficients of a shared orthonormal basis: the result is exactly low-rank."""
    lows = [p for p in patches if isinstance(p, LowRank)]
    basis = strategies.qr_basis([p.up * p.scale for p in lows], [p.down for p in lows])
    out = strategies.merge_in_basis(d.strategy, basis, weights, d.params, generator=generator, sparsifier=d.sparsifier)
    return LowRank(out.up.float().contiguous(), out.down.float().contiguous(), 1.0, lows[0].shape)


ROW_BLOCK_ENTRIES = 1 << 22  # entries of all LoRAs' row blocks together (16 MB of float32)


def _dense_merge(
    patches: list[Patch], weights: list[float], d: GroupDecision, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    shape = _common_shape(patches)
    strategy = strategies.get(d.strategy)
    numel = math.prod(shape)
    if strategy.by_rows is not None and d.sparsifier is None and d.refine is RefineLevel.NONE and len(shape) > 1:
        # row blocks: memory = the output + one ΔW_i + one block of each, however many LoRAs
        block_rows = max(1, ROW_BLOCK_ENTRIES // (len(patches) * (numel // shape[0])))
        readers = [_row_reader(p, shape, device) for p in patches]
        merged = strategy.by_rows(readers, shape, weights, d.params, block_rows=block_rows)
        if merged is not None:
            return merged.float().cpu()
    deltas = [p.dense().reshape(shape).to(device) for p in patches]
    merged = refined_merge(
        d.strategy,
        deltas,
        weights,
        d.params,
        generator=generator,
        refine=RefineParams.for_level(d.refine),
        sparsifier=d.sparsifier,
    )
    return merged.float().cpu()


def _row_reader(p: Patch, shape: tuple[int, ...], device: torch.device):
    """(r0, r1) -> rows r0:r1 of ΔW (in `shape`), computed from the factors for a low-rank patch."""
    tail = shape[1:]
    if isinstance(p, LowRank):
        return lambda r0, r1: ((p.up[r0:r1] * p.scale) @ p.down).reshape(r1 - r0, *tail).to(device)
    delta = p.dense().reshape(shape)
    return lambda r0, r1: delta[r0:r1].to(device)


def _common_shape(patches: list[Patch]) -> tuple[int, ...]:
    shapes = [p.shape for p in patches if p.shape is not None]
    return max(shapes, key=len) if shapes else tuple(patches[0].dense().shape)


def _refactor(
    merged: Patch, inputs: list[Patch], rank: int | None, rel_error: float | None, generator: torch.Generator
) -> tuple[Patch, float]:
    """Write-ready low-rank form: exact when possible, else truncated SVD at the chosen rank."""
    if merged.shape is not None and len(merged.shape) == 1:
        return merged, 0.0  # norm/bias deltas stay dense
    if isinstance(merged, LowRank):
        if rank is None and rel_error is None:
            return merged, 0.0
        f = factorize_lowrank(merged, rank=rank, rel_error=rel_error)
        return f.patch, f.rel_error
    total_rank = sum(p.rank if isinstance(p, LowRank) else min(_dims(p)) for p in inputs)
    target = rank if rank is not None else (None if rel_error is not None else total_rank)
    f = factorize_dense(merged.delta, rank=target, rel_error=rel_error, shape=merged.shape, generator=generator)
    return f.patch, f.rel_error


def _dims(p: Patch) -> tuple[int, int]:
    d = p.dense()
    return int(d.shape[0]), int(d.numel() // d.shape[0])
