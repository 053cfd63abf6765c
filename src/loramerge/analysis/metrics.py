"""Pair metrics of the deltas of one group, computed from low-rank factors where possible.

Norms, dot products and cosines are exact from small products:
``⟨s_i B_i A_i, s_j B_j A_j⟩ = s_i s_j · trace((B_iᵀ B_j)(A_j A_iᵀ))`` in O((d+k)·r²).
Subspace overlaps use orthonormal bases from QR of ``up`` and ``downᵀ``. Sign metrics come from
one `SignSample` shared by all LoRAs of the group (every entry of small groups, random row × column
grids of large ones, see `sampling`): `sign_sums` takes every masked sum that every pair needs in
one batched pass over it, and `pair_record` turns a pair's sums into its `PairStats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..patches import Dense, LowRank, Patch
from .sampling import SignSample

NOISE_FLOOR = 0.05
DENSE_BASIS_ENERGY = 0.99  # numerically full-rank dense deltas: basis = top singular vectors holding 99 % of the energy
DENSE_BASIS_MAX = 64


def inner(a: Patch, b: Patch) -> float:
    """⟨ΔW_a, ΔW_b⟩_F, exact; never materialises a product of two low-rank patches."""
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        left = a.up.T.double() @ b.up.double()  # [ra, rb]
        right = b.down.double() @ a.down.T.double()  # [rb, ra]
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


SAMPLE_CHUNK = 8192  # positions gathered at once: bounds the temporary [chunk, r] row gathers


def sample_entries(patch: Patch, rows_idx: torch.Tensor, cols_idx: torch.Tensor) -> torch.Tensor:
    """Entries ΔW[r, c] of the flattened [out, in·k] matrix at scattered positions (float64).
    Pass 1 reads grid blocks instead (`sampling.read_sample`); this is for callers that need
    arbitrary positions.

    Low-rank: row gathers of ``up`` and ``downᵀ`` and a rank-length dot product per entry, in
    chunks, so the temporaries stay small whatever the sample size."""
    if isinstance(patch, LowRank):
        up, down_t = patch.up.float(), patch.down.float().T.contiguous()
        out = torch.empty(rows_idx.numel(), dtype=torch.float64)
        for start in range(0, rows_idx.numel(), SAMPLE_CHUNK):
            r, c = rows_idx[start : start + SAMPLE_CHUNK], cols_idx[start : start + SAMPLE_CHUNK]
            out[start : start + r.numel()] = torch.einsum("nr,nr->n", up.index_select(0, r), down_t.index_select(0, c))
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
    conflict: float  # sign disagreement over positions where both are non-zero
    weighted_conflict: float  # Σ_strong,disagree min(|a|,|b|) / Σ_strong min(|a|,|b|)
    conflict_strong: float  # sign disagreement over strong positions
    cosine_strong: float
    expected_conflict: float  # arccos(cos_strong)/π
    excess_conflict: float  # max(conflict_strong − expected, 0)
    overlap: float  # subspace overlap in [0, 1]
    sampled: int  # positions used for the sign metrics (0: none were computed)


# The masked sums `sign_sums` takes for a pair (i, j) over the sample, in this column order. With
# s_i = sign(v_i), "strong" = min(|v_i|, |v_j|) > ε_ij and w = min(|v_i|, |v_j|):
PAIR_SUMS = (
    "nonzero",  # Σ |s_i s_j|: positions where both are non-zero
    "concordance",  # Σ s_i s_j = agreeing − disagreeing positions
    "strong",  # Σ [strong]
    "strong_concordance",  # Σ [strong] s_i s_j
    "weight",  # Σ [strong] w
    "weight_concordance",  # Σ [strong] w s_i s_j
    "cross",  # Σ [strong] v_i v_j
    "square_i",  # Σ [strong] v_i²
    "square_j",  # Σ [strong] v_j²
)
SLAB = 1 << 16  # sample positions processed at once: bounds the [7, n−1, SLAB] float32 temporaries


@dataclass(frozen=True)
class SignSums:
    """Every masked sum the sign statistics of a group need, over one sample (float64).

    ``pairs`` [P, len(PAIR_SUMS)] holds the pairs (i < j) in `itertools.combinations` order;
    ``above[t]`` counts the entries of all LoRAs with ``|v| > ratios[t] · top``, ``top`` = max |v|."""

    pairs: torch.Tensor
    above: torch.Tensor
    top: float


def noise_floors(norms2, numel: int) -> torch.Tensor:
    """Per LoRA, ``NOISE_FLOOR · RMS_i`` (from exact norms); a pair's floor ε_ij is the larger of its two."""
    return torch.tensor([NOISE_FLOOR * math.sqrt(max(n2, 0.0) / numel) for n2 in norms2], dtype=torch.float64)


