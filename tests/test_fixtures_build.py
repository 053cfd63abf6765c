"""The real-LoRA fixtures build quickly, are not vacuous, and their truth is what the libraries compute.

Each file is loaded back with the producing library's own loader onto freshly built tiny models
(diffusers' pipeline loaders for diffusers/PEFT files; lycoris' loaders for lycoris files) and the
forward difference (adapter on minus original layer, float64, random inputs) is compared with
``op(x, truth)`` on a structural sample of modules. Known library quirks found while building the
fixtures are pinned by ``test_quirk_*`` tests, so a library upgrade that changes them is noticed.
"""

from __future__ import annotations

import json
import logging
import re
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.fixtures import (
    BUILD_TIMINGS,
    FIXTURE_NAMES,
    tiny_clip_text_encoder,
    tiny_flux_transformer,
    tiny_sd15_unet,
    tiny_sdxl_unet,
    tiny_wan_transformer,
)
from tests.fixtures.common import structural_sample, torch_threads, truth_key
from tests.fixtures.models import (
    tiny_hunyuan_video_transformer,
    tiny_ltx_transformer,
    tiny_qwen_image_transformer,
    tiny_zimage_transformer,
)
from tests.fixtures.truth import apply_op, check_delta, op_spec

RTOL = 1e-5
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
KINDS = {"lora", "loha", "lokr", "full", "norm", "dora"}
PEFT_NAMES = [n for n in FIXTURE_NAMES if "peft" in n]
LYCORIS_KOHYA_NAMES = [n for n in FIXTURE_NAMES if n.startswith("sdxl_lycoris_")]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only spin (badly on a shared 2-core box)."""
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _quiet_libraries():
    levels = {n: logging.getLogger(n).level for n in ("diffusers", "transformers", "peft", "LyCORIS")}
    for n in levels:
        logging.getLogger(n).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    for n, lvl in levels.items():
        logging.getLogger(n).setLevel(lvl)


# ----------------------------------------------------------------------------------------- helpers

def _models_for(fx):
    """Fresh tiny base models for a fixture, by component (same seeds as the build)."""
    if fx.architecture == "sdxl":
        return {"unet": tiny_sdxl_unet(), "text_encoder": tiny_clip_text_encoder("l"),
                "text_encoder_2": tiny_clip_text_encoder("g")}
    if fx.architecture == "sd15":
        return {"unet": tiny_sd15_unet(), "text_encoder": tiny_clip_text_encoder("l")}
    if fx.architecture == "flux":
        return {"transformer": tiny_flux_transformer()}
    if fx.architecture == "wan":
        return {"transformer": tiny_wan_transformer(i2v="i2v" in fx.name)}
    if fx.architecture in DIT_MODELS:
        return {"transformer": DIT_MODELS[fx.architecture][1]()}
    raise AssertionError(fx.architecture)


# architecture -> (pipeline class name, tiny transformer) of the transformer-only DiT fixtures
DIT_MODELS = {"qwen_image": ("QwenImagePipeline", tiny_qwen_image_transformer),
              "hunyuan_video": ("HunyuanVideoPipeline", tiny_hunyuan_video_transformer),
              "ltx": ("LTXPipeline", tiny_ltx_transformer), "zimage": ("ZImagePipeline", tiny_zimage_transformer)}


def _module_keys(models):
    return {id(m): truth_key(comp, n) for comp, model in models.items() for n, m in model.named_modules()}


def _load_with_diffusers(fx, models):
    """Load a diffusers-format (or kohya) file the way ``<Pipeline>.load_lora_weights`` does."""
    from diffusers import FluxPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline, WanPipeline

    path = str(fx.path)
    if fx.architecture in ("sdxl", "sd15"):
        pipe = StableDiffusionXLPipeline if fx.architecture == "sdxl" else StableDiffusionPipeline
        sd, alphas, meta = pipe.lora_state_dict(path, unet_config=models["unet"].config, return_lora_metadata=True)
        pipe.load_lora_into_unet(sd, alphas, models["unet"], metadata=meta)
        for comp in ("text_encoder", "text_encoder_2"):
            if comp in models:
                pipe.load_lora_into_text_encoder(sd, alphas, models[comp], prefix=comp, metadata=meta)
    elif fx.architecture == "flux":
        sd, alphas, meta = FluxPipeline.lora_state_dict(path, return_alphas=True, return_lora_metadata=True)
        FluxPipeline.load_lora_into_transformer(sd, alphas, models["transformer"], metadata=meta)
    elif fx.architecture == "wan":
        sd, meta = WanPipeline.lora_state_dict(path, return_lora_metadata=True)
        WanPipeline.load_lora_into_transformer(sd, models["transformer"], metadata=meta)
    elif fx.architecture in DIT_MODELS:
        import diffusers

        pipe = getattr(diffusers, DIT_MODELS[fx.architecture][0])
        sd, meta = pipe.lora_state_dict(path, return_lora_metadata=True)
        pipe.load_lora_into_transformer(sd, models["transformer"], metadata=meta)
    else:
        raise AssertionError(fx.architecture)


def _peft_layers(models):
    from peft.tuners.lora import LoraLayer

    keys = _module_keys(models)
    return {keys[id(m)]: m for model in models.values() for m in model.modules() if isinstance(m, LoraLayer)}


def _peft_signature(layer):
    spec = op_spec(layer.get_base_layer())
    (adapter,) = layer.active_adapters
    return (spec.kind, spec.weight_shape[2:], layer.r[adapter], float(layer.scaling[adapter]),
            bool(layer.use_dora.get(adapter, False)))


def _check_peft_layers(fx, layers, keys, gen):
    errs = {}
    for key in keys:
        layer = layers[key]
        base = layer.get_base_layer()
        errs[key] = check_delta(op_spec(base), lambda x, l=layer, b=base: l(x) - b(x), fx.truth[key], None, gen)
    return errs


def _lycoris_check(fx, loras, models, base, n=8):
    """Forward check of loaded lycoris modules (already applied, float64) on a structural sample."""
    from tests.fixtures.lycoris_fixtures import lycoris_signature

    keys = _module_keys(models)
    by_key = {keys[id(l.org_module[0])]: l for l in loras}
    specs = {k: op_spec(l.org_module[0]) for k, l in by_key.items()}
    sample = structural_sample({k: lycoris_signature(l, specs[k]) for k, l in by_key.items()}, n)
    gen = torch.Generator().manual_seed(7)
    errs = {}
    for key in sample:
        lyco, spec = by_key[key], specs[key]
        w0, b0 = base[key]
        errs[key] = check_delta(spec, lambda x: lyco(x) - apply_op(spec, x, w0, b0), fx.truth[key],
                                fx.truth.get(key + "#bias"), gen)
    return errs, set(by_key)


def _base_params(models):
    """Original weight/bias per module key, float64 (taken before any adapter is applied)."""
    out = {}
    for comp, model in models.items():
        for n, m in model.named_modules():
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor):
                b = getattr(m, "bias", None)
                out[truth_key(comp, n)] = (w.detach().double().clone(),
                                           b.detach().double().clone() if isinstance(b, torch.Tensor) else None)
    return out


def _assert_close(errs, name):
    assert errs, f"{name}: nothing checked"
    bad = {k: e for k, e in errs.items() if not e < RTOL}
    assert not bad, f"{name}: truth != library forward for {len(bad)}/{len(errs)} modules, e.g. {list(bad.items())[:3]}"


# ------------------------------------------------------------------------------------------- tests

def test_build_time_and_inventory(real_fixtures):
    assert tuple(real_fixtures) == FIXTURE_NAMES
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in BUILD_TIMINGS.items())
    print(f"\nreal LoRA fixtures: {len(real_fixtures)} built in {timings}")
    for name, fx in real_fixtures.items():
        print(f"  {name:36s} {fx.producer:26s} {fx.format:9s} {fx.architecture:5s} {fx.adapter_kinds}")
    # Generous: the build takes ~20-30 s on 2 idle cores; this only catches a blow-up.
    if BUILD_TIMINGS:
        assert BUILD_TIMINGS["total"] < 120


_UP_SUFFIXES = ("lora_B.weight", "lora_up.weight", "lora.up.weight", "lora_linear_layer.up.weight",
                "hada_w2_a", "lokr_w2", "lokr_w2_b", "diff", "w_norm")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_file_loads_and_is_not_vacuous(real_fixtures, name):
    fx = real_fixtures[name]
    assert fx.path.is_file() and fx.path.suffix == ".safetensors"
    sd = load_file(str(fx.path))
    with safe_open(str(fx.path), "pt") as f:
        meta = f.metadata() or {}
    assert sd
    assert fx.format in ("diffusers", "kohya", "lycoris")
    assert fx.architecture in ("sd15", "sdxl", "flux", "wan", *DIT_MODELS, "unknown")
    prefixes = {"diffusers": tuple(c + "." for c in COMPONENTS), "kohya": ("lora_unet_", "lora_te1_", "lora_te2_",
                                                                         "lora_te_"), "lycoris": ("lycoris_",)}
    assert all(k.startswith(prefixes[fx.format]) for k in sd), [k for k in sd if not k.startswith(prefixes[fx.format])][:3]

    # Every tensor trained: finite and not all zero (PEFT/lycoris zero-init their up factors).
    for k, v in sd.items():
        assert torch.isfinite(v.float()).all(), k
        assert v.float().abs().max() > 0, f"{name}: {k} is all zero"
    assert any(k.endswith(_UP_SUFFIXES) for k in sd), f"{name}: no up/B-type tensor"

    # alpha != rank, so a reader that ignores the scale fails.
    if fx.format == "diffusers":
        header = json.loads(meta["lora_adapter_metadata"])
        comps = {k.split(".")[0] for k in header}
        assert comps and comps <= set(COMPONENTS)
        for comp in comps:
            r, alpha = header[f"{comp}.r"], header[f"{comp}.lora_alpha"]
            assert r != alpha, (comp, r, alpha)
            ranks, alphas = header[f"{comp}.rank_pattern"], header[f"{comp}.alpha_pattern"]
            for pat in set(ranks) | set(alphas):
                assert ranks.get(pat, r) != alphas.get(pat, alpha), (comp, pat)
    else:
        _assert_alpha_differs_from_rank(fx, sd)

    # Truth: non-empty, float32, finite, non-zero per module, keys well formed, counts consistent.
    assert fx.truth
    for k, v in fx.truth.items():
        assert k.split(".")[0] in COMPONENTS, k
        assert v.dtype == torch.float32, k
        assert torch.isfinite(v).all(), k
        assert v.abs().max() > 0, f"{name}: truth for {k} is zero"
        if k.startswith("text_encoder"):
            assert ".text_model." in k, k
    assert set(fx.adapter_kinds) <= KINDS and all(v > 0 for v in fx.adapter_kinds.values())
    n_modules = sum(v for k, v in fx.adapter_kinds.items() if k != "dora")
    assert n_modules == sum("#" not in k for k in fx.truth)


def _lora_names(sd):
    return sorted({k.split(".")[0] for k in sd if "." in k})


def _group_by_module(sd):
    groups = {}
    for k, v in sd.items():
        ln, _, suffix = k.partition(".")
        groups.setdefault(ln, {})[suffix] = v
    return groups


def _assert_alpha_differs_from_rank(fx, sd):
    n_scaled = 0
    for ln, t in sorted(_group_by_module(sd).items()):
        if "alpha" not in t:
            assert set(t) <= {"diff", "diff_b", "w_norm", "b_norm"}, (ln, sorted(t))
            continue
        alpha = float(t["alpha"])
        if "lora_down.weight" in t:
            rank = t["lora_down.weight"].shape[0]
        elif "hada_w1_b" in t:
            rank = t["hada_w1_b"].shape[0]
        elif "lokr_w1_b" in t or "lokr_w2_b" in t:
            rank = (t.get("lokr_w1_b") if "lokr_w1_b" in t else t["lokr_w2_b"]).shape[0]
        else:  # LoKr with both factors full: no rank, lycoris uses scale 1 and writes alpha = dim
            assert "lokr_w1" in t and "lokr_w2" in t, (ln, sorted(t))
            continue
        if fx.name == "sdxl_kohya_diffusers_converter":
            assert alpha == rank, (ln, alpha, rank)  # quirk: the converter always writes alpha = rank
        else:
            assert alpha != rank, (ln, alpha, rank)
            n_scaled += 1
    if fx.name not in ("sdxl_kohya_diffusers_converter", "sdxl_lycoris_lokr_full_matrix", "sdxl_lycoris_full"):
        assert n_scaled > 0, fx.name


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_truth_shapes_match_base_model_files(real_fixtures, base_models, name):
    """Every truth key names a real parameter of the tiny base model files, with its shape."""
    fx = real_fixtures[name]
    files = {
        ("sdxl", "unet"): "sdxl_unet", ("sd15", "unet"): "sd15_unet",
        ("sdxl", "text_encoder"): "clip_l", ("sd15", "text_encoder"): "clip_l", ("sdxl", "text_encoder_2"): "clip_g",
        ("flux", "transformer"): "flux_transformer",
        ("wan", "transformer"): "wan_i2v_transformer" if "i2v" in name else "wan_transformer",
        **{(arch, "transformer"): f"{arch}_transformer" for arch in DIT_MODELS},
    }
    headers = {}
    for key, delta in fx.truth.items():
        comp, path = key.split(".", 1)
        module, _, bias = path.partition("#")
        fname = files[(fx.architecture, comp)]
        if fname not in headers:
            with safe_open(str(base_models[fname]), "pt") as f:
                headers[fname] = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        param = f"{module}.{'bias' if bias else 'weight'}"
        if param not in headers[fname]:
            # transformers 5: CLIPTextModel's parameters lost `text_model.`, CLIPTextModelWithProjection's kept it
            param = param.removeprefix("text_model.")
        assert param in headers[fname], (key, param)
        assert headers[fname][param] == tuple(delta.shape), (key, headers[fname][param], tuple(delta.shape))


@pytest.mark.parametrize("name", PEFT_NAMES)
def test_peft_truth_matches_diffusers_loaded_forward_and_merge(real_fixtures, name):
    """diffusers' own loader puts the file into fresh models; the PEFT forward and PEFT's merge
    (what merge_and_unload does per layer) both reproduce truth."""
    fx = real_fixtures[name]
    models = _models_for(fx)
    _load_with_diffusers(fx, models)
    for m in models.values():
        m.double()
    layers = _peft_layers(models)
    expected = {k for k in fx.truth if "#" not in k}
    if name == "sdxl_peft_diffusers_legacy_names":
        # quirk (see test_quirk_diffusers_drops_legacy_unet_attention_keys): only part of it loads.
        assert set(layers) < expected
    else:
        assert set(layers) == expected
    sample = structural_sample({k: _peft_signature(l) for k, l in layers.items()}, 8)
    _assert_close(_check_peft_layers(fx, layers, sample, torch.Generator().manual_seed(3)), name)

    merge_errs = {}
    for key in sample:
        layer = layers[key]
        base = layer.get_base_layer()
        w0 = base.weight.detach().clone()
        layer.merge()
        merge_errs[key] = (base.weight.detach() - w0 - fx.truth[key].double()).norm().item() / fx.truth[key].double().norm().item()
        layer.unmerge()
    _assert_close(merge_errs, name + " (merge)")


def test_legacy_names_file_is_the_same_training_run(real_fixtures):
    """The legacy-spelled file holds exactly the main file's tensors under diffusers' renames."""
    from diffusers.utils.state_dict_utils import PEFT_TO_DIFFUSERS

    main = load_file(str(real_fixtures["sdxl_peft_diffusers"].path))
    legacy = load_file(str(real_fixtures["sdxl_peft_diffusers_legacy_names"].path))
    renamed = {}
    for k, v in main.items():
        for pat, new in PEFT_TO_DIFFUSERS.items():
            if pat in k:
                k = k.replace(pat, new)
                break
        renamed[k] = v
    assert renamed.keys() == legacy.keys()
    assert all(torch.equal(renamed[k], legacy[k]) for k in legacy)
    assert any(".lora.down.weight" in k for k in legacy) and any(".lora_linear_layer.down" in k for k in legacy)
    assert any(".lora_A.weight" in k for k in legacy)  # mixed: only attention projections are renamed


def test_kohya_converter_truth_matches_file(real_fixtures):
    """Truth of the converted file = alpha/rank * up @ down from its own tensors, for every module,
    with kohya names built from the models' module paths (dots -> underscores, te1/te2)."""
    fx = real_fixtures["sdxl_kohya_diffusers_converter"]
    sd = load_file(str(fx.path))
    models = _models_for(fx)
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    seen = set()
    for comp, model in models.items():
        for n, m in model.named_modules():
            ln = prefix[comp] + n.replace(".", "_")
            if f"{ln}.lora_down.weight" not in sd:
                continue
            down, up = sd[f"{ln}.lora_down.weight"].double(), sd[f"{ln}.lora_up.weight"].double()
            scale = float(sd[f"{ln}.alpha"]) / down.shape[0]
            delta = (up.flatten(1) @ down.flatten(1)).reshape(m.weight.shape) * scale
            key = truth_key(comp, n)
            err = (delta - fx.truth[key].double()).norm() / delta.norm()
            assert err < RTOL, (key, err)
            seen.add(key)
    assert seen == set(fx.truth)
    # The same training run as sdxl_peft_diffusers, with PEFT's lora_alpha/r dropped.
    peft = real_fixtures["sdxl_peft_diffusers"].truth
    ratios = {round((peft[k].double().norm() / fx.truth[k].double().norm()).item(), 6) for k in fx.truth}
    assert ratios == {1.5, 2.5, 0.75, 0.5, 2.0, 4.0}, ratios  # the PEFT lora_alpha/r values in this run


