"""The AutoTuner's parameter grid: candidate configurations, enumerated in one fixed order.

Every dimension is a `MergeConfig` field (its values from `enums.py` or the strategy registry), so a
new option (a rule set, say) is one more entry of `dimensions`. A dimension the user pins (gives on
the command line or in the API call) is not swept. Dimensions that cannot change the merge are not
crossed: the strategy set only matters to ``mode=auto`` with per-group or global decisions, the
density only with a sparsifier, the dampening only with DARE/DELLA.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from ..enums import Optimization, RefineLevel, Sparsifier, StrategySet
from ..presets import Preset

FORCED_MODES = ("weighted_average", "ties")
"""Strategies forced on every group besides ``auto`` (the common choices of the reference's users)."""
SPARSIFIERS = (Sparsifier.NONE, Sparsifier.MAGNITUDE, Sparsifier.DARE, Sparsifier.DELLA)
DAMPENINGS = (0.0, 0.3)
MULTIPLIERS = (0.5, 0.75, 1.0, 1.25, 1.5)
"""Global strength multipliers λ, swept only when an evaluator measures the result."""

SWEPT = (
    "mode",
    "optimization",
    "strategy_set",
    "sparsify",
    "density",
    "dampening",
    "refine",
    "auto_strength",
    "multiplier",
)
_KIND: dict[str, Any] = {
    "mode": str,
    "optimization": Optimization,
    "strategy_set": StrategySet,
    "sparsify": Sparsifier,
    "density": float,
    "dampening": float,
    "refine": RefineLevel,
    "auto_strength": bool,
    "multiplier": float,
}


@dataclass(frozen=True)
class Candidate:
    """One point of the grid: the `MergeConfig` fields it sets (the strength multiplier λ included)."""

    options: tuple[tuple[str, Any], ...]

    @property
    def multiplier(self) -> float:
        return float(self.as_dict.get("multiplier", 1.0))

    @property
    def setting(self) -> tuple[tuple[str, Any], ...]:
        """The options but λ: candidates differing only in λ share a setting."""
        return tuple((k, v) for k, v in self.options if k != "multiplier")

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def get(self, name: str) -> Any:
        return self.as_dict[name]

    def to_json(self) -> dict[str, Any]:
        return {k: (v.value if hasattr(v, "value") else v) for k, v in self.options}

    def label(self) -> str:
        d = self.as_dict
        parts = [str(d["mode"])]
        if d["mode"] == "auto":
            parts.append(d["optimization"].value)
            if d["optimization"] is not Optimization.ADDITIVE:
                parts.append(d["strategy_set"].value)
        if d["sparsify"] is not Sparsifier.NONE:
            parts.append(f"{d['sparsify'].value}@{d['density']:g}" + (f"~{d['dampening']:g}" if d["dampening"] else ""))
        if d["refine"] is not RefineLevel.NONE:
            parts.append(d["refine"].value)
        parts.append("auto-strength" if d["auto_strength"] else "no-auto-strength")
        if self.multiplier != 1.0:
            parts.append(f"λ{self.multiplier:g}")
        return " ".join(parts)


@dataclass(frozen=True)
class Grid:
    """The values of every swept dimension (a pinned dimension has one value)."""

    decision_modes: tuple[tuple[str, Optimization, StrategySet], ...]
    sparsifiers: tuple[Sparsifier, ...]
    densities: tuple[float, ...]
    dampenings: tuple[float, ...]
    refines: tuple[RefineLevel, ...]
    auto_strengths: tuple[bool, ...]
    multipliers: tuple[float, ...] = (1.0,)
    pinned: dict[str, Any] = field(default_factory=dict)

    def candidates(self) -> Iterator[Candidate]:
        """Every candidate once, in a fixed order (decision mode, sparsifier, density, dampening,
        refinement, auto-strength; λ innermost)."""
        for (mode, optimization, strategy_set), sparsify in product(self.decision_modes, self.sparsifiers):
            densities = self.densities if sparsify is not Sparsifier.NONE else (None,)
            dampenings = self.dampenings if sparsify.random and sparsify is not Sparsifier.NONE else (0.0,)
            for density, dampening, refine, auto in product(densities, dampenings, self.refines, self.auto_strengths):
                options = {
                    "mode": mode,
                    "optimization": optimization,
                    "strategy_set": strategy_set,
                    "sparsify": sparsify,
                    "density": density,
                    "dampening": dampening,
                    "refine": refine,
                    "auto_strength": auto,
                    "multiplier": 1.0,
                }
                options.update({k: v for k, v in self.pinned.items() if k in options})
                for multiplier in self.multipliers:
                    yield Candidate(tuple({**options, "multiplier": multiplier}.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "decision_modes": [[m, o.value, s.value] for m, o, s in self.decision_modes],
            "sparsifiers": [s.value for s in self.sparsifiers],
            "densities": list(self.densities),
            "dampenings": list(self.dampenings),
            "refines": [r.value for r in self.refines],
            "auto_strengths": list(self.auto_strengths),
            "multipliers": list(self.multipliers),
            "pinned": {k: (v.value if hasattr(v, "value") else v) for k, v in sorted(self.pinned.items())},
        }


def densities_for(preset: Preset) -> tuple[float, ...]:
    """The preset's DARE density and one step either side (±0.2), inside its density range."""
    values = {
        round(min(max(preset.dare_density + d, preset.density_min), preset.density_max), 4) for d in (-0.2, 0, 0.2)
    }
    return tuple(sorted(values))


def make_grid(preset: Preset, pinned: Mapping[str, Any] | None = None, *, evaluator: bool = False) -> Grid:
    """The grid for an architecture preset; `pinned` fields (of `SWEPT`) keep the user's value.

    λ ≠ 1 only with an evaluator: without one nothing is amplified beyond the user's strengths."""
    pinned = {k: (None if v is None else _KIND[k](v)) for k, v in (pinned or {}).items() if k in SWEPT}
    modes = [pinned["mode"]] if "mode" in pinned else ["auto", *FORCED_MODES]
    optimizations = [pinned["optimization"]] if "optimization" in pinned else list(Optimization)
    sets = [pinned["strategy_set"]] if "strategy_set" in pinned else list(StrategySet)
    decision_modes: list[tuple[str, Optimization, StrategySet]] = []
    for mode in modes:
        if mode != "auto":  # a forced strategy: optimization and strategy set cannot change anything
            decision_modes.append((mode, optimizations[0], sets[0]))
            continue
        for optimization in optimizations:
            for strategy_set in sets if optimization is not Optimization.ADDITIVE else sets[:1]:
                decision_modes.append((mode, optimization, strategy_set))

    def values(name: str, default: tuple) -> tuple:
        return (pinned[name],) if name in pinned else default

    return Grid(
        tuple(dict.fromkeys(decision_modes)),
        values("sparsify", SPARSIFIERS),
        values("density", densities_for(preset)),
        values("dampening", DAMPENINGS),
        values("refine", tuple(RefineLevel)),
        values("auto_strength", (False, True)),
        values("multiplier", MULTIPLIERS if evaluator else (1.0,)),
        pinned,
    )
