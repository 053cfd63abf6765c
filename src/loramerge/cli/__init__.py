"""The `loramerge` command line: thin — parse, call the library, render.

One module per command (``*_cmd.py``); each registers itself on the shared typer `app` when imported here.
"""

from __future__ import annotations

from . import (  # noqa: F401  (registers the commands)
    bake_cmd,
    convert_cmd,
    extract_cmd,
    inspect_cmd,
    merge_cmd,
    resize_cmd,
    tune_cmd,
)
from ._app import app, main

__all__ = ["app", "main"]
