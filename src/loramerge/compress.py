"""Low-rank factorisation of patches: exact for low-rank inputs, truncated SVD for dense ones.

`up = U·√Σ`, `down = √Σ·Vᵀ`, scale 1 (alpha = rank), so every client's `alpha/rank` is 1.
The achieved relative Frobenius error is returned with every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .patches import Dense, LowRank, Patch


@dataclass(frozen=True)
class Factorized:
    patch: LowRank
    rel_error: float  # ‖ΔW − up·down‖_F / ‖ΔW‖_F


def choose_rank(singular: torch.Tensor, rank: int | None, rel_error: float | None) -> int:
    """Smallest rank whose truncation error is ≤ rel_error (or the given rank), at least 1."""
    n = int(singular.numel())
    if rank is not None:
        return max(1, min(rank, n))
    if rel_error is None:
        return max(1, n)
    energy = singular.double().pow(2)
    total = float(energy.sum())
    if total == 0.0:
        return 1
    tail = torch.flip(torch.cumsum(torch.flip(energy, [0]), 0), [0])  # tail[k] = Σ_{i≥k} σ_i²
    ok = (tail / total).sqrt() <= rel_error
    idx = torch.nonzero(ok)
    return max(1, int(idx[0]) if idx.numel() else n)


def factorize_dense(
    delta: torch.Tensor,
    *,
    rank: int | None = None,
    rel_error: float | None = 1e-6,
    shape: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
) -> Factorized:
    """Truncated SVD of a dense ΔW (conv kernels flattened to [out, in·kh·kw]).

    With a fixed `rank` at most half the smaller dimension and a `generator`, a seeded randomized
    SVD (Halko et al. 2011: oversampling 10, two power iterations) replaces the full one.
    """
    shape = tuple(shape or delta.shape)
    mat = delta.reshape(delta.shape[0], -1).float()
    randomized = rank is not None and generator is not None and 2 * rank <= min(mat.shape)
    if rank is not None and generator is not None and randomized:
        u, s, vh = randomized_svd(mat, rank, generator)
    else:
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    k = min(choose_rank(s, rank, rel_error), s.numel())
    root = s[:k].sqrt()
    up, down = u[:, :k] * root, root[:, None] * vh[:k]
    total = float(mat.double().norm())
    if randomized:  # the tail of the spectrum is unknown: measure the residual itself
        residual = float((mat - up @ down).double().norm())
    else:
        residual = float(s[k:].double().pow(2).sum().sqrt())
    err = residual / total if total > 0 else 0.0
    return Factorized(LowRank(up.contiguous(), down.contiguous(), 1.0, shape), err)


def randomized_svd(
    mat: torch.Tensor, rank: int, generator: torch.Generator, *, oversample: int = 10, power_iters: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` SVD by random projection; the test matrix is drawn on the CPU generator so the
    result does not depend on the device."""
    k = min(rank + oversample, min(mat.shape))
    omega = torch.randn(mat.shape[1], k, generator=generator).to(mat.device, mat.dtype)
    q, _ = torch.linalg.qr(mat @ omega)
    for _ in range(power_iters):
        q, _ = torch.linalg.qr(mat.T @ q)
        q, _ = torch.linalg.qr(mat @ q)
    u, s, vh = torch.linalg.svd(q.T @ mat, full_matrices=False)
    return (q @ u)[:, :rank], s[:rank], vh[:rank]


def factorize_lowrank(patch: LowRank, *, rank: int | None = None, rel_error: float | None = None) -> Factorized:
    """Exact SVD of scale·up@down through QR of the factors, O((d+k)·r²); then optional truncation."""
    qu, u, s, vh, qd = _factor_svd(patch)
    k = choose_rank(s, rank if rank is not None else (None if rel_error is not None else patch.rank), rel_error)
    root = s[:k].sqrt()
    up = (qu @ u[:, :k]) * root
    down = root[:, None] * (vh[:k] @ qd.T)
    norm = float(s.double().pow(2).sum().sqrt())
    err = float(s[k:].double().pow(2).sum().sqrt()) / norm if norm > 0 else 0.0
    return Factorized(LowRank(up.contiguous(), down.contiguous(), 1.0, patch.shape), err)


def _factor_svd(patch: LowRank) -> tuple[torch.Tensor, ...]:
    """(Q_up, U, S, Vh, Q_down) with scale·up@down = (Q_up U) diag(S) (Vh Q_downᵀ): QR of each factor
    and the SVD of the small r×r product of the triangular parts; no dense ΔW."""
    qu, ru = torch.linalg.qr(patch.up * patch.scale)
    qd, rd = torch.linalg.qr(patch.down.T)
    u, s, vh = torch.linalg.svd(ru @ rd.T, full_matrices=False)
    return qu, u, s, vh, qd


def svd_of(patch: Patch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, Vh) of a patch's ΔW, conv kernels flattened: exact from the factors of a
    low-rank patch (S has `rank` values), a full SVD of a dense one."""
    if isinstance(patch, LowRank):
        qu, u, s, vh, qd = _factor_svd(patch)
        return qu @ u, s, vh @ qd.T
    mat = patch.delta.reshape(patch.delta.shape[0], -1).float()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    return u, s, vh


def to_lowrank(patch: Patch, *, rank: int | None = None, rel_error: float | None = 1e-6) -> Factorized:
    if isinstance(patch, LowRank):
        if rank is None:
            return Factorized(patch, 0.0)
        return factorize_lowrank(patch, rank=rank)
    assert isinstance(patch, Dense)
    return factorize_dense(patch.delta, rank=rank, rel_error=rel_error)
