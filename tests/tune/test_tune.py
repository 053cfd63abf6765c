"""`tune` end to end on the README's example LoRAs: determinism, memory, the Merge Selector, evaluators
that fail, the budget, the merged-group cache, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loramerge.api import merge, tune
from loramerge.autotune import CommandEvaluator
from loramerge.autotune import data as tuner_data
from loramerge.autotune.memory import CACHE_ENV

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STACK = [
    f"{EXAMPLES / 'style_kohya.safetensors'}:0.8",
    str(EXAMPLES / "character_peft.safetensors"),
    f"{EXAMPLES / 'detail_kohya.safetensors'}:0.7",
]
FAST = {"refine": "none", "sparsify": "none"}  # fewer candidates where the test is not about the grid


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def test_tune_is_deterministic_replays_from_memory_and_its_best_is_the_selected_merge(tmp_path, cache_dir):
    first = tune(STACK, output=tmp_path / "best.safetensors")
    assert not first.replayed and first.data["merged"] == 3 and first.data["grid_size"] == 864
    assert len(list((cache_dir / "tuner").glob("*.json"))) == 1
    again = tune(STACK, memory="off")  # computed again, same numbers
    assert not again.replayed and again.to_json() == first.to_json()
    replay = tune(STACK)
    assert replay.replayed and replay.to_json() == first.to_json()
    # the written best is what merging candidate 1 of the tuner data gives
    selected = merge(first.config(1), output=tmp_path / "selected.safetensors")
    selected.close()
    assert (tmp_path / "best.safetensors").read_bytes() == (tmp_path / "selected.safetensors").read_bytes()
    # every candidate: parameters, phase-1 components, phase-2 metrics where merged
    rows = first.candidates
    assert [r["rank"] for r in rows] == list(range(1, 865))
    assert all(set(r["phase1"]) == {*tuner_data_components(), "score"} for r in rows)
    assert [r["phase2"] is not None for r in rows[:4]] == [True, True, True, False]
    assert sum(r["same_as"] is not None for r in rows) == 864 - first.data["unique"]
    assert not any(r["loses_a_lora"] for r in rows[:1])


def tuner_data_components() -> set[str]:
    from loramerge.autotune.heuristic import WEIGHTS

    return set(WEIGHTS)


def test_memory_modes(cache_dir):
    stored = cache_dir / "tuner"
    tune(STACK, memory="read_only", top=1, **FAST)
    assert not stored.exists()  # read-only never writes
    tune(STACK, memory="auto", top=1, **FAST)
    assert len(list(stored.glob("*.json"))) == 1
    assert tune(STACK, memory="read_only", top=1, **FAST).replayed
    assert not tune(STACK, memory="off", top=1, **FAST).replayed
    assert not tune(STACK, memory="auto", top=2, **FAST).replayed  # another grid/top: another key
    cleared = tune(STACK, memory="clear", top=1, **FAST)
    assert not cleared.replayed and len(list(stored.glob("*.json"))) == 1  # all forgotten, this one stored


SCORER = """
import json, os, sys, time
lam = json.loads(os.environ["LORAMERGE_CANDIDATE"])["multiplier"]
assert os.path.getsize(sys.argv[1]) > 0
if lam == 0.5: sys.exit("cannot score")
if lam == 0.75: time.sleep(60)
if lam == 1.5: print("nothing useful")
else: print(json.dumps({"score": -abs(lam - 1.25)}))
"""


def test_failing_evaluators_are_reported_and_the_sweep_goes_on(tmp_path):
    script = tmp_path / "score.py"
    script.write_text(SCORER)
    command = f"{sys.executable} {script} {{merged}}"
    result = tune(STACK, top=1, evaluator=CommandEvaluator(command, timeout=3), memory="off", **FAST)
    rows = result.candidates
    merged = [r for r in rows if r["phase2"] is not None]
    # the best setting by phase 1 and the untuned one (λ = 1: the defaults), each at every λ
    assert [r["parameters"]["multiplier"] for r in merged] == [1.25, 1.25, 1.0, 1.0, 0.75, 1.5, 0.5, 0.5, 0.75, 1.5]
    assert [r["evaluation"]["scalar"] for r in merged[:4]] == [0.0, 0.0, -0.25, -0.25]
    untuned = [r for r in merged if r["untuned"]]
    assert [r["id"] for r in untuned] == [result.data["untuned"]] and untuned[0]["parameters"]["multiplier"] == 1.0
    errors = result.data["errors"]
    assert len(errors) == 6 and all(command in e and "candidate" in e for e in errors)
    assert sum("exited with status 1" in e for e in errors) == 2
    assert sum("still running after 3 s" in e for e in errors) == 2
    assert sum("printed no JSON" in e for e in errors) == 2
    best = result.config(1)
    assert best.multiplier == 1.25 and [i.strength_model for i in best.inputs] == [0.8, 1.0, 0.7]
    # λ scales the merge: retention against the user's strengths grows with it, the relative one does not
    def setting(r):
        return sorted((k, v) for k, v in r["parameters"].items() if k != "multiplier")

    same = [r for r in merged if setting(r) == setting(merged[0])]
    assert [r["parameters"]["multiplier"] for r in same[:2]] == [1.25, 1.0]
    assert same[0]["retention"] == pytest.approx(same[1]["retention"])


class Flaky:
    """A Python evaluator that breaks on its first candidate only."""

    name = "flaky"

    def __init__(self):
        self.calls = 0

    def score(self, merged_path, context):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("GPU fell off")
        return {"score": 0.5, "other": 2.0}

    def scalar(self, scores):
        return scores["score"]


def test_a_python_evaluator_that_raises_is_reported_and_the_sweep_goes_on():
    result = tune(STACK, top=3, evaluator=Flaky(), memory="off", multiplier=1.0, **FAST)
    rows = [r for r in result.candidates if r["phase2"] is not None]
    assert len(rows) == 3  # the top three (the untuned configuration is one of them)
    assert sum(r["untuned"] for r in rows) == 1
    assert rows[0]["evaluation"] == rows[1]["evaluation"] == {"scores": {"score": 0.5, "other": 2.0}, "scalar": 0.5}
    assert rows[2]["evaluation"] is None  # the failed one ranks after the scored ones
    assert result.data["errors"] == [
        f"evaluator flaky on candidate 1 ({rows[2]['label']}) failed: RuntimeError('GPU fell off')"
    ]


def test_the_untuned_configuration_is_always_merged_and_marked():
    """Whatever its phase-1 score, the merge the options give without tuning is measured, so the
    ranking shows what tuning gained (here the defaults score below weighted_average in phase 1 and
    above it in phase 2)."""
    result = tune(STACK, top=1, memory="off", **FAST)
    merged = [r for r in result.candidates if r["phase2"] is not None]
    assert len(merged) == 2 and result.data["merged"] == 2
    untuned = next(r for r in merged if r["untuned"])
    other = next(r for r in merged if not r["untuned"])
    assert untuned["id"] == result.data["untuned"] and untuned["parameters"]["mode"] == "auto"
    assert untuned["phase1"]["score"] < other["phase1"]["score"] and untuned["rank"] == 1
    # its phase-2 retention is the report's of a plain merge with the same options
    plain = merge(STACK, **FAST)
    try:
        assert untuned["retention"] == {lo.name: lo.retention for lo in plain.report.loras if not lo.preserve}
    finally:
        plain.close()
    # a merge that the top setting already is adds nothing
    assert tune(STACK, top=1, memory="off", mode="weighted_average", **FAST).data["merged"] == 1


class ByMultiplier:
    """Scores a candidate by its λ alone: 0.5 at λ = 1, 0.504 at λ = 1.25 (a gain within its noise)."""

    name = "by-multiplier"

    def score(self, merged_path, context):
        lam = context.options["multiplier"]
        return {"score": 0.504 if lam == 1.25 else 0.5 - abs(lam - 1.0) / 10}

    def scalar(self, scores):
        return scores["score"]


def test_min_gain_keeps_the_untuned_configuration_unless_beaten_by_more():
    kw = {"top": 1, "evaluator": ByMultiplier(), "memory": "off", **FAST}
    greedy = tune(STACK, **kw)
    assert greedy.candidates[0]["parameters"]["multiplier"] == 1.25 and greedy.data["min_gain"] == 0.0
    careful = tune(STACK, min_gain=0.01, **kw)
    best = careful.candidates[0]
    assert best["untuned"] and best["id"] == careful.data["untuned"] and best["evaluation"]["scalar"] == 0.5
    assert careful.candidates[1]["parameters"]["multiplier"] == 1.25  # the best of the rest comes next
    assert careful.data["min_gain"] == 0.01
    # a gain above the margin wins again
    assert tune(STACK, min_gain=0.003, **kw).candidates[0]["parameters"]["multiplier"] == 1.25
    from loramerge.errors import OptionError

    with pytest.raises(OptionError, match="--min-gain must be a finite number >= 0"):
        tune(STACK, min_gain=float("inf"), **kw)


def test_budget_stops_phase_two_and_says_so():
    result = tune(STACK, budget=0, memory="off", **FAST)
    assert result.data["merged"] == 0
    assert "--budget 0 s reached: phase 2 stopped after 0 of 3 candidates" in result.data["notes"][0]
    scores = [r["phase1"]["score"] for r in result.candidates if r["same_as"] is None]
    assert scores == sorted(scores, reverse=True)  # ranked by phase 1 alone


def test_merged_groups_are_shared_and_spill_to_disk_beyond_the_ram_budget():
    from loramerge.autotune import tune as run_tune
    from loramerge.api import config_of

    cfg = config_of(STACK, {})
    in_ram = run_tune(cfg, pinned=FAST, top=3, memory_mode="off")
    on_disk = run_tune(cfg, pinned=FAST, top=3, memory_mode="off", ram_budget=0)
    assert on_disk.to_json() == in_ram.to_json()
    assert in_ram.cache["spilled_bytes"] == 0 and on_disk.cache["spilled_bytes"] > 0
    assert in_ram.cache["hits"] > 0  # candidates that decide a group alike merge it once


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loramerge.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_tune_and_merge_selector(tmp_path):
    data = tmp_path / "tuner.json"
    proc = _cli(
        "tune", *STACK, "--top", "1", "--refine", "none", "--tuner-data", data, "--memory", "off", "--rows", "3"
    )
    assert proc.returncode == 0, proc.stderr
    assert "AutoTuner:" in proc.stdout and "2 merged" in proc.stdout  # the top one and the untuned one
    assert "(untuned)" in proc.stdout
    loaded = tuner_data.load(data)
    proc = _cli("merge", "--tuner-data", data, "--select", "2", "-o", tmp_path / "two.safetensors", "-q")
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads(_header(tmp_path / "two.safetensors")["loramerge.recipe"])["config"]
    chosen = loaded["candidates"][1]["config"]
    # the recipe stores input paths relative to the output's folder: the same files
    assert [(tmp_path / i.pop("path")).resolve() for i in recipe["inputs"]] == [
        Path(i.pop("path")).resolve() for i in chosen["inputs"]
    ]
    assert recipe == {**chosen, "dtype": recipe["dtype"]}
    proc = _cli("merge", "--tuner-data", data, "--select", "1000", "-o", tmp_path / "x.safetensors")
    assert proc.returncode == 2 and "--select 1000 is out of range" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    proc = _cli("merge", "--tuner-data", bad, "-o", tmp_path / "x.safetensors")
    assert proc.returncode == 2 and "is not loramerge tuner data" in proc.stderr
    proc = _cli("merge", "--tuner-data", tmp_path / "missing.json", "-o", tmp_path / "x.safetensors")
    assert proc.returncode == 2 and "cannot read tuner data" in proc.stderr
    assert not (tmp_path / "x.safetensors").exists()


def _header(path: Path) -> dict:
    from loramerge.formats.files import read_header

    return read_header(path)[1]


def test_tuner_data_errors(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"kind": tuner_data.KIND, "schema_version": 99, "candidates": []}))
    with pytest.raises(Exception, match="tuner data version 99"):
        tuner_data.load(path)
