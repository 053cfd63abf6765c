"""Aggregate the text domain over seeds: normalized accuracies (means ± std), ranks, auto's gap to
the best global method, per-LoRA retention, sanity checks."""

from __future__ import annotations

from ..methods import AUTO, BASELINE, BY_NAME
from ..report import _competition_ranks, ms, seed_wins
from .config import TEXT_CASES
from .data import TASKS


def aggregate_text(cfg, results: dict) -> dict:
    t = cfg.text
    seeds = list(t.seeds)
    singles = {row: {task: ms([results[f"text/singles/{s}"]["rows"][row][task] for s in seeds]) for task in TASKS}
               for row in ("base", *TASKS)}
    cases = {case: _case(cfg, results, case) for case in t.cases}
    tuning = {case: results[f"text/tune/{case}"]["lambda"] for case in t.cases if f"text/tune/{case}" in results}
    return {"singles": singles, "cases": cases, "lambda": tuning}


def _entry(rows: list[dict], tasks) -> dict:
    e = {"normalized": {task: ms([r["normalized"][task] for r in rows]) for task in tasks},
         "accuracy": {task: ms([r["accuracy"][task] for r in rows]) for task in TASKS},
         "retention": {task: ms([r["retention"][task] for r in rows]) for task in tasks},
         "retention_report": {task: ms([r["retention_report"].get(task) for r in rows]) for task in tasks},
         "auto_strength": ms([r["auto_strength"] for r in rows]),
         "strategy_counts": [r["strategy_counts"] for r in rows], "lambda": rows[0]["lambda"],
         "per_seed_primary": [r["normalized"]["mean"] for r in rows],
         "min_retention": min(min(r["retention"][task] for task in tasks) for r in rows)}
    e["primary"] = ms(e["per_seed_primary"])
    if rows[0].get("tuned"):
        e["tuned"] = [r["tuned"] for r in rows]
    return e


def _case(cfg, results: dict, case: str) -> dict:
    tasks = TEXT_CASES[case]
    seeds = list(cfg.text.seeds)
    present = results[f"text/case/{seeds[0]}/{case}"]["rows"]
    per = {n: _entry([results[f"text/case/{s}/{case}"]["rows"][n] for s in seeds], tasks)
           for n in (cfg.text.methods or cfg.methods) if n in present}
    ranked = sorted((n for n in per if BY_NAME[n].family in (BASELINE, AUTO)), key=lambda n: -per[n]["primary"][0])
    if "auto" in per:
        for e in per.values():
            e["vs_auto"] = seed_wins(e["per_seed_primary"], per["auto"]["per_seed_primary"])
    globals_ = [n for n in ranked if BY_NAME[n].family == BASELINE]
    best = globals_[0] if globals_ else None
    gap = per["auto"]["primary"][0] - per[best]["primary"][0] if best and "auto" in per else None
    return {"tasks": tasks, "primary": "mean normalized accuracy", "methods": per, "ranking": ranked,
            "ranks": _competition_ranks({n: per[n]["primary"][0] for n in ranked}),
            "best_global": best, "auto_gap_to_best_global": gap}


def text_sanity(cfg, agg: dict) -> list[dict]:
    out = []
    for task in TASKS:
        single, base = agg["singles"][task][task][0], agg["singles"]["base"][task][0]
        out.append({"check": f"text: the {task} LoRA alone beats the base model on {task} by > {cfg.text.sanity_margin}",
                    "value": f"{single:.2f} vs base {base:.2f}", "ok": bool(single - base > cfg.text.sanity_margin)})
    return out
