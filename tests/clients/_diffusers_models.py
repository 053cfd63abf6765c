"""diffusers as a client of the format-advice table: one LoRA file through the pipeline's own
``load_lora_weights`` (what users call) into fresh tiny models, fused, unloaded, and counted module by
module, for SD1.5, SDXL, FLUX and Wan; plus FLUX.1-sized models on the meta device for the one
converter (kohya FLUX) that only works at FLUX.1's real widths.
"""

from __future__ import annotations

import torch

from tests.fixtures import (
    tiny_clip_text_encoder,
    tiny_flux_transformer,
    tiny_sd15_unet,
    tiny_sdxl_unet,
    tiny_wan_transformer,
    truth_key,
)

from ._common import capture_messages, clone_state, compare_weights
from ._diffusers import ADAPTER, UNLOADED_MESSAGES, truth_name

COMPONENTS = {"sd15": ("unet", "text_encoder"), "sdxl": ("unet", "text_encoder", "text_encoder_2"),
              "flux": ("transformer",), "wan": ("transformer",), "qwen_image": ("transformer",),
              "hunyuan_video": ("transformer",), "ltx": ("transformer",), "zimage": ("transformer",)}
# The pipelines of the transformer-only architectures, with their tiny transformer (every other
# component None: load_lora_weights only needs the transformer).
DIT_PIPELINES = {"qwen_image": ("QwenImagePipeline", "tiny_qwen_image_transformer"),
                 "hunyuan_video": ("HunyuanVideoPipeline", "tiny_hunyuan_video_transformer"),
                 "ltx": ("LTXPipeline", "tiny_ltx_transformer"),
                 "zimage": ("ZImagePipeline", "tiny_zimage_transformer")}


def _pipeline(arch: str):
    import diffusers

    if arch == "sd15":
        models = {"unet": tiny_sd15_unet(), "text_encoder": tiny_clip_text_encoder("l")}
        pipe = diffusers.StableDiffusionPipeline(vae=None, tokenizer=None, scheduler=None, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False, **models)
    elif arch == "sdxl":
        models = {"unet": tiny_sdxl_unet(), "text_encoder": tiny_clip_text_encoder("l"),
                  "text_encoder_2": tiny_clip_text_encoder("g")}
        pipe = diffusers.StableDiffusionXLPipeline(vae=None, tokenizer=None, tokenizer_2=None, scheduler=None, **models)
    elif arch == "flux":
        models = {"transformer": tiny_flux_transformer()}
        pipe = diffusers.FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                      text_encoder_2=None, tokenizer_2=None, **models)
    elif arch == "wan":
        models = {"transformer": tiny_wan_transformer()}
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, **models)
    elif arch in DIT_PIPELINES:
        import inspect

        from tests.fixtures import models as tiny

        cls_name, build = DIT_PIPELINES[arch]
        cls = getattr(diffusers, cls_name)
        models = {"transformer": getattr(tiny, build)()}
        others = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "transformer")]
        pipe = cls(**{p: None for p in others}, **models)
    else:
        raise ValueError(arch)
    return pipe, models


