"""Block layouts: which block each canonical module belongs to, the accepted weight-vector forms and
the named presets, per architecture (A1111 "LoRA Block Weight" compatible for SD1.x, SDXL, FLUX).

A block-weight vector lists one weight per block of a *form*. Blocks a short form leaves out get
weight 0 (as A1111's extension expands a 17-value SD1.x vector to its 26 blocks); modules that are
in no block (SD's ``time_embed``, ``out``, ``label_emb``) keep weight 1, as there. Named presets are
written in the full form (every block): on the blocks of A1111's short form they equal its preset
list; the blocks it leaves out (SD1.x IN00/IN03/IN06/IN09-11/OUT00-02: conv-in, down-samplers and
attention-free resnets, touched only by LoCon-style LoRAs) go with their region (OUTALL keeps
OUT00-02, INS keeps IN00/IN03, ...), so a preset never silently drops part of a region.

Forms (the block names in order; `docs/BLOCK_WEIGHTS.md` has the table):

- sd15: 17 values ``BASE IN01 IN02 IN04 IN05 IN07 IN08 M00 OUT03 … OUT11`` or 26 ``BASE IN00 … IN11 M00
  OUT00 … OUT11``; sdxl: 12 values ``BASE IN04 IN05 IN07 IN08 M00 OUT00 … OUT05`` or 20 ``BASE IN00 … IN08
  M00 OUT00 … OUT08``. ``BASE`` is every text encoder.
- flux: 61 values ``CLIP T5 IN D00 … D18 S00 … S37 OUT`` (as A1111's FLUX form).
- the DiTs by block index: ``IN``, one name per block (``B00`` …; HunyuanVideo ``D00 … D19 S00 … S39``,
  Z-Image ``L00 … L29``), ``OUT``. ``IN`` is every module before the blocks (embedders, refiners),
  ``OUT`` the final layer. Wan takes 42 values (14B, 40 blocks) or 32 (1.3B/5B, 30 blocks); LTX 50
  (13B) or 30 (2B).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import InputFileError, LoraMergeError
from . import flux, hunyuan_video, ltx, qwen_image, wan, zimage
from .sd import SD15_STRUCTURE, SDXL_STRUCTURE, UNetStructure

# SD preset name -> the regions it keeps at 1 (with BASE), as A1111's preset list
_SD_PRESETS: dict[str, tuple[str, ...]] = {
    "INS": ("INS",),
    "IND": ("IND",),
    "INALL": ("INS", "IND"),
    "MIDD": ("IND", "MID", "OUTD"),
    "OUTD": ("OUTD",),
    "OUTS": ("OUTS",),
    "OUTALL": ("OUTD", "OUTS"),
}


@dataclass(frozen=True)
class BlockLayout:
    """The blocks of one architecture. ``forms`` are the accepted vectors' block names (the longest is
    every block; presets are written in it). ``block_of`` places a canonical group key."""

    architecture: str
    forms: tuple[tuple[str, ...], ...]
    block_of: Callable[[str], str | None]
    presets: dict[str, tuple[float, ...]]

    @property
    def blocks(self) -> tuple[str, ...]:
        """Every block name (the longest form)."""
        return max(self.forms, key=len)

    def form(self, n: int) -> tuple[str, ...] | None:
        return next((f for f in self.forms if len(f) == n), None)

    def expand(self, values: tuple[float, ...]) -> dict[str, float] | None:
        """Weights of every block from a vector of one of the forms (None: no form has that length)."""
        names = self.form(len(values))
        if names is None:
            return None
        weights = dict.fromkeys(self.blocks, 0.0)
        weights.update(zip(names, values))
        return weights

    def __post_init__(self):
        assert all(set(f) <= set(self.blocks) for f in self.forms), self.architecture

    def describe(self) -> str:
        lines = [f"{len(f)} values: {' '.join(f)}" for f in self.forms]
        return "\n  ".join(lines + [f"presets: {', '.join(self.presets)}"])


def _sd_blocks(s: UNetStructure) -> tuple[str, ...]:
    n = (s.layers_per_block + 1) * len(s.channel_mult)
    return ("BASE", *(f"IN{i:02d}" for i in range(n)), "M00", *(f"OUT{i:02d}" for i in range(n)))


def _sd_block_of(key: str) -> str | None:
    if not key.startswith("diffusion_model."):
        return "BASE"
    m = re.match(r"diffusion_model\.(input_blocks|middle_block|output_blocks)\.(\d+)", key)
    if m is None:
        return None
    kind, n = m.group(1), int(m.group(2))
    return "M00" if kind == "middle_block" else f"{'IN' if kind == 'input_blocks' else 'OUT'}{n:02d}"


def _sd_layout(name: str, s: UNetStructure, primary: tuple[str, ...], regions: dict[str, tuple[str, ...]]):
    full = _sd_blocks(s)

    def vector(on: set[str], value: float = 1.0) -> tuple[float, ...]:
        return tuple(value if b in on else 0.0 for b in full)

    presets = {"NONE": vector(set()), "ALL": vector(set(full)), "ALL0.5": vector(set(full), 0.5)}
    for preset, parts in _SD_PRESETS.items():
        presets[preset] = vector({"BASE", *(b for p in parts for b in regions[p])})
    presets |= _single_presets(full)
    return BlockLayout(name, (primary, full), _sd_block_of, presets)


def _single_presets(primary: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """``IN05`` = only that block, ``NIN05`` = every block but that one (A1111's per-block presets)."""
    out = {}
    for b in primary:
        out[b] = tuple(1.0 if x == b else 0.0 for x in primary)
        out[f"N{b}"] = tuple(0.0 if x == b else 1.0 for x in primary)
    return out


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in range(n))


