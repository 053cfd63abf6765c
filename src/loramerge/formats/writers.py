"""Writing patches as a LoRA file in the form a client loads (FORMATS.md, 'Which outputs load where').

- ``kohya`` (default): native module names, ``lora_down/lora_up`` + ``.alpha`` tensors, fused
  projections re-fused; dense content as LyCORIS ``diff``/``diff_b``/``w_norm``/``b_norm``
  (ComfyUI and A1111/Forge load those).
- ``diffusers``: PEFT keys on diffusers module paths, scale baked in (alpha = rank),
  ``lora_adapter_metadata``; dense content is factorised by SVD and its error reported; norm and
  bias deltas cannot be held and are refused (or listed, with ``lossy=True``).
- ``comfy``: ``diffusion_model.<native>`` with ``lora_A/lora_B`` + ``.alpha`` (ComfyUI's own module
  names instead where the table's ``comfy_style`` says so: HunyuanVideo); text encoders keep kohya
  names (ComfyUI loads both).
Writes are atomic: a temporary file in the target folder, renamed into place on success only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..architectures.spec import ArchTable, Branch, Placement, Style
from ..compress import to_lowrank
from ..enums import OutputFormat
from ..errors import OutputError
from ..patches import Dense, LowRank, Patch
from ..spool import PatchLike, materialize, rank_of
from ..threads import single_threaded_ops
from ..version import TOOL_NAME, __version__
from .align import RECORDED_ARCH
from .dialects import DIFFUSERS_PREFIX, KOHYA_PREFIX
from .kohya_meta import network_metadata
from .peft_meta import adapter_metadata
from .streaming import StreamingSafetensors, check_finite


@dataclass(frozen=True)
class OutputItem:
    placement: Placement
    param: str  # "weight" | "bias"
    patch: PatchLike  # in memory, or a handle on a spooled patch (read when its module is written)


@dataclass
class WriteReport:
    path: Path
    format: OutputFormat
    dtype: str = "float32"
    tensors: int = 0
    modules: int = 0
    conversions: dict[str, float] = field(default_factory=dict)  # module -> relative error of a dense->LoRA SVD
    widened: list[str] = field(default_factory=list)  # tensors kept in float32: out of the half range
    dropped: list[str] = field(default_factory=list)  # only with lossy=True


def write(
    path: str | Path,
    items: Iterable[OutputItem],
    table: ArchTable | None,
    fmt: OutputFormat | str,
    *,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
    lossy: bool = False,
) -> WriteReport:
    """Write `items` to `path` in `fmt`; returns what was written and converted.

    Streams: one module's tensors are in memory at a time (items may be `StoredPatch` handles, read
    back module by module), each is appended to a temporary data file as it is made, and the file
    is assembled (header, then data) and renamed into place at the end."""
    fmt = OutputFormat(fmt)
    report = WriteReport(Path(path), fmt, dtype=str(dtype).removeprefix("torch."))
    try:
        return _write(Path(path), items, table, fmt, report, metadata, dtype, lossy)
    except OSError as exc:  # a full disk, a vanished folder, an I/O error: the temporary files are gone
        raise OutputError(
            f"{path}: cannot write the file ({exc.strerror or exc}); free space or choose another folder; "
            "nothing was written"
        ) from exc


def _write(path: Path, items, table, fmt: OutputFormat, report: WriteReport, metadata, dtype, lossy) -> WriteReport:
    # per-tensor work is small: one intra-op thread (no OpenMP spinning when other processes use the cores)
    with single_threaded_ops(), StreamingSafetensors(path, dtype) as out:
        extra_meta = _build(items, table, fmt, report, lossy, out.add)
        report.widened = list(out.widened)
        if not out.count:
            raise OutputError(f"{path}: nothing to write (every module was empty or dropped)")
        out.commit(
            {
                "loramerge.tool": TOOL_NAME,
                "loramerge.version": __version__,
                "loramerge.format": fmt.value,
                RECORDED_ARCH: table.name if table else "unknown",
                **extra_meta,
                **(metadata or {}),
            }
        )
    report.tensors = out.count
    return report


def tensors_for(
    items: Iterable[OutputItem],
    table: ArchTable | None,
    fmt: OutputFormat | str,
    *,
    dtype: torch.dtype = torch.float32,
    lossy: bool = False,
) -> dict[str, torch.Tensor]:
    """The tensors `write` would save for `items` in `fmt` (same names, same values), in memory only:
    for hosts that load a LoRA state dict directly, e.g. ComfyUI's ``comfy.lora.load_lora``."""
    fmt = OutputFormat(fmt)
    out: dict[str, torch.Tensor] = {}

    def emit(name: str, tensor: torch.Tensor) -> None:
        if name in out:
            raise OutputError(f"two tensors named '{name}' in one output")
        check_finite("the merged LoRA", name, tensor)
        out[name] = tensor.detach().to("cpu", dtype).contiguous()

    _build(items, table, fmt, WriteReport(Path(), fmt), lossy, emit)
    return dict(sorted(out.items()))


