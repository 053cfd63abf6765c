"""Block weights (A1111 LoRA-Block-Weight syntax) on real diffusers+PEFT SD1.5/SDXL LoRAs: the
merged ΔW equals Σ strength · block weight · ΔW_i computed from the libraries' own deltas."""

import re

import pytest
import torch

from loramerge import architectures as A
from loramerge.api import analyze, load_recipe, merge
from loramerge.architectures.blocks import layout_of, layouts
from loramerge.errors import LoraMergeError
from loramerge.formats.align import align, load_group
from loramerge.formats.reader import AdapterFile
from tests.formats.test_fixture_truth import canonical

# what OUTALL keeps, written out by hand from A1111's preset list (BASE = text encoders) and its rule
# that modules in no block (time_embed, label_emb, out) keep weight 1
_OUTSIDE = r"diffusion_model\.(time_embed|label_emb|out)\."
OUTALL_ON = {
    "sd15": rf"^(te1\.|diffusion_model\.output_blocks\.|{_OUTSIDE})",
    "sdxl": rf"^(te[12]\.|diffusion_model\.output_blocks\.|{_OUTSIDE})",
}
SECOND = {"sd15": "sd15_peft_diffusers", "sdxl": "sdxl_kohya_diffusers_converter"}
FIRST = {"sd15": "sd15_peft_diffusers", "sdxl": "sdxl_peft_diffusers"}


def _written(path, arch):
    table = A.get_table(arch)
    aligned = align(AdapterFile(path), table, A.placer(arch), strict=True)
    return {k: load_group(aligned, table, k).dense() for k in aligned.groups}


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_outall_zeroes_input_and_middle_groups(sd_fixtures, tmp_path, arch):
    fa, fb = sd_fixtures[FIRST[arch]], sd_fixtures[SECOND[arch]]
    table = A.get_table(arch)
    ta = {canonical(table, k): v for k, v in fa.truth.items()}
    tb = {canonical(table, k): v for k, v in fb.truth.items()}
    out = tmp_path / "m.safetensors"
    merge(
        [f"{fa.path}:1@OUTALL", f"{fb.path}:0.5"], mode="weighted_sum", auto_strength=False, dtype="float32", output=out
    )
    got = _written(out, arch)
    kinds = {"in": 0, "mid": 0, "out": 0}
    for key in sorted(set(ta) | set(tb)):
        on = re.search(OUTALL_ON[arch], key) is not None
        want = (ta[key] if on and key in ta else 0) + (0.5 * tb[key] if key in tb else 0)
        if isinstance(want, int):  # only A, in a block OUTALL turns off: nothing of it is left
            assert key not in got
            continue
        torch.testing.assert_close(got[key].reshape(want.shape), want, rtol=1e-5, atol=1e-6, msg=key)
        for kind, pat in (("in", "input_blocks"), ("mid", "middle_block"), ("out", "output_blocks")):
            kinds[kind] += pat in key
    assert all(kinds.values()), kinds  # every region was checked


def test_block_weights_scale_before_pass1(sd_fixtures):
    """Pass-1 statistics see the effective ΔW: ‖0.5·ΔW‖² = ¼‖ΔW‖² for ALL0.5 on SD1.5 (17-form: every
    attention block is listed)."""
    fx = sd_fixtures["sd15_peft_diffusers"]
    plain = analyze([str(fx.path), str(fx.path)]).analysis
    halved = analyze([f"{fx.path}:1@ALL0.5", str(fx.path)]).analysis
    checked = 0
    for key, stats in plain.stats.items():
        if key.startswith("diffusion_model.") and "blocks" in key:
            h = halved.stats[key]
            assert h.norms2[0] == pytest.approx(0.25 * stats.norms2[0], rel=1e-5)
            assert h.norms2[1] == pytest.approx(stats.norms2[1], rel=1e-6)
            checked += 1
    assert checked > 10


