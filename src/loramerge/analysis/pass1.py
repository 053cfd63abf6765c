"""Pass 1: statistics of every group, scalars only, one group's tensors in memory at a time."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..enums import Progress
from ..inputs import Inputs
from ..rng import group_generator
from .stats import GroupStats, group_stats


@dataclass
class Analysis:
    """What pass 1 keeps: per-group statistics and, per branch, each LoRA's energy and the pair dots."""

    stats: dict[str, GroupStats] = field(default_factory=dict)
    norms2: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    dots: dict[str, dict[tuple[int, int], float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )


def pass1(inputs: Inputs, progress: Progress | None = None) -> Analysis:
    out = Analysis()
    keys = inputs.keys
    for n, key in enumerate(keys):
        if progress:
            progress("analyze", key, n, len(keys))
        if not inputs.groups[key]:
            continue
        g = inputs.group(key, preserved=False)
        s = group_stats(
            key,
            tuple(g.loras),
            g.patches,
            generator=group_generator(inputs.cfg.seed, key),
            sample_size=inputs.cfg.sample_size,
        )
        out.stats[key] = s
        branch = inputs.branch(key)
        for i, n2 in zip(g.loras, s.norms2):
            out.norms2[branch][i] += n2
        for p in s.pairs:
            out.dots[branch][(p.i, p.j)] += p.dot
    return out
