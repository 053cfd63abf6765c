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
from .architectures.spec import ArchTable, Branch
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
    ("unet.", Branch.DENOISER),
    ("transformer.", Branch.DENOISER),
    ("", Branch.DENOISER),
)


@dataclass
class BaseModel:
    path: Path
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # canonical module -> weight shape
    keys: dict[str, str] = field(default_factory=dict)                # canonical module -> tensor key

    @classmethod
    def open(cls, path: str | Path, table: ArchTable | None) -> BaseModel:
        header, _ = read_header(Path(path))
        model = cls(Path(path))
        placer = KeyPlacer(table) if table else None
        for key, info in header.items():
            if not key.endswith(".weight"):
                continue
            module = _module_of(key[: -len(".weight")], table, placer)
            if module is not None:
                model.shapes[module] = tuple(int(s) for s in info["shape"])
                model.keys[module] = key
        return model

    def weight(self, module: str) -> torch.Tensor | None:
        key = self.keys.get(module)
        if key is None:
            return None
        with safe_open(str(self.path), framework="pt") as fh:
            return fh.get_tensor(key)


def _module_of(path: str, table: ArchTable | None, placer: KeyPlacer | None) -> str | None:
    for prefix, branch in _PREFIXES:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if placer is None:
            return f"{branch.value}.{rest}"
        placement = placer.place(Stem(branch, rest, dotted=True))
        if placement is not None and placement.component is None:
            return placement.module
    return None
