"""ComfyUI entry point of the repository: clone it into ``ComfyUI/custom_nodes/`` and ComfyUI loads
the node pack (``comfy_nodes/``) through this file; see docs/COMFYUI.md.

The pack is loaded as the package ``loramerge_comfy_nodes``, whatever the clone's folder is called.
A clone called ``loramerge`` (the default) is registered by older ComfyUI in ``sys.modules`` under
the library's own name; this file hands that name back first, so ``import loramerge`` is the
library (installed, or this checkout's ``src/``). A missing dependency is raised as an ImportError
that names it and the fix (ComfyUI lists the pack as failed to import).

Outside ComfyUI (no ``folder_paths`` imported yet) a script in the clone's parent folder that does
``import loramerge`` meets this file under the library's name; it loads the library in its place
(installed, or else this checkout's ``src/``), so that the script gets the library. Imported under
any other name, it defines nothing and imports nothing.
"""

import importlib.machinery
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


def _stand_in_for_the_library() -> None:
    """``import loramerge`` found this folder (the script sits next to the clone): put the library in
    ``sys.modules`` under its name; the import statement returns what is there when this file ends."""
    beside = os.path.realpath(os.path.dirname(_HERE))
    elsewhere = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != beside]
    spec = importlib.machinery.PathFinder.find_spec(_LIBRARY, elsewhere)
    if spec is None:
        src = os.path.join(_HERE, "src", _LIBRARY)
        init = os.path.join(src, "__init__.py")
        if not os.path.isfile(init):
            raise ImportError(
                f"'import loramerge' found the folder {_HERE} (a clone without its src/loramerge); install the "
                "library (python -m pip install -e <the clone>) or run the script from another folder",
                name=_LIBRARY,
            )
        spec = importlib.util.spec_from_file_location(_LIBRARY, init, submodule_search_locations=[src])
    library = importlib.util.module_from_spec(spec)
    sys.modules[_LIBRARY] = library
    try:
        spec.loader.exec_module(library)
    except BaseException:
        del sys.modules[_LIBRARY]
        raise


if "folder_paths" not in sys.modules and __name__ == _LIBRARY:
    _stand_in_for_the_library()
else:
    _give_the_library_its_name()
if "folder_paths" in sys.modules:  # ComfyUI imports it before it loads any custom node
    _pack = _load_pack()
    NODE_CLASS_MAPPINGS = _pack.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _pack.NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
