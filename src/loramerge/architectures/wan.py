"""Wan 2.1 / 2.2 (T2V, I2V, TI2V; 1.3B/5B: 30 blocks, 14B/A14B: 40): Wan-native names,
diffusers `WanTransformer3DModel` aliases.

Native names are the original Wan checkpoint's, which ComfyUI, musubi-tuner
(``lora_unet_blocks_0_self_attn_q``) and diffusion-pipe use. The image-conditioning modules
(``cross_attn.k_img``/``v_img``, ``img_emb``) exist only in I2V/FLF2V models. Text encoder (UMT5)
rows are left out: LoRAs for it are rare and no trainer convention is settled.
Not covered: VACE's ``vace_blocks`` and Wan-Animate's extra modules.
"""

from __future__ import annotations

from .builder import Row, build_table, under
from .spec import ArchTable, Branch

BLOCKS = 40
SMALL_BLOCKS = 30  # 1.3B and 5B

BLOCK = (
    Row("self_attn.q", "attn1.to_q"),
    Row("self_attn.k", "attn1.to_k"),
    Row("self_attn.v", "attn1.to_v"),
    Row("self_attn.o", "attn1.to_out.0"),
    Row("self_attn.norm_q", "attn1.norm_q"),
    Row("self_attn.norm_k", "attn1.norm_k"),
    Row("norm3", "norm2"),  # the affine norm before cross-attention (diffusers renumbers it)
    Row("cross_attn.q", "attn2.to_q"),
    Row("cross_attn.k", "attn2.to_k"),
    Row("cross_attn.v", "attn2.to_v"),
    Row("cross_attn.o", "attn2.to_out.0"),
    Row("cross_attn.norm_q", "attn2.norm_q"),
    Row("cross_attn.norm_k", "attn2.norm_k"),
    Row("cross_attn.k_img", "attn2.add_k_proj"),
    Row("cross_attn.v_img", "attn2.add_v_proj"),
    Row("cross_attn.norm_k_img", "attn2.norm_added_k"),
    Row("ffn.0", "ffn.net.0.proj"),
    Row("ffn.2", "ffn.net.2"),
)

TOP = (
    Row("patch_embedding", "patch_embedding"),
    Row("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    Row("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    Row("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    Row("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    Row("time_projection.1", "condition_embedder.time_proj"),
    Row("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    Row("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    Row("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    Row("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    Row("head.head", "proj_out"),
)


def denoiser_rows() -> list[Row]:
    rows = list(TOP)
    for i in range(BLOCKS):
        rows += under(BLOCK, f"blocks.{i}")
    return rows


def wan_table() -> ArchTable:
    return build_table(
        "wan",
        family="Wan 2.1/2.2",
        preset="dit",
        branches={Branch.DENOISER: denoiser_rows()},
        markers=("self_attn.q", "cross_attn", "ffn.0", "ffn.net", "head.head", "condition_embedder.time_proj"),
        priority=80,
        diffusers_prefix={Branch.DENOISER: "transformer"},
        kohya_prefix={Branch.DENOISER: "lora_unet"},
    )
