"""Architecture detection and the canonical key space: one declarative table per model family.

``TABLES`` maps a name to its `ArchTable`; `placer` gives the strict engine for one table;
`detect` says which table fits a file's stems best, and how sure it is.
"""

from __future__ import annotations

from .detect import Detection, detect
from .engine import KeyPlacer, Stem
from .registry import PRESET_OF, TABLES, get_table, placer
from .spec import Alias, ArchTable, Branch, Fused, Placement, Style

__all__ = [
    "PRESET_OF",
    "TABLES",
    "Alias",
    "ArchTable",
    "Branch",
    "Detection",
    "Fused",
    "KeyPlacer",
    "Placement",
    "Stem",
    "Style",
    "detect",
    "get_table",
    "placer",
]
