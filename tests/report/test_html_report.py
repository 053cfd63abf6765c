"""The HTML report of the README's example merge: what each figure holds, escaping, self-containment,
determinism, and the clear errors before any work."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from loramerge.errors import MissingExtraError
from loramerge.report.layout import block_rows
from loramerge.report.model import Report

from .conftest import ROOT, readme_merge_args

matplotlib = pytest.importorskip("matplotlib", reason="the HTML report needs the 'report' extra (matplotlib)")

CELL = re.compile(
    r'<g id="(?P<id>[a-z_]+-\d+)"><title>(?P<title>[^<]*)</title>\s*<path d="[^"]*"[^>]*style="fill: (?P<fill>#[0-9a-f]{6})'
)


def cells(html: str, prefix: str) -> dict[int, tuple[str, str]]:
    """Group index -> (title, fill colour) of the cells whose id starts with `prefix`."""
    out = {}
    for m in CELL.finditer(html):
        name, _, index = m["id"].rpartition("-")
        if name == prefix:
            out[int(index)] = (m["title"], m["fill"])
    return out


def parse(html: str) -> tuple[set[str], set[str], str]:
    """The tag names, attribute names and the text of a page, as a browser's parser sees them."""
    tags: set[str] = set()
    attributes: set[str] = set()
    text: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            attributes.update(name for name, _ in attrs)

        def handle_data(self, data):
            text.append(data)

    Parser(convert_charrefs=True).feed(html)
    return tags, attributes, "".join(text)


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@pytest.mark.parametrize(
    "metric, label",
    [("effective_conflict", "effective conflict"), ("cosine", "cosine"), ("subspace_overlap", "subspace overlap")],
)
def test_one_heatmap_cell_per_group_with_its_value(example, metric, label):
    found = cells(example.html, metric)
    groups = example.report.groups
    assert sorted(found) == list(range(len(groups))) and len(groups) == 272  # 34 transformer blocks x 8 modules
    for i, g in enumerate(groups):
        value = getattr(g, metric)
        assert found[i][0] == f"{g.key}: {label} {'-' if value is None else f'{value:.3f}'}"


def test_heatmap_colours_follow_the_values(example):
    """The example's character LoRA is built to oppose the style in output_blocks.1 and to align with it in
    middle_block.1 (examples/make_examples.py): on the diverging cosine scale those cells are red and blue."""
    found = cells(example.html, "cosine")
    for i, g in enumerate(example.report.groups):
        r, _, b = rgb(found[i][1])
        if g.cosine is not None and g.cosine < -0.5:
            assert "output_blocks.1." in g.key and r > b + 60, (g.key, g.cosine, found[i][1])
        if g.cosine is not None and g.cosine > 0.5:
            assert "middle_block.1." in g.key and b > r + 60, (g.key, g.cosine, found[i][1])
    assert sum(1 for g in example.report.groups if g.cosine is not None and g.cosine < -0.5) >= 8


def test_strategy_map_colours_each_group_as_its_strategy_in_the_legend(example):
    found = cells(example.html, "strategy")
    by_strategy: dict[str, set[str]] = {}
    for i, g in enumerate(example.report.groups):
        assert found[i][0].startswith(f"{g.key}: {g.strategy} (")
        by_strategy.setdefault(g.strategy, set()).add(found[i][1])
    assert all(len(colours) == 1 for colours in by_strategy.values())  # one colour per strategy...
    assert len({c for cs in by_strategy.values() for c in cs}) == len(by_strategy)  # ... and a different one each
    assert set(by_strategy) == set(example.report.strategy_counts) == {"weighted_sum", "weighted_average", "consensus"}


def test_rows_are_the_model_blocks_in_order(example):
    rows = block_rows(example.report.architecture, example.report.groups)
    names = [r.name for r in rows]
    # SDXL's UNet: 9 input blocks, the middle block, 9 output blocks; untouched blocks stay as empty rows
    expected_in_order = (
        [f"input_blocks.{i}" for i in range(9)] + ["middle_block.1"] + [f"output_blocks.{i}" for i in range(9)]
    )
    assert [n for n in names if n in expected_in_order] == expected_in_order
    sizes = {r.name: len(r.groups) for r in rows}
    assert sizes["input_blocks.4"] == 16 and sizes["input_blocks.7"] == 32 and sizes["output_blocks.5"] == 16
    assert sizes["input_blocks.0"] == 0 and sum(sizes.values()) == 272
    order = [g.key for g in next(r for r in rows if r.name == "input_blocks.4").groups][:4]
    assert [k.rsplit(".", 2)[-2:] for k in order] == [
        ["attn1", "to_q"],
        ["attn1", "to_k"],
        ["attn1", "to_v"],
        ["to_out", "0"],
    ]  # the table's module order


