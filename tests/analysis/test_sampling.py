"""Pass-1 sign statistics without element gathers: small groups exact, large groups on seeded
random grids whose estimates are unbiased and close to the exact values on SDXL shapes."""

import math
from itertools import combinations

import pytest
import torch

from loramerge.analysis import sampling
from loramerge.analysis.stats import DENSITY_RATIOS, group_stats
from loramerge.patches import Dense, LowRank
from tests.analysis.test_metrics import _exact_pair

SIGN_METRICS = ("conflict", "weighted_conflict", "conflict_strong", "expected_conflict", "excess_conflict")


def _correlated(out, inn, rank, n, seed, scale=0.7):
    """n LoRAs sharing half their directions (pairwise cosines about 0.25), LoRA-like magnitudes."""
    g = torch.Generator().manual_seed(seed)
    shared_up, shared_down = torch.randn(out, rank // 2, generator=g), torch.randn(rank // 2, inn, generator=g)
    return [LowRank(torch.cat([shared_up, torch.randn(out, rank - rank // 2, generator=g)], 1) * 0.01,
                    torch.cat([shared_down, torch.randn(rank - rank // 2, inn, generator=g)]) / inn ** 0.5,
                    scale * (k + 1), (out, inn)) for k in range(n)]


def _stats(patches, seed=0, **kw):
    return group_stats("k", tuple(range(len(patches))), patches, generator=torch.Generator().manual_seed(seed), **kw)


def _pooled_density(deltas, ratio):
    mags = torch.cat([d.flatten().double().abs() for d in deltas])
    return float((mags > ratio * mags.max()).double().mean())


def test_grids_only_above_the_exact_threshold():
    g = torch.Generator().manual_seed(0)
    assert sampling.plan_grids(80, 50, 1000, g) is None                       # 4 000 = EXACT_FACTOR·1000
    grids = sampling.plan_grids(81, 50, 1000, g)
    assert grids is not None and 1000 <= grids.size < 81 * 50
    assert grids.rows.max() < 81 and grids.cols.max() < 50
    assert sampling.plan_grids(5, 10**6, 1000, g).cols.shape[1] >= sampling.GRID_SIDE  # narrow matrices: wider grids


def test_grid_slots_use_every_index_equally_often():
    """Slots are permutations one after the other: each index fills ⌊count/n⌋ or ⌈count/n⌉ of them."""
    for n, count in [(7, 3), (7, 7), (640, 3136), (1280, 200)]:
        counts = torch.bincount(sampling._slots(n, count, torch.Generator().manual_seed(n)), minlength=n)
        assert counts.sum() == count and counts.max() - counts.min() <= 1


def test_grid_design_has_uniform_expected_multiplicity():
    """Unbiasedness: over many seeded designs every entry is read equally often on average."""
    rows, cols, size = 48, 40, 200
    hits = torch.zeros(rows, cols)
    designs = 300
    for seed in range(designs):
        grids = sampling.plan_grids(rows, cols, size, torch.Generator().manual_seed(seed))
        for r, c in zip(grids.rows, grids.cols):
            hits.index_put_((r[:, None].expand(-1, c.numel()), c[None, :].expand(r.numel(), -1)),
                            torch.ones(r.numel(), c.numel()), accumulate=True)
    expected = designs * grids.size / (rows * cols)
    assert hits.mean() == pytest.approx(expected)
    assert float((hits - expected).abs().max()) < 0.3 * expected  # ~4.5 standard deviations


@pytest.mark.parametrize("dense", [False, True])
def test_grid_blocks_are_the_entries_of_the_delta(dense):
    p = _correlated(300, 70, 6, 1, 3)[0]
    patch = Dense(p.dense()) if dense else p
    grids = sampling.plan_grids(300, 70, 500, torch.Generator().manual_seed(1))
    sample = sampling.read_sample([patch], 300, 70, grids)
    full = p.dense()
    want = torch.stack([full[r][:, c] for r, c in zip(grids.rows, grids.cols)]).flatten()
    assert not sample.exact and sample.size == grids.size
    torch.testing.assert_close(sample.values[0, :sample.size], want, rtol=1e-5, atol=1e-8)
    assert (sample.values[0, sample.size:] == 0).all() and sample.values.shape[1] % sample.chunk == 0


@pytest.mark.parametrize("n", [2, 4])
def test_groups_up_to_the_threshold_are_exact(n):
    """numel ≤ EXACT_FACTOR·sample_size: every pair's sign metrics and the densities equal the dense reference."""
    patches = _correlated(60, 50, 4, n, 5)  # 3 000 entries: above sample_size, below the threshold
    s = _stats(patches, sample_size=1000)
    assert [p.sampled for p in s.pairs] == [60 * 50] * len(s.pairs)
    for p, (i, j) in zip(s.pairs, combinations(range(n), 2)):
        assert (p.i, p.j) == (i, j)
        ref = _exact_pair(patches[i].dense(), patches[j].dense())
        for name, value in ref.items():
            assert getattr(p, name) == pytest.approx(value, rel=1e-5, abs=1e-7), (i, j, name)
    for r in DENSITY_RATIOS:
        assert s.density_at[r] == pytest.approx(_pooled_density([p.dense() for p in patches], r), abs=1e-9)


@pytest.mark.parametrize("shape, rank, n", [((640, 640), 16, 3), ((1280, 1280), 32, 2), ((10240, 1280), 32, 2),
                                            ((1280, 2048), 16, 2)])
def test_sampled_sign_metrics_within_001_of_exact_on_sdxl_shapes(monkeypatch, shape, rank, n):
    patches = _correlated(*shape, rank, n, 11)
    monkeypatch.setattr(sampling, "EXACT_FACTOR", 10**9)
    exact = _stats(patches)
    monkeypatch.setattr(sampling, "EXACT_FACTOR", 1)  # grids on every shape, 640×640 included
    sampled = _stats(patches, seed=3)
    numel = shape[0] * shape[1]
    assert exact.pairs[0].sampled == numel and 100_000 <= sampled.pairs[0].sampled < 110_000
    assert sampled.norms2 == exact.norms2
    for pe, ps in zip(exact.pairs, sampled.pairs):
        assert 0.1 < pe.cosine < 0.9  # correlated pairs, not a trivial case
        assert (ps.dot, ps.cosine, ps.overlap) == (pe.dot, pe.cosine, pe.overlap)
        for name in SIGN_METRICS:
            assert abs(getattr(ps, name) - getattr(pe, name)) < 0.01, name
    # density_at is not compared: its threshold is relative to the *sample's* largest magnitude, which
    # understates the true maximum on large groups (by design, as with independent positions before)


def test_same_seed_same_statistics_other_seed_other_sample():
    patches = _correlated(1280, 1280, 8, 2, 2)
    a, b, c = _stats(patches, seed=4), _stats(patches, seed=4), _stats(patches, seed=5)
    assert a == b
    assert a.pairs[0].conflict != c.pairs[0].conflict


def test_signs_false_keeps_the_exact_measures_only():
    patches = _correlated(200, 120, 4, 3, 9)
    full, bare = _stats(patches), _stats(patches, signs=False)
    assert bare.norms2 == full.norms2 and bare.density_at == {}
    for pf, pb in zip(full.pairs, bare.pairs):
        assert (pb.i, pb.j, pb.dot, pb.cosine, pb.overlap) == (pf.i, pf.j, pf.dot, pf.cosine, pf.overlap)
        assert pb.sampled == 0 and pb.conflict == pb.weighted_conflict == pb.conflict_strong == pb.excess_conflict == 0
        assert pb.cosine_strong == pb.cosine
        assert pb.expected_conflict == pytest.approx(math.acos(pb.cosine) / math.pi)


def test_zero_delta_in_a_group():
    a = _correlated(64, 48, 4, 1, 1)[0]
    zero = LowRank(torch.zeros(64, 2), torch.zeros(2, 48), 1.0, (64, 48))
    s = _stats([a, zero])
    (p,) = s.pairs
    assert s.norms2[1] == 0 and p.cosine == 0 and p.conflict == 0 and p.conflict_strong == 0
    assert all(math.isfinite(getattr(p, name)) for name in SIGN_METRICS)
