"""Clear node errors (ComfyUI shows the exception text in the node): missing files, files that are
not LoRAs, LoRAs for another model than the loaded one, bad patterns, and Save Merged LoRA paths
outside the loras folder."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file

from ._util import stack

NORM = (("sdxl_lycoris_norm", 1.0, 1.0),)


@pytest.fixture(scope="module")
def norm_data(pack, host):
    return pack.LoraOptimizer().optimize(host.model, stack(pack, *NORM), 1.0, 1.0, clip=host.clip)[3]


def _optimize(pack, host, lora_stack, **kw):
    return pack.LoraOptimizer().optimize(host.model, lora_stack, 1.0, 1.0, clip=host.clip, **kw)


# ------------------------------------------------------------------------------------ inputs

def test_missing_file_is_named_at_the_stack(pack):
    with pytest.raises(pack.LoraOptimizerError, match=r"LoRA 'nope.safetensors' was not found in the loras folder \("):
        pack.LoraStack().stack("nope.safetensors", 1.0, 1.0, False, "", "")


def test_file_deleted_after_stacking(pack, host, loras):
    shutil.copy(loras / "sdxl_lycoris_norm.safetensors", loras / "gone.safetensors")
    lora_stack = stack(pack, ("gone", 1.0, 1.0))
    os.remove(loras / "gone.safetensors")
    with pytest.raises(pack.LoraOptimizerError, match="'gone.safetensors' was not found in the loras folder"):
        _optimize(pack, host, lora_stack)


def test_empty_stack(pack, host):
    with pytest.raises(pack.LoraOptimizerError, match="the LoRA stack is empty"):
        _optimize(pack, host, None)
    with pytest.raises(pack.LoraOptimizerError, match="every LoRA in it has strength 0"):
        _optimize(pack, host, stack(pack, ("sdxl_lycoris_norm", 0.0, 0.0)))


@pytest.mark.parametrize("name, content, message", [
    ("checkpoint.safetensors", "checkpoint", r"looks like a full model checkpoint .*, not a LoRA"),
    ("garbage.safetensors", b"hello, not a tensor file", r"truncated or not safetensors"),
    ("old.ckpt", "pickle", r"is a pickle checkpoint.*turn on allow_pickle in LoRA Optimizer Settings"),
])
def test_files_that_are_not_loras(pack, host, loras, name, content, message):
    path = loras / name
    if content == "checkpoint":
        save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(path))
    elif content == "pickle":
        torch.save({"a": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    try:
        lora_stack = pack.LoraStack().stack(name, 1.0, 1.0, False, "", "")[0]
        with pytest.raises(pack.LoraOptimizerError, match=f"^LoRA Optimizer: {re.escape(str(path))}[:,] ") as err:
            _optimize(pack, host, lora_stack)
        assert err.match("(?s)" + message)
        assert "--" not in str(err.value), "command-line flags should be named as node widgets"
    finally:
        path.unlink()


def test_lora_for_another_architecture(pack, host):
    message = r"does not fit this SDXL model: none of its \d+ diffusion-model modules exist .*look like FLUX.1 \(flux\)"
    with pytest.raises(pack.LoraOptimizerError, match=message):
        _optimize(pack, host, stack(pack, ("flux_peft_diffusers", 1.0, 1.0)))


def test_lora_for_a_related_architecture(pack, host):
    """SD1.5 and SDXL share some LDM module names; whatever does not fit is listed, with the way out."""
    message = (r"(?s)\d+ modules of the merged LoRA \(Stable Diffusion 1.*\(sd15\)\) do not fit this SDXL model:"
               r".*strict = false")
    with pytest.raises(pack.LoraOptimizerError, match=message):
        _optimize(pack, host, stack(pack, ("sd15_peft_diffusers", 1.0, 1.0)))


def test_bad_pattern(pack):
    with pytest.raises(pack.LoraOptimizerError, match=r"include is not a valid regular expression"):
        pack.LoraStack().stack("sdxl_lycoris_norm.safetensors", 1.0, 1.0, False, "input_blocks(", "")


def test_include_that_leaves_nothing(pack, host):
    lora_stack = pack.LoraStack().stack("sdxl_lycoris_norm.safetensors", 1.0, 1.0, False, "no_such_module", "")[0]
    with pytest.raises(pack.LoraOptimizerError, match="no target is left to merge .*include/exclude on the LoRA Stack"):
        _optimize(pack, host, lora_stack)


# ------------------------------------------------------------------------------- save paths

@pytest.mark.parametrize("name", ["../evil", "merged/../../evil", "..", "a/b/../../../evil", "..\\evil",
                                  "/tmp/evil", "C:\\evil", "C:evil", "\\\\server\\share\\evil", "", "  ", "merged/"])
def test_save_path_outside_the_loras_folder_is_refused(pack, loras, name):
    with pytest.raises(pack.LoraOptimizerError, match="Save Merged LoRA: "):
        pack.savepath.save_path(loras, name)


def test_absolute_path_into_the_loras_folder_is_still_refused(pack, loras):
    with pytest.raises(pack.LoraOptimizerError, match="is an absolute path"):
        pack.savepath.save_path(loras, str(loras / "x.safetensors"))


def test_symlink_out_of_the_loras_folder_is_refused(pack, loras, tmp_path):
    link = loras / "escape"
    link.symlink_to(tmp_path, target_is_directory=True)
    try:
        with pytest.raises(pack.LoraOptimizerError, match="outside the loras folder"):
            pack.savepath.save_path(loras, "escape/evil")
    finally:
        link.unlink()


def test_names_inside_the_loras_folder(pack, loras):
    root = loras.resolve()
    assert pack.savepath.save_path(loras, "merged/a") == root / "merged" / "a.safetensors"
    assert pack.savepath.save_path(loras, "b.safetensors") == root / "b.safetensors"
    assert pack.savepath.save_path(loras, "x/./y..z") == root / "x" / "y..z.safetensors"


def test_save_node_refuses_before_writing(pack, norm_data, loras, tmp_path):
    before = sorted(p for p in tmp_path.parent.rglob("*evil*"))
    for name in ("../evil", str(tmp_path / "evil")):
        with pytest.raises(pack.LoraOptimizerError, match="Save Merged LoRA: "):
            pack.SaveMergedLora().save(norm_data, name, "kohya", 0, 0.0, True)
    assert sorted(p for p in tmp_path.parent.rglob("*evil*")) == before


def test_save_node_refuses_overwriting(pack, norm_data, loras):
    with pytest.raises(pack.LoraOptimizerError, match="is one of the merged LoRAs"):
        pack.SaveMergedLora().save(norm_data, "sdxl_lycoris_norm", "kohya", 0, 0.0, True)
    path = pack.SaveMergedLora().save(norm_data, "merged/once", "kohya", 0, 0.0, False)["result"][0]
    with pytest.raises(pack.LoraOptimizerError, match="exists; choose another name or turn on overwrite"):
        pack.SaveMergedLora().save(norm_data, "merged/once", "kohya", 0, 0.0, False)
    assert pack.SaveMergedLora().save(norm_data, "merged/once", "comfy", 0, 0.0, True)["result"][0] == path


def test_format_that_cannot_hold_the_merge(pack, norm_data, loras):
    message = "diffusers format cannot hold norm or bias deltas; save in the kohya or comfy format"
    with pytest.raises(pack.LoraOptimizerError, match=message):
        pack.SaveMergedLora().save(norm_data, "merged/norm_diffusers", "diffusers", 0, 0.0, False)
    assert not (loras / "merged" / "norm_diffusers.safetensors").exists()
    assert not list((loras / "merged").glob(".norm_diffusers*"))  # no temporary file left behind


def test_rank_and_error_target_together(pack, norm_data):
    with pytest.raises(pack.LoraOptimizerError, match="a rank or an error target, not both"):
        pack.SaveMergedLora().save(norm_data, "merged/both", "kohya", 4, 0.1, False)


# ------------------------------------------------------------------------- what is left out

def test_without_clip_the_text_encoders_are_left_out(pack, host):
    model, clip, report, _ = pack.LoraOptimizer().optimize(host.model, stack(pack, *NORM), 1.0, 1.0)
    assert clip is None and model.patches
    assert all(k.startswith("diffusion_model.") for k in model.patches)
    assert "warning: no CLIP connected: " in report and "text-encoder modules not applied" in report


def test_not_strict_applies_what_fits_and_lists_the_rest(pack, host):
    defaults = {n: s[1]["default"] for n, s in pack.OptimizerSettings.INPUT_TYPES()["required"].items()}
    (settings,) = pack.OptimizerSettings().settings(**{**defaults, "strict": False})
    model, clip, report, _ = _optimize(pack, host, stack(pack, ("sd15_peft_diffusers", 1.0, 1.0)), settings=settings)
    assert model.patches
    # kohya SD1.x names (diffusers blocks): SDXL has no attention at level 0, so those are listed
    listed = re.findall(r"warning: not in this SDXL model, left out: (\S+)", report)
    assert any(re.fullmatch(r"lora_unet_down_blocks_0_attentions_\d+_\w+", name) for name in listed), listed
    assert "more modules left out" in report
