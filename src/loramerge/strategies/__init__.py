"""Merge strategies as pure functions in an explicit registry (METHOD §4, §5).

Every strategy is called as ``strategy(deltas, weights, params, *, generator) -> Tensor``:
``deltas`` are tensors of one shape (any rank; "row" means dim 0), ``weights`` one float per delta,
``params`` the strategy's frozen params dataclass (``None`` → defaults) and ``generator`` a CPU
``torch.Generator``. No I/O, no globals, no device moves; inputs are never modified.

>>> import torch, loramerge.strategies as st
>>> s = st.get("ties")
>>> out = s([torch.randn(8, 4), torch.randn(8, 4)], [1.0, 0.5], s.params_cls(density=0.5),
...         generator=torch.Generator().manual_seed(0))
"""

from loramerge.strategies.basis import CoreBasis, factorize, knots_basis, merge_in_basis, qr_basis
from loramerge.strategies.catalog import BUILTIN, get, names, register
from loramerge.strategies.compose import merge
from loramerge.strategies.linear import AddDifferenceParams, NoParams
from loramerge.strategies.registry import DuplicateStrategyError, Registry, Strategy, UnknownStrategyError
from loramerge.strategies.signs import SignMethod
from loramerge.strategies.sparsify import Sparsifier, SparsifyParams, conflict_mask, sparsify
from loramerge.strategies.spherical import SlerpParams
from loramerge.strategies.ties import MagnitudePruneParams, TiesParams
from loramerge.strategies.ziplora import Probe, ZipLoraParams

__all__ = [
    "AddDifferenceParams",
    "BUILTIN",
    "CoreBasis",
    "DuplicateStrategyError",
    "MagnitudePruneParams",
    "NoParams",
    "Probe",
    "Registry",
    "SignMethod",
    "SlerpParams",
    "Sparsifier",
    "SparsifyParams",
    "Strategy",
    "TiesParams",
    "UnknownStrategyError",
    "ZipLoraParams",
    "conflict_mask",
    "factorize",
    "get",
    "knots_basis",
    "merge",
    "merge_in_basis",
    "names",
    "qr_basis",
    "register",
    "sparsify",
]
