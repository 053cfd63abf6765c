"""The one exception the nodes raise, with the library's messages translated into ComfyUI terms.

ComfyUI shows the exception's type and text in the failed node, so every message says what went
wrong, where, and which widget fixes it (the library's hints name command-line flags instead).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from loramerge.errors import LoraMergeError

# Command-line flags named in the library's hints -> the node widget that does the same.
_CLI_TERMS = (
    ("pass --allow-pickle", "turn on allow_pickle in LoRA Optimizer Settings"),
    ("pass --lenient", "set strict = false in LoRA Optimizer Settings"),
    ("pass --arch", "set arch in LoRA Optimizer Settings"),
    ("check --arch", "check arch in LoRA Optimizer Settings"),
    ("--include/--exclude", "include/exclude on the LoRA Stack"),
    ("with --base MODEL.safetensors", "with base in LoRA Optimizer Settings"),
    ("with --base", "with base in LoRA Optimizer Settings"),
    ("use --format kohya or comfy", "save in the kohya or comfy format"),
    ("forced by --mode", "forced by mode in LoRA Optimizer Settings"),
)


class LoraOptimizerError(Exception):
    """A problem the user can fix; its text is what ComfyUI shows in the node."""


def in_node_terms(message: str) -> str:
    for flag, widget in _CLI_TERMS:
        message = message.replace(flag, widget)
    return message


def _validation_text(exc) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())


@contextlib.contextmanager
def user_errors(what: str) -> Iterator[None]:
    """Re-raise the library's errors (and invalid options) as `LoraOptimizerError` prefixed by `what`."""
    from pydantic import ValidationError

    try:
        yield
    except LoraOptimizerError:
        raise
    except LoraMergeError as exc:
        raise LoraOptimizerError(f"{what}: {in_node_terms(str(exc))}") from exc
    except ValidationError as exc:
        raise LoraOptimizerError(f"{what}: invalid options: {_validation_text(exc)}") from exc
