"""ZipLoRA for two LoRAs, in weight space (default) or on calibration activations.

Shah et al., "ZipLoRA: Any Subject in Any Style by Effectively Merging LoRAs" (ECCV 2024); seed 002
§2.5, §4.3.3. The merge ``M = c_1·diag(m_1) + c_2·diag(m_2)`` (``c_i = w_i ΔW_i`` as ``[out, in]``)
scales every **column** j — the weights reading input feature j, i.e. dim 1 of torch's
``[out, in]`` layout, as in the reference implementation mkshing/ziplora-pytorch, whose merger
vectors have ``in_features`` entries — by one learned coefficient per LoRA.

Objective (minimised with Adam from ``m_1 = m_2 = 1`` for a fixed number of steps, learning rate
decayed linearly to 0 so the result settles)::

    L = Σ_i ‖(M − c_i) P_i‖² / ‖c_i P_i‖²  +  ‖M P_⊥‖² / ē
        + λ · mean_j |cos(c_1[:, j], c_2[:, j])| · |m_1j m_2j|

The first term asks the merge to reproduce each LoRA's own output on that LoRA's inputs ``P_i``:
calibration activations when given, otherwise (weight space) an orthonormal basis of the input
directions LoRA i responds to (its row space). In weight space the second term keeps the merge
silent on the inputs neither LoRA responds to (``P_⊥``: the complement of both row spaces, ``ē``
the mean of the two energies), so LoRAs with disjoint input spaces merge to their exact sum;
``probe='identity'`` instead probes every input direction for both LoRAs, which pulls towards
the plain average. Calibration activations are generic inputs and need no second term.
The last term is the paper's interference penalty:
the cosine of two columns scaled by scalars does not depend on the scalars, so the penalty is
carried by the coefficients' overlap ``|m_1j m_2j|`` (the reference's ``|m_1 ⊙ m_2|``), weighted by
how aligned the two columns are, so that only aligned columns are pushed to pick one LoRA.
A 4-D conv delta uses ``in·kh·kw`` columns; a 1-D delta is a single column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

import torch

from loramerge.strategies._common import normal


class Probe(str, Enum):
    ROWSPACE = "rowspace"  # each LoRA's own input directions (orthonormal basis of its row space)
    IDENTITY = "identity"  # all input directions: plain Frobenius reconstruction


@dataclass(frozen=True)
class ZipLoraParams:
    """steps / lr: Adam schedule; similarity_weight: λ of the column-alignment penalty;
    probe / probe_rank: weight-space probes (row-space bases are sketched to at most
    ``probe_rank`` directions); calibration: optional pair of activations ``X_i`` ``[samples, in]``
    (flattened like the columns) seen by each LoRA; when given they replace the probes."""

    steps: int = 200
    lr: float = 0.1
    similarity_weight: float = 0.5
    probe: Probe = Probe.ROWSPACE
    probe_rank: int = 256
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "probe", Probe(self.probe))
        if self.steps < 0 or self.lr <= 0 or self.similarity_weight < 0 or self.probe_rank < 1:
            raise ValueError("ZipLoraParams: need steps ≥ 0, lr > 0, similarity_weight ≥ 0, probe_rank ≥ 1")


def _columns(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, 1) if t.dim() <= 1 else t.reshape(t.shape[0], -1)


def rowspace_basis(c: torch.Tensor, max_rank: int, generator: torch.Generator) -> torch.Tensor:
    """Orthonormal basis ``[cols, k]`` of the row space of ``c`` (sketched when ``c`` is large)."""
    if min(c.shape) <= max_rank:
        _, s, vh = torch.linalg.svd(c, full_matrices=False)
        basis = vh.T
    else:
        sketch = c.T @ normal((c.shape[0], max_rank), c, generator)
        basis, s, _ = torch.linalg.svd(sketch, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return basis[:, :0]
    keep = s > s[0] * max(c.shape) * torch.finfo(c.dtype).eps
    return basis[:, keep]


def _column_cosines(c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    dots = (c1 * c2).sum(dim=0)
    norms = torch.linalg.vector_norm(c1, dim=0) * torch.linalg.vector_norm(c2, dim=0)
    return torch.where(norms > 0, dots / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(dots))


def _probes(cs, params: ZipLoraParams, generator):
    """Per-LoRA probe matrices ``[cols, k]`` (None: identity) and the shared complement basis."""
    if params.calibration is not None:
        xs = [x.to(device=cs[0].device, dtype=cs[0].dtype) for x in params.calibration]
        return [x.reshape(x.shape[0], -1).T for x in xs], None
    if params.probe is Probe.IDENTITY:
        return [None, None], None
    bases = [rowspace_basis(c, params.probe_rank, generator) for c in cs]
    joint = torch.cat(bases, dim=1)
    u, s, _ = torch.linalg.svd(joint, full_matrices=False)
    covered = u[:, s > 0.5]  # singular values of stacked orthonormal bases are ≥ 1 where covered
    return bases, covered


def _loss(ms, cs, probes, targets, energies, covered, align, params: ZipLoraParams):
    merged = cs[0] * ms[0] + cs[1] * ms[1]
    loss = params.similarity_weight * (align * (ms[0] * ms[1]).abs()).mean()
    for p, t, e in zip(probes, targets, energies):
        if e > 0:
            out = merged if p is None else merged @ p
            loss = loss + ((out - t) ** 2).sum() / e
    if covered is not None and sum(energies) > 0:
        outside = (merged**2).sum() - ((merged @ covered) ** 2).sum()
        loss = loss + outside / (sum(energies) / 2)
    return loss


def ziplora_coefficients(
    deltas, weights, params: ZipLoraParams, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned per-column merger coefficients ``(m_1, m_2)`` (one entry per column)."""
    with torch.inference_mode(False), torch.enable_grad():
        cs = [(_columns(d) * w).detach().clone() for d, w in zip(deltas, weights)]
        probes, covered = _probes(cs, params, generator)
        targets = [c if p is None else c @ p for c, p in zip(cs, probes)]
        energies = [float(torch.linalg.vector_norm(t)) ** 2 for t in targets]
        align = _column_cosines(*cs).abs()
        ms = [torch.ones(cs[0].shape[1], dtype=cs[0].dtype, device=cs[0].device, requires_grad=True) for _ in cs]
        opt = torch.optim.Adam(ms, lr=params.lr)
        for step in range(params.steps):
            for group in opt.param_groups:
                group["lr"] = params.lr * (1.0 - step / params.steps)
            opt.zero_grad(set_to_none=True)
            _loss(ms, cs, probes, targets, energies, covered, align, params).backward()
            opt.step()
    return ms[0].detach(), ms[1].detach()


