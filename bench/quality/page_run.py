"""The sections of the quality page (docs/QUALITY.md) about the run itself rather than its numbers:
whether it reproduced the previous run, what its results depend on, what came from the cache, and
how long each job took."""

from __future__ import annotations

from .config import BenchConfig


def reproduction(record: dict) -> str:
    """Whether this run's hash equals the previous run's (the results.json it replaced)."""
    r = record["reproduction"]
    if r["status"] == "reproduced":
        return "**reproduced**: the previous run (same configuration, code and environment) gave the same hash"
    if r["status"] == "not reproduced":
        return (f"**NOT reproduced**: the previous run (same configuration, code and environment) gave "
                f"`{r['previous_sha256'][:16]}`")
    if r["status"] == "not comparable":
        same = "the same hash" if r["previous_sha256"] == record["results_sha256"] else "another hash"
        return f"the previous run differs in {', '.join(r['differs_in'])} and gave {same}"
    return "no earlier run in this folder to compare with"


def reproducibility(cfg: BenchConfig, record: dict) -> list[str]:
    prov = record["provenance"]
    command = ".venv/bin/python -m bench.quality" + (" --smoke" if cfg.name == "smoke" else "")
    return ["", "## Reproducibility", "",
            "Results hash (sha256 of the sanity checks, aggregates and per-seed raw results in `results.json`, "
            f"timings excluded): `{record['results_sha256']}` — {reproduction(record)}.", "",
            f"- **Threads:** every process computes with {prov['threads_per_process']} torch thread(s) "
            "(`--threads`; float reductions may group their terms by thread, so the count is part of the results' "
            "provenance and of the trained-model cache key). The number of worker processes (`--workers`) does not "
            "change any number: results are kept in plan order and every job seeds its own random generators.",
            "- **Determinism:** `torch.use_deterministic_algorithms(True)` in every process; `MKL_CBWR=AUTO`, "
            "`MKL_DYNAMIC=FALSE`; every random number of training (initial weights, batches, noise, dropout), merging "
            "(loramerge's `seed`) and sampling comes from an explicitly seeded `torch.Generator`; the global "
            "generators are seeded per job as a safety net.",
            f"- **Environment:** torch {prov['torch']}, numpy {prov['numpy']}, Python {prov['python']}, "
            f"{prov['machine']} ({prov['cpu_capability']}); loramerge source `{prov['loramerge_source']}`, benchmark "
            f"source `{prov['bench_source']}` (digests; a change there may change the numbers).",
            "- **Cache:** trained models are keyed by the training code, sizes, seed, torch version and thread count, "
            "so a run that reuses them gives the numbers a run that retrains would (checked by "
            "`tests/bench/test_quality_determinism.py`).",
            f"- **How to check:** run `{command}` twice (add `--fresh` to the first to "
            "retrain): the second run compares its hash with the first's and says *reproduced* here and in its "
            "log; `results.json` is byte-identical."]


TRAINING_JOBS = ("evaluator", "base/", "lora/", "text/lora/")
CACHED_SECONDS = 0.5  # a training job that found its artefact in the cache only loads it (milliseconds)


def cache_note(jobs: dict[str, float]) -> str:
    """What the run took from the cache, from its training jobs' times (Timing section)."""
    training = {k: v for k, v in jobs.items() if k.startswith(TRAINING_JOBS)}
    trained = sum(v >= CACHED_SECONDS for v in training.values())
    if not trained:
        return "trained models were reused from the cache"
    return f"{trained} of the {len(training)} models were trained in this run (Timing), the others reused from the cache"


def timing(record: dict) -> list[str]:
    L = ["", "## Timing", "", "| job | seconds |", "|---|---|"]
    for key, seconds in record["timings"]["jobs"].items():
        L.append(f"| {key} | {seconds:.1f} |")
    return L
