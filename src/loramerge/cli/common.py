"""What several commands share: warnings after writing, the progress bar, the merge options built from
the option table, the configuration from arguments or a recipe, and the report output."""

from __future__ import annotations

import inspect as signatures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..enums import ReportSort
from ..options import AUTO, BY_FIELD, OPTIONS, OptionSpec
from ..report.terminal import shown
from ._app import CURRENT_CLIENTS, console, err

if TYPE_CHECKING:
    from ..report import Report


def warning(message: object) -> None:
    """One `warning: ...` line on stderr, data shown as text."""
    err.print(f"[yellow]warning:[/yellow] {shown(message, newlines=True)}", highlight=False, soft_wrap=True)


def note(message: object) -> None:
    """One `note: ...` line on stderr (what was done, or not done, and why)."""
    err.print(f"note: {shown(message, newlines=True)}", highlight=False, soft_wrap=True)


def warn_widened(names: list[str]) -> None:
    if names:
        warning(
            f"{len(names)} tensor(s) hold values beyond the half-precision range "
            f"and were written in float32: {', '.join(names[:5])}"
        )


def advise(fmt: str, architecture: str) -> None:
    """Warn when a common client is measured not to load this format for this architecture."""
    from ..formats.advice import format_advice

    for line in format_advice(fmt, architecture, clients=CURRENT_CLIENTS):
        warning(line)


def warn_repeated(cfg) -> None:
    """The same file given twice adds it twice (as asked): say so, in case it was a slip."""
    seen: dict[Path, str] = {}
    for inp in cfg.inputs:
        real = Path(inp.path).resolve()
        if real in seen:
            also = "" if seen[real] == inp.path else f" (also as {seen[real]})"
            warning(
                f"{inp.path} is given more than once{also}; it is merged once per mention, "
                "each at its own strength: give it once with the summed strength if that was not meant"
            )
        else:
            seen[real] = inp.path


