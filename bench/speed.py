"""Benchmark (issue 11): CPU seconds, wall seconds and peak memory of whole `loramerge merge` runs,
every figure measured side by side in one run (the measuring itself: bench/_measure.py).

Every job is its own process, measured from outside: CPU seconds are the child's user + system time
(``os.wait4`` rusage, all its threads, interpreter start and ``import torch`` included), wall seconds
from spawn to exit, peak memory its own high-water mark (``VmHWM``, via bench/_peak.py). The jobs
being compared run alternately (A B C A B C ...), ``--repeat`` rounds; medians are reported.

1. ``synthetic``: the deterministic 55-group stack of bench/pass1_speed.py (3 LoRAs, ranks 8/12/16,
   SDXL kohya names, widths 320-1280, text-encoder groups included) written as fp16 .safetensors;
   ``loramerge merge`` in the default auto mode. ``startup`` is ``loramerge --version`` (the command
   line's whole start-up: torch and every command imported), the floor every run pays.
2. ``sdxl``: 3 rank-32 LoRAs over the real SDXL attention shapes (bench/merge_memory.py's
   ``make_loras``; all 722 modules unless ``--stride``): ``--mode weighted_sum`` and the default
   auto mode against a minimal exact QR merge written here (``QR_MERGE``, one torch thread).
3. ``contention`` (every ``--contention-stride``-th module): weighted_sum and auto beside one
   single-threaded busy loop (pinned to one core where the OS allows), and two weighted_sum merges
   started together, against the quiet runs of the same rounds; the same with ``--threads 2``
   forced; weighted_sum under ``OMP_NUM_THREADS=1`` quiet and two at once; and the QR script on 1
   and on 2 OpenMP threads, quiet and beside the busy loop (controls).
4. ``ties_baseline`` (every ``--ties-stride``-th module): weighted_sum, auto, ``--mode ties``, the
   QR script and the materialise + full-SVD baseline of bench/merge_memory.py on the same modules.
5. ``memory`` (every ``--memory-stride``-th module): ``--mode ties`` with 8 against 2 LoRAs.

loramerge runs with its defaults (automatic ``--threads``: cores less the 1-minute load) unless
``--threads`` is given; the thread count it would pick is recorded before each job (the load
average still counts the jobs this bench has just run, so after the first job it is mostly 1 on
2 cores). Each run also records the CPU seconds the rest of the machine spent meanwhile. Run from
the repository root on a quiet machine:

    .venv/bin/python bench/speed.py          # ~15 min on 2 cores
    .venv/bin/python bench/speed.py --repeat 1 --stride 8 --contention-stride 16 --ties-stride 64   # ~3 min

Prints a Markdown summary and writes the raw numbers to bench/results_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _measure import LIVE, Job, kill_live, rounds, run_alone, run_beside_busy, run_together, summary  # noqa: E402
from merge_memory import BASELINE, make_loras  # noqa: E402  (torch is imported inside make_loras only)
from sdxl_shapes import sdxl_attention_modules  # noqa: E402

from loramerge.threads import available_cores  # noqa: E402  (no torch import)

CLI = ["-m", "loramerge.cli", "merge"]
# The command line's start-up alone: `main` imports every command (torch included), prints the version.
STARTUP = 'import sys\nsys.argv = ["loramerge", "--version"]\nfrom loramerge.cli import main\nmain()\n'

# Minimal exact merge: ΔW = Σ_i (α_i/r_i)·up_i·down_i = U·D with U, D the concatenated factors.
# U = Qu·Ru and Dᵀ = Qd·Rd give ΔW = Qu·(Ru·Rdᵀ)·Qdᵀ; the SVD of the small Σr×Σr core re-factors it.
QR_MERGE = r'''
import sys, torch
from safetensors import safe_open
from safetensors.torch import save_file

torch.set_num_threads(int(sys.argv[1]))
paths, out = sys.argv[2:-1], sys.argv[-1]
files = [safe_open(p, "pt") for p in paths]
keys = [set(f.keys()) for f in files]
stems = sorted({k[: -len(".lora_down.weight")] for ks in keys for k in ks if k.endswith(".lora_down.weight")})
result = {}
for stem in stems:
    ups, downs, shape = [], [], None
    for f, ks in zip(files, keys):
        if f"{stem}.lora_down.weight" not in ks:
            continue
        down = f.get_tensor(f"{stem}.lora_down.weight").float()
        up = f.get_tensor(f"{stem}.lora_up.weight").float()
        r, shape = down.shape[0], down.shape[1:]
        alpha = float(f.get_tensor(f"{stem}.alpha")) if f"{stem}.alpha" in ks else float(r)
        ups.append(up.reshape(up.shape[0], r) * (alpha / r))
        downs.append(down.reshape(r, -1))
    qu, ru = torch.linalg.qr(torch.cat(ups, 1))           # U = qu ru            [out, R], [R, R]
    qd, rd = torch.linalg.qr(torch.cat(downs, 0).T)       # D = rdᵀ qdᵀ          [in, R],  [R, R]
    a, s, bh = torch.linalg.svd(ru @ rd.T)                # core = a diag(s) bh  [R, R]
    root, rank = s.sqrt(), s.shape[0]
    up = (qu @ a) * root
    down = root[:, None] * (bh @ qd.T)
    result[f"{stem}.lora_up.weight"] = up.reshape(up.shape[0], rank, *[1] * (len(shape) - 1)).half()
    result[f"{stem}.lora_down.weight"] = down.reshape(rank, *shape).contiguous().half()
    result[f"{stem}.alpha"] = torch.tensor(float(rank)).half()  # scale α/rank = 1
save_file(result, out)
'''

# ---------------------------------------------------------------- inputs (made in a child process)

def kohya_stem(key: str) -> str:
    """pass1_speed's native key -> kohya SDXL name (UNet keeps the LDM block names, as kohya's SDXL LoRAs do)."""
    branch, rest = key.split(".", 1)
    prefix = {"te1": "lora_te1", "te2": "lora_te2", "diffusion_model": "lora_unet"}[branch]
    return f"{prefix}_{rest.replace('.', '_')}"


def make_synthetic(folder: Path) -> list[Path]:
    """pass1_speed's 55-group stack as three fp16 kohya .safetensors files (deterministic)."""
    import torch
    from pass1_speed import RANKS, build_stack
    from safetensors.torch import save_file

    paths = [folder / f"synthetic{i}.safetensors" for i in range(len(RANKS))]
    if all(p.exists() for p in paths):
        return paths
    tensors: list[dict[str, torch.Tensor]] = [{} for _ in RANKS]
    for _kind, key, loras, patches in build_stack():
        stem = kohya_stem(key)
        for i, p in zip(loras, patches):
            tail = [1] * (len(p.shape) - 2)  # conv: up [out, r, 1, 1], down [r, in, kh, kw]
            tensors[i][f"{stem}.lora_up.weight"] = p.up.reshape(p.shape[0], p.rank, *tail).half().contiguous()
            tensors[i][f"{stem}.lora_down.weight"] = p.down.reshape(p.rank, *p.shape[1:]).half().contiguous()
            tensors[i][f"{stem}.alpha"] = torch.tensor(p.scale * p.rank).half()
    for path, t in zip(paths, tensors):
        save_file(t, path)
    return paths


