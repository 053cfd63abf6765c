"""PEFT's merge_utils as a test oracle (unweighted vote, magnitude trim): exact equality."""

import itertools
import warnings

import pytest
import torch

import loramerge.strategies as st
from loramerge.strategies.sparsify import dare

peft_merge = pytest.importorskip("peft.utils.merge_utils")

SHAPES = [(7,), (16, 12), (8, 3, 3, 3), (33, 5)]
DENSITIES = [0.0, 0.1, 0.37, 0.5, 0.9, 1.0]
CASES = list(itertools.product(SHAPES, DENSITIES, [1, 2, 4]))


def inputs(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    ds = [torch.randn(shape, generator=g) for _ in range(n)]
    w = (torch.rand(n, generator=g) * 3 - 1).tolist()  # some negative
    return ds, w


@pytest.mark.parametrize("shape,density,n", CASES)
@pytest.mark.parametrize("method", ["total", "frequency"])
def test_ties_equals_peft(shape, density, n, method):
    ds, w = inputs(shape, n, hash((shape, density, n)) % 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft_merge.ties(ds, torch.tensor(w), density, method)
    p = st.TiesParams(density=density, sign_method=method, weighted_vote=False)
    assert torch.equal(st.get("ties")(ds, w, p, generator=torch.Generator()), ref)


@pytest.mark.parametrize("shape,density,n", CASES)
def test_magnitude_prune_equals_peft(shape, density, n):
    ds, w = inputs(shape, n, 1 + hash((shape, density, n)) % 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft_merge.magnitude_prune(ds, torch.tensor(w), density)
    out = st.get("magnitude_prune")(ds, w, st.MagnitudePruneParams(density), generator=torch.Generator())
    assert torch.equal(out, ref)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_weighted_sum_equals_task_arithmetic(shape, n):
    ds, w = inputs(shape, n, n)
    ours = st.get("weighted_sum")(ds, w, generator=torch.Generator())
    assert torch.equal(ours, peft_merge.task_arithmetic(ds, torch.tensor(w)))


@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
def test_dare_matches_peft_statistics(density):
    torch.manual_seed(0)  # PEFT draws from the global generator
    t = torch.randn(400, 250, generator=torch.Generator().manual_seed(1))
    ours = dare(t, density, 0.0, torch.Generator().manual_seed(2))
    theirs = peft_merge.prune(t, density, "random", rescale=True)
    for out in (ours, theirs):
        kept = out != 0
        assert abs(float(kept.float().mean()) - density) < 0.01
        torch.testing.assert_close(out[kept], t[kept] / density)
    # expectation preserved: the merged means over repeated draws agree with each other and the input
    ds, w = [t[:40, :50], t[40:80, :50]], [1.0, 0.5]
    g = torch.Generator().manual_seed(3)
    mean_ours = sum(st.merge("weighted_sum", ds, w, generator=g, sparsifier=st.SparsifyParams("dare", density))
                    for _ in range(300)) / 300
    mean_peft = sum(peft_merge.dare_linear(ds, torch.tensor(w), density) for _ in range(300)) / 300
    exact = peft_merge.task_arithmetic(ds, torch.tensor(w))
    tol = 2 * float(exact.abs().mean()) * ((1 - density) / density / 300) ** 0.5 + 0.02
    assert float((mean_ours - exact).abs().mean()) < tol
    assert float((mean_peft - exact).abs().mean()) < tol
