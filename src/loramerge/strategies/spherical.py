"""Norm-preserving merges: SLERP (2-way and N-way Karcher mean) and the Fisher-proxy consensus.

Both return a direction rescaled to ``Σ|w_i|·‖ΔW_i‖ / Σ|w_i|`` (METHOD §4), so that merging does not
shrink the update the way a plain average of nearly orthogonal deltas does.

SLERP works entirely in the n-dimensional coefficient space of the unit directions: only their
Gram matrix (n×n, float64) is needed to interpolate or to iterate the Karcher mean, and the result is
one linear combination of the inputs. This is exact, cheap and independent of the tensor size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from loramerge.strategies._common import norm_target, rescale_to
from loramerge.strategies.linear import NoParams, combine


@dataclass(frozen=True)
class SlerpParams:
    """``linear_below``: angle (rad) under which 2-way SLERP falls back to linear interpolation;
    ``max_iter`` / ``tol``: stopping rule of the Karcher-mean iteration (n ≥ 3)."""

    linear_below: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-12


def slerp_coefficients(gram: torch.Tensor, alpha: torch.Tensor, linear_below: float = 1e-6) -> torch.Tensor:
    """Coefficients β of 2-way SLERP ``Σ β_i u_i`` between unit vectors with Gram ``gram`` (2×2).

    ``t = alpha[1] / (alpha[0] + alpha[1])``; linear interpolation when the angle is below
    ``linear_below`` or so close to π that ``sin θ`` vanishes (antipodal: no unique geodesic).
    """
    t = float(alpha[1] / alpha.sum())
    theta = math.acos(max(-1.0, min(1.0, float(gram[0, 1]))))
    s = math.sin(theta)
    if theta < linear_below or s < linear_below:
        return torch.tensor([1.0 - t, t], dtype=torch.float64)
    return torch.tensor([math.sin((1.0 - t) * theta) / s, math.sin(t * theta) / s], dtype=torch.float64)


def karcher_coefficients(
    gram: torch.Tensor, alpha: torch.Tensor, max_iter: int = 100, tol: float = 1e-12
) -> torch.Tensor:
    """Coefficients β of the weighted Karcher (Fréchet) mean ``p = Σ β_i u_i`` of unit vectors.

    Riemannian gradient descent with unit step: ``p ← exp_p(Σ α_i log_p(u_i))``, started from the
    normalised Euclidean mean (or the heaviest direction when that mean vanishes). Points exactly
    antipodal to the current estimate have no log map and are skipped. ``alpha`` is normalised here.
    """
    alpha = alpha / alpha.sum()
    n = gram.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    beta = alpha.clone()
    if _qnorm(gram, beta) < 1e-12:
        beta = eye[int(torch.argmax(alpha))].clone()
    beta = beta / _qnorm(gram, beta)
    for _ in range(max_iter):
        cos = (gram @ beta).clamp(-1.0, 1.0)
        theta = torch.acos(cos)
        sin = torch.sin(theta)
        factor = torch.where(theta < 1e-12, torch.ones_like(theta), theta / sin.clamp_min(1e-300))
        antipodal = (sin < 1e-9) & (theta > 1.0)
        factor = torch.where(antipodal, torch.zeros_like(factor), factor)
        logs = factor[:, None] * (eye - cos[:, None] * beta[None, :])
        step = (alpha[:, None] * logs).sum(0)
        size = _qnorm(gram, step)
        if size < tol:
            break
        beta = math.cos(size) * beta + (math.sin(size) / size) * step
        beta = beta / _qnorm(gram, beta)
    return beta


def _qnorm(gram: torch.Tensor, beta: torch.Tensor) -> float:
    return math.sqrt(max(float(beta @ gram @ beta), 0.0))


def slerp_combination(gram: torch.Tensor, weights: Sequence[float], params: SlerpParams) -> torch.Tensor:
    """Coefficients ``c`` (float64) with ``slerp(ΔW, w) = Σ c_i ΔW_i``, from the Gram matrix
    ``G_ij = ⟨ΔW_i, ΔW_j⟩`` alone.

    SLERP and the Karcher mean stay in the span of their inputs, so a merge of low-rank deltas
    is exactly low-rank: the pipeline computes ``G`` from the factors and never materialises ΔW.
    """
    gram = gram.double().cpu()
    norms = gram.diagonal().clamp_min(0).sqrt().tolist()
    n = len(norms)
    total = sum(abs(w) for w in weights)
    target = sum(abs(w) * m for w, m in zip(weights, norms)) / total if total else 0.0
    active = [i for i in range(n) if weights[i] != 0.0 and norms[i] > 0.0]
    coeffs = torch.zeros(n, dtype=torch.float64)
    if not active or target == 0.0:
        return coeffs
    signs = [1.0 if weights[i] > 0 else -1.0 for i in active]
    alpha = torch.tensor([abs(weights[i]) for i in active], dtype=torch.float64)
    if len(active) == 1:
        beta = torch.ones(1, dtype=torch.float64)
    else:
        scale = torch.tensor([sg / norms[i] for sg, i in zip(signs, active)], dtype=torch.float64)
        unit = gram[active][:, active] * scale[:, None] * scale[None, :]
        beta = (
            slerp_coefficients(unit, alpha, params.linear_below)
            if len(active) == 2
            else karcher_coefficients(unit, alpha, params.max_iter, params.tol)
        )
    for b, sg, i in zip(beta.tolist(), signs, active):
        coeffs[i] = b * sg / norms[i]
    length = _qnorm(gram, coeffs)
    return coeffs * (target / length) if length > 0 else torch.zeros_like(coeffs)


def slerp_rule(weights: Sequence[float], gram: Callable[[], torch.Tensor], params: SlerpParams) -> list[float]:
    """The `Strategy.coefficients` rule of SLERP: `slerp_combination` on the inputs' Gram matrix."""
    return slerp_combination(gram(), weights, params).tolist()


