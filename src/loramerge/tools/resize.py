"""`resize`: change a LoRA's rank per module (kohya ``resize_lora`` semantics) and prune it.

Each module's ΔW = U diag(σ) Vᵀ comes exactly from its factors (QR of up and down, SVD of the small
r×r core; no dense ΔW); dense modules (LoHa/LoKr products, full diffs) by a full SVD. The kept rank:

- ``rank`` alone: that rank (never above the module's own);
- ``sv_ratio`` R: the σ_i > σ_0 / R;
- ``sv_fro`` F: the first k with √(Σ_{i<k} σ_i² / Σ σ_i²) ≥ F;
- ``sv_cumulative`` C: the first k with Σ_{i<k} σ_i / Σ σ_i ≥ C;

each as kohya computes it (``searchsorted`` on the cumulative share, at least 1, at most the
number of singular values; a ΔW with σ_0 ≤ 1e-6 keeps 1), ``rank`` then a cap (kohya's
``--new_rank`` with ``--dynamic_method``); ``conv_rank`` replaces ``rank`` for conv modules.
The factors kept are balanced, up = U√σ and down = √σVᵀ (written with alpha = rank).

``prune_threshold`` T is the merging guide's magnitude pruning: entries with |x| ≤ T of those
factors (of ΔW itself for dense modules) become 0; the change of each ΔW is measured and reported.
1-D modules (norm and bias deltas) are written unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .. import architectures as A
from ..atomic import check_output
from ..compress import svd_of
from ..enums import UNKNOWN_ARCH, OutputDtype, OutputFormat
from ..errors import LoraMergeError
from ..formats.align import load_group
from ..formats.writers import OutputItem, WriteReport, write
from ..inspection import open_and_align
from ..patches import Dense, LowRank, Patch
from ..spool import PatchStore

MIN_SV = 1e-6  # kohya: a ΔW whose largest singular value is at most this is zero (rank 1 kept)


@dataclass(frozen=True)
class Criterion:
    """How many singular values a module keeps (see the module docstring)."""

    rank: int | None = None
    conv_rank: int | None = None
    sv_ratio: float | None = None
    sv_fro: float | None = None
    sv_cumulative: float | None = None

    def check(self) -> None:
        dynamic = [n for n in ("sv_ratio", "sv_fro", "sv_cumulative") if getattr(self, n) is not None]
        if len(dynamic) > 1:
            raise LoraMergeError(f"resize: give one of --sv-ratio, --sv-fro, --sv-cumulative, not {dynamic}")
        for name in ("rank", "conv_rank"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LoraMergeError(f"resize: --{name.replace('_', '-')} must be at least 1, not {value}")
        if self.sv_ratio is not None and not self.sv_ratio >= 1.0:
            raise LoraMergeError(f"resize: --sv-ratio is σ_max/σ_min kept, at least 1, not {self.sv_ratio}")
        for name in ("sv_fro", "sv_cumulative"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise LoraMergeError(f"resize: --{name.replace('_', '-')} is a fraction in (0, 1], not {value}")

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.rank, self.conv_rank, self.sv_ratio, self.sv_fro, self.sv_cumulative))

    def kept(self, s: torch.Tensor, conv: bool) -> int:
        """kohya ``rank_resize``'s new rank for the singular values `s` (descending)."""
        n = int(s.numel())
        cap = self.conv_rank if conv and self.conv_rank is not None else self.rank
        if n == 0:
            return 1
        s = s.double()
        if self.sv_ratio is not None:
            index = int((s > s[0] / self.sv_ratio).sum()) - 1
        elif self.sv_cumulative is not None:
            index = int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), torch.tensor(self.sv_cumulative).double()))
        elif self.sv_fro is not None:
            share = torch.cumsum(s**2, 0) / (s**2).sum()
            index = int(torch.searchsorted(share, torch.tensor(self.sv_fro**2).double()))
        else:
            index = (cap if cap is not None else n) - 1
        new = max(0, min(index, n - 1)) + 1
        if float(s[0]) <= MIN_SV:
            return 1
        return min(new, cap) if cap is not None else new


@dataclass(frozen=True)
class ResizedModule:
    group: str
    shape: tuple[int, ...]
    input_rank: int | None  # None: a dense module
    rank: int | None  # None: a 1-D module, written unchanged
    fro_retained: float = 1.0  # √(Σ kept σ² / Σ σ²), as kohya reports it
    sum_retained: float = 1.0  # Σ kept σ / Σ σ
    rel_error: float = 0.0  # ‖ΔW_out − ΔW_in‖_F / ‖ΔW_in‖_F, pruning included
    pruned: float = 0.0  # share of the factors' entries set to 0 by pruning
    prune_change: float = 0.0  # ‖ΔW_pruned − ΔW_resized‖_F / ‖ΔW_in‖_F


@dataclass
class ResizeReport:
    output: WriteReport
    architecture: str
    modules: list[ResizedModule] = field(default_factory=list)

    @property
    def worst_error(self) -> float:
        return max((m.rel_error for m in self.modules), default=0.0)


