"""Benchmark: wall time and peak memory of `loramerge analyze` / `merge` against the kohya-style
baseline (materialise every ΔW, sum, full SVD per module), on rank-32 LoRAs with real SDXL shapes.

Each job runs in its own process; peak memory is that process's own high-water mark (VmHWM, via
bench/_peak.py: the ru_maxrss of a child includes its parent's memory at fork). The LoRAs are
generated in a separate process too, so that this one stays small. Run:

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

def measure(args: list[str], work: Path) -> dict:
    """Run ``python <args>`` in a fresh process; wall seconds and its own peak RSS (MiB)."""
    peak = work / "peak.txt"
    peak.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "_peak.py"), str(peak), *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_mib": round(int(peak.read_text()) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loras", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "loramerge_bench")
    ap.add_argument("--out", type=Path, default=HERE / "results_merge.json")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--stride", type=int, default=1,
                    help="keep every N-th SDXL module (the full-SVD baseline takes ~1 s per module on 2 cores)")
    ap.add_argument("--make", type=int, help=argparse.SUPPRESS)  # internal: generate N LoRAs and exit
    args = ap.parse_args()
    if not args.make:  # generated files are reused: one folder per (rank, stride)
        args.work = args.work / f"rank{args.rank}_stride{args.stride}"
    args.work.mkdir(parents=True, exist_ok=True)
    if args.make:
        make_loras(args.work, args.make, args.rank, stride=args.stride)
        return
    exe = ["-m", "loramerge.cli"]
    from sdxl_shapes import sdxl_attention_modules

    n_modules = len(sdxl_attention_modules())
    results = []
    for n in args.loras:
        # generated in a child process: this one never imports torch, so it stays small
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make", str(n), "--rank", str(args.rank),
                        "--stride", str(args.stride), "--work", str(args.work)], check=True)
        paths = [str(args.work / f"lora{k}.safetensors") for k in range(n)]
        row = {"loras": n, "rank": args.rank, "modules": len(range(0, n_modules, args.stride)), "stride": args.stride,
               "torch_threads": os.environ.get("OMP_NUM_THREADS", "default")}
        row["analyze"] = measure(exe + ["analyze", *paths, "--quiet", "--arch", "sdxl"], args.work)
        row["merge"] = measure(exe + ["merge", *paths, "-o", str(args.work / f"merged{n}.safetensors"), "--quiet",
                                      "--arch", "sdxl", "--mode", "weighted_average"], args.work)
        row["merge_auto"] = measure(exe + ["merge", *paths, "-o", str(args.work / f"auto{n}.safetensors"), "--quiet",
                                           "--arch", "sdxl"], args.work)
        if not args.skip_baseline:
            script = args.work / "baseline.py"
            script.write_text(BASELINE)
            row["baseline_materialize_svd"] = measure([str(script), *paths, str(args.work / f"base{n}.safetensors")],
                                                      args.work)
        results.append(row)
        print(json.dumps(row))
    args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))


JOBS = ("analyze", "merge", "merge_auto", "baseline_materialize_svd")


def markdown(results: list[dict]) -> str:
    """The tables of docs/PERFORMANCE.md: every job, then the ratios the acceptance names."""
    lines = ["| LoRAs | modules | job | wall s | peak MiB |", "|---|---|---|---|---|"]
    for row in results:
        for job in JOBS:
            if job in row:
                lines.append(f"| {row['loras']} | {row['modules']} | {job} | {row[job]['wall_s']} | {row[job]['peak_mib']} |")
    by_n = {row["loras"]: row for row in results}
    if len(by_n) >= 2:
        lo, hi = min(by_n), max(by_n)
        lines += ["", f"| job | peak {hi} / peak {lo} LoRAs | wall {hi} / wall {lo} |", "|---|---|---|"]
        for job in JOBS:
            if job in by_n[lo] and job in by_n[hi]:
                a, b = by_n[lo][job], by_n[hi][job]
                lines.append(f"| {job} | {b['peak_mib'] / a['peak_mib']:.2f}x | {b['wall_s'] / a['wall_s']:.2f}x |")
    base = "baseline_materialize_svd"
    if any(base in row for row in results):
        lines += ["", "| LoRAs | job | wall vs baseline | peak vs baseline |", "|---|---|---|---|"]
        for row in results:
            if base in row:
                for job in JOBS[:3]:
                    lines.append(f"| {row['loras']} | {job} | {row[job]['wall_s'] / row[base]['wall_s']:.3f}x | "
                                 f"{row[job]['peak_mib'] / row[base]['peak_mib']:.2f}x |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
