"""Running a recipe tree: each step is one `pipeline.run`; a step's result passes to the steps that
use it in memory (its low-rank factors as a LoRA state dict, `formats.memory.MemorySource`), and is
written only where the step says ``save:``. The output records the whole tree with input SHA-256s."""

from __future__ import annotations

from pathlib import Path

from ..atomic import check_output
from ..config import LoraInput, MergeConfig
from ..enums import OutputFormat, Progress
from ..formats.memory import MemorySource
from ..formats.writers import tensors_for
from ..inputs import file_sha256
from ..pipeline import MergeResult, run
from .schema import Recipe, RecipeError, Step


def stand_in(step: str) -> str:
    """The path an earlier step's result goes by as an input (never a file)."""
    return f"<step {step}>"


def run_recipe(
    recipe: Recipe,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> MergeResult:
    """Run the steps the output needs, in order; returns the output step's result (its `tree` is
    the recipe, recorded when it is saved). File paths must be resolved (`load.resolved`)."""
    order = recipe.order()
    files = [i.path for s in order for i in s.inputs if i.path is not None]
    for s in order:
        for i in s.inputs:
            if i.path is not None and not Path(i.path).is_file():
                raise RecipeError(f"step '{s.name}': input {i.path} does not exist")
    for target in [output] + [s.save for s in order]:
        if target is not None:  # before any work: no input overwritten, no existing file replaced
            check_output(target, files, overwrite=overwrite)
    hashes = {p: file_sha256(p) for p in dict.fromkeys(files)}
    memory: dict[str, MemorySource] = {}
    uses = {s.name: sum(u == s.name for t in order for u in t.steps_used) for s in order}
    result = None
    try:
        for s in order:
            cfg = _config(recipe, s, s.name == recipe.final)
            step = run(cfg, progress, sources={stand_in(u): memory[u] for u in s.steps_used})
            if s.save:
                _with_tree(step, recipe, s.name, hashes).save(s.save, overwrite=overwrite)
            if uses[s.name]:  # later steps read it from memory: its factors as a LoRA state dict
                dtype = cfg.dtype.resolved(d for f in step.inputs.files for d in f.dtypes).torch
                tensors = tensors_for(step.items(), step.inputs.table, OutputFormat.KOHYA, dtype=dtype)
                memory[s.name] = MemorySource(stand_in(s.name), tensors)
            if s.name == recipe.final:
                result = step
            else:
                step.close()
            for u in s.steps_used:  # free what no later step needs
                uses[u] -= 1
                if uses[u] == 0:
                    memory.pop(u, None)
    except BaseException:
        if result is not None:
            result.close()
        raise
    assert result is not None
    result = _with_tree(result, recipe, recipe.final, hashes)
    if output is not None:
        saved = result.save(output, overwrite=overwrite)
        result.report = result.report.model_copy(update={"output": saved})
    return result


def _config(recipe: Recipe, step: Step, final: bool) -> MergeConfig:
    options = recipe.step_options(step)
    if not final and "dtype" not in step.options:
        options["dtype"] = "float32"  # what passes on in memory is float32 unless the step says otherwise
    inputs: list[LoraInput] = []
    for i in step.inputs:
        inputs.append(i.lora(i.path) if i.path is not None else i.lora(stand_in(i.step or ""), name=i.step))
    return MergeConfig(inputs=tuple(inputs), **options)


def _with_tree(result: MergeResult, recipe: Recipe, output: str, hashes: dict[str, str]) -> MergeResult:
    """`result` recording the recipe up to step `output`, each file input with its SHA-256 (and no
    ``save:``: re-running a file's recipe makes that file only)."""
    sub = recipe.model_copy(update={"output": output})
    needed = {s.name for s in sub.order(saves=False)}
    steps = []
    for s in recipe.steps:
        if s.name in needed:
            inputs = [i.model_copy(update={"sha256": hashes.get(i.path or "")}) for i in s.inputs]
            steps.append(s.model_copy(update={"inputs": tuple(inputs), "save": None}))  # re-runs make one file
    tree = sub.model_copy(update={"steps": tuple(steps)}).model_dump(mode="json")
    result.tree = tree
    return result
