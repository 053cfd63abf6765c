"""The explicit strategy registry: names → `Strategy` objects, with "did you mean" errors.

A `Strategy` bundles a pure merge function ``(deltas, weights, params, *, generator) -> Tensor``
with its typed parameter class and the properties the invariant tests and the planner rely on.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from loramerge.errors import LoraMergeError
from loramerge.strategies._common import check_inputs

MergeFn = Callable[..., torch.Tensor]
"""``fn(deltas, weights, params, *, generator) -> Tensor`` (see `Strategy`)."""
CoefficientsFn = Callable[[Sequence[float], Callable[[], torch.Tensor], Any], list[float]]
"""``rule(weights, gram, params) -> a`` with ``merge = Σ a_i ΔW_i``; ``gram()`` gives ⟨ΔW_i, ΔW_j⟩."""


class UnknownStrategyError(KeyError, LoraMergeError):
    """A strategy name that is not registered; the message lists the closest registered names."""

    def __init__(self, name: str, known: Sequence[str]):
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown merge strategy {name!r}.{hint} Known strategies: {', '.join(sorted(known))}")

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0])


class DuplicateStrategyError(ValueError):
    """`register()` was given a name that is already taken."""


@dataclass(frozen=True)
class Strategy:
    """One registered merge strategy.

    Attributes:
        name: registry key.
        fn: the pure merge function ``fn(deltas, weights, params, *, generator) -> Tensor``.
        params_cls: frozen dataclass of the strategy's parameters; ``params_cls()`` gives the defaults.
        order_free: permuting the (delta, weight) pairs leaves the result unchanged.
        averaging: identical inputs ``x`` at positive weights merge to ``x``.
        min_inputs / max_inputs: how many deltas the strategy accepts (``None``: no upper bound).
        elementwise: the result at a position depends only on that position (plus per-tensor
            statistics).
        coefficients: for strategies whose result is a linear combination ``Σ a_i ΔW_i`` of the
            inputs, the rule giving ``a`` from the weights and the inputs' Gram matrix; the engine
            then merges low-rank inputs exactly (concatenated factors) without materialising ΔW.
        basis_space: the strategy can act on the coefficients of a shared orthonormal basis
            (`merge_in_basis`), giving an exactly low-rank result.
        scale_invariant: scaling every weight by c > 0 leaves the result unchanged (averages):
            strength multipliers, auto-strength included, have no effect on such a group.
        by_rows: the same merge computed a block of output rows at a time from row-block readers
            of the inputs, ``by_rows(blocks, shape, weights, params, block_rows=...)``, or None
            where ``params`` need whole tensors; the engine uses it on large dense groups so that
            memory does not grow with the number of LoRAs.
    """

    name: str
    fn: MergeFn
    params_cls: type
    order_free: bool = True
    averaging: bool = False
    min_inputs: int = 1
    max_inputs: int | None = None
    elementwise: bool = True
    coefficients: CoefficientsFn | None = None
    basis_space: bool = False
    scale_invariant: bool = False
    by_rows: Callable[..., torch.Tensor | None] | None = None

    @property
    def linear(self) -> bool:
        return self.coefficients is not None

    def default_params(self) -> object:
        return self.params_cls()

    def __call__(
        self,
        deltas: Sequence[torch.Tensor],
        weights: Sequence[float],
        params: object | None = None,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Validate the inputs, fill in default params and run the merge."""
        params = self.params_cls() if params is None else params
        if not isinstance(params, self.params_cls):
            raise TypeError(f"strategy {self.name!r} takes {self.params_cls.__name__}, got {type(params).__name__}")
        check_inputs(deltas, weights, generator, self.name, self.min_inputs, self.max_inputs)
        return self.fn(deltas, [float(w) for w in weights], params, generator=generator)


class Registry:
    """A name → `Strategy` mapping that refuses duplicates and suggests close names."""

    def __init__(self, strategies: Iterable[Strategy] = ()):
        self._by_name: dict[str, Strategy] = {}
        for strategy in strategies:
            self.register(strategy)

    def register(self, strategy: Strategy) -> Strategy:
        if strategy.name in self._by_name:
            raise DuplicateStrategyError(f"a strategy named {strategy.name!r} is already registered")
        self._by_name[strategy.name] = strategy
        return strategy

    def get(self, name: str) -> Strategy:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownStrategyError(name, list(self._by_name)) from None

    def names(self) -> list[str]:
        return list(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
