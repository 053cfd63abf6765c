"""The `loramerge` command line: thin — parse, call the library, render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import LoraMergeError
from .formats.writers import OutputFormat

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
    from .inspect import inspect_file

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


def main() -> None:
    try:
        app()
    except LoraMergeError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
