"""`resize`: exact when the target rank is at least the input's; the kept rank of every kohya
criterion equals the one a dense SVD of each ΔW gives (computed here by plain loops over the
singular values); pruning's effect on ΔW equals the one computed from a dense SVD."""

from __future__ import annotations

import math

import pytest
import torch

from loramerge.errors import LoraMergeError, OutputError
from loramerge.formats.align import load_group
from loramerge.inspection import open_and_align
from loramerge.tools import Criterion, resize

# one worker builds this package's ComfyUI SDXL model (scripts/check.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tools_comfy_sdxl")


def deltas(path) -> dict[str, torch.Tensor]:
    """Every group's ΔW of a LoRA file, float64, through loramerge's reader (tested on its own
    against the producing libraries in tests/formats/test_fixture_truth.py)."""
    from loramerge import architectures as A

    _, alignment, _ = open_and_align(path)
    table = A.get_table(alignment.architecture)
    return {g: load_group(alignment, table, g).dense().double() for g in alignment.groups}


@pytest.fixture(scope="module")
def inputs(sdxl_lora):
    return deltas(sdxl_lora.path)


def spectrum(delta: torch.Tensor) -> list[float]:
    return torch.linalg.svdvals(delta.reshape(delta.shape[0], -1)).tolist()


def expected_rank(s: list[float], method: str, value: float, cap: int | None) -> int:
    """kohya resize_lora's rule, written out as loops over the singular values."""
    if method == "rank":
        k = int(value)
    elif method == "sv_ratio":
        k = sum(1 for x in s if x > s[0] / value)
    else:
        k, acc = len(s), 0.0
        total = sum(x * x for x in s) if method == "sv_fro" else sum(s)
        for i, x in enumerate(s):
            acc += x * x if method == "sv_fro" else x
            if acc / total >= (value * value if method == "sv_fro" else value):
                k = i + 1
                break
    k = max(1, min(k, len(s)))
    if s[0] <= 1e-6:
        return 1
    return min(k, cap) if cap is not None else k


def test_exact_when_the_target_rank_is_not_below_the_input_rank(sdxl_lora, inputs, tmp_path):
    out = tmp_path / "r8.safetensors"
    report = resize(sdxl_lora.path, out, criterion=Criterion(rank=8), dtype="float32")
    assert {m.input_rank for m in report.modules} == {2, 4, 8}
    assert all(m.rank == m.input_rank for m in report.modules)
    got = deltas(out)
    assert got.keys() == inputs.keys()
    for g, want in inputs.items():
        err = float((got[g] - want).norm() / want.norm())
        assert err < 1e-5, (g, err)
    assert report.worst_error < 1e-6


def test_exact_output_loads_in_comfyui(sdxl_lora, comfy_sdxl, tmp_path):
    from tests.clients._comfy import assert_loaded_exactly
    from tests.clients._common import expected_deltas

    out = tmp_path / "r16.safetensors"
    resize(sdxl_lora.path, out, criterion=Criterion(rank=16), dtype="float32")
    assert_loaded_exactly(comfy_sdxl, comfy_sdxl.load(out), expected_deltas([(sdxl_lora, 1.0)]), "resized to 16")


@pytest.mark.parametrize(
    "method, value, cap",
    [
        ("rank", 3, None),
        ("sv_fro", 0.9, None),
        ("sv_cumulative", 0.6, None),
        ("sv_ratio", 2.5, None),
        ("sv_fro", 0.99, 3),
    ],
)
def test_kept_rank_matches_a_dense_svd(sdxl_lora, inputs, tmp_path, method, value, cap):
    criterion = Criterion(rank=cap) if method != "rank" else Criterion(rank=int(value))
    if method != "rank":
        criterion = Criterion(rank=cap, **{method: value})
    out = tmp_path / f"{method}.safetensors"
    report = resize(sdxl_lora.path, out, criterion=criterion, dtype="float32")
    got = deltas(out)
    kept = set()
    for m in report.modules:
        want = inputs[m.group]
        full = spectrum(want)
        s = full[: m.input_rank]  # the rest is rounding noise of a rank-r product
        assert max(full[m.input_rank :], default=0.0) < 1e-6 * full[0]
        k = expected_rank(s, method, value, cap)
        assert m.rank == k, (m.group, m.rank, k, s)
        kept.add(k)
        tail = math.sqrt(sum(x * x for x in s[k:]))
        norm = math.sqrt(sum(x * x for x in s))
        assert math.isclose(m.rel_error, tail / norm, rel_tol=1e-4, abs_tol=1e-6)
        assert math.isclose(m.fro_retained, math.sqrt(1 - (tail / norm) ** 2), rel_tol=1e-6)
        # the output is the best rank-k approximation of ΔW: its error is exactly the tail
        err = float((got[m.group] - want).norm())
        assert math.isclose(err, tail, rel_tol=1e-3, abs_tol=1e-6 * norm), (m.group, err, tail)
    assert len(kept) > 1 or method == "rank"  # the criterion does differ between modules


