"""Metrics of one set of generated samples (a fixed prompt list, a fixed noise seed per model seed)."""

from __future__ import annotations

import torch

from .data import SUBJECT_DIGIT, SUBJECT_PROMPT
from .evaluators import Evaluator, predict

EFFECTS = ("subject", "bold", "slant", "thin")


def prompts(per_subject_prompt: int, per_other_prompt: int) -> torch.Tensor:
    """Prompt 0 (the subject's prompt) `per_subject_prompt` times, then every other digit."""
    return torch.cat([torch.full((per_subject_prompt,), SUBJECT_PROMPT, dtype=torch.long),
                      torch.arange(10).repeat_interleave(per_other_prompt)[per_other_prompt:]])


def effect_hits(p, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample, whether each effect shows: subject = prompt 0 drew a 7; styles = detector fired."""
    subj = (labels == SUBJECT_PROMPT) & (p.digit == SUBJECT_DIGIT)
    return {"subject": subj, "bold": p.bold, "slant": p.slant, "thin": p.thin}


def compute(evaluator: Evaluator, samples: torch.Tensor, labels: torch.Tensor, intended: tuple[str, ...]) -> dict:
    """Rates of one sample set.

    subject: P(7 | prompt 0). bold/slant/thin: P(detector fires) over all prompts.
    joint: P(every intended effect in the same image), over prompt-0 samples when the subject is
    intended (the subject only exists there), else over all samples.
    content: P(classifier reads the prompted digit | prompts 1–9): the other prompts keep their content.
    """
    p = predict(evaluator, samples)
    hits = effect_hits(p, labels)
    on0 = labels == SUBJECT_PROMPT
    others = ~on0
    rates = {"subject": float(hits["subject"][on0].float().mean())}
    for s in ("bold", "slant", "thin"):
        rates[s] = float(hits[s].float().mean())
    if intended:
        scope = on0 if "subject" in intended else torch.ones_like(on0)
        joint = torch.ones_like(on0)
        for e in intended:
            joint &= hits[e]
        rates["joint"] = float(joint[scope].float().mean())
        rates["effect_mean"] = sum(rates[e] for e in intended) / len(intended)
    rates["content"] = float((p.digit[others] == labels[others]).float().mean())
    return rates
