"""`bake`: the baked checkpoint holds base + strength · ΔW (the fixture's truth) on every adapted
weight and the base bit for bit elsewhere, in the diffusers layout (loaded by diffusers' UNet) and
the single-file LDM layout (loaded by ComfyUI's own SDXL and CLIP classes); several LoRAs through a
merge; dtypes, metadata and the errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from loramerge.api import bake
from loramerge.errors import BaseModelMismatchError, OutputError
from tests.clients._common import assert_exact, clone_state, compare_weights

from ._models import comfy_key, ldm_state, truth_name

# one worker builds this package's ComfyUI SDXL model (scripts/check.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tools_comfy_sdxl")


def scaled(truth: dict[str, torch.Tensor], model: float, te: float) -> dict[str, torch.Tensor]:
    return {k: v * (te if k.startswith("text_encoder") else model) for k, v in truth.items()}


def test_bake_into_a_diffusers_unet_file(sdxl_lora, base_models, tmp_path):
    from tests.fixtures import tiny_sdxl_unet

    model = base_models["sdxl_unet"]
    out = tmp_path / "baked_unet.safetensors"
    with pytest.raises(BaseModelMismatchError, match="--skip-missing"):  # the LoRA also has text encoders
        bake(model, [f"{sdxl_lora.path}:0.8"], out)
    assert not out.exists()
    report = bake(model, [f"{sdxl_lora.path}:0.8"], out, skip_missing=True)
    unet_truth = {k: v for k, v in sdxl_lora.truth.items() if k.startswith("unet.")}
    assert len(report.skipped) == len(sdxl_lora.truth) - len(unet_truth)
    assert all(g.startswith(("te1.", "te2.")) for g in report.skipped)
    unet = tiny_sdxl_unet()
    before = clone_state(unet)
    result = unet.load_state_dict(load_file(str(out)), strict=True)  # diffusers' model takes every key
    assert not result.missing_keys and not result.unexpected_keys
    cmp = compare_weights(clone_state(unet), before, scaled(unet_truth, 0.8, 0.0), lambda k: truth_name("unet", k))
    assert_exact(cmp, unet_truth, "baked diffusers UNet")
    assert len(report.patched) == len(unet_truth)


def test_bake_into_a_single_file_checkpoint(sdxl_lora, sdxl_checkpoints, comfy_sdxl, tmp_path):
    """UNet and both text encoders (TE strength 0.5), loaded into ComfyUI's own model classes."""
    base, _ = sdxl_checkpoints["ldm"]
    out = tmp_path / "baked.safetensors"
    report = bake(base, [f"{sdxl_lora.path}:0.8,0.5"], out, dtype="auto")
    assert report.architecture == "sdxl" and not report.skipped
    baked = load_file(str(out))
    with safe_open(str(base), "pt") as a, safe_open(str(out), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(a.get_slice(k).get_dtype() == b.get_slice(k).get_dtype() for k in a.keys())
        record = json.loads(b.metadata()["loramerge.bake"])
    assert record["loras"][0]["strength_text_encoder"] == 0.5 and record["merge"] is None
    models = {"diffusion_model.": comfy_sdxl.model, "clip_": comfy_sdxl.clip}
    try:
        for prefix, module in models.items():
            sd = {comfy_key(k): v for k, v in baked.items() if comfy_key(k).startswith(prefix)}
            result = module.load_state_dict(sd, strict=False)
            assert not result.unexpected_keys
        after = comfy_sdxl.state()
    finally:
        for module in models.values():
            module.load_state_dict({k: v for k, v in comfy_sdxl.before.items()}, strict=False)
    assert all(torch.equal(comfy_sdxl.state()[k], v) for k, v in comfy_sdxl.before.items())
    cmp = comfy_sdxl.compare(type("Load", (), {"after": after})(), scaled(sdxl_lora.truth, 0.8, 0.5))
    assert_exact(cmp, sdxl_lora.truth, "baked single-file checkpoint in ComfyUI")


def test_bake_several_loras_through_a_merge(sdxl_fixtures, sdxl_checkpoints, comfy_sdxl, tmp_path):
    """Two LoRAs merged by weighted_sum (no auto-strength): base + 0.8·ΔW_A + 0.5·ΔW_B on every
    adapted weight (A: the PEFT file, B: diffusers' kohya conversion of it, another ΔW)."""
    a, b = sdxl_fixtures["sdxl_peft_diffusers"], sdxl_fixtures["sdxl_kohya_diffusers_converter"]
    base, _ = sdxl_checkpoints["ldm"]
    out = tmp_path / "merged_bake.safetensors"
    report = bake(base, [f"{a.path}:0.8", f"{b.path}:0.5"], out, mode="weighted_sum", auto_strength=False, seed=0)
    with safe_open(str(out), "pt") as fh:
        record = json.loads(fh.metadata()["loramerge.bake"])
    assert record["merge"]["mode"] == "weighted_sum" and len(record["loras"]) == 2
    expected = {k: 0.8 * a.truth[k] + 0.5 * b.truth[k] for k in a.truth}
    _, names = ldm_state(comfy_sdxl)
    cmp = compare_weights(load_file(str(out)), load_file(str(base)), expected, names.get)
    assert_exact(cmp, expected, "two LoRAs merged and baked")
    assert len(report.patched) == len(expected)


def test_dtype_converts_floating_tensors_only(sdxl_lora, sdxl_checkpoints, tmp_path):
    base, _ = sdxl_checkpoints["ldm"]
    full = tmp_path / "f32.safetensors"
    half = tmp_path / "f16.safetensors"
    bake(base, [sdxl_lora.path], full)
    report = bake(base, [sdxl_lora.path], half, dtype="float16")
    assert report.dtype == "float16"
    a, b = load_file(str(full)), load_file(str(half))
    for k in a:
        if a[k].is_floating_point():
            assert b[k].dtype == torch.float16 and torch.equal(b[k], a[k].half()), k
        else:
            assert torch.equal(a[k], b[k])


def test_bad_requests_are_refused(sdxl_lora, sdxl_checkpoints, base_models, tmp_path):
    base, _ = sdxl_checkpoints["ldm"]
    with pytest.raises(OutputError, match="input"):
        bake(base, [sdxl_lora.path], base, overwrite=True)
    with pytest.raises(OutputError, match="input"):
        bake(base, [sdxl_lora.path], sdxl_lora.path, overwrite=True)
    with pytest.raises(OutputError, match="one checkpoint file"):
        bake(sdxl_checkpoints["diffusers"][0], [sdxl_lora.path], tmp_path / "x.safetensors")
    with pytest.raises(BaseModelMismatchError, match="SD1.5 LoRA on SDXL|is the LoRA for this model"):
        bake(base_models["sd15_unet"], [sdxl_lora.path], tmp_path / "x.safetensors", skip_missing=True)
    assert not (tmp_path / "x.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind


def test_cli_bake(sdxl_lora, sdxl_checkpoints, tmp_path):
    from ._cli import cli

    base, _ = sdxl_checkpoints["ldm"]
    other = sdxl_lora.path.with_name("sdxl_kohya_diffusers_converter.safetensors")
    out, js = tmp_path / "cli.safetensors", tmp_path / "r.json"
    proc = cli(
        "bake",
        base,
        f"{sdxl_lora.path}:0.8",
        other,
        "-o",
        out,
        "--mode",
        "weighted_sum",
        "--no-auto-strength",
        "--dtype",
        "bfloat16",
        "--report-json",
        js,
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert "changed" in proc.stdout and json.loads(js.read_text())["dtype"] == "bfloat16"
    proc = cli("bake", base, sdxl_lora.path, "-o", base, "-f")
    assert proc.returncode == 2 and "input" in proc.stderr


def test_half_precision_checkpoint_is_patched_in_float32_and_kept_half(sdxl_lora, sdxl_checkpoints, tmp_path):
    """A float16 checkpoint keeps float16, with half(float(W) + ΔW): the same bits as baking its exact
    float32 copy and writing float16."""
    from safetensors.torch import save_file

    base, _ = sdxl_checkpoints["ldm"]
    sd = load_file(str(base))
    half, widened = tmp_path / "half.safetensors", tmp_path / "widened.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, str(half))
    save_file({k: v.half().float() if v.is_floating_point() else v for k, v in sd.items()}, str(widened))
    a = bake(half, [f"{sdxl_lora.path}:0.8"], tmp_path / "a.safetensors")
    b = bake(widened, [f"{sdxl_lora.path}:0.8"], tmp_path / "b.safetensors", dtype="float16")
    assert a.patched.keys() == b.patched.keys() and len(a.patched) == len(sdxl_lora.truth)
    got, want = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert all(got[k].dtype == torch.float16 and torch.equal(got[k], want[k]) for k in got if k in a.patched)
    assert all(torch.equal(got[k], want[k]) for k in got)
