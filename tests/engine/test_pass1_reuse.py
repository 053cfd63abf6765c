"""Pass 2 takes the inner products pass 1 measured instead of recomputing them: the numbers must be
the very ones it would compute (low-rank and dense groups)."""

import torch

from loramerge.analysis.stats import group_stats
from loramerge.engine import InputGram
from loramerge.patches import Dense, LowRank


def _lowrank(seed, rank, out=24, inp=40, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return LowRank(torch.randn(out, rank, generator=g), torch.randn(rank, inp, generator=g), scale, (out, inp))


def test_low_rank_group_matrix_is_the_one_pass2_computes():
    patches = [_lowrank(1, 4), _lowrank(2, 8, scale=2.0), _lowrank(3, 2)]
    s = group_stats("k", (0, 2, 5), patches, generator=torch.Generator().manual_seed(0), signs=False)
    assert torch.equal(s.inner_matrix(), InputGram(patches).matrix)
    # and it is the Gram matrix: ⟨ΔW_i, ΔW_j⟩ of the dense products
    dense = torch.stack([((p.up.double() * p.scale) @ p.down.double()).reshape(-1) for p in patches])
    assert torch.allclose(s.inner_matrix(), dense @ dense.T, rtol=1e-10)


def test_dense_group_matrix_is_the_one_pass2_computes():
    g = torch.Generator().manual_seed(4)
    patches = [Dense(torch.randn(6, 5, generator=g)), _lowrank(5, 3, out=6, inp=5)]
    s = group_stats("k", (1, 3), patches, generator=torch.Generator().manual_seed(0), signs=False)
    assert torch.equal(s.inner_matrix(), InputGram(patches).matrix)


def test_single_lora_group():
    p = _lowrank(6, 4)
    s = group_stats("k", (2,), [p], generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.inner_matrix(), InputGram([p]).matrix)
