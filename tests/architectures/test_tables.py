"""Invariants every table keeps, the registry, and spellings seen in real files."""

from __future__ import annotations

from collections import Counter

import pytest

from loramerge.architectures import (
    PRESET_OF,
    TABLES,
    Branch,
    KeyPlacer,
    Placement,
    Stem,
    Style,
    get_table,
    placer,
)
from loramerge.architectures.builder import QKV, Row, build_table
from loramerge.architectures.sd import SD15_STRUCTURE, SDXL_STRUCTURE, unet_rows

NAMES = ["sd15", "sdxl", "flux", "wan", "zimage", "qwen_image", "ltx", "hunyuan_video", "acestep"]
NO_DIFFUSERS_SPELLING = {  # modules diffusers stores in a form no rename reaches (documented per table)
    "flux": {"diffusion_model.final_layer.adaLN_modulation.1"},
    "hunyuan_video": {"diffusion_model.final_layer.adaLN_modulation.1"},
}
D, TE1, TE2, TE3 = Branch.DENOISER, Branch.TE1, Branch.TE2, Branch.TE3


def test_registry_names_and_presets():
    assert list(TABLES) == NAMES
    assert all(TABLES[n].name == n for n in NAMES)
    assert PRESET_OF == {
        "sd15": "sd_unet", "sdxl": "sd_unet", "flux": "dit", "wan": "dit", "zimage": "dit", "qwen_image": "dit",
        "ltx": "dit", "hunyuan_video": "dit", "acestep": "acestep_dit", "unknown": "sd_unet",
    }


def test_get_table_suggests_close_names():
    assert get_table("flux") is TABLES["flux"]
    with pytest.raises(ValueError, match=r"'fluxx'.*known: sd15, sdxl, flux.*Did you mean 'flux'"):
        get_table("fluxx")
    with pytest.raises(ValueError, match="own names"):
        get_table("unknown")


def test_placer_is_cached_per_name():
    assert placer("wan") is placer("wan")
    assert placer("wan").table is TABLES["wan"]


@pytest.mark.parametrize("name", NAMES)
def test_table_has_no_ambiguous_spelling(name):
    assert placer(name).ambiguous == []


@pytest.mark.parametrize("name", NAMES)
def test_every_alias_places_on_its_module_dotted_and_underscored(name):
    key_placer = placer(name)
    for alias in TABLES[name].all_aliases():
        assert key_placer.place(Stem(alias.branch, alias.path, dotted=True)) == alias.placement
        assert key_placer.place(Stem(alias.branch, alias.path.replace(".", "_"), dotted=False)) == alias.placement


@pytest.mark.parametrize("name", NAMES)
def test_one_diffusers_spelling_per_placement(name):
    table, key_placer = TABLES[name], placer(name)
    counts = Counter(a.placement.key for a in table.aliases if a.style is Style.DIFFUSERS)
    assert max(counts.values()) == 1
    missing = set()
    for module, fused in table.modules.items():
        keys = [module] if fused is None else [f"{module}#{c}" for c in fused.names]
        missing |= {module for k in keys if counts[k] != 1}
        if fused is not None:  # the whole fused weight has no diffusers name: diffusers splits it
            assert key_placer.spelling(Placement(module), Style.DIFFUSERS) is None
    assert missing == NO_DIFFUSERS_SPELLING.get(name, set())


@pytest.mark.parametrize("name", NAMES)
def test_names_prefixes_and_native_spelling(name):
    table, key_placer = TABLES[name], placer(name)
    branches = {Branch(m.split(".", 1)[0]) for m in table.modules}
    assert D in branches
    assert set(table.diffusers_prefix) == branches == set(table.kohya_prefix)
    assert table.family and table.markers and table.preset == PRESET_OF[name]
    for module in list(table.modules)[:50]:
        assert key_placer.spelling(Placement(module), Style.NATIVE).path == module.split(".", 1)[1]


def test_branches_per_family():
    def branches(n):
        return {m.split(".", 1)[0] for m in TABLES[n].modules}

    assert branches("sd15") == {"diffusion_model", "te1"}
    assert branches("sdxl") == {"diffusion_model", "te1", "te2"}
    assert branches("flux") == {"diffusion_model", "te1", "te3"}
    assert TABLES["sdxl"].kohya_prefix == {D: "lora_unet", TE1: "lora_te1", TE2: "lora_te2"}
    assert TABLES["sd15"].kohya_prefix == {D: "lora_unet", TE1: "lora_te"}
    assert TABLES["flux"].diffusers_prefix == {D: "transformer", TE1: "text_encoder", TE3: "text_encoder_2"}


