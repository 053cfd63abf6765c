"""Writing patches as a LoRA file in the form a client loads (FORMATS.md, 'Which outputs load where').

- ``kohya`` (default): native module names, ``lora_down/lora_up`` + ``.alpha`` tensors, fused
  projections re-fused; dense content as LyCORIS ``diff``/``diff_b``/``w_norm``/``b_norm``
  (ComfyUI and A1111/Forge load those).
- ``diffusers``: PEFT keys on diffusers module paths, scale baked in (alpha = rank),
  ``lora_adapter_metadata``; dense content is factorised by SVD and its error reported; norm and
  bias deltas cannot be held and are refused (or listed, with ``lossy=True``).
- ``comfy``: ``diffusion_model.<native>`` with ``lora_A/lora_B`` + ``.alpha``; text encoders keep
  kohya names (ComfyUI loads both).
Writes are atomic: a temporary file in the target folder, renamed into place on success only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from safetensors.torch import save_file

from .. import TOOL_NAME, __version__
from ..architectures.spec import ArchTable, Branch, Placement, Style
from ..compress import to_lowrank
from ..errors import OutputError
from ..types import Dense, LowRank, Patch


class OutputFormat(str, Enum):
    KOHYA = "kohya"
    DIFFUSERS = "diffusers"
    COMFY = "comfy"


@dataclass(frozen=True)
class OutputItem:
    placement: Placement
    param: str  # "weight" | "bias"
    patch: Patch


@dataclass
class WriteReport:
    path: Path
    format: OutputFormat
    tensors: int = 0
    modules: int = 0
    conversions: dict[str, float] = field(default_factory=dict)  # module -> relative error of a dense->LoRA SVD
    dropped: list[str] = field(default_factory=list)              # only with lossy=True


_DEFAULT_KOHYA = {Branch.DENOISER: "lora_unet", Branch.TE1: "lora_te1", Branch.TE2: "lora_te2", Branch.TE3: "lora_te3"}
_DEFAULT_DIFFUSERS = {Branch.DENOISER: "transformer", Branch.TE1: "text_encoder", Branch.TE2: "text_encoder_2",
                      Branch.TE3: "text_encoder_3"}


def write(path: str | Path, items: Iterable[OutputItem], table: ArchTable | None, fmt: OutputFormat | str,
          *, metadata: dict[str, str] | None = None, dtype: torch.dtype = torch.float32,
          lossy: bool = False) -> WriteReport:
    """Write `items` to `path` in `fmt`; returns what was written and converted."""
    fmt = OutputFormat(fmt)
    report = WriteReport(Path(path), fmt)
    tensors, extra_meta = _build(items, table, fmt, report, lossy)
    if not tensors:
        raise OutputError(f"{path}: nothing to write (every module was empty or dropped)")
    meta = {"loramerge.tool": TOOL_NAME, "loramerge.version": __version__, "loramerge.format": fmt.value,
            "loramerge.architecture": table.name if table else "unknown", **extra_meta, **(metadata or {})}
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in sorted(tensors.items()):
        v = v.detach().to(dtype).contiguous()
        if v.untyped_storage().data_ptr() in seen:  # fused components share one down: store each once
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    atomic_save(out, Path(path), meta)
    report.tensors = len(out)
    return report


def tensors_for(items: Iterable[OutputItem], table: ArchTable | None, fmt: OutputFormat | str, *,
                dtype: torch.dtype = torch.float32, lossy: bool = False) -> dict[str, torch.Tensor]:
    """The tensors `write` would save for `items` in `fmt` (same names, same values), in memory only:
    for hosts that load a LoRA state dict directly, e.g. ComfyUI's ``comfy.lora.load_lora``."""
    fmt = OutputFormat(fmt)
    tensors, _ = _build(items, table, fmt, WriteReport(Path(), fmt), lossy)
    return {k: v.detach().to(dtype).contiguous() for k, v in sorted(tensors.items())}


