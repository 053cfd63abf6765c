"""Reading recipes: YAML/JSON files and the header of a file loramerge wrote. Paths resolve
relative to the recipe's own folder; recorded SHA-256s are checked against the files now."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import MergeConfig, as_input
from ..errors import InputFileError
from ..formats.files import read_header
from ..inputs import file_sha256
from .schema import Recipe, RecipeError, parse_recipe


def load(path: str | Path, *, allow_changed_inputs: bool = False) -> MergeConfig | Recipe:
    """A plain merge's `MergeConfig` or a hierarchical `Recipe`, with every path resolved against the
    recipe's folder; a recorded SHA-256 that no longer matches its file is an error unless allowed."""
    path = Path(path)
    data = _read(path)
    folder = path.parent
    if isinstance(data, dict) and "tree" in data:
        data = data["tree"]
    if isinstance(data, dict) and "steps" in data:
        recipe = parse_recipe(data, str(path))
        recipe = resolved(recipe, folder)
        _check_tree(recipe, path, allow_changed_inputs)
        return recipe
    hashes = data.get("sha256", {}) if isinstance(data, dict) else {}
    if isinstance(data, dict) and "config" in data:
        data = data["config"]
    if not isinstance(data, dict) or "inputs" not in data:
        raise InputFileError(path, "a recipe needs an 'inputs' list or 'steps'", hint="see docs/RECIPES.md")
    inputs = [as_input(x) for x in data["inputs"]]
    for inp in inputs:
        _check(path, None, inp.path, _resolve(inp.path, folder), hashes.get(inp.path), allow_changed_inputs)
    data = {**data, "inputs": [inp.model_copy(update={"path": _resolve(inp.path, folder)}) for inp in inputs]}
    return MergeConfig(**_resolved_options(data, folder))


def _read(path: Path) -> Any:
    if path.suffix.lower() == ".safetensors":
        _, meta = read_header(path)
        if "loramerge.recipe" not in meta:
            raise InputFileError(
                path, "has no loramerge recipe in its metadata", hint="was it written by loramerge merge?"
            )
        return json.loads(meta["loramerge.recipe"])
    try:
        import yaml  # only where a recipe file is read (its import is ~10 ms of every run)

        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputFileError(path, f"cannot read recipe: {exc}") from exc


def _resolve(p: str, folder: Path) -> str:
    return os.path.normpath(os.path.join(folder, os.path.expanduser(p)))


def resolved(recipe: Recipe, folder: Path) -> Recipe:
    """The recipe with its file and save paths made absolute against `folder`."""
    steps = []
    for s in recipe.steps:
        inputs = tuple(
            i if i.path is None else i.model_copy(update={"path": _resolve(i.path, folder)}) for i in s.inputs
        )
        update = {"inputs": inputs, "save": s.save and _resolve(s.save, folder)}
        steps.append(s.model_copy(update={**update, "options": _resolved_options(s.options, folder)}))
    return recipe.model_copy(update={"steps": tuple(steps), "options": _resolved_options(recipe.options, folder)})


def _resolved_options(options: dict, folder: Path) -> dict:
    """Options with the block-weight presets file resolved against the recipe's folder."""
    if options.get("block_weights_file"):
        return {**options, "block_weights_file": _resolve(options["block_weights_file"], folder)}
    return options


def _check_tree(recipe: Recipe, where: Path, allow_changed: bool) -> None:
    for s in recipe.steps:
        for i in s.inputs:
            if i.path is not None:
                _check(where, s.name, i.path, i.path, i.sha256, allow_changed)


def _check(where: Path, step: str | None, shown: str, path: str, sha256: str | None, allow_changed: bool) -> None:
    at = f"step '{step}': " if step else ""
    if not Path(path).is_file():
        raise RecipeError(
            f"{where}: {at}input {shown} does not exist (looked for {path}; paths are relative to the recipe)"
        )
    if sha256 and not allow_changed and file_sha256(path) != sha256:
        raise RecipeError(
            f"{where}: {at}input {path} has changed since the recipe was recorded (SHA-256 differs)\n"
            "  -> restore the file, or pass --allow-changed-inputs to run with it as it is now"
        )
