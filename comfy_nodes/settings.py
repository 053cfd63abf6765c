"""LoRA Optimizer Settings: one widget per option of ``loramerge merge`` (every `MergeConfig` field
but the inputs, which come from the LoRA Stack), with the library's defaults.

Widgets cannot hold "unset", so 0 stands for "automatic" on density, rank and error target, and
"auto" on preset and arch; base is a path or a name in the checkpoints/diffusion_models folders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from loramerge import strategies
from loramerge.architectures import TABLES
from loramerge.config import LoraInput, MergeConfig
from loramerge.enums import OutputDtype, RefineLevel, Sparsifier
from loramerge.enums import OutputFormat
from loramerge.presets import PRESETS
from loramerge.enums import Optimization, StrategySet

from .errors import user_errors

AUTO = "auto"
COMFY_DEVICE = "comfyui"  # the device ComfyUI computes on
DEVICES = ("cpu", COMFY_DEVICE)


@dataclass(frozen=True)
class Option:
    """One widget: its ComfyUI input spec and how its value becomes the `MergeConfig` field."""

    widget: str
    field: str
    spec: tuple
    to_config: Callable[[Any], Any] = lambda v: v


def _default(field: str):
    value = MergeConfig.model_fields[field].default
    return value.value if isinstance(value, Enum) else value


def _choice(field: str, values, tip: str, widget: str | None = None, none: str | None = None) -> Option:
    values = [v.value if isinstance(v, Enum) else v for v in values]
    default = _default(field)
    default = none if default is None else default
    return Option(widget or field, field, (values, {"default": default, "tooltip": tip}),
                  (lambda v: None if v == none else v))


def _number(kind: str, field: str, tip: str, lo, hi, step=None, widget: str | None = None,
            zero_is_none: bool = False) -> Option:
    default = _default(field)
    spec = {"default": 0 if default is None else default, "min": lo, "max": hi, "tooltip": tip}
    if step is not None:
        spec["step"] = step
    return Option(widget or field, field, (kind, spec), (lambda v: None if zero_is_none and v == 0 else v))


def _flag(field: str, tip: str) -> Option:
    return Option(field, field, ("BOOLEAN", {"default": _default(field), "tooltip": tip}))


OPTIONS: tuple[Option, ...] = (
    _choice("mode", [AUTO, *strategies.names()], "auto: a strategy per weight group from its statistics; "
            "a strategy name forces it on every group with 2+ LoRAs"),
    _choice("optimization", list(Optimization), "per_group decisions, one global decision, or plain addition"),
    _choice("strategy_set", list(StrategySet), "which strategies auto mode may choose"),
    _choice("sparsify", [s for s in Sparsifier], "DARE/DELLA sparsification before merging"),
    _number("FLOAT", "density", "keep fraction for TIES/sparsification; 0 = from the statistics", 0.0, 1.0, 0.01,
            zero_is_none=True),
    _number("FLOAT", "dampening", "DELLA dampening", 0.0, 1.0, 0.01),
    _choice("refine", list(RefineLevel), "post-merge refinement"),
    _choice("preset", [AUTO, *PRESETS], "decision thresholds; auto = from the architecture", none=AUTO),
    _choice("arch", [AUTO, *TABLES], "architecture of the LoRAs; auto = detected", none=AUTO),
    _number("INT", "rank", "rank of every merged group; 0 = exact (sum of the input ranks)", 0, 4096,
            zero_is_none=True),
    _number("FLOAT", "rel_error", "re-factorise each group to this relative error instead of a rank; 0 = off",
            0.0, 0.99, 0.001, widget="error_target", zero_is_none=True),
    _choice("format", list(OutputFormat), "file format Save Merged LoRA uses when set to 'as settings'"),
    _choice("dtype", list(OutputDtype), "precision of the tensors Save Merged LoRA writes (float16 halves the file)"),
    Option("base", "base", ("STRING", {"default": "", "tooltip": "base model .safetensors (a path, or a name in "
                                       "checkpoints / diffusion_models) to check every target against; empty = none"})),
    _choice("device", DEVICES, "where merges compute: the CPU or ComfyUI's device"),
    # not called "seed": ComfyUI's frontend gives widgets of that name a "randomize after run" control,
    # which would make every run a new merge
    _number("INT", "seed", "seed of every random choice (sampling, DARE, randomized SVD)", 0, 2**63 - 1,
            widget="merge_seed"),
    _flag("auto_strength", "scale the merged branches so their energy matches the inputs'"),
    _number("FLOAT", "smoothing", "block smoothing of the decision metrics (0 = off)", 0.0, 1.0, 0.01),
    _flag("use_excess", "decide on excess conflict (beyond what the cosine explains)"),
    _number("INT", "sample_size", "positions sampled for the sign statistics", 1, 10**8),
    _flag("basis_space", "TIES/pruning/consensus on shared-basis coefficients: exactly low-rank output"),
    _flag("strict", "refuse LoRA keys that do not fit the architecture or the model (off: apply the rest, "
                    "listed in the report)"),
    _flag("allow_pickle", "read .ckpt/.pt/.bin LoRAs with torch.load(weights_only=True)"),
)


def input_types() -> dict:
    return {"required": {o.widget: o.spec for o in OPTIONS}}


def to_options(values: dict, *, resolve_base: Callable[[str], str], resolve_device: Callable[[str], str]) -> dict:
    """Widget values -> `MergeConfig` keyword arguments, validated (raises LoraOptimizerError)."""
    options = {}
    for o in OPTIONS:
        value = values.get(o.widget, o.spec[1]["default"])
        options[o.field] = o.to_config(value)
    options["base"] = resolve_base(options["base"].strip()) if options["base"] and options["base"].strip() else None
    options["device"] = resolve_device(options["device"])
    with user_errors("LoRA Optimizer Settings"):
        MergeConfig(inputs=(LoraInput(path="settings-check"),), **options)
    return options
