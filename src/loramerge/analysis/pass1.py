"""Pass 1: statistics of every group, scalars only, one group's tensors in memory at a time."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..enums import Progress
from ..inputs import Inputs
from ..numerics import group_maths
from ..rng import group_generator
from ..threads import ordered_map
from .stats import GroupStats, group_stats


@dataclass
class Analysis:
    """What pass 1 keeps: per-group statistics and, per branch, each LoRA's energy and the pair dots."""

    stats: dict[str, GroupStats] = field(default_factory=dict)
    norms2: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    dots: dict[str, dict[tuple[int, int], float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )


def pass1(inputs: Inputs, progress: Progress | None = None, *, threads: int = 1, signs: bool = True) -> Analysis:
    """Statistics of every group with LoRAs to merge, `threads` groups at a time (results in key
    order, so the sums below are the same whatever the thread count). ``signs=False``: the exact
    norms, dots and overlaps only (a plan that cannot use sign statistics)."""

    def stats_of(key: str) -> GroupStats | None:
        if not inputs.groups[key]:
            return None
        g = inputs.group(key, preserved=False)
        with group_maths(key, "analysis"):
            return group_stats(
                key,
                tuple(g.loras),
                g.patches,
                generator=group_generator(inputs.cfg.seed, key),
                sample_size=inputs.cfg.sample_size,
                signs=signs,
            )

    out = Analysis()
    keys = inputs.keys
    for n, (key, s) in enumerate(zip(keys, ordered_map(stats_of, keys, threads))):
        if progress:
            progress("analyze", key, n, len(keys))
        if s is None:
            continue
        out.stats[key] = s
        branch = inputs.branch(key)
        for i, n2 in zip(s.loras, s.norms2):
            out.norms2[branch][i] += n2
        for p in s.pairs:
            out.dots[branch][(p.i, p.j)] += p.dot
    return out
