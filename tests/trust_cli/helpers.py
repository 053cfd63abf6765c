"""Shared pieces of the CLI trust tests: the CLI in this process (so that a test can make the disk full
or a folder read-only by monkeypatching) or in a child process, a folder's listing, synthetic LoRAs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def cli(argv: list, capsys) -> tuple[int, str, str]:
    """`loramerge ARGV` run by `loramerge.cli.main` in this process: (exit status, stdout, stderr)."""
    from loramerge.cli import main

    capsys.readouterr()
    old = sys.argv
    sys.argv = ["loramerge", *map(str, argv)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_process(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loramerge.cli", *map(str, args)], capture_output=True, text=True, **kw
    )


def listing(folder: Path) -> list[str]:
    """Every name under `folder`, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture()
def examples(tmp_path) -> tuple[Path, Path, Path]:
    """The README's three example LoRAs (SDXL), copied into the test's folder."""
    names = ("style_kohya.safetensors", "detail_kohya.safetensors", "character_peft.safetensors")
    for name in names:
        shutil.copy(EXAMPLES / name, tmp_path / name)
    return tuple(tmp_path / n for n in names)  # type: ignore[return-value]


def work_must_not_start(monkeypatch) -> None:
    """Make pass 1 (the first real work of a merge) fail loudly: a check must come before it."""
    import loramerge.pipeline

    def refuse(*a, **k):
        raise AssertionError("the merge started: the check should have come before any work")

    monkeypatch.setattr(loramerge.pipeline, "pass1", refuse)


def synthetic_kohya(path: Path, modules: int, dim: int, rank: int, seed: int, metadata=None, prefix="blocks") -> Path:
    """A kohya-named LoRA of `modules` square `dim` linear layers (architecture 'unknown')."""
    g = torch.Generator().manual_seed(seed)
    t = {}
    for m in range(modules):
        t[f"lora_unet_{prefix}_{m}.lora_down.weight"] = torch.randn(rank, dim, generator=g) / dim**0.5
        t[f"lora_unet_{prefix}_{m}.lora_up.weight"] = torch.randn(dim, rank, generator=g) / rank**0.5
        t[f"lora_unet_{prefix}_{m}.alpha"] = torch.tensor(float(rank))
    save_file(t, str(path), metadata=metadata)
    return path