@pytest.mark.parametrize("name", LYCORIS_KOHYA_NAMES)
def test_lycoris_truth_matches_reloaded_network_forward(real_fixtures, name):
    """sd-scripts' resume path: the same ``create_network`` call on fresh models, ``apply_to``, then
    lycoris' own ``load_weights`` of the file; every module loads and the forward reproduces truth."""
    from tests.fixtures.lycoris_fixtures import SDXL_KOHYA_SPECS, make_kohya_network

    fx = real_fixtures[name]
    models = _models_for(fx)
    with_te = SDXL_KOHYA_SPECS[name][3]
    tes = [models["text_encoder"], models["text_encoder_2"]] if with_te else None
    base = _base_params(models)
    network = make_kohya_network(name, models["unet"], tes)
    network.apply_to(tes, models["unet"], apply_text_encoder=with_te, apply_unet=True)
    state = network.load_weights(str(fx.path))
    assert not state, state  # no missing / unexpected keys
    for m in models.values():
        m.double()
    network.double()
    errs, loaded = _lycoris_check(fx, network.loras, models, base)
    assert loaded == {k for k in fx.truth if "#" not in k}
    _assert_close(errs, name)


# Modules lycoris 4.1.3's generic loader (create_network_from_weights / make_module) cannot rebuild.
_GENERIC_LOADER_FAILS = {
    "sdxl_lycoris_lokr": "lokr_t2",  # Tucker LoKr convs: wrong lora_dim/factor inferred
    "sdxl_lycoris_loha_dora_input_axis": "dora_scale",  # input-axis DoRA: loader assumes output axis
}


