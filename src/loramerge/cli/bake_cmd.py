"""`loramerge bake`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..enums import OutputDtype
from ._app import OverwriteOpt, app, console
from .common import normalised, progress_bar, with_merge_options
from .tools_common import SHOWN, ReportJsonOpt, write_json

# a LoRA's output format and precision mean nothing here (the checkpoint's --dtype is bake's own),
# and the checkpoint itself is the base model
LEFT_OUT = ("format", "dtype", "base")


@app.command()
@with_merge_options(leave_out=LEFT_OUT)
def bake(
    model: Annotated[Path, typer.Argument(help="Checkpoint .safetensors (single file, or one component's file).")],
    loras: Annotated[list[str], typer.Argument(help="LoRA files as PATH[:STRENGTH[,TE_STRENGTH]].")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output checkpoint .safetensors path.")],
    dtype: Annotated[
        OutputDtype,
        typer.Option("--dtype", help="Precision of the checkpoint's floating tensors (auto: as stored)."),
    ] = OutputDtype.AUTO,
    skip_missing: Annotated[
        bool, typer.Option("--skip-missing", help="Bake what fits when the checkpoint lacks LoRA targets (listed).")
    ] = False,
    report_json: ReportJsonOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, only the summary line.")] = False,
    overwrite: OverwriteOpt = False,
    **options: Any,
) -> None:
    """Apply LoRAs to a checkpoint (several are merged first, with the merge options) and write the model."""
    from ..api import bake as run

    given = {k: v for k, v in normalised(options).items() if v is not None}
    with progress_bar(quiet) as progress:
        report = run(
            model, loras, out, dtype=dtype, skip_missing=skip_missing, overwrite=overwrite, progress=progress, **given
        )
    console.print(
        f"wrote {report.path} ({report.architecture}, floating tensors {report.dtype}): {report.tensors} tensors, "
        f"{len(report.patched)} changed"
    )
    if not quiet:
        for key, ratio in sorted(report.patched.items(), key=lambda kv: -kv[1])[:SHOWN]:
            console.print(f"  {key}: ‖ΔW‖/‖W‖ = {ratio:.2e}")
    for group in report.skipped[:SHOWN]:
        console.print(f"  [yellow]not in the checkpoint, skipped[/yellow]: {group}")
    if len(report.skipped) > SHOWN:
        console.print(f"  ... and {len(report.skipped) - SHOWN} more skipped (see --report-json)")
    if report.widened:
        console.print(
            f"  [yellow]kept in float32 (out of the {report.dtype} range)[/yellow]: {', '.join(report.widened[:5])}"
        )
    write_json(report_json, report)
