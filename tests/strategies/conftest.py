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


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny: thread start-up costs more than it saves on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
