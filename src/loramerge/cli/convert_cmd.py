"""`loramerge convert`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..enums import OutputDtype, OutputFormat
from ..options import BY_FIELD
from ..report.terminal import shown
from ._app import ArchOpt, BaseOpt, OverwriteOpt, PickleOpt, app, console
from .common import advise, warn_widened


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Input LoRA file.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .safetensors path.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.KOHYA,
    arch: ArchOpt = None,
    base: BaseOpt = None,
    allow_pickle: PickleOpt = False,
    lenient: Annotated[bool, typer.Option("--lenient", help="Continue past keys that do not fit (listed).")] = False,
    lossy: Annotated[
        bool, typer.Option("--lossy", help="Allow dropping content the format cannot hold (listed).")
    ] = False,
    dtype: Annotated[
        OutputDtype, typer.Option("--dtype", help=BY_FIELD["dtype"].help[:1].upper() + BY_FIELD["dtype"].help[1:] + ".")
    ] = OutputDtype.AUTO,
    overwrite: OverwriteOpt = False,
) -> None:
    """Rewrite a LoRA in the kohya, diffusers or comfy format, preserving every ΔW."""
    from ..convert import convert as run
    from ..formats.files import read_header

    report = run(
        src,
        out,
        fmt,
        arch=arch,
        base=base,
        strict=not lenient,
        allow_pickle=allow_pickle,
        lossy=lossy,
        dtype=dtype,
        overwrite=overwrite,
    )
    written = read_header(report.path)[1]
    console.print(
        f"wrote {shown(report.path)} ({report.format.value}, {report.dtype}): {report.modules} modules, "
        f"{report.tensors} tensors",
        soft_wrap=True,  # a path is never broken across lines (copied from a pipe or a log)
    )
    warn_widened(report.widened)
    advise(report.format.value, written.get("loramerge.architecture", "unknown"))
    for label, e in report.conversions.items():
        console.print(f"  converted to LoRA by SVD: {shown(label)} (relative error {e:.2e})")
    for label in report.dropped:
        console.print(f"  [yellow]dropped (format cannot hold it)[/yellow]: {shown(label)}")
