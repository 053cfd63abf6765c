"""The LORA_STACK value: an ordered tuple of `StackEntry`, one per LoRA Stack node in the chain.

Stacks made by other node packs (tuples ``(lora_name, strength_model, strength_clip)``, the
common LORA_STACK convention) are accepted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loramerge.config import LoraInput

from .errors import LoraOptimizerError


@dataclass(frozen=True)
class StackEntry:
    """One LoRA of the stack as the user set it (a name in ComfyUI's ``loras`` folder)."""

    lora_name: str
    strength_model: float = 1.0
    strength_clip: float = 1.0
    preserve: bool = False
    include: str = ""  # one regex on canonical target names ("a|b" for several); empty = all
    exclude: str = ""
    block_weights: str = ""  # "OUTALL" or "1,0,0,...", as after "@" in PATH:S@...; empty = none

    def __post_init__(self):
        from loramerge.config import check_block_weights
        from loramerge.errors import InputSyntaxError

        if self.weights is not None:
            try:
                check_block_weights(self.lora_name, self.weights)
            except InputSyntaxError as exc:
                raise LoraOptimizerError(f"LoRA Stack '{self.lora_name}': {exc.problem}") from None
        for field in ("include", "exclude"):
            pattern = getattr(self, field)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise LoraOptimizerError(
                    f"LoRA Stack '{self.lora_name}': {field} is not a valid regular expression ({exc}): {pattern!r}"
                ) from None

    @property
    def off(self) -> bool:
        """Both strengths 0: left out of the merge, as ComfyUI's LoraLoader leaves the model as it is."""
        return self.strength_model == 0 and self.strength_clip == 0

    def to_input(self, path: str) -> LoraInput:
        return LoraInput(
            path=path,
            strength_model=self.strength_model,
            strength_text_encoder=self.strength_clip,
            preserve=self.preserve,
            include=_patterns(self.include),
            exclude=_patterns(self.exclude),
            name=self.lora_name,
            block_weights=self.weights,
        )

    @property
    def weights(self) -> str | None:
        """The block weights as `LoraInput` takes them (a leading "@" is allowed, as in PATH:S@...)."""
        text = self.block_weights.strip().removeprefix("@").strip()
        return text or None


def _patterns(text: str) -> tuple[str, ...]:
    return (text.strip(),) if text.strip() else ()


def as_stack(value) -> tuple[StackEntry, ...]:
    """A LORA_STACK input as entries; None is the empty stack."""
    if value is None:
        return ()
    entries = []
    for item in value:
        if isinstance(item, StackEntry):
            entries.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 3 and isinstance(item[0], str):
            entries.append(StackEntry(item[0], float(item[1]), float(item[2])))
        else:
            raise LoraOptimizerError(
                f"LORA_STACK: cannot read entry {item!r}; connect LoRA Stack nodes "
                "(or a stack of (lora_name, strength_model, strength_clip) tuples)"
            )
    return tuple(entries)
