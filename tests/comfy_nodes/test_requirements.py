"""requirements.txt (what ComfyUI users install for the pack) lists exactly the third-party packages
the pack needs at run time: those the pack's modules import themselves, and those the library
modules it imports pull in; torch (ComfyUI's own) and what torch itself imports aside."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import ast, importlib, importlib.metadata as md, json, pathlib, re, sys
import torch  # ComfyUI's own; everything it imports is there already
sys.modules["typer"] = None  # the command line's: importing it here is a failure
before = {n.split(".")[0] for n in sys.modules}
direct, library = set(), set()
for path in sorted(pathlib.Path("comfy_nodes").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            top = name.split(".")[0]
            if top == "loramerge":
                library.add(name)
            else:
                direct.add(top)
for name in sorted(library):
    importlib.import_module(name)
imported = {n.split(".")[0] for n in sys.modules} - before | direct
dists = md.packages_distributions()


def norm(r):
    return re.split(r"[<>=!~\[; (]", r.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requires(d, seen):
    try:
        reqs = md.requires(d) or []
    except md.PackageNotFoundError:  # an optional dependency that is not installed
        return seen
    for r in reqs:
        name = norm(r)
        if "extra ==" not in r and name not in seen:
            seen.add(name)
            requires(name, seen)
    return seen


found = {d.lower().replace("_", "-") for n in imported for d in dists.get(n, []) if n not in sys.stdlib_module_names}
found -= {"loramerge"}  # the library itself (its requirements are what is asked)
pulled = set().union(*(requires(d, set()) for d in found | {"torch"}))  # brought by another package
out = sorted(found - pulled - {"torch", "loramerge"})
print("RESULT" + json.dumps(out))
"""


def _names(text: str) -> set[str]:
    return {
        re.split(r"[<>=\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }


# Imported inside functions of library modules the nodes use (not at import time), so the import
# scan above cannot see them: distribution -> (the module that imports it when the feature runs,
# the name it is imported by).
LAZY = {
    "matplotlib": ("src/loramerge/report/plots.py", "matplotlib"),  # the HTML report the Save node writes
    "platformdirs": ("src/loramerge/autotune/memory.py", "platformdirs"),  # the AutoTuner node's memory folder
    # recipe files, and the HTML report's recipe section (report/page.py, itself imported when the Save
    # node writes the report)
    "pyyaml": ("src/loramerge/recipes/load.py", "yaml"),
}


def test_lazy_imports_are_where_the_list_says():
    for package, (module, name) in LAZY.items():
        assert re.search(rf"^\s+(import|from) {name}\b", (REPO / module).read_text(), re.M), (package, module)


def test_requirements_txt_lists_what_the_pack_imports():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    needed = {n.replace("_", "-") for n in json.loads(lines[-1][len("RESULT") :])} | set(LAZY)
    listed = _names((REPO / "requirements.txt").read_text())
    assert listed == needed, f"requirements.txt lists {sorted(listed)}, the pack needs {sorted(needed)}"
