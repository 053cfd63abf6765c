"""The Python API: `merge`, `analyze`, `load_recipe`; the tools `extract`, `resize`, `bake`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import yaml

from .analysis.pass1 import Analysis
from .config import LoraInput, MergeConfig
from .enums import Progress
from .errors import InputFileError
from .formats.files import read_header
from .inputs import Inputs
from .pipeline import MergeResult, run
from .pipeline import analyze as _analyze
from .plan import MergePlan
from .report import Report, build_report
from .tools import extract, resize
from .tools.bake import BakeReport
from .tools.bake import bake as _bake

InputLike = str | Path | LoraInput | dict | tuple

__all__ = [
    "InputLike",
    "Analyzed",
    "as_input",
    "config_of",
    "merge",
    "analyze",
    "load_recipe",
    "extract",
    "resize",
    "bake",
]


def as_input(x: InputLike) -> LoraInput:
    """A LoraInput from a path, ``"path:0.8,0.5"``, a (path, strength[, te]) tuple or a dict."""
    if isinstance(x, LoraInput):
        return x
    if isinstance(x, dict):
        return LoraInput(**x)
    if isinstance(x, tuple):
        path, *s = x
        return LoraInput(
            path=str(path), strength_model=s[0] if s else 1.0, strength_text_encoder=s[1] if len(s) > 1 else None
        )
    return LoraInput.parse(str(x))


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
    inputs: Sequence[InputLike] | MergeConfig,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    **options,
) -> MergeResult:
    """Merge LoRAs. Options are the fields of `MergeConfig` (mode, optimization, rank, seed, ...); a
    `MergeConfig` may be given instead of inputs and options. The front door of the CLI and ComfyUI.

    >>> result = merge(["style.safetensors:0.8", "character.safetensors"], seed=1)  # doctest: +SKIP
    >>> result.save("merged.safetensors", format="kohya")  # doctest: +SKIP
    """
    return run(config_of(inputs, options), progress, output, overwrite=overwrite)


def analyze(inputs: Sequence[InputLike] | MergeConfig, *, progress: Progress | None = None, **options) -> Analyzed:
    """Pass 1 and the plan; returns (inputs, plan, analysis) with `.report()`. Writes nothing."""
    return Analyzed(*_analyze(config_of(inputs, options), progress))


def load_recipe(path: str | Path) -> MergeConfig:
    """A `MergeConfig` from a YAML/JSON recipe, or from the header of a file made by loramerge."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        _, meta = read_header(path)
        if "loramerge.recipe" not in meta:
            raise InputFileError(
                path, "has no loramerge recipe in its metadata", hint="was it written by loramerge merge?"
            )
        data = json.loads(meta["loramerge.recipe"])["config"]
    else:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise InputFileError(path, f"cannot read recipe: {exc}") from exc
        if isinstance(data, dict) and "config" in data:
            data = data["config"]
    if not isinstance(data, dict) or "inputs" not in data:
        raise InputFileError(path, "a recipe needs an 'inputs' list", hint="see docs/RECIPES.md")
    data["inputs"] = [as_input(x) for x in data["inputs"]]
    return MergeConfig(**data)


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
