"""The report of one merge as a typed, frozen value; its JSON schema is generated from it.

`docs/REPORT.md` keeps the prose; `docs/report.schema.json` is `Report.model_json_schema()` (a
test keeps it current). Numbers are rounded to 6 decimals; non-finite values become null.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

REPORT_SCHEMA_VERSION = 2
"""2: the report is a typed model; `output` is set once, by the merge that wrote the file."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Detection(_Frozen):
    confidence: float | None
    reason: str


class AutoStrengthDetail(_Frozen):
    scale: float | None
    energy: float | None
    reference: float | None
    mean_abs_cosine: float | None
    floored: bool
    reason: str


class LoraSummary(_Frozen):
    name: str
    path: str
    sha256: str | None
    strength_model: float
    strength_text_encoder: float
    preserve: bool
    groups: int  # groups this LoRA takes part in
    retention: float | None  # energy-weighted ⟨M, w_iΔW_i⟩/‖w_iΔW_i‖² over its groups
    effective_strength: float | None  # retention × strength


class PairSummary(_Frozen):
    a: str
    b: str
    branch: str  # "model" | "text_encoder"
    cosine: float | None  # of the whole-branch deltas
    groups: int  # groups the two share


class GroupRow(_Frozen):
    key: str
    strategy: str
    n_loras: int
    loras: list[str]
    cosine: float | None
    conflict: float | None
    excess_conflict: float | None
    effective_conflict: float | None
    subspace_overlap: float | None
    magnitude_ratio: float | None
    retention: dict[str, float | None]
    rank: int | None
    compression_error: float | None
    exact: bool | None
    reason: str


class OutputInfo(_Frozen):
    path: str
    format: str
    dtype: str  # as written ("auto" resolved)
    widened: list[str] = []  # tensors written in float32: their values overflow `dtype`


class Report(_Frozen):
    schema_version: int = REPORT_SCHEMA_VERSION
    tool: str
    version: str
    architecture: str
    detection: Detection | None
    preset: str
    options: dict
    auto_strength: dict[str, float | None]  # "model" / "text_encoder" -> scale, null when off
    auto_strength_detail: dict[str, AutoStrengthDetail]
    suggested_max_strength: float | None
    strategy_counts: dict[str, int]
    loras: list[LoraSummary]
    pairs: list[PairSummary]
    groups: list[GroupRow]
    warnings: list[str]
    output: OutputInfo | None = None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_html(self, *, sort: str = "conflict") -> str:
        """The report as one self-contained HTML page (needs the ``report`` extra: matplotlib)."""
        from .page import to_html

        return to_html(self, sort=sort)

    def save_html(self, path: str | os.PathLike, *, sort: str = "conflict") -> Path:
        """Write `to_html()` to `path` atomically; returns the path."""
        from .page import save_html

        return save_html(self, path, sort=sort)


def schema_json() -> str:
    """The versioned JSON schema of `Report`, as committed in docs/report.schema.json."""
    schema = Report.model_json_schema()
    schema["$id"] = f"https://loramerge/report/v{REPORT_SCHEMA_VERSION}.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
