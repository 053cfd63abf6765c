"""Every command registered on the shared typer `app` (one module per command, ``*_cmd.py``, each
registering itself when imported here), and `run`, which runs the app with the command line's error
handling. `loramerge.cli.main` imports this module with the garbage collector paused."""

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
from ._app import app
from ._app import main as run

__all__ = ["app", "run"]
