"""The "unknown" architecture: what detection answers when no table fits.

"unknown" is not a table. A LoRA whose keys no table places well enough still works: the caller
keys its groups by the file's own module names (no renaming, no fused slices), merges files that
share those names, and writes them back in the same naming. The preset for it is the SD UNet one,
the most conservative.
"""

from __future__ import annotations

UNKNOWN_PRESET = "sd_unet"

MIN_SHARE = 0.5
"""A table must place at least this share of a file's stems to be reported as its architecture."""
