"""The import graph: no module imports the package's own names back (no cycles through
`loramerge/__init__.py`), every module imports alone, and the bottom layer stays light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "loramerge"
MODULES = sorted(
    "loramerge." + ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
)
PACKAGE_NAMES = {"merge", "analyze", "tune", "load_recipe", "extract", "resize", "bake", "__version__", "TOOL_NAME"}


def _imports_of_package_init(path: Path) -> list[str]:
    """`from loramerge import X` / `from .. import X` (resolving to the package root) of a package name."""
    depth = len(path.relative_to(SRC).parts) - 1  # 0 for loramerge/x.py
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            root = node.module == "loramerge" or (node.module is None and node.level == depth + 1)
            if root:
                found += [a.name for a in node.names if a.name in PACKAGE_NAMES]
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_the_package_names_back(path):
    if path == SRC / "__init__.py":
        return pytest.skip("the package itself")
    assert _imports_of_package_init(path) == [], f"{path.name}: import from loramerge.version / loramerge.api instead"


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One interpreter with the third-party libraries preloaded (for speed) and no loramerge module;
    each module is imported in a forked child of it, so that import order cannot hide a cycle."""
    code = (
        "import json, os, sys, traceback\n"
        "import torch, numpy, safetensors, pydantic, rich, typer, yaml\n"
        "assert not any(m.startswith('loramerge') for m in sys.modules)\n"
        f"mods = {MODULES!r}\n"
        "bad = {}\n"
        "for m in mods:\n"
        "    r, w = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(r)\n"
        "        try:\n"
        "            __import__(m)\n"
        "            msg = b''\n"
        "        except BaseException:\n"
        "            msg = traceback.format_exc().strip().splitlines()[-1].encode()\n"
        "        os.write(w, msg)\n"
        "        os._exit(0)\n"
        "    os.close(w)\n"
        "    out = os.read(r, 4096)\n"
        "    os.close(r)\n"
        "    os.waitpid(pid, 0)\n"
        "    if out: bad[m] = out.decode()\n"
        "print(json.dumps(bad))\n"
    )
    assert json.loads(_fresh(code)) == {}
    assert len(MODULES) > 50


def test_config_loads_no_numerical_code():
    loaded = json.loads(_fresh("import sys, json, loramerge.config, loramerge.options\n"
                               "print(json.dumps(sorted(sys.modules)))"))
    ours = [m for m in loaded if m.startswith("loramerge")]
    assert ours == ["loramerge", "loramerge.config", "loramerge.enums", "loramerge.options", "loramerge.version"]
    heavy = {"torch", "numpy", "safetensors", "rich", "typer"}
    assert heavy.isdisjoint(m.split(".")[0] for m in loaded)
