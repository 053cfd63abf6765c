"""Run a Python module or script and write its own peak resident memory (VmHWM, KiB) to a file.

    python bench/_peak.py OUT.txt -m loramerge.cli merge ...
    python bench/_peak.py OUT.txt script.py args ...

Why not the ``ru_maxrss`` that ``wait4`` returns: Linux carries a process's high-water mark across
``exec``, so a child of a parent holding 400 MiB reports at least 400 MiB whatever it uses itself.
``VmHWM`` belongs to the address space made at ``exec``: only what the job itself touched.
"""

from __future__ import annotations

import runpy
import sys


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    out, *rest = sys.argv[1:]
    try:
        if rest[0] == "-m":
            sys.argv = [rest[1], *rest[2:]]
            runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = rest
            runpy.run_path(rest[0], run_name="__main__")
    finally:
        with open(out, "w") as fh:
            fh.write(str(vm_hwm_kib()))


if __name__ == "__main__":
    main()
