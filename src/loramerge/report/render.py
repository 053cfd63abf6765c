"""Text rendering of a report for the terminal (rich)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from .model import Report
from .terminal import shown


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_text(report: Report, console: Console, *, max_groups: int = 40) -> None:
    console.print(f"[bold]architecture[/bold] {shown(report.architecture)}  [bold]preset[/bold] {shown(report.preset)}")
    auto = report.auto_strength
    console.print(
        "[bold]auto-strength[/bold] "
        + ", ".join(f"{b}: {_f(v, '{:.3f}')}" for b, v in auto.items())
        + f"   [bold]suggested max strength[/bold] {_f(report.suggested_max_strength)}"
    )
    for branch, detail in report.auto_strength_detail.items():
        console.print(f"  {branch}: {shown(detail.reason)}")
    console.print("[bold]strategies[/bold] " + ", ".join(f"{k}: {v}" for k, v in report.strategy_counts.items()))
    t = Table(title="LoRAs", title_justify="left")
    for col in ("name", "strength", "groups", "retention", "effective strength"):
        t.add_column(col)
    for lora in report.loras:
        t.add_row(
            shown(lora.name),
            f"{lora.strength_model:g}" + (" (preserved)" if lora.preserve else ""),
            str(lora.groups),
            _f(lora.retention),
            _f(lora.effective_strength),
        )
    console.print(t)
    if report.pairs:
        t = Table(title="pairs", title_justify="left")
        for col in ("a", "b", "branch", "cosine", "shared groups"):
            t.add_column(col)
        for p in report.pairs:
            t.add_row(shown(p.a), shown(p.b), p.branch, _f(p.cosine, "{:+.3f}"), str(p.groups))
        console.print(t)
    multi = [g for g in report.groups if g.n_loras > 1]
    if multi:
        t = Table(
            title=f"groups with 2+ LoRAs ({len(multi)}; first {min(len(multi), max_groups)})",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        t.add_column("key", overflow="fold", ratio=1)
        for col in ("strategy", "cos", "excess", "overlap", "retention", "rank", "error"):
            t.add_column(col, no_wrap=True)  # numbers never wrap: the key takes what width is left
        for g in multi[:max_groups]:
            ret = " ".join(f"{v:.2f}" for v in g.retention.values() if v is not None)
            t.add_row(
                shown(g.key.removeprefix("diffusion_model.")),
                g.strategy,
                _f(g.cosine, "{:+.2f}"),
                _f(g.excess_conflict),
                _f(g.subspace_overlap),
                ret,
                str(g.rank),
                ("0" if g.compression_error == 0 else _f(g.compression_error, "{:.1e}")),
            )
        console.print(t)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {shown(w)}")
    if report.output is not None:
        out = report.output
        console.print(f"wrote {shown(out.path)} ({out.format}, {out.dtype})")
