"""End-to-end merges on small synthetic kohya files (architecture 'unknown'): exactness of the
linear low-rank path, strengths, preserve, filters, determinism, recipes and the CLI."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import loramerge
from loramerge.api import load_recipe, merge
from loramerge.formats.reader import AdapterFile

SHAPES = {"blocks_0_q": (16, 12), "blocks_0_k": (16, 12), "blocks_1_ff": (8, 16)}


def _write(path, mods, r, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    t = {}
    for m in mods:
        o, i = SHAPES[m]
        t[f"lora_unet_{m}.lora_down.weight"] = torch.randn(r, i, generator=g)
        t[f"lora_unet_{m}.lora_up.weight"] = torch.randn(o, r, generator=g)
        t[f"lora_unet_{m}.alpha"] = torch.tensor(alpha)
    save_file(t, path)
    return path


def _deltas(path):
    f = AdapterFile(path)
    return {e.stem: f.patches(e)["weight"].dense() for e in f.entries.values()}


@pytest.fixture
def loras(tmp_path):
    a = _write(tmp_path / "a.safetensors", ["blocks_0_q", "blocks_0_k", "blocks_1_ff"], 4, 3.0, 1)
    b = _write(tmp_path / "b.safetensors", ["blocks_0_q", "blocks_1_ff"], 2, 1.0, 2)
    return a, b


@pytest.mark.parametrize("fmt", ["kohya", "comfy", "diffusers"])
def test_weighted_sum_is_exact_low_rank(loras, tmp_path, fmt):
    a, b = loras
    out = tmp_path / f"out_{fmt}.safetensors"
    res = merge([f"{a}:0.8", f"{b}:1.5"], output=out, arch="unknown", mode="weighted_sum", auto_strength=False, format=fmt,
                dtype="float32")
    da, db = _deltas(a), _deltas(b)
    got = _deltas(out)
    name = {"kohya": "lora_unet_blocks_0_q", "comfy": "diffusion_model.blocks_0_q", "diffusers": "transformer.blocks_0_q"}[fmt]
    expected = 0.8 * da["lora_unet_blocks_0_q"] + 1.5 * db["lora_unet_blocks_0_q"]
    torch.testing.assert_close(got[name], expected, rtol=1e-5, atol=1e-6)
    assert all(g.exact and g.rank in (4, 6) for g in res.groups)
    assert {g.key: g.rank for g in res.report.groups}["diffusion_model.blocks_0_q"] == 6


def _correlated_pair(tmp_path):
    """Two rank-2 LoRAs on one module with cosine ≈ 0.8, plus one module only the first has."""
    g = torch.Generator().manual_seed(3)
    down, up = torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)
    other = up + 0.75 * torch.randn(8, 2, generator=g)
    lone = {"lora_unet_k.lora_down.weight": torch.randn(2, 8, generator=g), "lora_unet_k.lora_up.weight": torch.randn(8, 2, generator=g)}
    save_file({"lora_unet_q.lora_down.weight": down, "lora_unet_q.lora_up.weight": up, **lone}, tmp_path / "a.safetensors")
    save_file({"lora_unet_q.lora_down.weight": down.clone(), "lora_unet_q.lora_up.weight": other}, tmp_path / "b.safetensors")
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors", up @ down, other @ down, lone


@pytest.mark.parametrize("mode", ["weighted_average", "weighted_sum"])
@pytest.mark.parametrize("rules", ["paper", "measured"])
def test_auto_strength_scale_acts_where_the_report_says(tmp_path, rules, mode):
    a, b, da, db, lone = _correlated_pair(tmp_path)
    res = merge([a, b], arch="unknown", mode=mode, rules=rules)
    s = res.plan.scale(False)
    assert 0.5 < s < 0.9  # correlated: E_ref/E applies under both rule sets, no floor
    g = next(g for g in res.groups if g.key == "diffusion_model.q")
    plain = (da + db) / 2 if mode == "weighted_average" else da + db
    # paper: the scale multiplies the inputs: an average divides it out again (inert), a sum keeps it.
    # measured: it multiplies the merged groups that sum, not an average (which keeps about one
    # LoRA's energy already). Either way the reason says which merged groups the scale leaves alone.
    torch.testing.assert_close(g.patch.dense(), plain if mode == "weighted_average" else s * plain, rtol=1e-5, atol=1e-6)
    reason = res.plan.auto["model"].reason
    if mode == "weighted_sum":
        assert "merged group" not in reason
    elif rules == "paper":
        assert "no effect on the 1 of 1 merged groups whose strategy is scale invariant" in reason
    else:
        assert "applied to the merged groups (measured rules), not to the 1 of 1 " in reason
    reported = next(r for r in res.report.groups if r.key == "diffusion_model.q").retention
    assert reported["a"] == pytest.approx(float((g.patch.dense() * da).sum() / da.pow(2).sum()), rel=1e-4)
    # single-LoRA group: applied at its strength times the branch scale
    k = next(g for g in res.groups if g.key == "diffusion_model.k")
    expected_k = lone["lora_unet_k.lora_up.weight"] @ lone["lora_unet_k.lora_down.weight"]
    torch.testing.assert_close(k.patch.dense(), s * expected_k, rtol=1e-5, atol=1e-6)


def test_retention_of_weighted_sum_of_orthogonal_is_strength_one(tmp_path):
    t1 = {"lora_unet_x.lora_down.weight": torch.eye(4)[:2], "lora_unet_x.lora_up.weight": torch.eye(4)[:, :2].contiguous()}
    t2 = {"lora_unet_x.lora_down.weight": torch.eye(4)[2:], "lora_unet_x.lora_up.weight": torch.eye(4)[:, 2:].contiguous()}
    save_file(t1, tmp_path / "p.safetensors")
    save_file(t2, tmp_path / "q.safetensors")
    res = merge([tmp_path / "p.safetensors", tmp_path / "q.safetensors"], arch="unknown", mode="weighted_sum",
                auto_strength=False)
    assert res.report.groups[0].retention == {"p": 1.0, "q": 1.0}
    avg = merge([tmp_path / "p.safetensors", tmp_path / "q.safetensors"], arch="unknown", mode="weighted_average",
                auto_strength=False)
    assert avg.report.groups[0].retention == {"p": 0.5, "q": 0.5}


def test_preserve_is_added_on_top_at_its_strength(loras):
    a, b = loras
    res = merge([a, {"path": str(b), "strength_model": 0.5, "preserve": True}], arch="unknown", mode="weighted_average")
    da, db = _deltas(a), _deltas(b)
    g = next(g for g in res.groups if g.key == "diffusion_model.blocks_0_q")
    s = res.plan.scale(False)
    assert s == 1.0  # only one LoRA takes part in the merge
    torch.testing.assert_close(g.patch.dense(), da["lora_unet_blocks_0_q"] + 0.5 * db["lora_unet_blocks_0_q"],
                               rtol=1e-5, atol=1e-6)


def test_include_exclude_filters(loras):
    a, b = loras
    res = merge([{"path": str(a), "exclude": ["blocks_1"]}, b], arch="unknown")
    keys = {g.key: g for g in res.groups}
    assert set(keys) == {"diffusion_model.blocks_0_q", "diffusion_model.blocks_0_k", "diffusion_model.blocks_1_ff"}
    assert list(keys["diffusion_model.blocks_1_ff"].retention) == [1]  # only b


def test_same_seed_same_bytes_and_recipe_rerun(loras, tmp_path, monkeypatch):
    a, b = loras
    opts = dict(arch="unknown", mode="ties", seed=3, sparsify="dare", density=0.5)
    merge([a, b], output=tmp_path / "1.safetensors", **opts)
    merge([a, b], output=tmp_path / "2.safetensors", **opts)
    assert (tmp_path / "1.safetensors").read_bytes() == (tmp_path / "2.safetensors").read_bytes()
    merge([a, b], output=tmp_path / "3.safetensors", **{**opts, "seed": 4})
    assert (tmp_path / "3.safetensors").read_bytes() != (tmp_path / "1.safetensors").read_bytes()
    cfg = load_recipe(tmp_path / "1.safetensors")
    assert cfg.seed == 3 and cfg.sparsify.value == "dare" and [i.path for i in cfg.inputs] == [str(a), str(b)]
    with safe_open(str(tmp_path / "1.safetensors"), "pt") as fh:
        meta = fh.metadata()
    recipe = json.loads(meta["loramerge.recipe"])
    assert recipe["version"] == loramerge.__version__ and len(recipe["sha256"][a.name]) == 64
    # paths are stored relative to the output's folder (issue 14: not to the working directory)
    assert [i["path"] for i in recipe["config"]["inputs"]] == [a.name, b.name]


def test_cli_merge_dry_run_and_report_json(loras, tmp_path):
    a, b = loras
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "loramerge.cli", "merge", f"{a}:0.8", str(b), "--arch", "unknown", "--dry-run",
           "--report-json", str(report), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["schema_version"] == 2 and data["architecture"] == "unknown" and data["preset"] == "sd_unet"
    assert set(data["auto_strength"]) == {"model", "text_encoder"}
    for g in data["groups"]:
        assert {"key", "strategy", "n_loras", "cosine", "excess_conflict", "subspace_overlap", "retention"} <= set(g)
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_error_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "loramerge.cli", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bad.safetensors: file is empty" in proc.stderr and "Traceback" not in proc.stderr


def test_slerp_is_written_as_exact_low_rank_equal_to_dense_slerp(loras):
    import loramerge.strategies as S
    from loramerge.rng import group_generator

    a, b = loras
    res = merge([f"{a}:0.8", b], arch="unknown", mode="slerp", auto_strength=False)
    g = next(g for g in res.groups if g.key == "diffusion_model.blocks_0_q")
    assert g.exact and g.rank == 6
    da, db = _deltas(a)["lora_unet_blocks_0_q"], _deltas(b)["lora_unet_blocks_0_q"]
    dense = S.get("slerp")([da, db], [0.8, 1.0], generator=group_generator(0, g.key))
    torch.testing.assert_close(g.patch.dense(), dense, rtol=1e-5, atol=1e-6)


def test_basis_space_ties_is_exactly_low_rank(loras):
    a, b = loras
    res = merge([a, b], arch="unknown", mode="ties", basis_space=True)
    g = next(g for g in res.groups if g.key == "diffusion_model.blocks_0_q")
    assert g.rank <= 6 and g.rel_error == 0.0 and g.exact
    dense = merge([a, b], arch="unknown", mode="ties")
    gd = next(g for g in dense.groups if g.key == "diffusion_model.blocks_0_q")
    assert gd.rel_error > 0  # weight-space TIES is full-rank: writing it at rank 6 loses something


def test_randomized_svd_matches_full_svd_on_low_rank_plus_noise():
    from loramerge.compress import factorize_dense

    g = torch.Generator().manual_seed(0)
    m = torch.randn(300, 8, generator=g) @ torch.randn(8, 200, generator=g) + 1e-3 * torch.randn(300, 200, generator=g)
    fast = factorize_dense(m, rank=8, generator=torch.Generator().manual_seed(1))
    full = factorize_dense(m, rank=8)
    assert fast.rel_error == pytest.approx(full.rel_error, rel=1e-3)
    torch.testing.assert_close(fast.patch.dense(), full.patch.dense(), rtol=1e-3, atol=1e-4)


def test_user_density_wins_over_the_per_group_estimate(loras):
    a, b = loras
    low = merge([a, b], arch="unknown", mode="ties", density=0.2, auto_strength=False)
    high = merge([a, b], arch="unknown", mode="ties", density=0.9, auto_strength=False)
    auto = merge([a, b], arch="unknown", mode="ties", auto_strength=False)
    for result, want in ((low, 0.2), (high, 0.9)):
        densities = {d.params.density for d in result.plan.decisions.values() if d.strategy == "ties"}
        assert densities == {want}, "the user's density is the one the plan executes"
    estimated = {d.key: d.params.density for d in auto.plan.decisions.values() if d.strategy == "ties"}
    assert estimated and all(d == auto.plan.decisions[k].density for k, d in estimated.items())
    assert set(estimated.values()) - {0.2, 0.9}, "without --density the statistics' estimate is used"


def test_retention_shows_auto_strength_attenuation(tmp_path):
    t1 = {"lora_unet_x.lora_down.weight": torch.eye(4)[:2], "lora_unet_x.lora_up.weight": torch.eye(4)[:, :2].contiguous()}
    t2 = {"lora_unet_x.lora_down.weight": torch.eye(4)[2:], "lora_unet_x.lora_up.weight": torch.eye(4)[:, 2:].contiguous()}
    save_file(t1, tmp_path / "p.safetensors")
    save_file(t2, tmp_path / "q.safetensors")
    res = merge([tmp_path / "p.safetensors", tmp_path / "q.safetensors"], arch="unknown", mode="weighted_sum",
                rules="paper")
    scale = res.plan.scale(False)
    assert scale == pytest.approx(0.85)  # orthogonal pair: the sd_unet floor of the paper rules
    assert res.report.groups[0].retention == {"p": pytest.approx(scale), "q": pytest.approx(scale)}


def test_merged_patches_spool_next_to_the_output_and_go_with_the_result(loras, tmp_path):
    a, b = loras
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.safetensors"
    res = merge([a, b], output=out, arch="unknown", mode="weighted_sum", auto_strength=False, dtype="float32")
    spool = res.store.path
    assert spool.parent == out_dir and spool.exists()
    # the result holds handles, not tensors: the same values come back from the spool, exactly
    g = next(g for g in res.groups if g.key == "diffusion_model.blocks_0_q")
    expected = _deltas(a)["lora_unet_blocks_0_q"] + _deltas(b)["lora_unet_blocks_0_q"]
    torch.testing.assert_close(g.patch.dense(), expected, rtol=1e-5, atol=1e-6)
    res.save(out_dir / "again.safetensors")
    assert (out_dir / "again.safetensors").read_bytes() != b"" and g.rank == 6
    res.close()
    assert not spool.exists()
    assert sorted(p.name for p in out_dir.iterdir()) == ["again.safetensors", "m.safetensors"]


def test_missing_output_folder_fails_before_the_merge(loras, tmp_path, monkeypatch):
    import loramerge.pipeline as P
    from loramerge.errors import OutputError

    a, b = loras
    monkeypatch.setattr(P, "pass1", lambda *a, **k: pytest.fail("merged before checking the output folder"))
    with pytest.raises(OutputError, match="does not exist"):
        merge([a, b], output=tmp_path / "nope" / "m.safetensors", arch="unknown")


def test_cli_merge_leaves_only_the_output(loras, tmp_path):
    a, b = loras
    out = tmp_path / "cli" / "m.safetensors"
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "loramerge.cli", "merge", str(a), str(b), "-o", str(out),
                           "--arch", "unknown", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.parent.iterdir()] == ["m.safetensors"]
    assert set(_deltas(out)) == {"lora_unet_blocks_0_q", "lora_unet_blocks_0_k", "lora_unet_blocks_1_ff"}


def test_retention_from_the_gram_equals_products_with_the_merged_patch():
    from loramerge.engine import InputGram, _combination_metrics, _combine_lowrank, _generic_metrics
    from loramerge.patches import LowRank

    g = torch.Generator().manual_seed(2)
    xs = [LowRank(torch.randn(12, r, generator=g), torch.randn(r, 7, generator=g), 0.4 * r, (12, 7)) for r in (2, 3, 1)]
    coefficients, strengths = [0.5, -1.25, 2.0], [0.8, 1.0, 0.0]
    merged = _combine_lowrank(xs, coefficients)
    fast = _combination_metrics(InputGram(xs).matrix, coefficients, strengths)
    slow = _generic_metrics(merged, xs, strengths)
    assert fast[0] == pytest.approx(slow[0], rel=1e-12)  # the inputs' norms: same float64 products
    # the merged factors are float32 (c_k folded into up), so products with them agree to float32 rounding
    assert fast[1] == pytest.approx(slow[1], rel=1e-6, abs=1e-12)
    assert fast[2] == pytest.approx(slow[2], rel=1e-6)
    assert fast[0][2] == 0.0 and fast[1][2] == 0.0  # strength 0: no energy, no retention


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_output_dtype(loras, tmp_path, dtype):
    a, b = loras
    full = merge([a, b], output=tmp_path / "f32.safetensors", arch="unknown", mode="weighted_sum", auto_strength=False,
                 dtype="float32")
    half = merge([a, b], output=tmp_path / "half.safetensors", arch="unknown", mode="weighted_sum",
                 auto_strength=False, dtype=dtype)
    with safe_open(str(tmp_path / "half.safetensors"), "pt") as fh, safe_open(str(tmp_path / "f32.safetensors"), "pt") as f32:
        assert set(fh.keys()) == set(f32.keys())
        for k in fh.keys():
            assert fh.get_tensor(k).dtype == getattr(torch, dtype)
            assert torch.equal(fh.get_tensor(k), f32.get_tensor(k).to(getattr(torch, dtype)))  # one rounding, at the end
    assert load_recipe(tmp_path / "half.safetensors").dtype.value == dtype
    assert half.report.groups == full.report.groups  # the merge itself is the same
    full.save(tmp_path / "later.safetensors", dtype=dtype)  # save() can choose another precision
    assert (tmp_path / "later.safetensors").read_bytes() != (tmp_path / "f32.safetensors").read_bytes()


def test_cli_dtype_is_validated(loras, tmp_path):
    a, b = loras
    proc = subprocess.run([sys.executable, "-m", "loramerge.cli", "merge", str(a), str(b), "-o",
                           str(tmp_path / "m.safetensors"), "--arch", "unknown", "--dtype", "float8", "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "dtype" in proc.stderr and "float16" in proc.stderr
    assert not list(tmp_path.glob("m.safetensors*")) and not list(tmp_path.glob(".m.safetensors*"))


def test_measured_rules_never_scale_near_orthogonal_loras_down(tmp_path):
    # two exactly orthogonal rank-2 LoRAs: E_ref/E = 1/√2; the paper floors it at the preset's 0.85
    # (inert on the SLERP it chooses), the measured default sums them at the user's strengths
    t1 = {"lora_unet_x.lora_down.weight": torch.eye(4)[:2], "lora_unet_x.lora_up.weight": torch.eye(4)[:, :2].contiguous()}
    t2 = {"lora_unet_x.lora_down.weight": torch.eye(4)[2:], "lora_unet_x.lora_up.weight": torch.eye(4)[:, 2:].contiguous()}
    save_file(t1, tmp_path / "p.safetensors")
    save_file(t2, tmp_path / "q.safetensors")
    files = [tmp_path / "p.safetensors", tmp_path / "q.safetensors"]
    measured = merge(files, arch="unknown")
    assert measured.plan.decisions["diffusion_model.x"].strategy == "weighted_sum"
    assert measured.plan.scale(False) == 1.0 and "floored at 1.0" in measured.plan.auto["model"].reason
    torch.testing.assert_close(measured.groups[0].patch.dense(), torch.eye(4))
    paper = merge(files, arch="unknown", rules="paper")
    assert paper.plan.decisions["diffusion_model.x"].strategy == "slerp"
    assert paper.plan.scale(False) == pytest.approx(0.85)
