"""`tune`: pass 1 once, phase 1 over the grid, phase 2 (merge + metrics + evaluator) on the top N,
ranking, tuner data, memory, and the best candidate written or kept (docs/TUNER.md)."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.pass1 import Analysis, pass1
from ..atomic import check_output
from ..config import MergeConfig
from ..enums import Progress, TunerMemory
from ..errors import EvaluatorError, OptionError
from ..inputs import Inputs, file_sha256, open_inputs
from ..pipeline import MergeResult, run, threads_of
from ..presets import preset_for
from ..report import build_report
from ..report.model import OutputInfo
from ..spool import PatchStore, materialize
from ..threads import ordered_map, single_threaded_ops
from ..version import __version__
from . import data as tuner_data
from . import heuristic, memory, scoring
from .diffcache import DEFAULT_RAM_BUDGET, DiffCache
from .evaluators import EvalContext, Evaluator
from .grid import make_grid
from .phase1 import Scored, candidate_config, plan_for, score_grid, unique


@dataclass
class TuneResult:
    """The ranked sweep (`data`, the tuner data), whether it was replayed from memory, the written
    output, and (``keep_best=True``) the best candidate's merge, open; close it when done."""

    data: dict[str, Any]
    replayed: bool = False
    output: OutputInfo | None = None
    best: MergeResult | None = None
    notes: list[str] = field(default_factory=list)
    cache: dict[str, int] = field(default_factory=dict)  # merged-group cache: hits, misses, spilled bytes

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return self.data["candidates"]

    def config(self, k: int = 1) -> MergeConfig:
        """The merge configuration of the k-th candidate (1 = the best)."""
        return tuner_data.selected_config(self.data, k)

    def to_json(self) -> str:
        return tuner_data.dump(self.data)

    def close(self) -> None:
        if self.best is not None:
            self.best.close()


@dataclass
class _Run:
    inputs: Inputs
    analysis: Analysis
    hashes: dict[int, str]
    cache: DiffCache
    evaluator: Evaluator | None
    workdir: Path
    phase2: dict[int, dict[str, Any]] = field(default_factory=dict)


def tune(
    cfg: MergeConfig,
    *,
    pinned: Mapping[str, Any] | None = None,
    top: int = 3,
    evaluator: Evaluator | None = None,
    budget: float | None = None,
    min_gain: float = 0.0,
    memory_mode: TunerMemory | str = TunerMemory.AUTO,
    progress: Progress | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    keep_best: bool = False,
    ram_budget: int = DEFAULT_RAM_BUDGET,
) -> TuneResult:
    """Sweep the grid for `cfg`'s inputs; `pinned` options (fields of `grid.SWEPT`) are not swept."""
    started = time.monotonic()
    mode = TunerMemory(memory_mode)
    if output is not None:
        check_output(output, [inp.path for inp in cfg.inputs], overwrite=overwrite)
    if mode is TunerMemory.CLEAR:
        memory.clear()
    inputs = open_inputs(cfg)
    preset = preset_for(inputs.architecture, cfg.preset)
    grid = make_grid(preset, pinned, evaluator=evaluator is not None)
    hashes = {i: file_sha256(inp.path) for i, inp in enumerate(cfg.inputs)}
    if not (min_gain >= 0 and math.isfinite(min_gain)):
        raise OptionError(f"--min-gain must be a finite number >= 0, got {min_gain}")
    key = memory.key_of(_fingerprint(cfg, hashes, grid.to_json(), top, evaluator, min_gain))
    stored = memory.recall(key, mode)
    if stored is not None:
        result = TuneResult(stored, replayed=True, notes=["replayed from memory: " + str(memory.folder())])
        return _finish(result, None, output, overwrite, keep_best)
    with single_threaded_ops():
        analysis = pass1(inputs, progress, threads=threads_of(cfg), signs=True)
    candidates = list(grid.candidates())
    scored = score_grid(inputs, analysis, preset, candidates)
    ranked, same_as = unique(scored)
    baseline = baseline_index(cfg, scored, same_as)
    chosen = _phase2_set(ranked, top, baseline)
    notes: list[str] = []
    with DiffCache(ram_budget) as cache, tempfile.TemporaryDirectory(prefix="loramerge-tune.") as tmp:
        state = _Run(inputs, analysis, hashes, cache, evaluator, Path(tmp))
        for n, s in enumerate(chosen):  # one thread per group, as in a merge
            if budget is not None and time.monotonic() - started > budget:
                notes.append(
                    f"--budget {budget:g} s reached: phase 2 stopped after {n} of {len(chosen)} candidates; "
                    "the others are ranked by phase 1 only"
                )
                break
            if progress:
                progress("tune", s.candidate.label(), n, len(chosen))
            with single_threaded_ops():
                state.phase2[s.index] = _measure(state, s, n + 1)
        order = _rank(ranked, state.phase2, evaluator is not None, baseline, min_gain)
        data = _data(cfg, inputs, grid.to_json(), scored, order, same_as, state.phase2, evaluator, notes, top, baseline)
        data["min_gain"] = min_gain
        best = None
        if (output is not None or keep_best) and order[0].index in state.phase2:
            best = _assemble(state, order[0])
        stats = {"hits": cache.hits, "misses": cache.misses, "spilled_bytes": cache.spilled}
        result = TuneResult(data, notes=notes, cache=stats)
        memory.remember(key, data, mode)
        return _finish(result, best, output, overwrite, keep_best)