Emit = Callable[[str, torch.Tensor], None]


def _build(items, table, fmt: OutputFormat, report: WriteReport, lossy: bool, emit: Emit) -> dict[str, str]:
    """Emit the tensors of `items` in `fmt`; returns extra metadata. The one place that dispatches on the format."""
    builder = {OutputFormat.KOHYA: _kohya, OutputFormat.COMFY: _comfy, OutputFormat.DIFFUSERS: _diffusers}[fmt]
    return builder(_refuse_duplicates(list(items)), table, report, lossy, emit)


def _refuse_duplicates(items: list[OutputItem]) -> list[OutputItem]:
    seen: set[tuple[str, str]] = set()
    for it in items:
        key = (it.placement.key, it.param)
        if key in seen:
            raise OutputError(f"two patches for one target '{it.placement.key}' ({it.param})")
        seen.add(key)
    return items


# -- grouping of fused components -----------------------------------------------------------------
def _by_module(items: list[OutputItem], table: ArchTable | None):
    """(module, param) -> list of items; fused components stay together for re-fusing."""
    grouped: dict[tuple[str, str], list[OutputItem]] = {}
    for it in items:
        grouped.setdefault((it.placement.module, it.param), []).append(it)
    return grouped


def _fuse(module: str, parts: list[OutputItem], table: ArchTable | None) -> Patch:
    """Re-fuse component patches into the module's full row layout (missing components = 0)."""
    if len(parts) == 1 and parts[0].placement.component is None:
        return materialize(parts[0].patch)
    layout = table.modules.get(module) if table else None
    if layout is None:
        raise OutputError(f"'{module}' has component patches but no fused layout in the architecture table")
    by_name = {p.placement.component: materialize(p.patch) for p in parts}
    first = next(iter(by_name.values()))
    component = parts[0].placement.component
    assert component is not None, f"'{module}': a component patch without a component name"
    unit = _rows(first) // dict(layout.components)[component]
    rows = {name: share * unit for name, share in layout.components}
    if all(isinstance(p, LowRank) for p in by_name.values()):
        return _fuse_lowrank(layout.names, rows, by_name)
    blocks = []
    for name in layout.names:
        if name in by_name:
            d = by_name[name].dense()
            blocks.append(d.reshape(d.shape[0], -1))
        else:
            width = first.dense().reshape(_rows(first), -1).shape[1]
            blocks.append(torch.zeros(rows[name], width))
    return Dense(torch.cat(blocks, 0))


def _fuse_lowrank(names, rows, by_name) -> LowRank:
    ranks = [by_name[n].rank if n in by_name else 0 for n in names]
    total_rank, total_rows = sum(ranks), sum(rows.values())
    first = next(iter(by_name.values()))
    up = torch.zeros(total_rows, total_rank)
    downs, r0, row0 = [], 0, 0
    for name, r in zip(names, ranks):
        if name in by_name:
            p = by_name[name]
            up[row0 : row0 + rows[name], r0 : r0 + r] = p.up * p.scale
            downs.append(p.down)
        row0 += rows[name]
        r0 += r
    shape = None if first.shape is None else (total_rows, *first.shape[1:])
    return LowRank(up, torch.cat(downs, 0), 1.0, shape)


