"""Refactors keep behaviour: merged tensors are byte-identical to those recorded before a change.

Every fixture pair of one architecture (DoRA inputs need a base model and are left to their own
tests) is merged under a fixed seed with several option sets that between them reach every code path
of the merge engine (exact linear, SLERP coefficients, basis-space TIES, dense TIES/DARE with
refinement and randomized re-factorisation, rank truncation, preserved inputs). The hash covers each
tensor's name, dtype, shape and bytes, not the header metadata: the recipe stored there grows with
new options, the tensors must not change.

Recording (only when a change is *meant* to alter outputs; say why in the commit):
    LORAMERGE_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/pipeline/test_golden_outputs.py

`golden_hashes_paper.json` pins the same merges under ``rules="paper"``: the seed's decision tree
must keep giving the bytes that were the defaults' before issue 10 changed the default rule set
(recorded then, never re-recorded by the defaults' recording above).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from loramerge.api import merge
from tests.fixtures.common import torch_threads

GOLDEN = Path(__file__).with_name("golden_hashes.json")
GOLDEN_PAPER = Path(__file__).with_name("golden_hashes_paper.json")
RECORD = os.environ.get("LORAMERGE_RECORD_GOLDEN") == "1"

PAIRS = [
    ("sdxl_peft_diffusers", "sdxl_lycoris_locon"),
    ("sdxl_lycoris_tucker", "sdxl_lycoris_loha"),
    ("sdxl_lycoris_lokr", "sdxl_lycoris_full"),
    ("sdxl_kohya_diffusers_converter", "sdxl_lycoris_norm"),
    ("flux_peft_diffusers", "lycoris_wrapper"),
    ("wan_peft_diffusers", "wan_i2v_peft_rslora_diffusers"),
]

# The option sets (dtype pinned: the default output precision is a product decision of its own).
OPTIONS: dict[str, dict] = {
    "auto": {},
    "weighted_sum": {"mode": "weighted_sum", "auto_strength": False},
    "slerp": {"mode": "slerp"},
    "ties_dense": {"mode": "ties"},
    "ties_basis": {"mode": "ties", "basis_space": True},
    "dare_refine": {"sparsify": "dare_conflict", "refine": "refine"},
    "della_full_rank4": {"sparsify": "della", "refine": "full", "rank": 4},
    "global_no_slerp": {"optimization": "global", "strategy_set": "no_slerp", "rel_error": 0.05},
}
# Readers and engine paths are pinned without their full cross product (each merge of these
# fixtures is ~800 groups, seconds of CPU): every pair of input formats under the defaults and the
# plain sum, every option set on two pairs (an SDXL UNet+text encoders pair and FLUX).
READER_OPTIONS = ("auto", "weighted_sum")
ENGINE_PAIRS = (PAIRS[0], PAIRS[4])
CASES = [(a, b, o) for a, b in PAIRS for o in OPTIONS if o in READER_OPTIONS or (a, b) in ENGINE_PAIRS]
# the paper rules differ from the defaults only where auto mode decides or auto-strength scales
PAPER_CASES = [(a, b, o) for a, b, o in CASES if (a, b) in ENGINE_PAIRS and o != "weighted_sum"]


def tensor_hash(path: Path) -> str:
    h = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _merge_hash(real_fixtures, tmp_path, a, b, option, **extra) -> str:
    out = tmp_path / f"{a}+{b}.{option}.safetensors"
    inputs = [f"{real_fixtures[a].path}:0.8", f"{real_fixtures[b].path}:0.6"]
    with torch_threads(1), merge(inputs, output=out, seed=7, dtype="float32", **OPTIONS[option], **extra):
        pass  # one thread: dense reductions and the randomized SVD depend on the thread count
    return tensor_hash(out)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.skipif(RECORD, reason="recording")
@pytest.mark.parametrize("a, b, option", CASES, ids=[f"{a}+{b}-{o}" for a, b, o in CASES])
def test_merged_tensors_unchanged(real_fixtures, tmp_path, golden, a, b, option):
    key = f"{a}+{b}:{option}"
    assert key in golden, f"no recorded hash for {key}: record with LORAMERGE_RECORD_GOLDEN=1"
    inputs = {n: tensor_hash(real_fixtures[n].path) for n in (a, b)}
    assert inputs == golden["_inputs"][key], "the fixture files themselves changed: the comparison is void"
    assert _merge_hash(real_fixtures, tmp_path, a, b, option) == golden[key]


@pytest.mark.skipif(RECORD, reason="recording")
@pytest.mark.parametrize("a, b, option", PAPER_CASES, ids=[f"{a}+{b}-{o}" for a, b, o in PAPER_CASES])
def test_paper_rules_reproduce_the_reference(real_fixtures, tmp_path, a, b, option):
    """``rules="paper"`` gives, byte for byte, what the defaults gave before the measured rules."""
    paper = json.loads(GOLDEN_PAPER.read_text())
    key = f"{a}+{b}:{option}"
    assert {n: tensor_hash(real_fixtures[n].path) for n in (a, b)} == paper["_inputs"][key]
    assert _merge_hash(real_fixtures, tmp_path, a, b, option, rules="paper") == paper[key]


@pytest.mark.skipif(not RECORD, reason="set LORAMERGE_RECORD_GOLDEN=1 to record")
def test_record(real_fixtures, tmp_path):
    data: dict = {"_inputs": {}}
    for a, b, option in CASES:
        key = f"{a}+{b}:{option}"
        data["_inputs"][key] = {n: tensor_hash(real_fixtures[n].path) for n in (a, b)}
        data[key] = _merge_hash(real_fixtures, tmp_path, a, b, option)
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.mark.skipif(RECORD, reason="recording")
@pytest.mark.parametrize("option", ["auto", "dare_refine", "della_full_rank4", "ties_basis"])
def test_bytes_do_not_depend_on_the_thread_count(real_fixtures, tmp_path, golden, option):
    """Groups run side by side on single-threaded ops: any --threads gives the recorded bytes."""
    a, b = PAIRS[0]
    inputs = [f"{real_fixtures[a].path}:0.8", f"{real_fixtures[b].path}:0.6"]
    for threads in (3,):  # one thread is the recorded merge itself (test_merged_tensors_unchanged)
        out = tmp_path / f"t{threads}.safetensors"
        with merge(inputs, output=out, seed=7, dtype="float32", threads=threads, **OPTIONS[option]):
            pass
        assert tensor_hash(out) == golden[f"{a}+{b}:{option}"], threads
