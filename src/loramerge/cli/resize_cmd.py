"""`loramerge resize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..enums import OutputDtype, OutputFormat
from ._app import ArchOpt, OverwriteOpt, app, console
from .common import advise, warn_widened
from .tools_common import DtypeOpt, ReportJsonOpt, module_table, write_json

FloatOpt = Optional[float]


@app.command()
def resize(
    src: Annotated[Path, typer.Argument(help="Input LoRA file.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .safetensors path.")],
    rank: Annotated[
        Optional[int], typer.Option("--rank", help="Rank of every module (with an --sv-* criterion: the largest).")
    ] = None,
    conv_rank: Annotated[Optional[int], typer.Option("--conv-rank", help="--rank for conv modules.")] = None,
    sv_ratio: Annotated[
        FloatOpt, typer.Option("--sv-ratio", help="Keep the singular values above σ_max / R (kohya sv_ratio).")
    ] = None,
    sv_fro: Annotated[
        FloatOpt, typer.Option("--sv-fro", help="Keep this share of each ΔW's Frobenius norm (kohya sv_fro).")
    ] = None,
    sv_cumulative: Annotated[
        FloatOpt, typer.Option("--sv-cumulative", help="Keep this share of Σσ (kohya sv_cumulative).")
    ] = None,
    prune_threshold: Annotated[
        FloatOpt,
        typer.Option("--prune-threshold", help="Then set factor entries with |x| ≤ T to 0 (the guide's pruning)."),
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.KOHYA,
    dtype: DtypeOpt = OutputDtype.AUTO,
    arch: ArchOpt = None,
    lenient: Annotated[bool, typer.Option("--lenient", help="Continue past keys that do not fit (listed).")] = False,
    report_json: ReportJsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Resize a LoRA's ranks (kohya resize_lora semantics, exact from the factors) and/or prune it."""
    from ..tools import Criterion
    from ..tools import resize as run

    criterion = Criterion(rank, conv_rank, sv_ratio, sv_fro, sv_cumulative)
    report = run(
        src,
        out,
        criterion=criterion,
        prune_threshold=prune_threshold,
        arch=arch,
        fmt=fmt,
        dtype=dtype,
        strict=not lenient,
        overwrite=overwrite,
    )
    w = report.output
    ranks = [m.rank for m in report.modules if m.rank is not None]
    console.print(
        f"wrote {w.path} ({w.format.value}, {w.dtype}): {len(report.modules)} modules, kept rank "
        f"{min(ranks, default=0)}-{max(ranks, default=0)}, worst relative error of ΔW {report.worst_error:.2e}"
    )
    pruning = prune_threshold is not None
    rows: list[tuple] = []
    for m in report.modules:
        if m.rank is not None:
            extra = (m.pruned, m.prune_change) if pruning else ()
            rows.append((m.group, m.shape, m.input_rank or "dense", m.rank, m.fro_retained, *extra, m.rel_error))
    headers = ("input rank", "kept rank", "fro retained", *(("pruned", "prune change") if pruning else ()))
    module_table("largest ΔW errors", rows, (*headers, "rel. error"))
    warn_widened(w.widened)
    advise(w.format.value, report.architecture)
    write_json(report_json, report)
