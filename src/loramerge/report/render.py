"""Text rendering of a report for the terminal (rich).

Warnings come first, then which LoRA is cancelled where, then the numbers. Everything that comes
from a file (LoRA names, keys, reasons, warnings) is printed as plain `Text` with control characters
shown escaped, never as markup. Group keys are never split across lines: in a terminal a key too
long for its column loses its middle (``input_blocks.4.1.tra…attn1.to_k``); piped or redirected,
nothing is wrapped at all, so every key is whole on its line.
"""

from __future__ import annotations

import unicodedata

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..enums import ReportSort
from .model import Report
from .summary import cancelled, short_key, sorted_groups

ELLIPSIS = "…"
MIN_KEY_WIDTH = 16


def plain(value: object, style: str = "") -> Text:
    """`value` as literal text: no markup, no emoji codes, control characters written as ``\\x1b``."""
    text = "".join(
        ch if ch in "\t\n" or unicodedata.category(ch) != "Cc" else ch.encode("unicode_escape").decode()
        for ch in str(value)
    )
    return Text(text, style=style)


def fit_middle(text: str, width: int) -> str:
    """`text` shortened to `width` characters by cutting its middle (the end, a module name, is kept longer)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return text[:head] + ELLIPSIS + text[len(text) - (width - 1 - head) :]


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_text(
    report: Report, console: Console, *, max_groups: int = 40, sort: ReportSort | str = ReportSort.CONFLICT
) -> None:
    """Print `report`: warnings, the conflict-first summary, settings, LoRAs, pairs, then the groups
    of 2+ LoRAs ordered by `sort` (at most `max_groups`)."""
    piped = not console.is_terminal
    say = (lambda *parts: console.print(*parts, soft_wrap=True)) if piped else console.print
    for w in report.warnings:
        say(Text.assemble(("warning: ", "yellow"), plain(w)))
    for c in cancelled(report):
        say(Text.assemble(("conflict: ", "red"), plain(c.line())))
    say(Text.assemble(("architecture ", "bold"), report.architecture, ("  preset ", "bold"), report.preset))
    auto = ", ".join(f"{b}: {_f(v, '{:.3f}')}" for b, v in report.auto_strength.items())
    say(
        Text.assemble(
            ("auto-strength ", "bold"), auto, ("   suggested max strength ", "bold"), _f(report.suggested_max_strength)
        )
    )
    for branch, detail in report.auto_strength_detail.items():
        say(Text.assemble(f"  {branch}: ", plain(detail.reason)))
    say(Text.assemble(("strategies ", "bold"), ", ".join(f"{k}: {v}" for k, v in report.strategy_counts.items())))
    t = Table(title="LoRAs", title_justify="left")
    for col in ("name", "strength", "groups", "retention", "effective strength"):
        t.add_column(col)
    for lora in report.loras:
        t.add_row(
            plain(lora.name),
            f"{lora.strength_model:g}" + (" (preserved)" if lora.preserve else ""),
            str(lora.groups),
            _f(lora.retention),
            _f(lora.effective_strength),
        )
    _print_table(console, t, piped)
    if report.pairs:
        t = Table(title="pairs", title_justify="left")
        for col in ("a", "b", "branch", "cosine", "shared groups"):
            t.add_column(col)
        for p in report.pairs:
            t.add_row(plain(p.a), plain(p.b), p.branch, _f(p.cosine, "{:+.3f}"), str(p.groups))
        _print_table(console, t, piped)
    _groups_table(report, console, piped, max_groups, sort)
    if report.output is not None:
        out = report.output
        say(Text.assemble("wrote ", plain(out.path), f" ({out.format}, {out.dtype})"))


def _groups_table(report: Report, console: Console, piped: bool, max_groups: int, sort: ReportSort | str) -> None:
    multi = sorted_groups([g for g in report.groups if g.n_loras > 1], sort)
    if not multi:
        return
    names = [lora.name for lora in report.loras if any(lora.name in g.retention for g in multi)]
    rows = []
    for g in multi[:max_groups]:
        rows.append(
            [
                g.strategy,
                _f(g.effective_conflict),
                _f(g.cosine, "{:+.2f}"),
                _f(g.subspace_overlap),
                *(_f(g.retention.get(n)) if n in g.retention else "" for n in names),
                str(g.rank),
                ("0" if g.compression_error == 0 else _f(g.compression_error, "{:.1e}")),
            ]
        )
    head = ["strategy", "conflict", "cos", "overlap", *names, "rank", "error"]
    cells = [max(len(r[i]) for r in rows) for i in range(len(head))]
    widths = [max(c, len(h)) for c, h in zip(cells, head)]
    keys = [short_key(g.key) for g in multi[: len(rows)]]
    spare = console.width - 2 * len(head) - 2  # what the key column can have beside the others
    if spare - sum(widths) < MIN_KEY_WIDTH:
        widths = cells  # a narrow terminal: headers fold, values and keys never do
    key_width = min(max(map(len, keys)), max(MIN_KEY_WIDTH, spare - sum(widths)))
    t = Table(
        title=f"groups with 2+ LoRAs ({len(multi)}; first {len(rows)}, by {ReportSort(sort).value}; "
        "retention columns by LoRA)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("key", no_wrap=True, overflow="ellipsis", width=None if piped else key_width)  # never folded
    for col, width in zip(head, widths):
        t.add_column(plain(col), width=width, overflow="fold", justify="left" if col == "strategy" else "right")
    for key, row in zip(keys, rows):
        t.add_row(plain(key if piped else fit_middle(key, key_width)), *row)
    _print_table(console, t, piped)


def _print_table(console: Console, table: Table, piped: bool) -> None:
    """In a terminal, as wide as the terminal; piped, as wide as the table needs (no wrapping at 80)."""
    if not piped:
        console.print(table)
        return
    width = console.width
    try:
        console.width = max(width, console.measure(table, options=console.options.update_width(1 << 20)).maximum)
        console.print(table)
    finally:
        console.width = width
