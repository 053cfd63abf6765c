"""A disk-backed store of merged patches, so that a merge holds one group's tensors at a time.

Pass 2 puts each group's patch here as soon as it is made and keeps only a `StoredPatch` handle
(kind, shapes, rank: what the report and the writer's planning need). The tensors are read back
by positioned reads, one module at a time, when a file is written or a host asks for them. The
store is a temporary file: in the output's folder when there is one (the disk the user chose for
the result), else in the system temporary folder; it is deleted when the store is closed or
garbage-collected.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import OutputError
from .patches import Dense, LowRank, Patch


@dataclass(frozen=True)
class _Block:
    offset: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return 4 * math.prod(self.shape)


class PatchStore:
    """Append-only float32 spool of patches in one temporary file."""

    def __init__(self, folder: str | Path | None = None):
        try:
            fd, name = tempfile.mkstemp(prefix=".loramerge-spool.", suffix=".tmp", dir=folder)
        except OSError as exc:
            where = folder if folder is not None else tempfile.gettempdir()
            fix = (
                "choose an output folder you can write to (-o)"
                if folder is not None
                else ("set TMPDIR to a folder you can write to")
            )
            raise OutputError(
                f"{where}: cannot create the merge's temporary spool file there ({exc.strerror}); {fix}"
            ) from exc
        self.path = Path(name)
        self._fd = fd
        self._end = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _remove, fd, name)

    def put(self, patch: Patch) -> StoredPatch:
        if isinstance(patch, LowRank):
            up, down = self._append(patch.up), self._append(patch.down)
            return StoredPatch(self, (up, down), patch.scale, patch.shape, lowrank=True)
        return StoredPatch(self, (self._append(patch.delta),), 1.0, tuple(patch.delta.shape), lowrank=False)

    def _append(self, tensor: torch.Tensor) -> _Block:
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        # numpy arrays export the buffer protocol; numpy's stubs do not say so to the type checker
        raw = memoryview(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
        with self._lock:
            self._check_open()
            offset = self._end
            try:
                written = os.pwrite(self._fd, raw, offset)
                while written < raw.nbytes:  # pwrite may write less than asked for on some filesystems
                    written += os.pwrite(self._fd, raw[written:], offset + written)
            except OSError as exc:
                raise OutputError(
                    f"{self.path.parent}: cannot write the merge's temporary spool file ({exc.strerror}); "
                    "free space there or choose another output folder (-o); nothing was written"
                ) from exc
            self._end += raw.nbytes
        return _Block(offset, tuple(t.shape))

    def read(self, block: _Block) -> torch.Tensor:
        self._check_open()
        buf = bytearray(block.nbytes)
        view, got = memoryview(buf), 0
        while got < block.nbytes:
            n = os.preadv(self._fd, [view[got:]], block.offset + got)
            if n == 0:
                raise OSError(f"{self.path}: spool file is cut short")
            got += n
        if not buf:
            return torch.empty(block.shape)
        return torch.frombuffer(buf, dtype=torch.float32).reshape(block.shape)

    @property
    def nbytes(self) -> int:
        return self._end

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("the merge result was closed; its patches are gone (merge again)")

    def __enter__(self) -> PatchStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove(fd: int, name: str) -> None:
    os.close(fd)
    Path(name).unlink(missing_ok=True)


@dataclass(frozen=True, eq=False)
class StoredPatch:
    """A handle on a patch in a `PatchStore`: shapes and rank without the tensors; `load()` reads them."""

    store: PatchStore
    blocks: tuple[_Block, ...]
    scale: float
    shape: tuple[int, ...] | None
    lowrank: bool

    @property
    def rank(self) -> int | None:
        return self.blocks[1].shape[0] if self.lowrank else None

    def load(self) -> Patch:
        if self.lowrank:
            up, down = (self.store.read(b) for b in self.blocks)
            return LowRank(up, down, self.scale, self.shape)
        return Dense(self.store.read(self.blocks[0]))

    def dense(self) -> torch.Tensor:
        return self.load().dense()


PatchLike = Patch | StoredPatch


def materialize(patch: PatchLike) -> Patch:
    """The patch itself: a stored one is read back, an in-memory one returned as it is."""
    return patch.load() if isinstance(patch, StoredPatch) else patch


def rank_of(patch: PatchLike) -> int | None:
    """The rank of a low-rank patch (stored or not) without reading tensors; None for dense ones."""
    if isinstance(patch, StoredPatch):
        return patch.rank
    return patch.rank if isinstance(patch, LowRank) else None
