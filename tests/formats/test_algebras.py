"""Hand-worked ΔW for every adapter kind, and the errors for tensors that do not fit."""

import pytest
import torch

from loramerge.formats import algebras
from loramerge.patches import AdapterKind, Dense, LowRank


def test_lora_linear_hand_worked():
    down = torch.tensor([[1.0, 2.0, 0.0]])          # r=1, in=3
    up = torch.tensor([[1.0], [-1.0]])               # out=2
    patch = algebras.compute(AdapterKind.LORA, {"down": down, "up": up}, alpha=0.5)["weight"]
    assert isinstance(patch, LowRank) and patch.shape == (2, 3)
    assert torch.equal(patch.dense(), torch.tensor([[0.5, 1.0, 0.0], [-0.5, -1.0, 0.0]]))


def test_lora_without_alpha_has_scale_one():
    down, up = torch.eye(2), 3 * torch.eye(2)
    assert torch.equal(algebras.compute(AdapterKind.LORA, {"down": down, "up": up}, None)["weight"].dense(), 3 * torch.eye(2))


def test_conv_lora_and_tucker_fold_exactly():
    g = torch.Generator().manual_seed(0)
    down = torch.randn(2, 3, 1, 1, generator=g)
    mid = torch.randn(2, 2, 3, 3, generator=g)
    up = torch.randn(4, 2, 1, 1, generator=g)
    patch = algebras.compute(AdapterKind.LORA, {"down": down, "up": up, "mid": mid}, alpha=1.0)["weight"]
    # reference: compose the three convolutions on an impulse
    ref = torch.einsum("oa,abhw,bi->oihw", up[:, :, 0, 0], mid, down[:, :, 0, 0]) * 0.5
    assert patch.shape == (4, 3, 3, 3)
    torch.testing.assert_close(patch.dense(), ref)
    x = torch.randn(1, 3, 5, 5, generator=g)
    y = torch.nn.functional.conv2d(torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down), mid, padding=1), up) * 0.5
    torch.testing.assert_close(torch.nn.functional.conv2d(x, patch.dense(), padding=1), y, rtol=1e-5, atol=1e-5)


def test_loha_hand_worked():
    t = {"hada_w1_a": torch.tensor([[1.0], [2.0]]), "hada_w1_b": torch.tensor([[1.0, 1.0]]),
         "hada_w2_a": torch.tensor([[3.0], [1.0]]), "hada_w2_b": torch.tensor([[1.0, -1.0]])}
    patch = algebras.compute(AdapterKind.LOHA, t, alpha=2.0)["weight"]   # r = 1 -> scale 2
    assert torch.equal(patch.dense(), torch.tensor([[6.0, -6.0], [4.0, -4.0]]))


def test_lokr_full_factors_scale_one_and_kron():
    w1 = torch.tensor([[1.0, 2.0]])
    w2 = torch.tensor([[1.0], [10.0]])
    patch = algebras.compute(AdapterKind.LOKR, {"lokr_w1": w1, "lokr_w2": w2}, alpha=7.0)["weight"]
    assert torch.equal(patch.dense(), torch.tensor([[1.0, 2.0], [10.0, 20.0]]))


def test_lokr_decomposed_w2_uses_its_rank():
    w1 = torch.tensor([[2.0]])
    a, b = torch.tensor([[1.0], [1.0]]), torch.tensor([[1.0, 3.0]])  # r = 1
    patch = algebras.compute(AdapterKind.LOKR, {"lokr_w1": w1, "lokr_w2_a": a, "lokr_w2_b": b}, alpha=0.5)["weight"]
    assert torch.equal(patch.dense(), 0.5 * 2 * torch.tensor([[1.0, 3.0], [1.0, 3.0]]))


def test_lokr_conv_w2_unsqueezes_w1():
    w1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    w2 = torch.ones(1, 1, 3, 3)
    patch = algebras.compute(AdapterKind.LOKR, {"lokr_w1": w1, "lokr_w2": w2}, None)["weight"]
    assert patch.dense().shape == (2, 2, 3, 3)
    assert float(patch.dense()[1, 1].sum()) == 18.0 and float(patch.dense()[0, 1].sum()) == 0.0


def test_full_and_norm_give_weight_and_bias():
    full = algebras.compute(AdapterKind.FULL, {"diff": torch.ones(2, 2), "diff_b": torch.ones(2)}, None)
    assert set(full) == {"weight", "bias"} and isinstance(full["weight"], Dense)
    norm = algebras.compute(AdapterKind.NORM, {"w_norm": torch.ones(3), "b_norm": torch.zeros(3)}, None)
    assert torch.equal(norm["weight"].dense(), torch.ones(3))


def test_dora_on_output_rows_matches_definition():
    base = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    delta = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    m = torch.tensor([[10.0], [2.0]])
    got = algebras.apply_dora(delta, base, m)
    merged = base + delta
    want = merged * (m / merged.norm(dim=1, keepdim=True)) - base
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("roles, message", [
    ({"down"}, "missing"),
    ({"down", "up", "hada_w1_a"}, "do not form"),
    ({"alpha"}, "do not form"),
])
def test_kind_of_rejects_incomplete_or_mixed(roles, message):
    with pytest.raises(algebras.AlgebraError, match=message):
        algebras.kind_of(roles)


def test_lora_shapes_that_do_not_fit():
    with pytest.raises(algebras.AlgebraError, match="does not fit"):
        algebras.compute(AdapterKind.LORA, {"down": torch.ones(2, 3), "up": torch.ones(4, 3)}, None)
