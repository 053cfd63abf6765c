"""FLUX.1 (dev/schnell and fine-tunes): BFL module names, diffusers `FluxTransformer2DModel` aliases.

BFL fuses q, k, v into ``img_attn.qkv``/``txt_attn.qkv`` and, in the single-stream blocks, q, k, v
and the MLP input into ``linear1`` (row shares 1,1,1,4); diffusers keeps them as separate Linear
layers, so each diffusers spelling places on one component of the fused weight.

Not aliased: diffusers ``norm_out.linear`` is ``final_layer.adaLN_modulation.1`` with its two row
halves swapped (shift, scale vs scale, shift), which no rename expresses; XLabs single-block
``processor.qkv_lora`` covers q, k and v of ``linear1`` at once (three of four components).
"""

from __future__ import annotations

from .builder import QKV, QKV_MLP4, Row, build_table, under
from .spec import ArchTable, Branch
from .text_encoders import clip_l, t5_xxl

DOUBLE_BLOCKS = 19
SINGLE_BLOCKS = 38


def _stream(
    native: str, diffusers_attn: tuple[str, str, str], out: str, mlp: str, mod: str, norm_q: str, norm_k: str
) -> tuple[Row, ...]:
    q, k, v = diffusers_attn
    return (
        Row(f"{native}_mod.lin", mod),
        Row(f"{native}_attn.qkv", {"q": f"attn.{q}", "k": f"attn.{k}", "v": f"attn.{v}"}, fused=QKV),
        Row(f"{native}_attn.norm.query_norm", f"attn.{norm_q}"),
        Row(f"{native}_attn.norm.key_norm", f"attn.{norm_k}"),
        Row(f"{native}_attn.proj", f"attn.{out}"),
        Row(f"{native}_mlp.0", f"{mlp}.net.0.proj"),
        Row(f"{native}_mlp.2", f"{mlp}.net.2"),
    )


_IMG = _stream("img", ("to_q", "to_k", "to_v"), "to_out.0", "ff", "norm1.linear", "norm_q", "norm_k")
_TXT = _stream(
    "txt",
    ("add_q_proj", "add_k_proj", "add_v_proj"),
    "to_add_out",
    "ff_context",
    "norm1_context.linear",
    "norm_added_q",
    "norm_added_k",
)

# XLabs (x-flux) trainer spellings of the double-block attention modules.
_XLABS = {
    "img_attn.qkv": "processor.qkv_lora1",
    "txt_attn.qkv": "processor.qkv_lora2",
    "img_attn.proj": "processor.proj_lora1",
    "txt_attn.proj": "processor.proj_lora2",
}
DOUBLE_BLOCK = tuple(r.with_other(_XLABS[r.native]) if r.native in _XLABS else r for r in _IMG + _TXT)

SINGLE_BLOCK = (
    Row("linear1", {"q": "attn.to_q", "k": "attn.to_k", "v": "attn.to_v", "mlp": "proj_mlp"}, fused=QKV_MLP4),
    Row("linear2", "proj_out", ("processor.proj_lora",)),
    Row("modulation.lin", "norm.linear"),
    Row("norm.query_norm", "attn.norm_q"),
    Row("norm.key_norm", "attn.norm_k"),
)

TOP = (
    Row("img_in", "x_embedder"),
    Row("txt_in", "context_embedder"),
    Row("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
    Row("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
    Row("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
    Row("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
    Row("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
    Row("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
    Row("final_layer.linear", "proj_out"),
    Row("final_layer.adaLN_modulation.1", None),  # diffusers norm_out.linear: halves swapped
)


def denoiser_rows() -> list[Row]:
    rows = list(TOP)
    for i in range(DOUBLE_BLOCKS):
        rows += under(DOUBLE_BLOCK, f"double_blocks.{i}", f"transformer_blocks.{i}")
    for i in range(SINGLE_BLOCKS):
        rows += under(SINGLE_BLOCK, f"single_blocks.{i}", f"single_transformer_blocks.{i}")
    return rows


def flux_table() -> ArchTable:
    return build_table(
        "flux",
        family="FLUX.1",
        preset="dit",
        branches={Branch.DENOISER: denoiser_rows(), Branch.TE1: clip_l(), Branch.TE3: t5_xxl()},
        markers=(
            "single_transformer_blocks",
            "img_attn.qkv",
            "txt_attn.qkv",
            "img_mod.lin",
            "txt_mod.lin",
            "img_mlp.0",
            "modulation.lin",
            "linear1",
            "processor",
        ),
        priority=100,
        diffusers_prefix={Branch.DENOISER: "transformer", Branch.TE1: "text_encoder", Branch.TE3: "text_encoder_2"},
        kohya_prefix={Branch.DENOISER: "lora_unet", Branch.TE1: "lora_te1", Branch.TE3: "lora_te3"},
    )
