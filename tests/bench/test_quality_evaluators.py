"""The image benchmark's measuring instrument: brightness is not a stroke style.

A merge once scored as "thin" only because its samples were dimmer (docs/DECISIONS.md, style+thin):
the evaluator is now trained with random brightness, reports its accuracy on dimmed digits, and the
benchmark's sanity checks fail when a stroke head fires on them.
"""

from __future__ import annotations

import pytest
import torch

from bench.quality.config import ARTEFACT_SOURCES, SMOKE
from bench.quality.evaluators import DIM_TEST, dimmed, held_out_accuracy, train_evaluator
from bench.quality.report import sanity


def test_dimmed_scales_the_strokes_and_keeps_black():
    x = torch.tensor([[[-1.0, 0.0, 1.0]], [[-1.0, 0.0, 1.0]]])
    # [-1, 1] -> [0, 1] is (x + 1) / 2; gain g there; back: (x + 1) * g - 1
    assert dimmed(x, 0.5).tolist() == [[[-1.0, -0.5, 0.0]], [[-1.0, -0.5, 0.0]]]
    per_image = dimmed(x, torch.tensor([1.0, 0.25]))
    assert per_image[0].tolist() == x[0].tolist() and per_image[1].tolist() == [[-1.0, -0.75, -0.5]]


def test_held_out_accuracy_is_also_reported_on_dimmed_digits():
    model, acc = train_evaluator(seed=0, steps=2, batch=8)
    names = [f"{s}{t}" for s in ("plain", "bold", "thin") for t in ("", "+slant")]
    assert list(acc) == names + [f"{n} ×{DIM_TEST}" for n in names]
    assert all(set(v) == {"digit", "bold", "thin", "slant"} for v in acc.values())
    x = torch.full((4, 16, 16), -1.0)
    assert held_out_accuracy(model, x, torch.zeros(4, dtype=torch.long)).keys() == acc.keys()


def _dim_check(thin_accuracy: float) -> dict:
    acc = {f"plain ×{DIM_TEST}": {"digit": 1.0, "bold": 1.0, "thin": thin_accuracy, "slant": 1.0}}
    agg = {"singles": {}, "cases": {}, "evaluator_accuracy": acc}
    (check,) = sanity(SMOKE, agg)
    return check


@pytest.mark.parametrize(("accuracy", "ok"), [(0.97, True), (0.95, True), (0.42, False)])
def test_the_sanity_checks_fail_when_a_stroke_head_reads_brightness(accuracy, ok):
    check = _dim_check(accuracy)
    assert check["ok"] is ok and check["value"] == f"{accuracy:.3f}" and "brightness" in check["check"]


def test_a_new_evaluator_does_not_retrain_the_models_it_measures():
    assert "evaluators.py" in ARTEFACT_SOURCES["evaluator"]
    assert all("evaluators.py" not in ARTEFACT_SOURCES[k] for k in ("base", "lora"))
    keys = {k: SMOKE.artefact_key(k, 0) for k in ("base", "lora", "evaluator")}
    assert len(set(keys.values())) == 3
