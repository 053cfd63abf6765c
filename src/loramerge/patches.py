"""Small frozen value types shared across modules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class AdapterKind(str, Enum):
    """The algebra of one adapted module (FORMATS.md, 'Adapter algebras')."""

    LORA = "lora"
    LOHA = "loha"
    LOKR = "lokr"
    FULL = "full"
    NORM = "norm"


@dataclass(frozen=True)
class LowRank:
    """ΔW = scale · up @ down, reshaped to `shape`.

    ``up`` is [out, r] and ``down`` is [r, in·kh·kw] (conv kernels flattened), float32.
    ``shape`` is the weight's shape, or None when only the flattened 2-D form is known.
    """

    up: torch.Tensor
    down: torch.Tensor
    scale: float
    shape: tuple[int, ...] | None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.up.shape[0])

    def dense(self) -> torch.Tensor:
        flat = (self.up * self.scale) @ self.down
        return flat.reshape(self.shape) if self.shape is not None else flat

    def scaled(self, factor: float) -> LowRank:
        return LowRank(self.up, self.down, self.scale * factor, self.shape)


@dataclass(frozen=True)
class Dense:
    """ΔW stored densely (full-rank adapters, LoHa/LoKr products, biases, norms, merge results)."""

    delta: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.delta.shape)

    def dense(self) -> torch.Tensor:
        return self.delta

    def scaled(self, factor: float) -> Dense:
        return Dense(self.delta * factor)


Patch = LowRank | Dense
