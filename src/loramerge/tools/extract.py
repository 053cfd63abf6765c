"""`extract`: a LoRA from the difference of two checkpoints (kohya ``extract_lora_from_models``).

For every tensor that a LoRA can adapt (a weight of 2 or more dimensions: linear and conv layers,
placed by the architecture table), ΔW = FINETUNED − BASE is factorised by a seeded randomized SVD
at ``rank`` (or by a full SVD keeping ``energy`` of Σσ², ``rank`` then a cap). Two tensors are in
memory at a time; the factors go to a spool file and the writer streams them module by module.
Unlike kohya, factors are not clamped to a quantile: a rank-r difference comes back exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..architectures.spec import Branch, Placement
from ..atomic import check_output
from ..compress import factorize_dense
from ..enums import OutputDtype, OutputFormat
from ..errors import BaseModelMismatchError, LoraMergeError
from ..formats.writers import OutputItem, WriteReport, write
from ..rng import group_generator
from ..spool import PatchStore
from .checkpoint import Checkpoint, Slot


@dataclass(frozen=True)
class ExtractedModule:
    group: str
    shape: tuple[int, ...]
    rank: int
    rel_error: float  # ‖ΔW − up·down‖_F / ‖ΔW‖_F


@dataclass
class ExtractReport:
    output: WriteReport
    architecture: str
    modules: list[ExtractedModule] = field(default_factory=list)
    unchanged: int = 0  # adaptable tensors with no difference (or none above min_diff)
    skipped: dict[str, str] = field(default_factory=dict)  # tensor that differs but was not extracted -> why

    @property
    def worst_error(self) -> float:
        return max((m.rel_error for m in self.modules), default=0.0)


def placement_of_group(group: str) -> tuple[Placement, str]:
    """(placement, param) of a group key ``module[#component][:bias]``."""
    target, _, param = group.partition(":")
    module, _, component = target.partition("#")
    return Placement(module, component or None), param or "weight"


def extract(
    base: str | Path,
    finetuned: str | Path,
    output: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    te: bool = False,
    min_diff: float = 0.0,
    arch: str | None = None,
    fmt: OutputFormat | str = OutputFormat.KOHYA,
    dtype: OutputDtype | str = OutputDtype.AUTO,
    seed: int = 0,
    overwrite: bool = False,
) -> ExtractReport:
    """Write the LoRA of FINETUNED − BASE to `output`; returns the per-module ranks and errors."""
    if rank is None and energy is None:
        raise LoraMergeError("extract: give a rank (--rank N) or an energy to keep (--energy 0.99)")
    if rank is not None and rank < 1:
        raise LoraMergeError(f"extract: --rank must be at least 1, not {rank}")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise LoraMergeError(f"extract: --energy is a fraction in (0, 1], not {energy}")
    check_output(output, [base, finetuned], overwrite=overwrite)
    ft = Checkpoint.open(finetuned, arch)
    bs = Checkpoint.open(base, arch or ft.architecture)
    report = ExtractReport(WriteReport(Path(output), OutputFormat(fmt)), ft.architecture)
    with PatchStore(Path(output).parent) as store:
        items = []
        for key in ft.shapes:
            groups = [g for g in ft.groups_of.get(key, []) if ft.slots[g].rows is None]
            if not groups:
                _note_untargeted(ft, bs, key, report)
                continue
            group = groups[0]
            delta = _difference(ft, bs, key, group)
            why = _why_not(delta, ft.branch_of(key), te, min_diff)
            if why == "unchanged":
                report.unchanged += 1
                continue
            if why:
                report.skipped[key] = why
                continue
            fact = _factorize(delta, rank, energy, group_generator(seed, group))
            report.modules.append(ExtractedModule(group, tuple(delta.shape), fact.patch.rank, fact.rel_error))
            items.append(OutputItem(*placement_of_group(group), store.put(fact.patch)))
            del delta, fact
        if not items:
            raise LoraMergeError(
                f"{finetuned}: no adaptable weight differs from {base}"
                + ("" if te else " (text encoders are left out: pass --te to include them)")
            )
        meta = {
            "loramerge.extract": json.dumps(
                {
                    "base": Path(base).name,
                    "finetuned": Path(finetuned).name,
                    "rank": rank,
                    "energy": energy,
                    "text_encoders": te,
                    "seed": seed,
                },
                sort_keys=True,
            )
        }
        resolved = OutputDtype(dtype).resolved(ft.dtypes.values())
        report.output = write(output, items, ft.table, fmt, metadata=meta, dtype=resolved.torch)
    return report


def _difference(ft: Checkpoint, bs: Checkpoint, key: str, group: str) -> torch.Tensor:
    slot = bs.slots.get(group)
    if slot is None:
        raise BaseModelMismatchError(
            f"{bs.path}: has no tensor for '{group}' (FINETUNED {ft.path}, key '{key}')\n"
            "  -> are BASE and FINETUNED the same model family? (pass --arch if detection is wrong)"
        )
    want = ft.shapes[key]
    got = _slot_shape(bs, slot)
    if math.prod(got) != math.prod(want) or got[:1] != want[:1]:
        raise BaseModelMismatchError(
            f"{bs.path}, key '{slot.key}': shape {list(got)} differs from FINETUNED {ft.path}, key '{key}' "
            f"{list(want)}\n  -> extract needs two checkpoints of the same model (e.g. not SD1.5 and SDXL)"
        )
    b = bs.get(slot.key)
    b = b if slot.rows is None else b[slot.rows]
    return ft.get(key).float() - b.float().reshape(want)


def _slot_shape(ckpt: Checkpoint, slot: Slot) -> tuple[int, ...]:
    shape = ckpt.shapes[slot.key]
    return shape if slot.rows is None else (slot.rows.stop - slot.rows.start, *shape[1:])


def _why_not(delta: torch.Tensor, branch: Branch | None, te: bool, min_diff: float) -> str | None:
    """None to extract; "unchanged"; or why a differing tensor is not extracted."""
    biggest = float(delta.abs().max()) if delta.numel() else 0.0
    if biggest <= min_diff:
        return "unchanged"
    if delta.dim() < 2:
        return "1-D (norm or bias): a LoRA holds no factors for it"
    if branch is not None and branch.is_text_encoder and not te:
        return "text encoder: pass --te to extract it"
    return None


def _factorize(delta: torch.Tensor, rank: int | None, energy: float | None, generator: torch.Generator):
    if energy is None:
        return factorize_dense(delta, rank=rank, rel_error=None, generator=generator)
    fact = factorize_dense(delta, rel_error=math.sqrt(max(0.0, 1.0 - energy)))
    if rank is not None and fact.patch.rank > rank:
        fact = factorize_dense(delta, rank=rank, rel_error=None, generator=generator)
    return fact


def _note_untargeted(ft: Checkpoint, bs: Checkpoint, key: str, report: ExtractReport) -> None:
    """A tensor no LoRA adapts (embeddings, VAE, ...): listed when it differs, never dropped silently."""
    if key not in bs.shapes:
        return
    if bs.shapes[key] != ft.shapes[key]:
        report.skipped[key] = f"not a LoRA target; shapes differ ({list(bs.shapes[key])} vs {list(ft.shapes[key])})"
        return
    a, b = ft.get(key), bs.get(key)
    if a.is_floating_point() and not torch.equal(a, b):
        report.skipped[key] = "not a LoRA target (embedding, VAE or other): its difference is not extracted"
