"""DINOv2 image-embedding similarity evaluator (seed 002's protocol).

Each LoRA is represented by the mean DINOv2 embedding of its reference images (its training set, or
images generated with that LoRA alone). The merged LoRA's images — made by `render(merged_path)`,
which the caller provides (a diffusion pipeline, a ComfyUI graph) — are embedded the same way; the
score of LoRA i is the mean cosine similarity of the merged images to LoRA i's mean embedding. The
scalar is the minimum over the LoRAs: a merge is as good as the LoRA it keeps worst.

The model is `transformers`' `Dinov2Model`, loaded from a local folder only (no download).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import EvaluatorError
from .evaluators import EvalContext

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Any  # a PIL image, or a float tensor [3, H, W] in [0, 1]


def as_tensor(image: ImageLike) -> torch.Tensor:
    """[3, H, W] float in [0, 1] from a PIL image or a tensor ([H, W, 3] is transposed)."""
    if isinstance(image, torch.Tensor):
        t = image.float()
        if t.dim() == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
            t = t.permute(2, 0, 1)
        return t
    import numpy as np

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


class DinoEmbedder:
    """DINOv2 embeddings (the pooled CLS token) of images resized to the model's image size."""

    def __init__(self, model_path: str | Path, device: str = "cpu"):
        from transformers import Dinov2Model

        try:
            model = Dinov2Model.from_pretrained(str(model_path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EvaluatorError(
                f"{model_path}: cannot load a DINOv2 model from it: {exc}",
                hint="give a local folder with config.json and the weights (e.g. a download of facebook/dinov2-small)",
            ) from exc
        self.model = model.to(torch.device(device)).eval()  # type: ignore[arg-type]  # transformers' stubs
        self.device = device
        self.size = int(self.model.config.image_size)

    @torch.no_grad()
    def embed(self, images: Sequence[ImageLike]) -> torch.Tensor:
        batch = torch.stack(
            [
                torch.nn.functional.interpolate(
                    as_tensor(im)[None], size=(self.size, self.size), mode="bicubic", align_corners=False
                )[0]
                for im in images
            ]
        ).clamp(0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out = self.model(pixel_values=((batch - mean) / std).to(self.device))
        return out.pooler_output.double().cpu()


def similarities(merged: torch.Tensor, references: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per LoRA: mean over the merged images of cos(embedding, mean reference embedding of the LoRA)."""
    out = {}
    for name, ref in references.items():
        centre = ref.double().mean(dim=0)
        cos = torch.nn.functional.cosine_similarity(merged.double(), centre[None], dim=1)
        out[name] = float(cos.mean())
    return out


class DinoSimilarityEvaluator:
    """Scores a merged LoRA by the DINOv2 similarity of its images to each LoRA's reference images."""

    def __init__(
        self,
        model_path: str | Path,
        references: Mapping[str, Sequence[ImageLike]],
        render: Callable[[Path, EvalContext], Sequence[ImageLike]],
        *,
        device: str = "cpu",
    ):
        if not references or any(len(v) == 0 for v in references.values()):
            raise EvaluatorError("dinov2 similarity: every LoRA needs at least one reference image")
        self.embedder = DinoEmbedder(model_path, device)
        self.references = {name: self.embedder.embed(images) for name, images in references.items()}
        self.render = render
        digest = hashlib.sha256()
        for name, embedding in sorted(self.references.items()):
            digest.update(name.encode() + embedding.numpy().tobytes())
        # the tuner's memory is keyed by the name: other references or another model are another evaluator
        self.name = f"dinov2 similarity ({Path(model_path).name}, references {digest.hexdigest()[:12]})"

    def score(self, merged_path: Path, context: EvalContext) -> dict[str, float]:
        images = self.render(merged_path, context)
        if not images:
            raise EvaluatorError(
                f"dinov2 similarity on candidate {context.candidate} ({context.label}): the renderer made no images"
            )
        per_lora = similarities(self.embedder.embed(images), self.references)
        return {**{f"similarity/{k}": v for k, v in per_lora.items()}, "min_similarity": min(per_lora.values())}

    def scalar(self, scores: dict[str, float]) -> float:
        return scores["min_similarity"]
