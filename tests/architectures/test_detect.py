"""Detection on realistic key lists, in each family's native, kohya and diffusers naming, with the
known confusions pinned (FLUX vs Qwen-Image vs HunyuanVideo, SD1.5 vs UNet-only SDXL, LTX, Wan)."""

from __future__ import annotations

import pytest

from loramerge.enums import UNKNOWN_ARCH as UNKNOWN
from loramerge.architectures import Branch, Stem, detect
from loramerge.architectures.detect import has_marker

D, TE1, TE2, TE3 = Branch.DENOISER, Branch.TE1, Branch.TE2, Branch.TE3


def dotted(paths, branch=D):
    return [Stem(branch, p, dotted=True) for p in paths]


def kohya(paths, branch=D):
    return [Stem(branch, p.replace(".", "_"), dotted=False) for p in paths]


def each(blocks, template, parts):
    return [template.format(i=i, p=p) for i in blocks for p in parts]


FLUX_DIFFUSERS_DOUBLE = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                         "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                         "ff_context.net.2", "norm1.linear", "norm1_context.linear")
FLUX_DIFFUSERS_SINGLE = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear")
FLUX_BFL_DOUBLE = ("img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2", "img_mod.lin",
                   "txt_attn.qkv", "txt_attn.proj", "txt_mlp.0", "txt_mlp.2", "txt_mod.lin")
FLUX_BFL_SINGLE = ("linear1", "linear2", "modulation.lin")
CLIP_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
QWEN_BLOCK = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
              "attn.add_v_proj", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj",
              "txt_mlp.net.2", "img_mod.1", "txt_mod.1")
SD_TRANSFORMER = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                  "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def flux_diffusers():
    return dotted(each(range(19), "transformer_blocks.{i}.{p}", FLUX_DIFFUSERS_DOUBLE)
                  + each(range(38), "single_transformer_blocks.{i}.{p}", FLUX_DIFFUSERS_SINGLE))


def flux_kohya(with_text_encoders=True):
    stems = kohya(each(range(19), "double_blocks.{i}.{p}", FLUX_BFL_DOUBLE)
                  + each(range(38), "single_blocks.{i}.{p}", FLUX_BFL_SINGLE))
    if with_text_encoders:
        stems += kohya(each(range(12), "text_model.encoder.layers.{i}.{p}", CLIP_ATTN), TE1)
        stems += kohya(each(range(24), "encoder.block.{i}.layer.0.SelfAttention.{p}", "qkvo"), TE3)
    return stems


def sdxl_kohya_unet():
    paths = []
    for block, depth in (("input_blocks.4.1", 2), ("input_blocks.5.1", 2), ("input_blocks.7.1", 10),
                         ("input_blocks.8.1", 10), ("middle_block.1", 10), ("output_blocks.0.1", 10),
                         ("output_blocks.3.1", 2), ("output_blocks.5.1", 2)):
        paths += each(range(depth), block + ".transformer_blocks.{i}.{p}", SD_TRANSFORMER)
        paths += [f"{block}.proj_in", f"{block}.proj_out"]
    return kohya(paths)


def sd15_kohya():
    paths = []
    for down, level in ((0, 0), (1, 1), (2, 2)):
        for a in (0, 1):
            paths += each([0], f"down_blocks.{down}.attentions.{a}.transformer_blocks.{{i}}.{{p}}", SD_TRANSFORMER)
    for up in (1, 2, 3):
        for a in (0, 1, 2):
            paths += each([0], f"up_blocks.{up}.attentions.{a}.transformer_blocks.{{i}}.{{p}}", SD_TRANSFORMER)
    paths += each([0], "mid_block.attentions.0.transformer_blocks.{i}.{p}", SD_TRANSFORMER)
    return kohya(paths) + kohya(each(range(12), "text_model.encoder.layers.{i}.{p}", CLIP_ATTN), TE1)


