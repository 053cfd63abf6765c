"""User-facing merge configuration (validated), shared by the CLI, the API, recipes and ComfyUI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .enums import Optimization, OutputDtype, OutputFormat, RefineLevel, Rules, Sparsifier, StrategySet


def option(
    default: Any,
    help: str,
    *,
    cli: str | None = None,
    widget: str | None = None,
    choices: str | None = None,
    step: float | None = None,
    **bounds: Any,
) -> Any:
    """A `MergeConfig` field with what the option table needs: help text, the CLI flag (default
    ``--field-name``), the ComfyUI widget name (default the field's), for string fields the name of
    a dynamic choice list ("strategies", "presets", "architectures"), and a widget step for floats
    finer than the default 0.01."""
    pairs = (("cli", cli), ("widget", widget), ("choices", choices), ("step", step))
    extra: dict[str, Any] = {k: v for k, v in pairs if v}
    return Field(default=default, description=help, json_schema_extra=extra or None, **bounds)


class LoraInput(BaseModel):
    """One input LoRA and how to use it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    strength_model: float = 1.0
    strength_text_encoder: float | None = None  # None: same as strength_model
    preserve: bool = False  # held out of the merge, added on top at its strength
    include: tuple[str, ...] = ()  # regexes on canonical target names; empty = all
    exclude: tuple[str, ...] = ()
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem

    def strength(self, text_encoder: bool) -> float:
        if text_encoder and self.strength_text_encoder is not None:
            return self.strength_text_encoder
        return self.strength_model

    def wants(self, key: str) -> bool:
        if self.include and not any(re.search(p, key) for p in self.include):
            return False
        return not any(re.search(p, key) for p in self.exclude)

    @classmethod
    def parse(cls, spec: str) -> LoraInput:
        """``PATH[:MODEL[,TE]]`` as on the command line (a Windows drive colon is kept)."""
        path, strengths = spec, None
        head, sep, tail = spec.rpartition(":")
        if sep and head and re.fullmatch(r"-?[\d.]+(,-?[\d.]+)?", tail):
            path, strengths = head, tail
        if strengths is None:
            return cls(path=path)
        parts = [float(x) for x in strengths.split(",")]
        return cls(path=path, strength_model=parts[0], strength_text_encoder=parts[1] if len(parts) > 1 else None)


class MergeConfig(BaseModel):
    """Every option of a merge. Defaults follow METHOD.md."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    inputs: tuple[LoraInput, ...]
    mode: str = option(
        "auto",
        "auto: a strategy per weight group from its statistics; or a strategy name forced on every group with 2+ LoRAs",
        choices="strategies",
    )
    optimization: Optimization = option(
        Optimization.PER_GROUP, "per-group decisions, one global decision, or plain addition"
    )
    strategy_set: StrategySet = option(StrategySet.FULL, "which strategies auto mode may choose")
    rules: Rules = option(
        Rules.PAPER,
        "auto mode's decision rules: paper (the seed's tree) or measured (orthogonal groups summed, scale after)",
    )
    sparsify: Sparsifier = option(
        Sparsifier.NONE,
        "sparsification of the deltas before merging (TIES trim, DARE, DELLA, or their conflict-only variants)",
    )
    density: float | None = option(
        None, "keep fraction for TIES and sparsification (default: from the statistics)", gt=0, le=1
    )
    dampening: float = option(0.0, "DELLA/DARE dampening of the rescale", ge=0, le=1)
    refine: RefineLevel = option(
        RefineLevel.NONE, "post-merge refinement: TALL-masks + orthogonalisation; full adds KnOTS"
    )
    preset: str | None = option(None, "decision thresholds (default: the architecture's)", choices="presets")
    arch: str | None = option(None, "architecture of the LoRAs (default: detected)", choices="architectures")
    rank: int | None = option(
        None, "output rank of every merged group (default: exact, the sum of the input ranks)", gt=0, le=65536
    )
    rel_error: float | None = option(
        None,
        "re-factorise each group to this relative Frobenius error instead of a rank",
        gt=0,
        lt=1,
        cli="--error-target",
        widget="error_target",
        step=0.001,
    )
    format: OutputFormat = option(OutputFormat.KOHYA, "key naming of the written file")
    dtype: OutputDtype = option(
        OutputDtype.AUTO,
        "precision of the written tensors: auto = the inputs' half precision "
        "(bfloat16 if any input is bfloat16, else float16); float32 on request",
    )
    base: str | None = option(None, "base model .safetensors: check every target and shape against it (header only)")
    device: str = option("cpu", "where the merge computes (cpu, cuda)")
    # not called "seed" in ComfyUI: its frontend gives widgets of that name a "randomize after run" control
    seed: int = option(
        0, "seed of every random choice (sampling, DARE, randomized SVD)", ge=0, le=2**63 - 1, widget="merge_seed"
    )
    auto_strength: bool = option(
        True, "scale the merged branches so their energy matches the inputs'", cli="--auto-strength/--no-auto-strength"
    )
    smoothing: float = option(0.25, "block smoothing λ of the decision metrics (0 = off)", ge=0, le=1)
    use_excess: bool = option(
        True, "decide on excess sign conflict (beyond what the cosine explains)", cli="--use-excess/--no-use-excess"
    )
    sample_size: int = option(100_000, "positions sampled per group for the sign statistics", gt=0, le=10**8)
    basis_space: bool = option(
        False,
        "TIES/pruning/consensus on shared-basis coefficients: exactly low-rank output",
        cli="--basis-space/--no-basis-space",
    )
    threads: int | None = option(
        None,
        "groups merged side by side, each on one thread (default: automatic, the cores this process may use "
        "less those other processes keep busy); the output bytes do not depend on it",
        gt=0,
        le=256,
    )
    strict: bool = option(
        True,
        "refuse keys that do not fit the architecture or the model (lenient: leave them out, listed in the report)",
        cli="--strict/--lenient",
    )
    allow_pickle: bool = option(
        False, "read .ckpt/.pt/.bin LoRAs with torch.load(weights_only=True)", cli="--allow-pickle/--no-allow-pickle"
    )

    @field_validator("inputs")
    @classmethod
    def _some_inputs(cls, v):
        if not v:
            raise ValueError("give at least one LoRA")
        return v

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, v):
        if v != "auto":
            from . import strategies

            strategies.get(v)  # raises with the closest names
        return v
