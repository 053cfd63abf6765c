"""The Python API: `merge`, `analyze`, `tune`, `load_recipe`; the tools `extract`, `resize`, `bake`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .analysis.pass1 import Analysis
from .config import InputLike, MergeConfig, as_input
from .enums import Progress
from .errors import LoraMergeError
from .inputs import Inputs
from .pipeline import MergeResult, run
from .pipeline import analyze as _analyze
from .plan import MergePlan
from .recipes.formula import formula_recipe
from .recipes.load import load
from .recipes.run import run_recipe
from .recipes.schema import Recipe
from .report import Report, build_report
from .tools import extract, resize
from .tools.bake import BakeReport
from .tools.bake import bake as _bake

if TYPE_CHECKING:
    from .autotune import Evaluator, TuneResult

__all__ = [
    "InputLike",
    "Analyzed",
    "as_input",
    "config_of",
    "merge",
    "analyze",
    "tune",
    "load_recipe",
    "extract",
    "resize",
    "bake",
]


class Analyzed(NamedTuple):
    """What `analyze` returns: the opened inputs, the plan and the pass-1 statistics."""

    inputs: Inputs
    plan: MergePlan
    analysis: Analysis

    def report(self) -> Report:
        """The report of the analysis: statistics and decisions, no merge results."""
        return build_report(self.inputs, self.analysis, self.plan, None, hashes={})


def config_of(inputs: Sequence[InputLike] | MergeConfig, options: dict) -> MergeConfig:
    """A validated `MergeConfig` from inputs and options, or the given one (then no options)."""
    if isinstance(inputs, MergeConfig):
        return inputs.model_copy(update=options) if options else inputs
    return MergeConfig(inputs=tuple(as_input(x) for x in inputs), **options)


def merge(
    inputs: Sequence[InputLike] | MergeConfig | Recipe,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    formula: str | None = None,
    **options,
) -> MergeResult:
    """Merge LoRAs. Options are the fields of `MergeConfig` (mode, optimization, rank, seed, ...); a
    `MergeConfig` may be given instead of inputs and options. The front door of the CLI and ComfyUI.
    `formula` (``"(1+2):0.6 + 3:0.4"``, numbers = positions in `inputs`) or a `Recipe` (see
    `load_recipe`) merges in steps (docs/RECIPES.md); options then apply to every step.

    >>> result = merge(["style.safetensors:0.8", "character.safetensors"], seed=1)  # doctest: +SKIP
    >>> result.save("merged.safetensors", format="kohya")  # doctest: +SKIP
    >>> merge(["a.safetensors", "b.safetensors", "c.safetensors"], formula="(1+2):0.6 + 3:0.4")  # doctest: +SKIP
    """
    if formula is not None:
        if isinstance(inputs, (MergeConfig, Recipe)):
            raise LoraMergeError("a formula takes a list of LoRAs (its numbers are their positions)")
        recipe = formula_recipe(formula, [as_input(x) for x in inputs], options)
        return run_recipe(recipe, output=output, overwrite=overwrite, progress=progress)
    if isinstance(inputs, Recipe):
        recipe = inputs.model_copy(update={"options": {**inputs.options, **options}}).check() if options else inputs
        return run_recipe(recipe, output=output, overwrite=overwrite, progress=progress)
    return run(config_of(inputs, options), progress, output, overwrite=overwrite)


def analyze(inputs: Sequence[InputLike] | MergeConfig, *, progress: Progress | None = None, **options) -> Analyzed:
    """Pass 1 and the plan; returns (inputs, plan, analysis) with `.report()`. Writes nothing."""
    return Analyzed(*_analyze(config_of(inputs, options), progress))


def tune(
    inputs: Sequence[InputLike] | MergeConfig,
    *,
    top: int = 3,
    evaluator: Evaluator | None = None,
    budget: float | None = None,
    min_gain: float = 0.0,
    memory: str = "auto",
    output: str | Path | None = None,
    overwrite: bool = False,
    keep_best: bool = False,
    progress: Progress | None = None,
    **options,
) -> TuneResult:
    """The AutoTuner (docs/TUNER.md): sweep the parameter grid, merge the `top` candidates, rank them
    (by `evaluator` when given, e.g. ``CommandEvaluator("python score.py {merged}")``; another
    candidate must beat the untuned configuration's score by more than `min_gain`). Options
    given here that the grid sweeps (mode, optimization, sparsify, ...) are pinned, not swept.
    `output`: write the best candidate there; ``keep_best``: keep its merge open in ``result.best``.

    >>> result = tune(["style.safetensors", "character.safetensors"], top=3)  # doctest: +SKIP
    >>> result.config(1)  # the best candidate's MergeConfig  # doctest: +SKIP
    """
    from .autotune import tune as run_tune
    from .autotune.grid import SWEPT

    return run_tune(
        config_of(inputs, options),
        pinned={k: v for k, v in options.items() if k in SWEPT},
        top=top,
        evaluator=evaluator,
        budget=budget,
        min_gain=min_gain,
        memory_mode=memory,
        progress=progress,
        output=output,
        overwrite=overwrite,
        keep_best=keep_best,
    )


def load_recipe(path: str | Path, *, allow_changed_inputs: bool = False) -> MergeConfig | Recipe:
    """A `MergeConfig` (one merge) or a `Recipe` (a tree of steps) from a YAML/JSON recipe or from
    the header of a file made by loramerge; paths are relative to the recipe's folder, and an input
    whose recorded SHA-256 differs is an error unless `allow_changed_inputs`. Pass it to `merge`."""
    return load(path, allow_changed_inputs=allow_changed_inputs)


def bake(
    model: str | Path,
    inputs: Sequence[InputLike] | MergeConfig,
    output: str | Path,
    *,
    dtype: str | None = None,
    skip_missing: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    **options,
) -> BakeReport:
    """Apply LoRAs to the checkpoint `model` and write the result to `output`: one LoRA directly (at its
    strengths), several through a merge with `options` (the fields of `MergeConfig`, as for `merge`).

    >>> bake("sdxl.safetensors", ["style.safetensors:0.8"], "sdxl_style.safetensors")  # doctest: +SKIP
    """
    return _bake(
        model,
        config_of(inputs, options),
        output,
        dtype=dtype,
        skip_missing=skip_missing,
        overwrite=overwrite,
        progress=progress,
    )
