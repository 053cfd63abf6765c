"""`loramerge tune`: the AutoTuner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..enums import TunerMemory
from ._app import OverwriteOpt, app, console, err
from .common import LorasArg, build_config, normalised, progress_bar, warn_widened, with_merge_options


@app.command()
@with_merge_options
def tune(
    loras: LorasArg = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write the best candidate's merge here.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Candidates merged and measured in phase 2.")] = 3,
    evaluate: Annotated[
        Optional[str],
        typer.Option(
            "--evaluate",
            help="Command scoring a merged file: '{merged}' is replaced by its path; it prints JSON "
            '(a number, or {"score": x, ...}); higher is better. Also sweeps a global strength λ.',
        ),
    ] = None,
    evaluator_timeout: Annotated[
        float, typer.Option("--evaluator-timeout", min=0.001, help="Seconds the evaluator may take per candidate.")
    ] = 600.0,
    tuner_data: Annotated[
        Optional[Path], typer.Option("--tuner-data", help="Write the ranked candidates (tuner data) as JSON here.")
    ] = None,
    budget: Annotated[
        Optional[float], typer.Option("--budget", min=0, help="Seconds after which phase 2 stops (it says so).")
    ] = None,
    min_gain: Annotated[
        float,
        typer.Option(
            "--min-gain",
            min=0,
            help="With --evaluate: another candidate must beat the untuned configuration's score by more than "
            "this (your evaluator's noise).",
        ),
    ] = 0.0,
    memory: Annotated[
        TunerMemory, typer.Option("--memory", help="Replay and store results of earlier sweeps of the same stack.")
    ] = TunerMemory.AUTO,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Candidates shown in the table.")] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table.")] = False,
    overwrite: OverwriteOpt = False,
    **options: Any,
) -> None:
    """Search the merge options for these LoRAs: a heuristic sweep, then the best candidates merged and
    measured. Options given here are pinned (not swept); see docs/TUNER.md."""
    from ..atomic import check_output
    from ..autotune import CommandEvaluator
    from ..autotune import tune as run_tune
    from ..autotune.grid import SWEPT
    from ..autotune.render import render_table

    given = {k: v for k, v in normalised(options).items() if v is not None}
    cfg = build_config(loras, None, given)
    if tuner_data is not None:
        check_output(tuner_data, [inp.path for inp in cfg.inputs], overwrite=True, suffix=None)
    evaluator = CommandEvaluator(evaluate, evaluator_timeout) if evaluate else None
    with progress_bar(quiet) as progress:
        result = run_tune(
            cfg,
            pinned={k: v for k, v in given.items() if k in SWEPT},
            top=top,
            evaluator=evaluator,
            budget=budget,
            min_gain=min_gain,
            memory_mode=memory,
            progress=progress,
            output=out,
            overwrite=overwrite,
        )
    if tuner_data is not None:
        from ..autotune import data

        data.save(result.data, tuner_data)
    if not quiet:
        render_table(result.data, console, rows=rows, replayed=result.replayed)
    for note in result.notes if quiet else ():
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.output is not None:
        warn_widened(result.output.widened)
        if not quiet:
            console.print(f"wrote {result.output.path} (candidate 1: {result.candidates[0]['label']})")