@pytest.mark.parametrize(
    ("name", "branch", "path", "dotted", "module", "component"),
    [
        # kohya SDXL (LDM names) and kohya SD1.x (diffusers names), underscored
        ("sdxl", D, "input_blocks_4_1_transformer_blocks_0_attn1_to_q", False,
         "input_blocks.4.1.transformer_blocks.0.attn1.to_q", None),
        ("sdxl", D, "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_out.0", True,
         "input_blocks.4.1.transformer_blocks.1.attn2.to_out.0", None),
        ("sdxl", D, "label_emb_0_0", False, "label_emb.0.0", None),
        ("sdxl", D, "add_embedding.linear_2", True, "label_emb.0.2", None),
        ("sdxl", D, "up_blocks.0.upsamplers.0.conv", True, "output_blocks.2.2.conv", None),
        ("sdxl", D, "mid_block.attentions.0.transformer_blocks.9.ff.net.2", True,
         "middle_block.1.transformer_blocks.9.ff.net.2", None),
        ("sd15", D, "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", False,
         "input_blocks.1.1.transformer_blocks.0.attn1.to_q", None),
        ("sd15", D, "up_blocks_3_attentions_2_proj_out", False, "output_blocks.11.1.proj_out", None),
        ("sd15", D, "down_blocks.3.resnets.1.conv2", True, "input_blocks.11.0.out_layers.3", None),
        ("sd15", D, "up_blocks.1.upsamplers.0.conv", True, "output_blocks.5.2.conv", None),
        ("sd15", D, "up_blocks.0.upsamplers.0.conv", True, "output_blocks.2.1.conv", None),
        # text encoders: kohya, diffusers, transformers >= 5
        ("sdxl", TE1, "text_model_encoder_layers_11_mlp_fc2", False, "text_model.encoder.layers.11.mlp.fc2", None),
        ("sdxl", TE2, "text_model.encoder.layers.31.self_attn.out_proj", True,
         "text_model.encoder.layers.31.self_attn.out_proj", None),
        ("sdxl", TE2, "text_projection", True, "text_projection", None),
        ("sd15", TE1, "encoder.layers.3.self_attn.k_proj", True, "text_model.encoder.layers.3.self_attn.k_proj", None),
        ("flux", TE3, "encoder_block_23_layer_1_DenseReluDense_wi_0", False,
         "encoder.block.23.layer.1.DenseReluDense.wi_0", None),
        # FLUX: kohya, diffusers/AI-Toolkit (fused slices), XLabs
        ("flux", D, "double_blocks_0_img_attn_qkv", False, "double_blocks.0.img_attn.qkv", None),
        ("flux", D, "single_blocks_37_modulation_lin", False, "single_blocks.37.modulation.lin", None),
        ("flux", D, "time_in_in_layer", False, "time_in.in_layer", None),
        ("flux", D, "transformer_blocks.3.attn.add_k_proj", True, "double_blocks.3.txt_attn.qkv", "k"),
        ("flux", D, "single_transformer_blocks.5.proj_mlp", True, "single_blocks.5.linear1", "mlp"),
        ("flux", D, "single_transformer_blocks.5.proj_out", True, "single_blocks.5.linear2", None),
        ("flux", D, "transformer_blocks.18.norm1_context.linear", True, "double_blocks.18.txt_mod.lin", None),
        ("flux", D, "proj_out", True, "final_layer.linear", None),
        ("flux", D, "double_blocks.2.processor.qkv_lora1", True, "double_blocks.2.img_attn.qkv", None),
        # Wan: musubi-tuner, diffusers
        ("wan", D, "blocks_39_cross_attn_k_img", False, "blocks.39.cross_attn.k_img", None),
        ("wan", D, "blocks_0_ffn_2", False, "blocks.0.ffn.2", None),
        ("wan", D, "blocks.7.attn2.add_v_proj", True, "blocks.7.cross_attn.v_img", None),
        ("wan", D, "blocks.7.attn1.to_out.0", True, "blocks.7.self_attn.o", None),
        ("wan", D, "blocks.7.norm2", True, "blocks.7.norm3", None),
        ("wan", D, "condition_embedder.time_proj", True, "time_projection.1", None),
        # Z-Image
        ("zimage", D, "layers.29.attention.to_v", True, "layers.29.attention.qkv", "v"),
        ("zimage", D, "context_refiner_1_attention_out", False, "context_refiner.1.attention.out", None),
        ("zimage", D, "all_x_embedder.2-1", True, "x_embedder", None),
        # Qwen-Image, LTX
        ("qwen_image", D, "transformer_blocks_59_img_mlp_net_0_proj", False,
         "transformer_blocks.59.img_mlp.net.0.proj", None),
        ("ltx", D, "transformer_blocks.47.attn2.norm_k", True, "transformer_blocks.47.attn2.k_norm", None),
        ("ltx", D, "time_embed.linear", True, "adaln_single.linear", None),
        # HunyuanVideo: original/musubi, ComfyUI-internal, diffusers
        ("hunyuan_video", D, "double_blocks_19_img_mlp_fc1", False, "double_blocks.19.img_mlp.fc1", None),
        ("hunyuan_video", D, "double_blocks.0.img_attn.qkv", True, "double_blocks.0.img_attn_qkv", None),
        ("hunyuan_video", D, "single_blocks.39.modulation.lin", True, "single_blocks.39.modulation.linear", None),
        ("hunyuan_video", D, "transformer_blocks.1.attn.to_v", True, "double_blocks.1.img_attn_qkv", "v"),
        ("hunyuan_video", D, "context_embedder.token_refiner.refiner_blocks.1.attn.to_k", True,
         "txt_in.individual_token_refiner.blocks.1.self_attn_qkv", "k"),
        ("hunyuan_video", D, "time_in.in_layer", True, "time_in.mlp.0", None),
        # ACE-Step v1.5 (official PEFT, LyCORIS, diffusers) and v1
        ("acestep", D, "layers.3.self_attn.q_proj", True, "decoder.layers.3.self_attn.q_proj", None),
        ("acestep", D, "layers_3_mlp_down_proj", False, "decoder.layers.3.mlp.down_proj", None),
        ("acestep", D, "layers.3.cross_attn.to_out.0", True, "decoder.layers.3.cross_attn.o_proj", None),
        ("acestep", D, "proj_in_conv", True, "decoder.proj_in.1", None),
        ("acestep", D, "lyric_encoder.encoders.5.self_attn.linear_q", True,
         "lyric_encoder.encoders.5.self_attn.linear_q", None),
    ],
)
def test_spellings_seen_in_real_files(name, branch, path, dotted, module, component):
    placement = placer(name).place(Stem(branch, path, dotted))
    assert placement == Placement(f"{branch.value}.{module}", component)


