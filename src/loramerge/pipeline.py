"""`run`: open → align → pass 1 → plan → pass 2 → write → report. The only place that knows the order."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import __version__
from .config import MergeConfig, OutputDtype
from .errors import OutputError
from .formats.writers import OutputFormat, OutputItem, write
from .passes import GroupResult, pass1, pass2
from .plan import MergePlan, make_plan
from .report import build_report
from .session import Session, file_sha256, open_session
from .spool import PatchStore

Progress = Callable[[str, str, int, int], None]  # (stage, group key, index, total)


@dataclass
class MergeResult:
    """What a merge produced: the plan, the report, and the merged patches.

    The patches live in a temporary spool file (`store`), not in memory: each ``group.patch`` is a
    handle whose ``load()`` reads it back. `close()` (or leaving a ``with`` block, or garbage
    collection) deletes the spool; save what you need first."""

    session: Session
    plan: MergePlan
    groups: list[GroupResult]
    report: dict
    store: PatchStore | None = None

    def items(self) -> list[OutputItem]:
        return [OutputItem(*self.session.targets[g.key], g.patch) for g in self.groups]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> MergeResult:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self, path: str | Path, format: str | None = None, dtype: str | None = None) -> Path:
        cfg = self.session.cfg
        # the recipe in the file says how *this* file was written: re-running it gives the same bytes
        cfg = cfg.model_copy(update={"format": OutputFormat(format or cfg.format),
                                     "dtype": OutputDtype(dtype or cfg.dtype)})
        write(path, self.items(), self.session.table, cfg.format, metadata=recipe_metadata(cfg, self.report),
              dtype=cfg.dtype.torch)
        self.report["output"] = {"path": str(path), "format": cfg.format.value, "dtype": cfg.dtype.value}
        return Path(path)


def analyze(cfg: MergeConfig, progress: Progress | None = None) -> tuple[Session, MergePlan, dict]:
    """Pass 1 and the plan only: nothing merged, nothing written."""
    session = open_session(cfg)
    analysis = pass1(session, _stage(progress, "analyze"))
    plan = make_plan(session, analysis)
    return session, plan, analysis


def run(cfg: MergeConfig, progress: Progress | None = None, output: str | Path | None = None) -> MergeResult:
    folder = None
    if output is not None:
        folder = Path(output).parent
        if not folder.is_dir():  # before the work, not after it
            raise OutputError(f"{output}: folder {folder} does not exist")
    session = open_session(cfg)
    analysis = pass1(session, _stage(progress, "analyze"))
    plan = make_plan(session, analysis)
    store = PatchStore(folder)  # next to the output: the disk the user chose for the result
    try:  # each group's patch goes to the spool as soon as it is made: one group in memory at a time
        groups = [replace(g, patch=store.put(g.patch)) for g in pass2(session, plan, _stage(progress, "merge"))]
    except BaseException:
        store.close()
        raise
    hashes = {i: file_sha256(inp.path) for i, inp in enumerate(cfg.inputs)}
    report = build_report(session, analysis, plan, groups, hashes=hashes, output=None)
    result = MergeResult(session, plan, groups, report, store)
    if output is not None:
        result.save(output)
    return result


def recipe_metadata(cfg: MergeConfig, report: dict) -> dict[str, str]:
    """The whole recipe in the output header: inputs with SHA-256, strengths, every option, seed, version."""
    recipe = {"version": __version__, "config": cfg.model_dump(mode="json"),
              "sha256": {lora["path"]: lora["sha256"] for lora in report["loras"]}}
    summary = {"architecture": report["architecture"], "preset": report["preset"],
               "auto_strength": report["auto_strength"], "strategy_counts": report["strategy_counts"]}
    return {"loramerge.recipe": json.dumps(recipe, sort_keys=True), "loramerge.summary": json.dumps(summary, sort_keys=True)}


def _stage(progress: Progress | None, stage: str):
    return None if progress is None else (lambda key, n, total: progress(stage, key, n, total))
