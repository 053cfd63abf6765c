"""The retention floor of the measured rules (engine.retention_floor_scale): auto's averaged groups
of LoRAs that compose are scaled up until every LoRA keeps ≥ 0.5 of itself, never past its own
strength, never in a group with an opposing pair, never under a forced mode or the paper rules."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from loramerge.api import merge
from loramerge.engine import retention_floor_scale
from loramerge.presets import MERGE_RETENTION_FLOOR

OPPOSING = -0.05


def scale(gram, a, w=None):
    g = torch.tensor(gram, dtype=torch.float64)
    return retention_floor_scale(g, a, w or [1.0] * len(a), MERGE_RETENTION_FLOOR, OPPOSING)


def test_an_average_that_keeps_half_of_each_is_left_alone():
    # ret_k = (Σ_j a_j G_jk) / (w_k G_kk): orthogonal, norms² 1 and 9, a = ½, ½ -> 0.5 and 0.5
    assert scale([[1, 0], [0, 9]], [0.5, 0.5]) == 1.0


def test_four_equal_orthogonal_loras_at_04_are_scaled_to_05():
    # a SLERP of four equal orthogonal LoRAs keeps about 1/√4; here 0.4 each: c = 0.5 / 0.4
    assert scale([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], [0.4] * 4) == pytest.approx(1.25)


def test_the_weakest_lora_sets_the_scale_and_the_strongest_caps_it():
    eye = torch.eye(4).tolist()
    # rets 0.6, 0.3, 0.3, 0.3: c = min(0.5/0.3, 1/0.6) = 5/3 (both bounds equal)
    assert scale(eye, [0.6, 0.3, 0.3, 0.3]) == pytest.approx(5 / 3)
    # rets 0.9, 0.3, ...: the cap 1/0.9 binds, so the first LoRA ends at exactly its strength
    assert scale(eye, [0.9, 0.3, 0.3, 0.3]) == pytest.approx(1 / 0.9)


def test_retention_is_against_the_user_strength():
    # weight 2 on the second LoRA: ret = a·G/(w·G) = 0.6/2 = 0.3 -> c = 0.5/0.3, capped by 1/0.4 = 2.5
    assert scale([[1, 0], [0, 1]], [0.4, 0.6], [1.0, 2.0]) == pytest.approx(0.5 / 0.3)


def test_opposing_pairs_cancelled_and_absent_loras_leave_the_group_alone():
    # cos = −0.5 < −0.05: the average of opposing LoRAs is not scaled up (it would restore only the stronger)
    assert scale([[1, -0.5], [-0.5, 1]], [0.2, 0.2]) == 1.0
    # just inside the dead band (cos −0.04) the pair composes: ret = 0.2·(1 − 0.04) = 0.192 -> 0.5 / 0.192
    assert scale([[1, -0.04], [-0.04, 1]], [0.2, 0.2]) == pytest.approx(0.5 / 0.192)
    # a LoRA the average cancels (ret ≤ 0) cannot be brought back by a scale
    assert scale([[1, 0], [0, 1]], [0.3, -0.1]) == 1.0
    # zero weight or zero norm: not counted (the other LoRA alone sets the scale)
    assert scale([[1, 0], [0, 1]], [0.25, 0.4], [1.0, 0.0]) == pytest.approx(2.0)
    assert scale([[1, 0], [0, 0]], [0.25, 0.4]) == pytest.approx(2.0)


def _four_text_encoder_loras(tmp_path):
    """Four LoRAs on one CLIP text-encoder module, on orthogonal rank-2 subspaces (exact cosines 0), norms within 30 % (SLERP then keeps < ½ of each)."""
    eye = torch.eye(8)
    paths = []
    for k in range(4):
        rows = slice(2 * k, 2 * k + 2)
        t = {
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": eye[rows].contiguous(),
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (eye[:, rows] * (1 + 0.1 * k)).contiguous(),
        }
        paths.append(tmp_path / f"t{k}.safetensors")
        save_file(t, paths[-1])
    return paths


def test_auto_keeps_half_of_every_composing_lora_and_says_so(tmp_path):
    paths = _four_text_encoder_loras(tmp_path)
    res = merge(paths, arch="unknown")
    try:
        (g,) = res.report.groups
        assert g.strategy in ("slerp", "weighted_average")
        # the floor, with the plan's 0.001 to spare for the output dtype's rounding
        assert min(g.retention.values()) == pytest.approx(MERGE_RETENTION_FLOOR + 1e-3, abs=1e-5)
        assert max(g.retention.values()) <= 1.0 + 1e-9
        assert "retention floor" in g.reason
        assert all(lo.retention >= MERGE_RETENTION_FLOOR - 1e-5 for lo in res.report.loras)
        assert not any("retention" in w for w in res.report.warnings)
    finally:
        res.close()
    for options in ({"mode": "slerp"}, {"rules": "paper"}):  # a forced average, the paper's tree: untouched
        plain = merge(paths, arch="unknown", **options)
        try:
            (g,) = plain.report.groups
            assert "retention floor" not in g.reason and min(g.retention.values()) < MERGE_RETENTION_FLOOR
        finally:
            plain.close()
    assert math.isclose(MERGE_RETENTION_FLOOR, 0.5)


def test_groups_that_oppose_keep_their_average_and_the_others_make_up_the_whole_merge(tmp_path):
    """Module fc1: four orthogonal LoRAs (they compose); fc2: LoRAs 0 and 1 weakly opposed (cos −0.1,
    in the dead band: plain average, 1/4 of each). Over the whole merge every LoRA keeps ≥ 0.5: the
    plan lifts fc1's target above 0.5 to make up for fc2, which is left as its average."""
    eye = torch.eye(8)
    fc1, fc2 = "lora_te_text_model_encoder_layers_0_mlp_fc1", "lora_te_text_model_encoder_layers_0_mlp_fc2"
    u1 = -0.1 * eye[:, 0] + math.sqrt(1 - 0.01) * eye[:, 1]  # unit, cos −0.1 with e0
    ups = [eye[:, 0], u1, eye[:, 2], eye[:, 3]]
    downs = [eye[0], eye[0], eye[2], eye[3]]
    paths = []
    for k in range(4):
        rows = slice(2 * k, 2 * k + 2)
        t = {
            f"{fc1}.lora_down.weight": eye[rows].contiguous(),
            f"{fc1}.lora_up.weight": eye[:, rows].contiguous(),
            f"{fc2}.lora_down.weight": downs[k][None].clone(),
            f"{fc2}.lora_up.weight": ups[k][:, None].clone(),
        }
        paths.append(tmp_path / f"w{k}.safetensors")
        save_file(t, paths[-1])
    res = merge(paths, arch="unknown")
    try:
        rows = {g.key.rsplit("_", 1)[-1]: g for g in res.report.groups}
        assert rows["fc2"].strategy == "weighted_average" and "retention floor" not in rows["fc2"].reason
        assert min(rows["fc2"].retention.values()) < 0.3  # its plain average: ~1/4 of each
        assert "over the whole merge" in rows["fc1"].reason
        # fc1 (energy 2 per LoRA) lifted so that w0, w1 (fc2: ¼·(1 − 0.1) = 0.225, energy 1) reach 0.501:
        # (2t + 0.225) / 3 = 0.501  ->  t = 0.639
        assert min(rows["fc1"].retention.values()) == pytest.approx(0.639, abs=1e-3)
        assert min(lo.retention for lo in res.report.loras) >= MERGE_RETENTION_FLOOR
        assert min(lo.retention for lo in res.report.loras) < MERGE_RETENTION_FLOOR + 0.01  # no more than needed
        assert not any("over the whole merge" in w for w in res.report.warnings)
    finally:
        res.close()
