"""Merged groups shared between AutoTuner candidates: each distinct (group, decision, strengths) is
merged once. Results stay in RAM up to a byte budget, then go to a temporary spool file (removed
when the cache is closed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..engine import GroupResult, merge_group
from ..inputs import Inputs
from ..patches import Dense, LowRank, Patch
from ..plan import MergePlan
from ..spool import PatchStore, materialize

DEFAULT_RAM_BUDGET = 1 << 30  # bytes of merged patches kept in memory before spilling to disk


def group_key(inputs: Inputs, plan: MergePlan, key: str) -> tuple[Any, ...]:
    """Everything `merge_group` reads that can differ between candidates of one tuning run."""
    cfg = inputs.cfg
    te = inputs.is_text_encoder(key)
    loras = inputs.groups[key] + inputs.preserved[key]
    d = plan.decisions.get(key)
    decision = (
        None if d is None else (d.strategy, repr(d.params), repr(d.sparsifier), d.refine, d.path, d.rank, d.rel_error)
    )
    strengths = tuple(cfg.inputs[i].strength(te) for i in loras)
    return (key, decision, plan.scale(te), cfg.multiplier, strengths, plan.rank, plan.rel_error)


def _nbytes(result: GroupResult) -> int:
    p = result.patch
    if isinstance(p, LowRank):
        return 4 * (p.up.numel() + p.down.numel())
    return 4 * p.delta.numel() if isinstance(p, Dense) else 0


class DiffCache:
    def __init__(self, ram_budget: int = DEFAULT_RAM_BUDGET):
        self.ram_budget = ram_budget
        self.in_ram = 0
        self.hits = self.misses = 0
        self._results: dict[tuple[Any, ...], GroupResult] = {}
        self._facts: dict[int, Any] = {}  # id of a cached result -> what `facts` computed of it
        self._store: PatchStore | None = None
        self._lock = threading.Lock()

    def merged(self, inputs: Inputs, plan: MergePlan, key: str) -> GroupResult:
        k = group_key(inputs, plan, key)
        with self._lock:
            if k in self._results:
                self.hits += 1
                return self._results[k]
        result = merge_group(inputs, plan, key)
        with self._lock:
            self.misses += 1
            size = _nbytes(result)
            if self.in_ram + size > self.ram_budget:
                if self._store is None:
                    self._store = PatchStore()
                result = replace(result, patch=self._store.put(materialize(result.patch)))
            else:
                self.in_ram += size
            return self._results.setdefault(k, result)

    def facts(self, result: GroupResult, compute: Callable[[Patch], Any]) -> Any:
        """`compute(patch)` of a cached result, computed once (results are shared by candidates)."""
        with self._lock:
            if id(result) in self._facts:
                return self._facts[id(result)]
        value = compute(materialize(result.patch))
        with self._lock:
            return self._facts.setdefault(id(result), value)

    @property
    def spilled(self) -> int:
        return self._store.nbytes if self._store is not None else 0

    def close(self) -> None:
        self._results.clear()
        self._facts.clear()
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> DiffCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
