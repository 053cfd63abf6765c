"""Evidence for the fixes proposed for the loramerge bugs marked xfail in this folder: each fix,
applied by hand to loramerge's own output file, makes the client load every weight exactly (and
keeps ComfyUI exact). When loramerge ships a fix, these keep passing and the xfails turn into
failures until their marks are removed."""

from __future__ import annotations

import json
import re

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._comfy import assert_loaded_exactly as assert_comfy_exact
from ._common import expected_deltas
from ._diffusers import assert_loaded_exactly, load_sdxl, load_transformer


def _rewrite(src, dst, tensors=None, metadata=None):
    with safe_open(str(src), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    sd = tensors(sd) if tensors else sd
    meta = metadata(meta) if metadata else meta
    save_file(sd, str(dst), metadata=meta)
    return dst


def uniform_alpha(sd: dict) -> dict:
    """One `.alpha` for the whole file (the most common rank); each module's scale baked into its up."""
    alphas = {k[: -len(".alpha")]: float(v) for k, v in sd.items() if k.endswith(".alpha")}
    common = max(set(alphas.values()), key=list(alphas.values()).count)
    out = dict(sd)
    for stem, alpha in alphas.items():
        out[f"{stem}.alpha"] = torch.tensor(common)
        up = f"{stem}.lora_up.weight"
        out[up] = sd[up] * (alpha / common)
    return out


def _edit_peft_metadata(meta: dict, edit) -> dict:
    cfg = json.loads(meta["lora_adapter_metadata"])
    meta["lora_adapter_metadata"] = json.dumps({k: edit(k, v) for k, v in cfg.items()})
    return meta


def strip_text_model(meta: dict) -> dict:
    def edit(key, value):
        if not key.startswith("text_encoder"):
            return value
        fix = lambda p: p.removeprefix("text_model.")  # noqa: E731
        if isinstance(value, list):
            return [fix(p) for p in value]
        if isinstance(value, dict):
            return {fix(p): v for p, v in value.items()}
        return value

    return _edit_peft_metadata(meta, edit)


def anchor_patterns(meta: dict) -> dict:
    def edit(key, value):
        if key.endswith(("rank_pattern", "alpha_pattern")):
            return {"^" + re.escape(p): v for p, v in value.items()}
        return value

    return _edit_peft_metadata(meta, edit)


def test_uniform_alpha_kohya_loads_exactly_in_diffusers_and_comfyui(real_fixtures, converted, comfy_sdxl, tmp_path):
    fx = real_fixtures["sdxl_peft_diffusers"]
    path = _rewrite(converted(fx.name, "kohya"), tmp_path / "uniform_alpha.safetensors", tensors=uniform_alpha)
    expected = expected_deltas([(fx, 1.0)])
    for comp in ("unet", "text_encoder"):
        assert_loaded_exactly(load_sdxl(path, (comp,)), expected, fx.truth, f"uniform alpha, {comp}")
    assert_comfy_exact(comfy_sdxl, comfy_sdxl.load(path), expected, "uniform alpha in ComfyUI")


def test_text_encoder_metadata_without_text_model_loads_exactly(real_fixtures, converted, tmp_path):
    fx = real_fixtures["sdxl_peft_diffusers"]
    path = _rewrite(converted(fx.name, "diffusers"), tmp_path / "te_meta.safetensors", metadata=strip_text_model)
    for comp in ("text_encoder", "text_encoder_2"):
        assert_loaded_exactly(load_sdxl(path, (comp,)), expected_deltas([(fx, 1.0)]), fx.truth, f"metadata fix, {comp}")


def test_anchored_rank_pattern_loads_flux_merge_exactly(real_fixtures, merged, tmp_path):
    a, b = real_fixtures["flux_peft_diffusers"], real_fixtures["lycoris_wrapper"]
    src, _ = merged(a.name, b.name, "weighted_sum", "diffusers")
    path = _rewrite(src, tmp_path / "anchored.safetensors", metadata=anchor_patterns)
    load = load_transformer("flux", path)
    assert_loaded_exactly(load, expected_deltas([(a, 0.8), (b, 0.5)]), set(a.truth) | set(b.truth),
                          "FLUX merge, anchored patterns")
