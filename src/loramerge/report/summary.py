"""What the text and HTML reports both say first: which LoRA is cancelled where, and the group order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..analysis.stats import block_of
from ..enums import ReportSort
from .build import GROUP_RETENTION_WARNING
from .model import GroupRow, Report


def short_key(key: str) -> str:
    """A group key as shown: without the denoiser's ``diffusion_model.`` prefix."""
    return key.removeprefix("diffusion_model.")


@dataclass(frozen=True)
class Cancelled:
    """One LoRA's groups where it keeps less than `GROUP_RETENTION_WARNING` of itself."""

    lora: str
    groups: tuple[tuple[str, float], ...]  # (key, retention), lowest retention first
    blocks: tuple[tuple[str, int], ...]  # (block, groups cancelled in it), most first

    def line(self) -> str:
        where = ", ".join(f"{short_key(b)} ({n})" for b, n in self.blocks)
        return f"{self.lora} cancelled in {len(self.groups)} group(s) (retention < {GROUP_RETENTION_WARNING}): {where}"


def cancelled(report: Report) -> list[Cancelled]:
    """Per LoRA (in input order), the groups of 2+ LoRAs where its retention is below the warning level."""
    out = []
    for lora in report.loras:
        lost = sorted(
            (value, g.key)
            for g in report.groups
            if g.n_loras > 1 and (value := g.retention.get(lora.name)) is not None and value < GROUP_RETENTION_WARNING
        )
        if not lost:
            continue
        per_block: dict[str, int] = {}
        for _, key in lost:
            per_block[block_of(key)] = per_block.get(block_of(key), 0) + 1
        blocks = tuple(sorted(per_block.items(), key=lambda item: (-item[1], item[0])))
        out.append(Cancelled(lora.name, tuple((key, value) for value, key in lost), blocks))
    return out


def _missing_last(value: float | None, *, descending: bool) -> tuple[bool, float]:
    if value is None:
        return (True, 0.0)
    return (False, -value if descending else value)


_ORDER: dict[ReportSort, Callable[[GroupRow], tuple]] = {
    ReportSort.CONFLICT: lambda g: (_missing_last(g.effective_conflict, descending=True), g.key),
    ReportSort.KEY: lambda g: (g.key,),
    ReportSort.STRATEGY: lambda g: (g.strategy, _missing_last(g.effective_conflict, descending=True), g.key),
    ReportSort.COSINE: lambda g: (_missing_last(g.cosine, descending=False), g.key),
    ReportSort.OVERLAP: lambda g: (_missing_last(g.subspace_overlap, descending=True), g.key),
    ReportSort.RETENTION: lambda g: (
        _missing_last(min((v for v in g.retention.values() if v is not None), default=None), descending=False),
        g.key,
    ),
}


def sorted_groups(groups: Sequence[GroupRow], sort: ReportSort | str = ReportSort.CONFLICT) -> list[GroupRow]:
    """`groups` in the order `sort` names; ties and missing values are ordered by key (missing last)."""
    return sorted(groups, key=_ORDER[ReportSort(sort)])
