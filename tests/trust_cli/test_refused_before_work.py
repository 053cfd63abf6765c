"""Options that cannot work are one `error: ...` line (exit 2) naming the option and the fix, found
before any work (pass 1 is made to fail if it is reached) and leaving the output folder as it was:
target filters that are not regular expressions, a --mode strategy that cannot take the number of
LoRAs meeting in a group, a --device torch cannot compute on here."""

from __future__ import annotations

import pytest
import torch

from loramerge.api import merge
from loramerge.errors import OptionError
from tests.trust_cli.helpers import cli, examples, listing, work_must_not_start  # noqa: F401


@pytest.mark.parametrize("flag", ["--include", "--exclude"])
def test_a_target_filter_that_is_not_a_regex(examples, tmp_path, capsys, monkeypatch, flag):
    style, detail, _ = examples
    before = listing(tmp_path)
    work_must_not_start(monkeypatch)
    code, _, err = cli(
        ["merge", style, detail, "-o", tmp_path / "out.safetensors", flag, "output_blocks[", "-q"], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {flag} 'output_blocks[' is not a regular expression")
    assert "'output_blocks\\['" in err  # the fix: the pattern escaped
    assert listing(tmp_path) == before
    with pytest.raises(ValueError, match=r"--include 'a\(' is not a regular expression"):
        merge([{"path": str(style), "include": ["a("]}])


def test_ziplora_with_three_loras_is_refused_before_the_work(examples, tmp_path, capsys, monkeypatch):
    before = listing(tmp_path)
    work_must_not_start(monkeypatch)
    code, _, err = cli(["merge", *examples, "-o", tmp_path / "out.safetensors", "--mode", "ziplora", "-q"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--mode ziplora merges exactly 2 LoRAs per group, but 3 LoRAs" in err
    assert "(style_kohya, detail_kohya, character_peft)" in err and "--preserve" in err and "--mode auto" in err
    assert listing(tmp_path) == before


def test_add_difference_needs_three_loras(examples, tmp_path, capsys, monkeypatch):
    style, detail, character = examples
    before = listing(tmp_path)
    work_must_not_start(monkeypatch)
    code, _, err = cli(["merge", style, detail, "-o", tmp_path / "o.safetensors", "--mode", "add_difference"], capsys)
    assert code == 2 and "--mode add_difference merges exactly 3 LoRAs per group, but 2 LoRAs" in err
    assert listing(tmp_path) == before
    with pytest.raises(OptionError, match="add_difference merges exactly 3"):
        merge([style, detail], mode="add_difference")


def test_the_counts_that_fit_are_merged(examples, tmp_path):
    """The check refuses only what would fail: 2 LoRAs for ziplora; a third preserved one is added on top."""
    style, detail, character = examples
    with merge([style, detail, {"path": str(character), "preserve": True}], mode="ziplora", rank=4) as result:
        assert {d.strategy for d in result.plan.decisions.values() if d.n_loras == 2} == {"ziplora"}


def test_an_unknown_device_lists_the_choices(examples, tmp_path, capsys, monkeypatch):
    style, detail, _ = examples
    work_must_not_start(monkeypatch)
    code, _, err = cli(["merge", style, detail, "-o", tmp_path / "o.safetensors", "--device", "gpu", "-q"], capsys)
    assert code == 2
    assert "error: --device 'gpu' is not a device; choose one of cpu, cuda, mps, xpu" in err
    assert "available here: cpu" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in examples)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error path needs a torch without CUDA")
def test_cuda_on_a_cpu_only_torch_is_a_clear_error(examples, tmp_path, capsys, monkeypatch):
    style, detail, _ = examples
    work_must_not_start(monkeypatch)
    for command in (["merge", "-o", tmp_path / "o.safetensors"], ["analyze"]):
        code, _, err = cli([*command, style, detail, "--device", "cuda", "-q"], capsys)
        assert code == 2 and "Traceback" not in err and "AssertionError" not in err
        assert "error: --device cuda: torch" in err and "cannot compute there" in err and "--device cpu" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_where_the_device_is_used_is_said(capsys):
    """Only groups merged on dense deltas compute on --device; the CLI says which and why the others do not."""
    from loramerge.cli.merge_cmd import note_device

    note_device("cpu", ["exact", "dense"])
    assert capsys.readouterr().err == ""
    note_device("cuda:1", ["exact", "dense", "basis", "dense", "exact"])
    err = capsys.readouterr().err
    assert "--device cuda:1 computed the 2 group(s) merged on dense deltas; the other 3" in err
    assert "on the CPU" in err