def _rows(patch: Patch) -> int:
    return patch.out_features if isinstance(patch, LowRank) else int(patch.delta.shape[0])


# -- formats ----------------------------------------------------------------------------------------
def _lora_tensors(
    prefix: str, patch: LowRank, down_name: str, up_name: str, alpha: float | None = None
) -> dict[str, torch.Tensor]:
    """down/up in the weight's layout (conv: down [r,in,kh,kw], up [out,r,1,1]).

    ``alpha`` (default: the rank) is written as the ``.alpha`` tensor and the scale it implies is
    undone in ``up``, so that ``alpha/rank · up @ down`` is the patch for every client."""
    alpha = float(patch.rank) if alpha is None else float(alpha)
    up, down = patch.up * (patch.scale * patch.rank / alpha), patch.down
    if patch.shape is not None and len(patch.shape) > 2:
        down = down.reshape(patch.rank, *patch.shape[1:])
        up = up.reshape(*up.shape, *([1] * (len(patch.shape) - 2)))
    return {f"{prefix}.{down_name}": down, f"{prefix}.{up_name}": up, f"{prefix}.alpha": torch.tensor(alpha)}


def _dense_tensors(prefix: str, param: str, patch: Patch, is_norm: bool) -> dict[str, torch.Tensor]:
    name = ("w_norm" if param == "weight" else "b_norm") if is_norm else ("diff" if param == "weight" else "diff_b")
    return {f"{prefix}.{name}": patch.dense()}


def _styled_path(table: ArchTable | None, styles: Mapping[Branch, Style]) -> Callable[[str], tuple[Branch, str]]:
    """canonical module -> (branch, path): the native path, or the module's first alias in the
    style `styles` names for its branch (native where it has none)."""
    from ..architectures.engine import KeyPlacer

    placer = KeyPlacer(table) if table is not None and styles else None

    def path_of(module: str) -> tuple[Branch, str]:
        branch, path = module.split(".", 1)
        style = styles.get(Branch(branch))
        if placer is not None and style is not None:
            alias = placer.spelling(Placement(module), style)
            path = path if alias is None else alias.path
        return Branch(branch), path

    return path_of


def _kohya_namer(table: ArchTable | None) -> Callable[[str], str]:
    """canonical module -> its kohya name: the prefix of its branch and its path with underscores
    (the native path, or the spelling the table's ``kohya_style`` names for that branch)."""
    prefixes = {**KOHYA_PREFIX, **(table.kohya_prefix if table else {})}
    path_of = _styled_path(table, table.kohya_style if table is not None else {})

    def name_of(module: str) -> str:
        branch, path = path_of(module)
        return f"{prefixes[branch]}_{path.replace('.', '_')}"

    return name_of


def _native_items(
    items, table, report, lossy, emit, name_of, down_name, up_name
) -> tuple[list[int], float | None, int]:
    """Writes the native-name tensors; returns the low-rank modules' ranks, the file's alpha and
    the number of dense tensors (what ``ss_network_*`` describe)."""
    grouped = _by_module(items, table)
    alpha = _file_alpha(_fused_rank(parts) for parts in grouped.values())
    ranks: list[int] = []
    dense = 0
    for (module, param), parts in grouped.items():  # one module's tensors in memory at a time
        patch = _fuse(module, parts, table)
        prefix = name_of(module)
        if param == "weight" and isinstance(patch, LowRank):
            tensors = _lora_tensors(prefix, patch, down_name, up_name, alpha)
            ranks.append(patch.rank)
        else:
            weight = grouped.get((module, "weight"))
            is_norm = weight is not None and _is_1d_parts(weight)  # norm layers have 1-D weights
            tensors = _dense_tensors(prefix, param, patch, is_norm)
            dense += 1
        for name, tensor in tensors.items():
            emit(name, tensor)
    report.modules = len({m for m, _ in grouped})
    return ranks, alpha, dense


