"""The command evaluator: scores from JSON; failure, timeout and no JSON name the command and candidate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loramerge.autotune.evaluators import CommandEvaluator, EvalContext, parse_scores, primary
from loramerge.errors import EvaluatorError

CTX = EvalContext(2, "auto per_group", {"multiplier": 1.0}, (("a.safetensors", 1.0),))


def _cmd(code: str) -> str:
    return f"{sys.executable} -c {code!r} {{merged}}"


def test_parse_scores():
    assert parse_scores("0.5") == {"score": 0.5}
    assert parse_scores('loading...\n{"score": 0.25, "a": 1}\n') == {"score": 0.25, "a": 1.0}
    for bad in ("", "hello", '{"a": "x"}', "[1, 2]", '{"a": NaN}', "true"):
        with pytest.raises(ValueError):
            parse_scores(bad)


def test_primary_score():
    assert primary({"score": 0.3, "a": 0.9}) == 0.3
    assert primary({"a": 0.9, "b": 0.4}) == 0.4
    assert primary({"acc": 0.7}) == 0.7


def test_command_gets_the_merged_path(tmp_path):
    merged = tmp_path / "merged file.safetensors"  # a space survives the substitution
    merged.write_bytes(b"x" * 7)
    ev = CommandEvaluator(_cmd("import os, sys; print(os.path.getsize(sys.argv[1]) / 10)"))
    scores = ev.score(merged, CTX)
    assert scores == {"score": 0.7}
    assert ev.scalar(scores) == 0.7


@pytest.mark.parametrize(
    "code, timeout, problem",
    [
        ("import sys; print('bad things', file=sys.stderr); sys.exit(3)", 60, "exited with status 3: bad things"),
        ("import time; time.sleep(30)", 1, "still running after 1 s"),
        ("print('no json here')", 60, "printed no JSON score"),
    ],
)
def test_command_failures_name_the_command_and_the_candidate(code, timeout, problem):
    ev = CommandEvaluator(_cmd(code), timeout=timeout)
    with pytest.raises(EvaluatorError) as info:
        ev.score(Path("m.safetensors"), CTX)
    message = str(info.value)
    assert problem in message
    assert ev.command in message and "candidate 2 (auto per_group)" in message


def test_missing_program():
    with pytest.raises(EvaluatorError, match="cannot run it"):
        CommandEvaluator("/nonexistent/scorer {merged}").score(Path("m"), CTX)
