"""The typer application, the consoles, the options several commands share, and `main` (errors → exit 2,
SIGTERM/SIGHUP → the same clean-up as Ctrl-C)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import LoraMergeError
from ..report.terminal import shown
from ..version import TOOL_NAME, __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compose several diffusion-model LoRAs into one, resolving interference per weight group.",
)
# emoji=False: a path or a metadata value such as "file:smile:" is printed as written; data from files
# and arguments goes through `shown` (control characters escaped, markup not interpreted)
console = Console(emoji=False)
CURRENT_CLIENTS = ("diffusers", "comfyui_0.3.64")  # the clients warned about (the 2024 ComfyUI is in the docs)
err = Console(stderr=True, emoji=False)

ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="Override the detected architecture.")]
BaseOpt = Annotated[
    Optional[Path], typer.Option("--base", help="Base model .safetensors: check targets and shapes (header only).")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", "-f", help="Replace an existing output file (never one of the inputs).")
]
PickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Load .ckpt/.pt/.bin with torch.load(weights_only=True).")
]


def _version(value: bool) -> None:
    if value:
        print(f"{TOOL_NAME} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Compose several diffusion-model LoRAs into one, resolving interference per weight group."""


def error(message: object) -> None:
    """One `error: ...` line (or a few, for a message with a hint) on stderr, data shown as text."""
    err.print(f"[red]error:[/red] {shown(message, newlines=True)}", highlight=False, soft_wrap=True)


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so that every clean-up runs (the
    spool and the writer's temporary files are removed), then the process exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    for s in _STOP_SIGNALS:  # a second signal must not cut the clean-up short
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def main() -> None:
    from pydantic import ValidationError

    for s in _STOP_SIGNALS:
        signal.signal(s, _stop)
    try:
        app()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        error(f"invalid options: {problems}")
        sys.exit(2)
    except LoraMergeError as exc:
        error(exc)
        sys.exit(2)
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        error(f"stopped by {name}; the temporary files were removed and no output was left half-written")
        sys.exit(128 + exc.signum)
