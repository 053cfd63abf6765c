"""Text rendering of a report for the terminal (rich).

Warnings come first, then which LoRA is cancelled where, then the numbers. Everything that comes
from a file (LoRA names, keys, reasons, warnings) is printed as plain `Text` with control characters
shown escaped, never as markup. Group keys are never split across lines: in a terminal a key too
long for its column loses its middle (``input_blocks.4.1.tra…attn1.to_k``); piped or redirected,
nothing is wrapped at all, so every key is whole on its line.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..enums import ReportSort
from . import terminal
from .model import Report
from .summary import cancelled, short_key, sorted_groups

ELLIPSIS = "…"
MIN_KEY_WIDTH = 16


def plain(value: object, style: str = "") -> Text:
    """`value` as literal text (a rich `Text`: no markup, no emoji codes), control characters written
    as ``\\x1b`` (`terminal.plain`)."""
    return Text(terminal.plain(value), style=style)


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


NARROW_DROP = ("error", "rank", "overlap", "cos")  # left out, in this order, where a terminal is too narrow


def _groups_table(report: Report, console: Console, piped: bool, max_groups: int, sort: ReportSort | str) -> None:
    multi = sorted_groups([g for g in report.groups if g.n_loras > 1], sort)
    if not multi:
        return
    shown = multi[:max_groups]
    names = [lora.name for lora in report.loras if any(lora.name in g.retention for g in multi)]
    columns: dict[str, list[str]] = {
        "strategy": [g.strategy for g in shown],
        "conflict": [_f(g.effective_conflict) for g in shown],
        "cos": [_f(g.cosine, "{:+.2f}") for g in shown],
        "overlap": [_f(g.subspace_overlap) for g in shown],
        **{n: [_f(g.retention.get(n)) if n in g.retention else "" for g in shown] for n in names},
        "rank": [str(g.rank) for g in shown],
        "error": ["0" if g.compression_error == 0 else _f(g.compression_error, "{:.1e}") for g in shown],
    }
    keys = [short_key(g.key) for g in shown]
    key_width, dropped = max(map(len, keys)), list[str]()
    widths = {c: max(len(c), *map(len, v)) for c, v in columns.items()}
    if not piped:
        key_width, widths, dropped = _fit(console.width, key_width, columns)
    title = f"groups with 2+ LoRAs ({len(multi)}; first {len(shown)}, by {ReportSort(sort).value}; retention by LoRA"
    t = Table(
        title=title + (f"; narrow terminal: {', '.join(dropped)} left out)" if dropped else ")"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("key", no_wrap=True, overflow="ellipsis", width=None if piped else key_width)  # never folded
    for col, width in widths.items():
        t.add_column(plain(col), width=width, overflow="fold", justify="left" if col == "strategy" else "right")
    for i, key in enumerate(keys):
        t.add_row(plain(key if piped else fit_middle(key, key_width)), *(columns[c][i] for c in widths))
    _print_table(console, t, piped)


def _fit(width: int, longest_key: int, columns: dict[str, list[str]]) -> tuple[int, dict[str, int], list[str]]:
    """Column widths for a terminal `width` wide: whole headers if they fit, else folded headers, else fewer
    columns (`NARROW_DROP`); the key column gets the rest (at least `MIN_KEY_WIDTH`)."""
    cells = {c: max(map(len, v)) for c, v in columns.items()}
    dropped: list[str] = []
    while True:
        spare = width - 2 * len(cells) - 2  # what the key column can have beside the others
        whole = {c: max(w, len(c)) for c, w in cells.items()}
        if spare - sum(whole.values()) >= MIN_KEY_WIDTH:
            return min(longest_key, spare - sum(whole.values())), whole, dropped
        if spare - sum(cells.values()) >= MIN_KEY_WIDTH or len(dropped) == len(NARROW_DROP):
            return min(longest_key, max(MIN_KEY_WIDTH, spare - sum(cells.values()))), cells, dropped
        dropped.append(NARROW_DROP[len(dropped)])
        del cells[dropped[-1]]


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
