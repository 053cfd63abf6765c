"""Pass-1 metrics from factors equal those from materialised deltas; sampled sign metrics are close."""

import math

import pytest
import torch

from loramerge.analysis.metrics import inner, pair_stats, sample_entries, subspace_overlap
from loramerge.analysis.stats import block_of, group_stats
from loramerge.patches import Dense, LowRank


def _lowrank(out, inn, r, seed, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    return LowRank(torch.randn(out, r, generator=g), torch.randn(r, inn, generator=g), scale, (out, inn))


def _exact_pair(a, b):
    """Reference: every metric from the dense deltas, no sampling."""
    da, db = a.flatten().double(), b.flatten().double()
    both = (da != 0) & (db != 0)
    dis = torch.sign(da) != torch.sign(db)
    eps = 0.05 * max(da.pow(2).mean().sqrt(), db.pow(2).mean().sqrt())
    strong = (da.abs() > eps) & (db.abs() > eps)
    w = torch.minimum(da.abs(), db.abs())
    cs = float((da[strong] * db[strong]).sum() / (da[strong].norm() * db[strong].norm()))
    exp = math.acos(cs) / math.pi
    return dict(cosine=float(da @ db / (da.norm() * db.norm())), conflict=float((both & dis).sum() / both.sum()),
                weighted_conflict=float((w * (strong & dis)).sum() / (w * strong).sum()),
                conflict_strong=float((strong & dis).sum() / strong.sum()), expected_conflict=exp,
                excess_conflict=max(float((strong & dis).sum() / strong.sum()) - exp, 0.0))


@pytest.mark.parametrize("shape", [(16, 12), (40, 8)])
def test_inner_and_cosine_from_factors_are_exact(shape):
    a, b = _lowrank(*shape, 3, 1), _lowrank(*shape, 5, 2, scale=1.3)
    da = (a.up.double() @ a.down.double()) * a.scale
    db = (b.up.double() @ b.down.double()) * b.scale
    assert inner(a, b) == pytest.approx(float((da * db).sum()), rel=1e-10)
    assert inner(a, a) == pytest.approx(float(da.pow(2).sum()), rel=1e-10)
    assert inner(a, Dense(db.float())) == pytest.approx(float((da * db).sum()), rel=1e-5)
    assert inner(Dense(da.float()), Dense(db.float())) == pytest.approx(float((da * db).sum()), rel=1e-5)


def _positions(rows, cols, n, seed):
    """n uniform positions of a [rows, cols] matrix (with replacement), or all when rows·cols ≤ n."""
    if rows * cols <= n:
        flat = torch.arange(rows * cols)
    else:
        flat = torch.randint(0, rows * cols, (n,), generator=torch.Generator().manual_seed(seed))
    return flat // cols, flat % cols


def test_small_group_sign_metrics_are_exact():
    a, b = _lowrank(20, 10, 2, 3), _lowrank(20, 10, 2, 4)
    r, c = _positions(20, 10, 100_000, 0)
    assert r.numel() == 200
    stats = pair_stats(0, 1, a, b, inner(a, a), inner(b, b), sample_entries(a, r, c), sample_entries(b, r, c), 200)
    ref = _exact_pair(a.dense(), b.dense())
    for name, value in ref.items():
        assert getattr(stats, name) == pytest.approx(value, rel=1e-5, abs=1e-9), name


def test_sampled_sign_metrics_within_001_on_a_million_entries():
    g = torch.Generator().manual_seed(7)
    shared = torch.randn(1000, 4, generator=g)
    a = LowRank(torch.cat([shared, torch.randn(1000, 4, generator=g)], 1), torch.randn(8, 1000, generator=g), 1.0, (1000, 1000))
    b = LowRank(torch.cat([shared, torch.randn(1000, 4, generator=g)], 1), torch.cat([a.down[:4], torch.randn(4, 1000, generator=g)]), 1.0, (1000, 1000))
    r, c = _positions(1000, 1000, 100_000, 1)
    stats = pair_stats(0, 1, a, b, inner(a, a), inner(b, b), sample_entries(a, r, c), sample_entries(b, r, c), 10**6)
    ref = _exact_pair(a.dense(), b.dense())
    assert 0.2 < ref["cosine"] < 0.8  # a correlated pair, not a trivial case
    assert stats.cosine == pytest.approx(ref["cosine"], rel=1e-6)
    for name in ("conflict", "weighted_conflict", "conflict_strong", "expected_conflict", "excess_conflict"):
        assert abs(getattr(stats, name) - ref[name]) < 0.01, name


def test_subspace_overlap_extremes():
    e = torch.eye(6)
    a = LowRank(e[:, :2], e[:2], 1.0, (6, 6))
    b = LowRank(e[:, 2:4], e[2:4], 1.0, (6, 6))
    assert subspace_overlap(a, a) == pytest.approx(1.0)
    assert subspace_overlap(a, b) == pytest.approx(0.0)
    half = LowRank(e[:, 1:3], e[1:3], 1.0, (6, 6))
    assert subspace_overlap(a, half) == pytest.approx(0.5)
    assert subspace_overlap(Dense(a.dense()), a) == pytest.approx(1.0)


def test_group_stats_single_and_pair():
    a, b = _lowrank(8, 6, 2, 1), _lowrank(8, 6, 2, 2)
    one = group_stats("k", (0,), [a], generator=torch.Generator().manual_seed(0))
    assert one.n == 1 and one.pairs == () and one.norms2[0] == pytest.approx(float(a.dense().pow(2).sum()), rel=1e-6)
    two = group_stats("k", (3, 5), [a, a.scaled(-2.0)], generator=torch.Generator().manual_seed(0))
    assert (two.pairs[0].i, two.pairs[0].j) == (3, 5)
    assert two.cosine == pytest.approx(-1.0) and two.magnitude_ratio == pytest.approx(2.0)
    assert two.conflict == pytest.approx(1.0) and two.overlap == pytest.approx(1.0)


@pytest.mark.parametrize("key, block", [
    ("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q", "diffusion_model.input_blocks.4"),
    ("diffusion_model.double_blocks.12.img_attn.qkv#q", "diffusion_model.double_blocks.12"),
    ("te1.text_model.encoder.layers.7.mlp.fc1", "te1.text_model.encoder.layers.7"),
    ("diffusion_model.img_in", "diffusion_model"),
])
def test_block_of(key, block):
    assert block_of(key) == block


def test_block_of_underscored_unknown_names():
    assert block_of("diffusion_model.blocks_3_attn_q") == "diffusion_model.blocks_3"
    assert block_of("diffusion_model.layers_12_mlp") == "diffusion_model.layers_12"


def test_joint_gram_hand_worked():
    """ΔW1 = e1·e1ᵀ, ΔW2 = 2·e1·e2ᵀ: orthogonal (⟨,⟩ = 0), same column space, orthogonal row spaces."""
    from loramerge.analysis.gram import joint_gram

    e1, e2 = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    a, b = LowRank(e1, e1.T, 1.0, (2, 2)), LowRank(e1, e2.T, 2.0, (2, 2))
    g = joint_gram([a, b])
    assert g.inner(0, 0) == 1.0 and g.inner(1, 1) == 4.0 and g.inner(0, 1) == 0.0
    assert g.overlap(0, 1) == pytest.approx(0.5)  # left 1, right 0
    assert g.matrix().tolist() == [[1.0, 0.0], [0.0, 4.0]]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_joint_gram_equals_materialised_products_and_qr_overlaps(n):
    from loramerge.analysis import gram as G

    g = torch.Generator().manual_seed(n)
    rows = G.CHUNK * 2 + 37  # several row chunks, a ragged last one
    patches = [LowRank(torch.randn(rows, 2 + k, generator=g), torch.randn(2 + k, 9, generator=g), 0.5 + k, (rows, 9))
               for k in range(n)]
    # a rank-deficient factor: a repeated column must not count as a direction of its own
    p0 = patches[0]
    patches[0] = LowRank(torch.cat([p0.up, p0.up[:, :1]], 1), torch.cat([p0.down, p0.down[:1]], 0), p0.scale, p0.shape)
    jg = G.joint_gram(patches)
    dense = [(p.up.double() * p.scale) @ p.down.double() for p in patches]  # float64 reference
    for i in range(n):
        wl, wr = jg.whitening(i)
        q = (patches[i].up.double() * patches[i].scale) @ wl
        assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-8)
        assert wl.shape[1] == patches[i].rank - (1 if i == 0 else 0)
        for j in range(n):
            assert jg.inner(i, j) == pytest.approx(float((dense[i] * dense[j]).sum()), rel=1e-9, abs=1e-9)
            if i != j:
                assert jg.overlap(i, j) == pytest.approx(subspace_overlap(patches[i], patches[j]), rel=1e-6, abs=1e-9)


def test_group_stats_same_for_lowrank_and_materialised_triples():
    g = torch.Generator().manual_seed(11)
    shared = torch.randn(30, 2, generator=g)
    patches = [LowRank(torch.cat([shared, torch.randn(30, 1, generator=g)], 1), torch.randn(3, 20, generator=g),
                       0.3 * (k + 1), (30, 20)) for k in range(3)]
    fast = group_stats("k", (0, 1, 2), patches, generator=torch.Generator().manual_seed(1))
    slow = group_stats("k", (0, 1, 2), [Dense(p.dense()) for p in patches], generator=torch.Generator().manual_seed(1))
    assert fast.norms2 == pytest.approx(slow.norms2, rel=1e-5)
    assert len(fast.pairs) == 3
    for pf, ps in zip(fast.pairs, slow.pairs):
        assert (pf.i, pf.j) == (ps.i, ps.j)
        for name in ("dot", "cosine", "overlap", "conflict", "weighted_conflict", "conflict_strong", "excess_conflict"):
            assert getattr(pf, name) == pytest.approx(getattr(ps, name), rel=1e-5, abs=1e-6), name
    assert fast.density_at == pytest.approx(slow.density_at, abs=1e-9)