def test_fused_row_shares():
    flux = TABLES["flux"]
    linear1 = flux.modules["diffusion_model.single_blocks.0.linear1"]
    assert linear1.slices(21504) == {"q": slice(0, 3072), "k": slice(3072, 6144), "v": slice(6144, 9216),
                                     "mlp": slice(9216, 21504)}
    assert flux.modules["diffusion_model.double_blocks.0.img_attn.qkv"] == QKV
    assert flux.modules["diffusion_model.double_blocks.0.img_attn.proj"] is None


def test_sd_structures():
    sd15 = {r.native for r in unet_rows(SD15_STRUCTURE)}
    sdxl = {r.native for r in unet_rows(SDXL_STRUCTURE)}
    assert "input_blocks.1.1.transformer_blocks.0.attn1.to_q" in sd15
    assert not any(n.startswith("input_blocks.1.1") for n in sdxl)  # SDXL level 0: no attention
    assert "input_blocks.7.1.transformer_blocks.9.attn2.to_k" in sdxl
    assert "middle_block.1.transformer_blocks.9.ff.net.2" in sdxl
    assert "input_blocks.4.0.skip_connection" in sd15 and "input_blocks.10.0.skip_connection" not in sd15
    assert "input_blocks.9.0.op" in sd15 and "input_blocks.12.0.op" not in sd15
    assert max(int(n.split(".")[1]) for n in sdxl if n.startswith("input_blocks")) == 8
    assert max(int(n.split(".")[1]) for n in sd15 if n.startswith("output_blocks")) == 11


def test_build_table_rejects_malformed_rows():
    with pytest.raises(ValueError, match="listed twice"):
        build_table("t", family="t", preset="dit", branches={D: [Row("a", "b"), Row("a", "c")]})
    with pytest.raises(ValueError, match="one diffusers path per component"):
        build_table("t", family="t", preset="dit", branches={D: [Row("qkv", {"q": "to_q"}, fused=QKV)]})
    with pytest.raises(ValueError, match="no fused layout"):
        build_table("t", family="t", preset="dit", branches={D: [Row("a", {"q": "to_q"})]})
    table = build_table("t", family="t", preset="dit", branches={D: [Row("a_b", "x"), Row("a.b", "y")]})
    assert KeyPlacer(table).ambiguous == [(D, "a_b")]


@pytest.mark.parametrize("name", NAMES)
def test_every_marker_names_modules_of_its_table(name):
    from loramerge.architectures.detect import has_marker

    table = TABLES[name]
    stems = [Stem(a.branch, a.path, dotted=True) for a in table.all_aliases()]
    assert [m for m in table.markers if not any(has_marker(s, m) for s in stems)] == []
