"""The optimizer's result cache: served while inputs and options are unchanged, recomputed when a
file or an option changes, least recently used first out, size from LORAMERGE_COMFY_CACHE."""

from __future__ import annotations

import os

from ._util import stack

NORM = (("sdxl_lycoris_norm", 1.0, 1.0),)


def _run(pack, host, settings=None):
    return pack.LoraOptimizer().optimize(host.model, stack(pack, *NORM), 1.0, 1.0, clip=host.clip, settings=settings)


def test_cached_until_an_input_or_option_changes(pack, host, loras):
    pack.cache.clear()
    _, _, report, first = _run(pack, host)
    assert "groups merged (computed)" in report
    _, _, report, again = _run(pack, host)
    assert "groups merged (cached result)" in report and again.result is first.result
    assert pack.cache.STATS == {"hits": 1, "misses": 1}

    defaults = {n: s[1]["default"] for n, s in pack.OptimizerSettings.INPUT_TYPES()["required"].items()}
    (other,) = pack.OptimizerSettings().settings(**{**defaults, "merge_seed": 5})
    assert "(computed)" in _run(pack, host, other)[2]

    path = loras / "sdxl_lycoris_norm.safetensors"
    changed_before = pack.LoraStack.IS_CHANGED("sdxl_lycoris_norm.safetensors")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file "changed" on disk
    assert pack.LoraStack.IS_CHANGED("sdxl_lycoris_norm.safetensors") != changed_before
    _, _, report, fresh = _run(pack, host)
    assert "(computed)" in report and fresh.result is not first.result


def test_least_recently_used_first_out(pack, monkeypatch):
    cache = pack.cache
    cache.clear()
    monkeypatch.setenv("LORAMERGE_COMFY_CACHE", "2")
    calls = []

    def value(k):
        return cache.cached(k, lambda: calls.append(k) or k)[0]

    for k in ("a", "b", "a", "c", "a", "b"):
        value(k)
    assert calls == ["a", "b", "c", "b"]  # "b" was evicted by "c" ("a" had been used more recently)
    monkeypatch.setenv("LORAMERGE_COMFY_CACHE", "0")
    cache.clear()
    value("x"), value("x")
    assert calls[-2:] == ["x", "x"]
    cache.clear()