def resize(
    src: str | Path,
    dst: str | Path,
    *,
    criterion: Criterion | None = None,
    prune_threshold: float | None = None,
    arch: str | None = None,
    fmt: OutputFormat | str = OutputFormat.KOHYA,
    dtype: OutputDtype | str = OutputDtype.AUTO,
    strict: bool = True,
    overwrite: bool = False,
) -> ResizeReport:
    """Resize and/or prune the LoRA `src` into `dst`; returns each module's kept rank and error."""
    criterion = criterion or Criterion()
    criterion.check()
    if not criterion.given and prune_threshold is None:
        raise LoraMergeError(
            "resize: say what to do: --rank N, --sv-ratio R, --sv-fro F, --sv-cumulative C and/or --prune-threshold T"
        )
    if prune_threshold is not None and not prune_threshold >= 0.0:
        raise LoraMergeError(f"resize: --prune-threshold must be 0 or more, not {prune_threshold}")
    check_output(dst, [src], overwrite=overwrite)
    file, alignment, _ = open_and_align(src, arch=arch, strict=strict)
    table = None if alignment.architecture == UNKNOWN_ARCH else A.get_table(alignment.architecture)
    report = ResizeReport(WriteReport(Path(dst), OutputFormat(fmt)), alignment.architecture)
    with PatchStore(Path(dst).parent) as store:
        items = []
        for group, contributions in alignment.groups.items():
            c = contributions[0]
            patch, module = resize_patch(group, load_group(alignment, table, group), criterion, prune_threshold)
            report.modules.append(module)
            items.append(OutputItem(c.placement, c.param, store.put(patch)))
        meta = {
            "loramerge.source": Path(src).name,
            "loramerge.resize": json.dumps(
                {**{k: v for k, v in vars(criterion).items() if v is not None}, "prune_threshold": prune_threshold},
                sort_keys=True,
            ),
        }
        resolved = OutputDtype(dtype).resolved(file.dtypes)
        report.output = write(dst, items, table, fmt, metadata=meta, dtype=resolved.torch)
    return report


def resize_patch(
    group: str, patch: Patch, criterion: Criterion, prune_threshold: float | None
) -> tuple[Patch, ResizedModule]:
    """One module resized (when a criterion is given) and pruned (when a threshold is)."""
    shape = tuple(patch.shape) if patch.shape is not None else tuple(patch.dense().shape)
    if len(shape) < 2:
        return patch, ResizedModule(group, shape, None, None)
    input_rank = patch.rank if isinstance(patch, LowRank) else None
    u, s, vh = svd_of(patch)
    total = float(s.double().pow(2).sum().sqrt())
    k = criterion.kept(s, conv=len(shape) > 2) if criterion.given else int(s.numel())
    k = max(1, min(k, int(s.numel())))
    root = s[:k].sqrt()
    out: Patch = LowRank((u[:, :k] * root).contiguous(), (root[:, None] * vh[:k]).contiguous(), 1.0, shape)
    if input_rank is None and not criterion.given:
        out = patch  # pruning only: a dense module stays dense
    kept_sq = float(s[:k].double().pow(2).sum())
    tail = math.sqrt(max(0.0, total**2 - kept_sq))
    module = ResizedModule(
        group,
        shape,
        input_rank,
        out.rank if isinstance(out, LowRank) else None,
        fro_retained=math.sqrt(kept_sq) / total if total > 0 else 1.0,
        sum_retained=float(s[:k].double().sum() / s.double().sum()) if total > 0 else 1.0,
        rel_error=tail / total if total > 0 else 0.0,
    )
    if prune_threshold is None:
        return out, module
    pruned, share = prune(out, prune_threshold)
    change = norm_of_difference(pruned, out)
    error = norm_of_difference(pruned, patch)
    scale = total if total > 0 else 1.0
    return pruned, replace(module, pruned=share, prune_change=change / scale, rel_error=error / scale)


def prune(patch: Patch, threshold: float) -> tuple[Patch, float]:
    """The guide's ``tensor * (|tensor| > threshold)`` on each stored tensor; returns the share zeroed."""
    if isinstance(patch, LowRank):
        up, down = patch.up, patch.down
        up_kept, down_kept = up.abs() > threshold, down.abs() > threshold
        zeroed = int((~up_kept).sum() + (~down_kept).sum())
        pruned: Patch = LowRank(up * up_kept, down * down_kept, patch.scale, patch.shape)
        return pruned, zeroed / max(1, up.numel() + down.numel())
    delta = patch.dense()
    kept = delta.abs() > threshold
    return Dense(delta * kept), int((~kept).sum()) / max(1, delta.numel())


def norm_of_difference(a: Patch, b: Patch) -> float:
    """‖ΔW_a − ΔW_b‖_F, from the factors when both are low-rank (no dense ΔW)."""
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        up = torch.cat([a.up * a.scale, -b.up * b.scale], dim=1)
        diff = LowRank(up, torch.cat([a.down, b.down], dim=0), 1.0, a.shape)
        return float(svd_of(diff)[1].double().pow(2).sum().sqrt())
    da, db = a.dense(), b.dense()
    return float((da.double() - db.double().reshape(da.shape)).norm())
