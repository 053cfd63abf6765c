"""What is wrong with a recipe or a formula is said before any work, naming the step."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loramerge.api import load_recipe, merge
from loramerge.config import LoraInput
from loramerge.errors import LoraMergeError
from loramerge.recipes.formula import formula_recipe, parse_formula
from loramerge.recipes.schema import RecipeError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture()
def folder(tmp_path):
    for n in ("style_kohya", "detail_kohya"):
        shutil.copy(EXAMPLES / f"{n}.safetensors", tmp_path / f"{n}.safetensors")
    return tmp_path


def _recipe(folder, data):
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


STEP = {"name": "a", "inputs": ["style_kohya.safetensors", "detail_kohya.safetensors"]}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"steps": [STEP]}, r"version: Field required"),
        ({"version": 2, "steps": [STEP]}, r"version: Input should be 1"),
        ({"version": 1, "steps": []}, r"steps: Tuple should have at least 1 item"),
        ({"version": 1, "steps": [{**STEP, "inputs": []}]}, r"step 'a': inputs: Tuple should have at least 1 item"),
        (
            {"version": 1, "steps": [{**STEP, "mode": "nope"}]},
            r"step 'a': invalid options: .*unknown merge strategy 'nope'",
        ),
        ({"version": 1, "steps": [{**STEP, "colour": 1}]}, r"step 'a': invalid options: colour: Extra inputs"),
        (
            {"version": 1, "steps": [{**STEP, "inputs": [{"path": "x", "step": "y"}]}]},
            r"step 'a': inputs.0: Value error, give exactly one of 'path'",
        ),
        (
            {"version": 1, "steps": [{**STEP, "inputs": ["style_kohya.safetensors:abc"]}]},
            r"step 'a': input 'style_kohya.safetensors:abc': the model strength 'abc' is not a number",
        ),
        ({"version": 1, "steps": [STEP, {"name": "a", "inputs": ["a"]}]}, r"step 'a': two steps have this name"),
        (
            {"version": 1, "steps": [STEP, {"name": "b", "inputs": [{"step": "zz"}]}]},
            r"step 'b': input step 'zz' is not defined",
        ),
        ({"version": 1, "output": "zz", "steps": [STEP]}, r"output 'zz' is not a step"),
        (
            {
                "version": 1,
                "steps": [
                    {"name": "a", "inputs": ["b"]},
                    {"name": "b", "inputs": ["c"]},
                    {"name": "c", "inputs": ["a"]},
                ],
            },
            r"step '[abc]': the steps form a cycle \((a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)\)",
        ),
        (
            {"version": 1, "steps": [{"name": "a", "inputs": ["a", "style_kohya.safetensors"]}]},
            r"step 'a': the steps form a cycle \(a -> a\)",
        ),
        (
            {"version": 1, "steps": [{"name": "a", "inputs": ["missing.safetensors"]}]},
            r"step 'a': input .*missing.safetensors does not exist",
        ),
    ],
)
def test_bad_recipes_name_the_step(folder, data, message):
    with pytest.raises(LoraMergeError, match=message) as err:
        load_recipe(_recipe(folder, data))
    assert "r.yaml" in str(err.value)


def test_paths_are_relative_to_the_recipe_and_hashes_are_checked(folder, tmp_path, monkeypatch):
    out = folder / "out"
    out.mkdir()
    merge(
        [str(folder / "style_kohya.safetensors"), str(folder / "detail_kohya.safetensors")],
        output=out / "m.safetensors",
    )
    monkeypatch.chdir(out)  # not where the inputs are: the recipe's paths are relative to its file
    cfg = load_recipe(out / "m.safetensors")
    assert [Path(i.path) for i in cfg.inputs] == [
        folder / "style_kohya.safetensors",
        folder / "detail_kohya.safetensors",
    ]
    # an input that changed since: an error naming it, unless allowed
    data = (folder / "detail_kohya.safetensors").read_bytes()
    (folder / "detail_kohya.safetensors").write_bytes(data[:-4] + bytes(4))
    with pytest.raises(LoraMergeError, match=r"detail_kohya.safetensors has changed since the recipe was recorded"):
        load_recipe(out / "m.safetensors")
    assert (
        load_recipe(out / "m.safetensors", allow_changed_inputs=True)
        .inputs[1]
        .path.endswith("detail_kohya.safetensors")
    )
    run = subprocess.run(
        [sys.executable, "-m", "loramerge.cli", "merge", "--recipe", "m.safetensors", "-o", "n.safetensors"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--allow-changed-inputs" in run.stderr and not (out / "n.safetensors").exists()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loramerge.cli",
            "merge",
            "--recipe",
            "m.safetensors",
            "-o",
            "n.safetensors",
            "--allow-changed-inputs",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def test_a_tree_input_that_changed_names_the_step(folder):
    merge(
        [str(folder / "style_kohya.safetensors"), str(folder / "detail_kohya.safetensors")],
        formula="(1+2):0.5 + 1",
        output=folder / "t.safetensors",
    )
    (folder / "style_kohya.safetensors").write_bytes((folder / "style_kohya.safetensors").read_bytes() + b"")
    (folder / "detail_kohya.safetensors").write_bytes(b"x" + (folder / "detail_kohya.safetensors").read_bytes()[1:])
    with pytest.raises(RecipeError, match=r"step 'g1': input .*detail_kohya.safetensors has changed"):
        load_recipe(folder / "t.safetensors")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"the formula is empty at position 1"),
        ("(1+2", r"expected '\)' \(the formula ends\) at position 5"),
        ("1+", r"expected a number \(the formula ends\)"),
        ("1 2", r"unexpected '2' at position 3"),
        ("1:abc", r"unexpected character 'a' at position 3"),
        ("0+1", r"'0' is not a LoRA position"),
        ("1.5+1", r"'1.5' is not a LoRA position"),
        ("1+4", r"LoRA 4 is not given \(there are 3 LoRA arguments\)"),
        ("(1+2)):1", r"unexpected '\)' at position 6"),
    ],
)
def test_formula_errors_point_at_the_mistake(text, message):
    loras = [LoraInput(path=f"{n}.safetensors") for n in "abc"]
    with pytest.raises(RecipeError, match=message):
        formula_recipe(text, loras)


def test_formula_grammar():
    terms = parse_formula("((1 + 2):0.5 + 3):2,-1 + 2:1e-1")
    assert [t.strength for t in terms] == [(2.0, -1.0), (0.1, None)]
    inner = terms[0].atom
    assert isinstance(inner, list) and inner[0].group == 2 and inner[0].strength == (0.5, None) and inner[1].atom == 3
    assert parse_formula("(1+2)")[1].atom == 2  # one bracketed sum is the sum itself
    loras = [
        LoraInput(path="a.safetensors", strength_model=0.5, strength_text_encoder=0.25, block_weights="OUTALL"),
        LoraInput(path="b.safetensors"),
        LoraInput(path="c.safetensors"),
    ]
    recipe = formula_recipe("(1:2+2):0.6 + 3:0.4,0.1", loras, {"seed": 3})
    g1, final = recipe.steps
    assert (g1.name, final.name, recipe.options) == ("g1", "final", {"seed": 3})
    a = g1.inputs[0]
    assert (a.path, a.strength_model, a.strength_text_encoder, a.block_weights) == ("a.safetensors", 1.0, 0.5, "OUTALL")
    assert (final.inputs[0].step, final.inputs[0].strength_model) == ("g1", 0.6)
    assert (final.inputs[1].strength_model, final.inputs[1].strength_text_encoder) == (0.4, 0.1)


def test_the_documented_recipes_are_valid():
    import re

    from loramerge.recipes.schema import parse_recipe

    text = (Path(__file__).resolve().parents[2] / "docs" / "RECIPES.md").read_text()
    trees = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    orders = [[s.name for s in parse_recipe(t, "docs").order()] for t in trees if "steps" in t]
    assert orders == [["styles", "characters", "final"], ["two", "three", "four"], ["g1", "final"]]
    formula = formula_recipe(
        "(1+2):0.6 + 3:0.4",
        [LoraInput(path=p) for p in ("style_a.safetensors", "style_b.safetensors", "character.safetensors")],
    )
    assert formula == parse_recipe(trees[-1], "docs")  # the doc's "exactly this recipe"
