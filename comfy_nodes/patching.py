"""From a merge result to ComfyUI patches, keyed by ComfyUI's own key map of the loaded model.

The merged groups are written the way ``loramerge merge --format kohya`` writes them (native
module names, re-fused projections, ``lora_down/lora_up`` + ``.alpha``, dense content as
``diff``/``diff_b``/``w_norm``/``b_norm``), as an in-memory state dict. ComfyUI's key maps
(``comfy.lora.model_lora_keys_unet/clip``) say which model weight each stem is, and its
``comfy.lora.load_lora`` turns the dict into patches, so low-rank groups stay ``lora`` patches and
every architecture ComfyUI loads is covered without loramerge knowing its internals.

This module only checks the dict against a key map and the model's weight shapes before ComfyUI
sees it. Key-map targets are a weight name, or — in ComfyUI versions newer than the one the tests
run — ``(weight name, (dim, offset, size))`` for one slice of a fused weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import torch

from loramerge.formats.writers import tensors_for

Slice = tuple[int, int, int]  # (dim, offset, size)
Target = Union[str, tuple[str, Slice]]  # what a ComfyUI key map gives for a stem

# Tensor-name suffixes the kohya writer emits (longest first: ".diff_b" before ".diff").
SUFFIXES = (
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_mid.weight",
    ".alpha",
    ".diff_b",
    ".diff",
    ".w_norm",
    ".b_norm",
)
TEXT_ENCODER_PREFIX = "lora_te"  # kohya: lora_te_, lora_te1_, lora_te2_, lora_te3_


def stem_of(key: str) -> str:
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise ValueError(f"not a tensor name the kohya writer emits: {key}")


def is_text_encoder(stem: str) -> bool:
    return stem.startswith(TEXT_ENCODER_PREFIX)


def kohya_state_dict(result) -> dict[str, torch.Tensor]:
    """The tensors ``result.save(path, "kohya")`` would write, without writing them."""
    return tensors_for(result.items(), result.inputs.table, "kohya")


def target_weight(target: Target) -> str:
    return target if isinstance(target, str) else target[0]


def target_shape(target: Target, shapes: Mapping[str, Sequence[int]], bias: bool = False) -> tuple[int, ...] | None:
    """Shape of what `target` addresses (a slice of a fused weight: that slice); None if absent."""
    name = target_weight(target)
    if bias:
        name = name[: -len(".weight")] + ".bias" if name.endswith(".weight") else name
    shape = shapes.get(name)
    if shape is None:
        return None
    shape = list(shape)
    if not isinstance(target, str) and not bias:
        dim, _, size = target[1]
        shape[dim] = size
    return tuple(shape)


def delta_shapes(sd: Mapping[str, torch.Tensor], stem: str) -> dict[str, tuple[int, ...]]:
    """{"weight": numel-defining shape, "bias": ...} of the ΔW the stem's tensors encode."""
    out = {}
    up, down = sd.get(f"{stem}.lora_up.weight"), sd.get(f"{stem}.lora_down.weight")
    if up is not None and down is not None:
        out["weight"] = (int(up.shape[0]), *down.shape[1:])
    for name, param in (("diff", "weight"), ("w_norm", "weight"), ("diff_b", "bias"), ("b_norm", "bias")):
        if f"{stem}.{name}" in sd:
            out[param] = tuple(sd[f"{stem}.{name}"].shape)
    return out


@dataclass
class Placement:
    """Which stems of the merged LoRA land on the model, and which do not (and why)."""

    placed: dict[str, Target] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # stems the key map does not know
    mismatched: list[str] = field(default_factory=list)  # "stem: LoRA shape vs model shape"
    skipped: list[str] = field(default_factory=list)  # text-encoder stems with no CLIP to patch

    def select(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors of the placed stems only (ComfyUI logs every key it cannot load)."""
        return {k: v for k, v in sd.items() if stem_of(k) in self.placed}


def place(
    sd: Mapping[str, torch.Tensor],
    key_map: Mapping[str, Target],
    shapes: Mapping[str, Sequence[int]],
    *,
    text_encoders: bool = True,
) -> Placement:
    """Check every stem of `sd` against `key_map` (stem -> target) and the model's weight `shapes`."""
    out = Placement()
    for stem in sorted({stem_of(k) for k in sd}):
        if is_text_encoder(stem) and not text_encoders:
            out.skipped.append(stem)
            continue
        target = key_map.get(stem)
        if target is None:
            out.missing.append(stem)
            continue
        problems = []
        for param, have in delta_shapes(sd, stem).items():
            want = target_shape(target, shapes, bias=param == "bias")
            if want is None or math.prod(want) != math.prod(have):
                problems.append(
                    f"{param} {list(have)} vs model {target_weight(target)} {'missing' if want is None else list(want)}"
                )
        if problems:
            out.mismatched.append(f"{stem}: " + "; ".join(problems))
        else:
            out.placed[stem] = target
    return out


def summarize(patches: Mapping) -> dict[str, int]:
    """Patch kinds by count ({"lora": n, "diff": m}); works on ComfyUI's tuples and newer adapter objects."""
    kinds: dict[str, int] = {}
    for p in patches.values():
        kind = p[0] if isinstance(p, tuple) else getattr(p, "name", type(p).__name__)
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))
