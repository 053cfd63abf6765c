"""The registry of architecture tables: lookup by name with suggestions, cached placers, presets."""

from __future__ import annotations

import difflib
from functools import cache

from ..enums import UNKNOWN_ARCH
from ..errors import UnknownNameError
from .acestep import acestep_table
from .engine import KeyPlacer
from .flux import flux_table
from .hunyuan_video import hunyuan_video_table
from .ltx import ltx_table
from .qwen_image import qwen_image_table
from .sd import sd15_table, sdxl_table
from .spec import ArchTable
from .unknown import UNKNOWN_PRESET
from .wan import wan_table
from .zimage import zimage_table

TABLES: dict[str, ArchTable] = {
    t.name: t
    for t in (
        sd15_table(),
        sdxl_table(),
        flux_table(),
        wan_table(),
        zimage_table(),
        qwen_image_table(),
        ltx_table(),
        hunyuan_video_table(),
        acestep_table(),
    )
}

PRESET_OF: dict[str, str] = {name: t.preset for name, t in TABLES.items()} | {UNKNOWN_ARCH: UNKNOWN_PRESET}


def get_table(name: str) -> ArchTable:
    """The table called `name`; ValueError naming the known tables (and the closest) otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        pass
    known = ", ".join(TABLES)
    close = difflib.get_close_matches(name, list(TABLES), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    if name == UNKNOWN_ARCH:
        hint = " 'unknown' has no table: files of unknown architecture are keyed by their own names."
    raise UnknownNameError(f"Unknown architecture {name!r}; known: {known}.{hint}")


@cache
def placer(name: str) -> KeyPlacer:
    """The `KeyPlacer` for table `name`, built once per name."""
    return KeyPlacer(get_table(name))
