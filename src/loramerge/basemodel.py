"""A base model read by its header only: which canonical modules it has and their weight shapes.

Accepts the common layouts: diffusers component files (``down_blocks...``), single-file LDM/SGM
checkpoints (``model.diffusion_model.*``, ``conditioner.embedders.0.transformer.*``,
``cond_stage_model.transformer.*``), ComfyUI diffusion-model files and BFL/Wan native files.
Tensors are read only when asked for (DoRA needs the base weight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .architectures.engine import KeyPlacer, Stem
from .architectures.spec import ArchTable, Branch, Placement
from .formats.align import branch_for
from .formats.files import read_header

_PREFIXES: tuple[tuple[str, Branch], ...] = (
    ("model.diffusion_model.", Branch.DENOISER),
    ("diffusion_model.", Branch.DENOISER),
    ("conditioner.embedders.0.transformer.", Branch.TE1),
    ("conditioner.embedders.1.transformer.", Branch.TE2),
    ("cond_stage_model.transformer.", Branch.TE1),
    ("text_encoders.clip_l.transformer.", Branch.TE1),
    ("text_encoders.clip_g.transformer.", Branch.TE2),
    ("text_encoders.t5xxl.transformer.", Branch.TE3),
    ("text_encoder_2.", Branch.TE2),
    ("text_encoder_3.", Branch.TE3),
    ("text_encoder.", Branch.TE1),
    ("te1.", Branch.TE1),
    ("te2.", Branch.TE2),
    ("te3.", Branch.TE3),
    ("unet.", Branch.DENOISER),
    ("transformer.", Branch.DENOISER),
    ("", Branch.DENOISER),
)


@dataclass
class BaseModel:
    """Canonical targets of a base model: ``module`` and, for fused weights, ``module#component``."""

    path: Path
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # target -> weight shape
    keys: dict[str, tuple[str, slice | None]] = field(default_factory=dict)  # target -> (tensor key, rows)

    @classmethod
    def open(cls, path: str | Path, table: ArchTable | None) -> BaseModel:
        header, _ = read_header(Path(path))
        model = cls(Path(path))
        placer = KeyPlacer(table) if table else None
        for key, info in header.items():
            if not key.endswith(".weight"):
                continue
            placement = placement_of(key[: -len(".weight")], table, placer)
            if placement is not None:
                model._add(key, placement, tuple(int(s) for s in info["shape"]), table)
        return model

    def _add(self, key: str, placement: Placement, shape: tuple[int, ...], table: ArchTable | None) -> None:
        self.shapes[placement.key] = shape
        self.keys[placement.key] = (key, None)
        fused = table.modules.get(placement.module) if table else None
        if fused is not None and placement.component is None and shape[0] % sum(s for _, s in fused.components) == 0:
            for name, rows in fused.slices(shape[0]).items():
                target = Placement(placement.module, name).key
                self.shapes[target] = (rows.stop - rows.start, *shape[1:])
                self.keys[target] = (key, rows)

    def weight(self, target: str) -> torch.Tensor | None:
        """The base weight of a target (``module`` or ``module#component``), read from disk."""
        found = self.keys.get(target)
        if found is None:
            return None
        key, rows = found
        with safe_open(str(self.path), framework="pt") as fh:
            w = fh.get_tensor(key)
        return w if rows is None else w[rows]


def checkpoint_stem(path: str) -> Stem:
    """The stem a checkpoint tensor's module path gives for detection: its first matching prefix."""
    for prefix, branch in _PREFIXES:
        if path.startswith(prefix):
            return Stem(branch, path[len(prefix) :], dotted=True)
    raise AssertionError("the empty prefix matches every path")


def placement_of(path: str, table: ArchTable | None, placer: KeyPlacer | None) -> Placement | None:
    for prefix, branch in _PREFIXES:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        if placer is None:
            return Placement(f"{branch.value}.{rest}")
        branch = branch_for(table, prefix, branch) if prefix.startswith("text_encoder") else branch
        placement = placer.place(Stem(branch, rest, dotted=True))
        if placement is not None:
            return placement
    return None
