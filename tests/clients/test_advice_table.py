"""The format-advice table's shape, the warnings `format_advice` derives from it, and
docs/CLIENTS.md holding the generated table (the cells themselves are measured by
test_format_advice.py). No client needed; milliseconds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from loramerge.formats import advice
from loramerge.formats.advice import (
    ARCHITECTURES,
    CLIENTS,
    FORMATS,
    FULL,
    LOADS,
    NO_MODEL,
    NONE,
    PARTIAL,
    TABLE,
    format_advice,
    markdown_table,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLIENTS.md"


def test_table_is_complete_and_well_formed():
    assert list(TABLE) == list(CLIENTS)
    for client, by_arch in TABLE.items():
        assert list(by_arch) == list(ARCHITECTURES), client
        for arch, by_fmt in by_arch.items():
            assert list(by_fmt) == list(FORMATS), (client, arch)
            for fmt, c in by_fmt.items():
                where = (client, arch, fmt)
                assert c.loads in LOADS, where
                assert bool(c.note) == (c.loads != FULL), f"{where}: a note exactly where it does not fully load"
                assert "\n" not in c.note and "|" not in c.note, where
                assert bool(c.left_out) == (c.loads == PARTIAL), f"{where}: left_out exactly for partial cells"


def test_names_match_the_writer_and_the_architecture_tables():
    from loramerge import architectures as A
    from loramerge.formats.writers import OutputFormat

    assert set(FORMATS) == {f.value for f in OutputFormat}
    assert set(ARCHITECTURES) <= set(A.TABLES)
    assert set(advice.ARCH_LABELS) == set(ARCHITECTURES)


def test_module_is_dependency_free():
    """advice.py imports nothing beyond the standard library (no torch, no writer enum)."""
    tree = ast.parse(Path(advice.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= {"__future__", "collections", "dataclasses", "typing"}, imported
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


def test_issue_example_diffusers_sdxl_in_comfyui_0364():
    warnings = format_advice("diffusers", "sdxl", clients=["comfyui_0.3.64"])
    assert len(warnings) == 1
    assert warnings[0].startswith("ComfyUI 0.3.64 loads only part of diffusers-format SDXL LoRAs (")
    assert warnings[0].endswith("; use --format kohya or comfy")


def test_every_client_that_does_not_load_fully_gets_one_warning():
    for arch in ARCHITECTURES:
        for fmt in FORMATS:
            warnings = format_advice(fmt, arch)
            failing = [c for c in TABLE if TABLE[c][arch][fmt].loads in (PARTIAL, NONE)]
            assert len(warnings) == len(failing), (arch, fmt, warnings)
            for client, text in zip(failing, warnings):
                c = TABLE[client][arch][fmt]
                assert text.startswith(CLIENTS[client].label + (" does not load " if c.loads == NONE
                                                                  else " loads only part of "))
                assert f"{fmt}-format {advice.ARCH_LABELS[arch]} LoRAs ({c.note}); " in text
                loading = {f for f in FORMATS if f != fmt and TABLE[client][arch][f].loads == FULL}
                if not loading:
                    assert text.endswith("; no format loads fully there"), text
                    continue
                suggested = re.search(r"; use --format (.+)$", text).group(1).split(" or ")
                assert set(suggested) == loading and len(suggested) == len(loading), (client, arch, fmt, text)


@pytest.mark.parametrize("fmt, arch", [("kohya", "sdxl"), ("kohya", "wan"), ("comfy", "wan"), ("diffusers", "flux")])
def test_no_warning_where_every_client_loads_fully(fmt, arch):
    assert format_advice(fmt, arch) == []
    assert advice.loads_everywhere(arch, fmt)


def test_formats_that_load_everywhere_come_first():
    # SDXL: kohya loads in all three clients, comfy only in ComfyUI 0.3.64
    assert format_advice("diffusers", "sdxl", clients=["comfyui_0.3.64"])[0].endswith("use --format kohya or comfy")
    assert format_advice("comfy", "sdxl", clients=["diffusers"])[0].endswith("use --format kohya or diffusers")
    assert format_advice("comfy", "flux", clients=["diffusers"])[0].endswith("use --format diffusers")


def test_unmeasured_architectures_get_no_claims():
    for arch in ("acestep", "unknown", ""):
        assert format_advice("diffusers", arch) == []
    assert advice.cell("diffusers", "acestep", "kohya") is None


def test_inputs_are_normalised_and_checked():
    from loramerge.formats.writers import OutputFormat

    assert format_advice(OutputFormat.DIFFUSERS, "SDXL") == format_advice("diffusers", "sdxl")
    assert format_advice(" Diffusers ", "sdxl") == format_advice("diffusers", "sdxl")
    with pytest.raises(ValueError, match="unknown output format"):
        format_advice("peft", "sdxl")
    with pytest.raises(ValueError, match="unknown client"):
        format_advice("kohya", "sdxl", clients=["a1111"])
    with pytest.raises(ValueError, match="style"):
        format_advice("kohya", "sdxl", style="gui")


def test_clients_filter_and_node_style():
    node = format_advice("diffusers", "wan", clients=["comfyui_0.3.64"], style="node")
    assert node == [format_advice("diffusers", "wan", clients=["comfyui_0.3.64"])[0]
                    .replace("use --format kohya or comfy", "save in the kohya or comfy format")]
    assert format_advice("diffusers", "sdxl", clients=[]) == []
    assert format_advice("kohya", "flux", clients=["comfyui_0.3.64", "comfyui_2024"]) == []  # no model is no warning


def test_no_model_cells_give_no_warning():
    assert all(TABLE["comfyui_2024"][a][f].loads == NO_MODEL for a in ARCHITECTURES[2:] for f in FORMATS)
    assert all(TABLE["comfyui_0.3.64"]["zimage"][f].loads == NO_MODEL for f in FORMATS)
    assert format_advice("diffusers", "flux", clients=["comfyui_2024"]) == []


def test_doc_holds_the_generated_table():
    text = DOC.read_text()
    begin = re.search(r"<!-- advice-table:begin[^>]*-->\n", text)
    end = text.index("<!-- advice-table:end -->")
    assert begin is not None
    assert text[begin.end():end] == markdown_table(), (
        "docs/CLIENTS.md is out of date: paste the output of "
        "python -c \"from loramerge.formats.advice import markdown_table; print(markdown_table(), end='')\"")
