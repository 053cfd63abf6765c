"""Shared parts of TIES, DARE-TIES and DELLA-TIES: sign election and disjoint mean.

The three methods differ only in the sparsifier that runs first (magnitude trim, DARE, DELLA; see
`sparsify.py`); `ties.ties` chains ``sparsify → elect_agreement → disjoint_mean``.

Voting works on *voters* ``v_i`` with vote weights ``ω_i``:

* weighted vote (default): ``v_i = w_i ΔW_i`` (sign-aware), ``ω_i = |w_i|``;
* unweighted vote (PEFT, the reference): ``v_i = ΔW_i``, ``ω_i = 1``.

Element-wise, the elected sign is ``sign(Σ v_i)`` (``total``) or ``sign(Σ ω_i sign(v_i))``
(``frequency``), with ties going to +; contributor i agrees where ``sign(v_i)`` equals it (zeros
never agree). Column-wise ("rows vote as units", METHOD §7), each output row r elects a direction
``D_r = Σ v_i[r]`` (``total``) or ``Σ ω_i v_i[r]/‖v_i[r]‖`` (``frequency``), and i agrees on the
whole row when ``⟨v_i[r], D_r⟩ > 0``; this is the element-wise rule for rows of length 1, except
that a row whose elected direction is exactly zero has no agreeing contributor. A 1-D delta (bias,
norm weight) has one entry per output row, so column-wise voting is element-wise there.
"""

from __future__ import annotations

from enum import Enum

import torch


class SignMethod(str, Enum):
    TOTAL = "total"  # sign of the (strength-weighted) sum
    FREQUENCY = "frequency"  # sign of the (strength-weighted) count


def elect_agreement(
    voters: torch.Tensor, vote_weights: torch.Tensor, method: SignMethod, columnwise: bool = False
) -> torch.Tensor:
    """Boolean mask ``[n, ...]``: where voter i agrees with the elected sign (or row direction).

    ``voters`` is the stack ``[n, *shape]``; ``vote_weights`` has one entry per voter.
    """
    if columnwise:
        return _elect_rows(voters, vote_weights, method)
    sign = voters.sign()
    if method is SignMethod.TOTAL:
        score = voters.sum(dim=0)
    else:
        w = vote_weights.to(device=voters.device, dtype=voters.dtype).reshape((-1,) + (1,) * (voters.dim() - 1))
        score = (sign * w).sum(dim=0)
    elected = torch.where(score >= 0, 1, -1)
    return sign == elected


def _elect_rows(voters: torch.Tensor, vote_weights: torch.Tensor, method: SignMethod) -> torch.Tensor:
    n = voters.shape[0]
    # dim 1 of the stack is the output dim; a 1-D delta (bias, norm) has one entry per output row
    v = voters.reshape(n, voters.shape[1], -1) if voters.dim() > 1 else voters.reshape(n, 1, 1)
    if method is SignMethod.TOTAL:
        direction = v.sum(dim=0)
    else:
        norms = torch.linalg.vector_norm(v, dim=2, keepdim=True)
        units = torch.where(norms > 0, v / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(v))
        direction = (units * vote_weights.to(device=v.device, dtype=v.dtype).reshape(n, 1, 1)).sum(dim=0)
    agree_rows = (v * direction.unsqueeze(0)).sum(dim=2) > 0  # [n, rows]
    return agree_rows.unsqueeze(2).expand_as(v).reshape(voters.shape)


def disjoint_mean(contributions: torch.Tensor, agreement: torch.Tensor) -> torch.Tensor:
    """Mean of the agreeing contributions: ``Σ_i [agree_i] c_i / max(#agree, 1)`` (TIES step 3)."""
    total = (contributions * agreement).sum(dim=0)
    count = agreement.sum(dim=0).to(total.dtype)
    return total / torch.clamp(count, min=1.0)
