"""The `loramerge` command in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def cli(*args) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        COLUMNS="200",
    )
    return subprocess.run(
        [sys.executable, "-m", "loramerge.cli", *map(str, args)], capture_output=True, text=True, env=env
    )