def _lora_layers(component: str, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {truth_key(component, name): m for name, m in model.named_modules()
            if isinstance(m, BaseTunerLayer) and ADAPTER in getattr(m, "lora_A", {})}


def _unloaded(messages) -> list[str]:
    # FLUX's and Wan's load_lora_weights also try the pipeline's (absent) text encoder: not a leftover.
    return [m for m in messages.matching(*UNLOADED_MESSAGES) if "associated to NoneType" not in m]


def measure(arch: str, path, truth: dict[str, torch.Tensor]) -> dict:
    """``<Pipeline>.load_lora_weights(path)`` into fresh tiny models, ``fuse_lora``, unload; count per
    module of the models: ``loaded`` (given a LoRA layer and fused to base + ΔW), ``missing`` (ΔW
    expected, weight untouched), ``wrong`` (changed, not base + ΔW), ``stray`` (changed, no ΔW
    expected). A load that raises loads nothing (``error``). A JSON-able dict."""
    pipe, models = _pipeline(arch)
    before = {c: clone_state(m) for c, m in models.items()}
    expected_modules = {k for k in truth if "#" not in k and k.split(".")[0] in models}
    error = None
    with capture_messages() as messages:
        try:
            pipe.load_lora_weights(str(path), adapter_name=ADAPTER)
        except Exception as exc:  # the client refused the file: nothing of it is used
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        adapted = set()
        for comp, model in models.items():
            adapted |= set(_lora_layers(comp, model))
        if error is None and adapted:
            pipe.fuse_lora(components=[c for c in models], lora_scale=1.0, adapter_names=[ADAPTER])
        if adapted:
            pipe.unload_lora_weights()
    expected = {k: v for k, v in truth.items() if k.split(".")[0] in models}
    wrong, changed, worst, loaded = {}, [], 0.0, 0
    missing = set()
    if error is None:
        for comp, model in models.items():
            after = clone_state(model)
            cmp = compare_weights(after, before[comp], expected, lambda k, c=comp: truth_name(c, k))
            changed += cmp.changed
            worst = max(worst, cmp.worst)
            for key in cmp.wrong:
                (missing.add(truth_name(comp, key)) if torch.equal(after[key], before[comp][key])
                 else wrong.__setitem__(truth_name(comp, key), cmp.wrong[key]))
        # a module counts once (weight and bias); PEFT layers where no ΔW is expected are strays
        bad = {k.split("#")[0] for k in missing | set(wrong)}
        loaded = len((expected_modules & adapted) - bad)
        missing = {k.split("#")[0] for k in missing} | (expected_modules - adapted)
    else:
        missing = set(expected_modules)
    stray = sorted(set(changed) | (adapted - expected_modules))
    return {
        "expected": len(expected_modules), "loaded": loaded, "missing": sorted(missing), "wrong": wrong,
        "stray": stray, "worst": worst, "not_loaded": _unloaded(messages), "error": error,
    }


# ------------------------------------------------------------------- FLUX.1 widths (kohya FLUX)

FLUX1_TARGETS = (
    *(f"transformer_blocks.0.{m}" for m in (
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
        "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
        "ff_context.net.2", "norm1.linear", "norm1_context.linear")),
    *(f"single_transformer_blocks.0.{m}" for m in (
        "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear")),
    "x_embedder", "context_embedder", "time_text_embed.timestep_embedder.linear_1",
    "time_text_embed.text_embedder.linear_1", "time_text_embed.guidance_embedder.linear_1", "proj_out",
)


def flux1_meta_transformer():
    """FLUX.1's transformer at its real widths (inner dim 3072, 24 heads, MLP 12288), one double and
    one single block, on the meta device: real module names and shapes, no memory."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True)


def write_flux1_peft_lora(path, rank: int = 2, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A diffusers/PEFT-format LoRA (``transformer.<module>.lora_A/lora_B``, no metadata: alpha = rank)
    on FLUX.1-sized modules, random factors; returns its truth ΔW = B @ A per ``transformer.<module>``
    as the factors (B, A): the dense ΔW of FLUX.1's modules would take gigabytes."""
    from safetensors.torch import save_file

    modules = dict(flux1_meta_transformer().named_modules())
    gen = torch.Generator().manual_seed(seed)
    sd, truth = {}, {}
    for name in FLUX1_TARGETS:
        lin = modules[name]
        a = torch.randn(rank, lin.in_features, generator=gen) / lin.in_features ** 0.5
        b = torch.randn(lin.out_features, rank, generator=gen)
        sd[f"transformer.{name}.lora_A.weight"] = a
        sd[f"transformer.{name}.lora_B.weight"] = b
        truth[f"transformer.{name}"] = (b, a)
    save_file(sd, str(path))
    return truth


def lowrank_rel_error(b1, a1, b2, a2) -> float:
    """‖b1 a1 − b2 a2‖ / ‖b2 a2‖ (Frobenius) from r×r Gram matrices, never forming the products."""
    b = torch.cat([b1.double(), -b2.double()], 1)
    a = torch.cat([a1.double(), a2.double()], 0)
    err2 = float(torch.trace((b.T @ b) @ (a @ a.T)))
    ref2 = float(torch.trace((b2.double().T @ b2.double()) @ (a2.double() @ a2.double().T)))
    return max(err2, 0.0) ** 0.5 / ref2 ** 0.5


def measure_flux1(path, truth: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """``FluxPipeline.load_lora_weights(path)`` into FLUX.1-sized modules on the meta device (PEFT
    places LoRA layers by name and shape, keeps their values on the meta device); each layer's ΔW is
    its PEFT scaling × B @ A with B and A as diffusers' own conversion gives them
    (``FluxPipeline.lora_state_dict``, what ``load_lora_weights`` hands to the transformer). Same
    counts as `measure`, per module."""
    import diffusers

    model = flux1_meta_transformer()
    pipe = diffusers.FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None, transformer=model)
    expected_modules = set(truth)
    error, layers, converted = None, {}, {}
    with capture_messages() as messages:
        try:
            converted = pipe.lora_state_dict(str(path))
            pipe.load_lora_weights(str(path), adapter_name=ADAPTER, low_cpu_mem_usage=True)
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        layers = _lora_layers("transformer", model)
    wrong, worst, loaded = {}, 0.0, 0
    if error is None:
        for key in sorted(set(layers) & expected_modules):
            layer = layers[key]
            a, b = converted[f"{key}.lora_A.weight"], converted[f"{key}.lora_B.weight"]
            assert layer.lora_A[ADAPTER].weight.shape == a.shape and layer.lora_B[ADAPTER].weight.shape == b.shape
            rel = lowrank_rel_error(b.double() * layer.scaling[ADAPTER], a, *truth[key])
            worst = max(worst, rel)
            if rel > 1e-5:
                wrong[key] = rel
            else:
                loaded += 1
    missing = sorted(expected_modules - set(layers)) if error is None else sorted(expected_modules)
    return {
        "expected": len(expected_modules), "loaded": loaded, "missing": missing, "wrong": wrong,
        "stray": sorted(set(layers) - expected_modules), "worst": worst, "not_loaded": _unloaded(messages),
        "error": error,
    }
