"""Run the benchmark: a small dependency graph of jobs on a pool of worker processes.

Training jobs (evaluator, base per seed, LoRA per seed) write to the cache and are skipped when
their artefact is there; measurement jobs (singles, λ tuning, cases) always run, since they
measure loramerge as it is now. Every process runs `cfg.threads` torch threads with deterministic
algorithms, every job runs with its own seeded global RNGs, and results are returned in plan
order: the numbers do not depend on the number of workers or on which worker ran which job.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from . import jobs as J
from .config import LORAS, BenchConfig
from .determinism import pinned_environment, process_settings, provenance, results_digest


@dataclass
class Job:
    key: str
    fn: Callable
    args: tuple | Callable[[dict], tuple]
    deps: tuple[str, ...] = ()
    priority: int = 0


def plan_jobs(cfg: BenchConfig, cache: Path) -> list[Job]:
    if not cfg.images:
        return text_jobs(cfg, cache)
    seeds = list(cfg.seeds)
    tune = "task_arithmetic" in cfg.methods
    train_seeds = seeds + ([cfg.tuning_seed] if tune else [])
    out = [Job("evaluator", J.job_evaluator, (cfg, cache), priority=0)]
    for k, s in enumerate(train_seeds):
        out.append(Job(f"base/{s}", J.job_base, (cfg, cache, s), priority=1 + k))
    for s in train_seeds:
        for name in LORAS:
            out.append(Job(f"lora/{s}/{name}", J.job_lora, (cfg, cache, s, name), (f"base/{s}",), priority=10))
    trained = lambda s: ("evaluator", f"base/{s}", *(f"lora/{s}/{n}" for n in LORAS))
    for s in seeds:
        out.append(Job(f"singles/{s}", J.job_singles, (cfg, cache, s), trained(s), priority=30))
    for case in cfg.cases:
        if tune:
            out.append(Job(f"tune/{case}", J.job_tune, (cfg, cache, case), trained(cfg.tuning_seed), priority=20))
        for k, s in enumerate(seeds):
            keep = k == cfg.grid_seed_index

            def args(res, s=s, case=case, keep=keep):
                lam = res[f"tune/{case}"]["lambda"] if tune else None
                return (cfg, cache, s, case, lam, keep)
            deps = trained(s) + ((f"tune/{case}",) if tune else ())
            out.append(Job(f"case/{s}/{case}", J.job_case, args, deps, priority=40))
    return out + (text_jobs(cfg, cache) if cfg.text is not None else [])


def text_jobs(cfg: BenchConfig, cache: Path) -> list[Job]:
    """The text domain: task LoRAs per seed, singles (the normalizers), λ tuning, cases."""
    from .text import jobs as T
    from .text.data import TASKS

    t = cfg.text
    methods = t.methods or cfg.methods
    tune = "task_arithmetic" in methods
    out = []
    for s in list(t.seeds) + ([t.tuning_seed] if tune else []):
        for task in TASKS:
            out.append(Job(f"text/lora/{s}/{task}", T.job_text_lora, (cfg, cache, s, task), priority=5))
    trained = lambda s: tuple(f"text/lora/{s}/{task}" for task in TASKS)
    for s in t.seeds:
        out.append(Job(f"text/singles/{s}", T.job_text_singles, (cfg, cache, s), trained(s), priority=30))
    for case in t.cases:
        if tune:
            out.append(Job(f"text/tune/{case}", T.job_text_tune, (cfg, cache, case), trained(t.tuning_seed),
                           priority=20))
        for s in t.seeds:
            def args(res, s=s, case=case):
                lam = res[f"text/tune/{case}"]["lambda"] if tune else None
                return (cfg, cache, s, case, lam, res[f"text/singles/{s}"]["rows"])
            deps = (f"text/singles/{s}",) + ((f"text/tune/{case}",) if tune else ())
            out.append(Job(f"text/case/{s}/{case}", T.job_text_case, args, deps, priority=40))
    return out


def execute(jobs: list[Job], *, workers: int, threads: int, log=print) -> dict[str, dict]:
    """Run `jobs` (dependencies first); returns their results keyed and ordered as `jobs` is."""
    results = _execute_any_order(jobs, workers=workers, threads=threads, log=log)
    return {j.key: results[j.key] for j in jobs}


def _execute_any_order(jobs: list[Job], *, workers: int, threads: int, log) -> dict[str, dict]:
    results: dict[str, dict] = {}
    pending = {j.key: j for j in jobs}
    t0 = time.perf_counter()

    def ready() -> list[Job]:
        return sorted((j for j in pending.values() if all(d in results for d in j.deps)), key=lambda j: (j.priority, j.key))

    def args_of(j: Job) -> tuple:
        return j.args(results) if callable(j.args) else j.args

    def done(j: Job, r: dict) -> None:
        results[j.key] = r
        log(f"[{time.perf_counter() - t0:7.1f}s] {j.key} done ({r.get('seconds', 0.0):.1f}s)")

    if workers <= 1:
        with process_settings(threads):
            while pending:
                todo = ready()
                if not todo:
                    raise RuntimeError(f"unsatisfiable dependencies: {sorted(pending)}")
                j = pending.pop(todo[0].key)
                done(j, J.run_job(j.key, j.fn, args_of(j)))
        return results

    ctx = mp.get_context("spawn")
    running: dict[Future, Job] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=J.init_worker,
                             initargs=(threads,)) as pool:
        while pending or running:
            for j in ready():
                if len(running) >= workers:
                    break
                pending.pop(j.key)
                running[pool.submit(J.run_job, j.key, j.fn, args_of(j))] = j
            if not running:
                raise RuntimeError(f"unsatisfiable dependencies: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                done(running.pop(f), f.result())
    return results


def run(cfg: BenchConfig, *, cache: Path, out_dir: Path, doc: Path, workers: int,
        log=print, fresh_cache: bool = False) -> tuple[dict, list[str]]:
    """Train (or reuse) everything, measure every method, write the JSON, the grids and the page.
    Returns (results.json's content, sanity failures)."""
    from .outputs import previous_run, write_outputs

    cache.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with pinned_environment():
        results = execute(plan_jobs(cfg, cache), workers=workers, threads=cfg.threads, log=log)
        prov = provenance(cfg.threads)
    last = {"config": cfg, "results": results, "provenance": prov, "previous": previous_run(out_dir),
            "run": {"workers": workers, "wall_seconds": time.perf_counter() - t0, "fresh_cache": fresh_cache,
                    "python": sys.version.split()[0]}}
    with open(last_run_path(cfg, cache), "wb") as fh:  # lets --report-only re-render without re-measuring
        pickle.dump(last, fh)
    return write_outputs(cfg, last, out_dir=out_dir, doc=doc, log=log)


def last_run_path(cfg: BenchConfig, cache: Path) -> Path:
    """One file per configuration (sizes, seeds, cases, methods, domains), so that an experiment with
    a subset of the methods or one domain (`--methods`, `--domains`) does not replace the full run
    that a plain `--report-only` re-renders."""
    return cache / f"last_run_{cfg.name}_{results_digest(cfg.to_dict())[:12]}.pkl"


def report_only(cfg: BenchConfig, *, cache: Path, out_dir: Path, doc: Path, log=print) -> tuple[dict, list[str]]:
    """Re-render QUALITY.md, the JSON and the grids from the last run of `cfg.name` (with that run's
    configuration, provenance and reproduction check)."""
    from .outputs import write_outputs

    with open(last_run_path(cfg, cache), "rb") as fh:
        last = pickle.load(fh)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_outputs(last["config"], last, out_dir=out_dir, doc=doc, log=log)
