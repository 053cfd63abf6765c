"""Basis-space merging: run a strategy on the coefficients of a shared basis, get exact low rank.

Weight-space TIES/DARE results are essentially full-rank, so writing them as a LoRA throws much of
them away. Here each delta is written ``ΔW_i = L · C_i · R`` with shared ``L`` (``[out, a]``) and
``R`` (``[b, in]``) and a small core ``C_i`` (``[a, b]``); the strategy merges the cores, and the
result ``L · C · R`` has rank ≤ min(a, b) ≤ Σ r_i by construction.

Two bases, both built from the LoRA factors ``up_i`` (``[out, r_i]``, scale folded in) and
``down_i`` (``[r_i, in]``; conv factors are flattened to these shapes):

* `qr_basis`: ``L = Q_u``, ``R = Q_dᵀ`` from QR of ``[up_1 | … | up_N]`` and ``[down_1ᵀ | … | down_Nᵀ]``;
  cores ``C_i = R_u[:, i] R_d[:, i]ᵀ``, by default rotated to an order-free basis of the same spans.
  Linear strategies and SLERP give exactly the weight-space result (the bases are orthonormal).
* `knots_basis`: KnOTS' shared SVD basis of ``[ΔW_1 | … | ΔW_N]`` computed exactly from the QR cores:
  ``L = Q_u U Σ``, cores ``C_i = V_iᵀ`` (coordinates in the order-free ``Q_d``), ``R = Q_dᵀ``. Stoica et al.,
  "Model merging with SVD to tie the KnOTS" (ICLR 2025). The dense-delta variant is
  `loramerge.refine.knots.knots_basis_dense`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loramerge.patches import LowRank
from loramerge.strategies.compose import merge
from loramerge.strategies.registry import Strategy
from loramerge.strategies.sparsify import SparsifyParams


@dataclass(frozen=True, eq=False)
class CoreBasis:
    """``ΔW_i = left @ cores[i] @ right`` (``right=None`` means the identity)."""

    left: torch.Tensor
    cores: tuple[torch.Tensor, ...]
    right: torch.Tensor | None = None

    def delta(self, i: int) -> torch.Tensor:
        """Dense ``ΔW_i`` as ``[out, in]``."""
        m = self.left @ self.cores[i]
        return m if self.right is None else m @ self.right


def _flat_factors(ups: Sequence[torch.Tensor], downs: Sequence[torch.Tensor]):
    if len(ups) != len(downs) or not ups:
        raise ValueError(f"need one down per up and at least one pair, got {len(ups)} ups and {len(downs)} downs")
    us = [u.reshape(u.shape[0], -1) for u in ups]
    ds = [d.reshape(d.shape[0], -1) for d in downs]
    for i, (u, d) in enumerate(zip(us, ds)):
        if u.shape[1] != d.shape[0] or u.shape[0] != us[0].shape[0] or d.shape[1] != ds[0].shape[1]:
            raise ValueError(
                f"LoRA {i}: up {tuple(ups[i].shape)} and down {tuple(downs[i].shape)} do not fit each "
                f"other or LoRA 0 (up {tuple(ups[0].shape)}, down {tuple(downs[0].shape)})"
            )
    return us, ds


def qr_basis(ups: Sequence[torch.Tensor], downs: Sequence[torch.Tensor], *, symmetric: bool = True) -> CoreBasis:
    """Orthonormal shared basis from QR of the concatenated factors; exact:
    ``left @ cores[i] @ right = up_i @ down_i``.

    The plain QR basis depends on the order of the LoRAs (the cores are triangular blocks: LoRA 1
    lives in the first r_1 coefficients, the last LoRA is spread over all), which makes trim and
    sign votes on the coefficients order-dependent. With ``symmetric`` (default) both bases are
    rotated, inside the same spans, to the joint singular vectors of ``[C_1 | … | C_N]`` and
    ``[C_1ᵀ | … | C_Nᵀ]``, which do not depend on the order (up to signs, to which element-wise
    strategies are equivariant).
    """
    us, ds = _flat_factors(ups, downs)
    q_u, r_u = torch.linalg.qr(torch.cat(us, dim=1))
    q_d, r_d = torch.linalg.qr(torch.cat([d.T for d in ds], dim=1))
    cores, start = [], 0
    for u in us:
        cols = slice(start, start + u.shape[1])
        cores.append(r_u[:, cols] @ r_d[:, cols].T)
        start += u.shape[1]
    if symmetric:
        rot_u = torch.linalg.svd(torch.cat(cores, dim=1), full_matrices=True)[0]
        rot_d = torch.linalg.svd(torch.cat([c.T for c in cores], dim=1), full_matrices=True)[0]
        cores = [rot_u.T @ c @ rot_d for c in cores]
        q_u, q_d = q_u @ rot_u, q_d @ rot_d
    return CoreBasis(q_u, tuple(cores), q_d.T)


def numerical_rank(s: torch.Tensor, shape: Sequence[int]) -> int:
    """Number of singular values above ``s_max · max(shape) · eps`` (NumPy's matrix_rank rule)."""
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > s[0] * max(shape) * torch.finfo(s.dtype).eps).sum())


def knots_basis(ups: Sequence[torch.Tensor], downs: Sequence[torch.Tensor], rank: int | None = None) -> CoreBasis:
    """KnOTS basis from the factors: SVD of the concatenated QR cores ``[C_1 | … | C_N] = U Σ Vᵀ``,
    truncated to ``rank`` (default: all non-zero singular values, which reproduces every delta)."""
    qr = qr_basis(ups, downs, symmetric=True)
    joint = torch.cat(qr.cores, dim=1)
    u, s, vh = torch.linalg.svd(joint, full_matrices=False)
    k = numerical_rank(s, joint.shape)
    k = k if rank is None else min(k, rank)
    width = qr.cores[0].shape[1]
    cores = tuple(vh[:k, i * width : (i + 1) * width] for i in range(len(qr.cores)))
    return CoreBasis(qr.left @ (u[:, :k] * s[:k]), cores, qr.right)


def factorize(left: torch.Tensor, core: torch.Tensor, right: torch.Tensor | None) -> LowRank:
    """Balanced factors of ``left @ core @ right`` via the SVD of the small core (``up = L U√Σ``,
    ``down = √Σ Vᵀ R``); numerically zero directions are dropped."""
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    k = numerical_rank(s, core.shape)
    root = s[:k].sqrt()
    up = left @ (u[:, :k] * root)
    down = root[:, None] * vh[:k]
    return LowRank(up, down if right is None else down @ right, 1.0, None)


def merge_in_basis(
    strategy: str | Strategy,
    basis: CoreBasis,
    weights: Sequence[float],
    params: object | None = None,
    *,
    generator: torch.Generator,
    sparsifier: SparsifyParams | None = None,
) -> LowRank:
    """Merge the cores of ``basis`` with ``strategy`` (trim, sign election, disjoint mean … act on
    the basis coefficients) and return the result as low-rank factors of rank ≤ min(a, b)."""
    core = merge(strategy, list(basis.cores), weights, params, generator=generator, sparsifier=sparsifier)
    return factorize(basis.left, core, basis.right)
