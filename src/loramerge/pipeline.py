"""`run`: open → align → pass 1 → plan → pass 2 → write → report. The only place that knows the order."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .analysis.pass1 import Analysis, pass1
from .atomic import check_output
from .config import MergeConfig
from .engine import GroupResult, check_device, pass2
from .enums import OutputDtype, OutputFormat, Progress
from .formats.kohya_meta import carried_metadata
from .formats.memory import MemorySource
from .formats.writers import OutputItem, write
from .inputs import Inputs, file_sha256, open_inputs
from .plan import MergePlan, check_forced_mode, make_plan, uses_sign_statistics
from .report import Report, build_report
from .report.model import OutputInfo
from .spool import PatchStore, materialize
from .threads import automatic_threads, single_threaded_ops
from .version import __version__


@dataclass
class MergeResult:
    """What a merge produced: the plan, the report, and the merged patches.

    The patches live in a temporary spool file (`store`), not in memory: each ``group.patch`` is a
    handle whose ``load()`` reads it back. `close()` (or leaving a ``with`` block, or garbage
    collection) deletes the spool; save what you need first."""

    inputs: Inputs
    plan: MergePlan
    groups: list[GroupResult]
    report: Report
    store: PatchStore | None = None
    tree: dict | None = None  # the recipe tree this result ends (`recipes.run`); None: one plain merge

    def items(self) -> list[OutputItem]:
        return [OutputItem(*self.inputs.targets[g.key], g.patch) for g in self.groups]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> MergeResult:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(
        self, path: str | Path, format: str | None = None, dtype: str | None = None, *, overwrite: bool = False
    ) -> OutputInfo:
        """Write the merged LoRA to `path` (in `format`/`dtype`, default the configuration's);
        returns what was written. The report is not changed. An input is never overwritten; an
        existing file only with ``overwrite=True``."""
        check_output(path, [inp.path for inp in self.inputs.cfg.inputs], overwrite=overwrite)
        cfg = self.inputs.cfg
        # the recipe in the file says how *this* file was written: re-running it gives the same bytes
        resolved = OutputDtype(dtype or cfg.dtype).resolved(d for f in self.inputs.files for d in f.dtypes)
        cfg = cfg.model_copy(update={"format": OutputFormat(format or cfg.format), "dtype": resolved})
        written = write(
            path,
            self.items(),
            self.inputs.table,
            cfg.format,
            metadata={
                **carried_metadata((f.metadata for f in self.inputs.files), self.report.architecture),
                **recipe_metadata(cfg, self.report, Path(path).parent, self.tree),
            },
            dtype=resolved.torch,
        )
        return OutputInfo(path=str(path), format=cfg.format.value, dtype=resolved.value, widened=written.widened)


def analyze(
    cfg: MergeConfig, progress: Progress | None = None, sources: Mapping[str, MemorySource] | None = None
) -> tuple[Inputs, MergePlan, Analysis]:
    """Pass 1 and the plan only: nothing merged, nothing written. `sources`: inputs held in memory.
    What can be checked before the work is: the device, the inputs' headers, the forced mode against
    the LoRAs meeting per group."""
    check_device(cfg.device)
    with single_threaded_ops():
        inputs = open_inputs(cfg, sources)
        check_forced_mode(inputs)
        analysis = pass1(inputs, progress, threads=threads_of(cfg), signs=uses_sign_statistics(cfg))
    return inputs, make_plan(inputs, analysis), analysis


def threads_of(cfg: MergeConfig) -> int:
    return cfg.threads if cfg.threads is not None else automatic_threads()


def run(
    cfg: MergeConfig,
    progress: Progress | None = None,
    output: str | Path | None = None,
    *,
    overwrite: bool = False,
    sources: Mapping[str, MemorySource] | None = None,
) -> MergeResult:
    """One merge. `sources`: inputs held in memory by their stand-in path (a recipe's earlier steps)."""
    sources = sources or {}
    folder = None
    if output is not None:  # before the work, not after it
        folder = check_output(output, [inp.path for inp in cfg.inputs], overwrite=overwrite).parent
    # the spool goes next to the output (the disk the user chose) and is made first: a folder that
    # cannot hold it is refused before the work; it is removed on every failure, interrupts included
    store = PatchStore(folder)
    try:
        inputs, plan, analysis = analyze(cfg, progress, sources)
        with single_threaded_ops():  # each group's patch goes to the spool as soon as it is made
            merged = pass2(inputs, plan, progress, threads=threads_of(cfg), stats=analysis.stats)
            groups = [replace(g, patch=store.put(materialize(g.patch))) for g in merged]
        hashes = {
            i: sources[inp.path].sha256() if inp.path in sources else file_sha256(inp.path)
            for i, inp in enumerate(cfg.inputs)
        }
        plan = plan.with_results(groups)
        report = build_report(inputs, analysis, plan, groups, hashes=hashes)
        result = MergeResult(inputs, plan, groups, report, store)
        if output is not None:
            saved = result.save(output, overwrite=overwrite)
            result = replace(result, report=report.model_copy(update={"output": saved}))
    except BaseException:
        store.close()
        raise
    return result


def recipe_metadata(cfg: MergeConfig, report: Report, folder: Path, tree: dict | None = None) -> dict[str, str]:
    """The whole recipe in the output header: inputs with SHA-256, strengths, every option, seed,
    version (or the whole tree of a hierarchical recipe). Input paths are stored relative to the
    output's folder (where they can be), so the recipe runs from any working directory."""
    if tree is None:
        config = _portable_options(cfg.model_dump(mode="json"), folder)
        for inp in config["inputs"]:
            inp["path"] = portable(inp["path"], folder)
        sha = {portable(lora.path, folder): lora.sha256 for lora in report.loras}
        recipe: dict = {"version": __version__, "config": config, "sha256": sha}
    else:  # the output step records the format and dtype this file was written in, as above
        written = {"format": cfg.format.value, "dtype": cfg.dtype.value}
        steps = [
            {
                **step,
                "options": _portable_options(
                    {**step["options"], **(written if step["name"] == tree["output"] else {})}, folder
                ),
                "inputs": [{**i, "path": i["path"] and portable(i["path"], folder)} for i in step["inputs"]],
            }
            for step in tree["steps"]
        ]
        options = _portable_options(tree["options"], folder)
        recipe = {"version": __version__, "tree": {**tree, "options": options, "steps": steps}}
    summary = {
        "architecture": report.architecture,
        "preset": report.preset,
        "auto_strength": report.auto_strength,
        "strategy_counts": report.strategy_counts,
    }
    return {
        "loramerge.recipe": json.dumps(recipe, sort_keys=True),
        "loramerge.summary": json.dumps(summary, sort_keys=True),
    }


def portable(path: str, folder: Path) -> str:
    """`path` relative to `folder` where it can be (another Windows drive: absolute)."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:
        return os.path.abspath(path)


def _portable_options(options: dict, folder: Path) -> dict:
    """Options with their file paths (the block-weight presets file) stored relative to `folder`."""
    if options.get("block_weights_file"):
        return {**options, "block_weights_file": portable(options["block_weights_file"], folder)}
    return options
