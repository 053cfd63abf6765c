"""diffusers as a client: pipelines built around fresh tiny models (no VAE, tokenizers or
schedulers), LoRA files loaded with diffusers' own loaders, fused with ``fuse_lora`` and unloaded,
so every weight of every component can be compared with base + ΔW.

SDXL goes through the pipeline-free loader path (``lora_state_dict`` then ``load_lora_into_unet`` /
``load_lora_into_text_encoder`` per component) so each component can be checked on its own;
FLUX and Wan go through ``<Pipeline>.load_lora_weights``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from tests.fixtures import (
    tiny_clip_text_encoder,
    tiny_flux_transformer,
    tiny_sdxl_unet,
    tiny_wan_transformer,
    truth_key,
)

from ._common import Captured, Comparison, assert_exact, capture_messages, clone_state, compare_weights

ADAPTER = "loramerge_output"
SDXL_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")

# What diffusers says when part of a file did not make it into the model.
UNLOADED_MESSAGES = (
    "unexpected keys",                 # load_lora_adapter / PEFT set_peft_model_state_dict leftovers
    "did not match any targeted",      # PEFT: alpha_pattern / rank_pattern entries that were ignored
    "not correctly renamed",           # kohya conversion leftovers (raised)
    "No LoRA keys associated",         # a component the file should have reached got nothing
    "UNEXPECTED",                      # transformers' load report (text encoders)
)


@dataclass
class DiffusersLoad:
    """A file loaded into fresh models with diffusers, fused and unloaded."""

    models: dict[str, torch.nn.Module]
    before: dict[str, dict[str, torch.Tensor]]
    adapted: dict[str, set[str]] = field(default_factory=dict)  # component -> truth keys given a LoRA layer
    messages: Captured = field(default_factory=Captured)
    file_components: set[str] = field(default_factory=set)      # component prefixes of the converted state dict

    def unloaded_messages(self) -> list[str]:
        # FLUX's and Wan's load_lora_weights also try the pipeline's (absent) text encoder: not a leftover.
        return [m for m in self.messages.matching(*UNLOADED_MESSAGES) if "associated to NoneType" not in m]

    def compare(self, expected: dict[str, torch.Tensor], name_of: Callable[[str, str], str | None] | None = None,
                rtols: dict[str, float] | None = None) -> Comparison:
        """Every weight of every loaded component; `name_of(component, model key)` names the expected
        ΔW of a weight (default: the fixture truth key, ``<component>.<module>[#bias]``)."""
        name_of = name_of or truth_name
        out = Comparison()
        for comp, model in self.models.items():
            out.merge(compare_weights(clone_state(model), self.before[comp], expected,
                                      lambda k, c=comp: name_of(c, k), rtols=rtols))
        return out


def truth_name(component: str, model_key: str) -> str:
    module, _, param = model_key.rpartition(".")
    return truth_key(component, module) + ("" if param == "weight" else f"#{param}")


def _lora_modules(component: str, model: torch.nn.Module) -> set[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {truth_key(component, name) for name, m in model.named_modules()
            if isinstance(m, BaseTunerLayer) and ADAPTER in getattr(m, "lora_A", {})}


def _fuse_and_unload(pipe, components: Sequence[str]) -> None:
    pipe.fuse_lora(components=list(components), lora_scale=1.0, adapter_names=[ADAPTER])
    pipe.unload_lora_weights()


def load_sdxl(path, components: Sequence[str] = SDXL_COMPONENTS) -> DiffusersLoad:
    """Fresh tiny SDXL UNet + CLIP-L + CLIP-G; load `components` of the file with diffusers' SDXL
    loaders (the steps of ``StableDiffusionXLPipeline.load_lora_weights``), fuse, unload."""
    from diffusers import StableDiffusionXLPipeline

    models = {"unet": tiny_sdxl_unet(), "text_encoder": tiny_clip_text_encoder("l"),
              "text_encoder_2": tiny_clip_text_encoder("g")}
    models = {c: m for c, m in models.items() if c in components}
    before = {c: clone_state(m) for c, m in models.items()}
    pipe = StableDiffusionXLPipeline(vae=None, tokenizer=None, tokenizer_2=None, scheduler=None,
                                     unet=models.get("unet"), text_encoder=models.get("text_encoder"),
                                     text_encoder_2=models.get("text_encoder_2"))
    out = DiffusersLoad(models, before)
    unet_config = models["unet"].config if "unet" in models else tiny_unet_config()
    with capture_messages() as out.messages:
        sd, alphas, meta = pipe.lora_state_dict(str(path), unet_config=unet_config, return_lora_metadata=True)
        out.file_components = {k.split(".", 1)[0] for k in sd}
        for comp, model in models.items():
            if comp == "unet":
                pipe.load_lora_into_unet(sd, alphas, model, adapter_name=ADAPTER, metadata=meta, _pipeline=pipe)
            else:
                pipe.load_lora_into_text_encoder(sd, alphas, model, prefix=comp, adapter_name=ADAPTER,
                                                 metadata=meta, _pipeline=pipe)
            out.adapted[comp] = _lora_modules(comp, model)
        _fuse_and_unload(pipe, list(models))
    return out


_UNET_CONFIG = None


def tiny_unet_config():
    global _UNET_CONFIG
    if _UNET_CONFIG is None:
        _UNET_CONFIG = tiny_sdxl_unet().config
    return _UNET_CONFIG


def load_transformer(arch: str, path, i2v: bool = False) -> DiffusersLoad:
    """Fresh tiny FLUX or Wan transformer in its pipeline; ``load_lora_weights``, fuse, unload."""
    import diffusers

    if arch == "flux":
        model = tiny_flux_transformer()
        pipe = diffusers.FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                      text_encoder_2=None, tokenizer_2=None, transformer=model)
    elif arch == "wan":
        model = tiny_wan_transformer(i2v=i2v)
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=model)
    else:
        raise ValueError(arch)
    out = DiffusersLoad({"transformer": model}, {"transformer": clone_state(model)})
    with capture_messages() as out.messages:
        pipe.load_lora_weights(str(path), adapter_name=ADAPTER)
        out.adapted["transformer"] = _lora_modules("transformer", model)
        _fuse_and_unload(pipe, ["transformer"])
    out.file_components = {"transformer"}
    return out


def assert_loaded_exactly(load: DiffusersLoad, expected: dict[str, torch.Tensor], adapted_truth_keys,
                          what: str, name_of=None, rtols=None) -> None:
    """No key left behind (none of diffusers' complaints; LoRA layers on exactly the modules of
    `adapted_truth_keys` of each loaded component), then every weight of every loaded component:
    base + `expected[name_of(component, key)]` where named, bit-identical elsewhere."""
    assert not load.unloaded_messages(), f"{what}: {load.unloaded_messages()[:3]}"
    for comp, adapted in load.adapted.items():
        want = {k for k in adapted_truth_keys if k.startswith(comp + ".") and "#" not in k}
        assert want, f"{what}: nothing expected in {comp}"
        assert adapted == want, (f"{what}: {comp} LoRA layers differ from the file's modules: "
                                 f"missing {sorted(want - adapted)[:5]}, extra {sorted(adapted - want)[:5]}")
    cmp = load.compare(expected, name_of, rtols)
    if name_of is None:
        keys = {k for k in expected if k.split(".")[0] in load.models}
    else:
        keys = {name_of(c, k) for c, m in load.models.items() for k in m.state_dict()} & set(expected)
    assert_exact(cmp, keys, what)
