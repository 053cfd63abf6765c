"""Tiny SDXL checkpoints in the layouts users have: a diffusers folder (the models' own state dicts)
and a single-file LDM checkpoint named by ComfyUI's own maps (``model.diffusion_model.*``,
``conditioner.embedders.N.transformer.*``), optionally with a truth ΔW added to its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.fixtures import tiny_clip_text_encoder, tiny_sdxl_unet, truth_key

COMPONENTS = {
    "unet": ("diffusion_pytorch_model.safetensors", tiny_sdxl_unet),
    "text_encoder": ("model.safetensors", lambda: tiny_clip_text_encoder("l")),
    "text_encoder_2": ("model.safetensors", lambda: tiny_clip_text_encoder("g")),
}
# ComfyUI's CLIP holder name -> (fixture component, single-file checkpoint prefix)
LDM_CLIPS = {
    "clip_l": ("text_encoder", "conditioner.embedders.0."),
    "clip_g": ("text_encoder_2", "conditioner.embedders.1."),
}


def truth_name(component: str, key: str) -> str:
    module, _, param = key.rpartition(".")
    return truth_key(component, module) + ("" if param == "weight" else f"#{param}")


def added(sd: dict[str, torch.Tensor], truth: dict[str, torch.Tensor] | None, name_of) -> dict[str, torch.Tensor]:
    """`sd` with truth[name_of(key)] added (in float64, stored in the tensor's dtype) where there is one."""
    out = {}
    for key, value in sd.items():
        delta = (truth or {}).get(name_of(key))
        out[key] = value if delta is None else (value.double() + delta.double().reshape(value.shape)).to(value.dtype)
    return {k: v.detach().contiguous() for k, v in out.items()}


def diffusers_folder(root: Path, truth: dict[str, torch.Tensor] | None = None) -> Path:
    for component, (filename, build) in COMPONENTS.items():
        (root / component).mkdir(parents=True)
        sd = added(build().state_dict(), truth, lambda k, c=component: truth_name(c, k))
        save_file(sd, str(root / component / filename))
    return root


def ldm_state(comfy_sdxl) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """ComfyUI's SDXL state as a single-file checkpoint: {ckpt key: tensor}, {ckpt key: truth name}."""
    sd, names = {}, {}
    for key, value in comfy_sdxl.before.items():
        if key.startswith("diffusion_model."):
            ckpt = "model." + key
        elif key.split(".", 1)[0] in LDM_CLIPS and ".transformer.text_model." in key:
            holder, rest = key.split(".", 1)
            ckpt = LDM_CLIPS[holder][1] + rest
        else:
            continue
        sd[ckpt] = value
        if key in comfy_sdxl.truth_of:
            names[ckpt] = comfy_sdxl.truth_of[key]
    return sd, names


def ldm_checkpoint(path: Path, comfy_sdxl, truth: dict[str, torch.Tensor] | None = None) -> Path:
    sd, names = ldm_state(comfy_sdxl)
    save_file(added(sd, truth, names.get), str(path))
    return path


def comfy_key(ckpt_key: str) -> str:
    """The ComfyUI model key of a single-file checkpoint key (inverse of `ldm_state`)."""
    if ckpt_key.startswith("model."):
        return ckpt_key[len("model.") :]
    for holder, (_, prefix) in LDM_CLIPS.items():
        if ckpt_key.startswith(prefix):
            return f"{holder}.{ckpt_key[len(prefix) :]}"
    raise KeyError(ckpt_key)
