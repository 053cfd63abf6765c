"""The merge methods compared, each run through loramerge's real path (`loramerge.api.merge` and
`MergeResult.save`) wherever loramerge has an option for it.

Three kinds of method:

* options of `merge()` (every baseline but KnOTS+TIES, auto, and the §7.2 ablations);
* ``custom``: KnOTS+TIES, which loramerge has as a strategy building block (`knots_basis`,
  `merge_in_basis`) but not as an option (``refine=full`` adds TALL-masks and orthogonalisation);
  it is assembled from loramerge's own analysis, strategies and writer;
* ``what_if``: candidate defaults that loramerge does not have. The benchmark emulates them by
  swapping one function of loramerge *in the benchmark's worker process only* (the auto-strength
  floor in the preset, or the orthogonal branch of the decision tree); nothing in loramerge is
  edited. They are labelled as candidates in every table.

Baselines run at strength 1 without auto-strength (what a user gets from that method as
published); ``auto`` and its ablations use loramerge's defaults except the one thing switched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

BASELINE, AUTO, ABLATION, CANDIDATE = "baseline", "auto", "ablation", "candidate"


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    family: str
    options: dict = field(default_factory=dict)
    strengths: str = "one"          # "one" | "inverse_n" | "lambda" (task arithmetic, tuned)
    custom: str | None = None       # "knots_ties"
    what_if: str | None = None      # see `what_if`
    note: str = ""
    max_loras: int | None = None    # ZipLoRA merges two LoRAs only

    def applies(self, n: int) -> bool:
        return self.max_loras is None or n <= self.max_loras


NO_AUTO = {"auto_strength": False}
PAPER = {"rules": "paper"}
MEASURED = {"rules": "measured"}  # auto (the default) and its ablations; the candidates are emulated changes of the paper rules

METHODS: tuple[Method, ...] = (
    # -- baselines (paper §7.1 and seed 002) ---------------------------------------------------------
    Method("additive", "additive stacking", BASELINE, {"mode": "weighted_sum", **NO_AUTO},
           note="Σ ΔW_i at strength 1 (what stacking LoRAs in a UI does)"),
    Method("average", "weighted average", BASELINE, {"mode": "weighted_average", **NO_AUTO}, note="Σ ΔW_i / N"),
    Method("task_arithmetic", "task arithmetic (λ tuned)", BASELINE, {"mode": "weighted_sum", **NO_AUTO},
           strengths="lambda", note="λ·Σ ΔW_i, λ chosen per case on a separate training seed"),
    Method("l2_average", "L2-weighted average", BASELINE, {"mode": "l2_weighted_average", **NO_AUTO},
           note="seed 002 eq. 3, per group"),
    Method("ties", "TIES (global, weight space)", BASELINE, {"mode": "ties", **NO_AUTO},
           note="--mode ties: TIES in every shared group, loramerge's per-group density"),
    Method("dare_ties", "DARE-TIES (global)", BASELINE, {"mode": "ties", "sparsify": "dare", **NO_AUTO},
           note="--mode ties --sparsify dare, density 0.7 (preset)"),
    Method("slerp", "SLERP (global)", BASELINE, {"mode": "slerp", **NO_AUTO}),
    Method("knots_ties", "KnOTS+TIES", BASELINE, custom="knots_ties",
           note="TIES on the coefficients of KnOTS' shared SVD basis (exactly low rank)"),
    Method("ziplora", "ZipLoRA (weight space)", BASELINE, {"mode": "ziplora", **NO_AUTO}, max_loras=2,
           note="--mode ziplora: learned per-column coefficients (seed 002 §2.5); two LoRAs only"),
    Method("basis_ties", "TIES (global, basis space)", BASELINE, {"mode": "ties", "basis_space": True, **NO_AUTO},
           note="--mode ties --basis-space: TIES on shared QR-basis coefficients"),
    # -- loramerge auto ----------------------------------------------------------------------------
    Method("auto", "loramerge auto (default, measured rules)", AUTO, MEASURED,
           note="--mode auto, every default (--rules measured: orthogonal denoiser groups summed, text-encoder "
                "groups averaged/SLERPed, near-orthogonal LoRAs not scaled down)"),
    Method("auto_paper", "loramerge auto, paper rules", AUTO, PAPER,
           note="--rules paper: the seed's decision tree, auto-strength on the inputs"),
    Method("tune", "loramerge tune (no evaluator)", AUTO, custom="tune",
           note="`loramerge tune`, defaults: the top 3 settings by pass-1 heuristics and the untuned one merged, "
                "ranked by tensor proxies (no λ ≠ 1 without an evaluator)"),
    Method("tune_eval", "loramerge tune + the benchmark's evaluator", AUTO, custom="tune_eval",
           note="`loramerge tune` with the case's primary metric plugged in through the Evaluator protocol, measured "
                "on samples the reported numbers never use; λ ∈ {0.5 … 1.5} swept; --min-gain 0.01"),
    Method("tune_eval_guard", "loramerge tune + evaluator with the content guard", AUTO, custom="tune_eval_guard",
           note="as above, but a candidate whose content falls more than the guard below the LoRAs alone scores "
                "primary − 1 (the rule task arithmetic's λ is chosen by); images only"),
    # -- ablations (paper §7.2): one component switched -------------------------------------------------
    Method("auto_global", "auto, global decision", ABLATION, {**MEASURED, "optimization": "global"},
           note="per-group vs global strategy selection"),
    Method("auto_additive", "auto, additive optimization", ABLATION, {**MEASURED, "optimization": "additive"},
           note="weighted_sum everywhere, auto-strength on"),
    Method("auto_raw_conflict", "auto, raw conflict", ABLATION, {**MEASURED, "use_excess": False},
           note="excess vs raw sign conflict"),
    Method("auto_uniform", "auto, 1/N instead of auto-strength", ABLATION, {**MEASURED, **NO_AUTO}, strengths="inverse_n",
           note="auto-strength vs fixed uniform scaling 1/N"),
    Method("auto_no_strength", "auto, no auto-strength", ABLATION, {**MEASURED, **NO_AUTO}, note="strengths 1, no scaling"),
    Method("auto_refine", "auto, refine (TALL+orth.)", ABLATION, {**MEASURED, "refine": "refine"}, note="refinement level 'refine'"),
    Method("auto_refine_full", "auto, refine full (+KnOTS)", ABLATION, {**MEASURED, "refine": "full"}, note="refinement level 'full'"),
    Method("auto_no_smoothing", "auto, no decision smoothing", ABLATION, {**MEASURED, "smoothing": 0.0}, note="λ = 0 vs 0.25"),
    Method("auto_materialize", "auto, materialised at rank r", ABLATION, {**MEASURED, "rank": 8},
           note="every group re-factorised at the input rank (SVD) instead of the exact rank-Σr patch"),
    Method("auto_dare", "auto + DARE", ABLATION, {**MEASURED, "sparsify": "dare"}, note="sparsification"),
    Method("auto_della", "auto + DELLA", ABLATION, {**MEASURED, "sparsify": "della"}, note="sparsification"),
    Method("auto_dare_conflict", "auto + conflict-aware DARE", ABLATION, {**MEASURED, "sparsify": "dare_conflict"},
           note="sparsification"),
    Method("auto_basis", "auto, basis-space TIES", ABLATION, {**MEASURED, "basis_space": True}, note="weight vs basis space"),
    Method("auto_no_floor", "auto, no retention floor", ABLATION, MEASURED, what_if="no_retention_floor",
           note="averaged groups as the strategy leaves them (SLERP keeps ~1/√N of each LoRA)"),
    Method("auto_agreeing_avg", "auto, agreeing groups averaged", ABLATION, MEASURED, what_if="agreeing_averaged",
           note="low-conflict denoiser groups whose LoRAs partly agree (cos ≥ 0) averaged/SLERPed as the paper "
                "tree does, not summed (the measured rules before 2026-12-06's second change)"),
    # -- candidate defaults (emulated, not in loramerge) ------------------------------------------------
    Method("cand_ratio_rule", "candidate: imbalanced orthogonal summed", CANDIDATE, PAPER, what_if="ratio_rule",
           note="the reference's rule: orthogonal groups with magnitude ratio ≥ 2 → weighted_sum"),
    Method("cand_orth_sum_energy", "candidate: orthogonal summed, energy rule without floor", CANDIDATE, PAPER,
           what_if="orth_sum_nofloor", note="rule 3 sums; auto-strength E_ref/E acts on the sum (no near-orthogonal floor)"),
    Method("cand_opposing_ties", "candidate: measured, opposing groups TIES (basis space)", CANDIDATE,
           {**MEASURED, "basis_space": True}, what_if="opposing_ties",
           note="measured rules, but near-orthogonal groups whose LoRAs oppose (min cos < −0.05) elect signs "
                "with basis-space TIES instead of summing"),
    Method("cand_no_slerp_imbalanced", "candidate: no SLERP for imbalanced groups", CANDIDATE, PAPER,
           what_if="no_slerp_imbalanced", note="SLERP upgrades of groups with magnitude ratio ≥ 2 stay averages"),
)

BY_NAME = {m.name: m for m in METHODS}
LAMBDAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
TUNE_MIN_GAIN = 0.01  # `tune --min-gain`: one point of the metrics, about the evaluators' own noise
RATIO_RULE = 2.0  # the reference's magnitude ratio for sending an orthogonal pair to weighted_sum


@contextlib.contextmanager
def what_if(kind: str | None):
    """Swap one loramerge function in this process for the duration of one merge (see module doc)."""
    if kind is None:
        yield
        return
    import loramerge.plan as plan_mod
    import loramerge.decide as select_mod

    saved_preset, saved_decide, saved_rules = plan_mod.preset_for, select_mod.decide_paper, select_mod.decide
    saved_floor = plan_mod.MERGE_RETENTION_FLOOR
    try:
        if kind == "no_retention_floor":
            plan_mod.MERGE_RETENTION_FLOOR = 0.0
        if kind == "orth_sum_nofloor":
            def preset_for(architecture, name=None, _orig=saved_preset):
                return dataclasses.replace(_orig(architecture, name), orthogonal_floor=0.0)
            plan_mod.preset_for = preset_for
        if kind == "opposing_ties":
            def decide_opposing(key, s, m, preset, strategy_set, rules=None, text_encoder=False, _orig=saved_rules):
                d = _orig(key, s, m, preset, strategy_set, rules, text_encoder)
                if d.strategy == "weighted_sum" and "summed" in d.reason and m.min_cosine < preset.opposing_cos:
                    sign = "total" if m.magnitude_ratio > preset.total_sign_ratio else "frequency"
                    return dataclasses.replace(d, strategy="ties", sign_method=sign,
                                               density=select_mod.ties_density(s, preset),
                                               reason=d.reason + "; what-if: opposing, TIES")
                return d
            select_mod.decide = decide_opposing
        if kind == "agreeing_averaged":
            def decide_avg(key, s, m, preset, strategy_set, rules=None, text_encoder=False, _orig=saved_rules):
                d = _orig(key, s, m, preset, strategy_set, rules, text_encoder)
                if d.strategy == "weighted_sum" and "partly agree" in d.reason:
                    return select_mod.decide_paper(key, s, m, preset, strategy_set)
                return d
            select_mod.decide = decide_avg
        if kind == "no_slerp_imbalanced":
            def decide(key, s, m, preset, strategy_set, _orig=saved_decide):
                d = _orig(key, s, m, preset, strategy_set)
                if d.strategy == "slerp" and m.magnitude_ratio >= RATIO_RULE:
                    return dataclasses.replace(d, strategy="weighted_average", reason=d.reason + "; what-if: no SLERP")
                return d
            select_mod.decide_paper = decide
        if kind in ("ratio_rule", "orth_sum_nofloor"):
            ratio = RATIO_RULE if kind == "ratio_rule" else 0.0

            def decide(key, s, m, preset, strategy_set, _orig=saved_decide):
                d = _orig(key, s, m, preset, strategy_set)
                if (d.strategy in ("weighted_average", "slerp") and d.reason.startswith("orthogonal")
                        and m.magnitude_ratio >= ratio):
                    return dataclasses.replace(d, strategy="weighted_sum", reason=d.reason + "; what-if: summed")
                return d
            select_mod.decide_paper = decide
        yield
    finally:
        plan_mod.preset_for, select_mod.decide_paper, select_mod.decide = saved_preset, saved_decide, saved_rules
        plan_mod.MERGE_RETENTION_FLOOR = saved_floor


def strengths_for(method: Method, n: int, lam: float | None) -> list[float]:
    if method.strengths == "inverse_n":
        return [1.0 / n] * n
    if method.strengths == "lambda":
        return [float(lam if lam is not None else 1.0)] * n
    return [1.0] * n


def merge_each(names, paths: list[Path], labels: list[str], *, seed: int, lam: float | None,
               evaluators: dict | None = None):
    """Every method of `names` that applies to len(paths) LoRAs, merged in turn into a temporary file
    (removed afterwards): yields (name, method, merged file, `run_method`'s summary, merge seconds).
    `evaluators`: the domain's loramerge evaluators by method name (``tune_eval``, ...); a method
    that needs one the domain does not have is skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            method = BY_NAME[name]
            evaluator = (evaluators or {}).get(name)
            if not method.applies(len(paths)) or (method.custom or "").startswith("tune_eval") and evaluator is None:
                continue
            out = Path(tmp) / f"{name}.safetensors"
            t = time.perf_counter()
            summary = run_method(method, paths, out, seed=seed, lam=lam, names=labels, evaluator=evaluator)
            yield name, method, out, summary, time.perf_counter() - t


def run_method(method: Method, paths: list[Path], out: Path, *, seed: int, lam: float | None = None,
               names: list[str] | None = None, evaluator=None) -> dict:
    """Merge `paths` with `method` into `out`; returns a summary of loramerge's report."""
    from loramerge.api import merge

    names = names or [Path(p).stem for p in paths]
    inputs = [{"path": str(p), "strength_model": s, "name": n}
              for p, s, n in zip(paths, strengths_for(method, len(paths), lam), names)]
    if method.custom == "knots_ties":
        return knots_ties(inputs, out, seed=seed)
    if method.custom in ("tune", "tune_eval", "tune_eval_guard"):
        if method.custom != "tune" and evaluator is None:
            raise ValueError(f"{method.name} needs the domain's evaluator (merge_each(..., evaluators=...))")
        return tuned(inputs, out, seed=seed, evaluator=evaluator if method.custom != "tune" else None)
    with what_if(method.what_if):
        result = merge(inputs, arch="unknown", seed=seed, **method.options)
    result.save(out)
    return summarize(result.report.to_dict())


def summarize(report: dict) -> dict:
    """The parts of loramerge's report the benchmark keeps (per LoRA retention, per group decisions)."""
    return {
        "auto_strength": report["auto_strength"]["model"],
        "auto_strength_reason": (report.get("auto_strength_detail", {}).get("model") or {}).get("reason"),
        "strategy_counts": report["strategy_counts"],
        "retention_report": {lo["name"]: lo["retention"] for lo in report["loras"]},
        "pairs": [{"a": p["a"], "b": p["b"], "cosine": p["cosine"]} for p in report["pairs"]],
        "groups": [{k: g[k] for k in ("key", "strategy", "cosine", "conflict", "effective_conflict",
                                      "subspace_overlap", "magnitude_ratio", "retention", "rank", "compression_error")}
                   for g in report["groups"]],
        "warnings": report["warnings"],
    }


def tuned(inputs: list[dict], out: Path, *, seed: int, evaluator=None) -> dict:
    """`loramerge.api.tune` with its defaults (top 3, memory off: every run measures afresh); the
    winner is written to `out`. The summary adds the winner's label and the untuned one's place."""
    from loramerge.api import tune

    result = tune(inputs, arch="unknown", seed=seed, evaluator=evaluator, memory="off", output=out,
                  overwrite=True, keep_best=True, min_gain=TUNE_MIN_GAIN if evaluator is not None else 0.0)
    try:
        summary = summarize(result.best.report.to_dict())
    finally:
        result.close()
    rows = result.candidates
    untuned = next((r for r in rows if r.get("untuned")), None)
    summary["tuned"] = {"label": rows[0]["label"], "parameters": rows[0]["parameters"],
                        "evaluation": rows[0]["evaluation"], "merged": result.data["merged"],
                        "untuned_rank": untuned["rank"] if untuned else None, "errors": result.data["errors"]}
    return summary


def knots_ties(inputs: list[dict], out: Path, *, seed: int) -> dict:
    """KnOTS+TIES from loramerge's parts: its analysis picks each group's TIES density and sign
    vote (as ``--mode ties`` does); the TIES merge runs on KnOTS basis coefficients; loramerge's
    writer writes the file."""
    from loramerge.api import analyze
    from loramerge.formats.writers import OutputItem, write
    from loramerge.rng import group_generator
    from loramerge.strategies import TiesParams, knots_basis, merge_in_basis
    from loramerge.patches import LowRank

    session, plan, _ = analyze(inputs, arch="unknown", seed=seed, mode="ties", auto_strength=False)
    items, counts = [], {}
    for key in session.keys:
        loras = session.groups[key]
        patches = [session.load(i, key) for i in loras]
        weights = [session.cfg.inputs[i].strength_model for i in loras]
        if len(patches) == 1:
            merged = patches[0].scaled(weights[0])
            counts["weighted_sum"] = counts.get("weighted_sum", 0) + 1
        else:
            d = plan.decisions[key]
            basis = knots_basis([p.up * p.scale for p in patches], [p.down for p in patches])
            res = merge_in_basis("ties", basis, weights, TiesParams(density=d.density, sign_method=d.sign_method),
                                 generator=group_generator(seed, key))
            merged = LowRank(res.up.float().contiguous(), res.down.float().contiguous(), 1.0, patches[0].shape)
            counts["knots_ties"] = counts.get("knots_ties", 0) + 1
        items.append(OutputItem(*session.targets[key], merged))
    write(out, items, session.table, "kohya")
    return {"auto_strength": None, "auto_strength_reason": None, "strategy_counts": counts,
            "retention_report": {}, "pairs": [], "groups": [], "warnings": []}


def retention(merged: dict[str, torch.Tensor], inputs: list[dict[str, torch.Tensor]]) -> list[float]:
    """⟨M, ΔW_i⟩ / ‖ΔW_i‖² summed over groups, against each *unscaled* input LoRA (strength 1):
    how much of each LoRA is in the merge, whatever strengths or auto-strength the method used."""
    out = []
    for d in inputs:
        num = sum(float((merged[k].double() * v.double()).sum()) for k, v in d.items() if k in merged)
        den = sum(float(v.double().pow(2).sum()) for v in d.values())
        out.append(num / den if den else 0.0)
    return out
