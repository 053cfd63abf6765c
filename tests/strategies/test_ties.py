"""TIES (element-wise and column-wise, weighted and unweighted vote), DARE/DELLA-TIES, pruning, merge()."""

import pytest
import torch

import loramerge.strategies as st
from loramerge.strategies import SparsifyParams, TiesParams, sparsify
from loramerge.strategies.ties import sign_merge

from .conftest import gen

T = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731


def ties(deltas, weights, **kw):
    return st.get("ties")(deltas, weights, TiesParams(**kw), generator=gen())


def test_trim_elect_disjoint_mean():
    a, b = T(3, -2, 1, 0.5), T(-1, -4, 2, 0.2)
    # trimmed to [3, -2, 0, 0] and [0, -4, 2, 0]; elected +, −, +, + ; position 3 has no contributor
    assert torch.equal(ties([a, b], [1, 1], density=0.5), T(3, -3, 2, 0))


def test_no_trim_total_vote():
    a, b = T(3, -2, 1, 0.5), T(-1, -4, 2, 0.2)
    torch.testing.assert_close(ties([a, b], [1, 1], density=1.0), T(3, -3, 1.5, 0.35))


def test_total_and_frequency_differ():
    ds = [T(5), T(-1), T(-1)]
    assert torch.equal(ties(ds, [1, 1, 1], density=1.0, sign_method="total"), T(5))
    assert torch.equal(ties(ds, [1, 1, 1], density=1.0, sign_method="frequency"), T(-1))


def test_tied_vote_goes_to_plus():
    assert torch.equal(ties([T(1), T(-1)], [1, 1], density=1.0, sign_method="frequency"), T(1))


def test_weighted_vote_counts_strengths():
    a, b = T(1), T(-2)
    assert torch.equal(ties([a, b], [3, 1], density=1.0), T(3))  # 3·1 − 2 > 0
    assert torch.equal(ties([a, b], [3, 1], density=1.0, weighted_vote=False), T(-2))  # 1 − 2 < 0
    ds = [T(1), T(-1), T(-1)]
    assert torch.equal(ties(ds, [3, 1, 1], density=1.0, sign_method="frequency"), T(3))
    assert torch.equal(ties(ds, [3, 1, 1], density=1.0, sign_method="frequency", weighted_vote=False), T(-1))


def test_negative_weight_votes_with_its_contribution():
    assert torch.equal(ties([T(1), T(1)], [1, -1], density=1.0), T(1))
    assert torch.equal(ties([T(1), T(1)], [1, -1], density=1.0, weighted_vote=False), T(0))


def test_equal_positive_weights_make_both_votes_equal():
    ds = [torch.randn(6, 5, generator=gen(i)) for i in range(3)]
    for m in ("total", "frequency"):
        assert torch.equal(ties(ds, [0.7] * 3, sign_method=m), ties(ds, [0.7] * 3, sign_method=m, weighted_vote=False))


def test_columnwise_rows_vote_as_units():
    a, b = torch.tensor([[3.0, -1.0]]), torch.tensor([[-1.0, 2.0]])
    # row direction D = [2, 1]: ⟨a, D⟩ = 5 agrees, ⟨b, D⟩ = 0 does not → the whole row of a
    assert torch.equal(ties([a, b], [1, 1], density=1.0, columnwise=True), a)
    assert torch.equal(ties([a, b], [1, 1], density=1.0), torch.tensor([[3.0, 2.0]]))  # element-wise


def test_columnwise_frequency_and_conv_shapes():
    a = torch.tensor([[3.0, -1.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)
    b = torch.tensor([[-1.0, 2.0], [1.0, 3.0]]).reshape(2, 1, 1, 2)
    c = b.clone()
    out = ties([a, b, c], [1, 1, 1], density=1.0, columnwise=True, sign_method="frequency")
    # row 0: unit votes elect b's side; row 1: all agree → mean
    expected = torch.tensor([[-1.0, 2.0], [1.0, 7 / 3]]).reshape(2, 1, 1, 2)
    torch.testing.assert_close(out, expected)


def test_columnwise_on_1d_is_elementwise():
    ds = [torch.randn(9, generator=gen(i)) for i in range(3)]
    out = ties(ds, [1, 0.5, 2], density=1.0, columnwise=True)
    ref = ties(ds, [1, 0.5, 2], density=1.0)
    nonzero_vote = torch.stack(ds).mul(torch.tensor([1, 0.5, 2])[:, None]).sum(0) != 0
    assert torch.equal(out[nonzero_vote], ref[nonzero_vote])


@pytest.mark.parametrize("method", ["dare", "della", "dare_conflict", "della_conflict"])
def test_dare_and_della_ties_share_the_parts(method):
    ds = [torch.randn(12, 8, generator=gen(i)) for i in range(3)]
    w = [1.0, 0.6, -0.4]
    p = TiesParams(density=0.6, sparsifier=method, dampening=0.2)
    got = st.get("ties")(ds, w, p, generator=gen(5))
    thinned = sparsify(ds, w, SparsifyParams(method, 0.6, 0.2), generator=gen(5))
    assert torch.equal(got, sign_merge(thinned, w, p))


def test_merge_routes_a_sparsifier_into_the_ties_trim():
    ds = [torch.randn(12, 8, generator=gen(i)) for i in range(2)]
    sp = SparsifyParams("della", density=0.5)
    got = st.merge("ties", ds, [1, 1], generator=gen(3), sparsifier=sp)
    assert torch.equal(got, st.get("ties")(ds, [1, 1], TiesParams(density=0.5, sparsifier="della"), generator=gen(3)))


def test_merge_sparsifies_in_front_of_other_strategies():
    ds = [torch.randn(12, 8, generator=gen(i)) for i in range(2)]
    sp = SparsifyParams("dare", density=0.5)
    got = st.merge("weighted_average", ds, [1, 2], generator=gen(3), sparsifier=sp)
    thinned = sparsify(ds, [1, 2], sp, generator=gen(3))
    assert torch.equal(got, st.get("weighted_average")(thinned, [1, 2], generator=gen(0)))
    assert torch.equal(st.merge("slerp", ds, [1, 2], generator=gen(3)), st.get("slerp")(ds, [1, 2], generator=gen(0)))


def test_magnitude_prune():
    a, b = T(3, -2, 1, 0.5), T(-1, -4, 2, 0.2)
    out = st.get("magnitude_prune")([a, b], [1, 0.5], st.MagnitudePruneParams(0.5), generator=gen())
    assert torch.equal(out, T(3, -4, 1, 0))
