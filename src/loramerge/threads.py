"""How a merge uses the cores: groups in parallel, each group's tensor work on one thread.

Per-group tensors are small (a LoRA group is a few MB); splitting each op over several threads
buys little and, when other processes use the cores, OpenMP threads spin waiting for a descheduled
sibling (measured: 3x slower beside one busy loop, no end beside a second merge). Running whole
groups side by side on single-threaded ops keeps every core busy with useful work and gives the
same bytes whatever the number of threads: each group is always computed the same way.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def automatic_threads() -> int:
    """Cores this process may use, less those other processes keep busy (1-minute load average)."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0.0
    return max(1, min(cores, cores - int(busy + 0.5)))


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch ops on one intra-op thread each for the duration (the caller's setting restored)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on `workers` threads, results in input order, at most ``2·workers``
    items in flight (memory stays bounded by a few groups, however many groups there are)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loramerge") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
