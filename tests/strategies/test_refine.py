"""Refinement: TALL-masks, orthogonalization, KnOTS and the pipeline around a merge."""

import math

import pytest
import torch

import loramerge.strategies as st
from loramerge.refine import (
    KnotsParams, OrthogonalizeParams, RefineLevel, RefineParams, TallParams, knots, orthogonalize,
    refined_merge, tall_masks, truncated_svd,
)

from .conftest import gen, lowrank

A = torch.tensor([2.0, 0.0, 1.0, -1.0])
B = torch.tensor([0.0, 4.0, 1.0, 1.0])


def test_tall_masks_then_weighted_average_hand_worked():
    split = tall_masks([A, B], [1.0, 0.5], TallParams())
    # c_a = [2, 0, 1, -1], c_b = [0, 2, .5, .5]: a is the only selfish one at 0, 2, 3; b at 1
    assert split.mask.tolist() == [[True, False, True, True], [False, True, False, False]]
    assert torch.equal(split.selfish, torch.tensor([2.0, 2.0, 1.0, -1.0]))
    merged = st.get("weighted_average")(list(split.deltas), [1.0, 0.5], generator=gen())
    torch.testing.assert_close(split.combine(merged), torch.tensor([2.0, 2.0, 4 / 3, -2 / 3]))
    out = refined_merge("weighted_average", [A, B], [1.0, 0.5], generator=gen(), refine=RefineParams(tall=TallParams()))
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0, 4 / 3, -2 / 3]))


def test_tall_threshold_and_shared_positions():
    # λ = 3: |c| ≥ 3·|rest|; at position 2 (1 vs .5) nobody qualifies
    split = tall_masks([A, B], [1.0, 0.5], TallParams(threshold=3.0))
    assert split.mask[:, 2].tolist() == [False, False]
    zeros = tall_masks([torch.zeros(3), torch.zeros(3)], [1, 1], TallParams())
    assert not zeros.mask.any()  # everyone "selfish" on an all-zero position → not unique


def test_orthogonalize_hand_worked():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([2.0, 2.0])
    oa, ob = orthogonalize([a, b], [1, 1], OrthogonalizeParams())
    assert torch.equal(oa, a)
    torch.testing.assert_close(ob, torch.tensor([0.0, 2 * math.sqrt(2)]))


def test_orthogonalize_gives_orthogonal_directions_with_original_norms():
    ds = [torch.randn(5, 6, generator=gen(i)) + 0.8 * torch.ones(5, 6) for i in range(4)]  # correlated
    out = orthogonalize(ds, [1] * 4, OrthogonalizeParams())
    for i, (o, d) in enumerate(zip(out, ds)):
        assert math.isclose(float(o.norm()), float(d.norm()), rel_tol=1e-5)
        for o2 in out[:i]:
            assert abs(float((o * o2).sum() / (o.norm() * o2.norm()))) < 1e-5


def test_orthogonalize_zero_and_dependent_deltas():
    x = torch.randn(3, 3, generator=gen(0))
    out = orthogonalize([x, torch.zeros(3, 3), 2 * x], [1, 1, 1], OrthogonalizeParams())
    assert torch.equal(out[0], x * 1.0) or torch.allclose(out[0], x)
    assert torch.equal(out[1], torch.zeros(3, 3)) and torch.equal(out[2], torch.zeros(3, 3))


def test_knots_reconstructs_exactly_at_full_rank():
    ds = [torch.randn(6, 5, generator=gen(i)) for i in range(3)]
    for o, d in zip(knots(ds, [1, 1, 1], KnotsParams(), generator=gen()), ds):
        torch.testing.assert_close(o, d, atol=1e-5, rtol=1e-5)
    conv = [torch.randn(4, 2, 3, 3, generator=gen(i)) for i in range(2)]
    for o, d in zip(knots(conv, [1, 1], KnotsParams(), generator=gen()), conv):
        torch.testing.assert_close(o, d, atol=1e-5, rtol=1e-5)


