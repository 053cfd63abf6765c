"""What several commands share: warnings after writing, the progress bar, the merge options built from
the option table, the configuration from arguments or a recipe, and the report output."""

from __future__ import annotations

import inspect as signatures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from ..options import AUTO, BY_FIELD, OPTIONS, OptionSpec
from ._app import CURRENT_CLIENTS, console, err

if TYPE_CHECKING:
    from ..report import Report


def warn_widened(names: list[str]) -> None:
    if names:
        err.print(
            f"[yellow]warning:[/yellow] {len(names)} tensor(s) hold values beyond the half-precision range "
            f"and were written in float32: {escape(', '.join(names[:5]))}",
            highlight=False,
            soft_wrap=True,
        )


def advise(fmt: str, architecture: str) -> None:
    """Warn when a common client is measured not to load this format for this architecture."""
    from ..formats.advice import format_advice

    for line in format_advice(fmt, architecture, clients=CURRENT_CLIENTS):
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)


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


def build_config(loras, recipe, options: dict):
    from ..api import as_input, load_recipe
    from ..config import MergeConfig

    given = {k: v for k, v in options.items() if v is not None}
    if recipe is not None:
        data = load_recipe(recipe).model_dump()
        data.update(given)
        if loras:
            data["inputs"] = [as_input(x) for x in loras]
        return MergeConfig(**data)
    if not loras:
        raise typer.BadParameter("give LoRA files (PATH[:STRENGTH[,TE_STRENGTH]]) or --recipe")
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
        annotation=Annotated[Optional[kind], typer.Option(*o.flags, help=help, show_default=False)],
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


LorasArg = Annotated[Optional[list[str]], typer.Argument(help="LoRA files as PATH[:STRENGTH[,TE_STRENGTH]].")]


def with_inputs_options(cfg, preserve, include, exclude):
    if not (preserve or include or exclude):
        return cfg
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


def emit_report(report: Report, report_json: Path | None, quiet: bool) -> None:
    from ..report import render_text

    if report_json is not None:
        report_json.write_text(report.to_json())
    if not quiet:
        render_text(report, console)
