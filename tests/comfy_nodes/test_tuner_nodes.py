"""AutoTuner, Merge Selector and Save/Load Tuner Data on ComfyUI's own code (the tiny SDXL model).

What is proven: the AutoTuner applies the merge of its best candidate (the Merge Selector's candidate
1 patches the same weights), tuner data survives a save/load round trip, and bad selections or files
are clear node errors."""

from __future__ import annotations

import pytest
import torch


from ._util import SDXL_PAIR, stack


@pytest.fixture(scope="module")
def tuned(pack, host, tmp_path_factory):
    import os

    os.environ["LORAMERGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("tuner_cache"))
    try:
        out = pack.tuner_nodes.AutoTuner().tune(
            host.model, stack(pack, *SDXL_PAIR), 2, 0.0, "off", 1.0, 1.0, clip=host.clip
        )
    finally:
        del os.environ["LORAMERGE_CACHE_DIR"]
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_autotuner_applies_its_best_candidate(pack, host, tuned):
    model, clip, report, data = tuned
    assert data["merged"] == 3 and data["candidates"][0]["phase2"] is not None  # the top 2 and the untuned one
    assert sum(bool(c.get("untuned")) for c in data["candidates"]) == 1
    assert "AutoTuner:" in report and data["candidates"][0]["label"] in report
    best = pack.tuner_nodes.MergeSelector().select(host.model, data, 1, 1.0, 1.0, clip=host.clip)
    assert _same(host.weights(model, clip), host.weights(best[0], best[1]))
    assert best[2].startswith(f"candidate 1: {data['candidates'][0]['label']}")
    second = pack.tuner_nodes.MergeSelector().select(host.model, data, 2, 1.0, 1.0, clip=host.clip)
    assert not _same(host.weights(model, clip), host.weights(second[0], second[1]))


def test_selection_out_of_range(pack, host, tuned):
    data = tuned[3]
    with pytest.raises(pack.LoraOptimizerError, match=r"Merge Selector: .*--select 999999 is out of range"):
        pack.tuner_nodes.MergeSelector().select(host.model, data, 999999, 1.0, 1.0, clip=host.clip)
    with pytest.raises(pack.LoraOptimizerError, match="is not loramerge tuner data"):
        pack.tuner_nodes.MergeSelector().select(host.model, {"candidates": []}, 1, 1.0, 1.0, clip=host.clip)


def test_tuner_data_round_trip(pack, loras, tuned):
    data = tuned[3]
    (path,) = pack.tuner_nodes.SaveTunerData().save(data, "tuned/pair", False)["result"]
    assert path == str(loras / "tuned" / "pair.json")
    with pytest.raises(pack.LoraOptimizerError, match="exists"):
        pack.tuner_nodes.SaveTunerData().save(data, "tuned/pair", False)
    loaded, ranking = pack.tuner_nodes.LoadTunerData().load("tuned/pair")
    assert loaded == data and "AutoTuner:" in ranking
    with pytest.raises(pack.LoraOptimizerError, match="Load Tuner Data: .*cannot read tuner data"):
        pack.tuner_nodes.LoadTunerData().load("tuned/missing")
    with pytest.raises(pack.LoraOptimizerError, match="leads out of the loras folder"):
        pack.tuner_nodes.LoadTunerData().load("../outside")


def test_command_evaluator_node(pack):
    (ev,) = pack.tuner_nodes.CommandEvaluatorNode().evaluator("  python score.py {merged} ", 30.0)
    assert (ev.command, ev.timeout) == ("python score.py {merged}", 30.0)
    with pytest.raises(pack.LoraOptimizerError, match="Command Evaluator: give a command"):
        pack.tuner_nodes.CommandEvaluatorNode().evaluator("  ", 30.0)
