"""Aggregate the raw results over seeds: means ± std, ranks, head-to-head counts, sanity checks."""

from __future__ import annotations

import math
import statistics

from .config import CASES, BenchConfig
from .evaluators import DIM_TEST
from .methods import ABLATION, AUTO, BASELINE, BY_NAME, CANDIDATE

COMPARISONS = (  # (question, A, B)
    ("measured rules (default) vs the paper's", "auto", "auto_paper"),
    ("only imbalanced orthogonal groups summed (reference rule)", "cand_ratio_rule", "auto"),
    ("energy rule on the sums (no floor) vs full strength", "cand_orth_sum_energy", "auto"),
    ("opposing groups elected by basis-space TIES vs summed", "cand_opposing_ties", "auto"),
    ("stacking vs averaging", "additive", "average"),
    ("stacking vs SLERP", "additive", "slerp"),
    ("basis-space vs weight-space TIES", "basis_ties", "ties"),
    ("KnOTS-basis vs weight-space TIES", "knots_ties", "ties"),
    ("per-group vs global decision", "auto", "auto_global"),
    ("excess vs raw conflict", "auto", "auto_raw_conflict"),
    ("auto-strength vs 1/N", "auto", "auto_uniform"),
    ("decision smoothing 0.25 vs 0", "auto", "auto_no_smoothing"),
    ("refinement 'refine' vs none", "auto_refine", "auto"),
    ("refinement 'full' vs 'refine'", "auto_refine_full", "auto_refine"),
    ("exact low-rank patch vs materialised at rank r", "auto", "auto_materialize"),
    ("DARE vs no sparsification", "auto_dare", "auto"),
)
METRICS = ("subject", "bold", "slant", "thin", "joint", "effect_mean", "content")


def ms(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 with one seed)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(pair: tuple[float, float], digits: int = 2) -> str:
    m, s = pair
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def seed_wins(a: list[float], b: list[float], tol: float = 1e-9) -> dict[str, int]:
    """On how many seeds `a` is better than, equal to, worse than `b`."""
    return {"better": sum(x > y + tol for x, y in zip(a, b)), "equal": sum(abs(x - y) <= tol for x, y in zip(a, b)),
            "worse": sum(x < y - tol for x, y in zip(a, b))}


def aggregate(cfg: BenchConfig, results: dict) -> dict:
    if not cfg.images:
        from .text.report import aggregate_text

        return {"singles": {}, "cases": {}, "text": aggregate_text(cfg, results)}
    seeds = list(cfg.seeds)
    singles = {}
    for name in ("base", "subject", "bold", "slant", "thin"):
        singles[name] = {m: ms([results[f"singles/{s}"]["rows"][name].get(m) for s in seeds])
                         for m in METRICS if m in results[f"singles/{seeds[0]}"]["rows"][name]}
    cases = {case: _aggregate_case(cfg, results, case, singles) for case in cfg.cases}
    out = {"singles": singles, "cases": cases, "evaluator_accuracy": results["evaluator"]["accuracy"]}
    if cfg.text is not None and any(k.startswith("text/") for k in results):
        from .text.report import aggregate_text

        out["text"] = aggregate_text(cfg, results)
    return out


def _method_entry(rows: list[dict], loras, primary: str) -> dict:
    """One method on one case: every metric as (mean, std) over the seeds' `rows`."""
    entry = {m: ms([r["rates"].get(m) for r in rows]) for m in METRICS}
    entry["retention"] = {lo: ms([r["retention"][lo] for r in rows]) for lo in loras}
    entry["retention_report"] = {lo: ms([r["retention_report"].get(lo) for r in rows]) for lo in loras}
    entry["auto_strength"] = ms([r["auto_strength"] for r in rows])
    entry["strategy_counts"] = [r["strategy_counts"] for r in rows]
    entry["lambda"] = rows[0]["lambda"]
    entry["primary"] = entry[primary]
    entry["per_seed_primary"] = [r["rates"][primary] for r in rows]
    if rows[0].get("tuned"):
        entry["tuned"] = [r["tuned"] for r in rows]
    return entry