@pytest.mark.parametrize("name", [*LYCORIS_KOHYA_NAMES, "lycoris_wrapper"])
def test_lycoris_truth_matches_generic_loader_forward(real_fixtures, name):
    """lycoris' generic file loader (what inference tools use) rebuilds each module from the file
    alone; its forward reproduces truth. Modules it cannot rebuild are pinned in _GENERIC_LOADER_FAILS."""
    from lycoris.modules import get_module, make_module

    from tests.fixtures.lycoris_fixtures import _lycoris_sandbox

    fx = real_fixtures[name]
    models = _models_for(fx)
    base = _base_params(models)
    sd = load_file(str(fx.path))
    if fx.format == "lycoris":
        targets = {("lycoris_" + n).replace(".", "_"): m for n, m in models["transformer"].named_modules()}
    else:
        pre = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
        targets = {(pre[c] + n).replace(".", "_"): m for c, mm in models.items() for n, m in mm.named_modules()}
    loras, failed = [], []
    with _lycoris_sandbox():
        for ln in _lora_names(sd):
            algo, params = get_module(sd, ln)
            try:
                loras.append(make_module(algo, params, ln, targets[ln]))
            except Exception:
                failed.append(ln)
    marker = _GENERIC_LOADER_FAILS.get(name)
    if marker is None:
        assert not failed, failed[:5]
    else:
        assert failed and all(f"{ln}.{marker}" in sd for ln in failed), failed[:5]
        if not loras:  # nothing this loader can read; the resume-path test covers the file
            return
    for lyco in loras:
        lyco.apply_to()
        lyco.double()
    for m in models.values():
        m.double()
    errs, _ = _lycoris_check(fx, loras, models, base)
    _assert_close(errs, name)


