"""Z-Image (Lumina2-style NextDiT, 30 layers + 2 noise- and 2 context-refiner blocks):
native names as the original checkpoint and ComfyUI use them, diffusers `ZImageTransformer2DModel`
aliases.

The native attention fuses q, k, v into ``attention.qkv`` (Z-Image has as many key/value heads as
query heads, so the shares are equal); diffusers splits it into ``to_q``/``to_k``/``to_v``.
diffusers keys the patch embedder and final layer by patch size (``all_x_embedder.2-1``); the
released models use patch 2, frame patch 1. Context-refiner blocks have no modulation.
"""

from __future__ import annotations

from .builder import QKV, Row, build_table, same, under
from .spec import ArchTable, Branch

LAYERS = 30
REFINER_LAYERS = 2

BLOCK = (
    Row("attention.qkv", {"q": "attention.to_q", "k": "attention.to_k", "v": "attention.to_v"}, fused=QKV),
    Row("attention.out", "attention.to_out.0"),
    Row("attention.q_norm", "attention.norm_q"),
    Row("attention.k_norm", "attention.norm_k"),
    *same(
        "feed_forward.w1",
        "feed_forward.w2",
        "feed_forward.w3",
        "attention_norm1",
        "attention_norm2",
        "ffn_norm1",
        "ffn_norm2",
    ),
)
MODULATION = Row("adaLN_modulation.0", "adaLN_modulation.0")

TOP = (
    Row("x_embedder", "all_x_embedder.2-1"),
    Row("final_layer.linear", "all_final_layer.2-1.linear"),
    Row("final_layer.adaLN_modulation.1", "all_final_layer.2-1.adaLN_modulation.1"),
    *same("cap_embedder.0", "cap_embedder.1", "t_embedder.mlp.0", "t_embedder.mlp.2"),
)


def denoiser_rows() -> list[Row]:
    rows = list(TOP)
    for i in range(LAYERS):
        rows += under(BLOCK + (MODULATION,), f"layers.{i}")
    for i in range(REFINER_LAYERS):
        rows += under(BLOCK + (MODULATION,), f"noise_refiner.{i}")
        rows += under(BLOCK, f"context_refiner.{i}")
    return rows


def zimage_table() -> ArchTable:
    return build_table(
        "zimage",
        family="Z-Image",
        preset="dit",
        branches={Branch.DENOISER: denoiser_rows()},
        markers=(
            "attention.qkv",
            "attention.to_q",
            "feed_forward",
            "noise_refiner",
            "context_refiner",
            "all_x_embedder",
            "adaLN_modulation.0",
        ),
        priority=70,
        diffusers_prefix={Branch.DENOISER: "transformer"},
        kohya_prefix={Branch.DENOISER: "lora_unet"},
    )
