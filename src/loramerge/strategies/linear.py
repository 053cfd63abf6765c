"""Linear merges: weighted sum (task arithmetic), averages, norm-weighted average, add-difference.

All are exact linear combinations ``Σ α_i ΔW_i``; the planner can write them as an exact low-rank
patch (METHOD §8) instead of calling these functions on dense deltas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from loramerge.strategies._common import contributions, frob

Gram = Callable[[], torch.Tensor] | None
"""The inputs' Gram matrix ⟨ΔW_i, ΔW_j⟩ on demand (computed at most once by the caller), or None
where a coefficient rule does not need it."""


@dataclass(frozen=True)
class NoParams:
    """Parameters of a strategy that has none."""


@dataclass(frozen=True)
class AddDifferenceParams:
    """``factor``: the multiplier f of the difference ``ΔW_b − ΔW_c``."""

    factor: float = 1.0


def combine(deltas: Sequence[torch.Tensor], coefficients: Sequence[float]) -> torch.Tensor:
    """``Σ α_i ΔW_i`` as a new tensor (inputs untouched).

    Computed as products stacked and summed over the stack, the same float32 operations as PEFT's
    ``task_arithmetic``, so that the two agree bit for bit.
    """
    return contributions(deltas, coefficients).sum(dim=0)


def sum_coefficients(weights: Sequence[float], gram: Gram, params: object) -> list[float]:
    """Coefficients of `weighted_sum`: the weights themselves."""
    return list(weights)


def average_coefficients(weights: Sequence[float], gram: Gram, params: object) -> list[float]:
    """Coefficients of `weighted_average`: ``w_i / Σ|w_k|`` (all zero when every weight is zero)."""
    total = sum(abs(w) for w in weights)
    return [w / total if total else 0.0 for w in weights]


def normalize_coefficients(weights: Sequence[float], gram: Gram, params: object) -> list[float]:
    """Coefficients of `normalize`: ``w_i / sqrt(Σ w_k²)`` (all zero when every weight is zero)."""
    root = sum(w * w for w in weights) ** 0.5
    return [w / root if root else 0.0 for w in weights]


def _combine_or_zero(deltas: Sequence[torch.Tensor], coefficients: list[float]) -> torch.Tensor:
    return combine(deltas, coefficients) if any(coefficients) else torch.zeros_like(deltas[0])


def weighted_sum(deltas, weights, params: NoParams, *, generator) -> torch.Tensor:
    """Task arithmetic: ``M = Σ w_i ΔW_i``.

    Ilharco et al., "Editing Models with Task Arithmetic" (ICLR 2023); PEFT ``task_arithmetic``.
    """
    return combine(deltas, sum_coefficients(weights, None, params))


def weighted_average(deltas, weights, params: NoParams, *, generator) -> torch.Tensor:
    """Weighted average: ``M = Σ w_i ΔW_i / Σ|w_i|`` (zero when every weight is zero).

    The classic LoRA blend (seed 002 §4.3.1, eq. 2), normalised by the absolute weights so that
    negative strengths subtract without shrinking the denominator (METHOD §4).
    """
    return _combine_or_zero(deltas, average_coefficients(weights, None, params))


def normalize(deltas, weights, params: NoParams, *, generator) -> torch.Tensor:
    """Energy-normalised sum: ``M = Σ w_i ΔW_i / sqrt(Σ w_i²)`` (METHOD §4).

    For orthogonal deltas of equal norm this keeps the norm of one delta: the orthogonal case of
    the paper's interference-aware energy normalization (seed 000, §3.5), applied per group.
    """
    return _combine_or_zero(deltas, normalize_coefficients(weights, None, params))


def l2_weighted_average(deltas, weights, params: NoParams, *, generator) -> torch.Tensor:
    """L2-norm weighted average: ``M = Σ α_i ΔW_i`` with ``α_i = w_i‖ΔW_i‖ / Σ_k |w_k|‖ΔW_k‖``.

    McCoy & Pu, "Exploring LoRA Merging Techniques in Virtual Try-On" (seed 002, §4.3.2, eq. 3):
    stronger LoRAs weigh more; the coefficients' absolute values sum to 1 and keep the weights' signs.
    """
    norms = [abs(w) * frob(d) for d, w in zip(deltas, weights)]
    total = sum(norms)
    if total == 0.0:
        return torch.zeros_like(deltas[0])
    return combine(deltas, [(1.0 if w >= 0 else -1.0) * n / total for w, n in zip(weights, norms)])


def add_difference(deltas, weights, params: AddDifferenceParams, *, generator) -> torch.Tensor:
    """Add difference: ``M = w_a ΔW_a + f·(w_b ΔW_b − w_c ΔW_c)`` for exactly three deltas (a, b, c).

    The "add difference" mode of SuperMerger / kohya merge scripts (seed 001): keep A whole and add
    what B changes relative to C. With unit weights this is ``ΔW_a + f(ΔW_b − ΔW_c)``.
    """
    (wa, wb, wc), f = weights, params.factor
    return combine(deltas, [wa, f * wb, -f * wc])
