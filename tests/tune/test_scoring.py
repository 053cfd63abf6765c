"""Phase 2 metrics and the ranking, on hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from loramerge.autotune import scoring as S
from loramerge.autotune.grid import Candidate
from loramerge.autotune.phase1 import Scored, unique
from loramerge.autotune.tuner import _rank
from loramerge.patches import Dense, LowRank


def test_effective_rank():
    assert S.effective_rank(torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4.0)
    assert S.effective_rank(torch.tensor([2.0, 0.0, 0.0])) == pytest.approx(1.0)
    # p = (.75, .25): exp(−(.75 ln .75 + .25 ln .25)) = 1.7548
    assert S.effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(1.754765, abs=1e-6)
    assert S.effective_rank(torch.zeros(3)) == 0.0


def test_singular_values_of_factors_equal_those_of_the_product():
    # ΔW = 0.5·[[1,0],[0,2],[0,0]] @ [[3,0,0],[0,0,1]] = [[1.5,0,0],[0,0,1],[0,0,0]]: σ = (1.5, 1)
    p = LowRank(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), torch.tensor([[3.0, 0, 0], [0, 0, 1.0]]), 0.5, None)
    assert S.singular_values(p).tolist() == pytest.approx([1.5, 1.0])
    assert S.singular_values(Dense(p.dense())).tolist()[:2] == pytest.approx([1.5, 1.0])


def test_coefficient_of_variation():
    assert S.coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(2 / 3) / 2)
    assert S.coefficient_of_variation([5.0]) == 0.0
    assert S.coefficient_of_variation([2.0, 2.0]) == 0.0


def test_kept_fraction_and_sparsity_fit():
    # threshold 0.1·max = 0.1: 1 and 0.2 are above it, −0.05 and 0 are not
    assert S.kept_fraction(torch.tensor([1.0, -0.05, 0.2, 0.0]), 0.1) == 0.5
    assert S.kept_fraction(torch.zeros(4), 0.1) == 0.0
    assert S.sparsity_fit(0.6, 0.7) == pytest.approx(0.9)


def test_group_facts():
    p = LowRank(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), torch.tensor([[3.0, 0, 0], [0, 0, 1.0]]), 0.5, None)
    relative, norm, kept = S.group_facts(p, 0.1)
    assert relative == pytest.approx(S.effective_rank(torch.tensor([1.5, 1.0])) / 2)
    assert norm == pytest.approx(math.sqrt(1.5**2 + 1))
    assert kept == pytest.approx(2 / 9)  # two of nine entries above 0.15
    assert S.group_facts(Dense(torch.ones(4)), 0.1) is None  # norm/bias deltas are left out


def test_merge_metrics():
    facts = [(0.5, 1.0, 0.6), (1.0, 3.0, 0.8), None]
    m = S.merge_metrics(facts, {"a": 0.9, "b": 0.4, "c": None}, target_density=0.7)
    assert m["effective_rank"] == pytest.approx(0.75)
    assert m["norm_cv"] == pytest.approx(0.5)  # norms 1, 3: mean 2, std 1
    assert m["norm_consistency"] == pytest.approx(2 / 3)
    assert m["density"] == pytest.approx((1 * 0.6 + 3 * 0.8) / 4)
    assert m["sparsity_fit"] == pytest.approx(0.95)
    assert (m["min_retention"], m["mean_retention"], m["retention"]) == pytest.approx((0.4, 0.65, 0.4))
    assert m["score"] == pytest.approx(0.35 * 0.75 + 0.25 * 2 / 3 + 0.20 * 0.95 + 0.20 * 0.4)
    assert S.loses_a_lora(m) and not S.loses_a_lora({**m, "min_retention": 0.5}) and not S.loses_a_lora(None)


def _scored(index: int, score: float, fingerprint=None) -> Scored:
    return Scored(index, Candidate((("mode", f"m{index}"),)), {}, score, fingerprint or (index,))


def _p2(score: float, min_retention: float = 0.9, scalar: float | None = None, error: str | None = None):
    ev = None if scalar is None else {"scores": {"score": scalar}, "scalar": scalar}
    return {"metrics": {"score": score, "min_retention": min_retention}, "evaluation": ev, "error": error}


def test_ranking_without_an_evaluator():
    ranked = [_scored(0, 0.9), _scored(1, 0.8), _scored(2, 0.7), _scored(3, 0.6)]
    phase2 = {0: _p2(0.5, min_retention=0.3), 1: _p2(0.6), 2: _p2(0.7)}
    # merged before not merged; the one that loses a LoRA last, even after the unmerged one
    assert [s.index for s in _rank(ranked, phase2, evaluated=False)] == [2, 1, 3, 0]


def test_ranking_with_an_evaluator():
    ranked = [_scored(0, 0.9), _scored(1, 0.8), _scored(2, 0.7), _scored(3, 0.6)]
    phase2 = {0: _p2(0.9, scalar=0.2), 1: _p2(0.1, scalar=0.8), 2: _p2(0.99, error="boom"), 3: _p2(0.5, scalar=0.8)}
    # by the evaluator's scalar (ties: phase-2 score); a candidate the evaluator failed on comes after
    assert [s.index for s in _rank(ranked, phase2, evaluated=True)] == [3, 1, 0, 2]


def test_identical_candidates_count_once():
    scored = [_scored(0, 0.5, ("x",)), _scored(1, 0.7, ("x",)), _scored(2, 0.6, ("y",)), _scored(3, 0.7, ("x",))]
    kept, same_as = unique(scored)
    assert [s.index for s in kept] == [1, 2]  # the best of each fingerprint, first on equal scores
    assert same_as == {0: 1, 3: 1}
