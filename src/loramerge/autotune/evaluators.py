"""Evaluators: what a merged LoRA actually does, measured outside the tensors.

An evaluator has a `name` and `score(merged_path, context) -> dict[str, float]` (higher is better),
and `scalar(scores)` says which one number ranks candidates. Built in: `CommandEvaluator` (any
program that prints JSON) and, in `loramerge.autotune.dino`, DINOv2 image-embedding similarity.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import EvaluatorError

__all__ = ["CommandEvaluator", "EvalContext", "Evaluator", "EvaluatorError", "parse_scores", "primary"]


@dataclass(frozen=True)
class EvalContext:
    """What an evaluator is told about the candidate it scores."""

    candidate: int  # its place in phase 2 (1-based)
    label: str
    options: dict[str, Any]
    inputs: tuple[tuple[str, float], ...]  # (path, strength) of every input LoRA, λ applied
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Evaluator(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, merged_path: Path, context: EvalContext) -> dict[str, float]: ...

    def scalar(self, scores: dict[str, float]) -> float: ...


def primary(scores: dict[str, float], key: str = "score") -> float:
    """`key` if present, else the only value; several values and no `key`: their minimum."""
    if key in scores:
        return scores[key]
    return min(scores.values())


def parse_scores(text: str) -> dict[str, float]:
    """A JSON number or an object of numbers from the last non-empty line of `text` (or all of it)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for candidate in (lines[-1] if lines else "", text):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"score": value}
        if isinstance(value, dict) and value:
            try:
                scores = {str(k): float(v) for k, v in value.items()}
            except (TypeError, ValueError):
                break
            if all(math.isfinite(v) for v in scores.values()):
                return scores
        break
    raise ValueError("printed no JSON score (a number, or an object of numbers, on its last line)")


@dataclass(frozen=True)
class CommandEvaluator:
    """Runs ``CMD`` with ``{merged}`` replaced by the merged file's path; reads JSON from its stdout.

    The command is split like a shell would (no shell runs it); the candidate's options are in the
    environment variable ``LORAMERGE_CANDIDATE`` as JSON. Non-zero exit, no JSON, or running past
    `timeout` seconds is an `EvaluatorError` naming the command and the candidate."""

    command: str
    timeout: float = 600.0
    key: str = "score"

    @property
    def name(self) -> str:
        return f"command: {self.command}"

    def score(self, merged_path: Path, context: EvalContext) -> dict[str, float]:
        import os

        args = [a.replace("{merged}", str(merged_path)) for a in shlex.split(self.command)]
        if "{merged}" not in self.command:
            args.append(str(merged_path))
        where = f"evaluator command `{self.command}` on candidate {context.candidate} ({context.label})"
        env = {**os.environ, "LORAMERGE_CANDIDATE": json.dumps(context.options, sort_keys=True)}
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EvaluatorError(
                f"{where}: still running after {self.timeout:g} s, stopped",
                hint="raise --evaluator-timeout or make the command faster",
            ) from exc
        except OSError as exc:
            raise EvaluatorError(f"{where}: cannot run it: {exc}", hint="check the program name and path") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise EvaluatorError(
                f"{where}: exited with status {done.returncode}: {' | '.join(tail) or '(no output)'}",
                hint="run the command by hand on the merged file to see why",
            )
        try:
            return parse_scores(done.stdout)
        except ValueError as exc:
            shown = done.stdout.strip()[-200:] or "(nothing)"
            raise EvaluatorError(f"{where}: {exc}; it printed: {shown}", hint='print e.g. {"score": 0.8}') from exc

    def scalar(self, scores: dict[str, float]) -> float:
        return primary(scores, self.key)
