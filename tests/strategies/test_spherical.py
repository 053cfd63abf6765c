"""Hand-worked examples for SLERP (2-way, Karcher mean) and consensus."""

import math

import torch

import loramerge.strategies as st
from loramerge.strategies.spherical import karcher_coefficients, slerp_coefficients

from .conftest import gen

E = torch.eye(3)


def slerp(deltas, weights, params=None):
    return st.get("slerp")(deltas, weights, params, generator=gen())


def test_two_orthonormal_vectors_equal_weights():
    torch.testing.assert_close(slerp([E[0], E[1]], [1.0, 1.0]), (E[0] + E[1]) / math.sqrt(2))


def test_two_way_follows_the_weight_ratio():
    # t = 3/4 → angle 67.5° from e1; target norm (1·1 + 3·1)/4 = 1
    out = slerp([E[0], E[1]], [1.0, 3.0])
    angle = 0.75 * math.pi / 2
    torch.testing.assert_close(out, torch.tensor([math.cos(angle), math.sin(angle), 0.0]))


def test_rescaled_to_weighted_mean_norm():
    out = slerp([2 * E[0], E[1]], [1.0, 1.0])
    torch.testing.assert_close(out, 1.5 * (E[0] + E[1]) / math.sqrt(2))


def test_three_orthogonal_vectors_karcher_mean():
    ds = [2 * E[i] for i in range(3)]
    out = slerp(ds, [1.0, 1.0, 1.0])
    assert math.isclose(float(out.norm()), 2.0, rel_tol=1e-6)
    for d in ds:
        cos = float(torch.dot(out, d) / (out.norm() * d.norm()))
        assert math.isclose(cos, 1 / math.sqrt(3), rel_tol=1e-6)


def test_karcher_mean_on_a_circle_is_the_weighted_mean_angle():
    def at(deg):
        r = math.radians(deg)
        return torch.tensor([math.cos(r), math.sin(r), 0.0])

    out = slerp([at(0), at(60), at(120)], [1.0, 1.0, 2.0])  # (0 + 60 + 2·120) / 4 = 75°
    torch.testing.assert_close(out, at(75), atol=1e-6, rtol=1e-6)


def test_karcher_with_two_points_is_slerp():
    theta = 1.1
    gram = torch.tensor([[1.0, math.cos(theta)], [math.cos(theta), 1.0]], dtype=torch.float64)
    alpha = torch.tensor([1.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(karcher_coefficients(gram, alpha), slerp_coefficients(gram, alpha))


def test_negative_weight_flips_the_direction():
    torch.testing.assert_close(slerp([E[0], E[1]], [1.0, -1.0]), (E[0] - E[1]) / math.sqrt(2))


def test_parallel_inputs_use_linear_interpolation():
    out = slerp([E[0], 3 * E[0]], [1.0, 1.0])
    torch.testing.assert_close(out, 2 * E[0])


def test_antipodal_inputs_are_finite():
    out = slerp([E[0], -E[0]], [1.0, 1.0])
    assert torch.isfinite(out).all() and float(out.norm()) == 0.0
    out3 = slerp([E[0], -E[0], E[1]], [1.0, 1.0, 1.0])
    assert torch.isfinite(out3).all()


def test_zero_delta_takes_no_part_in_the_direction():
    out = slerp([E[0], torch.zeros(3)], [1.0, 1.0])
    torch.testing.assert_close(out, 0.5 * E[0])


def test_consensus_hand_worked():
    a, b = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0, -1.0, 3.0])
    # Σ w ΔW³ / Σ |w| ΔW² = [2/2, 7/5, 27/9], then rescaled to (‖a‖ + ‖b‖)/2
    raw = torch.tensor([1.0, 1.4, 3.0])
    expected = raw / raw.norm() * (math.sqrt(5) + math.sqrt(11)) / 2
    torch.testing.assert_close(st.get("consensus")([a, b], [1.0, 1.0], generator=gen()), expected)


def test_consensus_survives_tiny_and_huge_values():
    for scale in (1e-20, 1e15):
        a, b = torch.tensor([1.0, 2.0, 0.0]) * scale, torch.tensor([1.0, -1.0, 3.0]) * scale
        out = st.get("consensus")([a, b], [1.0, 1.0], generator=gen())
        assert torch.isfinite(out).all()
        raw = torch.tensor([1.0, 1.4, 3.0])
        torch.testing.assert_close(out / scale, raw / raw.norm() * (math.sqrt(5) + math.sqrt(11)) / 2)