def sign_sums(sample: SignSample, floors: torch.Tensor, ratios: tuple[float, ...] = ()) -> SignSums:
    """All pairs' masked sums (`PAIR_SUMS`) and the pooled magnitude counts over `sample`.

    Sums over the sample are unbiased estimates of the same sums over the whole matrix, up to the
    common factor ``numel / size`` that every ratio metric cancels (`sampling`). Element-wise work
    is float32 (signs, minima, masks: exact on the float32 entries); sums add float32 partial sums
    of at most ``sample.chunk`` entries in float64, so counts are exact and value sums are good to
    ~1e-6 relative."""
    values = sample.values
    n, padded = values.shape
    pairs = torch.zeros(n * (n - 1) // 2, len(PAIR_SUMS), dtype=torch.float64, device=values.device)
    above = torch.zeros(len(ratios), dtype=torch.float64, device=values.device)
    if sample.size == 0:
        return SignSums(pairs, above, 0.0)
    low, high = torch.aminmax(values)
    top = max(-float(low), float(high))
    thresholds = [r * top for r in ratios]
    floors = floors.to(device=values.device, dtype=torch.float32)
    slab = max(1, SLAB // sample.chunk) * sample.chunk
    for start in range(0, padded, slab):
        v = values[:, start : start + slab]
        mag = v.abs()
        pairs += _slab_pair_sums(v, mag, floors, sample.chunk)
        above += _counts_above(mag, thresholds)
    return SignSums(pairs, above, top)


def _counts_above(mag: torch.Tensor, thresholds: list[float]) -> torch.Tensor:
    """float64 [len(thresholds)]: how many entries of `mag` exceed each threshold."""
    flags = torch.empty_like(mag)
    counts = [torch.gt(mag, t, out=flags).sum() for t in thresholds]  # float32 sums of 0/1: exact below 2²⁴
    return torch.stack(counts).double() if counts else torch.zeros(0, dtype=torch.float64, device=mag.device)


def _slab_pair_sums(v: torch.Tensor, mag: torch.Tensor, floors: torch.Tensor, chunk: int) -> torch.Tensor:
    """`PAIR_SUMS` of all pairs over the columns of `v` [n, w] (w a multiple of `chunk`).

    Pairs (k, l > k) are handled together for each k, as [n−1−k, w] matrices; the products of
    values are chunked matrix products."""
    n, w = v.shape
    sign, square = v.sign(), v * v
    blocks = []
    for k in range(n - 1):
        q = n - 1 - k
        buf = v.new_empty(7, q, w)  # the first six `PAIR_SUMS` summands of the pairs (k, l > k), then s·v_l
        nonzero, conc, strong, strong_conc, weight, weight_conc, sv = buf.unbind(0)
        torch.mul(sign[k + 1 :], sign[k], out=conc)
        torch.abs(conc, out=nonzero)
        torch.minimum(mag[k + 1 :], mag[k], out=weight)
        floor = torch.maximum(floors[k + 1 :], floors[k])[:, None]
        torch.gt(weight, floor, out=strong)  # 1.0 where min(|v_k|, |v_l|) > ε, else 0.0 (float out: no bool pass)
        weight.mul_(strong)
        torch.mul(strong, conc, out=strong_conc)
        torch.mul(weight, conc, out=weight_conc)
        torch.mul(v[k + 1 :], strong, out=sv)
        counts = buf[:6].sum(-1).T.double()  # [q, 6]
        cross = _chunked_products(sv, v[k:], chunk)  # [q, q+1]: with v_k, then the v_l
        square_k = _chunked_products(strong, square[k : k + 1], chunk)  # [q, 1]
        blocks.append(torch.cat([counts, cross[:, :1], square_k, cross[:, 1:].diagonal()[:, None]], dim=1))
    return torch.cat(blocks)


def _chunked_products(left: torch.Tensor, right: torch.Tensor, chunk: int) -> torch.Tensor:
    """[a, b] float64 of Σ_m left[i, m]·right[j, m]: float32 matrix products over chunks of
    `chunk` columns (one batched product), the chunks added in float64."""
    (a, w), b = left.shape, right.shape[0]
    c = w // chunk
    parts = torch.bmm(left.reshape(a, c, chunk).transpose(0, 1), right.reshape(b, c, chunk).permute(1, 2, 0))
    return parts.double().sum(0)


def pair_record(
    i: int, j: int, dot: float, norm2_i: float, norm2_j: float, overlap: float, sums: list[float], sampled: int
) -> PairStats:
    """`PairStats` of one pair from its exact dot, norms and overlap and its `PAIR_SUMS`."""
    nonzero, conc, strong, strong_conc, weight, weight_conc, cross, square_i, square_j = sums
    denom = math.sqrt(max(norm2_i, 0.0) * max(norm2_j, 0.0))
    cosine = dot / denom if denom > 0 else 0.0
    conflict_strong = _ratio((strong - strong_conc) / 2, strong)
    d = math.sqrt(square_i * square_j)
    cos_strong = cross / d if d > 0 else cosine
    expected = math.acos(max(-1.0, min(1.0, cos_strong))) / math.pi
    conflict, weighted = _ratio((nonzero - conc) / 2, nonzero), _ratio((weight - weight_conc) / 2, weight)
    return PairStats(
        i,
        j,
        dot,
        cosine,
        conflict,
        weighted,
        conflict_strong,
        cos_strong,
        expected,
        max(conflict_strong - expected, 0.0),
        overlap,
        sampled,
    )


def pair_stats(
    i: int,
    j: int,
    a: Patch,
    b: Patch,
    norm2_a: float,
    norm2_b: float,
    va: torch.Tensor,
    vb: torch.Tensor,
    numel: int,
    overlap: float | None = None,
    dot: float | None = None,
) -> PairStats:
    """Statistics of one pair from exact norms/dot and the entries `va`, `vb` of both deltas at the
    same positions (a group's pairs are computed together by `sign_sums` instead)."""
    sample = SignSample.of(torch.stack([va.float(), vb.float()]))
    sums = sign_sums(sample, noise_floors((norm2_a, norm2_b), numel)).pairs[0].tolist()
    return pair_record(
        i,
        j,
        inner(a, b) if dot is None else dot,
        norm2_a,
        norm2_b,
        subspace_overlap(a, b) if overlap is None else overlap,
        sums,
        sample.size,
    )


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0
