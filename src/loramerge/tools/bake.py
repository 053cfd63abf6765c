"""`bake`: apply LoRAs to a checkpoint and write the merged model (kohya ``merge_lora``).

One LoRA is applied directly (ΔW · its strength; the text-encoder strength on text encoders);
several are merged first by the merge pipeline (the same options as ``merge``), and its merged
patches are applied, never written as a LoRA. Both kinds of patches wait in a spool file; the
checkpoint is then streamed tensor by tensor: read, patched in place row block by row block
(ΔW = up·down is made for `ROW_BLOCK` bytes of rows at a time), written. Every key, dtype and the
metadata of the checkpoint are kept (``dtype`` converts the floating tensors); the file is
written atomically and never over one of the inputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import check_output
from ..config import MergeConfig
from ..enums import OutputDtype, Progress
from ..errors import BaseModelMismatchError, OutputError
from ..formats.align import load_group
from ..formats.streaming import StreamingSafetensors, narrowed
from ..formats.writers import OutputItem
from ..inputs import file_sha256
from ..inspection import open_and_align
from ..patches import Dense, LowRank, Patch
from ..pipeline import run
from ..spool import PatchStore, StoredPatch, materialize
from ..version import __version__
from .checkpoint import Checkpoint, Slot

ROW_BLOCK = 1 << 20  # bytes of float32 ΔW made at a time (small blocks: the C allocator keeps less)


@dataclass
class BakeReport:
    path: Path
    architecture: str
    tensors: int = 0
    patched: dict[str, float] = field(default_factory=dict)  # checkpoint key -> ‖ΔW‖ / ‖W‖
    skipped: list[str] = field(default_factory=list)  # LoRA targets the checkpoint lacks (skip_missing)
    widened: list[str] = field(default_factory=list)  # tensors kept in float32: out of the --dtype range
    dtype: str = "as stored"


def bake(
    model: str | Path,
    cfg: MergeConfig,
    output: str | Path,
    *,
    dtype: OutputDtype | str | None = None,
    skip_missing: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BakeReport:
    """Write `model` with the LoRAs of `cfg` applied to `output` (`dtype`: of the floating tensors;
    None or auto: as stored). The merge options of `cfg` apply when it has several LoRAs."""
    paths = [inp.path for inp in cfg.inputs]
    check_output(output, [model, *paths], overwrite=overwrite)
    if Path(model).is_dir():
        raise OutputError(
            f"{model}: bake writes one checkpoint file; give a single-file checkpoint or one component's "
            ".safetensors file (e.g. unet/diffusion_pytorch_model.safetensors)"
        )
    if dtype is not None and OutputDtype(dtype) is OutputDtype.AUTO:
        dtype = None
    target = None if dtype is None else OutputDtype(dtype).torch
    with PatchStore(Path(output).parent) as store:
        items, architecture, ckpt = _patches(model, cfg, store, progress)
        report = BakeReport(Path(output), architecture, dtype=str(target or "as stored").removeprefix("torch."))
        on_key = _slots(items, ckpt, cfg, skip_missing, report)
        meta = dict(ckpt.metadata)
        meta["loramerge.bake"] = _record(model, cfg)
        with StreamingSafetensors(Path(output)) as out:
            for n, key in enumerate(ckpt.shapes):
                t = ckpt.get(key)
                for slot, patch in on_key.get(key, []):
                    report.patched[key] = _apply(t, slot, materialize(patch))
                if target is not None and t.is_floating_point() and t.dtype != target:
                    wide = narrowed(t, target)
                    if wide.dtype != target:
                        report.widened.append(key)
                    t = wide
                out.add(key, t, as_is=True)
                del t
                if progress is not None:
                    progress("bake", key, n, len(ckpt.shapes))
            out.commit(meta)
        report.tensors = out.count
    return report


def _patches(model, cfg: MergeConfig, store: PatchStore, progress: Progress | None):
    """(items with spooled patches, architecture, checkpoint opened with the LoRAs' table)."""
    if len(cfg.inputs) > 1:
        with run(cfg, progress) as result:
            items = [OutputItem(it.placement, it.param, store.put(materialize(it.patch))) for it in result.items()]
            name = result.inputs.architecture
        return items, name, Checkpoint.open(model, name)
    inp = cfg.inputs[0]
    _, alignment, _ = open_and_align(inp.path, arch=cfg.arch, strict=cfg.strict, allow_pickle=cfg.allow_pickle)
    ckpt = Checkpoint.open(model, alignment.architecture)
    items = []
    for group, contributions in alignment.groups.items():
        if not inp.wants(group):
            continue
        c = contributions[0]
        base = _base_weight(ckpt, c.base_target) if c.entry.has_dora else None
        patch = load_group(alignment, ckpt.table, group, base)
        strength = inp.strength(c.placement.branch.is_text_encoder)
        items.append(OutputItem(c.placement, c.param, store.put(patch.scaled(strength))))
    return items, alignment.architecture, ckpt


def _base_weight(ckpt: Checkpoint, target: str) -> torch.Tensor | None:
    slot = ckpt.slots.get(target)
    if slot is None:
        return None
    w = ckpt.get(slot.key)
    return w if slot.rows is None else w[slot.rows]


def _slots(items, ckpt: Checkpoint, cfg: MergeConfig, skip_missing: bool, report: BakeReport):
    """checkpoint key -> [(slot, patch)]; every target found and shaped as the checkpoint's tensor."""
    on_key: dict[str, list[tuple[Slot, StoredPatch]]] = {}
    missing, wrong = [], []
    for it in items:
        group = it.placement.key if it.param == "weight" else f"{it.placement.key}:{it.param}"
        slot = ckpt.slots.get(group)
        if slot is None:
            missing.append(group)
            continue
        want = _slot_shape(ckpt, slot)
        got = tuple(it.patch.shape) if it.patch.shape is not None else None
        if got is not None and (got[0] != want[0] or math.prod(got) != math.prod(want)):
            wrong.append(f"{group}: LoRA {list(got)} vs checkpoint '{slot.key}' {list(want)}")
            continue
        on_key.setdefault(slot.key, []).append((slot, it.patch))
    names = ", ".join(Path(inp.path).name for inp in cfg.inputs)
    if wrong:
        shown = "\n  ".join(wrong[:10])
        raise BaseModelMismatchError(
            f"{ckpt.path}: {len(wrong)} LoRA target(s) of {names} have another shape here:\n  {shown}\n"
            "  -> is the LoRA for this model? (e.g. an SD1.5 LoRA on SDXL)"
        )
    if missing and not skip_missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        have = ", ".join(sorted(b.value for b in ckpt.branches())) or "none"
        raise BaseModelMismatchError(
            f"{ckpt.path}: has no tensor for {len(missing)} LoRA target(s) of {names} "
            f"(architecture {ckpt.architecture}; the checkpoint holds: {have}):\n  {shown}\n"
            "  -> is the LoRA for this model? If the checkpoint lacks a part on purpose (e.g. no text "
            "encoders), pass --skip-missing to bake the rest"
        )
    report.skipped = missing
    return on_key


def _slot_shape(ckpt: Checkpoint, slot: Slot) -> tuple[int, ...]:
    shape = ckpt.shapes[slot.key]
    return shape if slot.rows is None else (slot.rows.stop - slot.rows.start, *shape[1:])


def _apply(t: torch.Tensor, slot: Slot, patch: Patch) -> float:
    """t[rows] += ΔW in place, a block of rows at a time (float32 arithmetic); returns ‖ΔW‖/‖W‖."""
    if not t.is_floating_point():
        raise OutputError(f"'{slot.key}' holds {t.dtype} values: a LoRA cannot change it")
    view = t if slot.rows is None else t[slot.rows]
    flat = view.reshape(view.shape[0], -1)
    if isinstance(patch, LowRank):
        up, down = patch.up * patch.scale, patch.down
    else:
        assert isinstance(patch, Dense)
        whole = patch.delta.reshape(flat.shape)
    block = max(1, ROW_BLOCK // (4 * max(1, flat.shape[1])))
    delta_sq = weight_sq = 0.0
    for r0 in range(0, flat.shape[0], block):
        rows = slice(r0, min(r0 + block, flat.shape[0]))
        d = up[rows] @ down if isinstance(patch, LowRank) else whole[rows].float()
        w = flat[rows].float()
        weight_sq += float(torch.linalg.vector_norm(w)) ** 2  # float32 norms: no copy of the block
        delta_sq += float(torch.linalg.vector_norm(d)) ** 2
        flat[rows] = (w + d).to(t.dtype)
    return math.sqrt(delta_sq / weight_sq) if weight_sq > 0 else math.inf


def _record(model, cfg: MergeConfig) -> str:
    loras = [
        {
            "file": Path(inp.path).name,
            "sha256": file_sha256(inp.path),
            "strength_model": inp.strength_model,
            "strength_text_encoder": inp.strength_text_encoder,
        }
        for inp in cfg.inputs
    ]
    merge = cfg.model_dump(mode="json", exclude={"inputs"}) if len(cfg.inputs) > 1 else None
    return json.dumps(
        {"version": __version__, "model": Path(model).name, "loras": loras, "merge": merge}, sort_keys=True
    )
