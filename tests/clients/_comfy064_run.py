"""Running LoRA files through ComfyUI 0.3.64's own loader in its subprocess worker (``_comfy064_worker``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMFY064 = REPO.parent / "shared" / "clients" / "comfyui-0.3.64"
WORKER_TIMEOUT_S = 600


def comfy064_source() -> Path:
    if not (COMFY064 / "comfy" / "lora.py").is_file():
        pytest.skip(f"ComfyUI 0.3.64 is not at {COMFY064} (../shared/clients/comfyui-0.3.64): its cells are unmeasured")
    return COMFY064


def run_cells(source: Path, cells: list[dict], work: Path) -> dict:
    """The worker's result for `cells` (``{"arch", "format", "lora", "truth"}`` each): ``{"cells": [...]}``,
    or ``{"import_error": ...}`` when that ComfyUI does not import here."""
    root = work / "comfyui-0.3.64"  # ../shared is read-only in CI; Python and ComfyUI write next to the code
    if not root.exists():
        shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__"))
    job, out = work / "job.json", work / "result.json"
    job.write_text(json.dumps({"comfy_root": str(root), "out": str(out), "cells": cells}))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.clients._comfy064_worker", str(job)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )
    if not out.exists():
        raise AssertionError(f"ComfyUI 0.3.64 worker wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())
