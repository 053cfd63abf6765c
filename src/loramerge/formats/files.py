"""Opening tensor files safely: safetensors lazily, pickles only when explicitly allowed.

Every failure becomes an `InputFileError` naming the file (and key) with a remedy; nothing from
deep inside safetensors or torch reaches the user as a bare traceback.
"""

from __future__ import annotations

import math
import mmap
import struct
import sys
from pathlib import Path

import torch

from ..errors import InputFileError, PickleRefusedError
from .validate import parse_header, validate_header

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Parse and validate a safetensors header without touching tensor data:
    ({key: {dtype, shape, data_offsets}}, metadata). See `validate` for the rules."""
    path = Path(path)
    try:
        if not path.exists():
            raise InputFileError(path, "file not found", hint="check the path")
        if path.is_dir():
            raise InputFileError(path, "is a directory, not a LoRA file", hint="pass the .safetensors file inside it")
        size = path.stat().st_size
    except OSError as exc:  # a folder on the way that cannot be read, a name too long, ...
        problem = f"cannot open: {exc.strerror or exc}"
        raise InputFileError(path, problem, hint="check the path and its permissions") from None
    if size == 0:
        raise InputFileError(path, "file is empty (0 bytes)", hint="the download or save was probably interrupted")
    if path.suffix.lower() in PICKLE_SUFFIXES or (_looks_pickled(path) and not _looks_safetensors(path, size)):
        raise PickleRefusedError(
            path,
            "is a pickle checkpoint; loramerge never unpickles files by default (pickles can run code)",
            hint="convert it to .safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)",
        )
    head = read_exactly(path, 0, 8, "the header length")
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > min(size - 8, _MAX_HEADER):
        raise InputFileError(
            path,
            f"truncated or not safetensors: header claims {n} bytes, file has {size}",
            hint="re-download or re-save the file",
        )
    header = parse_header(path, read_exactly(path, 8, n, "the header"))
    return validate_header(path, header, size - 8 - n)


def read_exactly(path: Path, offset: int, length: int, what: str, key: str | None = None) -> bytes:
    """`length` bytes at `offset`, or an `InputFileError` (short read, I/O error) naming `what`."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(length)
    except OSError as exc:
        raise InputFileError(
            path, f"cannot read {what}: {exc.strerror or exc}", key=key, hint="check the file and the disk it is on"
        ) from None
    if len(raw) != length:
        raise InputFileError(
            path,
            f"{what} is cut short: {len(raw)} of {length} bytes (the file changed or is truncated)",
            key=key,
            hint="re-download or re-save the file",
        )
    return raw


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise InputFileError(
            path, f"cannot read the file: {exc.strerror or exc}", hint="check its permissions"
        ) from None


def _looks_safetensors(path: Path, size: int) -> bool:
    head = _head(path, 9)
    return len(head) == 9 and struct.unpack("<Q", head[:8])[0] <= size - 8 and head[8:9] == b"{"


def _looks_pickled(path: Path) -> bool:
    magic = _head(path, 4)
    return magic[:2] == b"PK" or magic[:1] == b"\x80"


