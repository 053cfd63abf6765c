"""ComfyUI entry point of the repository: clone it into ``ComfyUI/custom_nodes/`` and ComfyUI loads
the node pack (``comfy_nodes/``) through this file; see docs/COMFYUI.md.

The pack is loaded as the package ``loramerge_comfy_nodes``, whatever the clone's folder is called.
A clone called ``loramerge`` (the default) is registered by older ComfyUI in ``sys.modules`` under
the library's own name; this file hands that name back first, so ``import loramerge`` is the
library (installed, or this checkout's ``src/``). A missing dependency is raised as an ImportError
that names it and the fix (ComfyUI lists the pack as failed to import).

Outside ComfyUI (no ``folder_paths`` imported yet: pytest setting up the checkout as a package, a
tool importing it) this file defines nothing and imports nothing.
"""

import importlib.util
import os
import sys

_LIBRARY = "loramerge"
_PACK = "loramerge_comfy_nodes"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _give_the_library_its_name() -> None:
    me = sys.modules.get(_LIBRARY)
    if __name__ == _LIBRARY and me is not None and getattr(me, "__file__", None) == __file__:
        del sys.modules[_LIBRARY]


def _load_pack():
    if _PACK in sys.modules:
        return sys.modules[_PACK]
    folder = os.path.join(_HERE, "comfy_nodes")
    spec = importlib.util.spec_from_file_location(_PACK, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACK] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PACK]
        raise
    return module


_give_the_library_its_name()
if "folder_paths" in sys.modules:  # ComfyUI imports it before it loads any custom node
    _pack = _load_pack()
    NODE_CLASS_MAPPINGS = _pack.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _pack.NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
