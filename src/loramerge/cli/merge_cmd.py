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
    note,
    progress_bar,
    warn_repeated,
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
        Optional[Path], typer.Option("--recipe", help="Re-run a YAML/JSON recipe or a loramerge output file.")
    ] = None,
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
    cfg = with_inputs_options(build_config(loras, recipe, normalised(options)), preserve, include, exclude)
    output = None if dry_run else out
    check_report_path(report_json, output, [inp.path for inp in cfg.inputs] + ([recipe] if recipe else []), overwrite)
    warn_repeated(cfg)
    new_output = output is not None and not output.exists()
    with progress_bar(quiet) as progress:
        result = run_merge(cfg, progress=progress, output=output, overwrite=overwrite)
    with result:
        try:
            emit_report(result.report, report_json, quiet)
        except BaseException:  # a failed run leaves nothing new behind: not the LoRA without its report
            if new_output:
                output.unlink(missing_ok=True)  # type: ignore[union-attr]
            raise
        if result.report.output is not None:
            warn_widened(result.report.output.widened)
            advise(result.report.output.format, result.inputs.architecture)
        note_device(cfg.device, [d.path for d in result.plan.decisions.values()])
    if dry_run:
        note("dry run: no LoRA file was written" + (f"; the report is in {report_json}" if report_json else ""))


def check_report_path(report_json: Path | None, output: Path | None, inputs: list, overwrite: bool) -> None:
    """The --report-json file is checked as the LoRA is, before the merge (not after the LoRA is written)."""
    from ..errors import OutputError
    from ..formats.writers import check_output

    if report_json is None:
        return
    if output is not None and report_json.resolve() == output.resolve():
        raise OutputError(f"--report-json {report_json}: is the -o file too; give the report its own name (.json)")
    try:
        check_output(report_json, inputs, overwrite=overwrite, suffix=None)
    except OutputError as exc:
        raise OutputError(f"--report-json {exc}") from None


def note_device(device: str, paths: list[str]) -> None:
    """Say where --device was (and was not) used: dense groups compute there, the rest on the CPU."""
    if device == "cpu":
        return
    dense = paths.count("dense")
    note(
        f"--device {device} computed the {dense} group(s) merged on dense deltas; the other {len(paths) - dense} "
        "(exact low-rank sums, shared-basis merges) and the statistics are computed on the CPU from the "
        "LoRA factors, so that their bytes are the same on every machine (docs/DECISIONS.md)"
    )


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

    cfg = build_config(loras, None, normalised(options))
    warn_repeated(cfg)
    with progress_bar(quiet or as_json) as progress:
        report = run_analyze(cfg, progress=progress).report()
    if as_json:
        print(report.to_json())
    else:
        from ..report import render_text

        render_text(report, console)