class TensorSource:
    """Lazy access to the tensors of one file. Safetensors are memory-mapped; allowed pickles load once."""

    def __init__(self, path: Path, *, allow_pickle: bool = False):
        self.path = Path(path)
        self._pickled: dict[str, torch.Tensor] | None = None
        try:
            size = self.path.stat().st_size if self.path.is_file() else 0
        except OSError:
            size = 0  # read_header below says what is wrong with the path
        pickled = _looks_pickled(self.path) and not _looks_safetensors(self.path, size) if size else False
        if allow_pickle and (self.path.suffix.lower() in PICKLE_SUFFIXES or pickled):
            self._pickled = _load_pickle(self.path)
            self.shapes = {k: tuple(v.shape) for k, v in self._pickled.items()}
            self.dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in self._pickled.items()}
            self.metadata: dict[str, str] = {}
        else:
            header, self.metadata = read_header(self.path)
            self._data_start = 8 + struct.unpack("<Q", read_exactly(self.path, 0, 8, "the header length"))[0]
            # compact forms only: the parsed JSON of a big header is ~1 MiB of small objects per file
            self.shapes = {k: tuple(v["shape"]) for k, v in header.items()}
            self.dtypes = {k: sys.intern(v["dtype"]) for k, v in header.items()}
            self._offsets = {k: (v["data_offsets"][0], v["data_offsets"][1]) for k, v in header.items()}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def get(self, key: str) -> torch.Tensor:
        return self.get_many([key])[key]

    def get_many(self, keys: list[str], *, own_pages: bool = False) -> dict[str, torch.Tensor]:
        """Read tensors by plain positioned reads (no memory map of the file): what a group loads is
        freed with it, so resident memory stays bounded by one group however many files are merged.

        ``own_pages``: each tensor's buffer is an anonymous memory map of its own, returned to the
        system the moment the tensor is freed; for streaming large tensors one after another, where
        the C allocator would keep the freed buffers (checkpoints: `loramerge bake`)."""
        if self._pickled is not None:
            return {k: self._pickled[k] for k in keys}
        out = {}
        try:
            with open(self.path, "rb") as fh:
                for key in keys:
                    start, end = self._offsets[key]
                    fh.seek(self._data_start + start)
                    size = end - start  # read straight into the tensor's buffer: no second copy
                    raw: bytearray | mmap.mmap = mmap.mmap(-1, size) if own_pages and size else bytearray(size)
                    if fh.readinto(raw) != size:
                        raise InputFileError(
                            self.path, "tensor data is cut short", key=key, hint="the file is truncated or changed"
                        )
                    out[key] = _tensor(raw, self.dtypes[key], self.shapes[key], self.path, key)
        except OSError as exc:
            raise InputFileError(
                self.path, f"cannot read tensor data: {exc.strerror or exc}", hint="check the file and its disk"
            ) from None
        return out


# safetensors dtype name -> torch attribute. The unsigned 16/32/64-bit dtypes arrived in torch 2.3;
# an older torch (pyproject allows 2.2) simply lacks them and such tensors are refused by name.
_TORCH_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
}
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, attr) for name, attr in _TORCH_DTYPE_NAMES.items() if hasattr(torch, attr)
}


def unsupported_dtype_hint(dtype_name: str) -> str | None:
    """What to do about a dtype this torch cannot hold (None when the name is not a safetensors dtype)."""
    if dtype_name in _TORCH_DTYPE_NAMES:
        return f"torch {torch.__version__} has no torch.{_TORCH_DTYPE_NAMES[dtype_name]}; upgrade torch (>= 2.3)"
    return None


def _tensor(raw: bytearray | mmap.mmap, dtype_name: str, shape: tuple[int, ...], path: Path, key: str) -> torch.Tensor:
    dtype = SAFETENSORS_DTYPES.get(dtype_name)
    if dtype is None:
        raise InputFileError(
            path, f"unsupported tensor dtype {dtype_name}", key=key, hint=unsupported_dtype_hint(dtype_name)
        )
    if not len(raw):
        return torch.empty(list(shape), dtype=dtype)
    flat = torch.frombuffer(raw, dtype=dtype)
    if flat.numel() != math.prod(shape):
        raise InputFileError(
            path, f"tensor has {flat.numel()} values for shape {shape}", key=key, hint="the file is corrupt"
        )
    return flat.reshape(shape)


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here; all mean "not a plain tensor dict"
        raise InputFileError(
            path,
            f"cannot load as a weights-only pickle: {exc}",
            hint="only plain tensor dictionaries are accepted; convert the file to .safetensors",
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputFileError(path, "pickle does not hold a flat dictionary of tensors")
    return {str(k): v for k, v in obj.items()}
