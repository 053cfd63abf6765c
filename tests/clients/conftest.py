"""Fixtures of the client tests: single-threaded torch, loramerge outputs written once per session.

The client tests load loramerge outputs with the real clients (diffusers + PEFT, ComfyUI's own
loader code): every test writes a file with loramerge (``convert`` or ``merge``), loads it with the
client's own loader into fresh tiny models built with the fixture's seeds, lets the client
fuse/patch it, and compares every weight of the models: adapted weights equal base + the expected
ΔW, all others are bit-for-bit unchanged, and no key of the file is left unloaded.
"""

from __future__ import annotations

import pytest

from tests.fixtures.common import torch_threads


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """Tiny tensors: intra-op threads only spin (10x slower on a shared 2-core box)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="package")
def client_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("client_outputs")


@pytest.fixture(scope="package")
def converted(real_fixtures, client_dir):
    """converted(name, fmt) -> path of fixture `name` rewritten by ``loramerge.convert`` in `fmt`."""
    from loramerge.convert import convert

    cache = {}

    def get(name: str, fmt: str):
        if (name, fmt) not in cache:
            path = client_dir / f"{name}.{fmt}.safetensors"
            report = convert(real_fixtures[name].path, path, fmt, dtype="float32")
            assert not report.dropped, report.dropped
            cache[name, fmt] = path
        return cache[name, fmt]

    return get


@pytest.fixture(scope="package")
def merged(real_fixtures, client_dir):
    """merged(a, b, mode, fmt) -> (path, MergeResult): ``loramerge.api.merge`` of fixtures a at 0.8
    and b at 0.5, auto_strength off, saved in `fmt`. Each merge runs once per session."""
    from loramerge.api import merge

    results, paths = {}, {}

    def get(a: str, b: str, mode: str, fmt: str):
        key = (a, b, mode)
        if key not in results:
            results[key] = merge([f"{real_fixtures[a].path}:0.8", f"{real_fixtures[b].path}:0.5"],
                                 mode=mode, auto_strength=False, seed=0)
        if key + (fmt,) not in paths:
            path = client_dir / f"merge_{a}_{b}_{mode}.{fmt}.safetensors"
            results[key].save(path, format=fmt, dtype="float32")
            paths[key + (fmt,)] = path
        return paths[key + (fmt,)], results[key]

    return get


@pytest.fixture(scope="package")
def comfy_sdxl():
    from ._comfy import ComfySDXL

    return ComfySDXL()


@pytest.fixture(scope="package")
def comfy064_run(real_fixtures, converted, base_models, tmp_path_factory):
    """Every ComfyUI 0.3.64 check of the session, run once in one subprocess (``_comfy064_worker``):
    its JSON result (``cells``, ``merges``, ``nodes``). Skips, naming the folder, without a usable copy."""
    from ._comfy064 import shared_run
    from ._comfy064_cases import make_job

    return shared_run(tmp_path_factory, "comfy064",
                      lambda work: make_job(work, real_fixtures, converted, base_models))
