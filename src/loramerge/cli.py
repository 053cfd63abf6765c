"""The `loramerge` command line: thin — parse, call the library, render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import LoraMergeError
from .enums import OutputFormat

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compose several diffusion-model LoRAs into one, resolving interference per weight group.")
console = Console()
err = Console(stderr=True)

ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="Override the detected architecture.")]
BaseOpt = Annotated[Optional[Path], typer.Option("--base", help="Base model .safetensors: check targets and shapes (header only).")]
PickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Load .ckpt/.pt/.bin with torch.load(weights_only=True).")]


@app.command()
def inspect(files: Annotated[list[Path], typer.Argument(help="LoRA files.")],
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list, one object per file).")] = False,
            arch: ArchOpt = None, base: BaseOpt = None, allow_pickle: PickleOpt = False) -> None:
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
    t.add_row("alpha", ", ".join(f"{a:g}" for a in s.alphas[:8]) + (" ..." if len(s.alphas) > 8 else "") or "none (scale 1)")
    t.add_row("dtype", ", ".join(f"{k} x{v}" for k, v in s.dtypes.items()))
    t.add_row("size", f"{s.size_bytes / 1e6:.2f} MB")
    for k, v in s.metadata.items():
        t.add_row(f"meta {k}", v)
    t.add_row("unplaced keys", str(len(s.unplaced_keys)) + ("" if not s.unplaced_keys else ": " + ", ".join(s.unplaced_keys[:5])))
    if s.base_missing or s.base_mismatched:
        t.add_row("[red]not in base[/red]", f"{len(s.base_missing)}: " + ", ".join(s.base_missing[:5]))
        t.add_row("[red]shape mismatch[/red]", f"{len(s.base_mismatched)}: " + "; ".join(s.base_mismatched[:3]))
    console.print(t)


@app.command()
def convert(src: Annotated[Path, typer.Argument(help="Input LoRA file.")],
            out: Annotated[Path, typer.Option("-o", "--out", help="Output .safetensors path.")],
            fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.KOHYA,
            arch: ArchOpt = None, base: BaseOpt = None, allow_pickle: PickleOpt = False,
            lenient: Annotated[bool, typer.Option("--lenient", help="Continue past keys that do not fit (listed).")] = False,
            lossy: Annotated[bool, typer.Option("--lossy", help="Allow dropping content the format cannot hold (listed).")] = False) -> None:
    """Rewrite a LoRA in the kohya, diffusers or comfy format, preserving every ΔW."""
    from .convert import convert as run

    report = run(src, out, fmt, arch=arch, base=base, strict=not lenient, allow_pickle=allow_pickle, lossy=lossy)
    console.print(f"wrote {report.path} ({report.format.value}): {report.modules} modules, {report.tensors} tensors")
    for label, e in report.conversions.items():
        console.print(f"  converted to LoRA by SVD: {label} (relative error {e:.2e})")
    for label in report.dropped:
        console.print(f"  [yellow]dropped (format cannot hold it)[/yellow]: {label}")


def _progress(quiet: bool):
    """A rich progress bar over the groups (stderr), or nothing when quiet or not a terminal."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet or not err.is_terminal:
        return nullcontext(None)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    tasks: dict[str, int] = {}

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


def _config(loras, recipe, **options):
    from .api import as_input, load_recipe
    from .config import MergeConfig

    given = {k: v for k, v in options.items() if v is not None}
    if recipe is not None:
        cfg = load_recipe(recipe)
        data = cfg.model_dump()
        data.update(given)
        if loras:
            data["inputs"] = [as_input(x) for x in loras]
        return MergeConfig(**data)
    if not loras:
        raise typer.BadParameter("give LoRA files (PATH[:STRENGTH[,TE_STRENGTH]]) or --recipe")
    return MergeConfig(inputs=tuple(as_input(x) for x in loras), **given)


LorasArg = Annotated[Optional[list[str]], typer.Argument(help="LoRA files as PATH[:STRENGTH[,TE_STRENGTH]].")]


def _merge_options(mode, optimization, strategy_set, sparsify, density, refine, preset, rank, error_target, fmt,
                   base, device, seed, arch, lenient, no_auto_strength, allow_pickle):
    return dict(mode=mode, optimization=optimization, strategy_set=strategy_set, sparsify=sparsify, density=density,
                refine=refine, preset=preset, rank=rank, rel_error=error_target, format=fmt,
                base=str(base) if base else None, device=device, seed=seed, arch=arch,
                strict=False if lenient else None, auto_strength=False if no_auto_strength else None,
                allow_pickle=True if allow_pickle else None)