CASES = {
    # FLUX
    "flux diffusers/AI-Toolkit": (flux_diffusers(), "flux"),
    "flux kohya with text encoders": (flux_kohya(), "flux"),
    "flux kohya unet only": (flux_kohya(with_text_encoders=False), "flux"),
    "flux kohya attention only": (kohya(each(range(19), "double_blocks.{i}.{p}", ("img_attn.qkv", "img_attn.proj",
                                                                                    "txt_attn.qkv", "txt_attn.proj"))),
                                  "flux"),
    "flux comfy-native": (dotted(each(range(19), "double_blocks.{i}.{p}", FLUX_BFL_DOUBLE)), "flux"),
    # Qwen-Image: shares transformer_blocks.N.attn.add_q_proj with diffusers FLUX
    "qwen diffusers full": (dotted(each(range(60), "transformer_blocks.{i}.{p}", QWEN_BLOCK)), "qwen_image"),
    "qwen attention only, 60 blocks": (dotted(each(range(60), "transformer_blocks.{i}.{p}", QWEN_BLOCK[:8])),
                                       "qwen_image"),
    "qwen few blocks with img_mlp": (dotted(each(range(4), "transformer_blocks.{i}.{p}", QWEN_BLOCK)), "qwen_image"),
    "qwen musubi kohya": (kohya(each(range(60), "transformer_blocks.{i}.{p}", QWEN_BLOCK)), "qwen_image"),
    # HunyuanVideo: double_blocks/single_blocks like FLUX
    "hunyuan musubi kohya": (kohya(each(range(20), "double_blocks.{i}.{p}", (
        "img_attn_qkv", "img_attn_proj", "img_mlp.fc1", "img_mlp.fc2", "img_mod.linear", "txt_attn_qkv",
        "txt_attn_proj", "txt_mlp.fc1", "txt_mlp.fc2", "txt_mod.linear"))
        + each(range(40), "single_blocks.{i}.{p}", ("linear1", "linear2", "modulation.linear"))),
        "hunyuan_video"),
    "hunyuan diffusion-pipe": (dotted(each(range(20), "double_blocks.{i}.{p}", ("img_attn_qkv", "img_attn_proj",
                                                                                "img_mlp.fc1", "img_mlp.fc2"))),
                               "hunyuan_video"),
    "hunyuan diffusers": (dotted(each(range(20), "transformer_blocks.{i}.{p}", FLUX_DIFFUSERS_DOUBLE)
                                 + each(range(40), "single_transformer_blocks.{i}.{p}", FLUX_DIFFUSERS_SINGLE)),
                          "hunyuan_video"),
    "hunyuan comfy-internal": (dotted(each(range(20), "double_blocks.{i}.{p}", FLUX_BFL_DOUBLE)), "hunyuan_video"),
    # SD
    "sdxl kohya unet only": (sdxl_kohya_unet(), "sdxl"),
    "sdxl kohya with both text encoders": (
        sdxl_kohya_unet() + kohya(each(range(12), "text_model.encoder.layers.{i}.{p}", CLIP_ATTN), TE1)
        + kohya(each(range(32), "text_model.encoder.layers.{i}.{p}", CLIP_ATTN), TE2), "sdxl"),
    "sdxl diffusers unet": (dotted(each(range(2), "down_blocks.1.attentions.0.transformer_blocks.{i}.{p}",
                                        SD_TRANSFORMER)
                                   + each(range(10), "up_blocks.0.attentions.2.transformer_blocks.{i}.{p}",
                                          SD_TRANSFORMER)), "sdxl"),
    "sd15 kohya": (sd15_kohya(), "sd15"),
    "sd15 comfy unet only": (dotted(each((1, 2, 4, 5, 7, 8), "input_blocks.{i}.1.transformer_blocks.0.{p}",
                                         SD_TRANSFORMER)), "sd15"),
    # LTX
    "ltx diffusers": (dotted(each(range(28), "transformer_blocks.{i}.{p}", SD_TRANSFORMER)), "ltx"),
    "ltx native": (dotted(each(range(48), "transformer_blocks.{i}.{p}", SD_TRANSFORMER)
                          + ["adaln_single.linear", "patchify_proj", "proj_out"]), "ltx"),
    # Wan
    "wan musubi": (kohya(each(range(30), "blocks.{i}.{p}", ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                                                          "cross_attn.q", "cross_attn.k", "cross_attn.v",
                                                          "cross_attn.o", "ffn.0", "ffn.2"))), "wan"),
    "wan diffusers i2v": (dotted(each(range(40), "blocks.{i}.{p}", ("attn1.to_q", "attn1.to_out.0", "attn2.to_q",
                                                                     "attn2.add_k_proj", "ffn.net.0.proj"))), "wan"),
    # Z-Image
    "zimage native": (dotted(each(range(30), "layers.{i}.{p}", ("attention.qkv", "attention.out", "feed_forward.w1",
                                                                "feed_forward.w2", "feed_forward.w3",
                                                                "adaLN_modulation.0"))), "zimage"),
    "zimage diffusers": (dotted(each(range(30), "layers.{i}.{p}", ("attention.to_q", "attention.to_k",
                                                                   "attention.to_v", "attention.to_out.0"))),
                         "zimage"),
    # ACE-Step
    "acestep 1.5 official": (dotted(each(range(24), "layers.{i}.{p}", ("self_attn.q_proj", "self_attn.k_proj",
                                                                      "self_attn.v_proj", "self_attn.o_proj",
                                                                      "cross_attn.q_proj", "cross_attn.o_proj"))),
                             "acestep"),
    "acestep v1 official": (dotted(each(range(24), "transformer_blocks.{i}.{p}", (
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "cross_attn.to_q", "cross_attn.to_k",
        "cross_attn.to_v", "cross_attn.to_out.0"))
        + each(range(6), "lyric_encoder.encoders.{i}.self_attn.{p}", ("linear_q", "linear_k", "linear_v"))
        + ["speaker_embedder"]), "acestep"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_detects_the_family(case):
    stems, expected = CASES[case]
    found = detect(stems)
    assert found.architecture == expected, found.reason
    assert found.placed == found.total == len(stems)
    assert found.unplaced == ()
    assert found.confidence >= 0.5
    assert expected in found.reason


def test_unambiguous_file_has_full_confidence():
    found = detect(CASES["flux kohya with text encoders"][0])
    assert found.confidence == 1.0
    assert "runner-up" in found.reason and found.runner_up is not None


def test_flux_diffusers_tie_with_hunyuan_is_broken_by_markers():
    # Block-only diffusers FLUX names exist in HunyuanVideo's first 19/38 blocks too.
    found = detect(CASES["flux diffusers/AI-Toolkit"][0])
    assert found.runner_up == "hunyuan_video"
    assert found.confidence == 0.75
    assert "family markers" in found.reason


def test_tie_without_markers_falls_back_to_priority():
    # FF-only diffusers names fit FLUX, HunyuanVideo and LTX alike.
    found = detect(dotted(each(range(4), "transformer_blocks.{i}.{p}", ("ff.net.0.proj", "ff.net.2"))))
    assert found.architecture == "flux"
    assert found.confidence == 0.5
    assert "--arch" in found.reason


def test_a_tie_goes_to_the_architecture_the_files_record():
    # ComfyUI's HunyuanVideo names of blocks FLUX has too (what loramerge's --format comfy writes):
    # a tie of placed keys that FLUX's markers win, unless the files record HunyuanVideo.
    stems = dotted(each(range(2), "double_blocks.{i}.{p}", FLUX_BFL_DOUBLE))
    plain = detect(stems)
    assert (plain.architecture, plain.confidence, plain.runner_up) == ("flux", 0.75, "hunyuan_video")
    found = detect(stems, recorded="hunyuan_video")
    assert (found.architecture, found.confidence, found.runner_up) == ("hunyuan_video", 1.0, "flux")
    assert "loramerge metadata names hunyuan_video" in found.reason
    # a recorded name that places fewer keys, or none, changes nothing
    assert detect(stems, recorded="sdxl") == plain
    assert detect(CASES["wan musubi"][0], recorded="flux") == detect(CASES["wan musubi"][0])


def test_partial_fit_lists_the_unplaced_stems():
    stems = CASES["wan musubi"][0][:60] + dotted(["blocks.0.vace_proj", "foo.bar"])
    found = detect(stems)
    assert (found.architecture, found.placed, found.total) == ("wan", 60, 62)
    assert found.unplaced == ("diffusion_model.blocks.0.vace_proj", "diffusion_model.foo.bar")
    assert found.confidence == pytest.approx(60 / 62, abs=1e-4)


def test_llm_lora_is_unknown():
    stems = dotted(each(range(16), "model.layers.{i}.{p}", ("self_attn.q_proj", "mlp.gate_proj")))
    found = detect(stems)
    assert found.architecture == UNKNOWN
    assert found.confidence == 1.0
    assert found.placed == 0 and len(found.unplaced) == 32
    assert "no architecture" in found.reason


def test_mostly_unknown_keys_give_unknown_with_closest_table():
    stems = dotted(["double_blocks.0.img_attn.qkv"] + [f"mystery.{i}" for i in range(3)])
    found = detect(stems)
    assert found.architecture == UNKNOWN
    assert found.runner_up == "flux"
    assert found.confidence == 0.75


def test_no_stems():
    found = detect([])
    assert (found.architecture, found.confidence, found.total) == (UNKNOWN, 0.0, 0)


@pytest.mark.parametrize(
    ("stem", "marker", "hit"),
    [
        (Stem(D, "double_blocks.0.img_mod.lin", True), "img_mod.lin", True),
        (Stem(D, "double_blocks_0_img_mod_lin", False), "img_mod.lin", True),
        (Stem(D, "double_blocks_0_img_mod_linear", False), "img_mod.lin", False),
        (Stem(D, "double_blocks.0.img_mod.linear", True), "img_mod.lin", False),
        (Stem(D, "single_transformer_blocks.3.proj_out", True), "single_transformer_blocks", True),
        (Stem(D, "transformer_blocks.3.attn.to_q", True), "single_transformer_blocks", False),
    ],
)
def test_markers_match_whole_segments(stem, marker, hit):
    assert has_marker(stem, marker) is hit
