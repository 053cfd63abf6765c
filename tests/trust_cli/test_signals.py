"""SIGTERM and SIGHUP during a merge clean up as Ctrl-C does: a real merge in a child process is
stopped while pass 2 fills its spool; it exits 128 + the signal with one `error:` line, and neither
the output folder nor the temporary folder holds anything new."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.trust_cli.helpers import listing, synthetic_kohya


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stopped_merge_leaves_nothing_behind(tmp_path, signum):
    inputs, out, tmp = tmp_path / "in", tmp_path / "out", tmp_path / "tmp"
    for folder in (inputs, out, tmp):
        folder.mkdir()
    loras = [synthetic_kohya(inputs / f"l{i}.safetensors", 32, 384, 16, seed=i) for i in range(3)]
    env = {**os.environ, "TMPDIR": str(tmp)}
    cmd = [
        sys.executable,
        "-m",
        "loramerge.cli",
        "merge",
        *map(str, loras),
        "-o",
        str(out / "m.safetensors"),
        "--arch",
        "unknown",
        "--mode",
        "ties",
        "--threads",
        "1",
        "-q",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(p.name.startswith(".loramerge-spool.") and p.stat().st_size > 0 for p in out.iterdir()):
            assert proc.poll() is None, f"the merge ended before pass 2 was seen: {proc.communicate()}"
            assert time.monotonic() < deadline, "pass 2 did not start in time"
            time.sleep(0.02)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert f"error: stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert listing(out) == [] and listing(tmp) == []
    assert sorted(p.name for p in inputs.iterdir()) == ["l0.safetensors", "l1.safetensors", "l2.safetensors"]