def slerp(deltas, weights, params: SlerpParams, *, generator) -> torch.Tensor:
    """Spherical interpolation of the unit directions, rescaled to ``Σ|w_i|‖ΔW_i‖ / Σ|w_i|``.

    n = 2: ``slerp(u_1, u_2; t)`` with ``t = |w_2| / (|w_1| + |w_2|)``, linear below θ = 1e-6.
    n ≥ 3: the weighted Karcher mean of the directions (weights ``|w_i|``). A negative weight flips
    that delta's direction (``u_i = sign(w_i) ΔW_i/‖ΔW_i‖``); zero deltas and zero weights have no
    direction and take no part in it, but still count in the rescaling norm.
    Shoemake, "Animating rotation with quaternion curves" (SIGGRAPH 1985); Karcher, "Riemannian
    center of mass and mollifier smoothing" (1977); LoRA SLERP as in the paper (seed 000, §3.4).
    """
    flat = torch.stack([d.reshape(-1) for d in deltas]).double()
    coeffs = slerp_combination(flat @ flat.T, weights, params)
    if not bool(coeffs.any()):
        return torch.zeros_like(deltas[0])
    return combine(deltas, coeffs.tolist())


def consensus(deltas, weights, params: NoParams, *, generator) -> torch.Tensor:
    """Fisher-proxy consensus ``Σ w_i ΔW_i ⊙ ΔW_i² / Σ |w_i| ΔW_i²`` (0 where the denominator is 0),
    rescaled to ``Σ|w_i|‖ΔW_i‖ / Σ|w_i|`` like SLERP (METHOD §4).

    Each entry is a weighted mean in which a LoRA's vote counts with its squared magnitude, the
    diagonal-Fisher proxy of Matena & Raffel, "Merging Models with Fisher-Weighted Averaging"
    (NeurIPS 2022). The inputs are first divided by their largest magnitude (the formula is
    homogeneous of degree 1) so that cubes neither overflow nor underflow in float32.
    """
    peak = max(float(d.abs().max()) if d.numel() else 0.0 for d in deltas)
    if peak == 0.0:
        return torch.zeros_like(deltas[0])
    num = torch.zeros_like(deltas[0])
    den = torch.zeros_like(deltas[0])
    for d, w in zip(deltas, weights):
        x = d / peak
        sq = x * x
        num.add_(sq * x, alpha=w)
        den.add_(sq, alpha=abs(w))
    merged = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return rescale_to(merged, norm_target(deltas, weights))
