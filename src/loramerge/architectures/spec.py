"""Declarative description of an architecture's adaptable modules and their many spellings.

One `ArchTable` per model family. Every row says: in branch B, the dotted path P (as some trainer
writes it) is the canonical module M (optionally one component slice of a fused weight). The
single engine in `engine.py` applies any table; tables hold data only.

Canonical names are the native module names the model itself uses, prefixed by the branch:
``diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q`` (denoiser),
``te1.text_model.encoder.layers.0.self_attn.q_proj`` (first text encoder), ``te2.``, ``te3.``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum


class Branch(str, Enum):
    """Which network of the pipeline a module belongs to."""

    DENOISER = "diffusion_model"
    TE1 = "te1"
    TE2 = "te2"
    TE3 = "te3"

    @property
    def is_text_encoder(self) -> bool:
        return self is not Branch.DENOISER


class Style(str, Enum):
    """Which naming family an alias row belongs to (the writers pick rows by style)."""

    NATIVE = "native"  # the model's own names (LDM for SD, BFL for FLUX, Wan-native, ...)
    DIFFUSERS = "diffusers"  # diffusers/transformers module paths
    OTHER = "other"  # any further spelling seen in the wild (read-only)


@dataclass(frozen=True)
class Fused:
    """Row layout of a fused weight: ordered components and their relative row shares.

    FLUX ``img_attn.qkv`` is ``(("q",1),("k",1),("v",1))``; FLUX ``single_blocks.N.linear1`` is
    ``(("q",1),("k",1),("v",1),("mlp",4))``.
    """

    components: tuple[tuple[str, int], ...]

    def slices(self, rows: int) -> dict[str, slice]:
        total = sum(share for _, share in self.components)
        if rows % total:
            raise ValueError(f"{rows} rows cannot be split in shares {self.components}")
        unit = rows // total
        out: dict[str, slice] = {}
        start = 0
        for name, share in self.components:
            out[name] = slice(start, start + share * unit)
            start += share * unit
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.components)


@dataclass(frozen=True)
class Placement:
    """Where an input key lands: a canonical module, or one component of a fused one."""

    module: str
    component: str | None = None

    @property
    def key(self) -> str:
        """The group key: ``module`` or ``module#component``."""
        return self.module if self.component is None else f"{self.module}#{self.component}"

    @property
    def branch(self) -> Branch:
        return Branch(self.module.split(".", 1)[0])

    @property
    def native_path(self) -> str:
        return self.module.split(".", 1)[1]


@dataclass(frozen=True)
class Alias:
    """One spelling of a module: (branch, dotted path as written, style) -> placement."""

    branch: Branch
    path: str
    placement: Placement
    style: Style


@dataclass(frozen=True)
class ArchTable:
    """All adaptable modules of one architecture and every alias that names them.

    ``modules``: canonical module name -> its fused layout (None when not fused).
    ``aliases``: every non-native spelling (the native path of each module is implied).
    ``markers``: dotted-path substrings specific to this family, used only to break ties in
    detection (e.g. FLUX ``single_transformer_blocks`` vs Qwen-Image).
    ``priority``: higher wins a tie of placed-key counts (more specific families higher).
    """

    name: str
    preset: str
    modules: Mapping[str, Fused | None]
    aliases: tuple[Alias, ...] = ()
    markers: tuple[str, ...] = ()
    priority: int = 0
    diffusers_prefix: Mapping[Branch, str] = field(default_factory=dict)
    kohya_prefix: Mapping[Branch, str] = field(default_factory=dict)
    family: str = ""  # human name, e.g. "Stable Diffusion XL"
    # Branches whose kohya names are built from another spelling than the native path (kohya SD1.x
    # writes the UNet's diffusers paths: lora_unet_down_blocks_0_attentions_0_...).
    kohya_style: Mapping[Branch, Style] = field(default_factory=dict)
    # Branches whose ``--format comfy`` names are another spelling than the native path: the host's
    # own module names where ComfyUI renames the checkpoint on load and maps LoRA keys only partly
    # from the original names (HunyuanVideo). Modules without an alias of that style stay native.
    comfy_style: Mapping[Branch, Style] = field(default_factory=dict)

    def all_aliases(self) -> Iterable[Alias]:
        """Native rows (implied) first, then the declared aliases."""
        for module in self.modules:
            branch, path = module.split(".", 1)
            yield Alias(Branch(branch), path, Placement(module), Style.NATIVE)
        yield from self.aliases
