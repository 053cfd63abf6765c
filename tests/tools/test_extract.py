"""`extract`: FINETUNED = BASE + a known LoRA's ΔW (the real PEFT fixture, ranks 2/4/8 on linear
and 3x3 conv layers of the UNet and both text encoders) gives that ΔW back, checked by diffusers'
and ComfyUI's own loaders against the fixture's truth; both checkpoint layouts; the errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from loramerge.errors import BaseModelMismatchError, LoraMergeError, OutputError
from loramerge.tools import extract

# one worker builds this package's ComfyUI SDXL model (scripts/check.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tools_comfy_sdxl")

RTOL = 1e-4  # the acceptance bound on ‖extracted − ΔW‖ / ‖ΔW‖ per module
MAX_RANK = 8  # the fixture's largest rank (down_blocks.1.resnets.0.conv1)


@pytest.fixture(scope="module")
def extracted(sdxl_checkpoints, tmp_path_factory):
    """layout -> (path, report) of `extract --rank 8 --te` in kohya format, float32."""
    out = {}
    folder = tmp_path_factory.mktemp("extracted")
    for layout, (base, finetuned) in sdxl_checkpoints.items():
        path = folder / f"{layout}.safetensors"
        out[layout] = path, extract(base, finetuned, path, rank=MAX_RANK, te=True, dtype="float32", seed=3)
    return out


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_extract_reports_every_adapted_module_recovered(extracted, sdxl_lora, layout):
    path, report = extracted[layout]
    assert report.architecture == "sdxl"
    assert len(report.modules) == len(sdxl_lora.truth)
    assert report.worst_error < RTOL, sorted(report.modules, key=lambda m: -m.rel_error)[:3]
    assert not report.skipped, report.skipped
    assert {m.rank for m in report.modules} == {MAX_RANK}


def test_extract_loads_exactly_in_diffusers(extracted, sdxl_lora):
    from tests.clients._common import expected_deltas
    from tests.clients._diffusers import SDXL_COMPONENTS, assert_loaded_exactly, load_sdxl

    path, _ = extracted["diffusers"]
    load = load_sdxl(path, components=SDXL_COMPONENTS)
    assert load.file_components == set(SDXL_COMPONENTS)
    rtols = {k: RTOL for k in sdxl_lora.truth}
    assert_loaded_exactly(
        load, expected_deltas([(sdxl_lora, 1.0)]), sdxl_lora.truth, "extracted (diffusers)", rtols=rtols
    )


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_extract_loads_exactly_in_comfyui(extracted, sdxl_lora, comfy_sdxl, layout):
    from tests.clients._comfy import assert_loaded_exactly
    from tests.clients._common import expected_deltas

    path, _ = extracted[layout]
    load = comfy_sdxl.load(path)
    assert_loaded_exactly(
        comfy_sdxl,
        load,
        expected_deltas([(sdxl_lora, 1.0)]),
        f"extracted ({layout})",
        rtols={k: RTOL for k in sdxl_lora.truth},
    )


def test_extract_loads_exactly_in_comfyui_0_3_64(extracted, sdxl_lora, tmp_path):
    from safetensors.torch import save_file

    from tests.clients._comfy064 import run_worker, source_folder

    truth = tmp_path / "truth.safetensors"
    save_file({k: v.contiguous() for k, v in sdxl_lora.truth.items()}, str(truth))
    path, _ = extracted["ldm"]
    cells = [{"arch": "sdxl", "format": "kohya", "lora": str(path), "truth": str(truth)}]
    result = run_worker(source_folder(), {"cells": cells}, tmp_path)  # skips, naming the folder, without it
    (cell,) = result["cells"]
    assert "crash" not in cell, cell.get("crash")
    r = cell["result"]
    assert r["expected"] == r["loaded"] > 0 and not r["wrong"] and not r["stray"], r
    assert not r["not_loaded"] and not r["errors"] and not r["not_added"], r
    assert r["worst"] < 1e-5  # the worker's own tolerance is 1e-5: the extraction is well inside it


def test_both_layouts_give_the_same_lora(extracted):
    """Same differences, same seeds: the diffusers folder and the LDM file give the same tensors,
    and so does a cross-layout pair (base as a diffusers folder, finetuned as an LDM file)."""
    a = load_file(str(extracted["diffusers"][0]))
    b = load_file(str(extracted["ldm"][0]))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst


def test_cross_layout_pair(sdxl_checkpoints, sdxl_lora, tmp_path):
    base = sdxl_checkpoints["diffusers"][0]
    finetuned = sdxl_checkpoints["ldm"][1]
    report = extract(base, finetuned, tmp_path / "x.safetensors", rank=MAX_RANK, te=True, dtype="float32")
    assert len(report.modules) == len(sdxl_lora.truth) and report.worst_error < RTOL


def test_text_encoders_only_with_te(sdxl_checkpoints, sdxl_lora, tmp_path):
    base, finetuned = sdxl_checkpoints["ldm"]
    report = extract(base, finetuned, tmp_path / "unet.safetensors", rank=MAX_RANK, dtype="float32")
    unet = {k for k in sdxl_lora.truth if k.startswith("unet.")}
    assert len(report.modules) == len(unet)
    assert all(m.group.startswith("diffusion_model.") for m in report.modules)
    te = [k for k, why in report.skipped.items() if "--te" in why]
    assert len(te) == len(sdxl_lora.truth) - len(unet)  # listed, not dropped silently
    keys = load_file(str(tmp_path / "unet.safetensors"))
    assert all(k.startswith("lora_unet_") for k in keys)


def test_energy_keeps_the_dense_svd_rank(sdxl_checkpoints, sdxl_lora, tmp_path):
    """--energy E keeps, per module, the smallest k with Σ_{i<k} σ_i² ≥ E Σ σ_i², σ from a dense SVD
    of the truth ΔW; the reported error is √(1 − kept energy)."""
    base, finetuned = sdxl_checkpoints["diffusers"]
    energy = 0.9
    report = extract(base, finetuned, tmp_path / "e.safetensors", energy=energy, te=True, dtype="float32")
    conv = "diffusion_model.input_blocks.4.0.in_layers.2"  # down_blocks.1.resnets.0.conv1: rank 8, 3x3
    (m,) = [m for m in report.modules if m.group == conv]
    delta = sdxl_lora.truth["unet.down_blocks.1.resnets.0.conv1"].double()
    s = torch.linalg.svdvals(delta.reshape(delta.shape[0], -1))
    share = torch.cumsum(s**2, 0) / (s**2).sum()
    k = int(torch.nonzero(share >= energy - 1e-12)[0]) + 1
    assert 1 < k < MAX_RANK and m.rank == k, (m.rank, k)
    assert math.isclose(m.rel_error, math.sqrt(1 - float(share[k - 1])), rel_tol=1e-3)
    capped = extract(base, finetuned, tmp_path / "c.safetensors", energy=0.999999, rank=2, te=True, dtype="float32")
    assert max(m.rank for m in capped.modules) == 2 and len(report.modules) == len(capped.modules)


def test_mismatched_checkpoints_are_refused(sdxl_checkpoints, base_models, tmp_path):
    base = base_models["sd15_unet"]
    _, finetuned = sdxl_checkpoints["diffusers"]
    with pytest.raises(BaseModelMismatchError, match="same model"):
        extract(base, finetuned, tmp_path / "x.safetensors", rank=4)
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_requests_are_refused(sdxl_checkpoints, tmp_path):
    base, finetuned = sdxl_checkpoints["ldm"]
    with pytest.raises(LoraMergeError, match="--rank N"):
        extract(base, finetuned, tmp_path / "x.safetensors")
    with pytest.raises(LoraMergeError, match="energy"):
        extract(base, finetuned, tmp_path / "x.safetensors", energy=1.5)
    with pytest.raises(OutputError, match="input"):
        extract(base, finetuned, finetuned, rank=4, overwrite=True)
    with pytest.raises(LoraMergeError, match="no adaptable weight differs"):
        extract(base, base, tmp_path / "x.safetensors", rank=4)
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_extract(sdxl_checkpoints, tmp_path):
    import json

    from ._cli import cli

    base, finetuned = sdxl_checkpoints["ldm"]
    out, js = tmp_path / "cli.safetensors", tmp_path / "report.json"
    proc = cli("extract", base, finetuned, "-o", out, "--rank", 8, "--dtype", "float32", "--report-json", js)
    assert proc.returncode == 0, proc.stderr
    assert "modules, worst relative error" in proc.stdout and "largest errors" in proc.stdout
    report = json.loads(js.read_text())
    assert report["architecture"] == "sdxl" and all(m["rel_error"] < RTOL for m in report["modules"])
    assert any("--te" in why for why in report["skipped"].values())
    proc = cli("extract", base, finetuned, "-o", out, "--rank", 8)
    assert proc.returncode == 2 and "exists" in proc.stderr
    proc = cli("extract", base, finetuned, "-o", tmp_path / "n.safetensors")
    assert proc.returncode == 2 and "error:" in proc.stderr and "--rank N" in proc.stderr