def test_retention_bars_are_block_means(example):
    report = example.report
    rows = block_rows(report.architecture, report.groups)
    r = next(i for i, row in enumerate(rows) if row.name == "output_blocks.1")
    for k, lora in enumerate(report.loras):
        values = [
            g.retention[lora.name]
            for g in report.groups
            if g.key.startswith("diffusion_model.output_blocks.1.") and lora.name in g.retention and g.n_loras > 1
        ]
        title = re.search(rf'<g id="retention-{k}-{r}"><title>([^<]*)</title>', example.html)
        if not values:
            assert title is None
            continue
        assert title is not None
        assert title[1] == f"{lora.name} in output_blocks.1: mean retention {sum(values) / len(values):.3f}"
    assert re.search(r"character_peft in output_blocks\.1: mean retention 0\.(0|1)", example.html)  # cancelled


def test_warnings_come_first_then_the_cancelled_summary(example):
    body = example.html.split("<body>", 1)[1]
    sections = re.findall(r'<section id="([a-z-]+)"', body)
    assert sections[:2] == ["warnings", "summary"]
    assert body.index('<section id="warnings"') < body.index("<svg")
    assert len(example.report.warnings) == 2
    for w in example.report.warnings:
        assert f"<li>{w.replace('<', '&lt;')}</li>" in body  # "retention < 0.3" escaped
    assert "<li>character_peft cancelled in 32 group(s) (retention &lt; 0.3): output_blocks.1 (32)</li>" in body
    assert "scale" in body and example.report.auto_strength_detail["model"].reason in body
    assert "strength_model: 0.8" in body and "examples/style_kohya.safetensors" in body  # the recipe


def test_self_contained(example):
    html = example.html
    assert "<script" not in html and "<iframe" not in html and "<link rel=stylesheet" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for attribute, value in re.findall(r'\b(src|href|xlink:href)="([^"]*)"', html):
        assert value.startswith(("#", "data:")), (attribute, value)
    assert re.findall(r"url\(([^)]*)\)", html) == [u for u in re.findall(r"url\(([^)]*)\)", html) if u.startswith("#")]
    assert not re.search(r"\b20\d\d-\d\d-\d\d", html)  # no date anywhere


def test_same_report_same_bytes_in_another_process(example, tmp_path):
    again = tmp_path / "again.html"
    code = (
        "import sys; from loramerge.report.model import Report; "
        "Report.model_validate_json(open(sys.argv[1]).read()).save_html(sys.argv[2])"
    )
    js = tmp_path / "r.json"
    js.write_text(example.report.to_json())
    subprocess.run([sys.executable, "-c", code, str(js), str(again)], check=True)
    assert again.read_bytes() == example.html_path.read_bytes()


def test_everything_from_files_is_escaped(example):
    evil = '<img src=x onerror="alert(1)">&amp;'
    text = example.report.to_json().replace("style_kohya", evil.replace('"', '\\"'))
    html = Report.model_validate_json(text).to_html()
    tags, attributes, text = parse(html)
    assert "img" not in tags and "onerror" not in attributes  # the name is text, never markup
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;" in html  # html.escape in the page
    assert text.count(evil) > 10  # read back whole: tables, warnings, cell and bar titles, legends, the recipe


def test_missing_matplotlib_names_the_extra(example, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'loramerge\[report\]'"):
        example.report.to_html()


@pytest.mark.parametrize("case", ["no_matplotlib", "missing_folder"])
def test_cli_refuses_before_any_work(tmp_path, case):
    out = tmp_path / "merged.safetensors"
    html = tmp_path / ("nowhere/r.html" if case == "missing_folder" else "r.html")
    block = "import sys; sys.modules['matplotlib'] = None; " if case == "no_matplotlib" else ""
    code = f"{block}from loramerge.cli import main; main()"
    argv = ["merge", *readme_merge_args(), "-o", str(out), "--report-html", str(html)]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    message = "pip install 'loramerge[report]'" if case == "no_matplotlib" else "nowhere does not exist"
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert list(tmp_path.rglob("*")) == []  # nothing written, not even the LoRA


def test_analysis_report_has_the_heatmaps_and_says_why_there_is_no_retention(tmp_path):
    """`analyze --report-html`: nothing merged, so no retention; the page is whole and matplotlib warns of nothing."""
    import warnings

    from typer.testing import CliRunner

    from loramerge.cli import app

    html = tmp_path / "analysis.html"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CliRunner().invoke(app, ["analyze", *readme_merge_args(), "--report-html", str(html), "-q"])
    assert result.exit_code == 0, result.output
    page = html.read_text()
    report = Report.model_validate_json(CliRunner().invoke(app, ["analyze", *readme_merge_args(), "--json"]).output)
    assert len(cells(page, "cosine")) == len(report.groups) == 272
    assert "no retention: a merge measures it" in page and 'id="retention-' not in page
    assert " · wrote " not in page  # nothing was written
