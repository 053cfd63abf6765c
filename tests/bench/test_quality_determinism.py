"""The quality benchmark reproduces its own numbers: the same seeds give byte-identical results.

The smoke configuration runs three times, each in a fresh interpreter (so nothing cached in a
process can hide nondeterminism) with its own hash seed:

* A: empty cache, 2 worker processes (everything trained);
* B: A's cache and A's output folder, 1 process (trained models loaded, not retrained; other job
  order and process assignment; B compares its hash with A's);
* C: another empty cache, 1 process (everything trained again).

results.json must be byte-identical across the three; the trained models in the two caches must be
tensor-identical. Plus in-process checks that training draws no number from the global RNGs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from bench.quality.determinism import results_digest, tensor_digest
from bench.quality.evaluators import train_evaluator
from bench.quality.lora import train_lora
from bench.quality.model import ModelConfig, train_base
from bench.quality.outputs import reproduction

ROOT = Path(__file__).resolve().parents[2]
TINY = ModelConfig(hidden=16, blocks=1, emb=8, steps=10)


def _smoke(out: Path, cache: Path, *, workers: int, hash_seed: int) -> str:
    """One CLI run of the smoke benchmark in a fresh interpreter; returns its log."""
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    cmd = [sys.executable, "-m", "bench.quality", "--smoke", "--out", str(out), "--cache", str(cache),
           "--workers", str(workers)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _logged_hash(log: str) -> tuple[str, str]:
    (found,) = re.findall(r"^results sha256 ([0-9a-f]{64}): (.+)$", log, flags=re.M)
    return found


def _page_results(md: str) -> list[str]:
    """QUALITY.md without what may differ between runs: run time, reproduction status, timing table."""
    lines = md.split("\n## Timing\n")[0].splitlines()
    return [ln for ln in lines if not ln.startswith(("- **Run time:**", "- **Reproducibility:**", "Results hash ("))]


def _cached_tensors(cache: Path) -> dict[str, str]:
    out = {}
    for path in sorted(cache.glob("*.pt")):
        saved = torch.load(path)
        out[path.name] = tensor_digest(saved.get("state", saved))
    for path in sorted(cache.glob("*.safetensors")):
        out[path.name] = tensor_digest(load_file(str(path)))
    return out


def test_smoke_benchmark_reproduces_byte_for_byte(tmp_path):
    log_a = _smoke(tmp_path / "ab", tmp_path / "cache1", workers=2, hash_seed=1)
    json_a = (tmp_path / "ab" / "quality" / "results.json").read_bytes()
    md_a = (tmp_path / "ab" / "QUALITY.md").read_text()
    log_b = _smoke(tmp_path / "ab", tmp_path / "cache1", workers=1, hash_seed=2)
    log_c = _smoke(tmp_path / "c", tmp_path / "cache2", workers=1, hash_seed=3)

    json_b = (tmp_path / "ab" / "quality" / "results.json").read_bytes()
    json_c = (tmp_path / "c" / "quality" / "results.json").read_bytes()
    assert json_a == json_b == json_c
    # trained from scratch twice: the same files (same cache keys) with the same tensors
    assert _cached_tensors(tmp_path / "cache1") == _cached_tensors(tmp_path / "cache2")

    data = json.loads(json_a)
    digest = results_digest({k: data[k] for k in ("sanity", "aggregate", "raw")})
    assert data["results_sha256"] == digest
    assert _logged_hash(log_a) == (digest, "no previous run")
    assert _logged_hash(log_b) == (digest, "reproduced")
    assert _logged_hash(log_c) == (digest, "no previous run")
    run_b = json.loads((tmp_path / "ab" / "quality" / "run.json").read_text())
    assert run_b["run"]["fresh_cache"] is False and run_b["reproduction"]["status"] == "reproduced"
    assert "**reproduced**" in (tmp_path / "ab" / "QUALITY.md").read_text()
    # the page is the same too, tables in plan order, whatever order the jobs finished in
    assert _page_results(md_a) == _page_results((tmp_path / "c" / "QUALITY.md").read_text())


def _under_global_seed(seed: int, train):
    """Run `train()` with the global RNG seeded to `seed`; also check it left the global RNG alone."""
    torch.manual_seed(seed)
    before = torch.random.get_rng_state()
    out = train()
    assert torch.equal(torch.random.get_rng_state(), before), "training drew from the global RNG"
    return out


def test_training_uses_only_its_own_generator():
    x = torch.linspace(-1, 1, 12 * 256).reshape(12, 16, 16)
    y = torch.arange(12) % 10
    base = lambda: train_base(x, y, seed=3, steps=2, cfg=TINY, batch=4)
    models = [_under_global_seed(s, base).state_dict() for s in (1, 2)]
    assert tensor_digest(models[0]) == tensor_digest(models[1])

    lora = lambda: train_lora(train_base(x, y, seed=3, steps=1, cfg=TINY, batch=4), x, y, seed=5, steps=2, batch=4)
    loras = [_under_global_seed(s, lora) for s in (1, 2)]
    assert tensor_digest(loras[0]) == tensor_digest(loras[1])
    assert any(t.abs().sum() > 0 for k, t in loras[0].items() if k.endswith("lora_up.weight"))  # it trained

    evaluator = lambda: train_evaluator(seed=0, steps=2, batch=8)
    (m1, acc1), (m2, acc2) = (_under_global_seed(s, evaluator) for s in (1, 2))
    assert tensor_digest(m1.state_dict()) == tensor_digest(m2.state_dict()) and acc1 == acc2


def test_reproduction_check_compares_like_with_like():
    prov = {"torch": "2.x", "threads_per_process": 1}
    current = {"config": {"name": "smoke"}, "provenance": prov, "results_sha256": "a" * 64}
    assert reproduction(None, current)["status"] == "no previous run"
    assert reproduction(dict(current), current) == {"status": "reproduced", "previous_sha256": "a" * 64,
                                                     "differs_in": []}
    assert reproduction({**current, "results_sha256": "b" * 64}, current)["status"] == "not reproduced"
    other = {**current, "provenance": {**prov, "threads_per_process": 2}, "config": {"name": "full"}}
    assert reproduction(other, current) == {"status": "not comparable", "previous_sha256": "a" * 64,
                                            "differs_in": ["configuration", "threads_per_process"]}
