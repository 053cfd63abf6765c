"""The report of one merge as plain data (JSON schema version `REPORT_SCHEMA_VERSION`).

Schema (version 1), top level: ``schema_version``, ``tool``, ``version``, ``architecture``,
``detection`` {confidence, reason}, ``preset``, ``options``, ``auto_strength`` {model,
text_encoder: scale or null}, ``auto_strength_detail`` {branch: {scale, energy, reference,
mean_abs_cosine, floored, reason}}, ``suggested_max_strength``, ``strategy_counts``,
``loras`` [{name, path, sha256, strength_model, strength_text_encoder, preserve, groups,
retention, effective_strength}], ``pairs`` [{a, b, branch, cosine, groups}], ``groups`` [{key,
strategy, n_loras, loras, cosine, conflict, excess_conflict, effective_conflict,
subspace_overlap, magnitude_ratio, retention {name: value}, rank, compression_error, exact,
reason}], ``warnings`` [str], ``output`` {path, format, dtype} or null.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ..version import TOOL_NAME, __version__

REPORT_SCHEMA_VERSION = 1


def _num(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), 6)


def build_report(inputs, analysis, plan, results, *, hashes: dict[int, str], output: dict | None) -> dict:
    cfg = inputs.cfg
    labels = [inp.label for inp in cfg.inputs]
    groups, ret_num, ret_den, touched = [], defaultdict(float), defaultdict(float), defaultdict(int)
    for r in results:
        s, d = analysis.stats.get(r.key), plan.decisions.get(r.key)
        groups.append(_group_row(r, s, d, labels))
        for i, value in r.retention.items():
            n2 = r.norm2_inputs[i]
            ret_num[i] += value * n2
            ret_den[i] += n2
            touched[i] += 1
    loras = []
    for i, inp in enumerate(cfg.inputs):
        retention = ret_num[i] / ret_den[i] if ret_den[i] else None
        loras.append({"name": labels[i], "path": inp.path, "sha256": hashes.get(i), "strength_model": inp.strength_model,
                      "strength_text_encoder": inp.strength(True), "preserve": inp.preserve, "groups": touched[i],
                      "retention": _num(retention),
                      "effective_strength": _num(None if retention is None else retention * inp.strength_model)})
    return {
        "schema_version": REPORT_SCHEMA_VERSION, "tool": TOOL_NAME, "version": __version__,
        "architecture": inputs.architecture,
        "detection": None if inputs.detection is None else {"confidence": _num(inputs.detection.confidence),
                                                            "reason": inputs.detection.reason},
        "preset": plan.preset.name, "options": cfg.model_dump(mode="json", exclude={"inputs"}),
        "auto_strength": {b: (_num(plan.auto[b].scale) if b in plan.auto else None) for b in ("model", "text_encoder")},
        "auto_strength_detail": {b: {k: (_num(v) if isinstance(v, float) else v) for k, v in vars(a).items()}
                                 for b, a in plan.auto.items()},
        "suggested_max_strength": _num(plan.suggested_max_strength), "strategy_counts": plan.strategy_counts(),
        "loras": loras, "pairs": _pairs(analysis, labels), "groups": groups,
        "warnings": _warnings(inputs, analysis, labels, loras), "output": output,
    }


def _group_row(r, s, d, labels) -> dict:
    return {"key": r.key, "strategy": d.strategy if d else ("preserved" if not s else "weighted_sum"),
            "n_loras": s.n if s else 0, "loras": [labels[i] for i in (s.loras if s else ())],
            "cosine": _num(s.cosine) if s and s.n > 1 else None,
            "conflict": _num(s.conflict) if s and s.n > 1 else None,
            "excess_conflict": _num(s.excess_conflict) if s and s.n > 1 else None,
            "effective_conflict": _num(s.effective_conflict) if s and s.n > 1 else None,
            "subspace_overlap": _num(s.overlap) if s and s.n > 1 else None,
            "magnitude_ratio": _num(s.magnitude_ratio) if s and s.n > 1 else None,
            "retention": {labels[i]: _num(v) for i, v in r.retention.items()},
            "rank": r.rank, "compression_error": _num(r.rel_error), "exact": r.exact,
            "reason": d.reason if d else ""}


def _pairs(analysis, labels) -> list[dict]:
    out = []
    for branch, dots in analysis.dots.items():
        shared = defaultdict(int)
        for s in analysis.stats.values():
            for p in s.pairs:
                shared[(p.i, p.j)] += 1
        for (i, j), dot in sorted(dots.items()):
            n_i, n_j = analysis.norms2[branch][i], analysis.norms2[branch][j]
            cos = dot / math.sqrt(n_i * n_j) if n_i > 0 and n_j > 0 else None
            out.append({"a": labels[i], "b": labels[j], "branch": branch, "cosine": _num(cos), "groups": shared[(i, j)]})
    return out


def _warnings(inputs, analysis, labels, loras) -> list[str]:
    warnings = []
    for name, keys in inputs.unplaced().items():
        warnings.append(f"{name}: {len(keys)} key(s) not placed and left out: {', '.join(keys[:5])}")
    for pair in _pairs(analysis, labels):
        if pair["cosine"] is not None and pair["cosine"] < -0.3:
            warnings.append(f"{pair['a']} and {pair['b']} oppose each other in the {pair['branch']} "
                            f"(cosine {pair['cosine']:.2f}): their effects partly cancel")
    for lora in loras:
        if lora["retention"] is not None and lora["retention"] < 0.3:
            warnings.append(f"{lora['name']} is mostly washed out of the merge (retention {lora['retention']:.2f})")
    return warnings


def analysis_report(inputs, analysis, plan) -> dict:
    """The report of `analyze`: statistics and decisions, no merge results (retention/rank are null)."""
    from types import SimpleNamespace

    placeholders = [SimpleNamespace(key=k, retention={}, norm2_inputs={}, norm2_merged=0.0, rank=None, rel_error=None,
                                    exact=None) for k in inputs.keys]
    return build_report(inputs, analysis, plan, placeholders, hashes={}, output=None)
