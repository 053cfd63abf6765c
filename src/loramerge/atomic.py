"""Output files: refused before any work where they cannot or must not be written (`check_output`),
then written all at once or not at all (a temporary file beside the target, renamed into place)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputError


def publish(tmp: str, path: Path) -> None:
    """Give a finished temporary file the usual permissions (mkstemp makes it 0600) and rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` to `path` through a temporary file in its folder, renamed into place: complete or absent
    (no temporary file is left on any failure; an OSError becomes an `OutputError` naming the path)."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish(tmp, path)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot write it ({exc.strerror or exc}); free space or choose another folder"
        ) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


OUTPUT_SUFFIX = ".safetensors"


def check_output(
    path: str | Path, inputs: Iterable[str | Path], *, overwrite: bool, suffix: str | None = OUTPUT_SUFFIX
) -> Path:
    """Refuse, before any work, an output that is one of the inputs (also through links or another
    spelling of the path; always), an existing file unless `overwrite`, a folder, a missing folder, a
    folder that cannot be written to, or a name without the `suffix` (``.safetensors``; None: any)."""
    out = Path(path)
    target = out.resolve()
    for inp in inputs:
        if Path(inp).resolve() == target:
            raise OutputError(f"{out}: this is one of the input LoRAs ({inp}); write the result to another file")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name such as {out / 'merged.safetensors'}")
    if suffix is not None and out.suffix.lower() != suffix:
        raise OutputError(
            f"{out}: an output needs the {suffix} extension (clients list LoRAs by it); "
            f"give {out.parent / (out.name + suffix)}"
        )
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; choose another name or pass --overwrite (-f) to replace it")
    check_writable(out.parent, f"{out}: folder {out.parent}")
    return out


def check_writable(folder: Path, what: str) -> None:
    """Refuse a folder in which no file can be made (permissions, a read-only mount): try to make one
    (unnamed where the system allows it, so that nothing is ever left behind)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{what} cannot be written to ({exc.strerror}); choose a folder you can write to") from exc
