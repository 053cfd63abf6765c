"""Text-encoder rows shared by the tables: CLIP-L, CLIP-G (OpenCLIP bigG) and T5-XXL.

Native names are the Hugging Face transformers module paths, which is also what kohya
(``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``), ComfyUI and diffusers use. The
diffusers spelling is the same path: diffusers strips ``text_model.`` itself when the loaded
transformers model has none. transformers >= 5 builds `CLIPTextModel` without the ``text_model``
wrapper and PEFT on it writes ``encoder.layers...``: that spelling is an OTHER alias.
"""

from __future__ import annotations

from .builder import Row, under

CLIP_L_LAYERS = 12
CLIP_G_LAYERS = 32
T5_XXL_BLOCKS = 24

_CLIP_LAYER = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
    "layer_norm1",
    "layer_norm2",
)


def _clip(layers: int, *, projection: bool) -> list[Row]:
    rels = [f"encoder.layers.{i}.{m}" for i in range(layers) for m in _CLIP_LAYER]
    rels.append("final_layer_norm")
    rows = [Row(f"text_model.{rel}", f"text_model.{rel}", (rel,)) for rel in rels]
    if projection:  # CLIPTextModelWithProjection: a sibling of text_model
        rows.append(Row("text_projection", "text_projection"))
    return rows


def clip_l() -> list[Row]:
    """CLIP ViT-L/14 text encoder (SD1.x, SDXL te1, FLUX te1): 12 layers, no projection."""
    return _clip(CLIP_L_LAYERS, projection=False)


def clip_g() -> list[Row]:
    """OpenCLIP ViT-bigG/14 text encoder (SDXL te2): 32 layers, with ``text_projection``."""
    return _clip(CLIP_G_LAYERS, projection=True)


_T5_BLOCK = (
    Row("layer.0.SelfAttention.q", "layer.0.SelfAttention.q"),
    Row("layer.0.SelfAttention.k", "layer.0.SelfAttention.k"),
    Row("layer.0.SelfAttention.v", "layer.0.SelfAttention.v"),
    Row("layer.0.SelfAttention.o", "layer.0.SelfAttention.o"),
    Row("layer.0.layer_norm", "layer.0.layer_norm"),
    Row("layer.1.DenseReluDense.wi_0", "layer.1.DenseReluDense.wi_0"),
    Row("layer.1.DenseReluDense.wi_1", "layer.1.DenseReluDense.wi_1"),
    Row("layer.1.DenseReluDense.wo", "layer.1.DenseReluDense.wo"),
    Row("layer.1.layer_norm", "layer.1.layer_norm"),
)


def t5_xxl() -> list[Row]:
    """T5 v1.1 XXL encoder (FLUX te3, diffusers ``text_encoder_2``): 24 gated-GELU blocks."""
    rows = [r for i in range(T5_XXL_BLOCKS) for r in under(_T5_BLOCK, f"encoder.block.{i}")]
    rows.append(Row("encoder.final_layer_norm", "encoder.final_layer_norm"))
    return rows
