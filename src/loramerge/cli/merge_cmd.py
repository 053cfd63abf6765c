"""`loramerge merge` and `loramerge analyze`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._app import OverwriteOpt, app, console
from .common import (
    LorasArg,
    advise,
    build_config,
    emit_report,
    normalised,
    progress_bar,
    warn_widened,
    with_inputs_options,
    with_merge_options,
)


@app.command()
@with_merge_options
def merge(
    loras: LorasArg = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Output .safetensors path.")] = None,
    preserve: Annotated[
        Optional[list[str]], typer.Option("--preserve", help="Hold this input out of the merge; add it on top.")
    ] = None,
    include: Annotated[Optional[list[str]], typer.Option("--include", help="Only targets matching this regex.")] = None,
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Leave out targets matching this regex.")
    ] = None,
    recipe: Annotated[
        Optional[Path],
        typer.Option(
            "--recipe",
            help="Run a YAML/JSON recipe (one merge or a tree of steps) or re-run a loramerge output file.",
        ),
    ] = None,
    formula: Annotated[
        Optional[str],
        typer.Option(
            "--formula",
            help="Merge in steps: '(1+2):0.6 + 3:0.4' (numbers = the LoRA arguments; each bracket is a merge step). "
            "See docs/RECIPES.md.",
        ),
    ] = None,
    allow_changed_inputs: Annotated[
        bool,
        typer.Option(
            "--allow-changed-inputs",
            help="Run a recipe even where an input's SHA-256 differs from the recorded one.",
        ),
    ] = False,
    report_json: Annotated[Optional[Path], typer.Option("--report-json", help="Write the report as JSON here.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Merge and report, write no LoRA.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no report on the terminal.")] = False,
    overwrite: OverwriteOpt = False,
    **options: Any,
) -> None:
    """Merge LoRAs into one, choosing the strategy per weight group."""
    from ..api import merge as run_merge

    if out is None and not dry_run:
        raise typer.BadParameter("give -o OUT.safetensors (or --dry-run)")
    built = build_config(loras, recipe, normalised(options), formula=formula, allow_changed_inputs=allow_changed_inputs)
    cfg = with_inputs_options(built, preserve, include, exclude)
    with progress_bar(quiet) as progress:
        result = run_merge(cfg, progress=progress, output=None if dry_run else out, overwrite=overwrite)
    with result:
        emit_report(result.report, report_json, quiet)
        if result.report.output is not None:
            warn_widened(result.report.output.widened)
            advise(result.report.output.format, result.inputs.architecture)


@app.command()
@with_merge_options
def analyze(
    loras: LorasArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan and statistics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    **options: Any,
) -> None:
    """Run pass 1 and the plan only: statistics and decisions per group; writes nothing."""
    from ..api import analyze as run_analyze
    from ..config import MergeConfig

    cfg = build_config(loras, None, normalised(options))
    assert isinstance(cfg, MergeConfig)
    with progress_bar(quiet or as_json) as progress:
        report = run_analyze(cfg, progress=progress).report()
    if as_json:
        print(report.to_json())
    else:
        from ..report import render_text

        render_text(report, console)
