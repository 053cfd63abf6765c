"""The AutoTuner (METHOD §9, docs/TUNER.md): a heuristic sweep of the parameter grid on pass-1
statistics, then the top candidates merged and measured (tensor metrics, optional evaluator)."""

from __future__ import annotations

from .evaluators import CommandEvaluator, EvalContext, Evaluator
from .tuner import TuneResult, tune

__all__ = ["CommandEvaluator", "EvalContext", "Evaluator", "TuneResult", "tune"]
