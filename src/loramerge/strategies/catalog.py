"""The built-in strategies, listed explicitly, and the default registry built from them."""

from __future__ import annotations

from loramerge.strategies import linear, spherical, ties, ziplora
from loramerge.strategies.registry import Registry, Strategy

BUILTIN: tuple[Strategy, ...] = (
    Strategy("weighted_sum", linear.weighted_sum, linear.NoParams, coefficients=linear.sum_coefficients),
    Strategy(
        "weighted_average",
        linear.weighted_average,
        linear.NoParams,
        averaging=True,
        coefficients=linear.average_coefficients,
        scale_invariant=True,
    ),
    Strategy(
        "normalize", linear.normalize, linear.NoParams, coefficients=linear.normalize_coefficients, scale_invariant=True
    ),
    Strategy("l2_weighted_average", linear.l2_weighted_average, linear.NoParams, averaging=True, scale_invariant=True),
    Strategy(
        "add_difference",
        linear.add_difference,
        linear.AddDifferenceParams,
        order_free=False,
        min_inputs=3,
        max_inputs=3,
    ),
    Strategy(
        "slerp",
        spherical.slerp,
        spherical.SlerpParams,
        averaging=True,
        elementwise=False,
        coefficients=spherical.slerp_rule,
        scale_invariant=True,
    ),
    Strategy("consensus", spherical.consensus, linear.NoParams, averaging=True, basis_space=True, scale_invariant=True),
    Strategy("ties", ties.ties, ties.TiesParams, basis_space=True, by_rows=ties.ties_by_rows),
    Strategy(
        "magnitude_prune",
        ties.magnitude_prune,
        ties.MagnitudePruneParams,
        basis_space=True,
        by_rows=ties.magnitude_prune_by_rows,
    ),
    Strategy("ziplora", ziplora.ziplora, ziplora.ZipLoraParams, min_inputs=2, max_inputs=2, elementwise=False),
)

REGISTRY = Registry(BUILTIN)


def get(name: str) -> Strategy:
    """The registered strategy called ``name``; `UnknownStrategyError` (a KeyError) names close matches."""
    return REGISTRY.get(name)


def names() -> list[str]:
    """Names of all registered strategies, in registration order."""
    return REGISTRY.names()


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the default registry; a taken name raises `DuplicateStrategyError`."""
    return REGISTRY.register(strategy)
