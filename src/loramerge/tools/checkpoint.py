"""A model checkpoint read one tensor at a time, with every tensor's LoRA targets.

A checkpoint is one safetensors file (single-file LDM/SGM or ComfyUI checkpoint, a ComfyUI
diffusion-model file, one diffusers/transformers component file) or a diffusers model folder
(``unet/``, ``transformer/``, ``text_encoder*/`` subfolders of ``*.safetensors``). Tensor names are
placed on the canonical key space with the prefixes and tables `basemodel` uses, so a LoRA group
(``module``, ``module#component`` or ``module:bias``) finds the checkpoint tensor it changes and,
for fused weights, its rows. Tensors are read by positioned reads (`TensorSource`), never memory-mapped:
what one step reads is freed with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import architectures as A
from ..architectures.spec import ArchTable, Branch
from ..basemodel import checkpoint_stem, placement_of
from ..enums import UNKNOWN_ARCH
from ..errors import InputFileError
from ..formats.align import group_key
from ..formats.files import TensorSource

COMPONENT_FOLDERS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
_PARAMS = ("weight", "bias")


@dataclass(frozen=True)
class Slot:
    """Where one LoRA group lands: a checkpoint tensor, and its rows for a component of a fused weight."""

    key: str
    rows: slice | None = None


@dataclass
class Checkpoint:
    """Tensor names (as the checkpoint spells them; folder components prefixed ``<component>.``),
    their shapes and dtypes, the architecture, and group -> `Slot` for every placed weight and bias."""

    path: Path
    architecture: str
    table: ArchTable | None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)  # group -> slot
    groups_of: dict[str, list[str]] = field(default_factory=dict)  # tensor key -> groups on it
    metadata: dict[str, str] = field(default_factory=dict)
    _sources: dict[str, tuple[TensorSource, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path, arch: str | None = None) -> Checkpoint:
        path = Path(path)
        sources = _component_sources(path)
        keys = {prefix + k: (src, k) for src, prefix in sources for k in src.keys()}
        name = arch or _detect(keys)
        table = None if name == UNKNOWN_ARCH else A.get_table(name)
        ckpt = cls(path, name, table, _sources=keys)
        ckpt.metadata = sources[0][0].metadata if len(sources) == 1 else {}
        placer = A.placer(name) if table else None
        for key, (src, inner) in keys.items():
            ckpt.shapes[key] = src.shapes[inner]
            ckpt.dtypes[key] = src.dtypes[inner]
            module, _, param = key.rpartition(".")
            if param not in _PARAMS or not module:
                continue
            placement = placement_of(module, table, placer)
            if placement is not None:
                ckpt._add(key, placement, param)
        return ckpt

    def _add(self, key: str, placement, param: str) -> None:
        self._slot(group_key(placement, param), Slot(key))
        fused = self.table.modules.get(placement.module) if self.table else None
        rows = self.shapes[key][0] if self.shapes[key] else 0
        if fused is not None and placement.component is None and rows % sum(s for _, s in fused.components) == 0:
            for name, part in fused.slices(rows).items():
                self._slot(group_key(A.Placement(placement.module, name), param), Slot(key, part))

    def _slot(self, group: str, slot: Slot) -> None:
        self.slots.setdefault(group, slot)
        if self.slots[group] == slot:
            self.groups_of.setdefault(slot.key, []).append(group)

    def branch_of(self, key: str) -> Branch | None:
        """The branch of a placed tensor (None when no group lands on it)."""
        groups = self.groups_of.get(key)
        return Branch(groups[0].split(".", 1)[0]) if groups else None

    def branches(self) -> set[Branch]:
        return {b for b in map(self.branch_of, self.shapes) if b is not None}

    def get(self, key: str) -> torch.Tensor:
        """One tensor, in a buffer of its own that goes back to the system when it is freed."""
        src, inner = self._sources[key]
        return src.get_many([inner], own_pages=True)[inner]

    def files(self) -> list[Path]:
        return sorted({src.path for src, _ in self._sources.values()})


def _component_sources(path: Path) -> list[tuple[TensorSource, str]]:
    if not path.exists():
        raise InputFileError(path, "not found", hint="check the path of the model")
    if not path.is_dir():
        return [(TensorSource(path), "")]
    found = [
        (TensorSource(f), f"{component}.")
        for component in COMPONENT_FOLDERS
        for f in sorted((path / component).glob("*.safetensors"))
    ]
    if not found:
        raise InputFileError(
            path,
            "folder holds no diffusers component weights",
            hint=f"give a .safetensors file, or a diffusers folder with {'/, '.join(COMPONENT_FOLDERS)}/ subfolders",
        )
    return found


def _detect(keys) -> str:
    """The table that places the most weight tensors. A checkpoint also holds tensors no LoRA adapts
    (norms, embeddings, VAE), so the closest table is taken even below detection's usual share."""
    stems = [checkpoint_stem(k[: -len(".weight")]) for k in keys if k.endswith(".weight")]
    found = A.detect(stems)
    if found.architecture != UNKNOWN_ARCH:
        return found.architecture
    return found.runner_up if found.runner_up and found.placed else UNKNOWN_ARCH
