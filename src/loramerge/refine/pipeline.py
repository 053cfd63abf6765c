"""The refinement pipeline around one merge: TALL-masks → orthogonalization → KnOTS (METHOD §7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from loramerge.enums import RefineLevel
from loramerge.refine.knots import KnotsParams, knots
from loramerge.refine.orthogonalize import OrthogonalizeParams, orthogonalize
from loramerge.refine.tall import TallParams, tall_masks
from loramerge.strategies import Sparsifier, SparsifyParams, Strategy, TiesParams, merge, sparsify
from loramerge.strategies._common import check_inputs
from loramerge.strategies.compose import resolve


@dataclass(frozen=True)
class RefineParams:
    """Which refinement steps run (always in the fixed order TALL → orthogonalize → KnOTS)."""

    tall: TallParams | None = None
    orthogonalize: OrthogonalizeParams | None = None
    knots: KnotsParams | None = None
    columnwise_ties: bool = False

    @classmethod
    def for_level(cls, level: RefineLevel | str) -> RefineParams:
        level = RefineLevel(level)
        if level is RefineLevel.NONE:
            return cls()
        full = level is RefineLevel.FULL
        return cls(TallParams(), OrthogonalizeParams(), KnotsParams() if full else None, columnwise_ties=True)

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.tall, self.orthogonalize, self.knots)) or self.columnwise_ties


def refined_merge(
    strategy: str | Strategy,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    params: object | None = None,
    *,
    generator: torch.Generator,
    refine: RefineParams,
    sparsifier: SparsifyParams | None = None,
) -> torch.Tensor:
    """Sparsify (optional) → TALL split → orthogonalize → KnOTS → merge → add the selfish entries back.

    A sparsifier runs first, on the raw deltas, where sign conflicts are meaningful; for TIES it
    then replaces the trim (TIES runs without a trim). Single-delta groups skip all refinement.
    With ``columnwise_ties`` a TIES merge votes by output row.
    """
    s = resolve(strategy)
    params = s.params_cls() if params is None else params
    if len(deltas) == 1 or not refine.active:
        return merge(s, deltas, weights, params, generator=generator, sparsifier=sparsifier)
    check_inputs(deltas, weights, generator, s.name, s.min_inputs, s.max_inputs)
    if sparsifier is not None:
        deltas = sparsify(deltas, weights, sparsifier, generator=generator)
        if isinstance(params, TiesParams):
            params = replace(params, sparsifier=Sparsifier.MAGNITUDE, density=1.0)
    selfish = None
    if refine.tall is not None:
        split = tall_masks(deltas, weights, refine.tall, generator=generator)
        deltas, selfish = split.deltas, split.selfish
    if refine.orthogonalize is not None:
        deltas = orthogonalize(deltas, weights, refine.orthogonalize, generator=generator)
    if refine.knots is not None:
        deltas = knots(deltas, weights, refine.knots, generator=generator)
    if refine.columnwise_ties and isinstance(params, TiesParams):
        params = replace(params, columnwise=True)
    merged = s(list(deltas), weights, params, generator=generator)
    return merged if selfish is None else merged + selfish
