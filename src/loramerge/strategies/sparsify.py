"""Sparsifiers: magnitude trim (TIES), DARE, DELLA and their conflict-aware variants (METHOD §5).

Each takes the deltas of one group and returns new, sparsified deltas. They serve as preprocessing
for any strategy (`loramerge.strategies.merge(..., sparsifier=...)`) and as the trim step of TIES.
Random numbers are drawn on the CPU generator, one full-size uniform tensor per delta in input
order, and then moved: results are identical on every device and do not depend on the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loramerge.enums import Sparsifier
from loramerge.strategies._common import check_fraction, rows, uniform


@dataclass(frozen=True)
class SparsifyParams:
    """Parameters of a sparsifier.

    density: fraction kept (DARE: keep probability p; DELLA: mean keep probability).
    dampening: δ ∈ [0, 1]; survivors are rescaled by ``1/q``, ``q = keep + δ(1 − keep)``.
    epsilon: DELLA's spread ε of drop probabilities across a row's magnitude ranks.
    conflict_limit: conflict-aware variants fall back to the uniform one above this mask coverage.
    """

    method: Sparsifier = Sparsifier.DARE
    density: float = 0.7
    dampening: float = 0.0
    epsilon: float = 0.3
    conflict_limit: float = 0.4

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", Sparsifier(self.method))
        check_fraction("density", self.density)
        check_fraction("dampening", self.dampening)
        check_fraction("epsilon", self.epsilon)
        check_fraction("conflict_limit", self.conflict_limit)


def magnitude_trim(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``k = int(density · numel)`` largest-magnitude entries of ``t`` (per tensor), zero the rest.

    The same entries as PEFT's ``magnitude_based_pruning`` (``torch.topk``) whenever the k-th
    largest magnitude is not tied; found in linear time with ``kthvalue`` (a full top-k of a
    37M-entry FLUX weight takes seconds). Entries tied at the threshold are kept in index order.
    """
    return TrimThreshold.of(t, density).apply(t)


@dataclass
class TrimThreshold:
    """The magnitude trim of one tensor as a rule that applies to its rows in order: keep entries
    above `value`, and the first `tied` entries equal to it (index order). Applying it to the row
    blocks of a tensor one after another keeps exactly the entries `magnitude_trim` keeps."""

    value: float | None  # None: keep everything (density 1)
    tied: int  # entries at the threshold still to keep

    @classmethod
    def of(cls, t: torch.Tensor, density: float) -> TrimThreshold:
        if density >= 1.0:
            return cls(None, 0)
        k = int(density * t.numel())
        if k <= 0:
            return cls(math.inf, 0)
        mag = t.abs().reshape(-1)
        threshold = float(torch.kthvalue(mag, mag.numel() - k + 1).values)
        return cls(threshold, k - int((mag > threshold).sum()))

    def apply(self, block: torch.Tensor) -> torch.Tensor:
        """`block` (the next rows of the tensor) trimmed; the tie budget is used up as it goes."""
        if self.value is None:
            return block.clone()
        mag = block.abs().reshape(-1)
        keep = mag > self.value
        if self.tied > 0:
            tied = torch.nonzero(mag == self.value).reshape(-1)[: self.tied]
            keep[tied] = True
            self.tied -= int(tied.numel())
        return torch.where(keep.reshape(block.shape), block, torch.zeros_like(block))


def _rescaled(t: torch.Tensor, keep_prob: torch.Tensor, draw: torch.Tensor, dampening: float) -> torch.Tensor:
    """Entries with ``draw < keep_prob`` survive, divided by ``keep + δ(1 − keep)``; others are 0."""
    q = keep_prob + dampening * (1.0 - keep_prob)
    kept = (draw < keep_prob) & (q > 0)
    return torch.where(kept, t / torch.where(q > 0, q, torch.ones_like(q)), torch.zeros_like(t))


def dare(t: torch.Tensor, density: float, dampening: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: keep each entry with probability p = ``density``, rescale survivors by ``1/q``,
    ``q = p + δ(1 − p)``. Yu et al., "Language Models are Super Mario" (ICML 2024)."""
    draw = uniform(t.shape, t, generator)
    keep = torch.full_like(t, float(density))
    return _rescaled(t, keep, draw, dampening)


def della_keep_probability(t: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """Per-entry keep probability of DELLA (MAGPRUNE), shaped like ``t``.

    Within each row (dim 0; the rest flattened) entries are ranked by magnitude, rank 0 = largest;
    ``p_drop = p_min + (ε/n_cols)·rank`` with ``p_min = 1 − p − ε/2``. ε is capped at
    ``2·min(p, 1 − p)`` so that every probability stays in [0, 1] and the mean keep rate is the
    density (METHOD §5 writes ``p_min = max(1 − p − ε/2, 0)``; the cap gives the same numbers
    wherever that formula is in range, and keeps ``density = 1`` lossless).
    Deep et al., "DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based
    Sampling" (2024).
    """
    eps = min(epsilon, 2.0 * density, 2.0 * (1.0 - density))
    r = rows(t)
    n_cols = r.shape[1]
    order = torch.argsort(r.abs(), dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n_cols, device=t.device).expand_as(order))
    p_drop = (1.0 - density - eps / 2.0) + (eps / n_cols) * ranks.to(t.dtype)
    return (1.0 - p_drop).clamp(0.0, 1.0).reshape(t.shape)


def della(
    t: torch.Tensor, density: float, epsilon: float, dampening: float, generator: torch.Generator
) -> torch.Tensor:
    """DELLA: magnitude-aware dropout; survivors rescaled by ``1/(1 − p_drop)`` (with dampening δ)."""
    draw = uniform(t.shape, t, generator)
    return _rescaled(t, della_keep_probability(t, density, epsilon), draw, dampening)


def conflict_mask(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Positions where two or more contributions ``w_i ΔW_i`` are non-zero with opposite signs."""
    pos = torch.zeros(deltas[0].shape, dtype=torch.bool, device=deltas[0].device)
    neg = torch.zeros_like(pos)
    for d, w in zip(deltas, weights):
        c = d * w
        pos |= c > 0
        neg |= c < 0
    return pos & neg


def sparsify(
    deltas: Sequence[torch.Tensor], weights: Sequence[float], params: SparsifyParams, *, generator: torch.Generator
) -> list[torch.Tensor]:
    """Sparsify every delta of a group with ``params.method``; returns new tensors.

    Conflict-aware variants sparsify only the positions of `conflict_mask` (computed on the
    contributions ``w_i ΔW_i``) and leave the rest untouched; when that mask covers more than
    ``conflict_limit`` of the positions they act as the uniform variant (seed 000, §3.7).
    """
    method = params.method
    if method is Sparsifier.NONE:
        return list(deltas)
    if method is Sparsifier.MAGNITUDE:
        return [magnitude_trim(d, params.density) for d in deltas]
    uniform_method = Sparsifier.DARE if method in (Sparsifier.DARE, Sparsifier.DARE_CONFLICT) else Sparsifier.DELLA
    if uniform_method is Sparsifier.DARE:
        out = [dare(d, params.density, params.dampening, generator) for d in deltas]
    else:
        out = [della(d, params.density, params.epsilon, params.dampening, generator) for d in deltas]
    if method in (Sparsifier.DARE_CONFLICT, Sparsifier.DELLA_CONFLICT):
        mask = conflict_mask(deltas, weights)
        coverage = float(mask.float().mean()) if mask.numel() else 0.0
        if coverage <= params.conflict_limit:
            out = [torch.where(mask, s, d) for s, d in zip(out, deltas)]
    return out