def _dit_layout(
    name: str,
    families: tuple[tuple[str, str, int], ...],
    out: str,
    te: tuple[tuple[str, str], ...] = (),
    smaller: tuple[int, ...] = (),
) -> BlockLayout:
    """A DiT: text encoders (branch prefix -> block name), ``IN``, the block families (regex of the
    native path with one index group, name prefix, count), ``OUT`` (regex of the final layer).
    `smaller`: block counts of smaller variants of a one-family model (Wan 1.3B: 30 of 40), each
    a form of its own."""

    def form(counts: list[int]) -> tuple[str, ...]:
        inner = (n for (_, p, _), c in zip(families, counts) for n in _names(p, c))
        return (*(b for _, b in te), "IN", *inner, "OUT")

    blocks = form([c for _, _, c in families])

    def block_of(key: str) -> str | None:
        branch, _, path = key.partition(".")
        if branch != "diffusion_model":
            return dict(te).get(branch)
        for pattern, prefix, _ in families:
            m = re.match(pattern, path)
            if m:
                return f"{prefix}{int(m.group(1)):02d}"
        return "OUT" if re.match(out, path) else "IN"

    presets = {"NONE": (0.0,) * len(blocks), "ALL": (1.0,) * len(blocks), "ALL0.5": (0.5,) * len(blocks)}
    for _, prefix, count in families if len(families) > 1 else ():  # one family only, text encoders kept
        on = {*_names(prefix, count), *(b for _, b in te)}
        presets[{"D": "DOUBLE", "S": "SINGLE"}[prefix]] = tuple(float(b in on) for b in blocks)
    presets |= _single_presets(blocks)
    return BlockLayout(name, (blocks, *(form([n]) for n in smaller)), block_of, presets)


