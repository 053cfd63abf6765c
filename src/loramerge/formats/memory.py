"""`MemorySource`: tensors held in memory read through `TensorSource`'s interface, so that a merge
result can be the input of another merge (hierarchical recipes) without being written to a file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .files import SAFETENSORS_DTYPES

_NAMES = {t: name for name, t in SAFETENSORS_DTYPES.items()}


class MemorySource:
    """The tensors of one LoRA state dict (as `formats.writers.tensors_for` makes them). `name` stands
    for the path in messages (e.g. ``<step styles>``)."""

    def __init__(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
        self.path = Path(name)
        self._tensors = dict(sorted(tensors.items()))
        self.metadata = dict(metadata or {})
        self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}
        self.dtypes = {k: _NAMES[v.dtype] for k, v in self._tensors.items()}

    def keys(self) -> list[str]:
        return list(self._tensors)

    @property
    def size_bytes(self) -> int:
        """What the tensors hold (a file of them would be this plus its header)."""
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def get(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def get_many(self, keys: list[str]) -> dict[str, torch.Tensor]:
        return {k: self._tensors[k] for k in keys}

    def sha256(self) -> str:
        """A digest of the content (names, dtypes, shapes, bytes): the same tensors give the same digest."""
        h = hashlib.sha256()
        for key, t in self._tensors.items():
            h.update(f"{key}|{self.dtypes[key]}|{list(t.shape)}|".encode())
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
