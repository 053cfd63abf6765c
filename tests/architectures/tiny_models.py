"""Real diffusers/transformers model classes built on the meta device with tiny widths but the real
block structure (block counts as in the tables), so names can be checked without weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from loramerge.architectures import Branch

ADAPTABLE = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.RMSNorm,
)


def adaptable_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules a LoRA/LyCORIS adapter can target: layers and norms that own a weight."""
    out = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        is_norm = type(module).__name__.endswith(("RMSNorm", "LayerNorm"))  # diffusers/transformers own norms
        if "weight" in own and (isinstance(module, ADAPTABLE) or is_norm):
            out.append(name)
    return out


def _unet(**kw):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                                cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8, **kw)


def sd15_unet():
    return _unet(block_out_channels=(16, 32, 64, 64),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def sdxl_unet():
    return _unet(block_out_channels=(16, 32, 64),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=4,
                 projection_class_embeddings_input_dim=40)


def clip_text(layers: int, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=layers, num_attention_heads=2,
                         projection_dim=8)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def t5_encoder(blocks: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(d_model=16, d_ff=32, num_layers=blocks, num_heads=2, d_kv=8,
                                   feed_forward_proj="gated-gelu"))


def flux():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=19, num_single_layers=38,
                                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                  pooled_projection_dim=12, guidance_embeds=True, axes_dims_rope=(2, 2, 4))


def wan():
    from diffusers import WanTransformer3DModel

    # I2V/FLF2V variant: the image embedder and the added k/v projections exist only there.
    return WanTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                 text_dim=12, freq_dim=16, ffn_dim=32, num_layers=40, image_dim=20,
                                 added_kv_proj_dim=16, pos_embed_seq_len=514)


def zimage():
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel(in_channels=4, dim=32, n_layers=30, n_refiner_layers=2, n_heads=2, n_kv_heads=2,
                                    cap_feat_dim=16, axes_dims=[4, 6, 6], axes_lens=[8, 8, 8])


def qwen_image():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(in_channels=16, out_channels=4, num_layers=60, attention_head_dim=8,
                                       num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(2, 2, 4))


def ltx():
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                                      cross_attention_dim=16, num_layers=48, caption_channels=12)


def hunyuan_video():
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                          num_layers=20, num_single_layers=40, num_refiner_layers=2, text_embed_dim=12,
                                          pooled_projection_dim=10, rope_axes_dim=(2, 2, 4))


def acestep15():
    from diffusers import AceStepTransformer1DModel

    return AceStepTransformer1DModel(hidden_size=32, intermediate_size=64, num_hidden_layers=32, num_attention_heads=2,
                                     num_key_value_heads=1, head_dim=16, in_channels=8, audio_acoustic_hidden_dim=4)


@dataclass(frozen=True)
class Case:
    table: str
    branch: Branch
    build: Callable[[], torch.nn.Module]
    not_aliased: frozenset[str] = frozenset()  # module names with no pure-rename alias (documented in the table)
    alias_scope: str = ""  # only aliases whose canonical module starts with this are expected in the model


_SWAPPED = frozenset({"norm_out.linear"})  # final_layer.adaLN_modulation.1 with its halves swapped

CASES = {
    "sd15-unet": Case("sd15", Branch.DENOISER, sd15_unet),
    "sd15-te1": Case("sd15", Branch.TE1, lambda: clip_text(12, projection=False)),
    "sdxl-unet": Case("sdxl", Branch.DENOISER, sdxl_unet),
    "sdxl-te1": Case("sdxl", Branch.TE1, lambda: clip_text(12, projection=False)),
    "sdxl-te2": Case("sdxl", Branch.TE2, lambda: clip_text(32, projection=True)),
    "flux": Case("flux", Branch.DENOISER, flux, _SWAPPED),
    "flux-te1": Case("flux", Branch.TE1, lambda: clip_text(12, projection=False)),
    "flux-te3": Case("flux", Branch.TE3, lambda: t5_encoder(24)),
    "wan": Case("wan", Branch.DENOISER, wan),
    "zimage": Case("zimage", Branch.DENOISER, zimage),
    "qwen_image": Case("qwen_image", Branch.DENOISER, qwen_image),
    "ltx": Case("ltx", Branch.DENOISER, ltx),
    "hunyuan_video": Case("hunyuan_video", Branch.DENOISER, hunyuan_video, _SWAPPED),
    "acestep15": Case("acestep", Branch.DENOISER, acestep15, alias_scope="diffusion_model.decoder."),
}


def build_meta(case: Case) -> torch.nn.Module:
    with torch.device("meta"):
        return case.build()
