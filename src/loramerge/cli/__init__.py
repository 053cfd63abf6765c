"""The `loramerge` command line: thin — parse, call the library, render.

One module per command (``*_cmd.py``), registered on the shared typer `app` by `commands`. This
package itself stays light: `main` imports the commands (and with them torch, pydantic and the
architecture tables) with the cyclic garbage collector paused, then freezes what the imports made.
Importing torch creates a few hundred thousand objects and every full collection while the rest is
imported walked them all again: ~0.4 CPU s of every run on a 2-core machine (docs/PERFORMANCE.md).
Only the command line does this; the library and the ComfyUI nodes leave the collector alone.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["app", "main"]


def _commands() -> ModuleType:
    from . import commands

    return commands


def main() -> None:
    """The console entry point (``loramerge``, ``python -m loramerge.cli``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        commands = _commands()
    finally:
        gc.freeze()  # what the imports made stays: later collections need not walk it again
        if enabled:
            gc.enable()
    commands.run()


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer app with every command (tests, documentation tools)
        return _commands().app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
