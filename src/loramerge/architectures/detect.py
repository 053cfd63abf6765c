"""Which architecture a file's stems belong to, with a confidence and the stems that do not fit.

Every table places what it can; the table placing the most stems wins. A tie (common: an
attention-only diffusers LoRA on ``transformer_blocks.N.attn.to_q`` fits FLUX, Qwen-Image and
HunyuanVideo alike) is broken by the architecture the files record (``loramerge.architecture``,
written by loramerge, only when every input records the same one), then by the tables' markers,
counted on the stems each table placed, then by priority (the more common family). A tie broken by
markers or priority lowers the confidence, and the reason says what broke it. When no table places
at least `MIN_SHARE` of the stems the answer is "unknown".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..enums import UNKNOWN_ARCH
from .engine import KeyPlacer, Stem
from .registry import TABLES, placer
from .spec import ArchTable
from .unknown import MIN_SHARE

TIE_BY_MARKERS = 0.75  # confidence factor when family markers broke a tie of placed counts
TIE_BY_PRIORITY = 0.5  # ... when only the tables' priority did


@dataclass(frozen=True)
class Detection:
    """The verdict. For "unknown", `placed`/`unplaced` describe the closest table (`runner_up`)."""

    architecture: str
    confidence: float
    placed: int
    total: int
    unplaced: tuple[str, ...]
    runner_up: str | None
    reason: str


@dataclass(frozen=True)
class _Score:
    name: str
    placed: int
    recorded: bool  # the files' own metadata names this table
    markers: int
    priority: int
    unplaced: tuple[str, ...]

    @property
    def rank(self) -> tuple[int, bool, int, int]:
        return (self.placed, self.recorded, self.markers, self.priority)


def has_marker(stem: Stem, marker: str) -> bool:
    """True when `marker` (a dotted run of whole path segments) occurs in the stem's path.

    Underscored stems are matched with the marker's dots as underscores, on underscore boundaries,
    so ``img_mod.lin`` matches ``double_blocks_0_img_mod_lin`` but not ``..._img_mod_linear``.
    """
    sep = "." if stem.dotted else "_"
    return f"{sep}{marker.replace('.', sep)}{sep}" in f"{sep}{stem.path}{sep}"


def score(table: ArchTable, key_placer: KeyPlacer, stems: Sequence[Stem], recorded: str | None = None) -> _Score:
    fits = [key_placer.place(s) is not None for s in stems]
    placed = [s for s, ok in zip(stems, fits) if ok]
    unplaced = tuple(f"{s.branch.value}.{s.path}" for s, ok in zip(stems, fits) if not ok)
    markers = sum(1 for s in placed if any(has_marker(s, m) for m in table.markers))
    return _Score(table.name, len(placed), table.name == recorded, markers, table.priority, unplaced)


def detect(
    stems: Sequence[Stem], tables: Mapping[str, ArchTable] | None = None, *, recorded: str | None = None
) -> Detection:
    """The architecture whose table places the most of `stems` (see the module docstring);
    `recorded`: the architecture the files' own metadata names, if any (breaks a tie first)."""
    tables = TABLES if tables is None else tables
    total = len(stems)
    if total == 0:
        return Detection(UNKNOWN_ARCH, 0.0, 0, 0, (), None, "no keys to detect the architecture from")
    scores = sorted(
        (score(t, placer(n) if tables is TABLES else KeyPlacer(t), stems, recorded) for n, t in tables.items()),
        key=lambda s: s.rank,
        reverse=True,
    )
    best, second = scores[0], scores[1] if len(scores) > 1 else None
    share = best.placed / total
    if share < MIN_SHARE:
        return Detection(
            UNKNOWN_ARCH,
            round(1.0 - share, 4),
            best.placed,
            total,
            best.unplaced,
            best.name,
            f"no architecture places at least {MIN_SHARE:.0%} of the {total} keys; "
            f"closest is {best.name} with {best.placed}",
        )
    confidence, reason = share, f"{best.name} places {best.placed}/{total} keys"
    if second is None:
        pass
    elif second.placed < best.placed:
        reason += f"; runner-up {second.name} places {second.placed}"
    elif best.recorded:
        reason += f"; {second.name} places as many, the files' loramerge metadata names {best.name}"
    elif second.markers < best.markers:
        confidence *= TIE_BY_MARKERS
        reason += (
            f"; {second.name} places as many, the tie is broken by family markers "
            f"({best.markers} vs {second.markers} keys)"
        )
    else:
        confidence *= TIE_BY_PRIORITY
        reason += (
            f"; {second.name} places as many with as many family markers, {best.name} is "
            "preferred as the more common family: pass --arch if that is wrong"
        )
    return Detection(
        best.name, round(confidence, 4), best.placed, total, best.unplaced, second.name if second else None, reason
    )
