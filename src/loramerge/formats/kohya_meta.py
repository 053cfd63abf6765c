"""kohya (sd-scripts) metadata that A1111/Forge and LoRA managers read from an output's header.

- ``ss_base_model_version``: A1111/Forge class a LoRA by it (a value starting with ``sdxl_`` is an SDXL
  LoRA; any other file with metadata counts as SD1) and by default list only the LoRAs of the loaded
  model's class. It is carried from the inputs when they all agree and it does not contradict the
  detected architecture; for SD1.x/SDXL outputs without an agreed value, sd-scripts' own value for
  the architecture is written.
- ``ss_network_dim`` / ``ss_network_alpha`` / ``ss_network_module``: describe the written file (its
  rank, its one alpha, ``networks.lora`` for a pure LoRA file), never an input's: a merge changes them.
  A file whose modules have different ranks says ``Dynamic``, as sd-scripts' resize does.

Nothing else of an input's training metadata (dataset tags, output name, hashes, ...) is true of a
merge, so nothing else is carried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BASE_MODEL_VERSION = "ss_base_model_version"
# sd-scripts' values (model_util / sdxl_model_util) for the architectures loramerge shares with it.
ARCHITECTURE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
DYNAMIC = "Dynamic"


def _contradicts(value: str, architecture: str | None) -> bool:
    """A value A1111 would class differently from the detected SD architecture."""
    if architecture not in ARCHITECTURE_VERSION:
        return False
    return value.startswith("sdxl_") != (architecture == "sdxl")


def carried_metadata(sources: Iterable[Mapping[str, str]], architecture: str | None) -> dict[str, str]:
    """The kohya metadata of the inputs (each input's header metadata) that stays true of the output."""
    values = {m.get(BASE_MODEL_VERSION) for m in sources}
    agreed = values.pop() if len(values) == 1 else None
    if agreed is not None and not _contradicts(agreed, architecture):
        return {BASE_MODEL_VERSION: agreed}
    own = ARCHITECTURE_VERSION.get(architecture or "")
    return {BASE_MODEL_VERSION: own} if own else {}


def network_metadata(ranks: list[int], alpha: float | None, dense: int) -> dict[str, str]:
    """``ss_network_*`` of a kohya file with low-rank modules of `ranks`, one `alpha`, and `dense`
    dense (``diff``/``w_norm``) tensors."""
    if not ranks or alpha is None:
        return {}
    out = {
        "ss_network_dim": str(ranks[0]) if len(set(ranks)) == 1 else DYNAMIC,
        "ss_network_alpha": f"{alpha:g}",
    }
    if not dense:
        out["ss_network_module"] = "networks.lora"
    return out
