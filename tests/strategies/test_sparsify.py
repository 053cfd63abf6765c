"""Sparsifiers: magnitude trim, DARE, DELLA, conflict-aware variants (METHOD §5)."""

import pytest
import torch

from loramerge.strategies import Sparsifier, SparsifyParams, conflict_mask, sparsify
from loramerge.strategies.sparsify import dare, della, della_keep_probability, magnitude_trim

from .conftest import gen


def test_magnitude_trim_keeps_top_fraction():
    t = torch.tensor([0.1, -3.0, 2.0, 0.5])
    assert torch.equal(magnitude_trim(t, 0.5), torch.tensor([0.0, -3.0, 2.0, 0.0]))
    assert torch.equal(magnitude_trim(t, 1.0), t)
    assert torch.equal(magnitude_trim(t, 0.0), torch.zeros(4))


def test_magnitude_trim_keeps_exactly_k_when_tied():
    t = torch.tensor([1.0, -1.0, 1.0, 1.0, 0.5])
    assert torch.equal(magnitude_trim(t, 0.4), torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0]))
    big = torch.randint(-3, 4, (50, 40), generator=gen(0)).float()
    assert int((magnitude_trim(big, 0.37) != 0).sum()) == int(0.37 * 2000)


def test_dare_keeps_density_and_rescales():
    t = torch.ones(200_000)
    out = dare(t, 0.3, 0.0, gen(1))
    kept = out != 0
    assert abs(float(kept.float().mean()) - 0.3) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.3))


def test_dare_dampening():
    out = dare(torch.ones(1000), 0.5, 0.5, gen(1))  # q = 0.5 + 0.5·0.5 = 0.75
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / 0.75))


def test_dare_preserves_expectation():
    t = torch.tensor([1.0, -2.0, 0.5, 3.0]).repeat(50_000, 1)
    out = dare(t, 0.4, 0.0, gen(2))
    torch.testing.assert_close(out.mean(0), t[0], atol=0.05, rtol=0.02)


def test_dare_is_deterministic_per_generator():
    t = torch.randn(64, 32, generator=gen(0))
    assert torch.equal(dare(t, 0.5, 0.0, gen(7)), dare(t, 0.5, 0.0, gen(7)))
    assert not torch.equal(dare(t, 0.5, 0.0, gen(7)), dare(t, 0.5, 0.0, gen(8)))


def test_della_keep_probability_hand_worked():
    row = torch.tensor([[4.0, -1.0, 3.0, 2.0]])  # ranks 0, 3, 1, 2
    # p_min = 1 − 0.5 − 0.15 = 0.35; p_drop = 0.35 + 0.075·rank
    expected = 1 - torch.tensor([[0.35, 0.575, 0.425, 0.5]])
    torch.testing.assert_close(della_keep_probability(row, 0.5, 0.3), expected)


def test_della_ranks_within_rows():
    t = torch.tensor([[1.0, 2.0], [20.0, 10.0]])
    keep = della_keep_probability(t, 0.5, 0.3)  # ε/n = 0.15, p_min = 0.35
    torch.testing.assert_close(keep, torch.tensor([[0.5, 0.65], [0.65, 0.5]]))


def test_della_density_one_is_lossless_and_epsilon_is_capped():
    t = torch.randn(8, 16, generator=gen(0))
    assert torch.equal(della(t, 1.0, 0.3, 0.0, gen(1)), t)
    keep = della_keep_probability(t, 0.9, 0.3)  # ε capped to 0.2
    assert float(keep.min()) >= 0.0 and float(keep.max()) <= 1.0
    assert abs(float(keep.mean()) - (0.9 + 0.2 / 32)) < 1e-5


def test_della_preserves_expectation_and_prefers_large_entries():
    t = torch.tensor([4.0, -1.0, 3.0, 2.0]).repeat(50_000, 1)
    out = della(t, 0.5, 0.3, 0.0, gen(3))
    torch.testing.assert_close(out.mean(0), t[0], atol=0.05, rtol=0.02)
    kept = (out != 0).float().mean(0)
    assert kept[0] > kept[2] > kept[3] > kept[1]


def test_conflict_mask_uses_weighted_signs():
    a, b, c = torch.tensor([1.0, -1, 0, 2]), torch.tensor([-1.0, -1, 3, 0]), torch.tensor([0.0, 1, 0, 0])
    assert conflict_mask([a, b, c], [1, 1, 1]).tolist() == [True, True, False, False]
    assert conflict_mask([a, b, c], [1, -1, 1]).tolist() == [False, True, False, False]


@pytest.mark.parametrize("method", ["dare_conflict", "della_conflict"])
def test_conflict_variants_only_touch_conflicts(method):
    a = torch.randn(40, 30, generator=gen(0)).abs()
    b = a.clone()
    b[:5] *= -1  # rows 0-4 conflict: 5·30/1200 = 12.5 % ≤ 40 %
    out = sparsify([a, b], [1, 1], SparsifyParams(method, density=0.5), generator=gen(1))
    mask = conflict_mask([a, b], [1, 1])
    for src, res in zip((a, b), out):
        assert torch.equal(res[~mask], src[~mask])
        assert (res[mask] == 0).any()


@pytest.mark.parametrize("method,uniform", [("dare_conflict", "dare"), ("della_conflict", "della")])
def test_conflict_variants_fall_back_above_40_percent(method, uniform):
    a = torch.randn(40, 30, generator=gen(0))
    b = torch.randn(40, 30, generator=gen(1))  # ~50 % sign conflicts
    assert float(conflict_mask([a, b], [1, 1]).float().mean()) > 0.4
    got = sparsify([a, b], [1, 1], SparsifyParams(method, density=0.5), generator=gen(2))
    ref = sparsify([a, b], [1, 1], SparsifyParams(uniform, density=0.5), generator=gen(2))
    assert all(torch.equal(x, y) for x, y in zip(got, ref))


def test_single_lora_conflict_variant_is_a_no_op():
    a = torch.randn(10, 10, generator=gen(0))
    (out,) = sparsify([a], [1.0], SparsifyParams(Sparsifier.DARE_CONFLICT), generator=gen(1))
    assert torch.equal(out, a)


def test_sparsify_does_not_mutate_inputs():
    a, b = torch.randn(6, 5, generator=gen(0)), torch.randn(6, 5, generator=gen(1))
    a0, b0 = a.clone(), b.clone()
    for m in Sparsifier:
        sparsify([a, b], [1, -1], SparsifyParams(m, density=0.5), generator=gen(2))
    assert torch.equal(a, a0) and torch.equal(b, b0)
