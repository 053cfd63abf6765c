"""Small helpers shared by the node tests."""

from __future__ import annotations

import torch

from loramerge.config import LoraInput

SDXL_PAIR = (("sdxl_peft_diffusers", 0.8, 0.6), ("sdxl_lycoris_locon", 0.5, 0.5))


def stack(pack, *entries, **options):
    """A LORA_STACK built by chaining LoRA Stack nodes: entries are (fixture name, model, clip)."""
    value = None
    for name, strength_model, strength_clip in entries:
        (value,) = pack.LoraStack().stack(f"{name}.safetensors", strength_model, strength_clip,
                                          options.get("preserve", False), options.get("include", ""),
                                          options.get("exclude", ""), value)
    return value


def library_inputs(loras, entries) -> list[LoraInput]:
    """The same LoRAs as the stack, as loramerge.merge is given them directly."""
    return [LoraInput(path=str(loras / f"{name}.safetensors"), strength_model=sm, strength_text_encoder=sc,
                      name=f"{name}.safetensors") for name, sm, sc in entries]


def expected_from_groups(result, strength_model: float, strength_clip: float) -> dict[str, torch.Tensor]:
    """ΔW per canonical group key (``key`` or ``key:bias``) at the output strengths."""
    te = result.inputs.is_text_encoder
    return {g.key: g.patch.dense().float() * (strength_clip if te(g.key) else strength_model) for g in result.groups}


def patch_kinds(patcher) -> set[str]:
    return {p[1][0] for patches in patcher.patches.values() for p in patches}
