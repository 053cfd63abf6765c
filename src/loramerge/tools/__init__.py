"""Tools built on the core: `extract` a LoRA from two checkpoints, `resize` / prune a LoRA, `bake` LoRAs
into a checkpoint. Each streams one module (or one checkpoint tensor) at a time."""

from __future__ import annotations

from .extract import ExtractReport, extract
from .resize import Criterion, ResizeReport, resize

__all__ = ["Criterion", "ExtractReport", "ResizeReport", "extract", "resize"]
