"""Tuner data: the AutoTuner's ranked candidates as JSON, and the Merge Selector that applies one.

The file holds every candidate of the sweep in rank order with its parameters, its full merge
configuration (λ applied to the strengths), its phase-1 components, phase-2 metrics and evaluator
scores. `selected_config(data, k)` is the configuration of the k-th (1-based) candidate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import MergeConfig
from ..errors import InputFileError, LoraMergeError

TUNER_DATA_VERSION = 1
KIND = "loramerge.tuner_data"


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


def save(data: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a temporary file next to `path`, renamed over it (no partial file left)."""
    import os
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".loramerge-tuner.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(dump(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> dict[str, Any]:
    """Read and check a tuner-data file; a clear error for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read tuner data: {exc}") from exc
    except ValueError as exc:
        raise InputFileError(
            path, f"is not JSON: {exc}", hint="give a file written by `loramerge tune --tuner-data`"
        ) from exc
    return check(data, path)


def check(data: Any, where: str | Path = "tuner data") -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InputFileError(
            where, "is not loramerge tuner data", hint="give a file written by `loramerge tune --tuner-data`"
        )
    if data.get("schema_version") != TUNER_DATA_VERSION:
        raise InputFileError(
            where,
            f"tuner data version {data.get('schema_version')!r}; this loramerge reads version {TUNER_DATA_VERSION}",
            hint="run `loramerge tune` again",
        )
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not all(isinstance(c, dict) and "config" in c for c in candidates):
        raise InputFileError(where, "has no list of candidates with their configurations", key="candidates")
    return data


def selected_config(data: dict[str, Any], k: int, where: str | Path = "tuner data") -> MergeConfig:
    """The merge configuration of the k-th candidate (1-based, rank order)."""
    candidates = data["candidates"]
    if not 1 <= k <= len(candidates):
        raise LoraMergeError(
            f"{where}: --select {k} is out of range: the tuner data ranks {len(candidates)} candidate(s)"
            f"\n  -> choose 1 to {len(candidates)} (1 is the best)"
        )
    try:
        return MergeConfig(**candidates[k - 1]["config"])
    except ValueError as exc:
        raise InputFileError(where, f"candidate {k}: invalid configuration: {exc}", key=f"candidates[{k - 1}]") from exc
