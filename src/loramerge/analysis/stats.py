"""`GroupStats`: everything pass 1 keeps of one group — scalars only, no tensors."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations

import torch

from ..patches import LowRank, Patch
from .gram import joint_gram
from .metrics import (
    PAIR_SUMS,
    PairStats,
    SignSums,
    bases,
    inner,
    noise_floors,
    overlap_of_bases,
    pair_record,
    prepare,
    sign_sums,
)
from .sampling import plan_grids, read_sample

DENSITY_RATIOS = (0.05, 0.10, 0.15)
_BLOCK = re.compile(
    r"^(.*?[._](?:input_blocks|output_blocks|down_blocks|up_blocks|double_blocks|single_blocks|"
    r"transformer_blocks|single_transformer_blocks|blocks|layers|block)[._]\d+)"
)


def block_of(key: str) -> str:
    """The block of a group: its first ``name.N`` stem (``input_blocks.4``, ``double_blocks.12``);
    kohya-style names kept by architecture 'unknown' use ``_`` (``blocks_3``)."""
    m = _BLOCK.match(key)
    return m.group(1) if m else key.rsplit(".", 1)[0]


@dataclass(frozen=True, slots=True)  # thousands per merge: no per-instance dict
class GroupStats:
    key: str
    loras: tuple[int, ...]  # indices of the LoRAs present in this group
    numel: int
    ranks: tuple[int | None, ...]  # None for dense (full-rank) inputs
    norms2: tuple[float, ...]  # ‖ΔW_i‖² (strength not applied)
    pairs: tuple[PairStats, ...] = ()
    density_at: dict[float, float] = field(default_factory=dict)  # noise ratio -> kept fraction

    @property
    def n(self) -> int:
        return len(self.loras)

    @property
    def full_rank(self) -> bool:
        return any(r is None for r in self.ranks)

    def _mean(self, attr: str) -> float:
        return sum(getattr(p, attr) for p in self.pairs) / len(self.pairs) if self.pairs else 0.0

    @property
    def cosine(self) -> float:
        return self._mean("cosine")

    @property
    def min_cosine(self) -> float:
        return min((p.cosine for p in self.pairs), default=0.0)

    @property
    def signs_measured(self) -> bool:
        """Whether pass 1 computed the sign statistics (it skips them for plans that cannot use them)."""
        return any(p.sampled > 0 for p in self.pairs)

    @property
    def conflict(self) -> float:
        return self._mean("conflict")

    @property
    def excess_conflict(self) -> float:
        return self._mean("excess_conflict")

    @property
    def overlap(self) -> float:
        return self._mean("overlap")

    @property
    def effective_conflict(self) -> float:
        excess, overlap = self.excess_conflict, self.overlap
        return excess * (0.5 + 0.5 * overlap) if overlap > 0 else excess

    @property
    def magnitude_ratio(self) -> float:
        norms = [math.sqrt(v) for v in self.norms2]
        low = min(norms, default=0.0)
        return max(norms) / low if low > 0 else (1.0 if not norms or max(norms) == 0 else math.inf)

    @property
    def energy(self) -> float:
        return sum(self.norms2)

    def inner_matrix(self) -> torch.Tensor:
        """[n, n] float64 matrix of ⟨ΔW_i, ΔW_j⟩ (this group's LoRAs in order), as pass 1 measured it:
        the same numbers pass 2 would get from the same factors, so it need not compute them again."""
        n = len(self.loras)
        if n > 1 and len(self.pairs) != n * (n - 1) // 2:
            raise ValueError(f"{self.key}: pass-1 statistics without every pair")
        out = torch.diag(torch.tensor(self.norms2, dtype=torch.float64))
        at = {lora: k for k, lora in enumerate(self.loras)}
        for p in self.pairs:
            out[at[p.i], at[p.j]] = out[at[p.j], at[p.i]] = p.dot
        return out


def group_stats(
    key: str,
    loras: tuple[int, ...],
    patches: Iterable[Patch],
    *,
    generator: torch.Generator,
    sample_size: int = 100_000,
    signs: bool = True,
) -> GroupStats:
    """Pass-1 statistics of one group. `patches` are the unweighted ΔW_i (strengths not applied).

    Norms, dots, cosines and overlaps are exact. All low-rank: from the group's joint Gram (float32
    factors are all that is held, whatever n). Otherwise (LoHa/LoKr/full inputs, materialised
    anyway): float64 deltas and SVD bases. Sign metrics and TIES densities come from one sample of
    every LoRA's entries at the same positions (`sampling`: exact for groups of at most
    `EXACT_FACTOR`·`sample_size` entries, else seeded random grids drawn from `generator`).
    ``signs=False`` skips them: the pairs' sign metrics are then 0 (``sampled == 0``, cosine_strong
    = cosine) and `density_at` is empty."""
    patches = list(patches)
    rows, cols = _matrix_dims(patches[0])
    numel = rows * cols
    ranks = tuple(p.rank if isinstance(p, LowRank) else None for p in patches)
    lowrank = all(isinstance(p, LowRank) for p in patches)
    if len(patches) == 1:  # nothing to compare: the norm only
        p = patches[0]
        if isinstance(p, LowRank):
            n2 = joint_gram([p]).inner(0, 0)
        else:
            q = prepare(p)
            n2 = inner(q, q)
        return GroupStats(key, loras, numel, ranks, (max(n2, 0.0),))
    norms2, measured = _exact_measures(patches, lowrank)
    if signs:
        sample = read_sample(patches, rows, cols, plan_grids(rows, cols, sample_size, generator))
        sums = sign_sums(sample, noise_floors(norms2, numel), DENSITY_RATIOS)
        sampled, pair_sums, density = sample.size, sums.pairs.tolist(), _density(sums, len(patches) * sample.size)
    else:
        sampled, pair_sums, density = 0, [[0.0] * len(PAIR_SUMS)] * len(measured), {}
    pairs = tuple(
        pair_record(loras[i], loras[j], dot, norms2[i], norms2[j], overlap, row, sampled)
        for ((i, j), (dot, overlap)), row in zip(measured.items(), pair_sums)
    )
    return GroupStats(key, loras, numel, ranks, norms2, pairs, density)


def _exact_measures(patches: list[Patch], lowrank: bool) -> tuple[tuple[float, ...], dict]:
    """(‖ΔW_i‖² per LoRA, {(i, j): (⟨ΔW_i, ΔW_j⟩, overlap)} for i < j in combinations order), exact."""
    pairs_of = combinations(range(len(patches)), 2)
    if lowrank:
        gram = joint_gram([p for p in patches if isinstance(p, LowRank)])
        norms2 = tuple(max(gram.inner(i, i), 0.0) for i in range(len(patches)))
        white = [gram.whitening(i) for i in range(len(patches))]
        return norms2, {(i, j): (gram.inner(i, j), gram.overlap(i, j, white[i], white[j])) for i, j in pairs_of}
    prepared = [prepare(p) for p in patches]
    norms2 = tuple(max(inner(p, p), 0.0) for p in prepared)
    spaces = [bases(p) for p in prepared]
    return norms2, {
        (i, j): (inner(prepared[i], prepared[j]), overlap_of_bases(spaces[i], spaces[j])) for i, j in pairs_of
    }


def _density(sums: SignSums, total: int) -> dict[float, float]:
    """Per noise ratio r, the pooled fraction of sampled entries (all LoRAs) with |v| > r·max|v|."""
    counts = sums.above.tolist()
    return {r: (c / total if sums.top > 0 and total else 0.0) for r, c in zip(DENSITY_RATIOS, counts)}


def _matrix_dims(p: Patch) -> tuple[int, int]:
    """(rows, cols) of the patch as the flattened [out, in·k] matrix."""
    rows = p.out_features if isinstance(p, LowRank) else int(p.delta.shape[0])
    return rows, (int(p.down.shape[1]) if isinstance(p, LowRank) else p.delta.numel() // rows)
