"""loramerge outputs and the node pack in ComfyUI 0.3.64 (``../shared/clients/comfyui-0.3.64``,
unmodified, imported in one subprocess per session: ``_comfy064_worker``).

Merged outputs: LoRA, LoCon, LoHa, LoKr and DoRA inputs merged (``weighted_sum``, or ``ties`` where
the merge is not linear) to LoRA, written in every output format, in float32, float16 and bfloat16.
Each file is loaded the way ``comfy.sd.load_lora_for_models`` does into ComfyUI's own tiny model of
the architecture, and every weight of the model is compared with base + the ΔW loramerge reads back
from that file (which in turn must equal the merge result within the output dtype's rounding):
where the format-advice table says ComfyUI 0.3.64 loads the format fully, every patch lands exactly,
nothing else moves and no key of the file is left unloaded; where the table says it does not, that
measured fact is what is checked (the same cell, the same dropped weights).

The node pack: loaded by ComfyUI's own ``nodes.load_custom_node`` from a clone-shaped copy of this
repository, accepted by ComfyUI's own prompt validation, one optimizer run and a Save through
ComfyUI 0.3.64's ModelPatcher (see ``_comfy064_nodes``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loramerge.formats.advice import FULL, PARTIAL, TABLE

from ._comfy064 import source_folder
from ._comfy064_cases import DTYPE_RTOL, MERGE_CASES
from ._common import check_partial, classify, summary

CLIENT = "comfyui_0.3.64"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def merges(comfy064_run):
    return {m["id"]: m for m in comfy064_run["merges"]}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MERGE_CASES])
def test_merged_output_in_comfyui_0364(merges, case):
    entry = merges[case.id]
    assert "crash" not in entry, entry["crash"]
    facts = entry["facts"]
    # the file is the merge: every group written, each within the dtype's rounding of the result
    assert facts["dtype"] == case.dtype and facts["format"] == case.fmt
    assert facts["written_groups"] == facts["groups"] > 0
    assert facts["worst_vs_merge"] <= DTYPE_RTOL[case.dtype], facts["worst_vs_merge"]
    if case.mode == "ties":
        assert facts["strategies"].get("ties", 0) > 0, facts["strategies"]  # groups both LoRAs adapt
    r = entry["result"]
    want = TABLE[CLIENT][case.arch][case.fmt]
    what = f"ComfyUI 0.3.64 loading {case.id}"
    got = classify(r)  # a wrong value or a stray change fails here, whatever the cell
    print(f"{what}: {got}, {summary(r)}")
    assert got == want.loads, f"{what}: measured {got} ({summary(r)}), the format-advice table says {want.loads}"
    if got == FULL:
        assert r["patches"] >= r["expected"] and not r["not_added"] and not r["errors"], r
    elif got == PARTIAL:
        check_partial(r, want.left_out, what)


# ------------------------------------------------------------------------------------ Z-Image


def test_comfyui_0364_has_no_zimage_model(comfy064_run):
    """Why the Z-Image cells say "no model": ComfyUI 0.3.64 has no model class for Z-Image, and its
    Lumina2 (NextDiT, which Z-Image descends from), built at the tiny Z-Image's sizes (FFN width
    matched), cannot hold Z-Image's weights: named by diffusers' own Z-Image converter, it lacks the
    pad tokens, calls the blocks' modulation ``adaLN_modulation.1`` where Z-Image has ``.0``, and its
    timestep embedder is min(dim, 1024) wide where Z-Image's is 1024 (to a min(dim, 256) output)."""
    import re

    probe = comfy064_run["zimage_probe"]
    assert "crash" not in probe, probe["crash"]
    assert "Lumina2" in probe["classes"] and "QwenImage" in probe["classes"]
    assert not [c for c in probe["classes"] if re.search(r"z.?image", c, re.I)], probe["classes"]
    blocks = r"(layers|noise_refiner)\.\d+\."
    assert probe["only_zimage"] and probe["only_comfy"]
    assert {k for k in probe["only_zimage"] if not re.match(blocks + r"adaLN_modulation\.0\.", k)} == {
        "x_pad_token", "cap_pad_token"}, probe["only_zimage"]
    assert all(re.match(blocks + r"adaLN_modulation\.1\.", k) for k in probe["only_comfy"]), probe["only_comfy"]
    assert probe["shapes"] == {
        "t_embedder.mlp.0.weight": [[32, 256], [1024, 256]],
        "t_embedder.mlp.0.bias": [[32], [1024]],
        "t_embedder.mlp.2.weight": [[32, 32], [32, 1024]],
    }, probe["shapes"]
    assert probe["matching"] > 50  # the rest (attention, FFN, norms, embedders) lines up


