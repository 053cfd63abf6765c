"""Hand-worked examples for the linear strategies."""

import math

import pytest
import torch

import loramerge.strategies as st

from .conftest import gen

A = torch.tensor([1.0, 2.0])
B = torch.tensor([3.0, -1.0])


def run(name, deltas, weights, params=None):
    return st.get(name)(deltas, weights, params, generator=gen())


def test_weighted_sum():
    assert torch.equal(run("weighted_sum", [A, B], [2.0, -1.0]), torch.tensor([-1.0, 5.0]))


def test_weighted_average_divides_by_absolute_weights():
    torch.testing.assert_close(run("weighted_average", [A, B], [2.0, -1.0]), torch.tensor([-1.0, 5.0]) / 3)


@pytest.mark.parametrize("name", ["weighted_average", "normalize", "l2_weighted_average"])
def test_zero_weights_give_zero(name):
    assert torch.equal(run(name, [A, B], [0.0, 0.0]), torch.zeros(2))


def test_normalize():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(run("normalize", [e1, e2], [3.0, 4.0]), torch.tensor([0.6, 0.8]))


def test_l2_weighted_average():
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0])  # norms 5 and 1
    # |w|·‖ΔW‖ = 5 and 2 → coefficients 5/7, 2/7
    torch.testing.assert_close(run("l2_weighted_average", [a, b], [1.0, 2.0]), torch.tensor([15 / 7, 22 / 7]))
    # a negative weight keeps its sign: coefficient −2/7
    torch.testing.assert_close(run("l2_weighted_average", [a, b], [1.0, -2.0]), torch.tensor([15 / 7, 18 / 7]))


def test_add_difference():
    a, b, c = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 0.0]), torch.tensor([1.0, 2.0])
    p = st.AddDifferenceParams(factor=0.5)
    torch.testing.assert_close(run("add_difference", [a, b, c], [1.0, 1.0, 1.0], p), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(run("add_difference", [a, b, c], [2.0, 1.0, 1.0], p), torch.tensor([3.0, 1.0]))
    assert st.AddDifferenceParams().factor == 1.0


def test_normalize_keeps_norm_of_orthogonal_equal_deltas():
    ds = [torch.eye(4)[i] * 2 for i in range(4)]
    out = run("normalize", ds, [1.0] * 4)
    assert math.isclose(float(out.norm()), 2.0, rel_tol=1e-6)
