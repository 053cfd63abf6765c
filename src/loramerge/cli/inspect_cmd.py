"""`loramerge inspect`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..report.terminal import shown
from ._app import ArchOpt, BaseOpt, PickleOpt, app, console


@app.command()
def inspect(
    files: Annotated[Optional[list[Path]], typer.Argument(help="LoRA files.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list, one object per file).")] = False,
    blocks: Annotated[
        bool,
        typer.Option(
            "--blocks",
            help="Print the architecture's block names (for PATH:S@w1,w2,... block weights), with each file's "
            "group count per block; with --arch and no files, the architecture's blocks, forms and presets.",
        ),
    ] = False,
    arch: ArchOpt = None,
    base: BaseOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Show format, architecture, adapter kinds, ranks, alphas and keys that do not fit."""
    from ..inspection import inspect_file

    if not files:
        if blocks and arch:
            _render_layout(arch)
            return
        raise typer.BadParameter("give LoRA files (or --blocks --arch NAME)")
    if blocks:
        _render_blocks(files, arch, as_json, allow_pickle)
        return
    summaries = [inspect_file(f, arch=arch, base=base, allow_pickle=allow_pickle) for f in files]
    if as_json:
        print(json.dumps([s.to_json() for s in summaries], indent=2))
        return
    for s in summaries:
        _render_summary(s)


def _render_summary(s) -> None:
    """Every value from the file goes through `shown`: shown as text, never acted on by the terminal."""
    t = Table(title=shown(s.path), show_header=False, title_justify="left")
    t.add_row("format", shown(s.format))
    t.add_row("architecture", shown(f"{s.architecture} (confidence {s.confidence:.2f}; {s.detection_reason})"))
    t.add_row("adapter kinds", shown(", ".join(f"{k}: {v}" for k, v in s.adapter_kinds.items())))
    t.add_row("target modules", f"{s.modules} ({s.groups} groups)")
    t.add_row("rank", "-" if s.rank_min is None else f"{s.rank_min}..{s.rank_max}")
    t.add_row(
        "alpha", ", ".join(f"{a:g}" for a in s.alphas[:8]) + (" ..." if len(s.alphas) > 8 else "") or "none (scale 1)"
    )
    t.add_row("dtype", shown(", ".join(f"{k} x{v}" for k, v in s.dtypes.items())))
    t.add_row("size", f"{s.size_bytes / 1e6:.2f} MB")
    for k, v in s.metadata.items():
        t.add_row(f"meta {shown(k)}", shown(v))
    t.add_row(
        "unplaced keys",
        str(len(s.unplaced_keys)) + ("" if not s.unplaced_keys else ": " + shown(", ".join(s.unplaced_keys[:5]))),
    )
    if s.base_missing or s.base_mismatched:
        t.add_row("[red]not in base[/red]", f"{len(s.base_missing)}: " + shown(", ".join(s.base_missing[:5])))
        t.add_row("[red]shape mismatch[/red]", f"{len(s.base_mismatched)}: " + shown("; ".join(s.base_mismatched[:3])))
    console.print(t)


def _render_layout(arch: str) -> None:
    from ..architectures.blocks import layout_of
    from ..inspection import block_rows

    block_rows(arch)  # the error when there is no layout
    layout = layout_of(arch)
    assert layout is not None
    console.print(f"{escape(arch)}:\n  {escape(layout.describe())}", highlight=False, soft_wrap=True)


def _render_blocks(files: list[Path], arch: str | None, as_json: bool, allow_pickle: bool) -> None:
    from ..inspection import block_rows, open_and_align

    out: list[dict] = []
    for f in files:
        _, alignment, _ = open_and_align(f, arch=arch, allow_pickle=allow_pickle)
        rows = block_rows(alignment.architecture, list(alignment.groups))
        out.append({"path": str(f), "architecture": alignment.architecture, "blocks": dict(rows)})
    if as_json:
        print(json.dumps(out, indent=2))
        return
    for item in out:
        t = Table(title=f"{item['path']} ({item['architecture']})", title_justify="left")
        t.add_column("block")
        t.add_column("groups", justify="right")
        for block, n in item["blocks"].items():
            t.add_row(escape(block), str(n))
        console.print(t)
        _render_layout(item["architecture"])
