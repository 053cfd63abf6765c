"""ACE-Step music models: v1 (3.5B linear-attention DiT) and v1.5 (Qwen3-style DiT) in one table;
their module names do not overlap.

v1: names of the original ACE-Step checkpoint, which ComfyUI keeps. They are already diffusers-style
(the model was written on diffusers' Attention), and diffusers has no class for it, so each
module's diffusers spelling is its native path. The official trainer adapts the attention
projections and, in the lyric encoder, ``linear_q/k/v``.

v1.5: ComfyUI/the checkpoint nest the DiT under ``decoder.``; the official trainer wraps the DiT
alone with PEFT (``base_model.model.layers.N.self_attn.q_proj``), so the paths without
``decoder.`` are OTHER aliases. diffusers `AceStepTransformer1DModel` is the DiT with
``to_q``/``to_out.0``/``norm_q`` and ``proj_in_conv``/``proj_out_conv``. The v1.5 condition
encoder, audio tokenizer and detokenizer are left out.
"""

from __future__ import annotations

from .builder import Row, build_table, same, under
from .spec import ArchTable, Branch

V1_BLOCKS = 28
V1_LYRIC_BLOCKS = 6
V15_LAYERS = 32

V1_BLOCK = tuple(
    same(
        "attn.to_q",
        "attn.to_k",
        "attn.to_v",
        "attn.to_out.0",
        "cross_attn.to_q",
        "cross_attn.to_k",
        "cross_attn.to_v",
        "cross_attn.to_out.0",
        "cross_attn.add_q_proj",
        "cross_attn.add_k_proj",
        "cross_attn.add_v_proj",
        "cross_attn.to_add_out",
        "ff.inverted_conv.conv",
        "ff.depth_conv.conv",
        "ff.point_conv.conv",
    )
)
V1_LYRIC_BLOCK = tuple(
    same(
        "self_attn.linear_q",
        "self_attn.linear_k",
        "self_attn.linear_v",
        "self_attn.linear_out",
        "self_attn.linear_pos",
        "feed_forward.w_1",
        "feed_forward.w_2",
        "norm_ff",
        "norm_mha",
    )
)
V1_TOP = tuple(
    same(
        "timestep_embedder.linear_1",
        "timestep_embedder.linear_2",
        "t_block.1",
        "speaker_embedder",
        "genre_embedder",
        "lyric_proj",
        *(f"projectors.{p}.{i}" for p in (0, 1) for i in (0, 2, 4)),
        "proj_in.early_conv_layers.0",
        "proj_in.early_conv_layers.1",
        "proj_in.early_conv_layers.2",
        "final_layer.linear",
        "lyric_encoder.embed.out.0",
        "lyric_encoder.embed.out.1",
        "lyric_encoder.after_norm",
    )
)


def _v15_attention(name: str) -> tuple[Row, ...]:
    return (
        Row(f"{name}.q_proj", f"{name}.to_q"),
        Row(f"{name}.k_proj", f"{name}.to_k"),
        Row(f"{name}.v_proj", f"{name}.to_v"),
        Row(f"{name}.o_proj", f"{name}.to_out.0"),
        Row(f"{name}.q_norm", f"{name}.norm_q"),
        Row(f"{name}.k_norm", f"{name}.norm_k"),
    )


V15_LAYER = (
    *same("self_attn_norm"),
    *_v15_attention("self_attn"),
    *same("cross_attn_norm"),
    *_v15_attention("cross_attn"),
    *same("mlp_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
)
V15_TOP = (
    Row("proj_in.1", "proj_in_conv"),
    *same(*(f"{t}.{m}" for t in ("time_embed", "time_embed_r") for m in ("linear_1", "linear_2", "time_proj"))),
    *same("condition_embedder", "norm_out"),
    Row("proj_out.1", "proj_out_conv"),
)


def v1_rows() -> list[Row]:
    rows = list(V1_TOP)
    for i in range(V1_BLOCKS):
        rows += under(V1_BLOCK, f"transformer_blocks.{i}")
    for i in range(V1_LYRIC_BLOCKS):
        rows += under(V1_LYRIC_BLOCK, f"lyric_encoder.encoders.{i}")
    return rows


def v15_rows() -> list[Row]:
    rows = under(V15_TOP, "decoder", "")
    for i in range(V15_LAYERS):
        rows += under(V15_LAYER, f"decoder.layers.{i}", f"layers.{i}")
    return [r.with_other(r.native.removeprefix("decoder.")) for r in rows]


def acestep_table() -> ArchTable:
    return build_table(
        "acestep",
        family="ACE-Step (v1, v1.5)",
        preset="acestep_dit",
        branches={Branch.DENOISER: v1_rows() + v15_rows()},
        markers=(
            "cross_attn.add_q_proj",
            "ff.inverted_conv",
            "lyric_encoder",
            "speaker_embedder",
            "genre_embedder",
            "decoder",
            "self_attn.q_proj",
            "self_attn.to_q",
            "mlp.gate_proj",
            "time_embed_r",
            "proj_in_conv",
        ),
        priority=10,
        diffusers_prefix={Branch.DENOISER: "transformer"},
        kohya_prefix={Branch.DENOISER: "lora_unet"},
    )
