"""The `loramerge` command line: thin — parse, call the library, render.

One module per command (``*_cmd.py``); each registers itself on the shared typer `app` when imported here.
"""

from __future__ import annotations

from . import bake_cmd, convert_cmd, extract_cmd, inspect_cmd, merge_cmd, resize_cmd  # noqa: F401  (registers the commands)
from ._app import app, main

__all__ = ["app", "main"]
