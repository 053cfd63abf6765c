"""The test environment is the locked one: every package in requirements-test.lock is installed at
exactly that version (scripts/setup.sh --test installs with the lock as constraints)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "requirements-test.lock"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_installed_versions_are_the_locked_ones():
    pins = dict(line.split("==", 1) for line in LOCK.read_text().splitlines() if line and not line.startswith("#"))
    assert len(pins) > 30 and {"pytest", "diffusers", "peft", "transformers", "ruff", "mypy"} <= set(pins)
    wrong = {}
    for name, want in pins.items():
        try:
            got = version(name)
        except PackageNotFoundError:
            got = None
        if got != want:
            wrong[_norm(name)] = (want, got)
    assert not wrong, f"installed versions differ from the lock (run scripts/setup.sh --test): {wrong}"
