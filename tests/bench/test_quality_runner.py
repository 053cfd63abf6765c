"""`--report-only` re-renders the run of the same configuration, never an experiment's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.quality.config import FULL, SMOKE
from bench.quality.runner import last_run_path


def test_each_configuration_keeps_its_own_last_run():
    cache = Path("/cache")
    full = last_run_path(FULL, cache)
    assert full == last_run_path(replace(FULL), cache) and full.parent == cache and full.suffix == ".pkl"
    experiments = [replace(FULL, methods=("auto", "additive")), replace(FULL, text=None),
                   replace(FULL, images=False), SMOKE]
    paths = {last_run_path(c, cache) for c in experiments}
    assert len(paths) == len(experiments) and full not in paths
    assert last_run_path(SMOKE, cache).name.startswith("last_run_smoke_")
