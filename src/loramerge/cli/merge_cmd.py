"""`loramerge merge` and `loramerge analyze`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..enums import ReportSort
from ._app import OverwriteOpt, app, console
from .common import (
    LorasArg,
    ReportHtmlOpt,
    SortOpt,
    advise,
    build_config,
    check_report_html,
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
        Optional[Path],
        typer.Option(
            "--recipe",
            help="Run a YAML/JSON recipe (one merge or a tree of steps) or re-run a loramerge output file.",
        ),
    ] = None,
    tuner_data: Annotated[
        Optional[Path], typer.Option("--tuner-data", help="Merge a candidate of this tuner data (loramerge tune).")
    ] = None,
    select: Annotated[
        Optional[int], typer.Option("--select", help="Which candidate of --tuner-data (1 = the best; default 1).")
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
    report_html: ReportHtmlOpt = None,
    sort: SortOpt = ReportSort.CONFLICT,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Merge and report, write no LoRA.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no report on the terminal.")] = False,
    overwrite: OverwriteOpt = False,
    **options: Any,
) -> None:
    """Merge LoRAs into one, choosing the strategy per weight group."""
    from ..api import merge as run_merge

    if out is None and not dry_run:
        raise typer.BadParameter("give -o OUT.safetensors (or --dry-run)")
    base = _selected(tuner_data, select, recipe)
    built = build_config(
        loras, recipe, normalised(options), base, formula=formula, allow_changed_inputs=allow_changed_inputs
    )
    cfg = with_inputs_options(built, preserve, include, exclude)
    check_report_html(report_html)
    output = None if dry_run else out
    given = [inp.path for inp in getattr(cfg, "inputs", ())] + ([recipe] if recipe else [])
    for report_path in (report_json, report_html):
        check_report_path(report_path, output, given, overwrite)
    if hasattr(cfg, "inputs"):
        warn_repeated(cfg)
    new_output = output is not None and not output.exists()
    with progress_bar(quiet) as progress:
        result = run_merge(cfg, progress=progress, output=output, overwrite=overwrite)
    with result:
        try:
            emit_report(result.report, report_json, quiet, report_html=report_html, sort=sort)
        except BaseException:  # a failed run leaves nothing new behind: not the LoRA without its report
            if new_output:
                output.unlink(missing_ok=True)  # type: ignore[union-attr]
            raise
        if result.report.output is not None:
            warn_widened(result.report.output.widened)
            advise(result.report.output.format, result.inputs.architecture)
        note_device(result.inputs.cfg.device, [d.path for d in result.plan.decisions.values()])
    if dry_run:
        note("dry run: no LoRA file was written" + (f"; the report is in {report_json}" if report_json else ""))


def check_report_path(report_json: Path | None, output: Path | None, inputs: list, overwrite: bool) -> None:
    """The --report-json file is checked as the LoRA is, before the merge (not after the LoRA is written)."""
    from ..atomic import check_output
    from ..errors import OutputError

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


def _selected(tuner_data: Path | None, select: int | None, recipe: Path | None):
    """The Merge Selector: the configuration of candidate `select` of the tuner data, or None."""
    if tuner_data is None:
        if select is not None:
            raise typer.BadParameter("--select needs --tuner-data T.json")
        return None
    if recipe is not None:
        raise typer.BadParameter("give --recipe or --tuner-data, not both")
    from ..autotune import data

    return data.selected_config(data.load(tuner_data), 1 if select is None else select, tuner_data)


@app.command()
@with_merge_options
def analyze(
    loras: LorasArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan and statistics as JSON.")] = False,
    report_html: ReportHtmlOpt = None,
    sort: SortOpt = ReportSort.CONFLICT,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    **options: Any,
) -> None:
    """Run pass 1 and the plan only: statistics and decisions per group; writes no LoRA."""
    from ..api import analyze as run_analyze
    from ..config import MergeConfig

    cfg = build_config(loras, None, normalised(options))
    assert isinstance(cfg, MergeConfig)
    check_report_html(report_html)
    warn_repeated(cfg)
    with progress_bar(quiet or as_json) as progress:
        report = run_analyze(cfg, progress=progress).report()
    if as_json:
        print(report.to_json())
    if report_html is not None:
        report.save_html(report_html, sort=sort.value)
    if not (as_json or quiet):
        from ..report import render_text

        render_text(report, console, sort=sort)
