"""Alpha semantics of PEFT/diffusers files: `lora_adapter_metadata` (lora_alpha, r, rank_pattern,
alpha_pattern, use_rslora), per component prefix ("unet.", "transformer.", "text_encoder.", ...):
read (`parse_adapter_metadata`) and written (`adapter_metadata`) here."""

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


class PeftMetadataError(ValueError):
    """`lora_adapter_metadata` that cannot be read as PEFT configurations (the caller adds the file)."""


def parse_adapter_metadata(metadata: dict[str, str]) -> dict[str, PeftConfig]:
    """Component prefix ("" when unprefixed) -> PeftConfig. Empty when the file has none; a value
    that cannot be a PEFT configuration (it would decide every module's alpha) is an error."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PeftMetadataError(f"is not valid JSON ({exc})") from None
    if not isinstance(flat, dict):
        raise PeftMetadataError(f"is a JSON {type(flat).__name__}, not an object of PEFT settings")
    groups: dict[str, dict] = {}
    for key, value in flat.items():
        prefix, _, name = key.rpartition(".") if "." in key else ("", "", key)
        groups.setdefault(prefix, {})[name] = value
    out: dict[str, PeftConfig] = {}
    for prefix, cfg in groups.items():
        if "lora_alpha" not in cfg and "r" not in cfg:
            continue
        where = f"{prefix}." if prefix else ""
        out[prefix] = PeftConfig(
            lora_alpha=_number(cfg.get("lora_alpha"), f"{where}lora_alpha"),
            r=_number(cfg.get("r"), f"{where}r"),  # type: ignore[arg-type]  # checked: a number
            rank_pattern=_patterns(cfg.get("rank_pattern"), f"{where}rank_pattern"),  # type: ignore[arg-type]
            alpha_pattern=_patterns(cfg.get("alpha_pattern"), f"{where}alpha_pattern"),
            use_rslora=bool(cfg.get("use_rslora", False)),
        )
    return out


def _number(value, name: str) -> float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise PeftMetadataError(f"'{name}' is {json.dumps(value)[:40]}, not a number")


def _patterns(value, name: str) -> dict[str, float]:
    if not value:
        return {}
    if not isinstance(value, dict):
        raise PeftMetadataError(f"'{name}' is a JSON {type(value).__name__}, not an object of pattern: number")
    for pattern, number in value.items():
        _number(number, f"{name}.{pattern}")
        try:
            re.compile(rf"(.*\.)?({pattern})$")  # as `_match` uses it
        except re.error as exc:
            raise PeftMetadataError(f"'{name}' holds '{pattern}', not a regular expression ({exc})") from None
    return dict(value)


def adapter_metadata(configs: dict[str, dict]) -> dict:
    """alpha = rank everywhere: r/lora_alpha = the most common rank, patterns for the others.

    Pattern keys are anchored (``^path``): PEFT matches them as suffixes and takes the first
    match, so ``proj_out`` would also catch ``single_transformer_blocks.1.proj_out``. Text-encoder
    paths drop ``text_model.``: transformers 5's CLIPTextModel has no such module (PEFT matches
    target modules by suffix, so transformers 4 still finds them)."""
    flat: dict = {}
    for component, cfg in configs.items():
        strip = component.startswith("text_encoder")
        ranks = {(path.removeprefix("text_model.") if strip else path): r for path, r in cfg["ranks"].items()}
        common = max(set(ranks.values()), key=lambda r: (list(ranks.values()).count(r), -r))
        pattern = {"^" + re.escape(path): r for path, r in ranks.items() if r != common}
        flat.update(
            {
                f"{component}.r": common,
                f"{component}.lora_alpha": common,
                f"{component}.rank_pattern": pattern,
                f"{component}.alpha_pattern": dict(pattern),
                f"{component}.target_modules": sorted(ranks),
                f"{component}.use_dora": False,
                f"{component}.use_rslora": False,
            }
        )
    return flat
