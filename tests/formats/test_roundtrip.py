"""Round trips: convert every real fixture to every output format and read it back — every ΔW is
preserved; and property tests over adapter kinds, shapes, ranks, alphas and dtypes."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from loramerge import architectures as A
from loramerge.convert import convert
from loramerge.errors import OutputError
from loramerge.formats.align import align, load_group
from loramerge.formats.reader import AdapterFile

CASES = ["sdxl_peft_diffusers", "sdxl_kohya_diffusers_converter", "flux_peft_diffusers", "wan_peft_diffusers",
         "sdxl_lycoris_tucker", "sdxl_lycoris_loha", "sdxl_lycoris_lokr", "sdxl_lycoris_full", "sdxl_lycoris_norm"]


def deltas(path, arch):
    f = AdapterFile(path)
    a = align(f, A.get_table(arch), A.placer(arch), strict=True)
    return {k: load_group(a, A.get_table(arch), k).dense() for k in a.groups}


@pytest.mark.parametrize("fmt", ["kohya", "comfy", "diffusers"])
@pytest.mark.parametrize("name", CASES)
def test_convert_preserves_every_delta(real_fixtures, tmp_path, name, fmt):
    fx = real_fixtures[name]
    out = tmp_path / f"{name}.{fmt}.safetensors"
    has_dense_1d = "norm" in fx.adapter_kinds or "full" in fx.adapter_kinds
    if fmt == "diffusers" and has_dense_1d:
        with pytest.raises(OutputError, match="cannot hold norm or bias"):
            convert(fx.path, out, fmt, dtype="float32")
        assert not out.exists() and not list(tmp_path.iterdir())  # nothing left behind
        report = convert(fx.path, out, fmt, lossy=True, dtype="float32")
        assert report.dropped
        return
    report = convert(fx.path, out, fmt, dtype="float32")
    before, after = deltas(fx.path, fx.architecture), deltas(out, fx.architecture)
    assert set(after) == set(before)
    for key, want in before.items():
        got = after[key].reshape(want.shape)
        err = float((got - want).norm() / want.norm().clamp_min(1e-30))
        assert err < 1e-5, (key, err)
    if fmt == "diffusers" and set(fx.adapter_kinds) - {"lora"}:
        assert report.conversions  # LoHa/LoKr/full content was factorised, with its error reported
        assert max(report.conversions.values()) < 1e-5


def test_convert_chain_kohya_diffusers_comfy_kohya(real_fixtures, tmp_path):
    fx = real_fixtures["flux_peft_diffusers"]
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    convert(fx.path, a, "kohya", dtype="float32")
    convert(a, b, "diffusers", dtype="float32")
    convert(b, c, "comfy", dtype="float32")
    before, after = deltas(fx.path, "flux"), deltas(c, "flux")
    for key, want in before.items():
        torch.testing.assert_close(after[key], want, rtol=1e-5, atol=1e-6)


def test_failed_convert_leaves_no_file(tmp_path):
    src = tmp_path / "x.safetensors"
    save_file({"lora_unet_nonexistent_module.lora_down.weight": torch.ones(2, 3),
               "lora_unet_nonexistent_module.lora_up.weight": torch.ones(4, 2)}, src)
    with pytest.raises(Exception, match="do not fit"):
        convert(src, tmp_path / "out.safetensors", "kohya", arch="sdxl", dtype="float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


# -- property tests: each adapter kind through each writer ----------------------------------------
SDXL_LINEAR = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
SDXL_CONV = "lora_unet_input_blocks_1_0_in_layers_2"


def _adapter(kind, shape, rank, alpha, g):
    out, inn, *k = shape
    flat = inn * (k[0] * k[1] if k else 1)
    t = {}
    if kind == "lora":
        t["lora_down.weight"] = torch.randn(rank, inn, *k, generator=g)
        t["lora_up.weight"] = torch.randn(out, rank, *([1, 1] if k else []), generator=g)
    elif kind == "loha":
        for h in ("1", "2"):
            t[f"hada_w{h}_a"] = torch.randn(out, rank, generator=g)
            t[f"hada_w{h}_b"] = torch.randn(rank, flat, generator=g)
    elif kind == "lokr":
        t["lokr_w1"] = torch.randn(2, 2, generator=g)
        t["lokr_w2_a"] = torch.randn(out // 2, rank, generator=g)
        t["lokr_w2_b"] = torch.randn(rank, flat // 2, generator=g)
    else:
        t["diff"] = torch.randn(*shape, generator=g)
    if alpha is not None:
        t["alpha"] = torch.tensor(alpha)
    return t


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["lora", "loha", "lokr", "full"]), conv=st.booleans(), rank=st.integers(1, 6),
       alpha=st.one_of(st.none(), st.floats(0.25, 64)), fmt=st.sampled_from(["kohya", "comfy", "diffusers"]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_property_roundtrip(tmp_path_factory, kind, conv, rank, alpha, fmt, dtype, seed):
    tmp = tmp_path_factory.mktemp("prop")
    g = torch.Generator().manual_seed(seed)
    shape = (8, 6, 3, 3) if conv else (8, 6)
    stem = SDXL_CONV if conv else SDXL_LINEAR
    if kind == "loha" and conv:
        shape = (8, 6)  # LyCORIS non-Tucker LoHa stores conv kernels flattened; covered by the fixtures
    src = tmp / "in.safetensors"
    save_file({f"{stem}.{k}": v.to(dtype) for k, v in _adapter(kind, shape, rank, alpha, g).items()}, src)
    out = tmp / "out.safetensors"
    convert(src, out, fmt, arch="sdxl", dtype="float32")
    before, after = deltas(src, "sdxl"), deltas(out, "sdxl")
    (key, want), = before.items()
    got = after[key].reshape(want.shape)
    tol = 1e-5 if fmt != "diffusers" or kind == "lora" else 1e-4
    assert float((got - want).norm() / want.norm().clamp_min(1e-30)) < tol