def _fused_rank(parts: list[OutputItem]) -> int | None:
    """Rank of the module `_fuse` makes of `parts` (Σ component ranks), from the handles alone."""
    ranks = [rank_of(p.patch) for p in parts]
    return None if any(r is None for r in ranks) else sum(r for r in ranks if r is not None)


def _file_alpha(ranks) -> float | None:
    """One alpha for the whole file: the most common rank (ties: the smallest).

    diffusers' kohya loader matches per-module alphas by names that do not match its modules and
    so applies the file's most common alpha to every module; with one alpha everywhere (and the
    scale folded into ``up``) every client computes the same ΔW."""
    ranks = [r for r in ranks if r is not None]
    if not ranks:
        return None
    return float(min(set(ranks), key=lambda r: (-ranks.count(r), r)))


def _is_1d(patch: PatchLike) -> bool:
    return rank_of(patch) is None and patch.shape is not None and len(patch.shape) == 1


def _is_1d_parts(parts: list[OutputItem]) -> bool:
    return len(parts) == 1 and parts[0].placement.component is None and _is_1d(parts[0].patch)


def _kohya(items, table, report, lossy, emit):
    ranks, alpha, dense = _native_items(
        items, table, report, lossy, emit, _kohya_namer(table), "lora_down.weight", "lora_up.weight"
    )
    return network_metadata(ranks, alpha, dense)


def _comfy(items, table, report, lossy, emit):
    kohya_name = _kohya_namer(table)
    path_of = _styled_path(table, table.comfy_style if table is not None else {})

    def name_of(module: str) -> str:
        if not module.startswith(Branch.DENOISER.value + "."):
            return kohya_name(module)
        branch, path = path_of(module)
        return f"{branch.value}.{path}"

    _native_items(items, table, report, lossy, emit, name_of, "lora_A.weight", "lora_B.weight")
    return {}


def _diffusers(items, table, report, lossy, emit):
    from ..architectures.engine import KeyPlacer

    placer = KeyPlacer(table) if table else None
    prefixes = {**DIFFUSERS_PREFIX, **(table.diffusers_prefix if table else {})}
    configs: dict[str, dict] = {}
    for it in items:
        label = f"{it.placement.key}" + ("" if it.param == "weight" else f" ({it.param})")
        if it.param != "weight" or _is_1d(it.patch):
            if not lossy:
                raise OutputError(
                    f"'{label}': the diffusers format cannot hold norm or bias deltas; "
                    "use --format kohya or comfy (or allow lossy conversion)"
                )
            report.dropped.append(label)
            continue
        alias = placer.spelling(it.placement, Style.DIFFUSERS) if placer else None
        if alias is None and table is not None:
            raise OutputError(
                f"'{it.placement.key}' has no diffusers name in the '{table.name}' table; use --format kohya or comfy"
            )
        branch = it.placement.branch if alias is None else alias.branch
        path = it.placement.native_path if alias is None else alias.path
        source = materialize(it.patch)
        fact = to_lowrank(source)
        if fact.rel_error > 0 or isinstance(source, Dense):
            report.conversions[label] = fact.rel_error
        patch = fact.patch
        component = prefixes[branch]
        t = _lora_tensors(f"{component}.{path}", patch, "lora_A.weight", "lora_B.weight")
        t.pop(f"{component}.{path}.alpha")
        for name, tensor in t.items():
            emit(name, tensor)
        cfg = configs.setdefault(component, {"ranks": {}})
        cfg["ranks"][path] = patch.rank
    report.modules = len({it.placement.module for it in items}) - len(report.dropped)
    return {"lora_adapter_metadata": json.dumps(adapter_metadata(configs), sort_keys=True)}
