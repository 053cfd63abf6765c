"""`GroupStats`: everything pass 1 keeps of one group — scalars only, no tensors."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import combinations

import torch

from ..types import LowRank, Patch
from .metrics import PairStats, bases, inner, overlap_of_bases, pair_stats, prepare, sample_entries, sample_positions

DENSITY_RATIOS = (0.05, 0.10, 0.15)
_BLOCK = re.compile(r"^(.*?[._](?:input_blocks|output_blocks|down_blocks|up_blocks|double_blocks|single_blocks|"
                    r"transformer_blocks|single_transformer_blocks|blocks|layers|block)[._]\d+)")


def block_of(key: str) -> str:
    """The block of a group: its first ``name.N`` stem (``input_blocks.4``, ``double_blocks.12``);
    kohya-style names kept by architecture 'unknown' use ``_`` (``blocks_3``)."""
    m = _BLOCK.match(key)
    return m.group(1) if m else key.rsplit(".", 1)[0]


@dataclass(frozen=True)
class GroupStats:
    key: str
    loras: tuple[int, ...]           # indices of the LoRAs present in this group
    numel: int
    ranks: tuple[int | None, ...]    # None for dense (full-rank) inputs
    norms2: tuple[float, ...]        # ‖ΔW_i‖² (strength not applied)
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


def group_stats(key: str, loras: tuple[int, ...], patches: list[Patch], *, generator: torch.Generator,
                sample_size: int = 100_000) -> GroupStats:
    """Pass-1 statistics of one group. `patches` are the unweighted ΔW_i (strengths not applied)."""
    first = patches[0]
    rows = first.out_features if isinstance(first, LowRank) else int(first.delta.shape[0])
    cols = (first.down.shape[1] if isinstance(first, LowRank) else first.delta.numel() // rows)
    numel = rows * cols
    raw, patches = patches, [prepare(p) for p in patches]
    norms2 = tuple(max(inner(p, p), 0.0) for p in patches)
    ranks = tuple(p.rank if isinstance(p, LowRank) else None for p in raw)
    if len(patches) == 1:
        return GroupStats(key, loras, numel, ranks, norms2)
    r_idx, c_idx = sample_positions(rows, cols, sample_size, generator)
    values = [sample_entries(p, r_idx, c_idx) for p in raw]
    spaces = [bases(p) for p in patches]
    pairs = tuple(pair_stats(loras[i], loras[j], patches[i], patches[j], norms2[i], norms2[j], values[i], values[j],
                             numel, overlap_of_bases(spaces[i], spaces[j]))
                  for i, j in combinations(range(len(patches)), 2))
    pooled = torch.cat([v.abs() for v in values])
    top = float(pooled.max()) if pooled.numel() else 0.0
    density = {r: (float((pooled > r * top).double().mean()) if top > 0 else 0.0) for r in DENSITY_RATIOS}
    return GroupStats(key, loras, numel, ranks, norms2, pairs, density)
