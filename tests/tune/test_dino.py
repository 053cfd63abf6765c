"""DINOv2 similarity: the protocol's arithmetic by hand, and the model path on a tiny random DINOv2."""

from __future__ import annotations

import math

import pytest
import torch

from loramerge.autotune.dino import DinoSimilarityEvaluator, similarities
from loramerge.autotune.evaluators import EvalContext
from loramerge.errors import EvaluatorError

CTX = EvalContext(1, "auto", {}, ())


def test_similarity_to_each_loras_mean_embedding():
    merged = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    refs = {"a": torch.tensor([[1.0, 0.0], [3.0, 0.0]]), "b": torch.tensor([[1.0, 1.0]])}
    # a: centre (2, 0): cosines 1 and 0 -> 0.5; b: centre (1, 1): both 1/√2
    assert similarities(merged, refs) == pytest.approx({"a": 0.5, "b": 1 / math.sqrt(2)})


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14
    )
    path = tmp_path_factory.mktemp("dino")
    Dinov2Model(config).save_pretrained(path)
    return path


def _image(seed: int) -> torch.Tensor:
    return torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(seed))


def test_dino_evaluator_on_a_tiny_model(tiny_dino):
    from PIL import Image

    red = Image.new("RGB", (32, 32), (200, 30, 30))
    refs = {"style": [_image(1), _image(2)], "character": [red]}
    ev = DinoSimilarityEvaluator(tiny_dino, refs, lambda path, ctx: [red])
    scores = ev.score(tiny_dino / "merged.safetensors", CTX)
    # the merged image is character's only reference: similarity 1 to it, less to the noise images
    assert scores["similarity/character"] == pytest.approx(1.0, abs=1e-6)
    assert scores["similarity/style"] < 0.999
    assert ev.scalar(scores) == scores["min_similarity"] == scores["similarity/style"]
    other = DinoSimilarityEvaluator(tiny_dino, {"style": refs["style"]}, lambda path, ctx: [red])
    assert other.name != ev.name  # the tuner's memory tells evaluators apart by name
    # independently: the style score is the cosine of the two embeddings from the model itself
    e_red = ev.embedder.embed([red])[0]
    centre = ev.embedder.embed(refs["style"]).mean(dim=0)
    assert scores["similarity/style"] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(e_red, centre, dim=0))
    )


def test_dino_errors(tmp_path, tiny_dino):
    with pytest.raises(EvaluatorError, match="cannot load a DINOv2 model"):
        DinoSimilarityEvaluator(tmp_path, {"a": [_image(1)]}, lambda p, c: [])
    ev = DinoSimilarityEvaluator(tiny_dino, {"a": [_image(1)]}, lambda p, c: [])
    with pytest.raises(EvaluatorError, match="made no images"):
        ev.score(tmp_path / "m.safetensors", CTX)
    with pytest.raises(EvaluatorError, match="at least one reference image"):
        DinoSimilarityEvaluator(tiny_dino, {"a": []}, lambda p, c: [])
