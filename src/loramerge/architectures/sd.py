"""Stable Diffusion 1.x and SDXL: the UNet table derived from a structure description.

Native names are the LDM (CompVis/SGM) module paths that checkpoints, ComfyUI and kohya SDXL use
(``input_blocks.4.1.transformer_blocks.0.attn1.to_q``); the diffusers spelling is the
`UNet2DConditionModel` path (``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``).
kohya SD1.x writes the diffusers paths with underscores, which the engine's underscored index
covers. Both tables come from one function, `unet_rows`, applied to each model's structure, the
way ComfyUI derives its map from a UNet config.
"""

from __future__ import annotations

from dataclasses import dataclass

from .builder import Row, build_table, under
from .spec import ArchTable, Branch, Style
from .text_encoders import clip_g, clip_l


@dataclass(frozen=True)
class UNetStructure:
    """What decides the LDM <-> diffusers numbering of an SD-style UNet."""

    channel_mult: tuple[int, ...]  # channel multiplier per level
    layers_per_block: int  # resnets per down level (up levels have one more)
    depth: tuple[int, ...]  # transformer blocks per attention, per level (0: no attention)
    mid_depth: int
    label_emb: bool = False  # SDXL's size/pooled-text embedding (``label_emb`` / ``add_embedding``)


SD15_STRUCTURE = UNetStructure(channel_mult=(1, 2, 4, 4), layers_per_block=2, depth=(1, 1, 1, 0), mid_depth=1)
SDXL_STRUCTURE = UNetStructure(
    channel_mult=(1, 2, 4), layers_per_block=2, depth=(0, 2, 10), mid_depth=10, label_emb=True
)

_RESNET = (
    Row("in_layers.0", "norm1"),
    Row("in_layers.2", "conv1"),
    Row("emb_layers.1", "time_emb_proj"),
    Row("out_layers.0", "norm2"),
    Row("out_layers.3", "conv2"),
)
_SKIP = Row("skip_connection", "conv_shortcut")  # only where the resnet changes channel count

_ATTENTION = (Row("norm", "norm"), Row("proj_in", "proj_in"), Row("proj_out", "proj_out"))

_TRANSFORMER_BLOCK = tuple(
    Row(m, m)
    for m in (
        "norm1",
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "norm2",
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
        "norm3",
        "ff.net.0.proj",
        "ff.net.2",
    )
)

_BASIC = (
    Row("time_embed.0", "time_embedding.linear_1"),
    Row("time_embed.2", "time_embedding.linear_2"),
    Row("input_blocks.0.0", "conv_in"),
    Row("out.0", "conv_norm_out"),
    Row("out.2", "conv_out"),
)
_LABEL_EMB = (
    Row("label_emb.0.0", "add_embedding.linear_1"),
    Row("label_emb.0.2", "add_embedding.linear_2"),
)


def _resnet(native: str, diffusers: str, *, skip: bool) -> list[Row]:
    return under(_RESNET + ((_SKIP,) if skip else ()), native, diffusers)


def _attention(native: str, diffusers: str, depth: int) -> list[Row]:
    rows = under(_ATTENTION, native, diffusers)
    for t in range(depth):
        rows += under(_TRANSFORMER_BLOCK, f"{native}.transformer_blocks.{t}", f"{diffusers}.transformer_blocks.{t}")
    return rows


def _down(s: UNetStructure) -> list[Row]:
    rows: list[Row] = []
    levels = len(s.channel_mult)
    for x in range(levels):
        for i in range(s.layers_per_block):
            n = 1 + (s.layers_per_block + 1) * x + i
            changes = i == 0 and x > 0 and s.channel_mult[x] != s.channel_mult[x - 1]
            rows += _resnet(f"input_blocks.{n}.0", f"down_blocks.{x}.resnets.{i}", skip=changes)
            if s.depth[x]:
                rows += _attention(f"input_blocks.{n}.1", f"down_blocks.{x}.attentions.{i}", s.depth[x])
        if x < levels - 1:
            n = 1 + (s.layers_per_block + 1) * x + s.layers_per_block
            rows.append(Row(f"input_blocks.{n}.0.op", f"down_blocks.{x}.downsamplers.0.conv"))
    return rows


def _middle(s: UNetStructure) -> list[Row]:
    return (
        _resnet("middle_block.0", "mid_block.resnets.0", skip=False)
        + _attention("middle_block.1", "mid_block.attentions.0", s.mid_depth)
        + _resnet("middle_block.2", "mid_block.resnets.1", skip=False)
    )


def _up(s: UNetStructure) -> list[Row]:
    rows: list[Row] = []
    levels = len(s.channel_mult)
    for x in range(levels):  # diffusers up level x is LDM level (levels - 1 - x)
        depth = s.depth[levels - 1 - x]
        for i in range(s.layers_per_block + 1):
            n = (s.layers_per_block + 1) * x + i
            rows += _resnet(f"output_blocks.{n}.0", f"up_blocks.{x}.resnets.{i}", skip=True)
            if depth:
                rows += _attention(f"output_blocks.{n}.1", f"up_blocks.{x}.attentions.{i}", depth)
            if i == s.layers_per_block and x < levels - 1:
                rows.append(Row(f"output_blocks.{n}.{2 if depth else 1}.conv", f"up_blocks.{x}.upsamplers.0.conv"))
    return rows


def unet_rows(s: UNetStructure) -> list[Row]:
    """Every adaptable module of an SD-style UNet with its LDM and diffusers names."""
    return list(_BASIC) + (list(_LABEL_EMB) if s.label_emb else []) + _down(s) + _middle(s) + _up(s)


def sd15_table() -> ArchTable:
    return build_table(
        "sd15",
        family="Stable Diffusion 1.x",
        preset="sd_unet",
        branches={Branch.DENOISER: unet_rows(SD15_STRUCTURE), Branch.TE1: clip_l()},
        markers=(
            "input_blocks.1.1",
            "input_blocks.2.1",
            "down_blocks.0.attentions",
            "output_blocks.9.1",
            "up_blocks.3.attentions",
        ),
        priority=40,
        diffusers_prefix={Branch.DENOISER: "unet", Branch.TE1: "text_encoder"},
        kohya_prefix={Branch.DENOISER: "lora_unet", Branch.TE1: "lora_te"},
        # as kohya's sd-scripts writes SD1.x: the one spelling diffusers, ComfyUI and A1111 all load
        kohya_style={Branch.DENOISER: Style.DIFFUSERS},
    )


def sdxl_table() -> ArchTable:
    return build_table(
        "sdxl",
        family="Stable Diffusion XL",
        preset="sd_unet",
        branches={Branch.DENOISER: unet_rows(SDXL_STRUCTURE), Branch.TE1: clip_l(), Branch.TE2: clip_g()},
        markers=("transformer_blocks.1", "transformer_blocks.9", "label_emb", "add_embedding"),
        priority=50,
        diffusers_prefix={Branch.DENOISER: "unet", Branch.TE1: "text_encoder", Branch.TE2: "text_encoder_2"},
        kohya_prefix={Branch.DENOISER: "lora_unet", Branch.TE1: "lora_te1", Branch.TE2: "lora_te2"},
    )
