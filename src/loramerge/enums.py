"""Every closed set of choices a user makes, one enum each, and the names shared by all layers.

Dependency-free (torch is imported only when a dtype is asked for), so that `loramerge.config`,
the CLI's ``--help`` and the ComfyUI settings node load no numerical code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

UNKNOWN_ARCH = "unknown"
"""The architecture name of a file that no table places: its groups keep the file's own names."""

Progress = Callable[[str, str, int, int], None]
"""Progress callback: (stage, group key, index, total); stages are "analyze" and "merge"."""


class OutputFormat(str, Enum):
    """Key naming of the written file (FORMATS.md, 'Which outputs load where')."""

    KOHYA = "kohya"
    DIFFUSERS = "diffusers"
    COMFY = "comfy"


class OutputDtype(str, Enum):
    """Precision of the tensors in the written file (the merge itself runs in float32/float64).

    AUTO, the default, is the half precision the inputs use: bfloat16 if any input holds bfloat16
    tensors, else float16 (float32 inputs included); float32 only on request. A tensor whose values
    do not fit the chosen half type is written in float32 instead, and the writer says which."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"

    def resolved(self, input_dtypes: Iterable[str]) -> OutputDtype:
        """The concrete dtype: self, or for AUTO the rule above over the inputs' tensor dtypes
        (safetensors names such as "BF16", or torch names such as "bfloat16")."""
        if self is not OutputDtype.AUTO:
            return self
        bf16 = any(str(d).upper() in ("BF16", "BFLOAT16") for d in input_dtypes)
        return OutputDtype.BFLOAT16 if bf16 else OutputDtype.FLOAT16

    @property
    def torch(self) -> torch.dtype:
        if self is OutputDtype.AUTO:
            raise ValueError("resolve OutputDtype.AUTO against the inputs first (OutputDtype.resolved)")
        import torch

        return getattr(torch, self.value)


class Optimization(str, Enum):
    """How decisions are made: per group, one collective decision, or plain addition."""

    PER_GROUP = "per_group"
    GLOBAL = "global"
    ADDITIVE = "additive"


class Rules(str, Enum):
    """Which decision rules auto mode applies (docs/DECISIONS.md, "Rule sets").

    MEASURED, the default, was chosen on both benchmark domains (images and text): near-orthogonal
    denoiser groups are summed (exact, rank Σr) while text-encoder groups keep the average/SLERP, and
    near-orthogonal LoRAs are never scaled below the user's strengths; auto-strength multiplies the
    merged groups that sum. PAPER is the seed's decision tree as published (METHOD §3: near-orthogonal
    groups averaged or SLERPed, auto-strength scaling the inputs), kept to reproduce the reference."""

    MEASURED = "measured"
    PAPER = "paper"


class StrategySet(str, Enum):
    """Which strategies auto mode may choose."""

    FULL = "full"
    NO_SLERP = "no_slerp"
    BASIC = "basic"


class Sparsifier(str, Enum):
    """How deltas are thinned before merging (METHOD §5); NONE only as a merge option."""

    NONE = "none"
    MAGNITUDE = "magnitude"  # keep the top `density` fraction by |value| (TIES trim)
    DARE = "dare"  # keep each entry with probability `density`, rescale
    DELLA = "della"  # magnitude-ranked keep probabilities per row, rescale
    DARE_CONFLICT = "dare_conflict"  # DARE only where the LoRAs disagree in sign
    DELLA_CONFLICT = "della_conflict"  # DELLA only where the LoRAs disagree in sign

    @property
    def random(self) -> bool:
        return self not in (Sparsifier.MAGNITUDE, Sparsifier.NONE)


class RefineLevel(str, Enum):
    """Post-merge refinement (METHOD §7)."""

    NONE = "none"  # no refinement
    REFINE = "refine"  # TALL-masks + orthogonalization, column-wise TIES voting
    FULL = "full"  # refine + KnOTS


class ReportSort(str, Enum):
    """Order of the group table in the text and HTML reports (`--sort`)."""

    CONFLICT = "conflict"  # effective sign conflict, highest first (groups without it last)
    KEY = "key"  # canonical key
    STRATEGY = "strategy"  # strategy name, then conflict
    COSINE = "cosine"  # most opposing (lowest cosine) first
    OVERLAP = "overlap"  # subspace overlap, highest first
    RETENTION = "retention"  # the lowest retention of any LoRA in the group first


class TunerMemory(str, Enum):
    """What `loramerge tune` does with its memory of earlier sweeps (docs/TUNER.md)."""

    AUTO = "auto"  # replay a stored result of the same stack; store new ones
    OFF = "off"  # neither read nor write
    READ_ONLY = "read_only"  # replay, never store
    CLEAR = "clear"  # forget every stored result, then sweep and store
