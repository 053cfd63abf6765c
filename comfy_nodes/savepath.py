"""Where Save Merged LoRA may write: inside the ``loras`` folder, nowhere else."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import LoraOptimizerError

SUFFIX = ".safetensors"


def save_path(
    loras_root: str | os.PathLike, file_name: str, *, suffix: str = SUFFIX, node: str = "Save Merged LoRA"
) -> Path:
    """``loras_root / file_name`` (`suffix` added when missing), refused unless it stays inside the
    folder: no absolute paths or drive letters, no ``..``, no symlink that leads out. `node` names the
    node in the messages."""
    name = file_name.strip()
    if not name or name.endswith(("/", "\\")):
        raise LoraOptimizerError(f"{node}: give a file name (got {file_name!r})")
    if "\x00" in name:
        raise LoraOptimizerError(f"{node}: the file name contains a NUL character")
    win, posix = PureWindowsPath(name), PurePosixPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or win.root:
        raise LoraOptimizerError(
            f"{node}: {file_name!r} is an absolute path; give a name inside "
            "the loras folder (subfolders like 'merged/my_lora' are fine)"
        )
    if ".." in win.parts:  # PureWindowsPath splits on both / and \
        raise LoraOptimizerError(f"{node}: {file_name!r} leads out of the loras folder ('..' is not allowed)")
    parts = list(win.parts)
    if not parts[-1].lower().endswith(suffix):
        parts[-1] += suffix
    root = Path(loras_root).resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root) or target == root:
        raise LoraOptimizerError(
            f"{node}: {file_name!r} resolves to {target}, outside the loras folder {root} (through a symbolic link?)"
        )
    return target
