"""Refinement of a group's deltas before the merge (METHOD §7): TALL-masks, orthogonalization, KnOTS.

Each step is a pure function ``step(deltas, weights, params, *, generator)``; `refined_merge` runs
them in the fixed order around a strategy from `loramerge.strategies`.
"""

from loramerge.refine.knots import KnotsParams, knots, knots_basis_dense, truncated_svd
from loramerge.refine.orthogonalize import OrthogonalizeParams, orthogonalize
from loramerge.refine.pipeline import RefineLevel, RefineParams, refined_merge
from loramerge.refine.tall import TallParams, TallSplit, tall_masks

__all__ = [
    "KnotsParams",
    "OrthogonalizeParams",
    "RefineLevel",
    "RefineParams",
    "TallParams",
    "TallSplit",
    "knots",
    "knots_basis_dense",
    "orthogonalize",
    "refined_merge",
    "tall_masks",
    "truncated_svd",
]