@app.command()
def merge(
    loras: LorasArg = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Output .safetensors path.")] = None,
    mode: Annotated[Optional[str], typer.Option(help="auto, or a strategy forced on every group with 2+ LoRAs.")] = None,
    optimization: Annotated[Optional[str], typer.Option(help="per_group | global | additive.")] = None,
    strategy_set: Annotated[Optional[str], typer.Option("--strategy-set", help="full | no_slerp | basic.")] = None,
    sparsify: Annotated[Optional[str], typer.Option(help="none | dare | della | dare_conflict | della_conflict.")] = None,
    density: Annotated[Optional[float], typer.Option(help="Sparsification / TIES density (keep fraction).")] = None,
    refine: Annotated[Optional[str], typer.Option(help="none | refine | full.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="sd_unet | dit | llm | acestep_dit (default: from the architecture).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="Output rank per group (default: sum of input ranks).")] = None,
    error_target: Annotated[Optional[float], typer.Option("--error-target", help="Relative Frobenius error target instead of a rank.")] = None,
    fmt: Annotated[Optional[OutputFormat], typer.Option("--format", help="Output format.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32 (default) | float16 | bfloat16: precision of the written tensors.")] = None,
    base: BaseOpt = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of every random choice.")] = None,
    arch: ArchOpt = None,
    lenient: Annotated[bool, typer.Option("--lenient", help="Continue past keys that do not fit (reported).")] = False,
    no_auto_strength: Annotated[bool, typer.Option("--no-auto-strength", help="Keep the strengths as given.")] = False,
    basis_space: Annotated[bool, typer.Option("--basis-space", help="TIES/pruning/consensus on shared-basis coefficients: exactly low-rank output.")] = False,
    smoothing: Annotated[Optional[float], typer.Option(help="Block smoothing λ of the decision metrics (0 = off; default 0.25).")] = None,
    allow_pickle: PickleOpt = False,
    preserve: Annotated[Optional[list[str]], typer.Option("--preserve", help="Hold this input out of the merge; add it on top.")] = None,
    include: Annotated[Optional[list[str]], typer.Option("--include", help="Only targets matching this regex.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave out targets matching this regex.")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Re-run a YAML/JSON recipe or a loramerge output file.")] = None,
    report_json: Annotated[Optional[Path], typer.Option("--report-json", help="Write the report as JSON here.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Merge and report, write no LoRA.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no report on the terminal.")] = False,
) -> None:
    """Merge LoRAs into one, choosing the strategy per weight group."""
    from .pipeline import run

    if out is None and not dry_run:
        raise typer.BadParameter("give -o OUT.safetensors (or --dry-run)")
    cfg = _with_inputs_options(_config(loras, recipe, **_merge_options(
        mode, optimization, strategy_set, sparsify, density, refine, preset, rank, error_target, fmt, base, device,
        seed, arch, lenient, no_auto_strength, allow_pickle), basis_space=basis_space or None,
        smoothing=smoothing, dtype=dtype), preserve, include, exclude)
    with _progress(quiet) as progress:
        result = run(cfg, progress, None if dry_run else out)  # the merged patches spool next to OUT
    with result:
        _emit_report(result.report, report_json, quiet)


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


def _emit_report(report: dict, report_json: Path | None, quiet: bool) -> None:
    from .report import render_text

    if report_json is not None:
        report_json.write_text(json.dumps(report, indent=2, sort_keys=True))
    if not quiet:
        render_text(report, console)


@app.command()
def analyze(
    loras: LorasArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan and statistics as JSON.")] = False,
    mode: Annotated[Optional[str], typer.Option()] = None,
    optimization: Annotated[Optional[str], typer.Option()] = None,
    strategy_set: Annotated[Optional[str], typer.Option("--strategy-set")] = None,
    preset: Annotated[Optional[str], typer.Option()] = None,
    base: BaseOpt = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    arch: ArchOpt = None,
    lenient: Annotated[bool, typer.Option("--lenient")] = False,
    allow_pickle: PickleOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Run pass 1 and the plan only: statistics and decisions per group; writes nothing."""
    from .pipeline import analyze as run_analyze
    from .report.build import analysis_report

    cfg = _config(loras, None, mode=mode, optimization=optimization, strategy_set=strategy_set, preset=preset,
                  base=str(base) if base else None, seed=seed, arch=arch, strict=False if lenient else None,
                  allow_pickle=True if allow_pickle else None)
    with _progress(quiet or as_json) as progress:
        inputs, plan, analysis = run_analyze(cfg, progress)
    report = analysis_report(inputs, analysis, plan)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
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