# --------------------------------------------------------------------------------- node pack


@pytest.fixture(scope="module")
def node_check(comfy064_run):
    out = comfy064_run["nodes"]
    if "import_error" in out:
        pytest.skip(f"ComfyUI 0.3.64's nodes.py at {source_folder()} does not import: {out['import_error'][-300:]}")
    assert "crash" not in out, out["crash"]
    return out


def _declared_display_names(module: str = "nodes") -> dict[str, str]:
    """NODE_DISPLAY_NAME_MAPPINGS as comfy_nodes/<module>.py spells it (read, not imported: it needs
    comfy); a ``**other.NODE_DISPLAY_NAME_MAPPINGS`` entry is read from comfy_nodes/other.py."""
    tree = ast.parse((REPO / "comfy_nodes" / f"{module}.py").read_text())
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if getattr(target, "id", "") == "NODE_DISPLAY_NAME_MAPPINGS" and isinstance(node.value, ast.Dict):
            names: dict[str, str] = {}
            for key, value in zip(node.value.keys, node.value.values):
                if key is None:  # **tuner_nodes.NODE_DISPLAY_NAME_MAPPINGS
                    assert isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name), ast.dump(value)
                    names.update(_declared_display_names(value.value.id))
                else:
                    names[ast.literal_eval(key)] = ast.literal_eval(value)
            return names
    raise AssertionError(f"comfy_nodes/{module}.py has no NODE_DISPLAY_NAME_MAPPINGS")


def test_comfyui_0364_loads_the_pack_from_a_clone(node_check):
    assert node_check["loaded"] is True
    assert node_check["registered"] == _declared_display_names()
    assert node_check["pack_file"].endswith("/custom_nodes/loramerge/comfy_nodes/__init__.py"), node_check["pack_file"]
    for name, info in node_check["interface"].items():
        assert info["module"] == "custom_nodes.loramerge", (name, info["module"])
        assert info["callable"] and info["output"], name


def test_pack_interface_is_accepted_by_comfyui_0364(node_check):
    v = node_check["validation"]
    assert v["valid"] is True and v["error"] is None and v["node_errors"] == {}, v
    assert v["outputs"] == ["preview", "save"]


def test_optimizer_on_comfyui_0364_model_patcher(node_check):
    assert node_check["untouched"], "the optimizer patched its input ModelPatcher instead of a clone"
    assert node_check["strategies"]["node"] == node_check["strategies"]["library"]
    assert len(node_check["strategies"]["library"]) > 1, "the pair should take more than one strategy"
    assert node_check["weights"]["ok"], node_check["weights"]["error"]


def test_save_node_writes_the_library_merge(node_check):
    save, reload = node_check["save"], node_check["reload"]
    assert save["identical"], "Save Merged LoRA's file differs from loramerge's own save of the same merge"
    assert save["text"][0] == f"saved {save['path']} (kohya, {save['dtype']})"
    assert not reload["messages"], reload["messages"][:5]
    assert save["dtype"] == "float32"  # the settings node asked for it
    # LoraLoader's way (comfy.sd.load_lora_for_models) on the saved file, at the optimizer's output
    # strengths, gives the optimizer node's weights bit for bit
    assert reload["changed"] > 100
    assert reload["differ"] == [], f"LoraLoader's weights differ from the node's: {reload['differ']}"
