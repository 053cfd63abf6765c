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
         "hunyuan_video_peft_diffusers",
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


def test_hunyuan_video_comfy_names_are_comfyuis_own(real_fixtures, tmp_path):
    """`--format comfy` spells HunyuanVideo as ComfyUI's model does (its key map reads every
    diffusion_model.<own name>, but not time_in.mlp.0 from the original names); kohya keeps the
    original checkpoint's names; modules ComfyUI does not rename stay as they are."""
    from safetensors import safe_open

    fx = real_fixtures["hunyuan_video_peft_diffusers"]
    names = {}
    for fmt in ("comfy", "kohya"):
        out = tmp_path / f"{fmt}.safetensors"
        convert(fx.path, out, fmt, dtype="float32")
        with safe_open(str(out), "pt") as f:
            names[fmt] = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in f.keys()}
    comfy, kohya = names["comfy"], names["kohya"]
    assert {"diffusion_model.double_blocks.0.img_mlp.0", "diffusion_model.double_blocks.0.img_attn.qkv",
            "diffusion_model.double_blocks.0.img_mod.lin", "diffusion_model.time_in.in_layer"} <= comfy
    assert not any(n.endswith(("img_mlp.fc1", "img_attn_qkv", "img_mod.linear", "time_in.mlp.0")) for n in comfy)
    assert "lora_unet_double_blocks_0_img_mlp_fc1" in kohya and "lora_unet_time_in_mlp_0" in kohya
    # no ComfyUI spelling of their own: written as the original checkpoint names them
    assert {"diffusion_model.final_layer.linear", "diffusion_model.txt_in.input_embedder",
            "diffusion_model.single_blocks.0.linear1"} <= comfy


def test_our_recorded_architecture_breaks_a_detection_tie(real_fixtures, tmp_path):
    """A comfy HunyuanVideo file that adapts only blocks FLUX has too ties with FLUX; the
    architecture loramerge recorded in the file's metadata decides, not FLUX's priority."""
    from safetensors import safe_open

    from loramerge.formats.align import RECORDED_ARCH, detect

    full = tmp_path / "full.safetensors"
    convert(real_fixtures["hunyuan_video_peft_diffusers"].path, full, "comfy", dtype="float32")
    with safe_open(str(full), "pt") as f:
        meta = f.metadata()
        part = {k: f.get_tensor(k) for k in f.keys() if k.startswith("diffusion_model.double_blocks.0.")}
    assert meta[RECORDED_ARCH] == "hunyuan_video" and part
    ours, foreign = tmp_path / "ours.safetensors", tmp_path / "foreign.safetensors"
    save_file(part, str(ours), metadata=meta)
    save_file(part, str(foreign))
    assert detect([AdapterFile(foreign)]).architecture == "flux"
    found = detect([AdapterFile(ours)])
    assert found.architecture == "hunyuan_video" and "metadata" in found.reason


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
