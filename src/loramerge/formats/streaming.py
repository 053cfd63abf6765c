"""A safetensors file written tensor by tensor, atomically (`StreamingSafetensors`), and the value
checks every written tensor passes (`check_finite`, `narrowed`): the byte-level half of the writers,
shared by the LoRA writers (`writers.py`) and checkpoint baking (`tools/bake.py`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from ..atomic import publish
from ..errors import OutputError
from .checks import count_not_finite, max_abs
from .files import SAFETENSORS_DTYPES

_ALL_ST_DTYPES = {t: name for name, t in SAFETENSORS_DTYPES.items()}
_ST_DTYPES = {t: name for t, name in _ALL_ST_DTYPES.items() if t.is_floating_point and t.itemsize >= 2}  # F64..BF16


def narrowed(t: torch.Tensor, dtype: torch.dtype, largest: float | None = None) -> torch.Tensor:
    """`t` in `dtype`, or in float32 when some finite value of `t` overflows `dtype` (a half type);
    `largest`: max |t| when the caller has it already (`check_finite`)."""
    if dtype.itemsize < 4 and t.is_floating_point() and t.numel():
        largest = max_abs(t) if largest is None else largest
        if math.isfinite(largest) and largest > torch.finfo(dtype).max:
            return t.to(torch.float32).contiguous()
    return t.to(dtype).contiguous()


def check_finite(where: str, name: str, tensor: torch.Tensor) -> float | None:
    """Refuse a merged tensor holding NaN/Inf: raised while the file is still a temporary, so nothing
    is renamed into place (the inputs are finite; this is an overflow in the merge itself). Returns
    max |x| (None for a non-float or empty tensor), which `narrowed` reuses."""
    if tensor.is_floating_point() and tensor.numel():
        largest = max_abs(tensor)
        if not math.isfinite(largest):
            bad = count_not_finite(tensor)
            raise OutputError(
                f"{where}: merged tensor '{name}' has {bad} NaN/Inf value(s); nothing was written\n"
                "  -> the merge overflowed float32: lower the strengths, and check the inputs "
                "(`loramerge inspect`; the report warns of values at the float16 limit)"
            )
        return largest
    return None


class StreamingSafetensors:
    """A safetensors file written tensor by tensor, atomically.

    Tensor data goes to a hidden temporary file in the target folder as it comes; `commit` writes
    the header (sorted keys, so the same content gives the same bytes), copies the data after it
    into a second temporary file and renames that into place. On any failure both temporary files
    are removed and nothing is left at `path`."""

    def __init__(self, path: Path, dtype: torch.dtype = torch.float32):
        if dtype not in _ST_DTYPES:
            raise OutputError(f"{path}: cannot write tensors as {dtype}; use float32, float16 or bfloat16")
        if not path.parent.exists():
            raise OutputError(f"{path}: folder {path.parent} does not exist")
        self.path, self.dtype = path, dtype
        self.entries: dict[str, dict] = {}
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".data.tmp", dir=path.parent)
        self._data = os.fdopen(fd, "w+b")
        self._data_path = Path(name)
        self._end = 0
        self.widened: list[str] = []

    @property
    def count(self) -> int:
        return len(self.entries)

    def add(self, name: str, tensor: torch.Tensor, *, as_is: bool = False) -> None:
        """Append one tensor: in the file's dtype (float32 where a value overflows it), or with
        ``as_is`` in its own dtype (any safetensors dtype: a checkpoint's integer buffers included)."""
        if name in self.entries:
            raise OutputError(f"{self.path}: two tensors named '{name}'")
        largest = check_finite(str(self.path), name, tensor)
        t = tensor.detach().to("cpu").contiguous()
        if not as_is:
            t = narrowed(t, self.dtype, largest)
            if t.dtype != self.dtype:
                self.widened.append(name)
        if t.dtype not in _ALL_ST_DTYPES:
            raise OutputError(f"{self.path}: tensor '{name}' has dtype {t.dtype}, which safetensors cannot hold")
        raw = t.reshape(-1).view(torch.uint8).numpy()
        self._data.write(memoryview(raw))  # type: ignore[arg-type]  # numpy: buffer protocol
        self.entries[name] = {
            "dtype": _ALL_ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [self._end, self._end + raw.nbytes],
        }
        self._end += raw.nbytes

    def commit(self, metadata: dict[str, str]) -> None:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **self.entries}
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-(8 + len(text)) % 8)  # data starts 8-byte aligned, as safetensors writes it
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(struct.pack("<Q", len(text)) + text)
                out.flush()
                self._data.flush()
                _copy_data(self._data, out, self._end)
            publish(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __enter__(self) -> StreamingSafetensors:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._data.close()  # may raise: buffered data that cannot be flushed (a full disk)
        finally:
            self._data_path.unlink(missing_ok=True)


def _copy_data(src, dst, size: int) -> None:
    """Append the first `size` bytes of file `src` to file `dst` (both flushed): in the kernel where
    the platform can (`os.sendfile`), else through a buffer."""
    if hasattr(os, "sendfile"):
        offset = 0
        while offset < size:
            sent = os.sendfile(dst.fileno(), src.fileno(), offset, size - offset)
            if sent == 0:
                raise OSError(f"{src.name}: short read while assembling the output")
            offset += sent
        return
    src.seek(0)
    shutil.copyfileobj(src, dst, 16 << 20)
