"""Results kept while the inputs and options are unchanged (module level, least recently used first out).

Key: what was asked (``merge`` or ``analyze``), every input (path, strengths, preserve, patterns)
with its file's identity — size, modification time and SHA-256 of the content — and every option.
A file changed on disk gets a new identity, so it is never served from the cache. The SHA-256 is
computed once per (path, size, mtime) and remembered.

Size: ``LORAMERGE_COMFY_CACHE`` entries (default 2; 0 disables). A merged SDXL LoRA can take
several hundred MB in float32, so the default is small; ComfyUI itself also keeps node outputs
for as long as a workflow's inputs do not change.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from loramerge.config import LoraInput
from loramerge.inputs import file_sha256

_LOCK = threading.Lock()
_RESULTS: OrderedDict[Hashable, Any] = OrderedDict()
_SHA: dict[tuple[str, int, int], str] = {}
STATS = {"hits": 0, "misses": 0}


def max_entries() -> int:
    try:
        return max(0, int(os.environ.get("LORAMERGE_COMFY_CACHE", "2")))
    except ValueError:
        return 2


def file_identity(path: str) -> tuple[str, int, int, str]:
    """(real path, size, mtime in ns, SHA-256); the hash is computed once per (path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = (real, st.st_size, st.st_mtime_ns)
    if stamp not in _SHA:
        _SHA[stamp] = file_sha256(real)
    return (*stamp, _SHA[stamp])


def key_of(kind: str, inputs: Sequence[LoraInput], options: dict) -> tuple:
    files = tuple(file_identity(inp.path) for inp in inputs)
    return (kind, tuple(inputs), files, tuple(sorted((k, _hashable(v)) for k, v in options.items())))


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def cached(key: Hashable, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """(value, hit): the cached value for `key`, or `compute()` stored under it."""
    with _LOCK:
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            STATS["hits"] += 1
            return _RESULTS[key], True
    value = compute()
    with _LOCK:
        STATS["misses"] += 1
        limit = max_entries()
        if limit:
            _RESULTS[key] = value
            _RESULTS.move_to_end(key)
            while len(_RESULTS) > limit:
                _RESULTS.popitem(last=False)
    return value, False


def clear() -> None:
    with _LOCK:
        _RESULTS.clear()
        _SHA.clear()
        STATS.update(hits=0, misses=0)
