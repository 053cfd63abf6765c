"""`convert`: rewrite one LoRA file in another client's format, preserving every ΔW."""

from __future__ import annotations

from pathlib import Path

from . import architectures as A
from .atomic import check_output
from .basemodel import BaseModel
from .enums import UNKNOWN_ARCH, OutputDtype, OutputFormat
from .formats.align import load_group
from .formats.kohya_meta import carried_metadata
from .formats.writers import OutputItem, WriteReport, write
from .inspection import open_and_align
from .threads import single_threaded_ops


def convert(
    src: str | Path,
    dst: str | Path,
    fmt: OutputFormat | str = OutputFormat.KOHYA,
    *,
    arch: str | None = None,
    base: str | Path | None = None,
    strict: bool = True,
    allow_pickle: bool = False,
    lossy: bool = False,
    dtype: OutputDtype | str = OutputDtype.AUTO,
    overwrite: bool = False,
) -> WriteReport:
    """Read `src`, place every key, write `dst` in `fmt` and `dtype` (auto: the source's half
    precision, see `OutputDtype`). Strict: any unplaced key is an error."""
    check_output(dst, [src], overwrite=overwrite)
    with single_threaded_ops():  # small per-tensor work: see threads.py
        return _convert(src, dst, fmt, arch, base, strict, allow_pickle, lossy, dtype)


def _convert(src, dst, fmt, arch, base, strict, allow_pickle, lossy, dtype) -> WriteReport:
    file, alignment, _ = open_and_align(src, arch=arch, strict=strict, allow_pickle=allow_pickle)
    table = None if alignment.architecture == UNKNOWN_ARCH else A.get_table(alignment.architecture)
    base_model = BaseModel.open(base, table) if base else None
    items = []
    for group, contributions in alignment.groups.items():
        c = contributions[0]
        weight = base_model.weight(c.base_target) if base_model and c.entry.has_dora else None
        items.append(OutputItem(c.placement, c.param, load_group(alignment, table, group, weight)))
    meta = {**carried_metadata([file.metadata], alignment.architecture), "loramerge.source": Path(src).name}
    resolved = OutputDtype(dtype).resolved(file.dtypes)
    return write(dst, items, table, fmt, metadata=meta, lossy=lossy, dtype=resolved.torch)
