"""User-facing merge configuration (validated), shared by the CLI, the API, recipes and ComfyUI."""

from __future__ import annotations

import math
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


def check_patterns(patterns: tuple[str, ...] | list[str], flag: str) -> None:
    """Refuse, before any work, a target filter that is not a regular expression (`OptionError`)."""
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            from .errors import OptionError  # here: `config` imports only what the option table needs

            raise OptionError(
                f"{flag} '{p}' is not a regular expression ({exc}); escape special characters with a "
                f"backslash, e.g. '{re.escape(p)}' to match the text as written"
            ) from None


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
    block_weights: str | None = None  # "PRESET" or "1,0,0,...": one weight per block (architectures/blocks.py)

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

    @field_validator("block_weights")
    @classmethod
    def _block_weights_syntax(cls, v):
        if v is not None:
            check_block_weights(v, v)
        return v

    @property
    def spec(self) -> str:
        """The ``PATH:MODEL[,TE][@BLOCKS]`` string of this input (what `parse` reads back)."""
        te = "" if self.strength_text_encoder is None else f",{self.strength_text_encoder!r}"
        blocks = "" if self.block_weights is None else f"@{self.block_weights}"
        return f"{self.path}:{self.strength_model!r}{te}{blocks}"

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, v, info):
        check_patterns(v, f"--{info.field_name}")
        return v

    @classmethod
    def parse(cls, spec: str) -> LoraInput:
        """``PATH[:MODEL[,TE]][@BLOCKS]`` as on the command line (see `INPUT_SYNTAX`). A Windows drive
        colon is kept; a colon followed by a path separator, or an existing file's whole name, is a path."""
        head, sep, tail = spec.rpartition(":")
        if not sep or not head or re.fullmatch(r"[A-Za-z]", head) or re.search(r"[/\\]", tail) or _is_file(spec):
            return cls(path=spec)
        strengths, at, blocks = tail.partition("@")
        model, te = _strengths(spec, strengths)
        if at:
            check_block_weights(spec, blocks)
        return cls(path=head, strength_model=model, strength_text_encoder=te, block_weights=blocks if at else None)


def _is_file(spec: str) -> bool:
    try:
        return Path(spec).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


INPUT_SYNTAX = (
    "PATH[:MODEL[,TE]][@BLOCKS], e.g. style.safetensors:0.8, a.safetensors:1,0.5, "
    "a.safetensors:1@OUTALL or a.safetensors:0.7@1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"
)


def _syntax_error(spec: str, problem: str) -> Exception:
    from .errors import InputSyntaxError  # here: importing config loads nothing beyond enums/options

    return InputSyntaxError(spec, problem, syntax=INPUT_SYNTAX)


def _strengths(spec: str, text: str) -> tuple[float, float | None]:
    """The model and text-encoder strengths of ``MODEL[,TE]``; InputSyntaxError saying what is wrong."""
    parts = text.split(",")
    if len(parts) > 2:
        raise _syntax_error(spec, f"{len(parts)} strengths '{text}'; give at most two (model, text encoder)")
    values = []
    for what, part in zip(("model", "text-encoder"), parts):
        if not part.strip():
            raise _syntax_error(spec, f"the {what} strength is empty in '{text}'")
        try:
            value = float(part)
        except ValueError:
            raise _syntax_error(spec, f"the {what} strength '{part}' is not a number") from None
        if not math.isfinite(value):
            raise _syntax_error(spec, f"the {what} strength '{part}' is not a finite number")
        values.append(value)
    return values[0], (values[1] if len(values) > 1 else None)


def check_block_weights(spec: str, blocks: str) -> None:
    """``PRESET`` (a name) or a comma list of finite numbers; lengths are checked against the
    architecture once it is known (`architectures.blocks.resolve`)."""
    if re.fullmatch(r"[A-Za-z][\w.+-]*", blocks):
        return
    for part in blocks.split(","):
        try:
            ok = math.isfinite(float(part))
        except ValueError:
            ok = False
        if not ok:
            raise _syntax_error(
                spec, f"block weights '@{blocks}': '{part}' is not a finite number (give a preset name or numbers)"
            )


InputLike = str | Path | LoraInput | dict | tuple


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
        Rules.MEASURED,
        "auto mode's decision rules: measured (denoiser groups whose LoRAs compose or partly agree summed, "
        "no scaling of near-orthogonal LoRAs) or paper (the seed's tree, reproduces the reference)",
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
    device: str = option(
        "cpu",
        "where groups merged on dense deltas compute (cpu, cuda, cuda:N, mps, xpu); exact low-rank and "
        "shared-basis groups and the statistics are computed on the CPU",
    )
    # not called "seed" in ComfyUI: its frontend gives widgets of that name a "randomize after run" control
    seed: int = option(
        0, "seed of every random choice (sampling, DARE, randomized SVD)", ge=0, le=2**63 - 1, widget="merge_seed"
    )
    auto_strength: bool = option(
        True, "scale the merged branches so their energy matches the inputs'", cli="--auto-strength/--no-auto-strength"
    )
    multiplier: float = option(
        1.0,
        "global strength λ of the merged LoRA: every merged group is scaled by it after the merge, averages "
        "included (preserved LoRAs are added unscaled); the AutoTuner sweeps it when an evaluator measures the result",
        gt=0,
        le=10,
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
    block_weights_file: str | None = option(
        None,
        "file of block-weight presets (NAME:v1,v2,... per line, A1111 lbwpresets.txt style) for PATH:S@NAME",
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
