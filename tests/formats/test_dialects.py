import pytest

from loramerge.architectures.spec import Branch
from loramerge.formats.dialects import parse_key, parse_stem


@pytest.mark.parametrize("key, stem, role", [
    ("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", "lora_unet_input_blocks_4_1_proj_in", "down"),
    ("lora_unet_x.alpha", "lora_unet_x", "alpha"),
    ("unet.down_blocks.1.attentions.0.proj_in.lora_A.weight", "unet.down_blocks.1.attentions.0.proj_in", "down"),
    ("base_model.model.a.b.lora_B.default.weight", "base_model.model.a.b", "up"),
    ("transformer.x.lora_A", "transformer.x", "down"),
    ("transformer.x.lora.up.weight", "transformer.x", "up"),
    ("unet.a.attn1.processor.to_q_lora.down.weight", "unet.a.attn1.processor.to_q", "down"),
    ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight",
     "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", "up"),
    ("lycoris_blocks_0_attn.hada_w1_a", "lycoris_blocks_0_attn", "hada_w1_a"),
    ("lora_unet_a.lokr_w2_b", "lora_unet_a", "lokr_w2_b"),
    ("lora_unet_a.diff_b", "lora_unet_a", "diff_b"),
    ("lora_unet_a.dora_scale", "lora_unet_a", "dora_scale"),
    ("transformer.a.lora_magnitude_vector", "transformer.a", "dora_scale"),
])
def test_parse_key(key, stem, role):
    parsed = parse_key(key)
    assert parsed is not None and (parsed.stem, parsed.role) == (stem, role)


def test_plain_weight_is_not_an_adapter_key():
    assert parse_key("model.diffusion_model.input_blocks.0.0.weight") is None


@pytest.mark.parametrize("stem, family, branch, path, dotted", [
    ("lora_unet_input_blocks_4_1_proj_in", "kohya", Branch.DENOISER, "input_blocks_4_1_proj_in", False),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "kohya", Branch.TE2, "text_model_encoder_layers_0_mlp_fc1", False),
    ("lora_te_text_model_encoder_layers_0_mlp_fc1", "kohya", Branch.TE1, "text_model_encoder_layers_0_mlp_fc1", False),
    ("lycoris_blocks_0_attn", "lycoris", Branch.DENOISER, "blocks_0_attn", False),
    ("lora_transformer_blocks_0", "kohya", Branch.DENOISER, "blocks_0", False),
    ("diffusion_model.double_blocks.0.img_attn.qkv", "comfy", Branch.DENOISER, "double_blocks.0.img_attn.qkv", True),
    ("text_encoder_2.text_model.x", "diffusers", Branch.TE2, "text_model.x", True),
    ("base_model.model.down_blocks.0.x", "peft", Branch.DENOISER, "down_blocks.0.x", True),
    ("base_model.model.text_model.encoder.x", "peft", Branch.TE1, "text_model.encoder.x", True),
    ("unet.a.attn1.processor.to_out", "diffusers", Branch.DENOISER, "a.attn1.to_out.0", True),
])
def test_parse_stem(stem, family, branch, path, dotted):
    p = parse_stem(stem)
    assert p is not None
    assert (p.family, p.stem.branch, p.stem.path, p.stem.dotted) == (family, branch, path, dotted)


def test_unknown_prefix_is_none():
    assert parse_stem("something_else.x") is None
