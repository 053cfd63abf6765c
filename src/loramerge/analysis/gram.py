"""The joint Gram of a group's low-rank patches: every norm, inner product and subspace overlap of
the group from two (Σr × Σr) float64 matrices.

For ``ΔW_i = U_i D_i`` (scale folded into ``U_i``), with ``U = [U_1 | … | U_n]`` and
``D = [D_1; …; D_n]``: ``G_up = UᵀU`` and ``G_down = D Dᵀ``. Then
``⟨ΔW_i, ΔW_j⟩ = Σ (G_up[i,j] ⊙ G_down[i,j])`` and ``‖Q_iᵀ Q_j‖²`` for orthonormal bases
``Q_i = U_i W_i`` of the spans is ``‖W_iᵀ G_up[i,j] W_j‖²`` with ``W_i`` from the eigenvectors of
``G_up[i,i]``. Both Grams are accumulated over row (column) chunks, so no float64 copy of a
factor is ever held whole: memory is the float32 factors plus Σr² numbers, whatever n is.
Products of float32 values are exact in float64, so the Grams are as exact as per-pair products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..patches import LowRank

CHUNK = 1024  # rows (columns) of the factors converted to float64 at once
GRAM_TOL = 1e-13  # eigenvalues of a factor Gram below this share of the largest are null directions


@dataclass(frozen=True)
class JointGram:
    up: torch.Tensor  # [Σr, Σr] float64, scale folded in
    down: torch.Tensor  # [Σr, Σr] float64
    blocks: tuple[slice, ...]

    def inner(self, i: int, j: int) -> float:
        bi, bj = self.blocks[i], self.blocks[j]
        return float((self.up[bi, bj] * self.down[bi, bj]).sum())

    def matrix(self) -> torch.Tensor:
        """[n, n] float64 matrix of all ⟨ΔW_i, ΔW_j⟩."""
        n = len(self.blocks)
        out = torch.empty(n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(i, n):
                out[i, j] = out[j, i] = self.inner(i, j)
        return out

    def whitening(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(left, right) maps ``W`` with ``Wᵀ G W = I`` on the non-null directions of patch i's factors."""
        b = self.blocks[i]
        return _whitening(self.up[b, b]), _whitening(self.down[b, b])

    def overlap(self, i: int, j: int, wi=None, wj=None) -> float:
        """Subspace overlap of patches i and j: mean over left/right of ‖Q_iᵀQ_j‖² / min(k_i, k_j)."""
        wi = self.whitening(i) if wi is None else wi
        wj = self.whitening(j) if wj is None else wj
        bi, bj = self.blocks[i], self.blocks[j]
        values = []
        for gram, a, b in ((self.up, wi[0], wj[0]), (self.down, wi[1], wj[1])):
            k = min(a.shape[1], b.shape[1])
            values.append(0.0 if k == 0 else float((a.T @ gram[bi, bj] @ b).pow(2).sum()) / k)
        return sum(values) / 2


def joint_gram(patches: list[LowRank]) -> JointGram:
    ranks = [p.rank for p in patches]
    starts = [sum(ranks[:k]) for k in range(len(ranks) + 1)]
    total = starts[-1]
    g_up = torch.zeros(total, total, dtype=torch.float64)
    g_down = torch.zeros(total, total, dtype=torch.float64)
    rows, cols = patches[0].up.shape[0], patches[0].down.shape[1]
    for r0 in range(0, rows, CHUNK):
        chunk = torch.cat([p.up[r0 : r0 + CHUNK].double() * p.scale for p in patches], dim=1)
        g_up += chunk.T @ chunk
    for c0 in range(0, cols, CHUNK):
        chunk = torch.cat([p.down[:, c0 : c0 + CHUNK].double() for p in patches], dim=0)
        g_down += chunk @ chunk.T
    return JointGram(g_up, g_down, tuple(slice(starts[k], starts[k + 1]) for k in range(len(ranks))))


def _whitening(gram: torch.Tensor) -> torch.Tensor:
    lam, vec = torch.linalg.eigh(gram)
    keep = lam > GRAM_TOL * max(float(lam.max()) if lam.numel() else 0.0, 1e-300)
    return vec[:, keep] / lam[keep].sqrt()
