"""Place every module of an `AdapterFile` in the canonical key space of one architecture.

Every entry is either placed or reported: strict mode (the library default) raises with the list
of unplaced keys; lenient mode keeps going and reports them. Fused modules written whole (kohya
FLUX ``img_attn_qkv``) are split into their component groups here; the writer re-fuses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..architectures.engine import KeyPlacer, Stem
from ..architectures.spec import ArchTable, Branch, Placement
from ..enums import UNKNOWN_ARCH
from ..errors import InputFileError, UnplacedKeysError
from ..patches import Dense, LowRank, Patch
from .reader import AdapterFile, ModuleEntry


@dataclass(frozen=True)
class Contribution:
    """One module entry of one file landing on one group."""

    entry: ModuleEntry
    placement: Placement
    param: str = "weight"  # "weight" | "bias"
    sliced: bool = False  # the entry names the whole fused module: take this component's rows

    @property
    def group(self) -> str:
        return group_key(self.placement, self.param)

    @property
    def base_target(self) -> str:
        """The base weight this entry's ΔW is relative to (DoRA): the whole fused module when sliced."""
        return self.placement.module if self.sliced else self.placement.key


def group_key(placement: Placement, param: str = "weight") -> str:
    return placement.key if param == "weight" else f"{placement.key}:{param}"


@dataclass
class Alignment:
    file: AdapterFile
    architecture: str
    groups: dict[str, list[Contribution]] = field(default_factory=dict)
    unplaced: list[str] = field(default_factory=list)
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)  # module -> component names

    @property
    def modules(self) -> int:
        return len({c.placement.module for cs in self.groups.values() for c in cs})


def branch_for(table: ArchTable | None, parsed_prefix: str, default: Branch) -> Branch:
    """Resolve a diffusers/kohya component prefix through the table (FLUX's text_encoder_2 is T5 = te3)."""
    if table is not None:
        token = parsed_prefix.rstrip("._")
        for branch, prefix in {**table.diffusers_prefix, **table.kohya_prefix}.items():
            if prefix == token:
                return branch
    return default


def stems_of(file: AdapterFile) -> list[Stem]:
    return [e.parsed.stem for e in file.entries.values() if e.parsed is not None]


def align(file: AdapterFile, table: ArchTable | None, placer: KeyPlacer | None, *, strict: bool = True) -> Alignment:
    """Place `file`'s entries with `table` (None: architecture 'unknown', modules keep their own names)."""
    out = Alignment(file, table.name if table else UNKNOWN_ARCH)
    out.unplaced.extend(file.unparsed)
    for entry in file.entries.values():
        placement = _place(entry, table, placer)
        if placement is None:
            out.unplaced.append(entry.stem)
            continue
        fused = table.modules.get(placement.module) if table else None
        params = _params(entry)
        if fused is not None and placement.component is None:
            out.fused[placement.module] = fused.names
            for name in fused.names:
                for param in params:
                    _add(out, Contribution(entry, Placement(placement.module, name), param, sliced=True))
        else:
            if fused is not None:
                out.fused[placement.module] = fused.names
            for param in params:
                _add(out, Contribution(entry, placement, param))
    if strict and out.unplaced:
        raise UnplacedKeysError(file.path, out.unplaced, out.architecture)
    return out


def _place(entry: ModuleEntry, table: ArchTable | None, placer: KeyPlacer | None) -> Placement | None:
    if entry.parsed is None:
        return None
    stem = entry.parsed.stem
    if table is None or placer is None:
        return Placement(f"{stem.branch.value}.{stem.path}")
    branch = branch_for(table, entry.parsed.prefix, stem.branch)
    return placer.place(Stem(branch, stem.path, stem.dotted))


def _params(entry: ModuleEntry) -> list[str]:
    roles = set(entry.roles)
    params = []
    if roles & {"down", "hada_w1_a", "lokr_w1", "lokr_w1_a", "diff", "w_norm"}:
        params.append("weight")
    if roles & {"diff_b", "b_norm"}:
        params.append("bias")
    return params


def _add(out: Alignment, contribution: Contribution) -> None:
    out.groups.setdefault(contribution.group, []).append(contribution)


