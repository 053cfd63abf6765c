"""What makes a benchmark run reproducible: the same seeds give the same numbers on the same machine.

* **Threads.** Every process computes with a fixed number of torch threads (`BenchConfig.threads`,
  default 1): float reductions (matmul, sums, backward passes) may group their terms by thread, so
  the thread count is part of the trained-artefact cache key and of the results' provenance.
* **Deterministic kernels.** ``torch.use_deterministic_algorithms(True)``: an op without a
  deterministic CPU kernel raises instead of running; ``MKL_CBWR=AUTO`` asks MKL for run-to-run
  reproducible code paths on one processor.
* **No global RNG.** Training draws every random number (initial weights, batches, noise,
  dropout) from its own seeded ``torch.Generator``; modules are built on the meta device so that
  building one draws nothing. As a safety net each job also runs with the global torch, numpy and
  ``random`` generators seeded from its name (`isolated_rng`), so a global draw anywhere (also
  inside loramerge) could not depend on which jobs a worker process happened to run before.
* **Order.** Results are kept in plan order, never in completion order, and serialised with sorted
  keys; nothing iterates a set of strings (the spawned workers each get a random hash seed).
* **Timings** live apart from the results (`run.json`), so the results table can be hashed
  (`results_digest`) and compared byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

MKL_ENV = {"MKL_CBWR": "AUTO", "MKL_DYNAMIC": "FALSE"}  # read when MKL starts: set before workers spawn


@contextlib.contextmanager
def pinned_environment() -> Iterator[None]:
    """`MKL_ENV` in the environment (unless set already) while worker processes are started: they
    inherit it, and MKL reads it when it starts. Restored afterwards."""
    saved = {name: os.environ.get(name) for name in MKL_ENV}
    for name, value in MKL_ENV.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def init_process(threads: int) -> None:
    """Fix this process's torch thread count and switch deterministic algorithms on (for good: a worker)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


@contextlib.contextmanager
def process_settings(threads: int) -> Iterator[None]:
    """`init_process` for the duration of a block, then the caller's settings again (inline runs)."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    init_process(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


@contextlib.contextmanager
def isolated_rng(name: str) -> Iterator[None]:
    """Run with the global torch / numpy / random generators seeded from `name`, restoring them after."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


# -- seeded modules ---------------------------------------------------------------------------------
def _init_from(module: nn.Module, g: torch.Generator) -> None:
    """torch's default initialisation of one layer, drawn from `g` instead of the global RNG."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
        if module.bias is not None:
            bound = 1 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound, generator=g)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, generator=g)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif any(True for _ in module.parameters(recurse=False)):
        raise TypeError(f"no seeded initialisation for {type(module).__name__}")


def build(factory: Callable[[], nn.Module], *, generator: torch.Generator | None = None,
          state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """`factory()` built on the meta device (no random draws), then either initialised from
    `generator` (layer by layer, in module order) or given the tensors of `state`."""
    if (generator is None) == (state is None):
        raise ValueError("pass exactly one of generator and state")
    with torch.device("meta"):
        module = factory()
    if state is not None:
        module.load_state_dict(state, assign=True)
        return module
    module = module.to_empty(device="cpu")
    for m in module.modules():
        _init_from(m, generator)
    return module


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- digests -------------------------------------------------------------------------------------------
def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def canonical_json(obj) -> str:
    """The one serialisation of results: sorted keys, no whitespace, floats as Python's repr."""
    return json.dumps(obj, indent=0, separators=(",", ":"), sort_keys=True, allow_nan=False)


def results_digest(table: dict) -> str:
    return hashlib.sha256(canonical_json(table).encode()).hexdigest()


def source_digest(folder: Path, pattern: str = "*.py") -> str:
    """sha256 of the files under `folder` (relative names and bytes, sorted)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob(pattern)):
        if "__pycache__" not in path.parts:
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def provenance(threads: int) -> dict:
    """What the numbers depend on besides the configuration: software, processor, threads, code."""
    import loramerge

    return {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
            "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads_per_process": threads, "deterministic_algorithms": True,
            "mkl": {k: os.environ.get(k) for k in MKL_ENV},
            "loramerge_source": source_digest(Path(loramerge.__file__).parent),
            "bench_source": source_digest(Path(__file__).parent)}