# -------------------------------------------------------------------------------- pinned quirks

def test_quirk_kohya_converter_writes_alpha_equal_rank_and_drops_text_model(real_fixtures):
    """diffusers' convert_state_dict_to_kohya: `.alpha` = torch.tensor(rank) (int64) for every module
    (PEFT's lora_alpha is lost), no header metadata, and with transformers 5 the CLIP-L keys come
    out as lora_te1_encoder_layers_… (no text_model_) while CLIP-G keeps lora_te2_text_model_…."""
    fx = real_fixtures["sdxl_kohya_diffusers_converter"]
    sd = load_file(str(fx.path))
    alphas = {k: v for k, v in sd.items() if k.endswith(".alpha")}
    assert alphas and all(v.dtype == torch.int64 and v.dim() == 0 for v in alphas.values())
    assert all(int(v) == sd[k[:-len("alpha")] + "lora_down.weight"].shape[0] for k, v in alphas.items())
    with safe_open(str(fx.path), "pt") as f:
        assert not f.metadata()
    te1 = [k for k in sd if k.startswith("lora_te1_")]
    te2 = [k for k in sd if k.startswith("lora_te2_")]
    # transformers 5 flattened CLIPTextModel (te1) but not CLIPTextModelWithProjection (te2)
    assert te1 and all(k.startswith("lora_te1_encoder_layers_") for k in te1)
    assert te2 and all(k.startswith("lora_te2_text_model_encoder_layers_") for k in te2)
    assert "lora_unet_add_embedding_linear_1.lora_down.weight" in sd


