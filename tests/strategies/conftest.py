"""Shared helpers for the strategy, sparsifier and refinement tests."""

from __future__ import annotations

import pytest
import torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lowrank(out: int, inp: int, rank: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    return torch.randn(out, rank, generator=g) @ torch.randn(rank, inp, generator=g) / rank


@pytest.fixture
def generator() -> torch.Generator:
    return gen(0)
