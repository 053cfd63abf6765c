"""Merges of the real-library fixtures: pass-1 metrics from factors equal those from materialised
deltas, linear merges reproduce Σ w_i ΔW_i exactly, every architecture merges deterministically."""

import pytest
import torch

from loramerge import architectures as A
from loramerge.analysis.stats import group_stats
from loramerge.api import merge
from loramerge.formats.align import align, load_group
from loramerge.formats.reader import AdapterFile
from loramerge.patches import Dense, LowRank
from tests.formats.test_fixture_truth import canonical

PAIRS = [("sdxl_peft_diffusers", "sdxl_lycoris_locon"), ("flux_peft_diffusers", "lycoris_wrapper"),
         ("wan_peft_diffusers", "wan_i2v_peft_rslora_diffusers"), ("sdxl_lycoris_tucker", "sdxl_lycoris_loha")]


def _aligned(fx):
    table = A.get_table(fx.architecture)
    return align(AdapterFile(fx.path), table, A.placer(table.name), strict=True), table


@pytest.mark.parametrize("a, b", PAIRS)
def test_pass1_from_factors_equals_materialised(real_fixtures, a, b):
    (xa, table), (xb, _) = _aligned(real_fixtures[a]), _aligned(real_fixtures[b])
    shared = sorted(set(xa.groups) & set(xb.groups))
    assert len(shared) >= 5
    lowrank_seen = False
    for key in shared[:: max(1, len(shared) // 16)]:  # ~16 groups spread over the model
        pa, pb = load_group(xa, table, key), load_group(xb, table, key)
        if pa.dense().dim() == 1:
            continue
        lowrank_seen |= isinstance(pa, LowRank) and isinstance(pb, LowRank)
        fast = group_stats(key, (0, 1), [pa, pb], generator=torch.Generator().manual_seed(1))
        slow = group_stats(key, (0, 1), [Dense(pa.dense()), Dense(pb.dense())], generator=torch.Generator().manual_seed(1))
        for x, y in zip(fast.norms2, slow.norms2):
            assert x == pytest.approx(y, rel=1e-5)
        (pf,), (ps,) = fast.pairs, slow.pairs
        assert pf.dot == pytest.approx(ps.dot, rel=1e-5, abs=1e-9 * (fast.norms2[0] * fast.norms2[1]) ** 0.5)
        assert pf.cosine == pytest.approx(ps.cosine, rel=1e-5, abs=1e-7)
        if isinstance(pa, LowRank) and isinstance(pb, LowRank):
            assert pf.overlap == pytest.approx(ps.overlap, rel=1e-5, abs=1e-6)
        for name in ("conflict", "conflict_strong", "excess_conflict"):
            assert getattr(pf, name) == pytest.approx(getattr(ps, name), abs=1e-6), name
    assert lowrank_seen or "loha" in b


def test_linear_merge_of_fixtures_reproduces_weighted_sum(real_fixtures, tmp_path):
    fa, fb = real_fixtures["sdxl_peft_diffusers"], real_fixtures["sdxl_lycoris_locon"]
    res = merge([f"{fa.path}:0.8", f"{fb.path}:0.5"], mode="weighted_sum", auto_strength=False, dtype="float32",
                output=tmp_path / "m.safetensors")
    table = A.get_table("sdxl")
    ta = {canonical(table, k): v for k, v in fa.truth.items()}
    tb = {canonical(table, k): v for k, v in fb.truth.items()}
    assert res.inputs.architecture == "sdxl"
    assert any(k.startswith("te1.") for k in ta) and any(k.startswith("te2.") for k in ta)
    for g in res.groups:
        want = 0.8 * ta[g.key] if g.key in ta else 0
        want = want + (0.5 * tb[g.key] if g.key in tb else 0)
        got = g.patch.dense().reshape(want.shape)
        assert g.exact and float((got - want).norm() / want.norm()) < 1e-5, g.key


@pytest.mark.parametrize("a, b", PAIRS)
def test_auto_merge_is_readable(real_fixtures, tmp_path, a, b):
    # (determinism of this very option set is pinned byte for byte, across processes and thread
    # counts, by test_golden_outputs' "dare_refine")
    pa, pb = real_fixtures[a].path, real_fixtures[b].path
    r1 = merge([pa, pb], output=tmp_path / "1.safetensors", seed=5, sparsify="dare_conflict", refine="refine",
          dtype="float32")
    back = AdapterFile(tmp_path / "1.safetensors")
    arch = real_fixtures[a].architecture
    assert A.detect([e.parsed.stem for e in back.entries.values()]).architecture == arch
    written = align(back, A.get_table(arch), A.placer(arch), strict=True)
    assert set(written.groups) == {g.key for g in r1.groups}
    for g in r1.groups[:30]:
        got = load_group(written, A.get_table(arch), g.key).dense()
        torch.testing.assert_close(got.reshape(g.patch.dense().shape), g.patch.dense(), rtol=1e-5, atol=1e-6)
    report = r1.report
    assert report.architecture == arch and set(report.strategy_counts) >= {"weighted_sum"}
    assert all(0 <= g.compression_error < 1 for g in report.groups if g.compression_error is not None)