def test_prune_effect_matches_a_dense_svd(sdxl_lora, inputs, tmp_path):
    """Pruning zeroes |x| ≤ T in the balanced factors U√σ, √σVᵀ: the same ΔW from a dense SVD."""
    threshold = 0.02
    out = tmp_path / "pruned.safetensors"
    report = resize(sdxl_lora.path, out, prune_threshold=threshold, dtype="float32")
    got = deltas(out)
    shares, checked = [], 0
    for m in report.modules:
        want = inputs[m.group]
        mat = want.reshape(want.shape[0], -1)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = m.input_rank
        root = s[:r].sqrt()
        up, down = u[:, :r] * root, root[:, None] * vh[:r]
        shares.append(m.pruned)
        entries = torch.cat([up.flatten(), down.flatten()]).abs()
        if bool(((entries - threshold).abs() < 1e-3 * threshold).any()):
            continue  # an entry at the threshold: float32 and float64 may fall on either side of it
        checked += 1
        pruned = (up * (up.abs() > threshold)) @ (down * (down.abs() > threshold))
        change = float((pruned - mat).norm() / mat.norm())
        assert math.isclose(m.prune_change, change, rel_tol=1e-3, abs_tol=1e-6), (m.group, m.prune_change, change)
        assert math.isclose(m.rel_error, change, rel_tol=1e-3, abs_tol=1e-6)
        err = float((got[m.group].reshape(mat.shape) - pruned).norm() / mat.norm())
        assert err < 1e-4, (m.group, err)
        zeroed = int((up.abs() <= threshold).sum() + (down.abs() <= threshold).sum())
        assert round(m.pruned * (up.numel() + down.numel())) == zeroed
    assert checked > 0.8 * len(report.modules), checked
    assert 0.05 < sum(shares) / len(shares) < 0.95, sum(shares) / len(shares)  # the threshold bites, not all


def test_bad_requests_are_refused(sdxl_lora, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(LoraMergeError, match="say what to do"):
        resize(sdxl_lora.path, out)
    with pytest.raises(LoraMergeError, match="one of"):
        resize(sdxl_lora.path, out, criterion=Criterion(sv_fro=0.9, sv_ratio=2))
    with pytest.raises(LoraMergeError, match="at least 1"):
        resize(sdxl_lora.path, out, criterion=Criterion(sv_ratio=0.5))
    with pytest.raises(LoraMergeError, match=r"\(0, 1\]"):
        resize(sdxl_lora.path, out, criterion=Criterion(sv_cumulative=1.5))
    with pytest.raises(OutputError, match="input"):
        resize(sdxl_lora.path, sdxl_lora.path, criterion=Criterion(rank=2), overwrite=True)
    assert not out.exists()


def test_cli_resize(sdxl_lora, tmp_path):
    import json

    from ._cli import cli

    out, js = tmp_path / "cli.safetensors", tmp_path / "r.json"
    proc = cli(
        "resize",
        sdxl_lora.path,
        "-o",
        out,
        "--sv-fro",
        0.9,
        "--rank",
        4,
        "--prune-threshold",
        0.01,
        "--report-json",
        js,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(js.read_text())
    assert max(m["rank"] for m in report["modules"]) <= 4 and any(m["pruned"] > 0 for m in report["modules"])
    assert "kept rank" in proc.stdout
    proc = cli("resize", sdxl_lora.path, "-o", tmp_path / "y.safetensors", "--sv-fro", 0.9, "--sv-ratio", 2)
    assert proc.returncode == 2 and "error:" in proc.stderr