def baseline_index(cfg: MergeConfig, scored: list[Scored], same_as: dict[int, int]) -> int | None:
    """The grid index of the merge `cfg` itself gives (what ``loramerge merge`` does with the same
    options, λ = 1), or of the candidate it merges like; None when the grid does not hold it."""
    for s in scored:  # the candidate's options are typed MergeConfig values: compared as they are
        if all(getattr(cfg, name) == value for name, value in s.candidate.options):
            return same_as.get(s.index, s.index)
    return None


def _phase2_set(ranked: list[Scored], top: int, baseline: int | None = None) -> list[Scored]:
    """The top `top` distinct configurations by phase-1 score, each at every λ of the grid; and the
    untuned configuration (`baseline`) whatever its score, so that the sweep is measured against
    what not tuning gives."""
    settings: list[tuple] = []
    for s in ranked:
        if s.candidate.setting not in settings:
            settings.append(s.candidate.setting)
    wanted = set(settings[:top])
    wanted |= {s.candidate.setting for s in ranked if s.index == baseline}
    return [s for s in ranked if s.candidate.setting in wanted]


def _measure(state: _Run, s: Scored, n: int) -> dict[str, Any]:
    inputs, plan = plan_for(state.inputs, state.analysis, s.candidate)
    groups = list(ordered_map(lambda k: state.cache.merged(inputs, plan, k), inputs.keys, threads_of(inputs.cfg)))
    report = build_report(inputs, state.analysis, plan.with_results(groups), groups, hashes=state.hashes)
    # retention relative to the candidate's own λ: a weaker merge is not a lost LoRA
    m = inputs.cfg.multiplier
    retention = {lora.name: lora.retention and lora.retention / m for lora in report.loras if not lora.preserve}
    facts = [state.cache.facts(g, lambda p: scoring.group_facts(p, plan.preset.noise_ratio)) for g in groups]
    metrics = scoring.merge_metrics(facts, retention, target_density=plan.preset.dare_density)
    out: dict[str, Any] = {"metrics": metrics, "retention": retention, "evaluation": None, "error": None}
    if state.evaluator is not None:
        path = state.workdir / f"candidate-{n}.safetensors"
        context = EvalContext(
            n,
            s.candidate.label(),
            s.candidate.to_json(),
            tuple((i.path, i.strength_model) for i in inputs.cfg.inputs),
        )
        try:
            MergeResult(inputs, plan, groups, report).save(path)
            out["evaluation"] = _evaluate(state.evaluator, path, context)
        except EvaluatorError as exc:
            out["error"] = str(exc)
        except Exception as exc:  # a user's evaluator failing on one candidate: reported, the sweep goes on
            out["error"] = f"evaluator {state.evaluator.name} on candidate {n} ({context.label}) failed: {exc!r}"
        finally:
            path.unlink(missing_ok=True)
    return out


def _evaluate(evaluator: Evaluator, path: Path, context: EvalContext) -> dict[str, Any]:
    scores = {str(k): float(v) for k, v in evaluator.score(path, context).items()}
    scalar = float(evaluator.scalar(scores))
    if not all(math.isfinite(v) for v in [*scores.values(), scalar]):
        raise EvaluatorError(
            f"evaluator {evaluator.name} on candidate {context.candidate} ({context.label}): "
            f"a score is not a finite number: {scores}, scalar {scalar}"
        )
    return {"scores": scores, "scalar": scalar}


