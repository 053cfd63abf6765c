"""Hierarchical recipes on the README's example LoRAs (SDXL, kohya and PEFT files): a tree of steps
equals the same steps run one by one through files; --formula and its YAML give the same bytes;
the output's recorded tree re-runs to the same bytes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from loramerge import architectures as A
from loramerge.api import load_recipe, merge
from loramerge.formats.align import align, load_group
from loramerge.formats.files import read_header
from loramerge.formats.reader import AdapterFile
from loramerge.recipes.schema import Recipe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ("style_kohya", "character_peft", "detail_kohya")


@pytest.fixture()
def loras(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    for n in NAMES:
        shutil.copy(EXAMPLES / f"{n}.safetensors", folder / f"{n}.safetensors")
    return [folder / f"{n}.safetensors" for n in NAMES]


def _delta(path):
    table = A.get_table("sdxl")
    aligned = align(AdapterFile(path), table, A.placer("sdxl"), strict=True)
    return {k: load_group(aligned, table, k).dense() for k in aligned.groups}


THREE_LEVELS = """
version: 1
options: {seed: 5, dtype: float32}
steps:
  - name: looks
    inputs: [loras/style_kohya.safetensors:0.8, "loras/detail_kohya.safetensors:0.7@OUTALL"]
    mode: ties
  - name: with_character
    inputs: ["looks:0.9", loras/character_peft.safetensors]
  - name: final
    inputs: [with_character, "loras/detail_kohya.safetensors:0.3,0.2"]
    auto_strength: false
"""


def test_three_level_tree_equals_the_steps_run_through_files(loras, tmp_path):
    style, character, detail = map(str, loras)
    recipe_file = tmp_path / "tree.yaml"
    recipe_file.write_text(THREE_LEVELS)
    recipe = load_recipe(recipe_file)
    assert isinstance(recipe, Recipe) and [s.name for s in recipe.order()] == ["looks", "with_character", "final"]
    tree = merge(recipe, output=tmp_path / "tree.safetensors")
    # the same steps, one by one, each written to a float32 file and read back
    merge(
        [f"{style}:0.8", f"{detail}:0.7@OUTALL"],
        mode="ties",
        seed=5,
        dtype="float32",
        output=tmp_path / "1.safetensors",
    )
    merge([f"{tmp_path / '1.safetensors'}:0.9", character], seed=5, dtype="float32", output=tmp_path / "2.safetensors")
    merge(
        [str(tmp_path / "2.safetensors"), f"{detail}:0.3,0.2"],
        seed=5,
        dtype="float32",
        auto_strength=False,
        output=tmp_path / "3.safetensors",
    )
    a, b = _delta(tmp_path / "tree.safetensors"), _delta(tmp_path / "3.safetensors")
    assert set(a) == set(b) and len(a) > 100
    for k in a:
        scale = float(b[k].norm()) + 1e-12
        assert float((a[k] - b[k]).norm()) / scale < 1e-5, k
    assert tree.report.output is not None
    # the intermediate steps were not written anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "1.safetensors",
        "2.safetensors",
        "3.safetensors",
        "loras",
        "tree.safetensors",
        "tree.yaml",
    ]
    # the output records the whole tree, paths relative to its folder, with every input's SHA-256
    stored = json.loads(read_header(tmp_path / "tree.safetensors")[1]["loramerge.recipe"])["tree"]
    assert [s["name"] for s in stored["steps"]] == ["looks", "with_character", "final"]
    first = stored["steps"][0]["inputs"]
    assert first[0]["path"] == "loras/style_kohya.safetensors" and len(first[0]["sha256"]) == 64
    assert first[1]["block_weights"] == "OUTALL" and stored["steps"][1]["inputs"][0]["step"] == "looks"


def test_formula_and_yaml_give_the_same_bytes_and_the_output_reruns(loras, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    style, character, detail = (f"loras/{n}.safetensors" for n in NAMES)
    merge([style, f"{character}:0.5", detail], formula="(1+2):0.6 + 3:0.4", seed=2, output="f.safetensors")
    (tmp_path / "r.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "options": {"seed": 2},
                "steps": [
                    {"name": "g1", "inputs": [style, f"{character}:0.5"]},
                    {"name": "final", "inputs": ["g1:0.6", f"{detail}:0.4"]},
                ],
            }
        )
    )
    merge(load_recipe("r.yaml"), output="y.safetensors")
    assert (tmp_path / "f.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    # --recipe OUT.safetensors, from another working directory, gives the same bytes again
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loramerge.cli",
            "merge",
            "--recipe",
            str(tmp_path / "f.safetensors"),
            "-o",
            str(tmp_path / "again.safetensors"),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "f.safetensors").read_bytes()
    # the CLI's --formula writes the same bytes as the API's
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loramerge.cli",
            "merge",
            style,
            f"{character}:0.5",
            detail,
            "--formula",
            "(1 + 2):0.6+3:0.4",
            "--seed",
            "2",
            "-o",
            "cli.safetensors",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cli.safetensors").read_bytes() == (tmp_path / "f.safetensors").read_bytes()


def test_save_writes_an_intermediate_step_that_reruns_alone(loras, tmp_path):
    (tmp_path / "r.yaml").write_text("""
version: 1
steps:
  - {name: pair, inputs: [loras/style_kohya.safetensors, loras/detail_kohya.safetensors], save: out/pair.safetensors,
     dtype: float32}
  - {name: final, inputs: [pair, loras/character_peft.safetensors]}
""")
    (tmp_path / "out").mkdir()
    merge(load_recipe(tmp_path / "r.yaml"), output=tmp_path / "out" / "final.safetensors")
    stored = json.loads(read_header(tmp_path / "out" / "pair.safetensors")[1]["loramerge.recipe"])["tree"]
    assert [s["name"] for s in stored["steps"]] == ["pair"] and stored["output"] == "pair"
    assert stored["steps"][0]["save"] is None
    assert stored["steps"][0]["inputs"][0]["path"] == "../loras/style_kohya.safetensors"
    merge(load_recipe(tmp_path / "out" / "pair.safetensors"), output=tmp_path / "out" / "pair2.safetensors")
    assert (tmp_path / "out" / "pair2.safetensors").read_bytes() == (tmp_path / "out" / "pair.safetensors").read_bytes()
    # the in-memory result the final step used is the saved one (float32 both)
    direct = merge([str(tmp_path / "out" / "pair.safetensors"), str(loras[1])], output=tmp_path / "d.safetensors")
    a, b = _delta(tmp_path / "out" / "final.safetensors"), _delta(tmp_path / "d.safetensors")
    assert direct.report.output is not None and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_step_that_only_saves_runs_wherever_it_is_written(loras, tmp_path):
    (tmp_path / "r.yaml").write_text("""
version: 1
output: final
steps:
  - {name: final, inputs: [loras/style_kohya.safetensors, loras/detail_kohya.safetensors]}
  - {name: side, inputs: ["loras/character_peft.safetensors:0.5"], save: side.safetensors}
""")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert [s.name for s in recipe.order()] == ["final", "side"]
    with merge(recipe, output=tmp_path / "final.safetensors") as result:
        assert [s["name"] for s in result.tree["steps"]] == ["final"]
    side = _delta(tmp_path / "side.safetensors")
    alone = _delta(loras[1])
    assert set(side) == set(alone)
    for k in side:  # one LoRA at 0.5 (no auto-strength effect on a single input), float32
        torch.testing.assert_close(side[k], 0.5 * alone[k].reshape(side[k].shape), rtol=1e-4, atol=1e-6)
