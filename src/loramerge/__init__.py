"""loramerge: compose several diffusion-model LoRAs into one, resolving interference per weight group.

>>> import loramerge
>>> result = loramerge.merge(["style.safetensors:0.8", "character.safetensors"], seed=1)  # doctest: +SKIP
>>> result.save("merged.safetensors")  # doctest: +SKIP
"""

from .version import TOOL_NAME, __version__

_API = ("merge", "analyze", "tune", "load_recipe", "extract", "resize", "bake")
__all__ = ["__version__", "TOOL_NAME", *_API]


def __getattr__(name: str):
    # The API is imported on first use, so that `import loramerge` stays cheap for the CLI's --help.
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'loramerge' has no attribute {name!r}")
