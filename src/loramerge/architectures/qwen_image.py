"""Qwen-Image (and Qwen-Image-Edit; 60 double-stream blocks).

The original checkpoint, ComfyUI and diffusers `QwenImageTransformer2DModel` all use the same
module names, so each module's diffusers spelling is its native path. Like diffusers FLUX it has
``transformer_blocks.N.attn.add_q_proj``; unlike FLUX it has ``img_mlp``/``txt_mlp``,
``img_mod.1``/``txt_mod.1`` and no single-stream blocks. Text encoder (Qwen2.5-VL) rows are left out.
"""

from __future__ import annotations

from .builder import Row, build_table, same, under
from .spec import ArchTable, Branch

BLOCKS = 60

BLOCK = tuple(
    same(
        "img_mod.1",
        "attn.to_q",
        "attn.to_k",
        "attn.to_v",
        "attn.to_out.0",
        "attn.norm_q",
        "attn.norm_k",
        "attn.add_q_proj",
        "attn.add_k_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn.norm_added_q",
        "attn.norm_added_k",
        "img_mlp.net.0.proj",
        "img_mlp.net.2",
        "txt_mod.1",
        "txt_mlp.net.0.proj",
        "txt_mlp.net.2",
    )
)

TOP = tuple(
    same(
        "img_in",
        "txt_in",
        "txt_norm",
        "time_text_embed.timestep_embedder.linear_1",
        "time_text_embed.timestep_embedder.linear_2",
        "norm_out.linear",
        "proj_out",
    )
)


def denoiser_rows() -> list[Row]:
    rows = list(TOP)
    for i in range(BLOCKS):
        rows += under(BLOCK, f"transformer_blocks.{i}")
    return rows


def qwen_image_table() -> ArchTable:
    return build_table(
        "qwen_image",
        family="Qwen-Image",
        preset="dit",
        branches={Branch.DENOISER: denoiser_rows()},
        markers=("img_mlp.net", "txt_mlp.net", "img_mod.1", "txt_mod.1", "txt_norm"),
        priority=90,
        diffusers_prefix={Branch.DENOISER: "transformer"},
        kohya_prefix={Branch.DENOISER: "lora_unet"},
    )
