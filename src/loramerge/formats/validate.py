"""The safetensors header checked completely, before any tensor data is read or any memory sized by it.

The rules are the safetensors library's own (its ``Metadata::validate``): a JSON object without
duplicate keys or non-standard literals (``NaN``, ``Infinity``); every entry an object with a known
``dtype``, a ``shape`` of non-negative integers and two integer ``data_offsets`` ``begin <= end``;
the entries, sorted by offset, tile the data section exactly (contiguous, no gap, no overlap, no
aliasing, nothing after the last one); each one's byte count is ``prod(shape) * itemsize``;
``__metadata__`` maps strings to strings. So every size a reader later allocates is one the file
actually holds. Pure Python, no torch: the errors name the file and the key.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InputFileError

# bits per value of every dtype the safetensors format defines (the reader supports a subset)
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
_CORRUPT = "the file is corrupt or was not written by a safetensors library; re-download or re-save it"


class _Object(dict):
    """A JSON object as parsed, remembering the keys it held twice (json.loads keeps the last)."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    out = _Object(pairs)
    out.duplicates = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1] if len(out) < len(pairs) else []
    return out


class NonJson:
    """``NaN``/``Infinity`` as Python's json reads them (they are not JSON): kept as a marker, so that
    the check of the field that holds one names its key."""

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The header's JSON object (duplicate keys and NaN/Infinity literals are caught by `validate_header`)."""
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_object, parse_constant=NonJson)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InputFileError(path, f"safetensors header is not valid JSON ({exc})", hint=_CORRUPT) from None
    if not isinstance(obj, dict):
        raise InputFileError(path, f"safetensors header is a JSON {_kind(obj)}, not an object", hint=_CORRUPT)
    return obj


def _kind(x: Any) -> str:
    if isinstance(x, NonJson):
        return f"{x.literal} literal (not JSON)"
    return {
        dict: "object",
        _Object: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(x), type(x).__name__)


def _duplicates(path: Path, obj: dict, where: str | None) -> None:
    dups = getattr(obj, "duplicates", None)
    if dups:
        field = f"'{dups[0]}'" if where else "the key"
        raise InputFileError(
            path,
            f"{field} appears twice in the safetensors header (which one is meant is ambiguous)",
            key=where or dups[0],
            hint=_CORRUPT,
        )


def validate_header(path: Path, header: dict[str, Any], data_size: int) -> tuple[dict[str, dict], dict[str, str]]:
    """Check a parsed header against a data section of `data_size` bytes; returns (entries, metadata)
    with every number a plain int."""
    _duplicates(path, header, None)
    metadata = _metadata(path, header.pop("__metadata__", None))
    entries = {key: _entry(path, key, info) for key, info in header.items()}
    _check_layout(path, entries, data_size)
    return entries, metadata


def _metadata(path: Path, meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InputFileError(path, f"__metadata__ is a JSON {_kind(meta)}, not an object of strings", hint=_CORRUPT)
    if getattr(meta, "duplicates", None):
        raise InputFileError(
            path,
            "the metadata key appears twice in the safetensors header (which value is meant is ambiguous)",
            key=f"__metadata__.{meta.duplicates[0]}",  # type: ignore[attr-defined]
            hint=_CORRUPT,
        )
    for k, v in meta.items():
        if not isinstance(v, str):
            raise InputFileError(
                path,
                f"metadata value is a JSON {_kind(v)}; safetensors metadata values are strings",
                key=f"__metadata__.{k}",
                hint="re-save the file with the value written as a string (json.dumps it)",
            )
    return dict(meta)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _entry(path: Path, key: str, info: Any) -> dict:
    def bad(problem: str) -> InputFileError:
        return InputFileError(path, problem, key=key, hint=_CORRUPT)

    if not isinstance(info, dict):
        raise bad(f"header entry is a JSON {_kind(info)}, not an object with dtype, shape and data_offsets")
    _duplicates(path, info, key)
    missing = [f for f in ("dtype", "shape", "data_offsets") if f not in info]
    if missing:
        raise bad(f"header entry has no {' or '.join(missing)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(f"unknown dtype {dtype!r} (safetensors dtypes: {', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise bad(f"shape {_short(shape)} is not a list of integers")
    if any(d < 0 for d in shape):
        raise bad(f"shape {_short(shape)} has a negative dimension")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise bad(f"data_offsets {_short(offsets)} is not a pair of integers [begin, end]")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise bad(f"data_offsets [{_short(begin)}, {_short(end)}] do not satisfy 0 <= begin <= end")
    values = _bounded_prod(shape, (end - begin) * 8)
    bits = values * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        needs = f"more than {_short(end - begin)}" if bits > (end - begin) * 8 else f"{bits / 8:g}"
        raise bad(f"shape {_short(shape)} of {dtype} needs {needs} bytes, data_offsets give {_short(end - begin)}")
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def _bounded_prod(shape: list[int], limit: int) -> int:
    """prod(shape), or limit + 1 as soon as it exceeds `limit` (a shape of huge numbers costs nothing)."""
    if 0 in shape:
        return 0
    n = 1
    for d in shape:
        n *= d
        if n > limit:
            return limit + 1
    return n


def _check_layout(path: Path, entries: dict[str, dict], data_size: int) -> None:
    """Each tensor inside the data section; then, sorted by offset, each begins where the last ended."""
    for key, info in entries.items():
        begin, end = info["data_offsets"]
        if end > data_size and begin >= data_size and begin > 0:
            raise InputFileError(
                path,
                f"data_offsets begin at byte {_short(begin)}, past the end of the data ({data_size} bytes)",
                key=key,
                hint=_CORRUPT,
            )
        if end > data_size:
            raise InputFileError(
                path,
                f"truncated: tensor data ends at byte {_short(end)} of the data section, the file holds {data_size}",
                key=key,
                hint="the file is truncated: re-download or re-save it",
            )
    at, previous = 0, None
    for key, info in sorted(entries.items(), key=lambda kv: (*kv[1]["data_offsets"], kv[0])):
        begin, end = info["data_offsets"]
        if begin > at:
            raise InputFileError(
                path,
                f"a gap of {begin - at} byte(s) before the tensor's data (from {at} to {begin})",
                key=key,
                hint=_CORRUPT,
            )
        if begin < at:
            raise InputFileError(
                path, f"the tensor's data (bytes {begin}..{end}) overlaps that of '{previous}'", key=key, hint=_CORRUPT
            )
        at, previous = end, key
    if at != data_size:
        raise InputFileError(
            path,
            f"{data_size - at} byte(s) after the last tensor that no header entry describes",
            key=previous,
            hint=_CORRUPT,
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