def test_quirk_diffusers_kohya_loader_drops_add_embedding_and_misscales_alpha_overrides(real_fixtures):
    """Loading the converted kohya file with diffusers: add_embedding is dropped, and the rank-2
    modules (alpha 2 in the file, so scale 1) get the file-wide most common alpha (4), i.e. scale 2:
    diffusers builds their alpha_pattern keys from mangled names that match nothing (e.g.
    `attn2.processor.to_k_lora.down.weight`, `encoder.layers.1.self_attn`). The rank-8 conv with
    alpha 8 is placed right."""
    fx = real_fixtures["sdxl_kohya_diffusers_converter"]
    models = _models_for(fx)
    _load_with_diffusers(fx, models)
    for m in models.values():
        m.double()
    layers = _peft_layers(models)
    assert set(fx.truth) - set(layers) == {"unet.add_embedding.linear_1"}
    scale = {k: l.scaling[l.active_adapters[0]] for k, l in layers.items()}
    rank2 = {k for k, l in layers.items() if l.r[l.active_adapters[0]] == 2}
    assert rank2 and any(k.endswith("attn2.to_k") for k in rank2) and any("self_attn.q_proj" in k for k in rank2)
    assert {k for k, s in scale.items() if s != 1.0} == rank2 and all(scale[k] == 2.0 for k in rank2)
    checked = sorted(rank2)[::8] + structural_sample({k: _peft_signature(l) for k, l in layers.items()}, 8)
    errs = _check_peft_layers(fx, layers, checked, torch.Generator().manual_seed(5))
    assert {k for k, e in errs.items() if e > RTOL} == set(checked) & rank2