def _layouts() -> dict[str, BlockLayout]:
    sd15_full, sdxl_full = _sd_blocks(SD15_STRUCTURE), _sd_blocks(SDXL_STRUCTURE)
    sd15 = _sd_layout(
        "sd15",
        SD15_STRUCTURE,
        ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", *_names("OUT", 12)[3:]),
        {
            "INS": sd15_full[1:6],  # IN00-IN04
            "IND": sd15_full[6:13],  # IN05-IN11
            "MID": ("M00",),
            "OUTD": _names("OUT", 7),  # OUT00-OUT06
            "OUTS": _names("OUT", 12)[7:],  # OUT07-OUT11
        },
    )
    sdxl = _sd_layout(
        "sdxl",
        SDXL_STRUCTURE,
        ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", *_names("OUT", 6)),
        {
            "INS": sdxl_full[1:7],  # IN00-IN05
            "IND": sdxl_full[7:10],  # IN06-IN08
            "MID": ("M00",),
            "OUTD": _names("OUT", 3),  # OUT00-OUT02
            "OUTS": _names("OUT", 9)[3:],  # OUT03-OUT08
        },
    )
    dits = [
        _dit_layout(
            "flux",
            (
                (r"double_blocks\.(\d+)\.", "D", flux.DOUBLE_BLOCKS),
                (r"single_blocks\.(\d+)\.", "S", flux.SINGLE_BLOCKS),
            ),
            r"final_layer\.",
            te=(("te1", "CLIP"), ("te3", "T5")),
        ),
        _dit_layout(
            "hunyuan_video",
            (
                (r"double_blocks\.(\d+)\.", "D", hunyuan_video.DOUBLE_BLOCKS),
                (r"single_blocks\.(\d+)\.", "S", hunyuan_video.SINGLE_BLOCKS),
            ),
            r"final_layer\.",
        ),
        _dit_layout("wan", ((r"blocks\.(\d+)\.", "B", wan.BLOCKS),), r"head\.", smaller=(wan.SMALL_BLOCKS,)),
        _dit_layout(
            "ltx", ((r"transformer_blocks\.(\d+)\.", "B", ltx.BLOCKS),), r"proj_out", smaller=(ltx.SMALL_BLOCKS,)
        ),
        _dit_layout("qwen_image", ((r"transformer_blocks\.(\d+)\.", "B", qwen_image.BLOCKS),), r"(norm_out|proj_out)"),
        _dit_layout("zimage", ((r"layers\.(\d+)\.", "L", zimage.LAYERS),), r"final_layer\."),
    ]
    return {layout.architecture: layout for layout in (sd15, sdxl, *dits)}


@cache
def layouts() -> dict[str, BlockLayout]:
    """Every architecture's block layout (architectures without one take no block weights)."""
    return _layouts()


def layout_of(architecture: str) -> BlockLayout | None:
    return layouts().get(architecture)


def read_presets(path: str | Path) -> dict[str, tuple[float, ...]]:
    """User presets: one ``NAME:v1,v2,...`` per line; blank lines and lines starting with ``#`` are
    skipped (A1111's lbwpresets.txt reads the same). Which architecture a preset fits is its length."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read block-weight presets: {exc}") from exc
    presets: dict[str, tuple[float, ...]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, values = line.partition(":")
        try:
            vector = tuple(float(v) for v in values.split(","))
        except ValueError:
            vector = ()
        if not sep or not name.strip() or not vector or not all(math.isfinite(v) for v in vector):
            raise InputFileError(path, f"line {n} is not NAME:v1,v2,...: {line!r}", hint="numbers separated by commas")
        if name.strip().upper() in presets:
            raise InputFileError(path, f"line {n}: preset {name.strip()!r} is defined twice")
        presets[name.strip().upper()] = vector
    return presets


def resolve(
    spec: str, layout: BlockLayout | None, architecture: str, user: dict[str, tuple[float, ...]], where: str
) -> dict[str, float]:
    """The weight of every block of `layout` for ``@spec`` (a preset name or a vector), or a
    LoraMergeError that names `where` and lists the expected blocks of the architecture."""
    if layout is None:
        known = ", ".join(layouts())
        raise LoraMergeError(
            f"{where}: block weights '@{spec}' given, but architecture '{architecture}' has no block layout\n"
            f"  -> block weights work for: {known}"
        )
    if re.fullmatch(r"[A-Za-z][\w.+-]*", spec):
        vector = user.get(spec.upper()) or layout.presets.get(spec.upper())
        if vector is None:
            raise LoraMergeError(
                f"{where}: unknown block-weight preset '{spec}' for {architecture}\n  {layout.describe()}\n"
                "  -> give one of these presets, a vector, or your own presets with --block-weights-file"
            )
    else:
        vector = tuple(float(v) for v in spec.split(","))
    weights = layout.expand(vector)
    if weights is None:
        raise LoraMergeError(
            f"{where}: block weights '@{spec}' have {len(vector)} values; {architecture} takes\n  {layout.describe()}"
        )
    return weights
