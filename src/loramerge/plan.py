"""`MergePlan`: the decisions of one merge as a value that can be printed, saved and compared."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .energy import AutoStrength, auto_strength
from .presets import Preset, preset_for
from .select import GroupDecision, plan_groups


@dataclass(frozen=True)
class MergePlan:
    architecture: str
    preset: Preset
    decisions: dict[str, GroupDecision]
    auto: dict[str, AutoStrength] = field(default_factory=dict)  # "model" / "text_encoder"
    suggested_max_strength: float | None = None

    def scale(self, text_encoder: bool) -> float:
        branch = self.auto.get("text_encoder" if text_encoder else "model")
        return branch.scale if branch else 1.0

    def strategy_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.decisions.values():
            counts[d.strategy] = counts.get(d.strategy, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "preset": self.preset.name,
                "auto_strength": {k: asdict(v) for k, v in self.auto.items()},
                "suggested_max_strength": self.suggested_max_strength,
                "decisions": {k: d.to_dict() for k, d in self.decisions.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def make_plan(session, analysis) -> MergePlan:
    """Decisions per group and auto-strength per branch from pass-1 statistics (pure)."""
    cfg = session.cfg
    preset = preset_for(session.architecture, cfg.preset)
    override = None if cfg.mode == "auto" else cfg.mode
    decisions = plan_groups(analysis.stats, preset, optimization=cfg.optimization, strategy_set=cfg.strategy_set,
                            override=override, smoothing=cfg.smoothing, use_excess=cfg.use_excess)
    auto = {}
    for branch in sorted(analysis.norms2):
        te = branch == "text_encoder"
        loras = sorted(analysis.norms2[branch])
        if not cfg.auto_strength:
            continue
        full_rank = any(None in analysis.stats[k].ranks for k in analysis.stats if session.is_text_encoder(k) == te)
        floor = preset.full_rank_floor if full_rank else preset.orthogonal_floor
        index = {i: n for n, i in enumerate(loras)}
        auto[branch] = auto_strength([cfg.inputs[i].strength(te) for i in loras],
                                     [analysis.norms2[branch][i] for i in loras],
                                     {(index[i], index[j]): v for (i, j), v in analysis.dots[branch].items()},
                                     floor=floor, near_orthogonal=preset.near_orthogonal_cos)
    return MergePlan(session.architecture, preset, decisions, auto)
