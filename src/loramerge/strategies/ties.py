"""TIES-Merging (with magnitude, DARE or DELLA trim) and magnitude pruning.

TIES, DARE-TIES and DELLA-TIES are one algorithm with a different first step:
``sparsify → elect_agreement → disjoint_mean`` (the parts live in `sparsify.py` and `signs.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loramerge.strategies._common import check_fraction, contributions
from loramerge.strategies.signs import SignMethod, disjoint_mean, elect_agreement
from loramerge.strategies.sparsify import Sparsifier, SparsifyParams, sparsify


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
