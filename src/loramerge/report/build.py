"""Building the `Report` of a merge (or of an analysis) from the inputs, statistics, plan and results."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..presets import MERGE_RETENTION_FLOOR
from ..version import TOOL_NAME, __version__
from .model import AutoStrengthDetail, Detection, GroupRow, LoraSummary, PairSummary, Report

if TYPE_CHECKING:
    from ..analysis.pass1 import Analysis
    from ..analysis.stats import GroupStats
    from ..decide import GroupDecision
    from ..engine import GroupResult
    from ..inputs import Inputs
    from ..plan import MergePlan


def _num(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), 6)


def build_report(
    inputs: Inputs,
    analysis: Analysis,
    plan: MergePlan,
    results: Sequence[GroupResult] | None,
    *,
    hashes: dict[int, str],
) -> Report:
    """The report of a merge; with ``results=None``, of an analysis (retention and ranks are null)."""
    cfg = inputs.cfg
    labels = [inp.label for inp in cfg.inputs]
    ret_num: dict[int, float] = defaultdict(float)
    ret_den: dict[int, float] = defaultdict(float)
    touched: dict[int, int] = defaultdict(int)
    by_key = {r.key: r for r in results or ()}
    floor = plan.retention_floor
    groups = [
        _group_row(k, by_key.get(k), analysis.stats.get(k), plan.decisions.get(k), labels, floor) for k in inputs.keys
    ]
    for r in results or ():
        for i, value in r.retention.items():
            ret_num[i] += value * r.norm2_inputs[i]
            ret_den[i] += r.norm2_inputs[i]
            touched[i] += 1
    loras = []
    for i, inp in enumerate(cfg.inputs):
        retention = ret_num[i] / ret_den[i] if ret_den[i] else None
        loras.append(
            LoraSummary(
                name=labels[i],
                path=inp.path,
                sha256=hashes.get(i),
                strength_model=inp.strength_model,
                strength_text_encoder=inp.strength(True),
                preserve=inp.preserve,
                groups=touched[i],
                retention=_num(retention),
                effective_strength=_num(None if retention is None else retention * inp.strength_model),
            )
        )
    pairs = _pairs(analysis, labels)
    detection = inputs.detection
    return Report(
        tool=TOOL_NAME,
        version=__version__,
        architecture=inputs.architecture,
        detection=None
        if detection is None
        else Detection(confidence=_num(detection.confidence), reason=detection.reason),
        preset=plan.preset.name,
        options=cfg.model_dump(mode="json", exclude={"inputs"}),
        auto_strength={b: (_num(plan.auto[b].scale) if b in plan.auto else None) for b in ("model", "text_encoder")},
        auto_strength_detail={
            b: AutoStrengthDetail(
                scale=_num(a.scale),
                energy=_num(a.energy),
                reference=_num(a.reference),
                mean_abs_cosine=_num(a.mean_abs_cosine),
                floored=a.floored,
                reason=a.reason,
            )
            for b, a in plan.auto.items()
        },
        suggested_max_strength=_num(plan.suggested_max_strength),
        strategy_counts=plan.strategy_counts(),
        loras=loras,
        pairs=pairs,
        groups=groups,
        warnings=_warnings(inputs, pairs, loras, groups),
    )


def _group_row(
    key: str,
    r: GroupResult | None,
    s: GroupStats | None,
    d: GroupDecision | None,
    labels: list[str],
    floor: float = MERGE_RETENTION_FLOOR,
) -> GroupRow:
    multi = s is not None and s.n > 1
    signs = multi and s is not None and s.signs_measured

    def stat(name: str) -> float | None:
        return _num(getattr(s, name)) if multi else None

    def sign_stat(name: str) -> float | None:  # null where pass 1 did not compute sign statistics
        return stat(name) if signs else None

    return GroupRow(
        key=key,
        strategy=d.strategy if d else ("preserved" if not s else "weighted_sum"),
        n_loras=s.n if s else 0,
        loras=[labels[i] for i in (s.loras if s else ())],
        cosine=stat("cosine"),
        conflict=sign_stat("conflict"),
        excess_conflict=sign_stat("excess_conflict"),
        effective_conflict=sign_stat("effective_conflict"),
        subspace_overlap=stat("overlap"),
        magnitude_ratio=stat("magnitude_ratio"),
        retention={labels[i]: _num(v) for i, v in r.retention.items()} if r else {},
        rank=r.rank if r else None,
        compression_error=_num(r.rel_error) if r else None,
        exact=r.exact if r else None,
        reason=(d.reason if d else "") + (_floor_note(r.floor_scale, floor) if r and r.floor_scale != 1.0 else ""),
    )


def _floor_note(scale: float, target: float) -> str:
    whole = f"; {MERGE_RETENTION_FLOOR:g} over the whole merge" if target > MERGE_RETENTION_FLOOR else ""
    return f"; scaled ×{scale:.3g} so that every LoRA keeps ≥ {target:.3g} of itself here{whole} (retention floor)"


def _pairs(analysis: Analysis, labels: list[str]) -> list[PairSummary]:
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for s in analysis.stats.values():
        for p in s.pairs:
            shared[(p.i, p.j)] += 1
    out = []
    for branch, dots in analysis.dots.items():
        for (i, j), dot in sorted(dots.items()):
            n_i, n_j = analysis.norms2[branch][i], analysis.norms2[branch][j]
            cos = dot / math.sqrt(n_i * n_j) if n_i > 0 and n_j > 0 else None
            out.append(PairSummary(a=labels[i], b=labels[j], branch=branch, cosine=_num(cos), groups=shared[(i, j)]))
    return out


GROUP_RETENTION_WARNING = 0.3  # a LoRA keeping less than this of itself in a group is "lost" there
MERGE_RETENTION_WARNING = MERGE_RETENTION_FLOOR  # ... and over the whole merge (energy-weighted)


def _warnings(inputs: Inputs, pairs: list[PairSummary], loras: list[LoraSummary], groups: list[GroupRow]) -> list[str]:
    warnings = [f"{inp.label}: {w}" for inp, f in zip(inputs.cfg.inputs, inputs.files) for w in f.content_warnings()]
    for name, keys in inputs.unplaced().items():
        warnings.append(f"{name}: {len(keys)} key(s) not placed and left out: {', '.join(keys[:5])}")
    for pair in pairs:
        if pair.cosine is not None and pair.cosine < -0.3:
            warnings.append(
                f"{pair.a} and {pair.b} oppose each other in the {pair.branch} "
                f"(cosine {pair.cosine:.2f}): their effects partly cancel"
            )
    for lora in loras:
        if lora.retention is not None and lora.retention < MERGE_RETENTION_WARNING:
            warnings.append(f"{lora.name} keeps only {lora.retention:.2f} of itself over the whole merge")
        kept = {g.key: g.retention[lora.name] or 0.0 for g in groups if g.n_loras > 1 and lora.name in g.retention}
        lost = sorted((value, key) for key, value in kept.items() if value < GROUP_RETENTION_WARNING)
        if lost:
            shown = ", ".join(f"{key.removeprefix('diffusion_model.')} ({value:.2f})" for value, key in lost[:4])
            more = f" and {len(lost) - 4} more" if len(lost) > 4 else ""
            warnings.append(
                f"{lora.name} is nearly cancelled (retention < {GROUP_RETENTION_WARNING}) in {len(lost)} "
                f"group(s): {shown}{more}"
            )
    return warnings