def _rank(
    ranked: list[Scored],
    phase2: dict[int, dict[str, Any]],
    evaluated: bool,
    untuned: int | None = None,
    min_gain: float = 0.0,
) -> list[Scored]:
    """Merged before not merged; a candidate that loses a LoRA after every other; then the
    evaluator's scalar (when there is one; the untuned configuration's counts `min_gain` more, so
    that another candidate must beat it by more than that: an evaluator's noise is no gain), the
    phase-2 score, the phase-1 score, the grid order."""

    def key(s: Scored):
        p = phase2.get(s.index)
        metrics = p["metrics"] if p else None
        scalar = p["evaluation"]["scalar"] if p and p["evaluation"] else None
        if scalar is not None and s.index == untuned:
            scalar += min_gain
        return (
            scoring.loses_a_lora(metrics),
            p is None,
            evaluated and scalar is None,
            -(scalar or 0.0),
            -(metrics["score"] if metrics else 0.0),
            -s.score,
            s.index,
        )

    return sorted(ranked, key=key)


def _data(cfg, inputs, grid, scored, order, same_as, phase2, evaluator, notes, top, baseline) -> dict[str, Any]:
    by_index = {s.index: s for s in scored}
    rows = []
    for place, s in enumerate(order + [by_index[i] for i in sorted(same_as)], start=1):
        p = phase2.get(s.index)
        rows.append(
            {
                "rank": place,
                "id": s.index,
                "label": s.candidate.label(),
                "parameters": s.candidate.to_json(),
                "config": candidate_config(cfg, s.candidate).model_dump(mode="json"),
                "phase1": {**{k: round(v, 6) for k, v in s.components.items()}, "score": round(s.score, 6)},
                "phase2": None if p is None else {k: round(v, 6) for k, v in p["metrics"].items()},
                "retention": None if p is None else p["retention"],
                "evaluation": None if p is None else p["evaluation"],
                "error": None if p is None else p["error"],
                "loses_a_lora": scoring.loses_a_lora(p["metrics"] if p else None),
                "same_as": same_as.get(s.index),
                "untuned": s.index == baseline,
            }
        )
    return {
        "kind": tuner_data.KIND,
        "schema_version": tuner_data.TUNER_DATA_VERSION,
        "version": __version__,
        "architecture": inputs.architecture,
        "preset": preset_for(inputs.architecture, cfg.preset).name,
        "weights": {"phase1": heuristic.WEIGHTS, "phase2": scoring.PHASE2_WEIGHTS},
        "grid": grid,
        "grid_size": len(scored),
        "unique": len(scored) - len(same_as),
        "top": top,
        "untuned": baseline,
        "merged": len(phase2),
        "evaluator": None if evaluator is None else evaluator.name,
        "notes": notes,
        "errors": [r["error"] for r in rows if r["error"]],
        "candidates": rows,
    }


def _fingerprint(
    cfg: MergeConfig, hashes: dict[int, str], grid: dict, top: int, evaluator: Evaluator | None, min_gain: float = 0.0
) -> dict:
    dumped = cfg.model_dump(mode="json")
    for i, inp in enumerate(dumped["inputs"]):
        inp["path"] = hashes[i]  # the content, not the name: a renamed file is the same stack
    dumped.pop("threads", None)  # the output does not depend on it
    return {
        "config": dumped,
        "grid": grid,
        "top": top,
        "evaluator": None if evaluator is None else evaluator.name,
        **({"min_gain": min_gain} if min_gain else {}),  # 0: the key of sweeps stored before it existed
        "version": __version__,
        "tuner": tuner_data.TUNER_DATA_VERSION,
    }


def _assemble(state: _Run, s: Scored) -> MergeResult:
    """The candidate's merge from the cache, in a spool of its own (the cache is about to close)."""
    inputs, plan = plan_for(state.inputs, state.analysis, s.candidate)
    store = PatchStore()
    try:
        groups = [state.cache.merged(inputs, plan, k) for k in inputs.keys]
        from dataclasses import replace

        groups = [replace(g, patch=store.put(materialize(g.patch))) for g in groups]
        plan = plan.with_results(groups)
        report = build_report(inputs, state.analysis, plan, groups, hashes=state.hashes)
    except BaseException:
        store.close()
        raise
    return MergeResult(inputs, plan, groups, report, store)


def _finish(
    result: TuneResult, best: MergeResult | None, output: str | Path | None, overwrite: bool, keep_best: bool
) -> TuneResult:
    if best is None and (output is not None or keep_best):
        best = run(result.config(1))  # not merged in phase 2 (replayed, or out of budget): merge it now
    if best is not None and output is not None:
        with contextlib.ExitStack() as stack:
            if not keep_best:
                stack.callback(best.close)
            result.output = best.save(output, overwrite=overwrite)
            best.report = best.report.model_copy(update={"output": result.output})
    result.best = best if keep_best else None
    if best is not None and not keep_best and output is None:
        best.close()
    return result
