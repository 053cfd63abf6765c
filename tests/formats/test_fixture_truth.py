"""For every real-library fixture: detection is right, every key is placed, and each target's ΔW
computed by loramerge equals the producing library's ground truth (1e-5 relative, float32)."""

import pytest

from loramerge import architectures as A
from loramerge.architectures.engine import Stem
from loramerge.basemodel import BaseModel
from loramerge.formats.align import align, group_key, load_group
from loramerge.formats.dialects import parse_stem
from loramerge.formats.reader import AdapterFile

BASE_OF = {"sdxl": "sdxl_unet", "flux": "flux_transformer", "wan": "wan_transformer", "sd15": "sd15_unet"}


@pytest.fixture(scope="module")
def sdxl_pipeline_base(base_models, tmp_path_factory):
    """The tiny SDXL UNet and both text encoders in one file, with diffusers pipeline prefixes."""
    from safetensors.torch import load_file, save_file

    merged = {}
    for prefix, name in (("unet", "sdxl_unet"), ("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")):
        merged.update({f"{prefix}.{k}": v for k, v in load_file(base_models[name]).items()})
    path = tmp_path_factory.mktemp("bases") / "sdxl_pipeline.safetensors"
    save_file(merged, path)
    return path


def canonical(table, truth_key: str) -> str:
    """The group key of a ground-truth key ('<component>.<diffusers path>[#bias]')."""
    module, _, bias = truth_key.partition("#")
    parsed = parse_stem(module)
    assert parsed is not None, truth_key
    from loramerge.formats.align import branch_for

    branch = branch_for(table, parsed.prefix, parsed.stem.branch)
    placement = A.placer(table.name).place(Stem(branch, parsed.stem.path, True))
    assert placement is not None, f"truth key {truth_key} has no place in {table.name}"
    return group_key(placement, "bias" if bias else "weight")


def test_every_fixture_is_detected_and_fully_placed(real_fixtures):
    for name, fx in real_fixtures.items():
        f = AdapterFile(fx.path)
        det = A.detect([e.parsed.stem for e in f.entries.values() if e.parsed])
        assert det.architecture == fx.architecture, (name, det)
        assert f.format == fx.format, name
        assert f.kinds == fx.adapter_kinds, name
        a = align(f, A.get_table(det.architecture), A.placer(det.architecture), strict=True)
        assert not a.unplaced


@pytest.mark.parametrize("name", [
    "sdxl_peft_diffusers", "sdxl_peft_diffusers_legacy_names", "sdxl_kohya_diffusers_converter", "sd15_peft_diffusers",
    "flux_peft_diffusers", "flux_peft_dora_diffusers", "wan_peft_diffusers", "wan_i2v_peft_rslora_diffusers",
    "sdxl_lycoris_locon", "sdxl_lycoris_tucker", "sdxl_lycoris_loha", "sdxl_lycoris_loha_dora_input_axis",
    "sdxl_lycoris_lokr", "sdxl_lycoris_lokr_factor4", "sdxl_lycoris_lokr_full_matrix", "sdxl_lycoris_full",
    "sdxl_lycoris_dora", "sdxl_lycoris_norm", "lycoris_wrapper",
])
def test_delta_equals_library_truth(real_fixtures, base_models, sdxl_pipeline_base, name):
    fx = real_fixtures[name]
    table = A.get_table(fx.architecture)
    f = AdapterFile(fx.path)
    a = align(f, table, A.placer(table.name), strict=True)
    base_path = sdxl_pipeline_base if fx.architecture == "sdxl" else base_models[BASE_OF[fx.architecture]]
    base = BaseModel.open(base_path, table) if "dora" in fx.adapter_kinds else None
    want = {canonical(table, k): v for k, v in fx.truth.items()}
    assert set(want) == set(a.groups), set(want) ^ set(a.groups)
    worst = 0.0
    for key, truth in want.items():
        c = a.groups[key][0]
        weight = base.weight(c.base_target) if base is not None and c.entry.has_dora else None
        got = load_group(a, table, key, weight).dense()
        got = got.reshape(truth.shape) if got.numel() == truth.numel() else got
        assert got.shape == truth.shape, (key, got.shape, truth.shape)
        err = float((got - truth).norm() / truth.norm().clamp_min(1e-30))
        worst = max(worst, err)
        assert err < 1e-5, (key, err)
    assert worst < 1e-5


@pytest.mark.parametrize("source, fmt, spelling, arch", [
    ("sdxl_peft_diffusers", "kohya", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", "sdxl"),
    ("sdxl_peft_diffusers", "kohya", "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", "sdxl"),
    ("flux_peft_diffusers", "kohya", "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", "flux"),
    ("flux_peft_diffusers", "kohya", "lora_unet_single_blocks_0_linear1.alpha", "flux"),
    ("wan_peft_diffusers", "kohya", "lora_unet_blocks_0_self_attn_q.lora_down.weight", "wan"),
    ("wan_peft_diffusers", "comfy", "diffusion_model.blocks_0_cross_attn_k.lora_A.weight".replace("blocks_0_cross_attn_k", "blocks.0.cross_attn.k"), "wan"),
    ("flux_peft_diffusers", "comfy", "diffusion_model.double_blocks.0.txt_attn.qkv.lora_B.weight", "flux"),
])
def test_derived_trainer_spellings_detect_and_keep_truth(real_fixtures, tmp_path, source, fmt, spelling, arch):
    """Kohya-LDM SDXL, kohya-FLUX (fused qkv/linear1), musubi-Wan and ComfyUI-native files, derived
    from the library-written fixtures by loramerge's renaming tables, read back to the same truth."""
    from loramerge.convert import convert

    fx = real_fixtures[source]
    out = tmp_path / f"derived.{fmt}.safetensors"
    convert(fx.path, out, fmt, dtype="float32")
    f = AdapterFile(out)
    assert spelling in f.source.keys()
    det = A.detect([e.parsed.stem for e in f.entries.values() if e.parsed])
    assert det.architecture == arch
    table = A.get_table(arch)
    a = align(f, table, A.placer(arch), strict=True)
    for key, truth in fx.truth.items():
        got = load_group(a, table, canonical(table, key)).dense().reshape(truth.shape)
        assert float((got - truth).norm() / truth.norm()) < 1e-5, key
