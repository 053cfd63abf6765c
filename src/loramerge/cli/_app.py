"""The typer application, the consoles, the options several commands share, and `main` (errors → exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import LoraMergeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compose several diffusion-model LoRAs into one, resolving interference per weight group.",
)
console = Console()
CURRENT_CLIENTS = ("diffusers", "comfyui_0.3.64")  # the clients warned about (the 2024 ComfyUI is in the docs)
err = Console(stderr=True)

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


def main() -> None:
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]error:[/red] invalid options: {escape(problems)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except LoraMergeError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
