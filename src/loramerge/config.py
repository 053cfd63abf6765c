"""User-facing merge configuration (validated), shared by the CLI, the API, recipes and ComfyUI."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .enums import Optimization, OutputDtype, OutputFormat, RefineLevel, Sparsifier, StrategySet


class LoraInput(BaseModel):
    """One input LoRA and how to use it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    strength_model: float = 1.0
    strength_text_encoder: float | None = None  # None: same as strength_model
    preserve: bool = False                      # held out of the merge, added on top at its strength
    include: tuple[str, ...] = ()               # regexes on canonical target names; empty = all
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
    mode: str = "auto"                          # "auto" or a strategy name forced on every multi-LoRA group
    optimization: Optimization = Optimization.PER_GROUP
    strategy_set: StrategySet = StrategySet.FULL
    sparsify: Sparsifier = Sparsifier.NONE
    density: float | None = Field(default=None, gt=0, le=1)
    dampening: float = Field(default=0.0, ge=0, le=1)
    refine: RefineLevel = RefineLevel.NONE
    preset: str | None = None
    arch: str | None = None
    rank: int | None = Field(default=None, gt=0)
    rel_error: float | None = Field(default=None, gt=0, lt=1)   # target relative error for re-factorisation
    format: OutputFormat = OutputFormat.KOHYA
    dtype: OutputDtype = OutputDtype.FLOAT32
    base: str | None = None
    device: str = "cpu"
    seed: int = 0
    auto_strength: bool = True
    smoothing: float = Field(default=0.25, ge=0, le=1)
    use_excess: bool = True
    sample_size: int = Field(default=100_000, gt=0)
    basis_space: bool = False                   # run TIES/DARE on shared-basis coefficients (exactly low-rank)
    strict: bool = True
    allow_pickle: bool = False

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