def _aggregate_case(cfg: BenchConfig, results: dict, case: str, singles: dict) -> dict:
    loras, primary = CASES[case]
    seeds = list(cfg.seeds)
    present = results[f"case/{seeds[0]}/{case}"]["rows"]
    per = {name: _method_entry([results[f"case/{s}/{case}"]["rows"][name] for s in seeds], loras, primary)
           for name in cfg.methods if name in present}
    ranked = sorted((n for n in per if BY_NAME[n].family in (BASELINE, AUTO)), key=lambda n: -per[n]["primary"][0])
    seed_ranks = [_competition_ranks({n: per[n]["per_seed_primary"][k] for n in ranked}).get("auto")
                  for k in range(len(seeds))]
    if "auto" in per:
        for e in per.values():
            e["vs_auto"] = seed_wins(e["per_seed_primary"], per["auto"]["per_seed_primary"])
    floor = min(singles[lo]["content"][0] for lo in loras) - cfg.content_guard
    for e in per.values():
        e["content_flag"] = bool(e["content"][0] < floor - 1e-9)
    kept = [n for n in ranked if not per[n]["content_flag"]]
    return {"loras": loras, "primary": primary, "methods": per, "ranking": ranked,
            "ranks": _competition_ranks({n: per[n]["primary"][0] for n in ranked}),
            "auto_rank_per_seed": seed_ranks, "content_floor": floor, "ranking_kept": kept,
            "ranks_kept": _competition_ranks({n: per[n]["primary"][0] for n in kept}),
            "auto_dominated_by": _dominating(per, ranked),
            "auto_dominated_by_variants": _dominating(per, [n for n in per if BY_NAME[n].family in (ABLATION, CANDIDATE)])}


def _dominating(per: dict, ranked: list[str]) -> list[str]:
    """The ranked methods at least as good as auto on the primary metric and on content, better on one."""
    if "auto" not in per:
        return []
    a = per["auto"]
    return [n for n in ranked if n != "auto" and per[n]["primary"][0] >= a["primary"][0]
            and per[n]["content"][0] >= a["content"][0]
            and (per[n]["primary"][0] > a["primary"][0] or per[n]["content"][0] > a["content"][0])]


def _competition_ranks(values: dict[str, float]) -> dict[str, int]:
    """1 + the number of methods strictly better (equal values share a rank)."""
    return {n: 1 + sum(round(w, 6) > round(v, 6) for w in values.values()) for n, v in values.items()}


def sanity(cfg: BenchConfig, agg: dict) -> list[dict]:
    """The issue's sanity checks, each with its numbers and whether it holds."""
    out = []
    base = agg["singles"].get("base", {})
    for name in (("subject", "bold", "slant", "thin") if base else ()):
        single, ref = agg["singles"][name][name][0], base[name][0]
        out.append({"check": f"the {name} LoRA alone shows its effect: rate − base rate > {cfg.sanity_margin}",
                    "value": f"{single:.2f} vs base {ref:.2f}", "ok": bool(single - ref > cfg.sanity_margin)})
    dim = agg.get("evaluator_accuracy", {}).get(f"plain ×{DIM_TEST}")
    if dim is not None:
        quiet = min(dim["bold"], dim["thin"])
        out.append({"check": f"the stroke heads read stroke width, not brightness: on plain test digits at {DIM_TEST:.0%} "
                             "brightness neither the bold nor the thin head fires (accuracy ≥ 0.95)",
                    "value": f"{quiet:.3f}", "ok": bool(quiet >= 0.95)})
    if "subject+style" in agg["cases"]:
        m = agg["cases"]["subject+style"]["methods"]
        if "additive" in m and "average" in m:
            a, b = m["additive"]["joint"][0], m["average"]["joint"][0]
            out.append({"check": "subject+style: additive ≫ average on the joint rate (≥ 0.2 higher and ≥ 2×)",
                        "value": f"{a:.2f} vs {b:.2f}", "ok": bool(a - b >= 0.2 and a >= 2 * b)})
    if "text" in agg:
        from .text.report import text_sanity

        out += text_sanity(cfg, agg["text"])
    return out
