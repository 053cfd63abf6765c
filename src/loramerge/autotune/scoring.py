"""Phase 2 of the AutoTuner: tensor metrics of a merged LoRA (METHOD §9), and the ranking.

`effective_rank`, `coefficient_of_variation`, `kept_fraction` and `sparsity_fit` are pure functions
of tensors or numbers; `merge_metrics` applies them to one candidate's merged groups, together with
the report's per-LoRA retention (energy-weighted ⟨M, w_iΔW_i⟩/‖w_iΔW_i‖², `report.build`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from ..patches import Dense, LowRank, Patch
from ..report.build import MERGE_RETENTION_WARNING

PHASE2_WEIGHTS = {"effective_rank": 0.35, "norm_consistency": 0.25, "sparsity_fit": 0.20, "retention": 0.20}
LOST = MERGE_RETENTION_WARNING
"""A LoRA keeping less than this of itself over the whole merge is lost: such a candidate never wins."""


def singular_values(patch: Patch) -> torch.Tensor:
    """σ of the patch as an [out, in·k] matrix; from the factors' QR for a low-rank patch (exact)."""
    if isinstance(patch, LowRank):
        up = patch.up.double() * patch.scale
        down = patch.down.double()
        _, r_up = torch.linalg.qr(up)
        _, r_down = torch.linalg.qr(down.T)
        return torch.linalg.svdvals(r_up @ r_down.T)
    delta = patch.delta.double()
    return torch.linalg.svdvals(delta.reshape(delta.shape[0], -1))


def effective_rank(sigma: torch.Tensor) -> float:
    """exp(H(p)) with p = σ/Σσ (Roy & Vetterli): 1 for one direction, k for k equal ones, 0 for 0."""
    total = float(sigma.sum())
    if total <= 0:
        return 0.0
    p = sigma[sigma > 0].double() / total
    return math.exp(float(-(p * p.log()).sum()))


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Population std / mean; 0 for fewer than two values or a zero mean."""
    if len(values) < 2:
        return 0.0
    mean = math.fsum(values) / len(values)
    if mean == 0:
        return 0.0
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values)) / mean


def kept_fraction(delta: torch.Tensor, noise_ratio: float) -> float:
    """Share of the entries above `noise_ratio`·max|v| (pass 1's density measure, on the merge)."""
    a = delta.abs()
    top = float(a.max()) if a.numel() else 0.0
    return float((a > noise_ratio * top).double().mean()) if top > 0 else 0.0


def sparsity_fit(density: float, target_density: float) -> float:
    """1 − |sparsity − ideal sparsity| = 1 − |density − target density| (the preset's DARE density)."""
    return 1.0 - abs(density - target_density)


def group_facts(patch: Patch, noise_ratio: float) -> tuple[float, float, float] | None:
    """(effective rank / rank, ‖M‖, kept fraction) of one merged group; None for norm/bias deltas."""
    if isinstance(patch, Dense) and patch.delta.dim() < 2:
        return None
    sigma = singular_values(patch)
    nonzero = int((sigma > 0).sum())
    relative = effective_rank(sigma) / nonzero if nonzero else 0.0
    return relative, float(sigma.square().sum().sqrt()), kept_fraction(patch.dense(), noise_ratio)


def merge_metrics(
    facts: Iterable[tuple[float, float, float] | None], retention: dict[str, float | None], *, target_density: float
) -> dict[str, float]:
    """The phase-2 metrics of one merged candidate from its groups' `group_facts`: mean relative
    effective rank (richness, in (0, 1]), CV of the group norms and 1/(1 + CV), norm-weighted kept
    fraction and its fit to the target density, min and mean retention, and the weighted score."""
    given = [f for f in facts if f is not None]
    ranks = [f[0] for f in given]
    norms = [f[1] for f in given]
    cv = coefficient_of_variation(norms)
    total = math.fsum(norms)
    density = math.fsum(n * k for _, n, k in given) / total if total > 0 else 0.0
    kept = [v for v in retention.values() if v is not None]
    out = {
        "effective_rank": math.fsum(ranks) / len(ranks) if ranks else 0.0,
        "norm_cv": cv,
        "norm_consistency": 1.0 / (1.0 + cv),
        "density": density,
        "sparsity_fit": sparsity_fit(density, target_density),
        "min_retention": min(kept) if kept else 0.0,
        "mean_retention": math.fsum(kept) / len(kept) if kept else 0.0,
    }
    out["retention"] = min(max(out["min_retention"], 0.0), 1.0)
    out["score"] = math.fsum(PHASE2_WEIGHTS[k] * out[k] for k in PHASE2_WEIGHTS)
    return out


def loses_a_lora(metrics: dict[str, float] | None) -> bool:
    return metrics is not None and metrics["min_retention"] < LOST
