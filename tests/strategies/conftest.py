"""Shared helpers for the strategy, sparsifier and refinement tests."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.common import torch_threads


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lowrank(out: int, inp: int, rank: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    return torch.randn(out, rank, generator=g) @ torch.randn(rank, inp, generator=g) / rank


@pytest.fixture
def generator() -> torch.Generator:
    return gen(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny: thread start-up costs more than it saves on a busy 2-core box."""
    with torch_threads(1):
        yield
