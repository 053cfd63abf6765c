"""The text report: warnings and the cancelled-LoRA summary first, the group table ordered by --sort with
one retention column per LoRA, keys whole on one line when piped and never folded in a terminal,
everything from files printed literally."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from loramerge.cli import app
from loramerge.report.render import fit_middle, render_text

from .conftest import readme_merge_args

NAMES = ["style_kohya", "character_peft", "detail_kohya"]


def render(report, *, terminal: bool = False, width: int = 80, **kwargs) -> list[str]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=terminal, color_system=None, highlight=False)
    render_text(report, console, **kwargs)
    return buf.getvalue().splitlines()


def table_rows(lines: list[str]) -> list[list[str]]:
    """The group table's rows, split on whitespace (keys hold none)."""
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("─")) + 1
    rows = []
    for ln in lines[start:]:
        if not ln.strip():
            break
        rows.append(ln.split())
    return rows


def test_first_lines_are_the_warnings_then_who_is_cancelled_where(example):
    lines = example.stdout.splitlines()  # the CLI's own output, piped
    warnings = example.report.warnings
    assert len(warnings) == 2
    assert lines[:2] == [f"warning: {w}" for w in warnings]
    # examples/make_examples.py: character opposes style in output_blocks.1 (4 transformer blocks x 8 modules)
    assert lines[2] == "conflict: style_kohya cancelled in 32 group(s) (retention < 0.3): output_blocks.1 (32)"
    assert lines[3] == "conflict: character_peft cancelled in 32 group(s) (retention < 0.3): output_blocks.1 (32)"
    assert lines[4].startswith("architecture sdxl")


def test_retention_columns_are_named_by_lora_and_hold_its_values(example):
    lines = render(example.report, max_groups=300)
    header = next(ln for ln in lines if ln.lstrip().startswith("key "))
    assert header.split() == ["key", "strategy", "conflict", "cos", "overlap", *NAMES, "rank", "error"]
    by_key = {g.key.removeprefix("diffusion_model."): g for g in example.report.groups}
    rows = table_rows(lines)
    assert len(rows) == 272
    starts = {name: header.index(name) for name in NAMES}
    for ln in lines[lines.index(header) + 2 : lines.index(header) + 2 + len(rows)]:
        g = by_key[ln.split()[0]]
        for name in NAMES:  # each value sits under its LoRA's header (right-aligned to its end)
            end = starts[name] + len(name)
            cell = ln[starts[name] : end].strip()
            assert cell == (f"{g.retention[name]:.2f}" if name in g.retention else ""), (g.key, name, ln)


@pytest.mark.parametrize("sort", ["conflict", "key", "strategy", "cosine", "overlap", "retention"])
def test_sort_orders_the_table(example, sort):
    rows = table_rows(render(example.report, max_groups=300, sort=sort))
    keys = [r[0] for r in rows]
    by_key = {g.key.removeprefix("diffusion_model."): g for g in example.report.groups}
    groups = [by_key[k] for k in keys]
    assert len(set(keys)) == 272
    if sort == "conflict":
        values = [g.effective_conflict for g in groups]
        assert values == sorted(values, reverse=True) and values[0] == max(v for v in values)
    elif sort == "key":
        assert [g.key for g in groups] == sorted(g.key for g in groups)
    elif sort == "strategy":
        assert [g.strategy for g in groups] == sorted(g.strategy for g in groups)
    elif sort == "cosine":
        assert [g.cosine for g in groups] == sorted(g.cosine for g in groups)
        assert "output_blocks.1." in keys[0]  # the opposing block first
    elif sort == "overlap":
        assert [g.subspace_overlap for g in groups] == sorted((g.subspace_overlap for g in groups), reverse=True)
    else:
        lowest = [min(g.retention.values()) for g in groups]
        assert lowest == sorted(lowest) and "output_blocks.1." in keys[0]


def test_cli_sort_option(example):
    result = CliRunner().invoke(app, ["analyze", *readme_merge_args(), "--sort", "key"])
    assert result.exit_code == 0, result.output
    keys = [r[0] for r in table_rows(result.output.splitlines())]
    assert keys == sorted(keys) and len(keys) == 40 and keys[0].startswith("input_blocks.4.1.")
    bad = CliRunner().invoke(app, ["analyze", *readme_merge_args(), "--sort", "nope"])
    assert bad.exit_code == 2 and "conflict" in bad.output


def long_key_report(report, key: str):
    first = report.groups[0].model_copy(update={"key": key})
    return report.model_copy(update={"groups": [first, *report.groups[1:]]})


def test_a_key_longer_than_the_terminal_is_whole_on_one_line_when_piped(example):
    key = "diffusion_model." + ".".join(f"very_long_module_name_{i}" for i in range(9)) + ".to_q"
    report = long_key_report(example.report, key)
    lines = render(report, width=80, max_groups=300, sort="key")
    shown = key.removeprefix("diffusion_model.")
    assert len(shown) > 200
    hits = [ln for ln in lines if shown in ln]
    assert len(hits) == 1 and hits[0].split()[0] == shown
    assert all("very_long_module_name_3" not in ln for ln in lines if ln is not hits[0])  # not folded onto more
    assert not any(ln.startswith("  model:") for ln in lines) or all(
        "floored at" in ln for ln in lines if ln.startswith("  model:")
    )  # the reasoning is not wrapped either


def test_in_a_terminal_long_keys_lose_their_middle_not_a_line(example):
    key = "diffusion_model." + ".".join(f"very_long_module_name_{i}" for i in range(9)) + ".to_q"
    report = long_key_report(example.report, key)
    for width in (80, 100, 160):
        lines = render(report, terminal=True, width=width, max_groups=300, sort="key")
        assert all(len(ln) <= width for ln in lines)
        rows = table_rows(lines)
        assert len(rows) == 272  # one line per group
        long = rows[-1][0]  # sorted by key: it comes last
        assert long.startswith("very_") and long.endswith("8.to_q") and "…" in long, long
        assert len(long) >= 16 and (width < 160 or len(long) > 40)
        start = next(i for i, ln in enumerate(lines) if ln.startswith("groups with"))
        title = " ".join(ln.strip() for ln in lines[start : start + 2])
        assert ("narrow terminal: error" in title) == (width == 80), title  # columns left out, values never folded


def test_fit_middle():
    assert fit_middle("abcdefghij", 10) == "abcdefghij"
    assert fit_middle("abcdefghijk", 10) == "abc…fghijk"
    assert len(fit_middle("x" * 300, 24)) == 24


def test_markup_and_control_characters_from_files_print_literally(example):
    text = example.report.to_json().replace("style_kohya", "[bold red]x[/] :smile: \\u001b[31m")
    from loramerge.report.model import Report

    report = Report.model_validate_json(text)
    out = "\n".join(render(report, terminal=True, width=200))
    assert "[bold red]x[/] :smile: \\x1b[31m" in out
    assert "\x1b" not in out  # color_system=None: any ESC would come from the name
