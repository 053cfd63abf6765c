"""Fixtures of the tool tests: the tiny SDXL models as checkpoints in two layouts, before and after a
real PEFT LoRA (``sdxl_peft_diffusers``: UNet linear + 3x3 conv, both text encoders; ranks 2, 4, 8)
is added to their weights; single-threaded torch (tiny tensors)."""

from __future__ import annotations

import pytest

from tests.fixtures.common import torch_threads


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="package")
def sdxl_fixtures(tmp_path_factory):
    """The SDXL PEFT fixtures alone (their builder, not all fixtures: time)."""
    from tests.fixtures.peft_fixtures import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("sdxl_lora"))


@pytest.fixture(scope="package")
def sdxl_lora(sdxl_fixtures):
    return sdxl_fixtures["sdxl_peft_diffusers"]


@pytest.fixture(scope="package")
def comfy_sdxl():
    from tests.clients._comfy import ComfySDXL

    return ComfySDXL()


@pytest.fixture(scope="package")
def sdxl_checkpoints(tmp_path_factory, sdxl_lora, comfy_sdxl):
    """{"diffusers" | "ldm": (base, finetuned)}: a diffusers folder and a single-file LDM checkpoint
    (named by ComfyUI's own map), finetuned = base + the fixture's truth ΔW."""
    from ._models import diffusers_folder, ldm_checkpoint

    root = tmp_path_factory.mktemp("sdxl_checkpoints")
    return {
        "diffusers": (diffusers_folder(root / "base"), diffusers_folder(root / "finetuned", sdxl_lora.truth)),
        "ldm": (
            ldm_checkpoint(root / "base.safetensors", comfy_sdxl),
            ldm_checkpoint(root / "finetuned.safetensors", comfy_sdxl, sdxl_lora.truth),
        ),
    }
