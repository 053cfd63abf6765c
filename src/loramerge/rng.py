"""Seeded randomness: every random choice of a merge comes from a generator made here."""

from __future__ import annotations

import hashlib

import torch


def group_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded from (global seed, group key): independent of order, device and threads."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
