"""The text domain's units of work (run by the same process pool as the image jobs): train a task
LoRA, score the base and each LoRA alone, tune task arithmetic's λ, run every method on a case."""

from __future__ import annotations

import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..determinism import tensor_digest
from ..lora import deltas_of_file
from ..methods import BY_NAME, LAMBDAS, merge_each, retention, run_method
from .config import TEXT_CASES, task_seed
from .data import TASKS, examples
from .lora import apply_deltas, heads, module_of, save_lora, train_lora
from .model import embed_texts, load_base

TEST_SEED = 7  # the test sentences are the same for every seed and method
EVALUATOR_SEED = 8  # the AutoTuner evaluator's sentences (same vocabulary half, other sentences)
EVALUATOR_SENTENCES = 1  # × n_test per task: a validation set as large as the test set


@lru_cache(maxsize=1)
def _base():
    return load_base()


@lru_cache(maxsize=1)
def _heads() -> dict[str, torch.Tensor]:
    return heads(_base())


def lora_path(cfg, cache: Path, seed: int, task: str) -> Path:
    t = cfg.text
    return cache / f"text_lora_{task}_s{seed}_{t.artefact_key(task, task_seed(seed, task), cfg.threads)}.safetensors"


def job_text_lora(cfg, cache: Path, seed: int, task: str) -> dict:
    path = lora_path(cfg, cache, seed, task)
    t0 = time.perf_counter()
    if not path.exists():
        t = cfg.text
        tensors = train_lora(_base(), task, seed=task_seed(seed, task), steps=t.lora_steps, rank=t.lora_rank,
                             batch=t.lora_batch, n_train=t.n_train)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        save_lora(tmp, tensors, task)
        os.replace(tmp, path)
    return {"digest": tensor_digest(load_file(str(path)))[:16], "seconds": time.perf_counter() - t0}


def by_module(deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ΔW keyed by encoder module name (input files are PEFT, merges kohya: one key space for both)."""
    modules = {n.replace(".", "_"): n for n, m in _base().named_modules() if isinstance(m, torch.nn.Linear)}
    return {module_of(k, modules): v for k, v in deltas.items()}


class _Scorer:
    """A merged file → encoder → accuracy on every task's test sentences (memo by weights digest)."""

    def __init__(self, cfg, sentences_seed: int = TEST_SEED, per_task: int | None = None):
        self.n = per_task or cfg.text.n_test
        self.sentences_seed = sentences_seed
        self.memo: dict[str, dict[str, float]] = {}
        self.sampled = 0

    def accuracies(self, model) -> dict[str, float]:
        out = {}
        for task in TASKS:
            ex = examples(task, "test", self.n, self.sentences_seed)
            pred = (embed_texts(model, [e.text for e in ex]) @ _heads()[task].T).argmax(1)
            out[task] = float((pred == torch.tensor([e.label for e in ex])).float().mean())
        return out

    def score(self, path: Path) -> tuple[dict[str, float], dict[str, torch.Tensor], str]:
        deltas = by_module(deltas_of_file(path))
        key = tensor_digest(deltas)
        if key not in self.memo:
            self.memo[key] = self.accuracies(apply_deltas(_base(), deltas))
            self.sampled += 1
        return self.memo[key], deltas, key


def job_text_singles(cfg, cache: Path, seed: int) -> dict:
    """The base model and each task LoRA alone: every task's accuracy (the normalizers)."""
    t0 = time.perf_counter()
    scorer = _Scorer(cfg)
    rows = {"base": scorer.accuracies(_base())}
    for task in TASKS:
        rows[task] = scorer.score(lora_path(cfg, cache, seed, task))[0]
    return {"seed": seed, "rows": rows, "seconds": time.perf_counter() - t0}


def normalized(acc: dict[str, float], singles: dict, tasks) -> dict[str, float]:
    """Accuracy on each task over the accuracy of that task's LoRA alone; `mean` over the tasks."""
    out = {t: acc[t] / max(singles[t][t], 1e-9) for t in tasks}
    out["mean"] = sum(out[t] for t in tasks) / len(tasks)
    return out


class TextTuneEvaluator:
    """The text domain's measure as a loramerge AutoTuner evaluator: mean normalized accuracy on
    sentences no reported number uses (`EVALUATOR_SEED`), normalized by each LoRA alone on them."""

    name = "bench-text"

    def __init__(self, cfg, cache: Path, seed: int, case: str):
        self.tasks = TEXT_CASES[case]
        self.paths = [lora_path(cfg, cache, seed, t) for t in self.tasks]
        self.scorer = _Scorer(cfg, EVALUATOR_SEED, EVALUATOR_SENTENCES * cfg.text.n_test)
        self.singles: dict | None = None

    def score(self, merged_path, context) -> dict[str, float]:
        if self.singles is None:
            self.singles = {t: self.scorer.score(p)[0] for t, p in zip(self.tasks, self.paths)}
        return normalized(self.scorer.score(Path(merged_path))[0], self.singles, self.tasks)

    def scalar(self, scores: dict[str, float]) -> float:
        return scores["mean"]


def job_text_tune(cfg, cache: Path, case: str) -> dict:
    """Task arithmetic's λ for `case` on the tuning seed: the best mean normalized accuracy."""
    t0 = time.perf_counter()
    tasks = TEXT_CASES[case]
    seed = cfg.text.tuning_seed
    singles = job_text_singles(cfg, cache, seed)["rows"]
    paths = [lora_path(cfg, cache, seed, t) for t in tasks]
    scorer, scores = _Scorer(cfg), {}
    with tempfile.TemporaryDirectory() as tmp:
        for lam in LAMBDAS:
            out = Path(tmp) / f"lam_{lam}.safetensors"
            run_method(BY_NAME["task_arithmetic"], paths, out, seed=seed, lam=lam, names=list(tasks))
            scores[str(lam)] = normalized(scorer.score(out)[0], singles, tasks)["mean"]
    best = max(LAMBDAS, key=lambda lam: (round(scores[str(lam)], 9), -abs(lam - 1.0)))
    return {"case": case, "lambda": best, "scores": scores, "seconds": time.perf_counter() - t0}


def job_text_case(cfg, cache: Path, seed: int, case: str, lam: float | None, singles: dict) -> dict:
    """Every method on one text case and seed: merge through loramerge, apply, score, normalize."""
    t0 = time.perf_counter()
    tasks = TEXT_CASES[case]
    paths = [lora_path(cfg, cache, seed, t) for t in tasks]
    scorer = _Scorer(cfg)
    inputs = [scorer.score(p)[1] for p in paths]
    rows = {}
    evaluators = {"tune_eval": TextTuneEvaluator(cfg, cache, seed, case)}
    for name, method, out, summary, merge_s in merge_each(cfg.text.methods or cfg.methods, paths, list(tasks),
                                                          seed=seed, lam=lam, evaluators=evaluators):
        acc, merged, digest = scorer.score(out)
        rows[name] = {"accuracy": acc, "normalized": normalized(acc, singles, tasks),
                      "retention": dict(zip(tasks, retention(merged, inputs))), "merge_seconds": merge_s,
                      "weights_digest": digest[:16], "lambda": lam if method.strengths == "lambda" else None,
                      **summary}
    return {"seed": seed, "case": case, "rows": rows, "sampling_runs": scorer.sampled,
            "seconds": time.perf_counter() - t0}
