"""ComfyUI 0.3.64 from the test process: where its copy is, whether it is usable, and one
subprocess (``tests.clients._comfy064_worker``) that runs every 0.3.64 check of the session.

The copy lives in ``../shared/clients/comfyui-0.3.64`` (read-only in CI; ``LORAMERGE_COMFYUI_0364``
names another folder). It is copied to a temporary folder before the worker imports it (Python and
ComfyUI write next to their code), and a clone-shaped copy of this repository is put under its
``custom_nodes/`` for the node-pack check. A missing copy, or one that does not import, makes the
checks skip with a reason naming the folder; any other failure fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_FOLDER = "LORAMERGE_COMFYUI_0364"
DEFAULT_FOLDER = REPO.parent / "shared" / "clients" / "comfyui-0.3.64"
WORKER_TIMEOUT_S = 600
# What a usable copy has: the LoRA code and the custom-node loader.
REQUIRED = ("comfy/lora.py", "comfy/options.py", "nodes.py", "comfyui_version.py")


def source_folder() -> Path:
    return Path(os.environ.get(ENV_FOLDER) or DEFAULT_FOLDER)


def missing_reason(folder: Path) -> str | None:
    """Why `folder` is not a ComfyUI 0.3.64 copy (a skip reason naming it), or None."""
    absent = [name for name in REQUIRED if not (folder / name).is_file()]
    if not absent:
        return None
    return (
        f"ComfyUI 0.3.64 is not at {folder} (missing {', '.join(absent)}; copy ComfyUI v0.3.64 there or "
        f"set {ENV_FOLDER}): its checks are not run"
    )


def clone_repository(dest: Path) -> None:
    """The checkout's files as ``git clone`` would give them (tracked and new, not ignored ones)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)


def run_worker(folder: Path, job: dict, work: Path) -> dict:
    """Copy `folder` (and this repository into its ``custom_nodes/loramerge``) under `work`, run the
    worker on `job` there and return its JSON. Skips, naming `folder`, if the copy is missing or
    does not import."""
    reason = missing_reason(folder)
    if reason:
        pytest.skip(reason)
    root = work / "comfyui-0.3.64"
    shutil.copytree(folder, root, ignore=shutil.ignore_patterns("__pycache__", "custom_nodes"))
    clone_repository(root / "custom_nodes" / "loramerge")
    out = work / "result.json"
    path = work / "job.json"
    path.write_text(json.dumps({**job, "comfy_root": str(root), "out": str(out)}))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.clients._comfy064_worker", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )
    if not out.exists():
        raise AssertionError(f"ComfyUI 0.3.64 worker wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    if "import_error" in result:
        pytest.skip(f"ComfyUI 0.3.64 at {folder} does not import: {result['import_error'][-300:]}")
    return result


def shared_run(tmp_path_factory, name: str, make_job) -> dict:
    """``run_worker`` once per session: under pytest-xdist the first worker to get here runs it and
    the others read its result. `make_job(work)` builds the job (only in the process that runs it)."""
    folder = source_folder()
    reason = missing_reason(folder)
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp(name)
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return run_worker(folder, make_job(work), work)
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / f"{name}_result.json"  # this session's, all workers
    with FileLock(str(shared) + ".lock"):
        if shared.is_file():
            result = json.loads(shared.read_text())
            if "skip" in result:
                pytest.skip(result["skip"])
            return result
        try:
            result = run_worker(folder, make_job(work), work)
        except pytest.skip.Exception as exc:
            shared.write_text(json.dumps({"skip": str(exc.msg)}))
            raise
        shared.write_text(json.dumps(result))
        return result