def test_vector_forms_and_single_block(sd_fixtures, tmp_path):
    """A 26-value vector by block name: only OUT05 on (value 0.3), every other block 0."""
    fx = sd_fixtures["sd15_peft_diffusers"]
    names = layout_of("sd15").form(26)
    vector = ",".join("0.3" if n == "OUT05" else "0" for n in names)
    out = tmp_path / "m.safetensors"
    merge([f"{fx.path}:2@{vector}"], mode="weighted_sum", auto_strength=False, dtype="float32", output=out)
    table = A.get_table("sd15")
    truth = {canonical(table, k): v for k, v in fx.truth.items()}
    got = _written(out, "sd15")
    assert got and all(k.startswith("diffusion_model.output_blocks.5.") for k in got)
    want = {k for k in truth if k.startswith("diffusion_model.output_blocks.5.")}
    assert set(got) == want
    for k in want:
        torch.testing.assert_close(got[k].reshape(truth[k].shape), 0.6 * truth[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(layouts()))
def test_every_preset_fits_the_block_table(arch):
    layout = layouts()[arch]
    for name, vector in layout.presets.items():
        assert len(vector) == len(layout.blocks), name
        assert layout.expand(vector) is not None
    # every block name of the table is reached by some module of the architecture's key table
    reached = {layout.block_of(m) for m in A.get_table(arch).modules}
    assert set(layout.blocks) <= reached, set(layout.blocks) - reached


def test_a1111_forms_and_presets():
    sd15, sdxl, flux = layout_of("sd15"), layout_of("sdxl"), layout_of("flux")
    assert [len(f) for f in sd15.forms] == [17, 26] and [len(f) for f in sdxl.forms] == [12, 20]
    assert len(flux.forms[0]) == 61 and flux.forms[0][:4] == ("CLIP", "T5", "IN", "D00")

    # on the blocks of A1111's short forms, the presets are its preset list
    def short(layout, name):
        full = dict(zip(layout.blocks, layout.presets[name]))
        return tuple(full[b] for b in layout.forms[0])

    assert short(sd15, "OUTALL") == (1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    assert short(sd15, "MIDD") == (1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0)
    assert short(sd15, "IND") == (1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert short(sd15, "INS") == (1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert short(sd15, "OUTS") == (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1)
    assert short(sd15, "OUTD") == (1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0)
    assert short(sd15, "ALL0.5") == (0.5,) * 17
    assert short(sdxl, "OUTALL") == (1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1)  # the SDXL list of ComfyUI's Inspire pack
    assert short(sdxl, "INALL") == (1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
    # the blocks the short form leaves out go with their region
    full = dict(zip(sd15.blocks, sd15.presets["OUTALL"]))
    assert full["OUT00"] == full["OUT02"] == 1 and full["IN00"] == full["IN11"] == full["M00"] == 0
    # placement of canonical keys
    assert sd15.block_of("diffusion_model.input_blocks.10.0.in_layers.2") == "IN10"
    assert sd15.block_of("diffusion_model.time_embed.0") is None
    assert sd15.block_of("te1.text_model.encoder.layers.0.mlp.fc1") == "BASE"
    assert flux.block_of("diffusion_model.single_blocks.7.linear1") == "S07"
    assert flux.block_of("diffusion_model.txt_in") == "IN" and flux.block_of("te3.encoder.block.0.x") == "T5"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("@1,0,1", r"3 values; sd15 takes\n  17 values: BASE IN01 IN02 IN04"),
        ("@2,1", r"2 values; sd15 takes\n  17 values: BASE IN01 IN02 IN04"),
        ("@NOPE", r"unknown block-weight preset 'NOPE' for sd15\n  17 values: BASE IN01"),
    ],
)
def test_wrong_vector_or_preset_lists_the_blocks(sd_fixtures, spec, message):
    fx = sd_fixtures["sd15_peft_diffusers"]
    with pytest.raises(LoraMergeError, match=message) as err:
        analyze([f"{fx.path}:1{spec}"])
    assert str(fx.path) in str(err.value) and "OUT11" in str(err.value)


def test_user_presets_file(sd_fixtures, tmp_path):
    fx = sd_fixtures["sd15_peft_diffusers"]
    presets = tmp_path / "presets.txt"
    presets.write_text("# mine\n\nMYOUT:" + ",".join(map(str, layout_of("sd15").presets["OUTALL"])) + "\n")
    a = analyze([f"{fx.path}:1@myout", str(fx.path)], block_weights_file=str(presets)).analysis
    b = analyze([f"{fx.path}:1@OUTALL", str(fx.path)]).analysis
    assert {k: s.norms2 for k, s in a.stats.items()} == {k: s.norms2 for k, s in b.stats.items()}
    presets.write_text("BAD:1,x\n")
    with pytest.raises(LoraMergeError, match=r"presets.txt: line 1 is not NAME:v1,v2"):
        analyze([f"{fx.path}:1@BAD"], block_weights_file=str(presets))


def test_block_weights_round_trip_through_the_recipe(sd_fixtures, tmp_path):
    fx = sd_fixtures["sd15_peft_diffusers"]
    out = tmp_path / "m.safetensors"
    specs = [f"{fx.path}:0.7,0.4@OUTALL", f"{fx.path}:0.5@" + ",".join(["0.25"] * 17)]
    merge(specs, mode="weighted_sum", output=out)
    cfg = load_recipe(out)
    assert [i.block_weights for i in cfg.inputs] == ["OUTALL", ",".join(["0.25"] * 17)]
    assert [(i.strength_model, i.strength_text_encoder) for i in cfg.inputs] == [(0.7, 0.4), (0.5, None)]
    again = tmp_path / "again.safetensors"
    merge(cfg, output=again)
    assert again.read_bytes() == out.read_bytes()


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "loramerge.cli", *map(str, args)], capture_output=True, text=True)


def test_inspect_blocks(sd_fixtures):
    import json

    fx = sd_fixtures["sd15_peft_diffusers"]
    run = _cli("inspect", fx.path, "--blocks", "--json")
    assert run.returncode == 0, run.stderr
    (item,) = json.loads(run.stdout)
    assert item["architecture"] == "sd15"
    assert list(item["blocks"])[:26] == list(layout_of("sd15").blocks)
    table = A.get_table("sd15")
    truth = {canonical(table, k) for k in fx.truth}
    assert item["blocks"]["OUT05"] == sum(k.startswith("diffusion_model.output_blocks.5.") for k in truth) > 0
    assert item["blocks"]["BASE"] == sum(k.startswith("te1.") for k in truth) > 0
    assert sum(item["blocks"].values()) == len(truth)
    run = _cli("inspect", "--blocks", "--arch", "sdxl")
    assert run.returncode == 0, run.stderr
    assert "12 values: BASE IN04 IN05 IN07 IN08 M00 OUT00 OUT01 OUT02 OUT03 OUT04 OUT05" in run.stdout
    assert "OUTALL" in run.stdout
    run = _cli("inspect", "--blocks", "--arch", "acestep")
    assert run.returncode == 2 and "has no block layout" in run.stderr


def test_flux_blocks_by_index(flux_fixture, tmp_path):
    """FLUX's 61-value form (A1111's): D00 at 1, S01 at 0.25, every other block 0; checked per
    group against the PEFT deltas, by the block each diffusers module path names."""
    fx = flux_fixture
    layout = layout_of("flux")
    weights = {"D00": 1.0, "S01": 0.25}
    vector = ",".join(str(weights.get(b, 0.0)) for b in layout.forms[0])
    out = tmp_path / "m.safetensors"
    merge([f"{fx.path}:1@{vector}"], mode="weighted_sum", auto_strength=False, dtype="float32", output=out)
    table = A.get_table("flux")
    truth = {}
    for k, v in fx.truth.items():  # fused q/k/v land as components: compare whole modules via the key
        truth[canonical(table, k)] = v
    got = _written(out, "flux")

    def block(key):  # from the diffusers truth naming, independently of the layout's own regexes
        m = re.search(r"(single_transformer_blocks|transformer_blocks)\.(\d+)\.", key)
        return None if m is None else ("S" if m.group(1).startswith("single") else "D") + f"{int(m.group(2)):02d}"

    kept = {canonical(table, k): weights[block(k)] for k in fx.truth if block(k) in weights}
    assert {b for b in map(block, fx.truth) if b} >= {"D00", "S01", "D01", "S00"}  # the tiny model has more blocks
    assert set(got) == set(kept) and kept
    for key, w in kept.items():
        torch.testing.assert_close(got[key].reshape(truth[key].shape), w * truth[key], rtol=1e-5, atol=1e-6, msg=key)
    single = dict(zip(layout.blocks, layout.presets["SINGLE"]))
    assert single["S05"] == single["CLIP"] == 1 and single["D03"] == single["IN"] == single["OUT"] == 0