def _canonical_order(deltas, weights) -> list[int]:
    """A content-based order of the two LoRAs, so that swapping the inputs changes nothing at all
    (the optimiser's floating-point path would otherwise depend on the input order)."""

    def key(i):
        c = deltas[i].reshape(-1).double() * weights[i]
        ramp = torch.linspace(1.0, 2.0, c.numel(), dtype=torch.float64, device=c.device)
        return float((c * c).sum()), float((c * ramp).sum())

    return sorted(range(len(deltas)), key=key)


def ziplora(deltas, weights, params: ZipLoraParams, *, generator) -> torch.Tensor:
    """ZipLoRA: ``M = m_1 ⊙ w_1ΔW_1 + m_2 ⊙ w_2ΔW_2`` for exactly two deltas, with per-column merger
    coefficients learned to keep each LoRA's own output while penalising aligned columns (see the
    module docstring). Shah et al., ZipLoRA (ECCV 2024); deterministic for one generator.
    The LoRAs are processed in a content-based order (calibration activations follow their LoRA)."""
    order = _canonical_order(deltas, weights)
    deltas, weights = [deltas[i] for i in order], [weights[i] for i in order]
    if params.calibration is not None:
        first, second = (params.calibration[i] for i in order)
        params = replace(params, calibration=(first, second))
    m1, m2 = ziplora_coefficients(deltas, weights, params, generator=generator)
    c1, c2 = (_columns(d) * w for d, w in zip(deltas, weights))
    return (c1 * m1 + c2 * m2).reshape(deltas[0].shape)
