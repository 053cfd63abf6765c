"""The measuring half of bench/speed.py: whole child processes timed from outside (CPU = user +
system seconds from ``os.wait4``, wall from spawn to exit, peak = the child's own ``VmHWM`` via
bench/_peak.py), run alone, beside a pinned busy loop or together, in alternating rounds, with the
CPU time the rest of the machine spent meanwhile recorded beside each figure."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from loramerge.threads import automatic_threads  # no torch import

PEAK = Path(__file__).resolve().parent / "_peak.py"

BUSY = r'''
import os, sys
try:
    os.sched_setaffinity(0, {int(sys.argv[1])})
except (AttributeError, OSError):
    pass
while True:
    pass
'''


LIVE: set[subprocess.Popen] = set()  # children still running: killed if the bench stops early


def kill_live(*_: object) -> None:
    for proc in list(LIVE):
        proc.kill()
    raise SystemExit("stopped")


class Job:
    """One child process: ``python bench/_peak.py PEAKFILE <args>``."""

    def __init__(self, name: str, args: list[str], work: Path, threads_flag: list[str],
                 env: dict[str, str] | None = None) -> None:
        self.name, self.work, self.env = name, work, env
        self.loramerge = args[:2] == ["-m", "loramerge.cli"]
        self.args = args + (threads_flag if self.loramerge and "--threads" not in args else [])
        self.forced = int(self.args[self.args.index("--threads") + 1]) if "--threads" in self.args else None
        self.peak = work / f"peak_{name}_{os.getpid()}_{id(self)}.txt"
        self.err = work / f"stderr_{name}_{id(self)}.txt"

    def start(self) -> None:
        self.peak.unlink(missing_ok=True)
        if "-o" in self.args:  # loramerge refuses to overwrite its output
            Path(self.args[self.args.index("-o") + 1]).unlink(missing_ok=True)
        self.load1 = os.getloadavg()[0]
        # loramerge's thread count: forced, or what its automatic choice sees now (None: not loramerge)
        self.threads = self.forced or (automatic_threads() if self.loramerge else None)
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(PEAK), str(self.peak), *self.args],
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         env={**os.environ, **self.env} if self.env else None)
        LIVE.add(self.proc)
        self.t0 = time.perf_counter()

    def finish(self) -> dict:
        _, status, ru = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.t0
        LIVE.discard(self.proc)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name}: exit {self.proc.returncode}\n{self.err.read_text()[-3000:]}")
        self.err.unlink(missing_ok=True)
        peak = int(self.peak.read_text()) / 1024
        self.peak.unlink(missing_ok=True)
        cpu = ru.ru_utime + ru.ru_stime
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "peak_mib": round(peak, 1),
                "load1_before": round(self.load1, 2), "threads": self.threads,
                "threads_forced": self.forced is not None}


def run_alone(job: Job) -> dict:
    job.start()
    return job.finish()


def run_beside_busy(job: Job) -> dict:
    """The job with one single-threaded busy loop on the last core it may use; the loop is killed after."""
    core = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(core)])
    LIVE.add(busy)
    try:
        time.sleep(0.3)  # the loop is spinning before the job starts
        row = run_alone(job)
    finally:
        busy.kill()
        _, status, ru = os.wait4(busy.pid, 0)
        busy.returncode = os.waitstatus_to_exitcode(status)
        LIVE.discard(busy)
    row["busy_core"], row["busy_loop_cpu_s"] = core, round(ru.ru_utime + ru.ru_stime, 3)
    return row


def run_together(jobs: list[Job]) -> list[dict]:
    for job in jobs:
        job.start()
    return [job.finish() for job in jobs]


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def others_busy(seconds: float = 1.0) -> float:
    """Cores the rest of the machine keeps busy now (run between jobs, when this bench has no child)."""
    busy0, mine0 = machine_cpu()[0], sum(os.times()[:2])
    time.sleep(seconds)
    return max(0.0, machine_cpu()[0] - busy0 - (sum(os.times()[:2]) - mine0)) / seconds


def settle(limit_s: float, log) -> float:
    """Before a run: wait (up to `limit_s`) while other processes keep more than a quarter of a core busy."""
    deadline, waited = time.monotonic() + limit_s, 0.0
    while (busy := others_busy()) > 0.25 and time.monotonic() < deadline:
        log(f"  others keep {busy:.2f} cores busy: waiting")
        time.sleep(10)
        waited += 11
    return waited


def rounds(plan: list[tuple[str, object]], repeat: int, log, wait_s: float = 0.0) -> dict[str, list[dict]]:
    """Every (name, runner) of `plan` once per round, in order, `repeat` rounds: A B C A B C ...

    Each run also records the CPU seconds the rest of the machine spent meanwhile (``others_cpu_s``:
    the machine's busy time less this bench, its jobs and its busy loop) and the steal time of the
    VM: the noise a figure carries."""
    raw: dict[str, list[dict]] = {name: [] for name, _ in plan}
    for r in range(repeat):
        for name, runner in plan:
            waited = settle(wait_s, log)
            busy0, steal0 = machine_cpu()
            mine0 = sum(os.times()[:2])
            got = runner()
            busy1, steal1 = machine_cpu()
            rows = got if isinstance(got, list) else [got]
            ours = sum(os.times()[:2]) - mine0 + sum(x["cpu_s"] + x.get("busy_loop_cpu_s", 0.0) for x in rows)
            for row in rows:
                row["round"] = r
                row["others_cpu_s"] = round(max(0.0, busy1 - busy0 - ours), 2)
                row["steal_s"] = round(steal1 - steal0, 2)
                row["waited_s"] = waited
            raw[name] += rows
            log(f"  round {r} {name}: " + "; ".join(
                f"cpu {x['cpu_s']:.2f} s wall {x['wall_s']:.2f} s peak {x['peak_mib']:.0f} MiB "
                f"(load {x['load1_before']:.2f}, threads {x['threads'] or '-'})" for x in rows)
                + f"; others {rows[0]['others_cpu_s']:.2f} s, steal {rows[0]['steal_s']:.2f} s")
    return raw


def med(rows: list[dict], field: str) -> float:
    return round(statistics.median(r[field] for r in rows), 3)


def summary(raw: dict[str, list[dict]]) -> dict[str, dict]:
    return {name: {"n": len(rows), "cpu_s": med(rows, "cpu_s"), "wall_s": med(rows, "wall_s"),
                   "peak_mib": med(rows, "peak_mib"),
                   "wall_s_range": [min(r["wall_s"] for r in rows), max(r["wall_s"] for r in rows)],
                   "cpu_s_range": [min(r["cpu_s"] for r in rows), max(r["cpu_s"] for r in rows)],
                   "threads": sorted({r["threads"] for r in rows if r["threads"]}),
                   "others_cpu_s_max": max(r["others_cpu_s"] for r in rows)}
            for name, rows in raw.items() if rows}
