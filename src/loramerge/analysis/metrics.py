"""Pair metrics of two deltas of one group, computed from low-rank factors where possible.

Norms, dot products and cosines are exact from small products:
``⟨s_i B_i A_i, s_j B_j A_j⟩ = s_i s_j · trace((B_iᵀ B_j)(A_j A_iᵀ))`` in O((d+k)·r²).
Subspace overlaps use orthonormal bases from QR of ``up`` and ``downᵀ``. Sign metrics are
estimated on one seeded sample of positions shared by all LoRAs of the group (exact when the
group has fewer entries than the sample size); each sampled entry of ``B·A`` costs O(r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..patches import Dense, LowRank, Patch

NOISE_FLOOR = 0.05
DENSE_BASIS_ENERGY = 0.99  # numerically full-rank dense deltas: basis = top singular vectors holding 99 % of the energy
DENSE_BASIS_MAX = 64


def inner(a: Patch, b: Patch) -> float:
    """⟨ΔW_a, ΔW_b⟩_F, exact; never materialises a product of two low-rank patches."""
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        left = (a.up.T.double() @ b.up.double())          # [ra, rb]
        right = (b.down.double() @ a.down.T.double())     # [rb, ra]
        return float(torch.trace(left @ right)) * a.scale * b.scale
    if isinstance(a, LowRank):
        a, b = b, a
    if isinstance(b, LowRank):  # dense a, low-rank b: ⟨A, s·U V⟩ = s·Σ (Uᵀ A) ⊙ V
        mat = a.dense().reshape(b.up.shape[0], -1).double()
        return float(((b.up.T.double() @ mat) * b.down.double()).sum()) * b.scale
    return float((a.dense().double() * b.dense().reshape(a.dense().shape).double()).sum())


def basis(patch: Patch, side: str) -> torch.Tensor:
    """Orthonormal basis of the column ('left') or row ('right') space, float64."""
    if isinstance(patch, LowRank):
        mat = patch.up if side == "left" else patch.down.T
        q, r = torch.linalg.qr(mat.double())
        keep = r.diagonal().abs() > 1e-10 * max(float(r.diagonal().abs().max()) if r.numel() else 0.0, 1e-30)
        return q[:, keep]
    mat = patch.dense().reshape(patch.dense().shape[0], -1).double()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    tol = float(s[0]) * max(mat.shape) * torch.finfo(torch.float32).eps if s.numel() else 0.0
    k = int((s > tol).sum())
    if 2 * k > min(mat.shape):  # numerically full rank: keep the directions that hold the energy
        energy = s.pow(2).cumsum(0) / s.pow(2).sum().clamp_min(1e-300)
        k = min(int((energy < DENSE_BASIS_ENERGY).sum()) + 1, DENSE_BASIS_MAX, s.numel())
    return u[:, :k] if side == "left" else vh[:k].T


def bases(patch: Patch) -> tuple[torch.Tensor, torch.Tensor]:
    """(left, right) orthonormal bases of one patch."""
    return basis(patch, "left"), basis(patch, "right")


def overlap_of_bases(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean over left and right of ‖Q_aᵀ Q_b‖²_F / min(r_a, r_b), in [0, 1]."""
    values = []
    for qa, qb in zip(a, b):
        k = min(qa.shape[1], qb.shape[1])
        values.append(0.0 if k == 0 else float((qa.T @ qb).pow(2).sum()) / k)
    return sum(values) / 2


def subspace_overlap(a: Patch, b: Patch) -> float:
    """Subspace overlap of two patches (see `overlap_of_bases`)."""
    return overlap_of_bases(bases(a), bases(b))


