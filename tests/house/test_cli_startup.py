"""The command line's start-up: `loramerge.cli` itself imports nothing heavy, and `main` imports the
commands with the garbage collector paused, freezes what they made and leaves the collector as it
found it (docs/PERFORMANCE.md: ~0.4 CPU s of every run)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, json, sys
{before}
import loramerge.cli as cli
light = not {{"torch", "typer", "pydantic"}} & set(sys.modules)
sys.argv = ["loramerge", "--version"]
try:
    cli.main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"light": light, "code": code, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
                  "torch": "torch" in sys.modules, "app": type(cli.app).__name__}}))
"""


def _probe(before: str = "") -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_main_imports_the_commands_with_the_collector_paused_and_restores_it():
    got = _probe()
    assert got["light"]  # importing the package pulls in neither torch nor typer nor pydantic
    assert got["code"] in (0, None) and got["torch"] and got["app"] == "Typer"
    assert got["enabled"]  # on again after the imports
    assert got["frozen"] > 10_000  # torch's objects and the rest went to the permanent generation


def test_a_collector_the_caller_disabled_stays_disabled():
    got = _probe("gc.disable()")
    assert not got["enabled"] and got["frozen"] > 10_000
