"""LTX-Video 0.9.x (2B: 28 blocks, 13B: 48): names of the original Lightricks checkpoint and
ComfyUI, diffusers `LTXVideoTransformer3DModel` aliases.

The blocks are spelled alike in both (``transformer_blocks.N.attn1.to_q``); diffusers renames the
patch embedder (``patchify_proj`` -> ``proj_in``), the timestep embedder (``adaln_single`` ->
``time_embed``) and the q/k norms (``q_norm`` -> ``norm_q``). LTX-2 is a different model and is
not covered. Text encoder (T5) rows are left out.
"""

from __future__ import annotations

from .builder import Row, build_table, same, under
from .spec import ArchTable, Branch

BLOCKS = 48
SMALL_BLOCKS = 28  # 2B


def _attention(name: str) -> tuple[Row, ...]:
    return (
        *same(f"{name}.to_q", f"{name}.to_k", f"{name}.to_v", f"{name}.to_out.0"),
        Row(f"{name}.q_norm", f"{name}.norm_q"),
        Row(f"{name}.k_norm", f"{name}.norm_k"),
    )


BLOCK = (*_attention("attn1"), *_attention("attn2"), *same("ff.net.0.proj", "ff.net.2"))

TOP = (
    Row("patchify_proj", "proj_in"),
    Row("adaln_single.emb.timestep_embedder.linear_1", "time_embed.emb.timestep_embedder.linear_1"),
    Row("adaln_single.emb.timestep_embedder.linear_2", "time_embed.emb.timestep_embedder.linear_2"),
    Row("adaln_single.linear", "time_embed.linear"),
    *same("caption_projection.linear_1", "caption_projection.linear_2", "proj_out"),
)


def denoiser_rows() -> list[Row]:
    rows = list(TOP)
    for i in range(BLOCKS):
        rows += under(BLOCK, f"transformer_blocks.{i}")
    return rows


def ltx_table() -> ArchTable:
    return build_table(
        "ltx",
        family="LTX-Video",
        preset="dit",
        branches={Branch.DENOISER: denoiser_rows()},
        markers=("attn1", "attn2", "adaln_single", "patchify_proj", "caption_projection", "time_embed.emb"),
        priority=60,
        diffusers_prefix={Branch.DENOISER: "transformer"},
        kohya_prefix={Branch.DENOISER: "lora_unet"},
    )
