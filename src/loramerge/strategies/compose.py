"""`merge`: run a strategy by name, optionally after a sparsifier (METHOD §4–5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from loramerge.strategies._common import check_inputs
from loramerge.strategies.catalog import get
from loramerge.strategies.registry import Strategy
from loramerge.strategies.sparsify import SparsifyParams, sparsify
from loramerge.strategies.ties import TiesParams


def resolve(strategy: str | Strategy) -> Strategy:
    return get(strategy) if isinstance(strategy, str) else strategy


def merge(
    strategy: str | Strategy,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    params: object | None = None,
    *,
    generator: torch.Generator,
    sparsifier: SparsifyParams | None = None,
) -> torch.Tensor:
    """Merge one group with ``strategy`` (a name or a `Strategy`), sparsifying the deltas first.

    With a sparsifier, every strategy sees the sparsified deltas, except TIES, where the sparsifier
    replaces the trim step instead of running in front of it (its density, dampening, ε and
    conflict limit then override the TIES params), as METHOD §4 prescribes.
    """
    s = resolve(strategy)
    params = s.params_cls() if params is None else params
    if sparsifier is None:
        return s(deltas, weights, params, generator=generator)
    if isinstance(params, TiesParams):
        params = replace(
            params,
            sparsifier=sparsifier.method,
            density=sparsifier.density,
            dampening=sparsifier.dampening,
            epsilon=sparsifier.epsilon,
            conflict_limit=sparsifier.conflict_limit,
        )
        return s(deltas, weights, params, generator=generator)
    check_inputs(deltas, weights, generator, s.name, s.min_inputs, s.max_inputs)
    return s(sparsify(deltas, weights, sparsifier, generator=generator), weights, params, generator=generator)