def progress_bar(quiet: bool):
    """A rich progress bar over the groups (stderr), or nothing when quiet or not a terminal."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    if quiet or not err.is_terminal:
        return nullcontext(None)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, key: str, n: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=n + 1)

    class _Ctx:
        def __enter__(self):
            bar.__enter__()
            return update

        def __exit__(self, *exc):
            return bar.__exit__(*exc)

    return _Ctx()


def build_config(
    loras, recipe, options: dict, base=None, *, formula: str | None = None, allow_changed_inputs: bool = False
):
    """The `MergeConfig` of one merge, or the `Recipe` of a merge in steps (``--formula``, or a
    ``--recipe`` that holds steps); on top of a recipe file or a `base` configuration (a tuner-data
    candidate) when given: options given on the command line win, LoRAs given replace the inputs."""
    from ..api import as_input, load_recipe
    from ..config import MergeConfig
    from ..recipes.formula import formula_recipe
    from ..recipes.schema import Recipe

    given = {k: v for k, v in options.items() if v is not None}
    if formula is not None:
        if recipe is not None:
            raise typer.BadParameter("give --formula or --recipe, not both")
        if not loras:
            raise typer.BadParameter("--formula needs the LoRA files it numbers (1 = the first)")
        return formula_recipe(formula, [as_input(x) for x in loras], given)
    if base is not None:
        data = base.model_dump()
    elif recipe is not None:
        loaded = load_recipe(recipe, allow_changed_inputs=allow_changed_inputs)
        if isinstance(loaded, Recipe):
            if loras:
                raise typer.BadParameter("a recipe with steps names its own inputs: give no LoRA files with it")
            return loaded.model_copy(update={"options": {**loaded.options, **given}}).check()
        data = loaded.model_dump()
    if base is not None or recipe is not None:
        data.update(given)
        if loras:
            data["inputs"] = [as_input(x) for x in loras]
        return MergeConfig(**data)
    if not loras:
        raise typer.BadParameter("give LoRA files (PATH[:STRENGTH[,TE_STRENGTH]][@BLOCK_WEIGHTS]) or --recipe")
    return MergeConfig(inputs=tuple(as_input(x) for x in loras), **given)


def _option_parameter(o: OptionSpec) -> signatures.Parameter:
    """The typer parameter of one row of the option table (None = not given: the recipe's or the default)."""
    shown = o.default_value if not o.optional else "automatic"
    help = f"{o.help[:1].upper()}{o.help[1:]}."
    if o.dynamic_choices is not None:
        help += f" Choices: {', '.join(o.choices() or [])}."
    help += f" (default: {shown})"
    kind: Any = Path if o.field == "base" else o.kind
    return signatures.Parameter(
        o.field,
        signatures.Parameter.KEYWORD_ONLY,
        default=None,
        # o.cli whole: "--x/--no-x" declares one flag with an off switch (split, both would mean "on")
        annotation=Annotated[Optional[kind], typer.Option(o.cli, help=help, show_default=False)],
    )


def with_merge_options(fn: Callable | None = None, *, leave_out: tuple[str, ...] = ()) -> Callable:
    """Give `fn` one keyword option per row of the option table (`loramerge.options.OPTIONS`), but
    the fields in `leave_out`; `fn` receives them as ``**options``. Used bare or as
    ``@with_merge_options(leave_out=(...))``."""
    if fn is None:
        return lambda f: with_merge_options(f, leave_out=leave_out)
    own = [
        p
        for p in signatures.signature(fn, eval_str=True).parameters.values()
        if p.kind is not signatures.Parameter.VAR_KEYWORD
    ]
    rows = [_option_parameter(o) for o in OPTIONS if o.field not in leave_out]
    fn.__signature__ = signatures.Signature(own + rows)  # type: ignore[attr-defined]
    return fn


def normalised(options: dict) -> dict:
    """Typer's values as `MergeConfig` takes them: paths as strings, "auto" as unset where it means that."""
    out = {}
    for k, v in options.items():
        spec = BY_FIELD[k]
        out[k] = str(v) if isinstance(v, Path) else (None if spec.optional and v == AUTO else v)
    return out


LorasArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="LoRA files as PATH[:STRENGTH[,TE_STRENGTH]][@BLOCK_WEIGHTS] (docs/BLOCK_WEIGHTS.md)."),
]


def with_inputs_options(cfg, preserve, include, exclude):
    from ..config import check_patterns

    check_patterns(include or [], "--include")
    check_patterns(exclude or [], "--exclude")
    if not (preserve or include or exclude):
        return cfg
    if not hasattr(cfg, "inputs"):
        raise typer.BadParameter("--preserve/--include/--exclude apply to one merge; in a recipe, set them per input")
    inputs = []
    for inp in cfg.inputs:
        update = {}
        if preserve and (inp.path in preserve or inp.label in preserve):
            update["preserve"] = True
        if include:
            update["include"] = tuple(inp.include) + tuple(include)
        if exclude:
            update["exclude"] = tuple(inp.exclude) + tuple(exclude)
        inputs.append(inp.model_copy(update=update))
    return cfg.model_copy(update={"inputs": tuple(inputs)})


ReportHtmlOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--report-html",
        help="Write the report as one self-contained HTML page here (heatmaps, strategies, retention; "
        "needs the 'report' extra: pip install 'loramerge[report]').",
    ),
]
SortOpt = Annotated[ReportSort, typer.Option("--sort", help="Order of the group table in the text and HTML reports.")]


def check_report_html(report_html: Path | None) -> None:
    """Before any work: the HTML report can be written (matplotlib installed, the folder exists)."""
    if report_html is not None:
        from ..report.page import check_html_target

        check_html_target(report_html)


def emit_report(
    report: Report,
    report_json: Path | None,
    quiet: bool,
    *,
    report_html: Path | None = None,
    sort: ReportSort = ReportSort.CONFLICT,
) -> None:
    from ..atomic import write_text_atomic
    from ..report import render_text

    if report_json is not None:
        write_text_atomic(report_json, report.to_json())
    if report_html is not None:
        report.save_html(report_html, sort=sort.value)
    if not quiet:
        render_text(report, console, sort=sort)
