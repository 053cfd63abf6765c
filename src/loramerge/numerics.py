"""A numerical failure inside one group's maths becomes an error naming the group, not a traceback.

The inputs are checked (finite, |ΔW| bounded: formats/checks.py) and the output is checked before
it is written (formats/writers.py); what can still overflow float32 is an extreme strength, and
then an eigen- or singular-value decomposition fails on the non-finite values it produces.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import LoraMergeError


@contextmanager
def group_maths(key: str, stage: str) -> Iterator[None]:
    try:
        yield
    except torch.linalg.LinAlgError as exc:
        raise LoraMergeError(
            f"group '{key}': the {stage} overflowed float32 ({exc})\n"
            "  -> lower the strengths (values this large cannot be merged); check the inputs with `loramerge inspect`"
        ) from None