def compile_bytecode() -> None:
    """Byte-compile loramerge's modules first, as `pip install` does: an editable install under
    PYTHONDONTWRITEBYTECODE=1 (set on some machines) would otherwise compile every module again in
    every measured run (~0.15 CPU s a merge, 2026-12-06)."""
    import loramerge  # the bench process only (no torch: the package's __init__ is light)

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(loramerge.__file__).parent)], check=True)


def make_inputs(work: Path, what: str) -> None:
    """Generated in a child: the bench process never imports torch."""
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make", what, "--work", str(work)], check=True)


# ---------------------------------------------------------------- the bench

def wait_quiet(limit_s: float, below: float, log) -> float:
    """Poll the 1-minute load every 30 s, up to `limit_s`, until it is below `below`."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        log(f"load {os.getloadavg()[0]:.2f} >= {below}: waiting")
        time.sleep(30)
    return os.getloadavg()[0]


def git_state() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "src_modified": bool(git("status", "--porcelain", "src"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every comparison (medians reported)")
    ap.add_argument("--stride", type=int, default=1, help="every N-th SDXL module for the sdxl section")
    ap.add_argument("--contention-stride", type=int, default=4, help="every N-th module for the contention section")
    ap.add_argument("--ties-stride", type=int, default=16,
                    help="every N-th module for TIES and the full-SVD baseline (~0.6 s a module) and their comparators")
    ap.add_argument("--memory-stride", type=int, default=32, help="every N-th module for TIES with 8 vs 2 LoRAs")
    ap.add_argument("--threads", type=int, help="pass --threads N to every loramerge job (default: its automatic)")
    ap.add_argument("--qr-threads", type=int, default=1, help="torch threads of the QR reference script")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--wait-quiet", type=float, default=300,
                    help="wait up to this long for load < 0.7 first, and before each job while others keep "
                    "more than a quarter of a core busy")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "loramerge_bench_speed")
    ap.add_argument("--out", type=Path, default=HERE / "results_speed.json")
    ap.add_argument("--make", help=argparse.SUPPRESS)  # internal: generate inputs and exit
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.make:
        kind, *rest = args.make.split(":")
        if kind == "synthetic":
            make_synthetic(args.work)
        else:  # sdxl:<loras>:<stride>
            folder = args.work / f"rank32_stride{rest[1]}"
            folder.mkdir(exist_ok=True)
            make_loras(folder, int(rest[0]), 32, stride=int(rest[1]))
        return

    def log(msg: str) -> None:
        print(msg, flush=True)

    signal.signal(signal.SIGTERM, kill_live)
    t_start = time.perf_counter()
    compile_bytecode()
    load0 = wait_quiet(args.wait_quiet, 0.7, log)
    threads_flag = ["--threads", str(args.threads)] if args.threads else []
    out = args.work / "out"
    out.mkdir(exist_ok=True)
    n_modules = len(sdxl_attention_modules())
    meta = {"argv": sys.argv[1:], "python": platform.python_version(), "torch": version("torch"),
            "loramerge": version("loramerge"), **git_state(), "cores": available_cores(),
            "cpu": platform.processor() or platform.machine(), "load1_at_start": round(load0, 2),
            "loramerge_threads": args.threads or "automatic", "qr_threads": args.qr_threads,
            "repeat": args.repeat, "stride": args.stride, "contention_stride": args.contention_stride,
            "ties_stride": args.ties_stride, "memory_stride": args.memory_stride}
    log(f"loramerge speed bench: {meta}")
    results: dict = {"meta": meta, "sections": {}}
    qr_script, base_script = args.work / "qr_merge.py", args.work / "baseline.py"
    qr_script.write_text(QR_MERGE)
    base_script.write_text(BASELINE)

    def job(name: str, argv: list[str], env: dict[str, str] | None = None) -> Job:
        return Job(name, argv, args.work, threads_flag, env)

    def merge(name: str, paths: list[str], *extra: str, env: dict[str, str] | None = None) -> Job:
        return job(name, [*CLI, *paths, "-o", str(out / f"{name}.safetensors"), "--quiet", *extra], env)

    def qr(name: str, paths: list[str], threads: int) -> Job:
        return job(name, [str(qr_script), str(threads), *paths, str(out / f"{name}.safetensors")])

    def sdxl_paths(n: int, stride: int) -> list[str]:
        make_inputs(args.work, f"sdxl:{n}:{stride}")
        return [str(args.work / f"rank32_stride{stride}" / f"lora{k}.safetensors") for k in range(n)]

    def sdxl_info(stride: int, **more) -> dict:
        return {"loras": 3, "rank": 32, "modules": len(range(0, n_modules, stride)), "stride": stride, **more}

    def section(name: str, plan: list, info: dict) -> None:
        log(f"\n## {name}: {info}")
        t = time.perf_counter()
        raw = rounds(plan, args.repeat, log, args.wait_quiet)
        results["sections"][name] = {**info, "seconds": round(time.perf_counter() - t, 1),
                                     "median": summary(raw), "raw": raw}

    def alone(j: Job):
        return lambda: run_alone(j)

    def busy(j: Job):
        return lambda: run_beside_busy(j)

    if "synthetic" in args.sections:
        make_inputs(args.work, "synthetic")
        paths = [str(args.work / f"synthetic{i}.safetensors") for i in range(3)]
        startup_script = args.work / "startup.py"
        startup_script.write_text(STARTUP)
        section("synthetic", [("auto", alone(merge("synthetic_auto", paths))),
                              ("startup", alone(job("startup", [str(startup_script)])))],
                {"loras": 3, "ranks": [8, 12, 16], "groups": 55})

    if "sdxl" in args.sections:
        paths = sdxl_paths(3, args.stride)
        section("sdxl", [("weighted_sum", alone(merge("ws", paths, "--mode", "weighted_sum"))),
                         ("auto", alone(merge("auto", paths))),
                         ("qr_reference", alone(qr("qr", paths, args.qr_threads)))], sdxl_info(args.stride))

    if "contention" in args.sections:
        s = args.contention_stride
        paths = sdxl_paths(3, s)
        ws = [*paths, "--mode", "weighted_sum"]
        two = [*ws, "--threads", "2"]
        section("contention", [
            ("weighted_sum", alone(merge("c_ws", ws))),
            ("weighted_sum_beside_busy_loop", busy(merge("c_ws_busy", ws))),
            ("weighted_sum_two_at_once", lambda: run_together([merge(f"c_ws_pair{k}", ws) for k in (0, 1)])),
            ("auto", alone(merge("c_auto", paths))),
            ("auto_beside_busy_loop", busy(merge("c_auto_busy", paths))),
            ("weighted_sum_threads2", alone(merge("c_ws2", two))),
            ("weighted_sum_threads2_beside_busy_loop", busy(merge("c_ws2_busy", two))),
            ("weighted_sum_threads2_two_at_once", lambda: run_together([merge(f"c_ws2_pair{k}", two) for k in (0, 1)])),
            ("weighted_sum_omp1", alone(merge("c_ws_omp1", ws, env=OMP1))),
            ("weighted_sum_omp1_two_at_once", lambda: run_together([merge(f"c_ws_omp1_pair{k}", ws, env=OMP1)
                                                                    for k in (0, 1)])),
            ("qr_reference_1_thread", alone(qr("c_qr1", paths, 1))),
            ("qr_reference_1_thread_beside_busy_loop", busy(qr("c_qr1_busy", paths, 1))),
            ("qr_reference_2_omp_threads", alone(qr("c_qr2", paths, 2))),
            ("qr_reference_2_omp_threads_beside_busy_loop", busy(qr("c_qr2_busy", paths, 2))),
        ], sdxl_info(s))

    if "ties_baseline" in args.sections:
        s = args.ties_stride
        paths = sdxl_paths(3, s)
        base = job("baseline", [str(base_script), *paths, str(out / "baseline.safetensors")])
        section("ties_baseline", [("weighted_sum", alone(merge("b_ws", paths, "--mode", "weighted_sum"))),
                                  ("auto", alone(merge("b_auto", paths))),
                                  ("ties", alone(merge("b_ties", paths, "--mode", "ties"))),
                                  ("qr_reference", alone(qr("b_qr", paths, args.qr_threads))),
                                  ("baseline_materialize_svd", alone(base))], sdxl_info(s))

    if "memory" in args.sections:
        s = args.memory_stride
        two, eight = sdxl_paths(2, s), sdxl_paths(8, s)
        section("memory", [("ties_2_loras", alone(merge("ties2", two, "--mode", "ties"))),
                           ("ties_8_loras", alone(merge("ties8", eight, "--mode", "ties")))],
                {"rank": 32, "modules": len(range(0, n_modules, s)), "stride": s})

    meta["total_seconds"] = round(time.perf_counter() - t_start, 1)
    results["ratios"] = ratios(results["sections"])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log("\n" + markdown(results))


OMP1 = {"OMP_NUM_THREADS": "1"}  # every torch op of the process on one thread, outside the pool's ops too
SECTIONS = ("synthetic", "sdxl", "contention", "ties_baseline", "memory")


# ---------------------------------------------------------------- ratios and the table

_C = "contention"
TARGETS = {  # name: (section, numerator job, denominator job or None, field, target or None)
    "synthetic auto: CPU s (whole process)": ("synthetic", "auto", None, "cpu_s", 2.0),
    "synthetic auto: CPU s less the startup": ("synthetic", "auto", "-startup", "cpu_s", None),
    "weighted_sum CPU / QR reference CPU": ("sdxl", "weighted_sum", "qr_reference", "cpu_s", 1.5),
    "auto CPU / QR reference CPU": ("sdxl", "auto", "qr_reference", "cpu_s", 2.5),
    "weighted_sum wall / QR reference wall": ("sdxl", "weighted_sum", "qr_reference", "wall_s", None),
    "auto wall / QR reference wall": ("sdxl", "auto", "qr_reference", "wall_s", None),
    "weighted_sum wall beside busy loop / quiet": (_C, "weighted_sum_beside_busy_loop", "weighted_sum", "wall_s", 2.0),
    "auto wall beside busy loop / quiet": (_C, "auto_beside_busy_loop", "auto", "wall_s", 2.0),
    "weighted_sum wall, two at once / quiet": (_C, "weighted_sum_two_at_once", "weighted_sum", "wall_s", 3.0),
    "--threads 2: weighted_sum wall beside busy loop / quiet": (
        _C, "weighted_sum_threads2_beside_busy_loop", "weighted_sum_threads2", "wall_s", 2.0),
    "--threads 2: weighted_sum wall, two at once / quiet": (
        _C, "weighted_sum_threads2_two_at_once", "weighted_sum_threads2", "wall_s", 3.0),
    "control, OMP_NUM_THREADS=1: weighted_sum wall, two at once / quiet": (
        _C, "weighted_sum_omp1_two_at_once", "weighted_sum_omp1", "wall_s", None),
    "control, OMP_NUM_THREADS=1 / default: weighted_sum quiet wall": (
        _C, "weighted_sum_omp1", "weighted_sum", "wall_s", None),
    "control, QR reference 1 thread: wall beside busy loop / quiet": (
        _C, "qr_reference_1_thread_beside_busy_loop", "qr_reference_1_thread", "wall_s", None),
    "control, QR reference 2 OpenMP threads: wall beside busy loop / quiet": (
        _C, "qr_reference_2_omp_threads_beside_busy_loop", "qr_reference_2_omp_threads", "wall_s", None),
    "ties CPU / QR reference CPU": ("ties_baseline", "ties", "qr_reference", "cpu_s", None),
    "weighted_sum wall / baseline wall": ("ties_baseline", "weighted_sum", "baseline_materialize_svd", "wall_s", None),
    "auto wall / baseline wall": ("ties_baseline", "auto", "baseline_materialize_svd", "wall_s", None),
    "ties wall / baseline wall": ("ties_baseline", "ties", "baseline_materialize_svd", "wall_s", None),
    "QR reference wall / baseline wall": ("ties_baseline", "qr_reference", "baseline_materialize_svd", "wall_s", None),
    "ties peak, 8 / 2 LoRAs": ("memory", "ties_8_loras", "ties_2_loras", "peak_mib", 1.3),
}


def ratios(sections: dict) -> dict:
    out = {}
    for name, (sec, num, den, field, target) in TARGETS.items():
        med_ = sections.get(sec, {}).get("median", {})
        base = den.lstrip("-") if den else None
        if num not in med_ or (base and base not in med_):
            continue
        if den is None:
            value = med_[num][field]
        elif den.startswith("-"):  # a difference, not a ratio
            value = med_[num][field] - med_[base][field]
        else:
            value = med_[num][field] / med_[den][field]
        row = {"value": round(value, 3), "target": target, "met": None if target is None else value <= target}
        if num.endswith("two_at_once"):  # each of the pair against the quiet median: the worse one too
            row["worst"] = round(max(r[field] for r in sections[sec]["raw"][num]) / med_[den][field], 3)
        out[name] = row
    return out


def markdown(results: dict) -> str:
    lines = ["| section | job | runs | CPU s | wall s | peak MiB | threads | others' CPU s (max) |",
             "|---|---|---|---|---|---|---|---|"]
    for sec, data in results["sections"].items():
        where = f"{sec} ({data['modules']} modules)" if "modules" in data else sec
        for name, m in data["median"].items():
            lines.append(f"| {where} | {name} | {m['n']} | {m['cpu_s']:.2f} | {m['wall_s']:.2f} | {m['peak_mib']:.0f} |"
                         f" {'/'.join(map(str, m['threads'])) or '-'} | {m['others_cpu_s_max']:.1f} |")
    lines += ["", "| figure (medians) | value | target | met |", "|---|---|---|---|"]
    for name, r in results["ratios"].items():
        unit = " s" if "CPU s" in name else "x"
        worst = f" (worst {r['worst']:.2f}x)" if "worst" in r else ""
        target = "" if r["target"] is None else f"<= {r['target']}{unit}"
        met = "" if r["met"] is None else ("met" if r["met"] else "**not met**")
        lines.append(f"| {name} | {r['value']:.2f}{unit}{worst} | {target} | {met} |")
    m = results["meta"]
    lines.append(f"\nstrides: sdxl {m['stride']}, contention {m['contention_stride']}, ties_baseline "
                 f"{m['ties_stride']}, memory {m['memory_stride']}; {m['repeat']} rounds; {m['total_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    finally:
        for child in list(LIVE):
            child.kill()
