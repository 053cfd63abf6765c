"""HunyuanVideo (20 double-, 40 single-stream blocks, 2 token-refiner blocks): names of the
original Tencent checkpoint (also musubi-tuner's and diffusion-pipe's), diffusers
`HunyuanVideoTransformer3DModel` aliases.

Native attention is fused like FLUX but spelled ``img_attn_qkv`` (``single_blocks.N.linear1``:
q, k, v, MLP input). ComfyUI runs HunyuanVideo on its FLUX layers and renames the checkpoint on
load (``img_attn_qkv`` -> ``img_attn.qkv``, ``img_mlp.fc1`` -> ``img_mlp.0``, ``img_mod.linear`` ->
``img_mod.lin``, ``time_in.mlp.0`` -> ``time_in.in_layer``...); those spellings are OTHER aliases,
so files written by ComfyUI-based trainers place too. They coincide with FLUX's native names:
detection separates the two by block count and by the markers only HunyuanVideo has.

Not aliased: diffusers ``norm_out.linear`` is ``final_layer.adaLN_modulation.1`` with its row
halves swapped (see flux.py). Text encoders (LLaVA-Llama, CLIP-L) are left out.
"""

from __future__ import annotations

from .builder import QKV, QKV_MLP4, Row, build_table, under
from .spec import ArchTable, Branch, Style

DOUBLE_BLOCKS = 20
SINGLE_BLOCKS = 40
REFINER_BLOCKS = 2


def _stream(s: str, qkv: tuple[str, str, str], out: str, norms: tuple[str, str], mlp: str, mod: str) -> tuple[Row, ...]:
    q, k, v = qkv
    return (
        Row(f"{s}_mod.linear", mod, (f"{s}_mod.lin",)),
        Row(f"{s}_attn_qkv", {"q": f"attn.{q}", "k": f"attn.{k}", "v": f"attn.{v}"}, (f"{s}_attn.qkv",), QKV),
        Row(f"{s}_attn_q_norm", f"attn.{norms[0]}", (f"{s}_attn.norm.query_norm",)),
        Row(f"{s}_attn_k_norm", f"attn.{norms[1]}", (f"{s}_attn.norm.key_norm",)),
        Row(f"{s}_attn_proj", f"attn.{out}", (f"{s}_attn.proj",)),
        Row(f"{s}_mlp.fc1", f"{mlp}.net.0.proj", (f"{s}_mlp.0",)),
        Row(f"{s}_mlp.fc2", f"{mlp}.net.2", (f"{s}_mlp.2",)),
    )


DOUBLE_BLOCK = _stream(
    "img", ("to_q", "to_k", "to_v"), "to_out.0", ("norm_q", "norm_k"), "ff", "norm1.linear"
) + _stream(
    "txt",
    ("add_q_proj", "add_k_proj", "add_v_proj"),
    "to_add_out",
    ("norm_added_q", "norm_added_k"),
    "ff_context",
    "norm1_context.linear",
)

SINGLE_BLOCK = (
    Row("linear1", {"q": "attn.to_q", "k": "attn.to_k", "v": "attn.to_v", "mlp": "proj_mlp"}, fused=QKV_MLP4),
    Row("linear2", "proj_out"),
    Row("q_norm", "attn.norm_q", ("norm.query_norm",)),
    Row("k_norm", "attn.norm_k", ("norm.key_norm",)),
    Row("modulation.linear", "norm.linear", ("modulation.lin",)),
)

REFINER_BLOCK = (
    Row("norm1", "norm1"),
    Row("self_attn_qkv", {"q": "attn.to_q", "k": "attn.to_k", "v": "attn.to_v"}, ("self_attn.qkv",), QKV),
    Row("self_attn_proj", "attn.to_out.0", ("self_attn.proj",)),
    Row("norm2", "norm2"),
    Row("mlp.fc1", "ff.net.0.proj", ("mlp.0",)),
    Row("mlp.fc2", "ff.net.2", ("mlp.2",)),
    Row("adaLN_modulation.1", "norm_out.linear"),
)

_TE = "time_text_embed.timestep_embedder"
TOP = (
    Row("img_in.proj", "x_embedder.proj"),
    Row("time_in.mlp.0", f"{_TE}.linear_1", ("time_in.in_layer",)),
    Row("time_in.mlp.2", f"{_TE}.linear_2", ("time_in.out_layer",)),
    Row("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
    Row("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
    Row("guidance_in.mlp.0", "time_text_embed.guidance_embedder.linear_1", ("guidance_in.in_layer",)),
    Row("guidance_in.mlp.2", "time_text_embed.guidance_embedder.linear_2", ("guidance_in.out_layer",)),
    Row("txt_in.input_embedder", "context_embedder.proj_in"),
    Row("txt_in.t_embedder.mlp.0", f"context_embedder.{_TE}.linear_1", ("txt_in.t_embedder.in_layer",)),
    Row("txt_in.t_embedder.mlp.2", f"context_embedder.{_TE}.linear_2", ("txt_in.t_embedder.out_layer",)),
    Row(
        "txt_in.c_embedder.linear_1",
        "context_embedder.time_text_embed.text_embedder.linear_1",
        ("txt_in.c_embedder.in_layer",),
    ),
    Row(
        "txt_in.c_embedder.linear_2",
        "context_embedder.time_text_embed.text_embedder.linear_2",
        ("txt_in.c_embedder.out_layer",),
    ),
    Row("final_layer.linear", "proj_out"),
    Row("final_layer.adaLN_modulation.1", None),  # diffusers norm_out.linear: halves swapped
)


def denoiser_rows() -> list[Row]:
    rows = list(TOP)
    for i in range(REFINER_BLOCKS):
        rows += under(
            REFINER_BLOCK,
            f"txt_in.individual_token_refiner.blocks.{i}",
            f"context_embedder.token_refiner.refiner_blocks.{i}",
        )
    for i in range(DOUBLE_BLOCKS):
        rows += under(DOUBLE_BLOCK, f"double_blocks.{i}", f"transformer_blocks.{i}")
    for i in range(SINGLE_BLOCKS):
        rows += under(SINGLE_BLOCK, f"single_blocks.{i}", f"single_transformer_blocks.{i}")
    return rows


def hunyuan_video_table() -> ArchTable:
    return build_table(
        "hunyuan_video",
        family="HunyuanVideo",
        preset="dit",
        branches={Branch.DENOISER: denoiser_rows()},
        # Only spellings FLUX lacks even with underscores (kohya FLUX also writes img_attn_qkv).
        markers=(
            "img_mlp.fc1",
            "img_mlp.fc2",
            "txt_mlp.fc1",
            "txt_mlp.fc2",
            "img_mod.linear",
            "txt_mod.linear",
            "modulation.linear",
            "individual_token_refiner",
            "token_refiner",
            "x_embedder.proj",
        ),
        priority=20,
        diffusers_prefix={Branch.DENOISER: "transformer"},
        kohya_prefix={Branch.DENOISER: "lora_unet"},
        # --format comfy writes ComfyUI's own names (the OTHER aliases above): ComfyUI 0.3.64 maps
        # LoRA keys from the original names only partly (not time_in.mlp.0, txt_in.t_embedder.mlp.0),
        # and every diffusion_model.<its own name> always (docs/CLIENTS.md).
        comfy_style={Branch.DENOISER: Style.OTHER},
    )
