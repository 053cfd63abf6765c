"""The benchmark's units of work. Each runs in a worker process (or inline), reads and writes
trained artefacts in the cache folder, and returns plain data (dicts, lists, small uint8 arrays)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from . import data as D
from .config import CASES, EVALUATOR_SEED, LORAS, BenchConfig, lora_seed
from .determinism import init_process, isolated_rng, tensor_digest
from .evaluators import Evaluator, load_evaluator as evaluator_from_state, train_evaluator
from .lora import apply_deltas, deltas_of_file, save_lora, train_lora
from .methods import BY_NAME, LAMBDAS, merge_each, retention, run_method
from .metrics import compute, prompts
from .model import Denoiser, load_denoiser, sample, train_base
from .png import to_uint8

GRID_SUBJECT = 8  # prompt-0 samples shown per grid row (then one sample of each prompt 1..9)


def init_worker(threads: int) -> None:
    init_process(threads)


def run_job(key: str, fn, args: tuple) -> dict:
    """One job, with the global RNGs seeded from its key (see `determinism.isolated_rng`)."""
    with isolated_rng(key):
        return fn(*args)


def _atomic_torch_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def base_path(cfg: BenchConfig, cache: Path, seed: int) -> Path:
    return cache / f"base_s{seed}_{cfg.artefact_key('base', seed)}.pt"


def lora_path(cfg: BenchConfig, cache: Path, seed: int, name: str) -> Path:
    return cache / f"lora_{name}_s{seed}_{cfg.artefact_key('lora', lora_seed(seed, name))}.safetensors"


def evaluator_path(cfg: BenchConfig, cache: Path) -> Path:
    return cache / f"evaluator_{cfg.artefact_key('evaluator', EVALUATOR_SEED)}.pt"


def noise_seed(seed: int) -> int:
    """One noise seed per model seed, shared by every method: common random numbers."""
    return 1000 + seed


# -- training ------------------------------------------------------------------------------------------
def job_evaluator(cfg: BenchConfig, cache: Path) -> dict:
    path = evaluator_path(cfg, cache)
    t0 = time.perf_counter()
    if not path.exists():
        model, acc = train_evaluator(seed=EVALUATOR_SEED, steps=cfg.evaluator_steps)
        _atomic_torch_save({"state": model.state_dict(), "accuracy": acc}, path)
    saved = torch.load(path)
    return {"accuracy": saved["accuracy"], "digest": tensor_digest(saved["state"])[:16],
            "seconds": time.perf_counter() - t0}


def job_base(cfg: BenchConfig, cache: Path, seed: int) -> dict:
    path = base_path(cfg, cache, seed)
    t0 = time.perf_counter()
    if not path.exists():
        x, y = D.digits()
        model = train_base(x, y, seed=seed, steps=cfg.base_steps, cfg=cfg.model, batch=cfg.base_batch)
        _atomic_torch_save(model.state_dict(), path)
    return {"digest": tensor_digest(torch.load(path))[:16], "seconds": time.perf_counter() - t0}


def job_lora(cfg: BenchConfig, cache: Path, seed: int, name: str) -> dict:
    path = lora_path(cfg, cache, seed, name)
    t0 = time.perf_counter()
    if not path.exists():
        base = load_base(cfg, cache, seed)
        x, y, sampler = D.lora_data(name)
        tensors = train_lora(base, x, y, seed=lora_seed(seed, name), steps=cfg.lora_steps,
                             rank=cfg.lora_rank, alpha=cfg.lora_alpha, sampler=sampler)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        save_lora(tmp, tensors, name)
        os.replace(tmp, path)
    return {"digest": tensor_digest(load_file(str(path)))[:16], "seconds": time.perf_counter() - t0}


def load_base(cfg: BenchConfig, cache: Path, seed: int) -> Denoiser:
    return load_denoiser(cfg.model, torch.load(base_path(cfg, cache, seed)))


def load_evaluator(cfg: BenchConfig, cache: Path) -> Evaluator:
    return evaluator_from_state(torch.load(evaluator_path(cfg, cache))["state"])


# -- sampling and scoring --------------------------------------------------------------------------------
def grid_images(samples: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The samples a grid row shows: the first prompt-0 samples, then the first of each prompt 1..9."""
    first = [int(i) for i in (labels == D.SUBJECT_PROMPT).nonzero()[:GRID_SUBJECT, 0]]
    first += [int((labels == d).nonzero()[0, 0]) for d in range(1, 10)]
    return to_uint8(samples[first].numpy())


