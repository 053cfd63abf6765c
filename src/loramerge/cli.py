"""The `loramerge` command line: thin — parse, call the library, render."""

from __future__ import annotations

import inspect as signatures
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .enums import OutputDtype, OutputFormat
from .errors import LoraMergeError
from .options import AUTO, BY_FIELD, OPTIONS, OptionSpec

if TYPE_CHECKING:
    from .report import Report

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compose several diffusion-model LoRAs into one, resolving interference per weight group.",
)
console = Console()
CURRENT_CLIENTS = ("diffusers", "comfyui_0.3.64")  # the clients warned about (the 2024 ComfyUI is in the docs)
err = Console(stderr=True)

ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="Override the detected architecture.")]
BaseOpt = Annotated[
    Optional[Path], typer.Option("--base", help="Base model .safetensors: check targets and shapes (header only).")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", "-f", help="Replace an existing output file (never one of the inputs).")
]
PickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Load .ckpt/.pt/.bin with torch.load(weights_only=True).")
]


@app.command()
def inspect(
    files: Annotated[list[Path], typer.Argument(help="LoRA files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list, one object per file).")] = False,
    arch: ArchOpt = None,
    base: BaseOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Show format, architecture, adapter kinds, ranks, alphas and keys that do not fit."""
    from .inspection import inspect_file

    summaries = [inspect_file(f, arch=arch, base=base, allow_pickle=allow_pickle) for f in files]
    if as_json:
        print(json.dumps([s.to_json() for s in summaries], indent=2))
        return
    for s in summaries:
        _render_summary(s)


def _render_summary(s) -> None:
    t = Table(title=s.path, show_header=False, title_justify="left")
    t.add_row("format", s.format)
    t.add_row("architecture", f"{s.architecture} (confidence {s.confidence:.2f}; {s.detection_reason})")
    t.add_row("adapter kinds", ", ".join(f"{k}: {v}" for k, v in s.adapter_kinds.items()))
    t.add_row("target modules", f"{s.modules} ({s.groups} groups)")
    t.add_row("rank", "-" if s.rank_min is None else f"{s.rank_min}..{s.rank_max}")
    t.add_row(
        "alpha", ", ".join(f"{a:g}" for a in s.alphas[:8]) + (" ..." if len(s.alphas) > 8 else "") or "none (scale 1)"
    )
    t.add_row("dtype", ", ".join(f"{k} x{v}" for k, v in s.dtypes.items()))
    t.add_row("size", f"{s.size_bytes / 1e6:.2f} MB")
    for k, v in s.metadata.items():
        t.add_row(f"meta {k}", v)
    t.add_row(
        "unplaced keys",
        str(len(s.unplaced_keys)) + ("" if not s.unplaced_keys else ": " + ", ".join(s.unplaced_keys[:5])),
    )
    if s.base_missing or s.base_mismatched:
        t.add_row("[red]not in base[/red]", f"{len(s.base_missing)}: " + ", ".join(s.base_missing[:5]))
        t.add_row("[red]shape mismatch[/red]", f"{len(s.base_mismatched)}: " + "; ".join(s.base_mismatched[:3]))
    console.print(t)


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
    from .convert import convert as run
    from .formats.files import read_header

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
        f"wrote {report.path} ({report.format.value}, {report.dtype}): {report.modules} modules, "
        f"{report.tensors} tensors"
    )
    _warn_widened(report.widened)
    _advise(report.format.value, written.get("loramerge.architecture", "unknown"))
    for label, e in report.conversions.items():
        console.print(f"  converted to LoRA by SVD: {label} (relative error {e:.2e})")
    for label in report.dropped:
        console.print(f"  [yellow]dropped (format cannot hold it)[/yellow]: {label}")


def _warn_widened(names: list[str]) -> None:
    if names:
        err.print(
            f"[yellow]warning:[/yellow] {len(names)} tensor(s) hold values beyond the half-precision range "
            f"and were written in float32: {escape(', '.join(names[:5]))}",
            highlight=False,
            soft_wrap=True,
        )


def _advise(fmt: str, architecture: str) -> None:
    """Warn when a common client is measured not to load this format for this architecture."""
    from .formats.advice import format_advice

    for line in format_advice(fmt, architecture, clients=CURRENT_CLIENTS):
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)


def _progress(quiet: bool):
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


def _config(loras, recipe, options: dict):
    from .api import as_input, load_recipe
    from .config import MergeConfig

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


def with_merge_options(fn: Callable) -> Callable:
    """Give `fn` one keyword option per row of the option table (`loramerge.options.OPTIONS`);
    `fn` receives them as ``**options``."""
    own = [
        p
        for p in signatures.signature(fn, eval_str=True).parameters.values()
        if p.kind is not signatures.Parameter.VAR_KEYWORD
    ]
    fn.__signature__ = signatures.Signature(own + [_option_parameter(o) for o in OPTIONS])  # type: ignore[attr-defined]
    return fn


def _normalised(options: dict) -> dict:
    """Typer's values as `MergeConfig` takes them: paths as strings, "auto" as unset where it means that."""
    out = {}
    for k, v in options.items():
        spec = BY_FIELD[k]
        out[k] = str(v) if isinstance(v, Path) else (None if spec.optional and v == AUTO else v)
    return out


LorasArg = Annotated[Optional[list[str]], typer.Argument(help="LoRA files as PATH[:STRENGTH[,TE_STRENGTH]].")]


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
    from .api import merge as run_merge

    if out is None and not dry_run:
        raise typer.BadParameter("give -o OUT.safetensors (or --dry-run)")
    cfg = _with_inputs_options(_config(loras, recipe, _normalised(options)), preserve, include, exclude)
    with _progress(quiet) as progress:
        result = run_merge(cfg, progress=progress, output=None if dry_run else out, overwrite=overwrite)
    with result:
        _emit_report(result.report, report_json, quiet)
        if result.report.output is not None:
            _warn_widened(result.report.output.widened)
            _advise(result.report.output.format, result.inputs.architecture)


def _with_inputs_options(cfg, preserve, include, exclude):
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


def _emit_report(report: Report, report_json: Path | None, quiet: bool) -> None:
    from .report import render_text

    if report_json is not None:
        report_json.write_text(report.to_json())
    if not quiet:
        render_text(report, console)


@app.command()
@with_merge_options
def analyze(
    loras: LorasArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan and statistics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    **options: Any,
) -> None:
    """Run pass 1 and the plan only: statistics and decisions per group; writes nothing."""
    from .api import analyze as run_analyze

    cfg = _config(loras, None, _normalised(options))
    with _progress(quiet or as_json) as progress:
        report = run_analyze(cfg, progress=progress).report()
    if as_json:
        print(report.to_json())
    else:
        from .report import render_text

        render_text(report, console)


def main() -> None:
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]error:[/red] invalid options: {escape(problems)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except LoraMergeError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