def test_knots_truncation_is_the_shared_left_basis():
    ds = [torch.randn(8, 6, generator=gen(i)) for i in range(2)]
    u, s, vh = torch.linalg.svd(torch.cat(ds, dim=1), full_matrices=False)
    out = knots(ds, [1, 1], KnotsParams(rank=3), generator=gen())
    us = u[:, :3] * s[:3]
    for i, o in enumerate(out):
        torch.testing.assert_close(o, us @ vh[:3, i * 6:(i + 1) * 6], atol=1e-5, rtol=1e-4)  # (UΣ)·V_iᵀ


def test_randomized_svd_is_exact_on_low_rank_and_seeded():
    m = lowrank(120, 200, 6, seed=3)
    u, s, vh = truncated_svd(m, KnotsParams(rank=8), gen(1))  # 8 < 120/2 → randomized
    torch.testing.assert_close(u @ torch.diag(s) @ vh, m, atol=1e-4, rtol=1e-3)
    u2, _, _ = truncated_svd(m, KnotsParams(rank=8), gen(1))
    assert torch.equal(u, u2)
    ds = [lowrank(120, 100, 3, seed=i) for i in range(2)]
    for o, d in zip(knots(ds, [1, 1], KnotsParams(rank=8), generator=gen()), ds):
        torch.testing.assert_close(o, d, atol=1e-4, rtol=1e-3)


def test_levels():
    assert not RefineParams.for_level("none").active
    r = RefineParams.for_level(RefineLevel.REFINE)
    assert r.tall and r.orthogonalize and r.knots is None and r.columnwise_ties
    assert RefineParams.for_level("full").knots == KnotsParams()


def test_refined_merge_runs_the_steps_in_order():
    ds = [torch.randn(6, 4, generator=gen(i)) for i in range(3)]
    w = [1.0, 0.5, 2.0]
    got = refined_merge("ties", ds, w, st.TiesParams(density=0.8), generator=gen(1),
                        refine=RefineParams.for_level("full"))
    split = tall_masks(ds, w, TallParams())
    steps = orthogonalize(split.deltas, w, OrthogonalizeParams())
    steps = knots(steps, w, KnotsParams(), generator=gen(1))
    ref = st.get("ties")(list(steps), w, st.TiesParams(density=0.8, columnwise=True), generator=gen(1))
    assert torch.equal(got, ref + split.selfish)


def test_refined_merge_sparsifies_first_and_skips_single_loras():
    ds = [torch.randn(6, 4, generator=gen(i)) for i in range(2)]
    sp = st.SparsifyParams("dare", density=0.5)
    got = refined_merge("ties", ds, [1, 1], generator=gen(2), refine=RefineParams(tall=TallParams()), sparsifier=sp)
    thinned = st.sparsify(ds, [1, 1], sp, generator=gen(2))
    split = tall_masks(thinned, [1, 1], TallParams())
    ref = st.get("ties")(list(split.deltas), [1, 1], st.TiesParams(density=1.0), generator=gen(0)) + split.selfish
    assert torch.equal(got, ref)
    one = refined_merge("weighted_average", ds[:1], [0.5], generator=gen(), refine=RefineParams.for_level("full"))
    assert torch.equal(one, st.get("weighted_average")(ds[:1], [0.5], generator=gen()))


@pytest.mark.parametrize("fn,params", [(orthogonalize, OrthogonalizeParams()), (knots, KnotsParams()),
                                       (tall_masks, TallParams())])
def test_refinements_do_not_mutate_inputs(fn, params):
    ds = [torch.randn(5, 4, generator=gen(i)) for i in range(3)]
    before = [d.clone() for d in ds]
    fn(ds, [1.0, -0.5, 2.0], params, generator=gen())
    assert all(torch.equal(a, b) for a, b in zip(ds, before))