def _build(items, table, fmt: OutputFormat, report: WriteReport, lossy: bool):
    """(tensors, extra metadata) of `items` in `fmt`: the one place that dispatches on the format."""
    builder = {OutputFormat.KOHYA: _kohya, OutputFormat.COMFY: _comfy, OutputFormat.DIFFUSERS: _diffusers}[fmt]
    return builder(_refuse_duplicates(list(items)), table, report, lossy)


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path = Path(path)
    if not path.parent.exists():
        raise OutputError(f"{path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        _canonical_header(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _canonical_header(path: Path) -> None:
    """Rewrite the header with sorted keys: safetensors orders metadata from a hash map, so the same
    content could otherwise give different bytes from run to run. Tensor data is copied unchanged."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-(8 + len(text)) % 8)
        if len(text) == n:
            fh.close()
            with open(path, "r+b") as out:
                out.seek(8)
                out.write(text)
            return
        tmp = path.with_suffix(path.suffix + ".hdr")
        try:
            with open(tmp, "wb") as out:
                out.write(struct.pack("<Q", len(text)) + text)
                shutil.copyfileobj(fh, out, 1 << 20)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)


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
        return parts[0].patch
    layout = table.modules.get(module) if table else None
    if layout is None:
        raise OutputError(f"'{module}' has component patches but no fused layout in the architecture table")
    by_name = {p.placement.component: p.patch for p in parts}
    first = next(iter(by_name.values()))
    unit = _rows(first) // dict(layout.components)[parts[0].placement.component]
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
            up[row0:row0 + rows[name], r0:r0 + r] = p.up * p.scale
            downs.append(p.down)
        row0 += rows[name]
        r0 += r
    shape = None if first.shape is None else (total_rows, *first.shape[1:])
    return LowRank(up, torch.cat(downs, 0), 1.0, shape)


def _rows(patch: Patch) -> int:
    return patch.out_features if isinstance(patch, LowRank) else int(patch.delta.shape[0])


# -- formats ----------------------------------------------------------------------------------------
def _lora_tensors(prefix: str, patch: LowRank, down_name: str, up_name: str,
                  alpha: float | None = None) -> dict[str, torch.Tensor]:
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


def _kohya_name(table: ArchTable | None, module: str) -> str:
    branch, path = module.split(".", 1)
    prefixes = {**_DEFAULT_KOHYA, **(table.kohya_prefix if table else {})}
    return f"{prefixes[Branch(branch)]}_{path.replace('.', '_')}"


def _native_items(items, table, report, lossy, name_of, down_name, up_name):
    tensors: dict[str, torch.Tensor] = {}
    grouped = _by_module(items, table)
    fused = {key: _fuse(key[0], parts, table) for key, parts in grouped.items()}
    alpha = _file_alpha(fused.values())
    for (module, param), patch in fused.items():
        prefix = name_of(module)
        if param == "weight" and isinstance(patch, LowRank):
            tensors.update(_lora_tensors(prefix, patch, down_name, up_name, alpha))
            continue
        weight = fused.get((module, "weight"))
        is_norm = weight is not None and _is_1d(weight)  # norm layers have 1-D weights
        tensors.update(_dense_tensors(prefix, param, patch, is_norm))
    report.modules = len({m for m, _ in grouped})
    return tensors, {}


def _file_alpha(patches) -> float | None:
    """One alpha for the whole file: the most common rank (ties: the smallest).

    diffusers' kohya loader matches per-module alphas by names that do not match its modules and
    so applies the file's most common alpha to every module; with one alpha everywhere (and the
    scale folded into ``up``) every client computes the same ΔW."""
    ranks = [p.rank for p in patches if isinstance(p, LowRank)]
    if not ranks:
        return None
    return float(min(set(ranks), key=lambda r: (-ranks.count(r), r)))


def _is_1d(patch: Patch) -> bool:
    return isinstance(patch, Dense) and patch.delta.dim() == 1


def _kohya(items, table, report, lossy):
    return _native_items(items, table, report, lossy, lambda m: _kohya_name(table, m),
                         "lora_down.weight", "lora_up.weight")


def _comfy(items, table, report, lossy):
    def name_of(module: str) -> str:
        return module if module.startswith(Branch.DENOISER.value + ".") else _kohya_name(table, module)
    return _native_items(items, table, report, lossy, name_of, "lora_A.weight", "lora_B.weight")


def _diffusers(items, table, report, lossy):
    from ..architectures.engine import KeyPlacer

    placer = KeyPlacer(table) if table else None
    prefixes = {**_DEFAULT_DIFFUSERS, **(table.diffusers_prefix if table else {})}
    tensors: dict[str, torch.Tensor] = {}
    configs: dict[str, dict] = {}
    for it in items:
        label = f"{it.placement.key}" + ("" if it.param == "weight" else f" ({it.param})")
        if it.param != "weight" or _is_1d(it.patch):
            if not lossy:
                raise OutputError(f"'{label}': the diffusers format cannot hold norm or bias deltas; "
                                  "use --format kohya or comfy (or allow lossy conversion)")
            report.dropped.append(label)
            continue
        alias = placer.spelling(it.placement, Style.DIFFUSERS) if placer else None
        if alias is None and table is not None:
            raise OutputError(f"'{it.placement.key}' has no diffusers name in the '{table.name}' table; "
                              "use --format kohya or comfy")
        branch = it.placement.branch if alias is None else alias.branch
        path = it.placement.native_path if alias is None else alias.path
        fact = to_lowrank(it.patch)
        if fact.rel_error > 0 or isinstance(it.patch, Dense):
            report.conversions[label] = fact.rel_error
        patch = fact.patch
        component = prefixes[branch]
        t = _lora_tensors(f"{component}.{path}", patch, "lora_A.weight", "lora_B.weight")
        t.pop(f"{component}.{path}.alpha")
        tensors.update(t)
        cfg = configs.setdefault(component, {"ranks": {}})
        cfg["ranks"][path] = patch.rank
    report.modules = len({it.placement.module for it in items}) - len(report.dropped)
    return tensors, {"lora_adapter_metadata": json.dumps(_peft_metadata(configs), sort_keys=True)}


def _peft_metadata(configs: dict[str, dict]) -> dict:
    """alpha = rank everywhere: r/lora_alpha = the most common rank, patterns for the others.

    Pattern keys are anchored (``^path``): PEFT matches them as suffixes and takes the first
    match, so ``proj_out`` would also catch ``single_transformer_blocks.1.proj_out``. Text-encoder
    paths drop ``text_model.``: transformers 5's CLIPTextModel has no such module (PEFT matches
    target modules by suffix, so transformers 4 still finds them)."""
    flat: dict = {}
    for component, cfg in configs.items():
        strip = component.startswith("text_encoder")
        ranks = {(path.removeprefix("text_model.") if strip else path): r for path, r in cfg["ranks"].items()}
        common = max(set(ranks.values()), key=lambda r: (list(ranks.values()).count(r), -r))
        pattern = {"^" + re.escape(path): r for path, r in ranks.items() if r != common}
        flat.update({f"{component}.r": common, f"{component}.lora_alpha": common,
                     f"{component}.rank_pattern": pattern, f"{component}.alpha_pattern": dict(pattern),
                     f"{component}.target_modules": sorted(ranks), f"{component}.use_dora": False,
                     f"{component}.use_rslora": False})
    return flat
