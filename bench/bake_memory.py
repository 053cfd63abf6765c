"""Benchmark: peak memory of `loramerge bake` on a synthetic 2 GB checkpoint, against the size of
its largest tensor.

The checkpoint holds every second SDXL UNet attention/FF linear (real shapes, LDM names under
``model.diffusion_model.``) in float16: 361 tensors, 2.05 GiB, the largest (``ff.net.0.proj``,
10240 × 1280) 25 MiB. The LoRA is rank 32 on every one of them (kohya names, bench/merge_memory.py's
generator), so every tensor is patched. Each job runs in its own process; its peak is its own
high-water mark (``VmHWM``, bench/_peak.py). The baseline job is the same interpreter importing
torch and loramerge's bake path and doing nothing else: the constant the target allows.

    .venv/bin/python bench/bake_memory.py [--work DIR] [--out bench/results_bake.json]

The target (issue 13): peak < 3 × largest tensor + the constant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
STRIDE = 2


def make_checkpoint(path: Path, seed: int = 0) -> None:
    """Written tensor by tensor with loramerge's streaming writer (this process stays small)."""
    import torch

    from loramerge.formats.streaming import StreamingSafetensors
    from sdxl_shapes import sdxl_attention_modules

    g = torch.Generator().manual_seed(seed)
    with StreamingSafetensors(path, torch.float16) as out:
        for name, (o, i) in list(sdxl_attention_modules().items())[::STRIDE]:
            out.add(f"model.diffusion_model.{name}.weight", (torch.randn(o, i, generator=g) / i**0.5).half())
        out.commit({"format": "pt"})


BASELINE = "import torch, loramerge.api, loramerge.tools.bake; torch.ones(4) @ torch.ones(4)"


def measure(args: list[str], work: Path) -> dict:
    peak = work / "peak.txt"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / "_peak.py"), str(peak), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return {"peak_mib": int(peak.read_text()) / 1024, "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=None, help="folder for the checkpoint (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=HERE / "results_bake.json")
    ap.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make is not None:
        make_checkpoint(args.make)
        return
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        ckpt = work / "model.safetensors"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make", str(ckpt)], check=True)
        from merge_memory import make_loras
        from safetensors import safe_open

        (lora,) = make_loras(work, 1, rank=32, stride=STRIDE)
        with safe_open(str(ckpt), "pt") as fh:
            largest = max(fh.get_slice(k).get_shape()[0] * fh.get_slice(k).get_shape()[1] * 2 for k in fh.keys())
        script = work / "baseline.py"
        script.write_text(BASELINE)
        baseline = measure([str(script)], work)
        baked = measure(
            ["-m", "loramerge.cli", "bake", str(ckpt), str(lora), "-o", str(work / "baked.safetensors"), "-q"], work
        )
        result = {
            "checkpoint_gib": round(ckpt.stat().st_size / 2**30, 3),
            "largest_tensor_mib": round(largest / 2**20, 1),
            "baseline": baseline,
            "bake": baked,
        }
        result["bake_over_baseline_mib"] = round(baked["peak_mib"] - baseline["peak_mib"], 1)
        result["target_mib"] = round(3 * largest / 2**20 + baseline["peak_mib"], 1)
        result["met"] = baked["peak_mib"] < result["target_mib"]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
