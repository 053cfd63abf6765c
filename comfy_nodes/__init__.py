"""loramerge's ComfyUI node pack: ComfyUI loads this folder and reads the mappings below.

Install: clone the repository into ``ComfyUI/custom_nodes/`` (its root ``__init__.py`` loads this
folder), or link this folder there; then install ``requirements.txt`` (at the repository root) into
ComfyUI's Python; see docs/COMFYUI.md.
The library is used from the installed ``loramerge`` package, or else from this checkout's ``src/``.
Only this folder imports ``comfy`` or ``folder_paths``. A missing dependency is raised as an
ImportError (ComfyUI lists the pack as failed to import); nothing is swallowed.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_LIBRARY = "loramerge"
_ALIAS = "loramerge_comfy_nodes"
_HERE = os.path.dirname(os.path.realpath(__file__))
_REPO = os.path.dirname(_HERE)


def _give_the_library_its_name() -> None:
    """Older ComfyUI registers a custom-node folder in ``sys.modules`` under its folder name; a folder
    called ``loramerge`` would then stand in for the library itself. Hand the name back and carry on
    as ``loramerge_comfy_nodes`` (newer ComfyUI uses the folder's full path as the name instead)."""
    global __name__, __package__
    if __name__ != _LIBRARY or sys.modules.get(_LIBRARY) is None:
        return
    sys.modules[_ALIAS] = sys.modules.pop(_LIBRARY)
    __spec__.name = _ALIAS
    __name__ = __package__ = _ALIAS


def _find_library() -> None:
    """Use the installed library; without one, this checkout's ``src/``."""
    spec = importlib.util.find_spec(_LIBRARY)
    entry_points = {os.path.join(_HERE, "__init__.py"), os.path.join(_REPO, "__init__.py")}  # not the library
    ours = spec is not None and spec.origin and os.path.realpath(spec.origin) in entry_points
    src = os.path.join(_REPO, "src")
    if (spec is None or ours) and os.path.isdir(os.path.join(src, _LIBRARY)) and src not in sys.path:
        sys.path.insert(0, src)


_give_the_library_its_name()
_find_library()

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:
    missing = exc.name or ""
    if missing.split(".")[0] in ("comfy", "folder_paths"):
        fix = "these nodes run inside ComfyUI (clone the repository into ComfyUI/custom_nodes, see docs/COMFYUI.md)"
    else:
        requirements = os.path.join(_REPO, "requirements.txt")
        fix = f"install the requirements into ComfyUI's Python: python -m pip install -r {requirements}"
    raise ImportError(f"loramerge nodes cannot import {missing or 'a module'!r} ({exc}); {fix}", name=exc.name) from exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
