"""`loramerge extract`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..enums import OutputDtype, OutputFormat
from ..options import BY_FIELD
from ._app import ArchOpt, OverwriteOpt, app, console
from .common import advise, warn_widened
from .tools_common import DtypeOpt, ReportJsonOpt, module_table, write_json

ModelArg = Annotated[Path, typer.Argument(help="Checkpoint: a .safetensors file or a diffusers model folder.")]


@app.command()
def extract(
    base: ModelArg,
    finetuned: ModelArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output LoRA .safetensors path.")],
    rank: Annotated[
        Optional[int], typer.Option("--rank", help="Rank of every module (with --energy: the largest rank).")
    ] = None,
    energy: Annotated[
        Optional[float],
        typer.Option("--energy", help="Keep this fraction of each ΔW's energy Σσ² (e.g. 0.99); full SVD per module."),
    ] = None,
    te: Annotated[bool, typer.Option("--te", help="Extract the text encoders too.")] = False,
    min_diff: Annotated[
        float, typer.Option("--min-diff", help="Leave out tensors whose largest |ΔW| is at most this.")
    ] = 0.0,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.KOHYA,
    dtype: DtypeOpt = OutputDtype.AUTO,
    seed: Annotated[
        int, typer.Option("--seed", help=BY_FIELD["seed"].help[:1].upper() + BY_FIELD["seed"].help[1:] + ".")
    ] = 0,
    arch: ArchOpt = None,
    report_json: ReportJsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Extract a LoRA from two checkpoints: the per-module difference FINETUNED − BASE, by randomized SVD."""
    from ..tools import extract as run

    report = run(
        base,
        finetuned,
        out,
        rank=rank,
        energy=energy,
        te=te,
        min_diff=min_diff,
        arch=arch,
        fmt=fmt,
        dtype=dtype,
        seed=seed,
        overwrite=overwrite,
    )
    w = report.output
    console.print(
        f"wrote {w.path} ({w.format.value}, {w.dtype}, {report.architecture}): {len(report.modules)} modules, "
        f"worst relative error {report.worst_error:.2e}; {report.unchanged} adaptable tensors unchanged"
    )
    module_table(
        "largest errors", [(m.group, m.shape, m.rank, m.rel_error) for m in report.modules], ("rank", "rel. error")
    )
    for key, why in list(report.skipped.items())[:10]:
        console.print(f"  [yellow]not extracted[/yellow] {key}: {why}")
    if len(report.skipped) > 10:
        console.print(f"  ... and {len(report.skipped) - 10} more not extracted (see --report-json)")
    warn_widened(w.widened)
    advise(w.format.value, report.architecture)
    write_json(report_json, report)
