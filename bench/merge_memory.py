"""Benchmark: wall time and peak memory of `loramerge analyze` / `merge` against the kohya-style
baseline (materialise every ΔW, sum, full SVD per module), on rank-32 LoRAs with real SDXL shapes.

Each job runs in its own process; peak memory is that process's max RSS. Run:

    .venv/bin/python bench/merge_memory.py [--loras 2 8] [--out bench/results_merge.json]

Writes the raw numbers as JSON and prints a Markdown table (copied into docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def make_loras(folder: Path, n: int, rank: int = 32, seed: int = 0, stride: int = 1) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    from sdxl_shapes import sdxl_attention_modules

    mods = dict(list(sdxl_attention_modules().items())[::stride])  # every stride-th module, real shapes
    paths = []
    for k in range(n):
        path = folder / f"lora{k}.safetensors"
        paths.append(path)
        if path.exists():
            continue
        g = torch.Generator().manual_seed(seed * 1000 + k)
        t = {}
        for name, (o, i) in mods.items():
            stem = "lora_unet_" + name.replace(".", "_")
            t[f"{stem}.lora_down.weight"] = (torch.randn(rank, i, generator=g) / i ** 0.5).half()
            t[f"{stem}.lora_up.weight"] = (torch.randn(o, rank, generator=g) * 0.01).half()
            t[f"{stem}.alpha"] = torch.tensor(16.0).half()
        save_file(t, path)
    return paths


BASELINE = r'''
import sys, torch
from safetensors.torch import load_file, save_file
paths, out = sys.argv[1:-1], sys.argv[-1]
sds = [load_file(p) for p in paths]                       # every LoRA fully in memory
stems = sorted({k.rsplit(".", 2)[0] for sd in sds for k in sd if k.endswith("lora_down.weight")})
result = {}
for stem in stems:
    total, rank = None, 0
    for sd in sds:
        if f"{stem}.lora_down.weight" not in sd:
            continue
        down, up = sd[f"{stem}.lora_down.weight"].float(), sd[f"{stem}.lora_up.weight"].float()
        r = down.shape[0]; rank += r
        delta = up @ down * (float(sd[f"{stem}.alpha"]) / r)     # materialised ΔW
        total = delta if total is None else total + delta
    u, s, vh = torch.linalg.svd(total, full_matrices=False)   # full SVD
    root = s[:rank].sqrt()
    result[f"{stem}.lora_up.weight"] = (u[:, :rank] * root).contiguous().half()
    result[f"{stem}.lora_down.weight"] = (root[:, None] * vh[:rank]).contiguous().half()
    result[f"{stem}.alpha"] = torch.tensor(float(rank))
save_file(result, out)
'''

def measure(cmd: list[str]) -> dict:
    """Run `cmd` in a fresh process; wall seconds and its peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, None) and proc.stderr:
        raise RuntimeError(proc.stderr.read())
    return {"wall_s": round(wall, 2), "peak_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loras", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "loramerge_bench")
    ap.add_argument("--out", type=Path, default=HERE / "results_merge.json")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--stride", type=int, default=1,
                    help="keep every N-th SDXL module (the full-SVD baseline takes ~1 s per module on 2 cores)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "loramerge.cli"]
    from sdxl_shapes import sdxl_attention_modules

    n_modules = len(sdxl_attention_modules())
    results = []
    for n in args.loras:
        paths = [str(p) for p in make_loras(args.work, n, args.rank, stride=args.stride)]
        row = {"loras": n, "rank": args.rank, "modules": len(range(0, n_modules, args.stride)), "stride": args.stride}
        row["analyze"] = measure(exe + ["analyze", *paths, "--quiet", "--arch", "sdxl"])
        row["merge"] = measure(exe + ["merge", *paths, "-o", str(args.work / f"merged{n}.safetensors"), "--quiet",
                                      "--arch", "sdxl", "--mode", "weighted_average"])
        row["merge_auto"] = measure(exe + ["merge", *paths, "-o", str(args.work / f"auto{n}.safetensors"), "--quiet",
                                           "--arch", "sdxl"])
        if not args.skip_baseline:
            script = args.work / "baseline.py"
            script.write_text(BASELINE)
            row["baseline_materialize_svd"] = measure([sys.executable, str(script), *paths, str(args.work / f"base{n}.safetensors")])
        results.append(row)
        print(json.dumps(row))
    args.out.write_text(json.dumps(results, indent=2))
    print("\n| LoRAs | job | wall s | peak MiB |\n|---|---|---|---|")
    for row in results:
        for job in ("analyze", "merge", "merge_auto", "baseline_materialize_svd"):
            if job in row:
                print(f"| {row['loras']} | {job} | {row[job]['wall_s']} | {row[job]['peak_mib']} |")


if __name__ == "__main__":
    main()
