"""Sizes and cases of the text domain (full and smoke)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .data import TASKS

# case -> the task LoRAs merged (ranked by the mean normalized accuracy over them)
TEXT_CASES: dict[str, tuple[str, ...]] = {
    "sentiment+topic": ("sentiment", "topic"),
    "all four tasks": TASKS,
}


# Every baseline, auto under both rule sets and the candidate rules; of the image domain's
# ablations only the two that bear on the rule choice (a shared two-core machine bounds the run).
TEXT_METHODS = ("additive", "average", "task_arithmetic", "l2_average", "ties", "dare_ties", "slerp", "knots_ties",
                "ziplora", "basis_ties", "auto", "auto_paper", "tune", "tune_eval", "auto_no_strength", "auto_basis", "auto_no_floor",
                "cand_ratio_rule", "cand_orth_sum_energy", "cand_no_slerp_imbalanced")


def _code_digest() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("data.py", "model.py", "lora.py"):
        h.update((here / name).read_bytes())
    h.update((here.parent / "determinism.py").read_bytes())
    return h.hexdigest()[:12]


def task_seed(seed: int, task: str) -> int:
    return 10_000 + seed * 100 + TASKS.index(task) + 1


@dataclass(frozen=True)
class TextConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    tuning_seed: int = 100
    lora_steps: int = 30
    lora_batch: int = 16
    lora_rank: int = 8
    n_train: int = 1024
    n_test: int = 200                # test sentences per task (vocabulary disjoint from training)
    cases: tuple[str, ...] = ("all four tasks",)
    methods: tuple[str, ...] | None = TEXT_METHODS   # None: the image domain's list
    sanity_margin: float = 0.15      # a LoRA alone must beat the base model on its task by this (mean)

    def artefact_key(self, task: str, train_seed: int, threads: int) -> str:
        parts = {"v": 1, "task": task, "code": _code_digest(), "steps": self.lora_steps, "batch": self.lora_batch,
                 "rank": self.lora_rank, "n_train": self.n_train, "train_seed": train_seed,
                 "torch": torch.__version__, "threads": threads}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return asdict(self)


TEXT_FULL = TextConfig()
TEXT_SMOKE = replace(TEXT_FULL, seeds=(0,), lora_steps=2, lora_batch=4, n_train=32, n_test=6,
                     cases=("sentiment+topic",), sanity_margin=0.0,
                     methods=("additive", "average", "auto", "tune_eval"))
