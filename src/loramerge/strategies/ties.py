"""TIES-Merging (with magnitude, DARE or DELLA trim) and magnitude pruning.

TIES, DARE-TIES and DELLA-TIES are one algorithm with a different first step:
``sparsify → elect_agreement → disjoint_mean`` (the parts live in `sparsify.py` and `signs.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from loramerge.strategies._common import check_fraction, contributions
from loramerge.strategies.signs import SignMethod, disjoint_mean, elect_agreement
from loramerge.strategies.sparsify import Sparsifier, SparsifyParams, TrimThreshold, sparsify


@dataclass(frozen=True)
class TiesParams:
    """Parameters of TIES.

    density: fraction each delta keeps in the trim step (per tensor).
    sign_method: ``total`` (sign of the sum) or ``frequency`` (sign of the count).
    weighted_vote: vote with the strength-weighted contributions ``w_i ΔW_i`` (default, METHOD §4);
        False votes with the raw trimmed deltas as PEFT and the reference do.
    columnwise: whole output rows vote as units (METHOD §7, refinement levels ``refine``/``full``).
    sparsifier: the trim step: ``magnitude`` (TIES; ``None`` means the same), ``dare`` (DARE-TIES),
        ``della`` (DELLA-TIES) or a conflict-aware variant; ``dampening``, ``epsilon`` and
        ``conflict_limit`` configure it.
    """

    density: float = 0.7
    sign_method: SignMethod = SignMethod.TOTAL
    weighted_vote: bool = True
    columnwise: bool = False
    sparsifier: Sparsifier = Sparsifier.MAGNITUDE
    dampening: float = 0.0
    epsilon: float = 0.3
    conflict_limit: float = 0.4

    def __post_init__(self) -> None:
        object.__setattr__(self, "sign_method", SignMethod(self.sign_method))
        trim = Sparsifier.MAGNITUDE if self.sparsifier is None else Sparsifier(self.sparsifier)
        object.__setattr__(self, "sparsifier", trim)
        check_fraction("density", self.density)

    def trim(self) -> SparsifyParams:
        """The sparsifier of the trim step as a `SparsifyParams`."""
        return SparsifyParams(self.sparsifier, self.density, self.dampening, self.epsilon, self.conflict_limit)


@dataclass(frozen=True)
class MagnitudePruneParams:
    """``density``: fraction of each delta kept (by magnitude, per tensor) before summing."""

    density: float = 0.7

    def __post_init__(self) -> None:
        check_fraction("density", self.density)


def sign_merge(deltas, weights, params: TiesParams) -> torch.Tensor:
    """Sign election and disjoint mean on already-sparsified deltas (TIES steps 2 and 3)."""
    contrib = contributions(deltas, weights)
    if params.weighted_vote:
        voters, vote_weights = contrib, torch.tensor([abs(w) for w in weights])
    else:
        voters, vote_weights = torch.stack(list(deltas)), torch.ones(len(deltas))
    agreement = elect_agreement(voters, vote_weights, params.sign_method, params.columnwise)
    return disjoint_mean(contrib, agreement)


def ties(deltas, weights, params: TiesParams, *, generator) -> torch.Tensor:
    """TIES-Merging: trim, elect sign, disjoint mean.

    1. Trim: each ΔW_i keeps its top ``density`` fraction by magnitude (or is sparsified by DARE /
       DELLA, which then replace the trim: DARE-TIES, DELLA-TIES).
    2. Elect: per position ``γ = sign(Σ v_i)`` (``total``) or ``sign(Σ ω_i sign v_i)`` (``frequency``),
       ties → +, with voters ``v_i = w_i ΔW_i``, ``ω_i = |w_i|`` (or ``v_i = ΔW_i``, ``ω_i = 1`` when
       ``weighted_vote`` is False, which reproduces PEFT ``merge_utils.ties`` exactly).
    3. Disjoint mean: ``M = Σ_{i: sign v_i = γ} w_i ΔW_i / #{i: sign v_i = γ}``.
    Yadav et al., "TIES-Merging: Resolving Interference When Merging Models" (NeurIPS 2023);
    DARE: Yu et al. (ICML 2024); DELLA: Deep et al. (2024).
    """
    trimmed = sparsify(deltas, weights, params.trim(), generator=generator)
    return sign_merge(trimmed, weights, params)


def magnitude_prune(deltas, weights, params: MagnitudePruneParams, *, generator) -> torch.Tensor:
    """Magnitude pruning: ``M = Σ w_i · trim(ΔW_i, density)``, trim = keep the top ``density``
    fraction by magnitude of each delta.

    The guide's "merge pruning" (seed 001) applied to each input before summing, as PEFT
    ``merge_utils.magnitude_prune`` does (and equal to it).
    """
    pruned = sparsify(deltas, weights, SparsifyParams(Sparsifier.MAGNITUDE, params.density), generator=generator)
    return contributions(pruned, weights).sum(dim=0)


RowBlock = Callable[[int, int], torch.Tensor]  # (r0, r1) -> rows r0:r1 of one ΔW_i, float32


def ties_by_rows(
    blocks: Sequence[RowBlock], shape: tuple[int, ...], weights, params: TiesParams, *, block_rows: int
) -> torch.Tensor | None:
    """`ties` with the magnitude trim, computed `block_rows` output rows at a time.

    Each ΔW_i is whole in memory once, alone, to find its trim threshold (`TrimThreshold`); then
    every step works on row blocks: the trim, the sign election and the disjoint mean are per
    entry (per row when ``columnwise``), so the result equals ``ties`` on the whole tensors while
    memory holds the output, one ΔW_i, and one block of every ΔW_i — not n whole deltas.
    None with a DARE/DELLA trim (they draw one whole-tensor random field per delta)."""
    if params.sparsifier is not Sparsifier.MAGNITUDE:
        return None
    trims = _thresholds(blocks, shape[0], params.density)
    return _assemble(shape, block_rows, lambda r0, r1: sign_merge(_trimmed(trims, blocks, r0, r1), weights, params))


def magnitude_prune_by_rows(
    blocks: Sequence[RowBlock], shape: tuple[int, ...], weights, params: MagnitudePruneParams, *, block_rows: int
) -> torch.Tensor:
    """`magnitude_prune` computed `block_rows` rows at a time (see `ties_by_rows`)."""
    trims = _thresholds(blocks, shape[0], params.density)
    return _assemble(shape, block_rows, lambda r0, r1: contributions(_trimmed(trims, blocks, r0, r1), weights).sum(0))


def _thresholds(blocks: Sequence[RowBlock], rows: int, density: float) -> list[TrimThreshold]:
    """Each ΔW_i's trim threshold, one whole ΔW_i in memory at a time."""
    return [TrimThreshold.of(block(0, rows), density) for block in blocks]


def _trimmed(thresholds: list[TrimThreshold], blocks: Sequence[RowBlock], r0: int, r1: int) -> list[torch.Tensor]:
    return [t.apply(block(r0, r1)) for t, block in zip(thresholds, blocks)]


def _assemble(shape: tuple[int, ...], block_rows: int, merge_rows: RowBlock) -> torch.Tensor:
    """The [shape] result of `merge_rows` over consecutive row blocks, in order (the trims' tie
    budgets are used up in index order)."""
    out: torch.Tensor | None = None
    for r0 in range(0, shape[0], block_rows):
        r1 = min(shape[0], r0 + block_rows)
        part = merge_rows(r0, r1)
        if out is None:
            out = torch.empty(shape, dtype=part.dtype, device=part.device)
        out[r0:r1] = part
    assert out is not None, "an empty tensor has no rows to merge"
    return out
