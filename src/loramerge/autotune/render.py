"""The AutoTuner's ranked table, as text (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_table(data: dict[str, Any], console: Console, *, rows: int = 10, replayed: bool = False) -> None:
    """The first `rows` candidates of the ranking with their phase-1, phase-2 and evaluator scores."""
    evaluated = data.get("evaluator") is not None
    title = (
        f"AutoTuner: {data['grid_size']} candidates ({data['unique']} distinct), {data['merged']} merged"
        + (f", evaluator: {data['evaluator']}" if evaluated else "")
        + (" — replayed from memory" if replayed else "")
    )
    table = Table(title=escape(title), title_justify="left")
    for name, justify in (("#", "right"), ("candidate", "left"), ("phase 1", "right"), ("phase 2", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("eff. rank", justify="right")
    table.add_column("min retention", justify="right")
    if evaluated:
        table.add_column("evaluator", justify="right")
    for c in data["candidates"][:rows]:
        p2 = c["phase2"] or {}
        cells = [
            str(c["rank"]),
            escape(c["label"])
            + (" [dim](untuned)[/dim]" if c.get("untuned") else "")
            + (" [red](loses a LoRA)[/red]" if c["loses_a_lora"] else ""),
            _num(c["phase1"]["score"]),
            _num(p2.get("score")),
            _num(p2.get("effective_rank")),
            _num(p2.get("min_retention")),
        ]
        if evaluated:
            ev = c["evaluation"]
            cells.append("[red]error[/red]" if c["error"] else _num(ev["scalar"] if ev else None, 4))
        table.add_row(*cells)
    console.print(table)
    untuned = next((c for c in data["candidates"] if c.get("untuned")), None)
    if untuned is not None and untuned["rank"] > rows:
        label = escape(untuned["label"])
        console.print(f"the untuned configuration ({label}) ranks #{untuned['rank']}", highlight=False)
    for note in data.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    for error in data.get("errors", []):
        console.print(f"[red]evaluator error:[/red] {escape(error)}", highlight=False, soft_wrap=True)
