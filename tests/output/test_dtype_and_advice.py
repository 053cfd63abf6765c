"""Output precision follows the inputs (`--dtype auto`), values never overflow silently, and the CLI
warns when a common client is measured not to load the chosen format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from loramerge.api import merge
from loramerge.convert import convert
from loramerge.enums import OutputDtype
from loramerge.formats.files import read_header
from loramerge.formats.streaming import narrowed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _dtypes(path: Path) -> set[str]:
    header, _ = read_header(path)
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _lora(path: Path, dtype: torch.dtype, scale: float = 1.0) -> Path:
    g = torch.Generator().manual_seed(len(path.name))
    t = {"lora_unet_x.lora_down.weight": torch.randn(2, 8, generator=g).to(dtype),
         "lora_unet_x.lora_up.weight": (scale * torch.randn(6, 2, generator=g)).to(dtype)}
    save_file(t, path)
    return path


@pytest.mark.parametrize("dtypes, want", [(["F32"], "float16"), (["F16", "F32"], "float16"), (["BF16", "F32"], "bfloat16"),
                                          (["bfloat16"], "bfloat16"), ([], "float16")])
def test_auto_resolves_to_the_inputs_half_precision(dtypes, want):
    assert OutputDtype.AUTO.resolved(dtypes).value == want
    assert OutputDtype.FLOAT32.resolved(dtypes) is OutputDtype.FLOAT32


def test_readme_example_merge_writes_float16_and_float32_on_request(tmp_path):
    a, b = EXAMPLES / "style_kohya.safetensors", EXAMPLES / "detail_kohya.safetensors"
    with merge([a, b], output=tmp_path / "h.safetensors") as half, \
            merge([a, b], output=tmp_path / "f.safetensors", dtype="float32") as full:
        assert half.report.output.dtype == "float16" and full.report.output.dtype == "float32"
    assert _dtypes(tmp_path / "h.safetensors") == {"F16"} and _dtypes(tmp_path / "f.safetensors") == {"F32"}
    recipe = json.loads(read_header(tmp_path / "h.safetensors")[1]["loramerge.recipe"])
    assert recipe["config"]["dtype"] == "float16", "the recipe records the resolved dtype"
    # fp16 costs little accuracy: every tensor within fp16's relative rounding of the fp32 one
    with safe_open(str(tmp_path / "h.safetensors"), "pt") as h, safe_open(str(tmp_path / "f.safetensors"), "pt") as f:
        for name in f.keys():
            x, y = h.get_tensor(name).float(), f.get_tensor(name)
            assert float((x - y).norm() / y.norm().clamp_min(1e-30)) < 1e-3, name
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * (tmp_path / "f.safetensors").stat().st_size


def test_bfloat16_inputs_give_bfloat16(tmp_path):
    a, b = _lora(tmp_path / "a.safetensors", torch.bfloat16), _lora(tmp_path / "bb.safetensors", torch.float32)
    with merge([a, b], arch="unknown", output=tmp_path / "o.safetensors"):
        pass
    assert _dtypes(tmp_path / "o.safetensors") == {"BF16"}


def test_values_beyond_float16_are_written_in_float32_and_said(tmp_path):
    assert narrowed(torch.tensor([1.0, 7e4]), torch.float16).dtype == torch.float32
    assert narrowed(torch.tensor([1.0, 6e4]), torch.float16).dtype == torch.float16
    assert narrowed(torch.tensor([1.0, 7e4]), torch.bfloat16).dtype == torch.bfloat16  # bf16 holds it
    a = _lora(tmp_path / "a.safetensors", torch.float32, scale=1e5)
    with merge([a], arch="unknown", output=tmp_path / "o.safetensors") as r:
        assert r.report.output.widened == ["lora_unet_x.lora_up.weight"]
    with safe_open(str(tmp_path / "o.safetensors"), "pt") as f:
        up = f.get_tensor("lora_unet_x.lora_up.weight")
        assert up.dtype == torch.float32 and torch.isfinite(up).all()
        assert f.get_tensor("lora_unet_x.lora_down.weight").dtype == torch.float16


def test_convert_follows_the_source_precision(tmp_path):
    out = convert(EXAMPLES / "character_peft.safetensors", tmp_path / "c.safetensors")
    assert out.dtype == "float16" and _dtypes(tmp_path / "c.safetensors") == {"F16"}
    convert(EXAMPLES / "character_peft.safetensors", tmp_path / "f.safetensors", dtype="float32")
    assert _dtypes(tmp_path / "f.safetensors") == {"F32"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loramerge.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_warns_where_a_client_does_not_load_the_format(tmp_path):
    a, b = "examples/style_kohya.safetensors", "examples/detail_kohya.safetensors"
    proc = _cli("merge", a, b, "-o", str(tmp_path / "d.safetensors"), "--format", "diffusers", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "ComfyUI 0.3.64 loads only part of diffusers-format SDXL LoRAs" in proc.stderr
    assert "use --format kohya or comfy" in proc.stderr
    proc = _cli("merge", a, b, "-o", str(tmp_path / "k.safetensors"), "-q")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    proc = _cli("convert", "examples/character_peft.safetensors", "-o", str(tmp_path / "c.safetensors"),
                "--format", "comfy", "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    assert "diffusers does not load comfy-format SDXL LoRAs" in proc.stderr
    assert _dtypes(tmp_path / "c.safetensors") == {"BF16"}


def test_the_report_warns_where_a_lora_is_cancelled():
    """The README example cancels the character LoRA in output_blocks.1.1 (issue 10): say so, by group."""
    inputs = [f"{EXAMPLES / 'style_kohya.safetensors'}:0.8", EXAMPLES / "character_peft.safetensors",
              f"{EXAMPLES / 'detail_kohya.safetensors'}:0.7"]
    with merge(inputs) as result:
        report = result.report
    lost = [w for w in report.warnings if w.startswith("character_peft is nearly cancelled")]
    assert len(lost) == 1 and "output_blocks.1.1." in lost[0]
    rows = [g for g in report.groups if g.n_loras > 1 and g.retention.get("character_peft") is not None]
    n = sum(g.retention["character_peft"] < 0.3 for g in rows)
    assert n > 0 and f"in {n} group(s)" in lost[0]
