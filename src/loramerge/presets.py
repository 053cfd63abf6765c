"""Architecture presets: the decision thresholds of METHOD.md §3, one frozen value per family."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .enums import UNKNOWN_ARCH
from .errors import UnknownNameError

MERGE_RETENTION_FLOOR = 0.5
"""A LoRA keeping less than this of itself over a merge (energy-weighted ⟨M, w_iΔW_i⟩/‖w_iΔW_i‖²) is
lost: the report warns, the tuner ranks such a candidate last, and under the measured rules auto's
averaged groups are scaled up until every LoRA keeps at least this much (engine, DECISIONS.md)."""


@dataclass(frozen=True)
class Preset:
    name: str
    consensus_cos: float = 0.5
    consensus_conflict: float = 0.15
    consensus_overlap: float = 0.35
    orth_cos: float = 0.25
    orth_conflict: float = 0.60
    orth_overlap: float = 0.35
    ties_conflict: float = 0.25
    dare_density: float = 0.7
    density_min: float = 0.1
    density_max: float = 0.9
    noise_ratio: float = 0.10
    total_sign_ratio: float = 2.0
    orthogonal_floor: float = 0.85
    full_rank_floor: float = 1.0
    max_strength_cap: float = 3.0
    opposing_cos: float = -0.05  # below this a pair is "opposing" (dead band around 0)
    near_orthogonal_cos: float = 0.1  # mean |cos| at or below which the orthogonal floor applies
    disable_slerp_full_rank: bool = False


PRESETS: dict[str, Preset] = {
    "sd_unet": Preset("sd_unet"),
    "dit": Preset("dit", dare_density=0.8, density_min=0.4, density_max=0.95, noise_ratio=0.05, max_strength_cap=5.0),
    "llm": Preset("llm", dare_density=0.5, density_min=0.1, density_max=0.8, noise_ratio=0.15, orthogonal_floor=0.90),
    "acestep_dit": Preset(
        "acestep_dit",
        orth_cos=0.30,
        orth_conflict=0.65,
        ties_conflict=0.35,
        dare_density=0.85,
        density_min=0.4,
        density_max=0.95,
        noise_ratio=0.05,
        orthogonal_floor=1.0,
        max_strength_cap=5.0,
    ),
}

VIDEO_ORTHOGONAL_FLOOR = {"wan": 1.0, "ltx": 1.0}


def preset_for(architecture: str, name: str | None = None) -> Preset:
    """The preset named `name`, else the one of `architecture` (video floors applied)."""
    if name is not None:
        if name not in PRESETS:
            raise UnknownNameError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
        return PRESETS[name]
    from .architectures import PRESET_OF  # each architecture table names its preset: the one source

    preset = PRESETS[PRESET_OF.get(architecture, PRESET_OF[UNKNOWN_ARCH])]
    if architecture in VIDEO_ORTHOGONAL_FLOOR:
        preset = replace(preset, orthogonal_floor=VIDEO_ORTHOGONAL_FLOOR[architecture])
    return preset
