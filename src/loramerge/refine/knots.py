"""KnOTS: a shared SVD basis for all deltas of a group (METHOD §7).

Stoica et al., "Model merging with SVD to tie the KnOTS" (ICLR 2025): ``M = [ΔW_1 | … | ΔW_N]``
(``[out, N·in]``), truncated SVD ``M ≈ U Σ Vᵀ``; each delta becomes ``ΔW_i' = U Σ V_iᵀ = U Uᵀ ΔW_i``,
with ``V_i`` the rows of V belonging to delta i. At full rank this reproduces the inputs exactly.
The merge can then run on the aligned deltas (`knots`) or on the coefficients ``V_iᵀ`` in the
shared basis (`knots_basis_dense` + `loramerge.strategies.merge_in_basis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loramerge.strategies._common import check_inputs, normal, rows
from loramerge.strategies.basis import CoreBasis, numerical_rank


@dataclass(frozen=True)
class KnotsParams:
    """``rank``: at most this many shared directions (paper: ≤ 256); ``oversample`` and
    ``power_iters`` tune the seeded randomized SVD used when ``rank`` is below half the smaller side
    of M (otherwise the SVD is exact)."""

    rank: int = 256
    oversample: int = 10
    power_iters: int = 2

    def __post_init__(self) -> None:
        if self.rank < 1 or self.oversample < 0 or self.power_iters < 0:
            raise ValueError("KnotsParams: need rank ≥ 1, oversample ≥ 0, power_iters ≥ 0")


def truncated_svd(m: torch.Tensor, params: KnotsParams, generator: torch.Generator):
    """``U [rows, k]``, ``S [k]``, ``Vᵀ [k, cols]`` of the best rank-k approximation of ``m``
    (``k = min(rank, rows, cols)``); randomized (Halko et al. 2011) with CPU-drawn test vectors."""
    k = min(params.rank, *m.shape)
    if 2 * k >= min(m.shape):
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]
    width = min(k + params.oversample, min(m.shape))
    q, _ = torch.linalg.qr(m @ normal((m.shape[1], width), m, generator))
    for _ in range(params.power_iters):
        z, _ = torch.linalg.qr(m.T @ q)
        q, _ = torch.linalg.qr(m @ z)
    ub, s, vh = torch.linalg.svd(q.T @ m, full_matrices=False)
    return (q @ ub)[:, :k], s[:k], vh[:k]


def _joint(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([rows(d) for d in deltas], dim=1)


def knots(
    deltas: Sequence[torch.Tensor], weights: Sequence[float], params: KnotsParams, *, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Aligned deltas ``ΔW_i' = (UΣ) V_iᵀ = U Uᵀ ΔW_i`` in the shared truncated-SVD basis of
    ``[ΔW_1 | … | ΔW_N]`` (real KnOTS, not a Procrustes rotation). The weights do not enter."""
    check_inputs(deltas, weights, generator, "knots")
    u, _, _ = truncated_svd(_joint(deltas), params, generator)
    return tuple((u @ (u.T @ rows(d))).reshape(d.shape) for d in deltas)


def knots_basis_dense(deltas: Sequence[torch.Tensor], params: KnotsParams, *, generator: torch.Generator) -> CoreBasis:
    """The KnOTS basis of dense deltas as a `CoreBasis`: ``left = UΣ``, ``cores[i] = V_iᵀ``
    (``[k, in]``; conv deltas flattened to ``[out, in·kh·kw]``), ``right = None``. Directions with
    zero singular value are dropped, so ``ΔW_i' = left @ cores[i]``."""
    if not deltas:
        raise ValueError("knots_basis_dense: need at least one delta")
    joint = _joint(deltas)
    u, s, vh = truncated_svd(joint, params, generator)
    k = numerical_rank(s, joint.shape)
    width = rows(deltas[0]).shape[1]
    cores = tuple(vh[:k, i * width : (i + 1) * width] for i in range(len(deltas)))
    return CoreBasis(u[:, :k] * s[:k], cores, None)
