"""The report as one self-contained HTML page: no script, no network, every text from a file escaped.

Order: warnings; the conflict-first summary and the LoRAs; heatmaps of effective conflict, cosine
and subspace overlap per group on the model's block layout; the strategy chosen per group; retention
per LoRA per block; auto-strength and its reasoning; the pairs; the recipe; every group in a table.
The page's Content-Security-Policy forbids any fetch, so a browser shows it offline and complains
(console error) if anything in it tried to load something.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from html import escape
from pathlib import Path

import yaml

from ..atomic import write_text_atomic
from ..enums import ReportSort
from ..errors import OutputError
from . import plots
from .layout import block_rows
from .model import Report
from .summary import cancelled, short_key, sorted_groups

NO_RETENTION = "<p>no retention: a merge measures it (this report is of an analysis, or no group has 2+ LoRAs)</p>"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
HEATMAPS = (  # GroupRow field, label, colour map, fixed scale
    ("effective_conflict", "effective conflict", "Reds", 0.0, 1.0),
    ("cosine", "cosine", "RdBu", -1.0, 1.0),
    ("subspace_overlap", "subspace overlap", "viridis", 0.0, 1.0),
)
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#1d1d1f;
padding:0 16px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555}.warnings{background:#fff4e5;border-left:4px solid #e67e22;padding:8px 16px}.ok{color:#2e7d32}
.cancelled{background:#fdecea;border-left:4px solid #c0392b;padding:8px 16px}
table{border-collapse:collapse;margin:6px 0}
td,th{border-bottom:1px solid #eee;padding:2px 10px 2px 0;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}code,pre{font:12px/1.4 ui-monospace,Menlo,monospace}
pre{background:#f6f8fa;padding:10px;overflow:auto}.fig svg{max-width:100%;height:auto}li{margin:2px 0}
"""


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(head: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """An HTML table; every cell is escaped here."""

    def cells(tag: str, values: list[str]) -> str:
        return "".join(f"<{tag}{' class=n' if i in numeric else ''}>{escape(v)}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def _warnings(report: Report) -> str:
    if not report.warnings:
        return '<section id="warnings"><h2>Warnings</h2><p class="ok">none</p></section>'
    items = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
    return f'<section id="warnings" class="warnings"><h2>Warnings</h2><ul>{items}</ul></section>'


def _summary(report: Report) -> str:
    lost = cancelled(report)
    lines = "".join(f"<li>{escape(c.line())}</li>" for c in lost)
    head = f'<ul class="cancelled">{lines}</ul>' if lost else '<p class="ok">no LoRA is cancelled in any group</p>'
    loras = _table(
        ["LoRA", "path", "strength", "groups", "retention", "effective strength"],
        [
            [
                lora.name,
                lora.path,
                f"{lora.strength_model:g}" + (" (preserved)" if lora.preserve else ""),
                str(lora.groups),
                _num(lora.retention),
                _num(lora.effective_strength),
            ]
            for lora in report.loras
        ],
        {2, 3, 4, 5},
    )
    counts = ", ".join(f"{k}: {v}" for k, v in report.strategy_counts.items())
    return f'<section id="summary"><h2>Summary</h2>{head}{loras}<p>strategies: {escape(counts)}</p></section>'


def _auto_strength(report: Report) -> str:
    rows = [
        [branch, _num(d.scale), _num(d.energy), _num(d.reference), _num(d.mean_abs_cosine), str(d.floored), d.reason]
        for branch, d in report.auto_strength_detail.items()
    ]
    table = (
        _table(
            ["branch", "scale", "energy E", "reference E_ref", "mean |cos|", "floored", "reasoning"], rows, {1, 2, 3, 4}
        )
        if rows
        else "<p>auto-strength is off: the strengths are applied as given</p>"
    )
    cap = f"<p>suggested max output strength: {_num(report.suggested_max_strength, '{:.2f}')}</p>"
    return f'<section id="auto-strength"><h2>Auto-strength</h2>{table}{cap}</section>'


def _pairs(report: Report) -> str:
    rows = [[p.a, p.b, p.branch, _num(p.cosine, "{:+.3f}"), str(p.groups)] for p in report.pairs]
    return _section("pairs", "Pairs", _table(["a", "b", "branch", "cosine", "shared groups"], rows, {3, 4}))


def _section(name: str, title: str, body: str) -> str:
    return f'<section id="{name}"><h2>{title}</h2>{body}</section>'


def recipe_yaml(report: Report) -> str:
    """The merge as a recipe `loramerge merge --recipe` reads (per-input include/exclude are not in the report)."""
    inputs = [
        {"path": lora.path, "strength_model": lora.strength_model, "strength_text_encoder": lora.strength_text_encoder}
        | ({"preserve": True} if lora.preserve else {})
        for lora in report.loras
    ]
    return yaml.safe_dump({"inputs": inputs, **report.options}, sort_keys=True, allow_unicode=True)


def _groups(report: Report, sort: ReportSort | str) -> str:
    names = [lora.name for lora in report.loras]
    rows = [
        [
            short_key(g.key),
            g.strategy,
            _num(g.effective_conflict),
            _num(g.cosine, "{:+.3f}"),
            _num(g.subspace_overlap),
            *(_num(g.retention.get(n)) if n in g.retention else "" for n in names),
            g.reason,
        ]
        for g in sorted_groups(report.groups, sort)
    ]
    head = ["key", "strategy", "conflict", "cosine", "overlap", *(f"retention {n}" for n in names), "reason"]
    table = _table(head, rows, set(range(2, 5 + len(names))))
    return (
        f'<section id="groups"><h2>Groups</h2><details><summary>all {len(rows)} groups, sorted by '
        f"{escape(ReportSort(sort).value)}</summary>{table}</details></section>"
    )


def to_html(report: Report, *, sort: ReportSort | str = ReportSort.CONFLICT) -> str:
    """The whole page. Deterministic: the same report gives the same bytes."""
    plots.require_matplotlib()
    rows = block_rows(report.architecture, report.groups)
    figures = "".join(f'<div class="fig">{plots.heatmap(report, rows, *spec)}</div>' for spec in HEATMAPS)
    _, retention = plots.block_retention(report, rows)
    bars = f'<div class="fig">{retention}</div>' if retention else NO_RETENTION
    out = report.output
    wrote = f" · wrote {escape(out.path)} ({escape(out.format)}, {escape(out.dtype)})" if out else ""
    title = f"loramerge report: {', '.join(lora.name for lora in report.loras)}"
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><link rel=icon href="data:,">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class=meta>{escape(report.tool)} {escape(report.version)} · architecture "
        f"{escape(report.architecture)} · preset {escape(report.preset)}{wrote}</p>"
        + _warnings(report)
        + _summary(report)
        + _section("heatmaps", "Interference per group", figures)
        + _section("strategies", "Strategies", f'<div class="fig">{plots.strategy_map(report, rows)}</div>')
        + _section("retention", "Retention per block", bars)
        + _auto_strength(report)
        + _pairs(report)
        + _section("recipe", "Recipe", f"<pre>{escape(recipe_yaml(report))}</pre>")
        + _groups(report, sort)
        + "</body></html>\n"
    )


def check_html_target(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an HTML report that could not be written: no matplotlib, no such folder,
    or a folder given as the file."""
    plots.require_matplotlib()
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name for the HTML report, e.g. {target / 'report.html'}")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: the folder {target.parent} does not exist; create it or choose another path")
    return target


def save_html(report: Report, path: str | os.PathLike, *, sort: ReportSort | str = ReportSort.CONFLICT) -> Path:
    """Write the page to `path` atomically (a temporary file renamed into place; nothing left on failure)."""
    target = check_html_target(path)
    text = to_html(report, sort=sort)
    write_text_atomic(target, text)
    return target