def job_singles(cfg: BenchConfig, cache: Path, seed: int) -> dict:
    """The base model and each LoRA alone (strength 1): the sanity reference."""
    t0 = time.perf_counter()
    base, ev = load_base(cfg, cache, seed), load_evaluator(cfg, cache)
    labels = prompts(cfg.per_subject_prompt, cfg.per_other_prompt)
    out = {"seed": seed, "rows": {}, "images": {}}
    s = sample(base, labels, noise_seed(seed), cfg.model)
    out["rows"]["base"] = compute(ev, s, labels, ())
    out["images"]["base"] = grid_images(s, labels)
    for name in LORAS:
        model = apply_deltas(base, deltas_of_file(lora_path(cfg, cache, seed, name)))
        s = sample(model, labels, noise_seed(seed), cfg.model)
        out["rows"][name] = compute(ev, s, labels, (name,))
        out["images"][name] = grid_images(s, labels)
    out["seconds"] = time.perf_counter() - t0
    return out


class _Scorer:
    """Merged file → model → samples → rates, with samples cached by the merged weights' digest
    (two methods that produce the same weights share one sampling run)."""

    def __init__(self, cfg: BenchConfig, cache: Path, seed: int, noise: int):
        self.cfg, self.base, self.ev = cfg, load_base(cfg, cache, seed), load_evaluator(cfg, cache)
        self.labels = prompts(cfg.per_subject_prompt, cfg.per_other_prompt)
        self.noise = noise
        self.memo: dict[str, torch.Tensor] = {}
        self.sampled = 0

    def score(self, path: Path, intended: tuple[str, ...]) -> tuple[dict, torch.Tensor, dict[str, torch.Tensor], str]:
        deltas = deltas_of_file(path)
        key = tensor_digest(deltas)
        if key not in self.memo:
            self.memo[key] = sample(apply_deltas(self.base, deltas), self.labels, self.noise, self.cfg.model)
            self.sampled += 1
        samples = self.memo[key]
        return compute(self.ev, samples, self.labels, intended), samples, deltas, key


def evaluator_noise(seed: int) -> int:
    """The sampling noise of `TuneEvaluator`: never the noise of a reported number (`noise_seed`)."""
    return 50_000 + seed


class TuneEvaluator:
    """The benchmark's measure as a loramerge AutoTuner evaluator (`loramerge.autotune.Evaluator`):
    a candidate's score is the case's primary metric on samples drawn with noise that no reported
    number uses (`evaluator_noise`), so the tuner picks as a user would, from their own trial images,
    and is then judged on fresh ones. With `guard`, a candidate whose content falls more than
    `content_guard` below the case's LoRAs alone (same noise) scores primary − 1: the rule task
    arithmetic's λ is chosen by. Evaluators of one case share a `scorer` (its samples are memoised)."""

    def __init__(self, cfg: BenchConfig, cache: Path, seed: int, case: str, *, guard: bool = False,
                 scorer: _Scorer | None = None):
        self.cfg, self.loras, self.primary = cfg, *CASES[case]
        self.guard = guard
        self.name = "bench-digits" + ("-guarded" if guard else "")
        self.paths = [lora_path(cfg, cache, seed, n) for n in self.loras]
        self.scorer = scorer or _Scorer(cfg, cache, seed, evaluator_noise(seed))
        self.floor: float | None = None

    def score(self, merged_path, context) -> dict[str, float]:
        if self.floor is None:
            alone = [self.scorer.score(p, (n,))[0]["content"] for n, p in zip(self.loras, self.paths)]
            self.floor = min(alone) - self.cfg.content_guard
        rates = self.scorer.score(Path(merged_path), self.loras)[0]
        return {"primary": rates[self.primary], "content": rates["content"], "content_floor": self.floor}

    def scalar(self, scores: dict[str, float]) -> float:
        broken = self.guard and scores["content"] < scores["content_floor"] - 1e-9
        return scores["primary"] - (1.0 if broken else 0.0)


