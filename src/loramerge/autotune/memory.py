"""The AutoTuner's memory: tuner data of earlier sweeps, keyed by what determines the result.

The key is a SHA-256 over the inputs' content hashes and strengths (and include/exclude/preserve),
the base options, the grid, the number of candidates merged and the evaluator's name. Entries are
tuner-data files in the user cache folder (`platformdirs`; ``LORAMERGE_CACHE_DIR`` overrides it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..enums import TunerMemory
from . import data as tuner_data

CACHE_ENV = "LORAMERGE_CACHE_DIR"


def folder() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "tuner"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("loramerge")) / "tuner"


def key_of(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def recall(key: str, mode: TunerMemory) -> dict[str, Any] | None:
    """The stored tuner data for `key`, if the mode reads memory and it is there and readable."""
    if mode not in (TunerMemory.AUTO, TunerMemory.READ_ONLY):
        return None
    path = folder() / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return tuner_data.load(path)
    except Exception:  # a damaged entry is only a miss: the sweep runs again and replaces it
        return None


def remember(key: str, data: dict[str, Any], mode: TunerMemory) -> Path | None:
    if mode not in (TunerMemory.AUTO, TunerMemory.CLEAR):
        return None
    where = folder()
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{key}.json"
    tuner_data.save(data, path)
    return path


def clear() -> int:
    """Forget every stored sweep; returns how many entries were removed."""
    where = folder()
    removed = 0
    if where.is_dir():
        for path in where.glob("*.json"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
