"""`loramerge tune` on the README's example LoRAs, as whole processes: a full sweep (memory off) and
a replay from memory, wall and CPU seconds each (children's rusage), plus the process start alone
(``python -c "import loramerge.cli, torch"``) to separate start-up from the tuner's own time.

    python bench/tune_speed.py [--repeat 3]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
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
