"""The inputs of a merge, opened: files, one architecture, alignment, the group index, loading.

The first layer of the one-way flow ``inputs → statistics → plan → merge → write``. Tensors are
never held here: `group()` reads the patches of one group on demand, for pass 1 and again for pass 2.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import architectures as A
from .architectures import blocks as B
from .architectures.spec import ArchTable, Placement
from .basemodel import BaseModel
from .config import MergeConfig
from .enums import UNKNOWN_ARCH
from .errors import BaseModelMismatchError, InputFileError, LoraMergeError
from .formats.align import Alignment, align, detect, group_shape, load_group
from .formats.memory import MemorySource
from .formats.reader import AdapterFile
from .patches import Patch


@dataclass(frozen=True)
class GroupInputs:
    """One group's patches as read from the files: the LoRAs to merge and those preserved (added on
    top at their strength), with their indices into the configuration's inputs."""

    key: str
    loras: list[int]
    patches: list[Patch]
    kept: list[int]
    kept_patches: list[Patch]
    text_encoder: bool


@dataclass
class Inputs:
    cfg: MergeConfig
    files: list[AdapterFile]
    alignments: list[Alignment]
    architecture: str
    detection: A.Detection | None
    table: ArchTable | None
    base: BaseModel | None
    groups: dict[str, list[int]] = field(default_factory=dict)  # key -> merged LoRAs present
    preserved: dict[str, list[int]] = field(default_factory=dict)  # key -> preserved LoRAs present
    targets: dict[str, tuple[Placement, str]] = field(default_factory=dict)  # key -> (placement, param)
    block_weights: list[dict[str, float] | None] = field(default_factory=list)  # per input: block -> weight

    def block_weight(self, i: int, key: str) -> float:
        """The block weight of input `i` on group `key` (1 without block weights or outside every block)."""
        weights = self.block_weights[i] if self.block_weights else None
        if weights is None:
            return 1.0
        layout = B.layout_of(self.architecture)
        block = layout.block_of(key.split("#", 1)[0]) if layout else None
        return 1.0 if block is None else weights[block]

    @property
    def keys(self) -> list[str]:
        return sorted(self.targets)

    def load(self, i: int, key: str) -> Patch:
        contributions = self.alignments[i].groups[key]
        weight = None
        if self.base is not None and any(c.entry.has_dora for c in contributions):
            weight = self.base.weight(contributions[0].base_target)
        patch = load_group(self.alignments[i], self.table, key, weight)
        w = self.block_weight(i, key)  # before pass 1: statistics and decisions see the effective ΔW
        return patch if w == 1.0 else patch.scaled(w)

    def group(self, key: str, *, preserved: bool = True) -> GroupInputs:
        """The patches of one group, read now (merged LoRAs, then preserved ones unless told not to)."""
        loras, kept = self.groups[key], (self.preserved[key] if preserved else [])
        return GroupInputs(
            key,
            loras,
            [self.load(i, key) for i in loras],
            kept,
            [self.load(i, key) for i in kept],
            self.is_text_encoder(key),
        )

    def branch(self, key: str) -> str:
        return "text_encoder" if self.is_text_encoder(key) else "model"

    def is_text_encoder(self, key: str) -> bool:
        return self.targets[key][0].branch.is_text_encoder

    def unplaced(self) -> dict[str, list[str]]:
        return {self.cfg.inputs[i].label: a.unplaced for i, a in enumerate(self.alignments) if a.unplaced}


def open_inputs(cfg: MergeConfig, sources: Mapping[str, MemorySource] | None = None) -> Inputs:
    """Open the inputs; an input whose path is a key of `sources` is read from there (an earlier
    step's result held in memory) instead of from a file."""
    sources = sources or {}
    files = [AdapterFile(inp.path, allow_pickle=cfg.allow_pickle, source=sources.get(inp.path)) for inp in cfg.inputs]
    detection = None if cfg.arch else detect(files)
    name = cfg.arch if detection is None else detection.architecture
    assert name is not None
    table = None if name == UNKNOWN_ARCH else A.get_table(name)
    placer = A.placer(name) if table else None
    alignments = [align(f, table, placer, strict=cfg.strict) for f in files]
    base = BaseModel.open(cfg.base, table) if cfg.base else None
    inputs = Inputs(cfg, files, alignments, name, detection, table, base, block_weights=_block_weights(cfg, name))
    _index(inputs)
    if base is not None:
        _check_base(inputs)
    if not inputs.targets:
        raise LoraMergeError("no target is left to merge (check --include/--exclude and the inputs)")
    return inputs


def _block_weights(cfg: MergeConfig, architecture: str) -> list[dict[str, float] | None]:
    if not any(inp.block_weights for inp in cfg.inputs):
        return []
    user = B.read_presets(cfg.block_weights_file) if cfg.block_weights_file else {}
    layout = B.layout_of(architecture)
    return [
        None if inp.block_weights is None else B.resolve(inp.block_weights, layout, architecture, user, inp.path)
        for inp in cfg.inputs
    ]


def _index(s: Inputs) -> None:
    for i, (inp, alignment) in enumerate(zip(s.cfg.inputs, s.alignments)):
        for key, contributions in alignment.groups.items():
            if not inp.wants(key) or s.block_weight(i, key) == 0.0:  # a zero block weight leaves it out
                continue
            c = contributions[0]
            s.targets.setdefault(key, (c.placement, c.param))
            (s.preserved if inp.preserve else s.groups).setdefault(key, []).append(i)
    for key in s.targets:
        s.groups.setdefault(key, [])
        s.preserved.setdefault(key, [])
    _check_group_shapes(s)


def _check_group_shapes(s: Inputs) -> None:
    """Every LoRA's ΔW of a group has one shape (header only, before any work). Strict: an error;
    lenient: the contributions that differ from the most common shape (ties: the first input's)
    are left out and listed with the unplaced keys."""
    for key in s.targets:
        present = s.groups[key] + s.preserved[key]
        shapes = {i: group_shape(s.alignments[i], s.table, key) for i in sorted(present)}
        if len(set(shapes.values())) < 2:
            continue
        counts = Counter(shapes.values())
        common = max(counts, key=lambda shape: (counts[shape], -min(i for i in shapes if shapes[i] == shape)))
        first = min(i for i in shapes if shapes[i] == common)
        for i, shape in shapes.items():
            if shape == common:
                continue
            if s.cfg.strict:
                raise InputFileError(
                    s.cfg.inputs[i].path,
                    f"ΔW is {list(shape)} here but {list(common)} in {s.cfg.inputs[first].path}",
                    key=key,
                    hint="the LoRAs are for different models; merge LoRAs of one model, "
                    "or pass --lenient to leave this group out of this LoRA",
                )
            s.alignments[i].unplaced.append(f"{key} (ΔW {list(shape)}, the others' {list(common)})")
            for lst in (s.groups[key], s.preserved[key]):
                if i in lst:
                    lst.remove(i)


def _check_base(s: Inputs) -> None:
    from .inspection import check_against_base

    assert s.base is not None
    problems = []
    for i, alignment in enumerate(s.alignments):
        missing, mismatched = check_against_base(alignment, s.base)
        problems += [f"{s.cfg.inputs[i].label}: not in base: {k}" for k in missing]
        problems += [f"{s.cfg.inputs[i].label}: {m}" for m in mismatched]
    if problems:
        shown = "\n  ".join(problems[:20])
        raise BaseModelMismatchError(
            f"{s.base.path}: {len(problems)} target(s) do not fit the base model:\n  {shown}\n"
            "  -> is this LoRA for another model? (e.g. an SD1.5 LoRA on SDXL)"
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
