"""Session fixtures shared by every test folder (the real-library LoRA files and tiny base models)."""

import os

from tests.fixtures.conftest_plugin import base_models, real_fixtures  # noqa: F401


def pytest_configure(config):
    # Under pytest-xdist, N workers each with torch's default of one thread per core oversubscribe
    # the CPUs; OpenMP's spin-waiting then makes the many small ops of a merge up to 30x slower
    # (seen: 8 s alone, 240 s beside another worker). Share the cores between the workers.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
