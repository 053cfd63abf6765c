"""Row-block TIES / magnitude pruning (the engine's bounded-memory path) equal the whole-tensor merges
bit for bit, ties at the trim threshold included (kept in index order across blocks)."""

import pytest
import torch

import loramerge.strategies as st
from loramerge.strategies import MagnitudePruneParams, SignMethod, Sparsifier, TiesParams
from loramerge.strategies.sparsify import TrimThreshold, magnitude_trim

from .conftest import gen


def _readers(deltas):
    return [lambda r0, r1, d=d: d[r0:r1] for d in deltas]


def _deltas(n, shape, seed, quantum=0.25):
    g = torch.Generator().manual_seed(seed)
    # coarse values: many entries tie at every threshold, and signs disagree often
    return [torch.round(torch.randn(shape, generator=g) / quantum) * quantum for _ in range(n)]


@pytest.mark.parametrize("block_rows", [1, 3, 7, 64])
@pytest.mark.parametrize("sign_method", list(SignMethod))
@pytest.mark.parametrize("columnwise", [False, True])
def test_ties_by_rows_equals_ties(block_rows, sign_method, columnwise):
    deltas, weights = _deltas(4, (13, 6), seed=block_rows), [0.8, -0.5, 1.2, 0.3]
    params = TiesParams(density=0.4, sign_method=sign_method, columnwise=columnwise)
    whole = st.get("ties")(deltas, weights, params, generator=gen())
    rows = st.get("ties").by_rows(_readers(deltas), (13, 6), weights, params, block_rows=block_rows)
    assert torch.equal(rows, whole)


def test_conv_shaped_deltas_split_by_output_rows():
    deltas, weights = _deltas(3, (5, 4, 3, 3), seed=3), [1.0, 0.7, 0.4]
    params = TiesParams(density=0.3)
    whole = st.get("ties")(deltas, weights, params, generator=gen())
    assert torch.equal(st.get("ties").by_rows(_readers(deltas), (5, 4, 3, 3), weights, params, block_rows=2), whole)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_magnitude_prune_by_rows_equals_magnitude_prune(density):
    deltas, weights = _deltas(3, (11, 9), seed=5), [0.6, 1.0, -0.4]
    params = MagnitudePruneParams(density=density)
    whole = st.get("magnitude_prune")(deltas, weights, params, generator=gen())
    rows = st.get("magnitude_prune").by_rows(_readers(deltas), (11, 9), weights, params, block_rows=4)
    assert torch.equal(rows, whole)


def test_dare_trim_needs_whole_tensors():
    deltas = _deltas(2, (4, 4), seed=1)
    params = TiesParams(density=0.5, sparsifier=Sparsifier.DARE)
    assert st.get("ties").by_rows(_readers(deltas), (4, 4), [1.0, 1.0], params, block_rows=2) is None


def test_tie_budget_is_spent_in_index_order_across_blocks():
    # 6 entries of magnitude 1: density 0.5 of 12 entries keeps the 3 larger ones and the first 3 ties
    t = torch.tensor([[5.0, 1, -1], [4, 1, 0], [3, -1, 1], [0, 1, 0]])
    trim = TrimThreshold.of(t, 0.5)
    assert (trim.value, trim.tied) == (1.0, 3)
    blocks = [trim.apply(t[r : r + 1]) for r in range(4)]
    expected = torch.tensor([[5.0, 1, -1], [4, 1, 0], [3, 0, 0], [0, 0, 0]])
    assert torch.equal(torch.cat(blocks), expected)
    assert torch.equal(magnitude_trim(t, 0.5), expected)
    assert trim.tied == 0
