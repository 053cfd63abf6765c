"""Orthogonalization of the LoRA directions, magnitudes kept (DO-Merging; METHOD §7).

"Decouple and Orthogonalize: A Data-Free Framework for LoRA Merging" (DO-Merging, 2025),
as used in the paper (seed 000, §3.6.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loramerge.strategies._common import check_inputs


@dataclass(frozen=True)
class OrthogonalizeParams:
    """``dependent_below``: a direction whose residual after projection is shorter than this (it
    lies in the span of the earlier ones) is dropped (its delta becomes zero)."""

    dependent_below: float = 1e-5


def orthogonalize(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    params: OrthogonalizeParams,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """``ΔW_i' = ‖ΔW_i‖ · v̂_i`` with ``v̂_i = normalize(û_i − Σ_{j<i} ⟨û_i, v̂_j⟩ v̂_j)``.

    Modified Gram–Schmidt over the flattened unit directions in input (stack) order, with one
    re-orthogonalization pass ("twice is enough") for float32 accuracy. The weights do not enter.
    Zero deltas stay zero; a direction that depends on earlier ones is dropped (the outputs must
    be pairwise orthogonal, and it has no component left to keep).
    """
    check_inputs(deltas, weights, generator, "orthogonalize")
    basis: list[torch.Tensor] = []
    out = []
    for d in deltas:
        flat = d.reshape(-1)
        norm = torch.linalg.vector_norm(flat)
        if float(norm) == 0.0:
            out.append(torch.zeros_like(d))
            continue
        v = flat / norm
        for _ in range(2):
            for b in basis:
                v = v - torch.dot(v, b) * b
        residual = torch.linalg.vector_norm(v)
        if float(residual) < params.dependent_below:
            out.append(torch.zeros_like(d))
            continue
        v = v / residual
        basis.append(v)
        out.append((v * norm).reshape(d.shape))
    return tuple(out)
