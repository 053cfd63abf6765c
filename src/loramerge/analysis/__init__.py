"""Pass-1 analysis: exact pair statistics from the factors and sampled sign metrics (METHOD.md §2)."""

from .metrics import PairStats, pair_stats, sample_entries
from .stats import GroupStats, group_stats

__all__ = ["PairStats", "pair_stats", "sample_entries", "GroupStats", "group_stats"]