def job_tune(cfg: BenchConfig, cache: Path, case: str) -> dict:
    """Task arithmetic's λ for `case`, chosen on the tuning seed: the best primary metric among the
    λ whose content stays within `cfg.content_guard` of the case's LoRAs alone (the worst of them),
    as a user tuning by eye would not take a λ whose other prompts stop drawing their digits;
    none passing: the best content."""
    t0 = time.perf_counter()
    loras, primary = CASES[case]
    seed = cfg.tuning_seed
    paths = [lora_path(cfg, cache, seed, n) for n in loras]
    scorer = _Scorer(cfg, cache, seed, noise_seed(seed))
    alone = {n: scorer.score(p, (n,))[0]["content"] for n, p in zip(loras, paths)}
    floor = min(alone.values()) - cfg.content_guard
    scores, content = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for lam in LAMBDAS:
            out = Path(tmp) / f"lam_{lam}.safetensors"
            run_method(BY_NAME["task_arithmetic"], paths, out, seed=seed, lam=lam, names=list(loras))
            rates, *_ = scorer.score(out, loras)
            scores[str(lam)], content[str(lam)] = rates[primary], rates["content"]
    ok = [lam for lam in LAMBDAS if content[str(lam)] >= floor - 1e-9]
    if ok:
        best = max(ok, key=lambda lam: (round(scores[str(lam)], 9), -abs(lam - 1.0)))  # ties: nearer 1
    else:
        best = max(LAMBDAS, key=lambda lam: content[str(lam)])
    return {"case": case, "lambda": best, "scores": scores, "content": content, "content_alone": alone,
            "content_floor": floor, "seconds": time.perf_counter() - t0}


def job_case(cfg: BenchConfig, cache: Path, seed: int, case: str, lam: float | None, keep_images: bool) -> dict:
    """Every method on one case and one seed: merge through loramerge, apply, sample, score."""
    t0 = time.perf_counter()
    loras, _ = CASES[case]
    paths = [lora_path(cfg, cache, seed, n) for n in loras]
    inputs = [deltas_of_file(p) for p in paths]
    scorer = _Scorer(cfg, cache, seed, noise_seed(seed))
    rows = {}
    images = {}
    plain = TuneEvaluator(cfg, cache, seed, case)
    evaluators = {"tune_eval": plain, "tune_eval_guard": TuneEvaluator(cfg, cache, seed, case, guard=True,
                                                                       scorer=plain.scorer)}
    for name, method, out, summary, merge_s in merge_each(cfg.methods, paths, list(loras), seed=seed, lam=lam,
                                                          evaluators=evaluators):
        rates, samples, merged, digest = scorer.score(out, loras)
        rows[name] = {"rates": rates, "retention": dict(zip(loras, retention(merged, inputs))),
                      "merge_seconds": merge_s, "weights_digest": digest[:16],
                      "lambda": lam if method.strengths == "lambda" else None, **summary}
        if keep_images:
            images[name] = grid_images(samples, scorer.labels)
    return {"seed": seed, "case": case, "rows": rows, "images": images,
            "sampling_runs": scorer.sampled, "evaluator_sampling_runs": plain.scorer.sampled,
            "seconds": time.perf_counter() - t0}
