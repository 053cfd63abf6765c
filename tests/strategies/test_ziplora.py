"""ZipLoRA: learned per-column merger coefficients (two LoRAs)."""

import torch

import loramerge.strategies as st
from loramerge.strategies import ZipLoraParams
from loramerge.strategies.ziplora import ziplora_coefficients

from .conftest import gen, lowrank


def zip_(deltas, weights, params=None, seed=0):
    return st.get("ziplora")(deltas, weights, params, generator=gen(seed))


def disjoint_pair():
    a, b = torch.zeros(24, 16), torch.zeros(24, 16)
    a[:, :8] = lowrank(24, 8, 3, seed=1)
    b[:, 8:] = lowrank(24, 8, 3, seed=2)
    return a, b


def test_loras_on_disjoint_inputs_merge_to_their_sum():
    a, b = disjoint_pair()
    torch.testing.assert_close(zip_([a, b], [2.0, 1.0]), 2 * a + b, atol=1e-5, rtol=1e-4)


def test_identity_probe_pulls_towards_the_average():
    a, b = disjoint_pair()
    b = b * (a.norm() / b.norm())  # equal energies → m = 1/2 on each LoRA's columns
    out = zip_([a, b], [1.0, 1.0], ZipLoraParams(probe="identity", similarity_weight=0.0))
    torch.testing.assert_close(out, (a + b) / 2, atol=1e-3, rtol=1e-3)


def test_calibration_activations_pick_each_loras_columns():
    a, b = torch.randn(12, 10, generator=gen(1)), torch.randn(12, 10, generator=gen(2))
    x1, x2 = torch.zeros(32, 10), torch.zeros(32, 10)
    x1[:, :5] = torch.randn(32, 5, generator=gen(3))
    x2[:, 5:] = torch.randn(32, 5, generator=gen(4))
    p = ZipLoraParams(calibration=(x1, x2), similarity_weight=0.0, steps=400)
    expected = torch.cat([a[:, :5], b[:, 5:]], dim=1)  # only this reproduces a on x1 and b on x2
    torch.testing.assert_close(zip_([a, b], [1.0, 1.0], p), expected, atol=2e-3, rtol=2e-3)


def test_aligned_columns_are_zipped_apart():
    a, b = disjoint_pair()
    b[:, 0] = 0.5 * a[:, 0]  # column 0 fully aligned, a stronger
    m_free = ziplora_coefficients([a, b], [1, 1], ZipLoraParams(similarity_weight=0.0), generator=gen())
    m_pen = ziplora_coefficients([a, b], [1, 1], ZipLoraParams(similarity_weight=5.0), generator=gen())
    overlap = lambda m: float((m[0][0] * m[1][0]).abs())  # noqa: E731
    assert overlap(m_pen) < 0.5 * overlap(m_free)
    assert abs(float(m_pen[0][0])) > abs(float(m_pen[1][0]))  # the stronger LoRA keeps the column


def test_identical_loras_stay_close_to_the_input():
    x = lowrank(20, 14, 3, seed=5)
    out = zip_([x, x], [1.0, 1.0])
    retention = float((out * x).sum() / (x * x).sum())
    assert 0.8 < retention <= 1.05


def test_deterministic_and_shapes():
    a, b = lowrank(12, 18, 2, seed=1).reshape(12, 2, 3, 3), lowrank(12, 18, 2, seed=2).reshape(12, 2, 3, 3)
    assert torch.equal(zip_([a, b], [1, 1], seed=3), zip_([a, b], [1, 1], seed=3))
    assert zip_([a, b], [1, 1]).shape == (12, 2, 3, 3)
    v = torch.randn(9, generator=gen(1))
    assert zip_([v, torch.zeros(9)], [1, 1]).shape == (9,)


def test_sketched_rowspace_for_large_inputs():
    a, b = lowrank(48, 40, 3, seed=1), lowrank(48, 40, 3, seed=2)
    exact = zip_([a, b], [1, 1], ZipLoraParams(steps=50))
    sketched = zip_([a, b], [1, 1], ZipLoraParams(steps=50, probe_rank=8))  # 8 < 40: randomized basis
    torch.testing.assert_close(sketched, exact, atol=1e-4, rtol=1e-3)


def test_runs_under_inference_mode():
    a, b = disjoint_pair()
    with torch.inference_mode():
        out = zip_([a, b], [1.0, 1.0], ZipLoraParams(steps=5))
    assert torch.isfinite(out).all()
