"""Benchmark sizes: the full benchmark and the CI smoke version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .methods import METHODS
from .model import ModelConfig
from .text.config import TEXT_FULL, TEXT_SMOKE, TextConfig

LORAS = ("subject", "bold", "slant", "thin")
EVALUATOR_SEED = 0  # one evaluator for every seed: the measuring instrument stays the same

# case -> (LoRAs merged, primary metric). "joint" = every intended effect in one image; where two
# intended effects contradict each other (bold vs thin) no image can show both, so the case is
# ranked by "effect_mean", the mean of the per-effect rates.
CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "subject+style": (("subject", "bold"), "joint"),
    "subject+style+slant": (("subject", "bold", "slant"), "joint"),
    "style+thin": (("bold", "thin"), "effect_mean"),
    "all four": (("subject", "bold", "slant", "thin"), "effect_mean"),
}


# The sources that shape each kind of trained artefact: a change there retrains it, nothing else does
# (a new evaluator does not retrain the models it measures).
ARTEFACT_SOURCES = {
    "base": ("data.py", "model.py", "determinism.py"),
    "lora": ("data.py", "model.py", "lora.py", "determinism.py"),
    "evaluator": ("data.py", "evaluators.py", "determinism.py"),
}


def _code_digest(what: str) -> str:
    """Hash of the sources that shape artefacts of kind `what` (`ARTEFACT_SOURCES`)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ARTEFACT_SOURCES[what]:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def lora_seed(seed: int, name: str) -> int:
    """The training seed of LoRA `name` on base model `seed` (distinct per LoRA and per base)."""
    return seed * 100 + LORAS.index(name) + 1


@dataclass(frozen=True)
class BenchConfig:
    name: str = "full"
    seeds: tuple[int, ...] = (0, 1, 2)      # base model, LoRAs, DARE masks and sampling noise
    threads: int = 1                        # torch threads per process: reductions may depend on it
    tuning_seed: int = 100                  # task arithmetic's λ is tuned here, never on `seeds`
    model: ModelConfig = ModelConfig(hidden=384, blocks=2)
    base_steps: int = 2000
    base_batch: int = 256
    lora_steps: int = 600
    lora_rank: int = 8
    lora_alpha: float = 4.0                 # alpha ≠ rank: the reader must apply scale 0.5
    evaluator_steps: int = 1000
    per_subject_prompt: int = 64            # samples of prompt 0 (subject and joint rates)
    per_other_prompt: int = 10              # samples of each of the prompts 1..9
    cases: tuple[str, ...] = tuple(CASES)
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)
    grid_seed_index: int = 0                # which seed's samples the PNG grids show
    sanity_margin: float = 0.3              # single LoRA rate − base rate must exceed this (mean over seeds)
    content_guard: float = 0.10             # content more than this below the case's LoRAs alone: flagged (†)
    assert_sanity: bool = True
    text: TextConfig | None = TEXT_FULL     # the text domain (None: images only)
    images: bool = True                     # the image domain (False: text only, `--domains text`)
    extra: dict = field(default_factory=dict)

    def artefact_key(self, what: str, train_seed: int | None = None) -> str:
        """Cache key of a trained artefact: changes when anything that shapes its bits changes (the
        code, the sizes, the training seed, the torch version and the thread count), so a run that
        reuses the cache gives the numbers a run that retrains would."""
        parts = {"v": 5, "what": what, "code": _code_digest(what), "model": self.model.to_dict(), "base_steps": self.base_steps,
                 "base_batch": self.base_batch, "lora_steps": self.lora_steps, "rank": self.lora_rank,
                 "alpha": self.lora_alpha, "evaluator_steps": self.evaluator_steps, "train_seed": train_seed,
                 "torch": torch.__version__, "threads": self.threads}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        if self.text is None:
            d.pop("text")
        return d


FULL = BenchConfig()

SMOKE = replace(
    FULL, name="smoke", seeds=(0,), tuning_seed=100, model=ModelConfig(hidden=64, blocks=1, emb=32, steps=50,
                                                                        beta_start=2e-3, beta_end=0.3),
    base_steps=40, base_batch=64, lora_steps=15, evaluator_steps=30, per_subject_prompt=8, per_other_prompt=1,
    cases=("subject+style", "style+thin"), methods=("additive", "average", "task_arithmetic", "knots_ties", "auto",
                                                    "auto_paper", "tune", "tune_eval"),
    assert_sanity=False, text=TEXT_SMOKE)