def test_quirk_diffusers_drops_legacy_unet_attention_keys(real_fixtures):
    """diffusers' training scripts save convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)):
    attention projections become `.lora.down/.lora.up`, everything else stays `lora_A/lora_B`. diffusers'
    load_lora_adapter decides whether to convert by the *first* key only, so with mixed targets the
    `.lora.down` UNet keys are silently dropped (text-encoder keys still load)."""
    fx = real_fixtures["sdxl_peft_diffusers_legacy_names"]
    models = _models_for(fx)
    _load_with_diffusers(fx, models)
    layers = _peft_layers(models)
    missing = {k for k in fx.truth} - set(layers)
    assert missing and all(re.search(r"\.attn[12]\.to_(q|k|v|out\.0)$", k) for k in missing)
    assert all(k.startswith("unet.") for k in missing)


def test_quirk_lycoris_get_diff_weight_applies_scale_twice(real_fixtures):
    """lycoris 4.1.3 LoHa/LoKr get_diff_weight (used by merge_to) = truth * scale: the scale is applied
    twice. LoCon's is right. Truth follows the training forward."""
    from tests.fixtures.lycoris_fixtures import _lycoris_sandbox
    from lycoris.modules import get_module, make_module

    for name, kind in (("sdxl_lycoris_loha", "loha"), ("sdxl_lycoris_lokr_factor4", "lokr"),
                       ("sdxl_lycoris_locon", "locon")):
        fx = real_fixtures[name]
        sd = load_file(str(fx.path))
        unet = tiny_sdxl_unet()
        ln = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
        module = unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
        with _lycoris_sandbox():
            lyco = make_module(*get_module(sd, ln), ln, module)
        diff, _ = lyco.get_diff_weight(multiplier=1)
        truth = fx.truth["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
        factor = lyco.scale if kind != "locon" else 1.0
        assert lyco.scale != 1.0
        torch.testing.assert_close(diff.float(), truth * factor, rtol=1e-5, atol=1e-6)
