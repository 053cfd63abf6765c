"""Which entries of a group's deltas pass 1 reads for its sign statistics, and reading them.

Small groups (at most ``EXACT_FACTOR × sample_size`` entries) are read whole: one matrix product
per LoRA, so their sign statistics are exact. Larger groups are read on ``k`` random *grids*: grid
``g`` is the block ``ΔW[R_g, C_g]`` of ``nr`` rows × ``nc`` columns, computed as
``scale · up[R_g] @ down[:, C_g]`` (one batched matrix product per LoRA for all grids, no per-entry
gathers). The row sets ``R_1 … R_k`` are consecutive slices of a sequence of independent random
permutations of the rows, one after the other; the column sets likewise of the columns,
independently. Every slot of such a sequence is uniform over the rows
(columns), so every entry ``(r, c)`` has the same expected multiplicity ``k·nr·nc / (rows·cols)`` in
the sample: a sum over the sample, times ``rows·cols / size``, is an unbiased estimate of the same
sum over the whole matrix, and each ratio metric built from two such sums is the usual ratio
estimator (consistent, bias O(1/size)), as with independent uniform positions. The permutations make
every row (column) appear equally often, up to one, which balances out row and column effects;
small grids keep the correlation between entries that share a row or column low.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..patches import LowRank, Patch

# groups with at most this many times `sample_size` entries are read whole (past 4× the grids are
# cheaper: the synthetic stack of bench/speed.py, 2026-12-06)
EXACT_FACTOR = 4
GRID_SIDE = 32  # rows and columns of one grid (more for a matrix narrower than this)
CHUNK = 4096  # masked sums add float32 partial sums of this many entries in float64


@dataclass(frozen=True)
class Grids:
    """Row and column indices of ``k`` grids: ``rows`` [k, nr], ``cols`` [k, nc] (int64, CPU)."""

    rows: torch.Tensor
    cols: torch.Tensor

    @property
    def size(self) -> int:
        return self.rows.numel() * self.cols.shape[1]


@dataclass(frozen=True)
class SignSample:
    """The entries of each LoRA's ΔW at one shared set of positions, as read for the sign statistics.

    ``values`` is [n, padded] float32; columns from ``size`` on are zeros (neutral in every sum the
    statistics take), so that ``padded`` is a multiple of ``chunk``."""

    values: torch.Tensor
    size: int
    chunk: int
    exact: bool

    @classmethod
    def of(cls, values: torch.Tensor) -> SignSample:
        """A sample from given entries ([n, m], any float dtype) at positions of any design."""
        n, m = values.shape
        out = empty_sample(n, m, values.device)
        out.values[:, :m] = values
        return out


def empty_sample(n: int, size: int, device: torch.device | str = "cpu") -> SignSample:
    """A sample for `n` LoRAs and `size` positions, padded to a multiple of its chunk: the first
    `size` columns are uninitialised (to be filled), the padding is zero."""
    chunk = max(1, min(CHUNK, size))
    values = torch.empty(n, -(-size // chunk) * chunk, dtype=torch.float32, device=device)
    values[:, size:] = 0
    return SignSample(values, size, chunk, False)


def plan_grids(rows: int, cols: int, sample_size: int, generator: torch.Generator) -> Grids | None:
    """The grids to read from a [rows, cols] matrix, or None when it is read whole."""
    if rows * cols <= EXACT_FACTOR * sample_size:
        return None
    cell = GRID_SIDE * GRID_SIDE
    nr = min(rows, GRID_SIDE)
    nc = min(cols, max(GRID_SIDE, -(-cell // nr)))
    nr = min(rows, max(nr, -(-cell // nc)))
    k = -(-sample_size // (nr * nc))
    return Grids(_slots(rows, k * nr, generator).view(k, nr), _slots(cols, k * nc, generator).view(k, nc))


def _slots(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` indices in [0, n): independent random permutations of range(n), one after the other.
    Every slot is uniform on [0, n) and every index fills ⌊count/n⌋ or ⌈count/n⌉ slots."""
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-count // n))]
    return torch.cat(perms)[:count]


def read_sample(patches: list[Patch], rows: int, cols: int, grids: Grids | None) -> SignSample:
    """The entries of every patch (as the flattened [rows, cols] matrix) on the grids, or all of them."""
    size = rows * cols if grids is None else grids.size
    sample = empty_sample(len(patches), size, _device(patches[0]))
    for i, patch in enumerate(patches):
        out = sample.values[i, :size]
        if grids is None:
            _read_whole(patch, out.view(rows, cols))
        else:
            _read_grids(patch, rows, grids, out.view(grids.rows.shape[0], grids.rows.shape[1], grids.cols.shape[1]))
    return SignSample(sample.values, size, sample.chunk, grids is None)


def _read_whole(patch: Patch, out: torch.Tensor) -> None:
    """out [rows, cols] ← ΔW (one matrix product for a low-rank patch)."""
    if isinstance(patch, LowRank):
        torch.mm(patch.up.float(), patch.down.float(), out=out)
        out.mul_(patch.scale)
    else:
        out.copy_(patch.dense().reshape(out.shape))


def _read_grids(patch: Patch, rows: int, grids: Grids, out: torch.Tensor) -> None:
    """out [k, nr, nc] ← the k grid blocks of ΔW (one batched product of factor rows and columns)."""
    k, nr, nc = out.shape
    r_idx, c_idx = grids.rows.to(out.device), grids.cols.to(out.device)
    if isinstance(patch, LowRank):
        up = patch.up.float().index_select(0, r_idx.flatten()).view(k, nr, -1)  # [k, nr, r]
        down = patch.down.float().index_select(1, c_idx.flatten()).view(-1, k, nc)  # [r, k, nc]
        torch.bmm(up, down.transpose(0, 1), out=out)
        out.mul_(patch.scale)
    else:  # materialised already: index the blocks
        out.copy_(patch.dense().reshape(rows, -1)[r_idx[:, :, None], c_idx[:, None, :]])


def _device(patch: Patch) -> torch.device:
    return patch.up.device if isinstance(patch, LowRank) else patch.dense().device
