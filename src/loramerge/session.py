"""Opening the inputs of a merge: files, one architecture, alignment, the group index, loading.

Tensors are never held here: `load()` reads one LoRA's patch of one group on demand.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import architectures as A
from .architectures.spec import ArchTable, Placement
from .basemodel import BaseModel
from .config import MergeConfig
from .errors import BaseModelMismatchError, LoraMergeError
from .formats.align import UNKNOWN, Alignment, align, load_group, stems_of
from .formats.reader import AdapterFile
from .types import Patch


@dataclass
class Session:
    cfg: MergeConfig
    files: list[AdapterFile]
    alignments: list[Alignment]
    architecture: str
    detection: A.Detection | None
    table: ArchTable | None
    base: BaseModel | None
    groups: dict[str, list[int]] = field(default_factory=dict)      # key -> merged LoRAs present
    preserved: dict[str, list[int]] = field(default_factory=dict)   # key -> preserved LoRAs present
    targets: dict[str, tuple[Placement, str]] = field(default_factory=dict)  # key -> (placement, param)

    @property
    def keys(self) -> list[str]:
        return sorted(self.targets)

    def load(self, i: int, key: str) -> Patch:
        contributions = self.alignments[i].groups[key]
        weight = None
        if self.base is not None and any(c.entry.has_dora for c in contributions):
            weight = self.base.weight(contributions[0].base_target)
        return load_group(self.alignments[i], self.table, key, weight)

    def is_text_encoder(self, key: str) -> bool:
        return self.targets[key][0].branch.is_text_encoder

    def unplaced(self) -> dict[str, list[str]]:
        return {self.cfg.inputs[i].label: a.unplaced for i, a in enumerate(self.alignments) if a.unplaced}


def open_session(cfg: MergeConfig) -> Session:
    files = [AdapterFile(inp.path, allow_pickle=cfg.allow_pickle) for inp in cfg.inputs]
    detection = None if cfg.arch else A.detect([s for f in files for s in stems_of(f)])
    name = cfg.arch or detection.architecture
    table = None if name == UNKNOWN else A.get_table(name)
    placer = A.placer(name) if table else None
    alignments = [align(f, table, placer, strict=cfg.strict) for f in files]
    base = BaseModel.open(cfg.base, table) if cfg.base else None
    session = Session(cfg, files, alignments, name, detection, table, base)
    _index(session)
    if base is not None:
        _check_base(session)
    if not session.targets:
        raise LoraMergeError("no target is left to merge (check --include/--exclude and the inputs)")
    return session


def _index(s: Session) -> None:
    for i, (inp, alignment) in enumerate(zip(s.cfg.inputs, s.alignments)):
        for key, contributions in alignment.groups.items():
            if not inp.wants(key):
                continue
            c = contributions[0]
            s.targets.setdefault(key, (c.placement, c.param))
            (s.preserved if inp.preserve else s.groups).setdefault(key, []).append(i)
    for key in s.targets:
        s.groups.setdefault(key, [])
        s.preserved.setdefault(key, [])


def _check_base(s: Session) -> None:
    from .inspect import check_against_base

    problems = []
    for i, alignment in enumerate(s.alignments):
        missing, mismatched = check_against_base(alignment, s.base)
        problems += [f"{s.cfg.inputs[i].label}: not in base: {k}" for k in missing]
        problems += [f"{s.cfg.inputs[i].label}: {m}" for m in mismatched]
    if problems:
        shown = "\n  ".join(problems[:20])
        raise BaseModelMismatchError(f"{s.base.path}: {len(problems)} target(s) do not fit the base model:\n  {shown}\n"
                                     "  -> is this LoRA for another model? (e.g. an SD1.5 LoRA on SDXL)")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def group_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded from (global seed, group key): independent of order, device and threads."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
