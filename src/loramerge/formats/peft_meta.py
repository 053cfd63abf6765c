"""Alpha semantics of PEFT/diffusers files: `lora_adapter_metadata` (lora_alpha, r, rank_pattern,
alpha_pattern, use_rslora), per component prefix ("unet.", "transformer.", "text_encoder.", ...)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PeftConfig:
    lora_alpha: float | None = None
    r: int | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False

    def scale(self, module_path: str, rank: int) -> float:
        """PEFT's scaling for `module_path` (relative to its component) at the stored `rank`."""
        alpha = _match(self.alpha_pattern, module_path)
        if alpha is None and module_path.startswith("text_model."):  # transformers 5 module names
            alpha = _match(self.alpha_pattern, module_path.removeprefix("text_model."))
        if alpha is None:
            alpha = self.lora_alpha if self.lora_alpha is not None else rank
        return float(alpha) / (math.sqrt(rank) if self.use_rslora else rank)


def _match(patterns: dict, path: str):
    for pattern, value in patterns.items():  # PEFT: the key must end with the pattern at a dot boundary
        if re.match(rf"(.*\.)?({pattern})$", path):
            return value
    return None


def parse_adapter_metadata(metadata: dict[str, str]) -> dict[str, PeftConfig]:
    """Component prefix ("" when unprefixed) -> PeftConfig. Empty when the file has none."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    groups: dict[str, dict] = {}
    for key, value in flat.items():
        prefix, _, name = key.rpartition(".") if "." in key else ("", "", key)
        groups.setdefault(prefix, {})[name] = value
    out: dict[str, PeftConfig] = {}
    for prefix, cfg in groups.items():
        if "lora_alpha" not in cfg and "r" not in cfg:
            continue
        out[prefix] = PeftConfig(
            lora_alpha=cfg.get("lora_alpha"),
            r=cfg.get("r"),
            rank_pattern=dict(cfg.get("rank_pattern") or {}),
            alpha_pattern=dict(cfg.get("alpha_pattern") or {}),
            use_rslora=bool(cfg.get("use_rslora", False)),
        )
    return out
