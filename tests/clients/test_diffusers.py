"""loramerge ``convert`` outputs loaded by diffusers 0.42 (+ PEFT) into fresh tiny models.

kohya and diffusers formats for SDXL (UNet, CLIP-L and CLIP-G each loaded on its own, so a
failure names its component), diffusers format for FLUX (q/k/v that loramerge splits from
diffusers' separate projections and writes back separately) and Wan (T2V, and I2V with rsLoRA).
"""

from __future__ import annotations

import pytest

from ._common import expected_deltas
from ._diffusers import SDXL_COMPONENTS, assert_loaded_exactly, load_sdxl, load_transformer

# fixture -> SDXL components its file adapts
SDXL_SOURCES = {
    "sdxl_peft_diffusers": SDXL_COMPONENTS,  # PEFT: rank/alpha patterns, 3x3 conv LoRA, add_embedding
    "sdxl_lycoris_locon": SDXL_COMPONENTS,   # LyCORIS LoCon on every linear and conv (3x3 and 1x1)
    "sdxl_lycoris_tucker": ("unet",),        # LyCORIS Tucker (lora_mid) 3x3 convs, UNet only
}


def _cases():
    for fmt in ("kohya", "diffusers"):
        for name, comps in SDXL_SOURCES.items():
            if fmt == "diffusers" and name == "sdxl_lycoris_tucker":
                continue  # folded to a plain LoCon by loramerge: the locon file covers it (time)
            for comp in comps:
                # sdxl_peft_diffusers has mixed ranks (attn2.to_k and CLIP-L layers.1.q_proj r=2 among
                # r=4): it pins the one-alpha-per-file kohya output that diffusers needs
                yield pytest.param(fmt, name, comp, id=f"{fmt}-{name}-{comp}")


@pytest.mark.parametrize("fmt, name, component", list(_cases()))
def test_sdxl_output_loads_exactly_in_diffusers(real_fixtures, converted, fmt, name, component):
    fx = real_fixtures[name]
    path = converted(name, fmt)
    load = load_sdxl(path, components=(component,))
    assert load.file_components <= set(SDXL_SOURCES[name]), load.file_components
    assert component in load.file_components
    assert_loaded_exactly(load, expected_deltas([(fx, 1.0)]), fx.truth, f"{name} as {fmt}, {component}")


@pytest.mark.parametrize("name, arch, i2v", [
    ("flux_peft_diffusers", "flux", False),           # q/k/v placed as BFL's fused qkv slices, written back split
    ("wan_peft_diffusers", "wan", False),
    ("wan_i2v_peft_rslora_diffusers", "wan", True),   # rsLoRA scale (header-only flag) baked into the output
])
def test_transformer_output_loads_exactly_in_diffusers(real_fixtures, converted, name, arch, i2v):
    fx = real_fixtures[name]
    load = load_transformer(arch, converted(name, "diffusers"), i2v=i2v)
    assert_loaded_exactly(load, expected_deltas([(fx, 1.0)]), fx.truth, f"{name} as diffusers")


def test_wan_kohya_output_loads_exactly_in_diffusers(real_fixtures, converted):
    """musubi-style native names (`lora_unet_blocks_0_self_attn_q`): diffusers' Wan converter."""
    fx = real_fixtures["wan_peft_diffusers"]
    load = load_transformer("wan", converted("wan_peft_diffusers", "kohya"))
    assert_loaded_exactly(load, expected_deltas([(fx, 1.0)]), fx.truth, "wan_peft_diffusers as kohya")


def test_flux_kohya_output_needs_real_flux_sizes_in_diffusers(converted):
    """Client limitation, pinned (FORMATS.md): diffusers' kohya FLUX converter hard-codes FLUX.1's
    widths (3072) when it splits the fused `img_attn_qkv`/`linear1`, so loramerge's re-fused kohya
    FLUX file cannot be checked in diffusers on a tiny model; its content is checked in the
    diffusers format above. If this starts passing, add the kohya FLUX case to the exact tests."""
    path = converted("flux_peft_diffusers", "kohya")
    with pytest.raises(AssertionError):
        load_transformer("flux", path)
