"""TALL-masks: protect entries that one LoRA dominates from being diluted by the merge (METHOD §7).

Wang et al., "Localizing Task Information for Improved Model Merging and Compression" (ICML 2024),
as adapted in the paper (seed 000, §3.6.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loramerge.strategies._common import check_inputs, contributions


@dataclass(frozen=True)
class TallParams:
    """``threshold``: λ of the selfishness test ``|c_ij| ≥ λ·|Σ_k c_kj − c_ij|``."""

    threshold: float = 1.0

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"TALL threshold must be ≥ 0, got {self.threshold}")


@dataclass(frozen=True, eq=False)
class TallSplit:
    """The deltas with each LoRA's uniquely selfish entries removed, and those entries' contributions.

    Merge ``deltas`` as usual, then add ``selfish`` (already weighted, ``Σ_i [unique_i] w_i ΔW_i``).
    """

    deltas: tuple[torch.Tensor, ...]
    selfish: torch.Tensor
    mask: torch.Tensor  # bool [n, *shape]: where LoRA i is the only selfish one

    def combine(self, merged: torch.Tensor) -> torch.Tensor:
        return merged + self.selfish


def tall_masks(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    params: TallParams,
    *,
    generator: torch.Generator | None = None,
) -> TallSplit:
    """Split off selfish entries.

    With ``c_i = w_i ΔW_i`` and ``d = Σ c_i``, entry j is selfish for LoRA i when
    ``|c_ij| ≥ λ·|d_j − c_ij|``. Where exactly one LoRA is selfish, that LoRA's entry is removed
    from its delta (the other LoRAs still take part in the merge there) and its full contribution
    ``c_ij`` is added back after the merge. Example (λ = 1): a = [2, 0, 1, −1] at weight 1 and
    b = [0, 4, 1, 1] at 0.5, merged by weighted average → [2, 2, 4/3, −2/3].
    """
    check_inputs(deltas, weights, generator, "tall_masks")
    c = contributions(deltas, weights)
    rest = c.sum(dim=0).unsqueeze(0) - c
    selfish = c.abs() >= params.threshold * rest.abs()
    unique = selfish & (selfish.sum(dim=0, keepdim=True) == 1)
    kept = tuple(torch.where(u, torch.zeros_like(d), d) for u, d in zip(unique, deltas))
    return TallSplit(kept, (c * unique).sum(dim=0), unique)