def sample_positions(rows: int, cols: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) indices: every position when rows·cols ≤ n, else n drawn uniformly (CPU generator)."""
    total = rows * cols
    if total <= n:
        flat = torch.arange(total)
    else:
        flat = torch.randint(0, total, (n,), generator=generator)
    return flat // cols, flat % cols


SAMPLE_CHUNK = 8192  # positions gathered at once: bounds the temporary [chunk, r] row gathers


def sample_entries(patch: Patch, rows_idx: torch.Tensor, cols_idx: torch.Tensor) -> torch.Tensor:
    """Entries ΔW[r, c] of the flattened [out, in·k] matrix at the given positions (float64).

    Low-rank: row gathers of ``up`` and ``downᵀ`` and a rank-length dot product per entry, in
    chunks, so the temporaries stay small whatever the sample size."""
    if isinstance(patch, LowRank):
        up, down_t = patch.up.float(), patch.down.float().T.contiguous()
        out = torch.empty(rows_idx.numel(), dtype=torch.float64)
        for start in range(0, rows_idx.numel(), SAMPLE_CHUNK):
            r, c = rows_idx[start:start + SAMPLE_CHUNK], cols_idx[start:start + SAMPLE_CHUNK]
            out[start:start + r.numel()] = torch.einsum("nr,nr->n", up.index_select(0, r), down_t.index_select(0, c))
        return out * patch.scale
    mat = patch.dense().reshape(patch.dense().shape[0], -1)
    return mat[rows_idx, cols_idx].double()


def prepare(patch: Patch) -> Patch:
    """The patch with float64 factors and the scale folded in, so that repeated pair products do
    not convert again (float64 keeps norms and dots exact to well below 1e-5)."""
    if isinstance(patch, LowRank):
        return LowRank(patch.up.double() * patch.scale, patch.down.double(), 1.0, patch.shape)
    return Dense(patch.dense().double())


@dataclass(frozen=True, slots=True)  # thousands per merge: no per-instance dict
class PairStats:
    """Statistics of one pair (i, j) in one group (METHOD.md §2)."""

    i: int
    j: int
    dot: float
    cosine: float
    conflict: float           # sign disagreement over positions where both are non-zero
    weighted_conflict: float  # Σ_strong,disagree min(|a|,|b|) / Σ_strong min(|a|,|b|)
    conflict_strong: float    # sign disagreement over strong positions
    cosine_strong: float
    expected_conflict: float  # arccos(cos_strong)/π
    excess_conflict: float    # max(conflict_strong − expected, 0)
    overlap: float            # subspace overlap in [0, 1]
    sampled: int              # positions used for the sign metrics


@dataclass(frozen=True)
class Sampled:
    """One LoRA's sampled entries with what every pair reuses: signs and magnitudes."""

    values: torch.Tensor  # float64
    sign: torch.Tensor    # int8
    abs: torch.Tensor     # float64

    @classmethod
    def of(cls, values: torch.Tensor) -> Sampled:
        values = values.double()
        return cls(values, torch.sign(values).to(torch.int8), values.abs())


def pair_stats(i: int, j: int, a: Patch, b: Patch, norm2_a: float, norm2_b: float,
               va: torch.Tensor | Sampled, vb: torch.Tensor | Sampled, numel: int, overlap: float | None = None,
               dot: float | None = None) -> PairStats:
    """Pair statistics from exact norms/dot and the sampled entries `va`, `vb` (same positions)."""
    va, vb = (v if isinstance(v, Sampled) else Sampled.of(v) for v in (va, vb))
    dot = inner(a, b) if dot is None else dot
    denom = math.sqrt(norm2_a * norm2_b)
    cosine = dot / denom if denom > 0 else 0.0
    product = va.sign * vb.sign  # -1: both non-zero and disagreeing, +1: agreeing, 0: one is zero
    disagree = product < 0
    conflict = _ratio(disagree.sum(), product.count_nonzero())
    eps = NOISE_FLOOR * max(math.sqrt(norm2_a / numel), math.sqrt(norm2_b / numel))
    weight = torch.minimum(va.abs, vb.abs)
    strong = weight > eps  # |a| > eps and |b| > eps
    strong_disagree = strong & disagree
    # masked sums as dot products with 0/1 vectors (BLAS), not boolean indexing
    s_mask, sd_mask = strong.to(torch.float64), strong_disagree.to(torch.float64)
    weighted = _ratio(weight @ sd_mask, weight @ s_mask)
    conflict_strong = _ratio(strong_disagree.sum(), strong.sum())
    sa, sb = va.values * s_mask, vb.values * s_mask  # the strong entries, zeros elsewhere
    d = float(sa.norm() * sb.norm())
    cos_strong = float(sa @ sb) / d if d > 0 else cosine
    expected = math.acos(max(-1.0, min(1.0, cos_strong))) / math.pi
    return PairStats(i, j, dot, cosine, conflict, weighted, conflict_strong, cos_strong, expected,
                     max(conflict_strong - expected, 0.0), subspace_overlap(a, b) if overlap is None else overlap,
                     int(va.values.numel()))


def _ratio(num, den) -> float:
    den = float(den)
    return float(num) / den if den > 0 else 0.0
