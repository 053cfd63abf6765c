"""Merge quality benchmark: a class-conditional DDPM trained here on scikit-learn's digits, subject
and style LoRAs trained on it, every merge method side by side. See `bench/quality/README.md`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

try:  # run from a checkout whose venv does not have loramerge installed: use the source tree
    import loramerge  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT / "src"))
