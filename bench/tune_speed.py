"""`loramerge tune` on the README's example LoRAs, as whole processes: a full sweep (memory off) and
a replay from memory, wall and CPU seconds each (children's rusage), plus the process start alone
(``python -c "import loramerge.cli, torch"``) to separate start-up from the tuner's own time.

    python bench/tune_speed.py [--repeat 3]
    python bench/tune_speed.py --sdxl     # in-process: pass 1 and phase 1 on the 722-module SDXL job
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STACK = [
    f"{EXAMPLES / 'style_kohya.safetensors'}:0.8",
    str(EXAMPLES / "character_peft.safetensors"),
    f"{EXAMPLES / 'detail_kohya.safetensors'}:0.7",
]


def timed(args: list[str], env: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def sdxl_phase1(n_loras: int = 2) -> dict:
    """Pass 1 once and phase 1 over the whole grid on rank-32 LoRAs of every SDXL attention module."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from merge_memory import make_loras

    from loramerge.analysis.pass1 import pass1
    from loramerge.api import config_of
    from loramerge.autotune.grid import make_grid
    from loramerge.autotune.phase1 import score_grid, unique
    from loramerge.inputs import open_inputs
    from loramerge.presets import preset_for
    from loramerge.threads import single_threaded_ops

    with tempfile.TemporaryDirectory() as folder:
        paths = make_loras(Path(folder), n_loras)
        inputs = open_inputs(config_of([str(p) for p in paths], {}))
        start = time.perf_counter()
        with single_threaded_ops():
            analysis = pass1(inputs, threads=1, signs=True)
        pass1_s = time.perf_counter() - start
        start = time.perf_counter()
        cpu = time.process_time()
        grid = make_grid(preset_for(inputs.architecture))
        ranked, same_as = unique(score_grid(inputs, analysis, preset_for(inputs.architecture), list(grid.candidates())))
        return {
            "modules": len(inputs.keys),
            "loras": n_loras,
            "pass1_wall_s": round(pass1_s, 2),
            "phase1_wall_s": round(time.perf_counter() - start, 2),
            "phase1_cpu_s": round(time.process_time() - cpu, 2),
            "candidates": len(ranked) + len(same_as),
            "distinct": len(ranked),
            "load_average": os.getloadavg(),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sdxl", action="store_true")
    args = parser.parse_args()
    if args.sdxl:
        print(json.dumps(sdxl_phase1(), indent=2))
        return
    repeat = args.repeat
    tune = [sys.executable, "-m", "loramerge.cli", "tune", *STACK, "-q"]
    rows: dict[str, list[dict[str, float]]] = {"start-up only": [], "sweep (memory off)": [], "replay": []}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LORAMERGE_CACHE_DIR": cache}
        subprocess.run(tune, env=env, check=True, capture_output=True)  # stores the sweep for the replays
        for _ in range(repeat):  # alternating, so that a change of machine load hits every kind alike
            rows["start-up only"].append(timed([sys.executable, "-c", "import loramerge.cli, torch"], env))
            rows["sweep (memory off)"].append(timed([*tune, "--memory", "off"], env))
            rows["replay"].append(timed(tune, env))
    load = os.getloadavg()
    print(json.dumps({"cores": os.cpu_count(), "load_average": load, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