def load_group(
    alignment: Alignment, table: ArchTable | None, group: str, base_weight: torch.Tensor | None = None
) -> Patch:
    """ΔW of one group from one file: aliases summed, fused components sliced out (float32)."""
    total: Patch | None = None
    for c in alignment.groups[group]:
        patch = alignment.file.patches(c.entry, base_weight)[c.param]
        fused = table.modules.get(c.placement.module) if table else None
        if c.sliced and fused is not None and c.placement.component is not None:
            patch = _slice_rows(patch, fused.slices(_rows(patch))[c.placement.component])
        total = patch if total is None else add_patches(total, patch)
    assert total is not None
    return total


def group_shape(alignment: Alignment, table: ArchTable | None, group: str) -> tuple[int, int]:
    """(rows, columns) of the ΔW `load_group` gives for `group`, from the header alone; aliases that
    disagree, or a fused module that cannot be split, are errors naming the file and key."""
    found: tuple[int, int] | None = None
    for c in alignment.groups[group]:
        shape = alignment.file.delta_shapes(c.entry)[c.param]
        rows = shape[0]
        fused = table.modules.get(c.placement.module) if table else None
        if c.sliced and fused is not None and c.placement.component is not None:
            try:
                part = fused.slices(rows)[c.placement.component]
            except ValueError as exc:
                raise InputFileError(
                    alignment.file.path,
                    f"fused module cannot be split into {', '.join(fused.names)}: {exc}",
                    key=c.entry.stem,
                    hint="the file is corrupt, or is for another architecture (check --arch)",
                ) from exc
            rows = part.stop - part.start
        mine = (rows, math.prod(shape[1:]))
        if found is not None and mine != found:
            raise InputFileError(
                alignment.file.path,
                f"two spellings of one module give ΔW {list(found)} and {list(mine)}",
                key=c.entry.stem,
                hint="the file holds the same module twice with different shapes; remove one",
            )
        found = mine
    assert found is not None
    return found


def _rows(patch: Patch) -> int:
    return patch.out_features if isinstance(patch, LowRank) else int(patch.delta.shape[0])


def _slice_rows(patch: Patch, rows: slice) -> Patch:
    if isinstance(patch, LowRank):
        shape = None if patch.shape is None else (rows.stop - rows.start, *patch.shape[1:])
        return LowRank(patch.up[rows], patch.down, patch.scale, shape)
    return Dense(patch.delta[rows])


def add_patches(a: Patch, b: Patch) -> Patch:
    """Exact sum of two patches of one group (low-rank stays low-rank by concatenation)."""
    if isinstance(a, LowRank) and isinstance(b, LowRank) and a.shape == b.shape:
        up = torch.cat([a.up * a.scale, b.up * b.scale], dim=1)
        return LowRank(up, torch.cat([a.down, b.down], dim=0), 1.0, a.shape)
    da, db = a.dense(), b.dense()
    if da.numel() != db.numel():
        raise InputFileError(
            "<aliases>", f"two spellings of one module have different sizes {tuple(da.shape)} vs {tuple(db.shape)}"
        )
    return Dense(da + db.reshape(da.shape))


def detect_and_align(file: AdapterFile, arch: str | None = None, *, strict: bool = True) -> Alignment:
    """Detect the architecture (unless given) and align; 'unknown' keeps the file's own names."""
    from .. import architectures as A

    name = arch or detect([file]).architecture
    if name == UNKNOWN_ARCH:
        return align(file, None, None, strict=strict)
    return align(file, A.get_table(name), A.placer(name), strict=strict)


RECORDED_ARCH = "loramerge.architecture"  # metadata key loramerge's writer records the table in


def detect(files: Sequence[AdapterFile]):
    """The architecture of `files` together (`architectures.detect`); a tie of placed keys goes to
    the architecture every file records in its loramerge metadata, when they all record the same."""
    from .. import architectures as A

    recorded = {f.metadata.get(RECORDED_ARCH) for f in files}
    name = recorded.pop() if len(recorded) == 1 else None
    return A.detect([s for f in files for s in stems_of(f)], recorded=name)
