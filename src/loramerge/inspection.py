"""`inspect`: what a LoRA file holds, which architecture it is for, and what does not fit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import architectures as A
from .basemodel import BaseModel
from .enums import UNKNOWN_ARCH
from .formats.align import Alignment, align, detect
from .formats.reader import AdapterFile

_META_SHOWN = (
    "ss_base_model_version",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_output_name",
    "ss_training_comment",
    "modelspec.architecture",
    "modelspec.title",
    "loramerge.version",
    "loramerge.format",
    "loramerge.architecture",
)


@dataclass
class FileSummary:
    path: str
    format: str
    architecture: str
    confidence: float
    detection_reason: str
    adapter_kinds: dict[str, int]
    modules: int
    groups: int
    rank_min: int | None
    rank_max: int | None
    alphas: list[float]
    dtypes: dict[str, int]
    size_bytes: int
    metadata: dict[str, str]
    unplaced_keys: list[str]
    base_missing: list[str] = field(default_factory=list)
    base_mismatched: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def open_and_align(
    path: str | Path, *, arch: str | None = None, strict: bool = False, allow_pickle: bool = False
) -> tuple[AdapterFile, Alignment, A.Detection]:
    file = AdapterFile(path, allow_pickle=allow_pickle)
    detection = detect([file])
    name = arch or detection.architecture
    table = None if name == UNKNOWN_ARCH else A.get_table(name)
    alignment = align(file, table, A.placer(name) if table else None, strict=strict)
    return file, alignment, detection


def inspect_file(
    path: str | Path, *, arch: str | None = None, base: str | Path | None = None, allow_pickle: bool = False
) -> FileSummary:
    file, alignment, detection = open_and_align(path, arch=arch, allow_pickle=allow_pickle)
    ranks = [r for r in (file.rank(e) for e in file.entries.values()) if r is not None]
    alphas = sorted({round(a, 6) for a in (file.alpha(e) for e in file.entries.values()) if a is not None})
    summary = FileSummary(
        path=str(path),
        format=file.format,
        architecture=alignment.architecture,
        confidence=1.0 if arch else round(detection.confidence, 3),
        detection_reason="given with --arch" if arch else detection.reason,
        adapter_kinds=file.kinds,
        modules=alignment.modules,
        groups=len(alignment.groups),
        rank_min=min(ranks, default=None),
        rank_max=max(ranks, default=None),
        alphas=alphas,
        dtypes=file.dtypes,
        size_bytes=file.size_bytes,
        metadata={k: _short(file.metadata[k]) for k in _META_SHOWN if k in file.metadata}
        | ({"lora_adapter_metadata": "present"} if "lora_adapter_metadata" in file.metadata else {}),
        unplaced_keys=list(alignment.unplaced),
    )
    if base is not None:
        table = None if alignment.architecture == UNKNOWN_ARCH else A.get_table(alignment.architecture)
        summary.base_missing, summary.base_mismatched = check_against_base(alignment, BaseModel.open(base, table))
    return summary


def check_against_base(alignment: Alignment, base: BaseModel) -> tuple[list[str], list[str]]:
    """Targets the base model lacks, and targets whose ΔW shape differs from the base weight."""
    missing, mismatched = [], []
    for group, contributions in alignment.groups.items():
        c = contributions[0]
        if c.param != "weight":
            continue
        target = c.base_target
        if target not in base.shapes:
            missing.append(group)
            continue
        want = base.shapes[target]
        got = _delta_shape(alignment.file, c.entry)
        if got is None:
            continue
        rows_ok = got[0] == want[0]
        cols_ok = _numel(got[1:]) == _numel(want[1:])
        if not (rows_ok and cols_ok):
            mismatched.append(f"{group}: LoRA {list(got)} vs base {list(want)}")
    return missing, mismatched


def _delta_shape(file: AdapterFile, entry) -> tuple[int, ...] | None:
    shapes = {role: file.source.shapes[key] for role, key in entry.roles.items()}
    if "up" in shapes and "down" in shapes:
        down = shapes["down"] if "mid" not in shapes else (shapes["down"][0], shapes["down"][1], *shapes["mid"][2:])
        return (shapes["up"][0], *down[1:])
    if "diff" in shapes:
        return tuple(shapes["diff"])
    return None


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _short(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def block_rows(architecture: str, keys: list[str] | None = None) -> list[tuple[str, int | None]]:
    """The architecture's blocks in order (`architectures/blocks.py`), each with how many of `keys`
    (a file's groups) it holds; ``("(no block)", n)`` last when some keys are in no block.
    LoraMergeError when the architecture has no block layout."""
    from .architectures.blocks import layout_of, layouts
    from .errors import LoraMergeError

    layout = layout_of(architecture)
    if layout is None:
        raise LoraMergeError(
            f"architecture '{architecture}' has no block layout (block weights work for: {', '.join(layouts())})"
        )
    if keys is None:
        return [(b, None) for b in layout.blocks]
    counts: dict[str | None, int] = {}
    for key in keys:
        block = layout.block_of(key.split("#", 1)[0])
        counts[block] = counts.get(block, 0) + 1
    rows: list[tuple[str, int | None]] = [(b, counts.get(b, 0)) for b in layout.blocks]
    return rows + ([("(no block: weight 1)", counts[None])] if None in counts else [])
