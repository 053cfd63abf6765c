"""Basis-space merging: QR and KnOTS bases from the factors, exact low-rank results."""

import pytest
import torch

import loramerge.strategies as st
from loramerge.refine import KnotsParams, knots_basis_dense
from loramerge.strategies import TiesParams, knots_basis, merge_in_basis, qr_basis

from .conftest import gen


def factors(out=40, inp=30, ranks=(4, 4, 4), seed=0):
    g = gen(seed)
    ups = [torch.randn(out, r, generator=g) * 0.5 for r in ranks]
    downs = [torch.randn(r, inp, generator=g) for r in ranks]
    return ups, downs, [u @ d for u, d in zip(ups, downs)]


@pytest.mark.parametrize("make", [qr_basis, knots_basis, lambda u, d: qr_basis(u, d, symmetric=False)])
def test_bases_reproduce_every_delta(make):
    ups, downs, deltas = factors()
    basis = make(ups, downs)
    for i, d in enumerate(deltas):
        torch.testing.assert_close(basis.delta(i), d, atol=1e-4, rtol=1e-4)


def test_qr_basis_is_orthonormal_and_small():
    ups, downs, _ = factors(ranks=(3, 5))
    b = qr_basis(ups, downs)
    assert b.left.shape == (40, 8) and b.right.shape == (8, 30) and b.cores[0].shape == (8, 8)
    torch.testing.assert_close(b.left.T @ b.left, torch.eye(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.right @ b.right.T, torch.eye(8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["weighted_sum", "weighted_average", "normalize", "slerp"])
def test_linear_and_norm_based_merges_equal_weight_space(name):
    ups, downs, deltas = factors()
    w = [1.0, 0.5, 0.8]
    low = merge_in_basis(name, qr_basis(ups, downs), w, generator=gen())
    dense = st.get(name)(deltas, w, generator=gen())
    torch.testing.assert_close(low.dense(), dense, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sparsifier", ["magnitude", "dare"])
def test_basis_ties_is_low_rank(sparsifier):
    ups, downs, deltas = factors()
    p = TiesParams(density=0.5, sparsifier=sparsifier)
    low = merge_in_basis("ties", qr_basis(ups, downs), [1, 1, 1], p, generator=gen())
    assert low.rank <= 12 and torch.linalg.matrix_rank(low.dense()) <= 12
    weight_space = st.get("ties")(deltas, [1, 1, 1], p, generator=gen())
    assert torch.linalg.matrix_rank(weight_space) > 12  # the reason basis space exists
    assert torch.isfinite(low.dense()).all()


@pytest.mark.parametrize("make", [qr_basis, knots_basis])
@pytest.mark.parametrize("p", [TiesParams(density=0.5), TiesParams(density=0.5, sign_method="frequency")])
def test_basis_ties_does_not_depend_on_the_order_of_the_loras(make, p):
    ups, downs, _ = factors(ranks=(3, 4, 5))
    w = [1.0, 0.5, 0.8]
    out = merge_in_basis("ties", make(ups, downs), w, p, generator=gen()).dense()
    for perm in ([2, 0, 1], [1, 2, 0]):
        b = make([ups[i] for i in perm], [downs[i] for i in perm])
        permuted = merge_in_basis("ties", b, [w[i] for i in perm], p, generator=gen()).dense()
        torch.testing.assert_close(permuted, out, atol=1e-4, rtol=1e-3)


def test_plain_qr_basis_is_order_dependent_for_ties():
    ups, downs, _ = factors(ranks=(3, 4, 5))
    p = TiesParams(density=0.5)
    a = merge_in_basis("ties", qr_basis(ups, downs, symmetric=False), [1, 1, 1], p, generator=gen()).dense()
    b = merge_in_basis("ties", qr_basis(ups[::-1], downs[::-1], symmetric=False), [1, 1, 1], p, generator=gen()).dense()
    assert not torch.allclose(a, b, atol=1e-3)


def test_factors_are_balanced():
    ups, downs, _ = factors()
    low = merge_in_basis("ties", qr_basis(ups, downs), [1, 1, 1], generator=gen())
    torch.testing.assert_close(low.up.T @ low.up, low.down @ low.down.T, atol=1e-4, rtol=1e-4)


def test_knots_basis_truncates():
    ups, downs, deltas = factors()
    b = knots_basis(ups, downs, rank=5)
    assert b.left.shape[1] == 5 and b.cores[0].shape[0] == 5
    low = merge_in_basis("ties", b, [1, 1, 1], generator=gen())
    assert low.rank <= 5


def test_conv_factors_and_dense_shape():
    g = gen(1)
    ups = [torch.randn(6, 2, 1, 1, generator=g) for _ in range(2)]
    downs = [torch.randn(2, 3, 3, 3, generator=g) for _ in range(2)]
    low = merge_in_basis("weighted_sum", qr_basis(ups, downs), [1, 1], generator=gen())
    expected = sum(u.reshape(6, 2) @ d.reshape(2, 27) for u, d in zip(ups, downs)).reshape(6, 3, 3, 3)
    torch.testing.assert_close(low.dense().reshape(6, 3, 3, 3), expected, atol=1e-5, rtol=1e-5)


def test_factor_shapes_are_checked():
    with pytest.raises(ValueError, match="do not fit"):
        qr_basis([torch.ones(4, 2)], [torch.ones(3, 5)])


def test_knots_basis_dense_matches_the_factor_version_in_weight_space():
    ups, downs, deltas = factors()
    dense_basis = knots_basis_dense(deltas, KnotsParams(), generator=gen())
    for i, d in enumerate(deltas):
        torch.testing.assert_close(dense_basis.delta(i), d, atol=1e-4, rtol=1e-4)
    low = merge_in_basis("ties", dense_basis, [1, 1, 1], generator=gen())
    assert low.rank <= 12
