"""ComfyUI: the LoRA Optimizer's merge_formula field runs the same recipe as `loramerge.merge(formula=...)`."""

from pathlib import Path

import torch

import loramerge
from loramerge.config import LoraInput

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_merge_formula_field_runs_the_formula(tmp_path):
    from tests.comfy_nodes._host import import_comfy_sd, import_folder_paths

    import_folder_paths()
    import_comfy_sd()
    from comfy_nodes import nodes

    assert "merge_formula" in nodes.LoraOptimizer.INPUT_TYPES()["optional"]
    inputs = tuple(
        LoraInput(path=str(EXAMPLES / f"{n}.safetensors"), strength_model=s)
        for n, s in (("style_kohya", 0.8), ("detail_kohya", 1.0), ("character_peft", 0.5))
    )
    options = {**nodes._options(None), "formula": "(1+2):0.6 + 3"}
    result, hit = nodes.merged(inputs, options)
    assert not hit and result.tree is not None and [s["name"] for s in result.tree["steps"]] == ["g1", "final"]
    direct = loramerge.merge(list(inputs), **options)
    assert [g.key for g in result.groups] == [g.key for g in direct.groups]
    for a, b in zip(result.groups, direct.groups):
        assert torch.equal(a.patch.load().dense(), b.patch.load().dense()), a.key
    assert nodes.merged(inputs, options)[1]  # the cache knows the formula
    plain, _ = nodes.merged(inputs, nodes._options(None))
    assert plain.tree is None
