"""Parts of ComfyUI's node interface newer than the February-2024 copy the other tests run, checked
on the smallest fakes of that interface (documented per test), and the pack's import boundaries.

- Key maps of newer ComfyUI may give ``(weight name, (dim, offset, size))`` for one slice of a
  fused weight instead of a weight name (``comfy.lora.model_lora_keys_unet`` for FLUX and others).
- Newer ``comfy.lora.load_lora`` returns adapter objects (``weight_adapter.LoRAAdapter``, whose
  ``name`` is ``"lora"``) instead of ``("lora", (...))`` tuples.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[2]


def _lora(stem: str, out: int, inp: int, rank: int = 2) -> dict[str, torch.Tensor]:
    return {f"{stem}.lora_up.weight": torch.ones(out, rank), f"{stem}.lora_down.weight": torch.ones(rank, inp),
            f"{stem}.alpha": torch.tensor(float(rank))}


def test_slice_targets_are_checked_by_their_slice(pack):
    """Fake: a key map entry ``(name, (dim, offset, size))`` and a shapes table, as newer ComfyUI has them."""
    patching = pack.patching
    qkv = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    shapes = {qkv: (24, 4)}
    key_map = {"lora_unet_q": (qkv, (0, 0, 8)), "lora_unet_k": (qkv, (0, 8, 8)), "lora_unet_whole": qkv}
    sd = {**_lora("lora_unet_q", 8, 4), **_lora("lora_unet_k", 16, 4), **_lora("lora_unet_whole", 24, 4),
          **_lora("lora_unet_absent", 8, 4), **_lora("lora_te1_text_model_x", 4, 4)}
    placement = patching.place(sd, key_map, shapes, text_encoders=False)
    assert placement.placed == {"lora_unet_q": (qkv, (0, 0, 8)), "lora_unet_whole": qkv}
    assert placement.missing == ["lora_unet_absent"]
    assert placement.skipped == ["lora_te1_text_model_x"]
    assert placement.mismatched == [f"lora_unet_k: weight [16, 4] vs model {qkv} [8, 4]"]
    assert set(placement.select(sd)) == {k for k in sd if k.startswith(("lora_unet_q.", "lora_unet_whole."))}


def test_bias_and_norm_targets(pack):
    patching = pack.patching
    shapes = {"m.norm.weight": (8,), "m.norm.bias": (8,), "m.lin.weight": (8, 4)}
    sd = {"lora_unet_norm.w_norm": torch.ones(8), "lora_unet_norm.b_norm": torch.ones(8),
          "lora_unet_lin.diff": torch.ones(8, 4), "lora_unet_lin.diff_b": torch.ones(8)}
    placement = patching.place(sd, {"lora_unet_norm": "m.norm.weight", "lora_unet_lin": "m.lin.weight"}, shapes)
    assert placement.placed == {"lora_unet_norm": "m.norm.weight"}
    assert placement.mismatched == ["lora_unet_lin: bias [8] vs model m.lin.weight missing"]


def test_patch_kinds_of_tuples_and_adapter_objects(pack):
    """Fake: an object with ``name = "lora"``, what newer ComfyUI's LoRAAdapter is to this code."""
    patches = {"a": ("lora", (None,)), "b": ("diff", (None,)), "c": SimpleNamespace(name="lora")}
    assert pack.patching.summarize(patches) == {"diff": 1, "lora": 2}


def test_only_the_host_module_imports_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy\b|comfy\.|folder_paths\b)", re.M)
    importers = sorted(str(p.relative_to(REPO)) for p in [*REPO.joinpath("src").rglob("*.py"),
                                                          *REPO.joinpath("comfy_nodes").rglob("*.py")]
                       if pattern.search(p.read_text()))
    assert importers == ["comfy_nodes/host.py"]
