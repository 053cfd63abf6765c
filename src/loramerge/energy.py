"""Auto-strength: interference-aware energy normalisation per branch (METHOD.md §6)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class AutoStrength:
    scale: float
    energy: float  # E = sqrt(Σ s_i² n_i + 2 Σ s_i s_j d_ij)
    reference: float  # E_ref = max |s_i| sqrt(n_i)
    mean_abs_cosine: float
    floored: bool
    reason: str


def auto_strength(
    strengths: list[float],
    norms2: list[float],
    dots: dict[tuple[int, int], float],
    *,
    floor: float,
    near_orthogonal: float = 0.1,
) -> AutoStrength:
    """``scale = min(E_ref / E, 1)``, floored at `floor` when the LoRAs are near-orthogonal.

    `norms2[i]` = Σ_g ‖ΔW_i‖², `dots[(i, j)]` = Σ_g ⟨ΔW_i, ΔW_j⟩ (i < j), strengths not applied.
    """
    n = len(strengths)
    e2 = sum(s * s * v for s, v in zip(strengths, norms2))
    e2 += 2 * sum(strengths[i] * strengths[j] * dots.get((i, j), 0.0) for i, j in combinations(range(n), 2))
    energy = math.sqrt(max(e2, 0.0))
    reference = max((abs(s) * math.sqrt(v) for s, v in zip(strengths, norms2)), default=0.0)
    cosines = [
        abs(dots.get((i, j), 0.0)) / math.sqrt(norms2[i] * norms2[j])
        for i, j in combinations(range(n), 2)
        if norms2[i] > 0 and norms2[j] > 0
    ]
    mean_cos = sum(cosines) / len(cosines) if cosines else 0.0
    if n < 2 or energy == 0.0:
        return AutoStrength(1.0, energy, reference, mean_cos, False, "one LoRA (or no energy): no scaling")
    scale = min(reference / energy, 1.0)
    reason = f"E_ref/E = {reference:.4g}/{energy:.4g} = {reference / energy:.3f}"
    floored = bool(cosines) and mean_cos <= near_orthogonal and scale < floor
    if floored:
        scale = floor
        reason += f"; near-orthogonal (mean |cos| {mean_cos:.3f} ≤ {near_orthogonal}), floored at {floor}"
    elif scale == 1.0:
        reason += "; capped at 1 (no amplification)"
    return AutoStrength(scale, energy, reference, mean_cos, floored, reason)
