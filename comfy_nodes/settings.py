"""LoRA Optimizer Settings: one widget per row of the library's option table
(`loramerge.options.OPTIONS`, i.e. every `MergeConfig` field but the inputs, which come from the
LoRA Stack), with the library's names, defaults, help and choices.

Widgets cannot hold "unset", so 0 stands for "automatic" on optional numbers (density, rank, error
target) and "auto" on optional choices (preset, arch); base is a path or a name in the
checkpoints/diffusion_models folders; device is the CPU or ComfyUI's own device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loramerge.config import LoraInput, MergeConfig
from loramerge.options import AUTO, OPTIONS, OptionSpec

from .errors import user_errors

COMFY_DEVICE = "comfyui"  # the device ComfyUI computes on
DEVICES = ("cpu", COMFY_DEVICE)
_INT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Option:
    """One widget: its ComfyUI input spec and how its value becomes the `MergeConfig` field."""

    widget: str
    field: str
    spec: tuple
    to_config: Callable[[Any], Any] = lambda v: v


def _unset_is(marker: Any) -> Callable[[Any], Any]:
    return lambda v: None if v == marker else v


def widget_of(o: OptionSpec) -> Option:
    """The ComfyUI widget of one option-table row."""
    tip = o.help
    default = o.default_value
    choices = list(DEVICES) if o.field == "device" else o.choices()
    if choices is not None:
        return Option(
            o.widget,
            o.field,
            (choices, {"default": AUTO if default is None else default, "tooltip": tip}),
            _unset_is(AUTO) if o.optional else (lambda v: v),
        )
    if o.kind is bool:
        return Option(o.widget, o.field, ("BOOLEAN", {"default": default, "tooltip": tip}))
    if o.kind is str:
        return Option(
            o.widget,
            o.field,
            ("STRING", {"default": default or "", "tooltip": tip}),
            _unset_is("") if o.optional else (lambda v: v),
        )
    spec: dict[str, Any] = {
        "default": 0 if default is None else default,
        "tooltip": tip,
        "min": 0 if o.lo is None else o.lo,
        "max": (_INT_MAX if o.kind is int else 1.0) if o.hi is None else o.hi,
    }
    if o.kind is float:
        spec["step"] = o.step or 0.01
        if o.hi_open:  # the bound itself is not allowed: stop one default step short of it
            spec["max"] = round(spec["max"] - 0.01, 10)
    return Option(
        o.widget, o.field, ("FLOAT" if o.kind is float else "INT", spec), _unset_is(0) if o.optional else (lambda v: v)
    )


WIDGETS: tuple[Option, ...] = tuple(widget_of(o) for o in OPTIONS)


def input_types() -> dict:
    return {"required": {o.widget: o.spec for o in WIDGETS}}


def to_options(values: dict, *, resolve_base: Callable[[str], str], resolve_device: Callable[[str], str]) -> dict:
    """Widget values -> `MergeConfig` keyword arguments, validated (raises LoraOptimizerError)."""
    options = {}
    for o in WIDGETS:
        value = values.get(o.widget, o.spec[1]["default"])
        options[o.field] = o.to_config(value)
    base = (options["base"] or "").strip()
    options["base"] = resolve_base(base) if base else None
    options["device"] = resolve_device(options["device"])
    with user_errors("LoRA Optimizer Settings"):
        MergeConfig(inputs=(LoraInput(path="settings-check"),), **options)
    return options
