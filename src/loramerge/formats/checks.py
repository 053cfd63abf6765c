"""What a LoRA's tensors must be (errors) and what is legal but suspicious (warnings, in the report).

Errors stop before any work: a factor that is not floating point, has more than 4 dimensions or a
zero-size one (rank 0), a non-scalar or non-finite alpha, NaN/Inf values. Warnings let the merge
go on and are listed in the report: an alpha <= 0, values at the float16 limit (|x| >= 65504, the
mark of an fp16 overflow in training), a LoRA whose every module read is zero. docs/DECISIONS.md
says why each is which.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputFileError
from ..patches import Dense, LowRank, Patch
from .files import SAFETENSORS_DTYPES

FP16_LIMIT = 65504.0
MAX_DELTA_ABS = 1e12  # a ΔW value beyond this is corruption: squared and summed it overflows float32
MAX_FACTOR_DIMS = 4  # conv kernels [out, in, kh, kw]; nothing in a LoRA has more
_REEXPORT = "the file is corrupt or was not written by a LoRA trainer; re-export it"


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a dtype name as a `TensorSource` gives it (safetensors "F16" or torch "float16")."""
    found = SAFETENSORS_DTYPES.get(name)
    if found is None:
        candidate = getattr(torch, name, None)
        found = candidate if isinstance(candidate, torch.dtype) else None
    return found


def check_tensor_header(path: Path, key: str, role: str, dtype_name: str, shape: tuple[int, ...]) -> None:
    """Header-only checks of one tensor of a module, by role (before any data is read)."""
    dtype = torch_dtype(dtype_name)
    if role == "alpha":
        if dtype is None or dtype is torch.bool or dtype.is_complex:
            raise InputFileError(
                path, f"alpha is stored as {dtype_name}; it must be a real number", key=key, hint=_REEXPORT
            )
        if math.prod(shape) != 1:
            raise InputFileError(path, f"alpha must be a scalar, has shape {list(shape)}", key=key, hint=_REEXPORT)
        return
    if dtype is None or not dtype.is_floating_point:
        raise InputFileError(
            path,
            f"the factor is stored as {dtype_name}; LoRA factors are floating point (F32, F16, BF16 or F8)",
            key=key,
            hint="integer or boolean factors are quantised or corrupt data; re-export the LoRA in a float dtype",
        )
    if not 1 <= len(shape) <= MAX_FACTOR_DIMS:
        raise InputFileError(
            path,
            f"the factor has {len(shape)} dimensions {list(shape)}; LoRA factors have 1 to {MAX_FACTOR_DIMS}",
            key=key,
            hint=_REEXPORT,
        )
    if 0 in shape:
        raise InputFileError(
            path,
            f"the factor has a zero-size dimension {list(shape)} (rank 0: the module holds nothing)",
            key=key,
            hint="re-export the LoRA, or remove this module from the file",
        )


def as_checkable(t: torch.Tensor) -> torch.Tensor:
    """`t` in a dtype torch's checks support: float8 tensors are upcast (isfinite/abs have no fp8 kernels)."""
    return t.float() if t.is_floating_point() and t.dtype.itemsize == 1 else t


def max_abs(t: torch.Tensor) -> float:
    """max |x| over a non-empty float tensor in one pass without temporaries; NaN when some value is
    NaN and inf when some is ±inf (`torch.aminmax` propagates both), so one reduction answers "all
    finite?" and "how large?" (an `isfinite(...).all()` plus an `abs().max()` are two passes and
    two full-size temporaries)."""
    lo, hi = torch.aminmax(as_checkable(t))
    return max(-float(lo), float(hi)) if not (lo.isnan() or hi.isnan()) else math.nan


def count_not_finite(t: torch.Tensor) -> int:
    """How many values are NaN or ±inf (the slow path, only to say so in an error)."""
    return int((~torch.isfinite(as_checkable(t))).sum())


@dataclass
class ContentNotes:
    """What reading a file's tensors found that deserves a warning (thread-safe: pass 1 reads in threads)."""

    overflow: set[str] = field(default_factory=set)  # tensor keys with |x| >= 65504
    low_alpha: dict[str, float] = field(default_factory=dict)  # alpha key -> alpha <= 0
    modules: set[str] = field(default_factory=set)  # module stems whose ΔW was computed
    zero: set[str] = field(default_factory=set)  # ... and were exactly zero
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check_values(self, path: Path, key: str, t: torch.Tensor) -> None:
        """Errors for NaN/Inf; a note for values at the float16 limit."""
        if not t.is_floating_point() or not t.numel():
            return
        largest = max_abs(t)
        if not math.isfinite(largest):
            raise InputFileError(
                path,
                f"{count_not_finite(t)} NaN/Inf value(s) in the tensor",
                key=key,
                hint="the LoRA is broken (often an fp16 overflow in training); re-export it",
            )
        if largest >= FP16_LIMIT:
            with self._lock:
                self.overflow.add(key)

    def check_alpha(self, path: Path, key: str, alpha: float) -> None:
        if not math.isfinite(alpha):
            raise InputFileError(
                path,
                f"alpha is {alpha}; it scales the module, so it must be a finite number",
                key=key,
                hint="the LoRA is broken; re-export it, or fix the alpha (commonly the rank or half of it)",
            )
        if alpha <= 0:
            with self._lock:
                self.low_alpha[key] = alpha

    def note_module(self, path: Path, stem: str, patches: dict[str, Patch]) -> None:
        """Error for a ΔW beyond what float32 statistics can square and sum; note a zero ΔW."""
        zero = True
        for p in patches.values():
            top = _max_abs_bound(p)
            if not top <= MAX_DELTA_ABS:
                raise InputFileError(
                    path,
                    f"ΔW of the module reaches {top:.3g} (factors times alpha/rank): beyond {MAX_DELTA_ABS:g}, "
                    "where the merge's float32 sums of squares overflow; no trained LoRA comes near",
                    key=stem,
                    hint="the LoRA is broken (its factors or alpha are corrupt); re-export it",
                )
            zero = zero and top == 0.0
        with self._lock:
            self.modules.add(stem)
            if zero:
                self.zero.add(stem)

    def warnings(self) -> list[str]:
        out = []
        if self.modules and self.zero == self.modules:
            out.append(
                f"every module read ({len(self.modules)}) is exactly zero: this LoRA changes nothing "
                "(an untrained or wrongly saved LoRA?)"
            )
        if self.low_alpha:
            key, value = min(self.low_alpha.items())
            out.append(
                f"alpha <= 0 in {len(self.low_alpha)} module(s), e.g. '{key}' = {value:g}: "
                "a negative alpha reverses the module's effect, zero removes it"
            )
        if self.overflow:
            out.append(
                f"{len(self.overflow)} tensor(s) hold values at the float16 limit (|x| >= {FP16_LIMIT:g}), "
                f"e.g. '{min(self.overflow)}': a sign of fp16 overflow in training"
            )
        return out


def _max_abs_bound(p: Patch) -> float:
    """An upper bound of |ΔW| (exact for dense patches): |scale| · rank · max|up| · max|down|; 0 exactly
    when ΔW is zero (a zero factor or scale), NaN when a value is NaN."""
    if isinstance(p, LowRank):
        if not p.up.numel() or not p.down.numel():
            return 0.0
        return abs(p.scale) * p.rank * max_abs(p.up) * max_abs(p.down)
    assert isinstance(p, Dense)
    return max_abs(p.delta) if p.delta.numel() else 0.0
