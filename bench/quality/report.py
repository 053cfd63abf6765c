"""Aggregate the raw results over seeds; write the JSON, the PNG grids and the Markdown page."""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections import Counter
from pathlib import Path

import numpy as np

from .config import CASES, BenchConfig
from .methods import ABLATION, AUTO, BASELINE, BY_NAME, CANDIDATE, LAMBDAS
from .png import labelled_grid, write_png

COMPARISONS = (  # (question, A, B)
    ("near-orthogonal groups summed, floor 1.0, instead of averaged/SLERPed", "cand_orth_sum_floor1", "auto"),
    ("near-orthogonal groups summed (floor 0.85)", "cand_orth_sum", "auto"),
    ("only imbalanced orthogonal groups summed (reference rule)", "cand_ratio_rule", "auto"),
    ("auto-strength floor 1.0 vs 0.85, once orthogonal groups are summed", "cand_orth_sum_floor1", "cand_orth_sum"),
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
HERE = Path(__file__).resolve().parent


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


def aggregate(cfg: BenchConfig, results: dict) -> dict:
    seeds = list(cfg.seeds)
    singles = {}
    for name in ("base", "subject", "bold", "slant", "thin"):
        singles[name] = {m: ms([results[f"singles/{s}"]["rows"][name].get(m) for s in seeds])
                         for m in METRICS if m in results[f"singles/{seeds[0]}"]["rows"][name]}
    cases = {}
    for case in cfg.cases:
        loras, primary = CASES[case]
        per = {}
        present = results[f"case/{seeds[0]}/{case}"]["rows"]
        for name in (n for n in cfg.methods if n in present):
            rows = [results[f"case/{s}/{case}"]["rows"][name] for s in seeds]
            entry = {m: ms([r["rates"].get(m) for r in rows]) for m in METRICS}
            entry["retention"] = {lo: ms([r["retention"][lo] for r in rows]) for lo in loras}
            entry["retention_report"] = {lo: ms([r["retention_report"].get(lo) for r in rows]) for lo in loras}
            entry["auto_strength"] = ms([r["auto_strength"] for r in rows])
            entry["strategy_counts"] = [r["strategy_counts"] for r in rows]
            entry["lambda"] = rows[0]["lambda"]
            entry["primary"] = entry[primary]
            entry["per_seed_primary"] = [r["rates"][primary] for r in rows]
            per[name] = entry
        ranked = [n for n in per if BY_NAME[n].family in (BASELINE, AUTO)]
        ranked.sort(key=lambda n: -per[n]["primary"][0])
        ranks = _competition_ranks({n: per[n]["primary"][0] for n in ranked})
        seed_ranks = [_competition_ranks({n: per[n]["per_seed_primary"][k] for n in ranked}).get("auto")
                      for k in range(len(seeds))]
        if "auto" in per:
            a = per["auto"]["per_seed_primary"]
            for n, e in per.items():
                e["vs_auto"] = {"better": sum(x > y + 1e-9 for x, y in zip(e["per_seed_primary"], a)),
                                "equal": sum(abs(x - y) <= 1e-9 for x, y in zip(e["per_seed_primary"], a)),
                                "worse": sum(x < y - 1e-9 for x, y in zip(e["per_seed_primary"], a))}
        floor = min(singles[lo]["content"][0] for lo in loras) - cfg.content_guard
        for e in per.values():
            e["content_flag"] = bool(e["content"][0] < floor - 1e-9)
        kept = [n for n in ranked if not per[n]["content_flag"]]
        ranks_kept = _competition_ranks({n: per[n]["primary"][0] for n in kept})
        dominated = []
        if "auto" in per:
            a = per["auto"]
            dominated = [n for n in ranked if n != "auto" and per[n]["primary"][0] >= a["primary"][0]
                         and per[n]["content"][0] >= a["content"][0]
                         and (per[n]["primary"][0] > a["primary"][0] or per[n]["content"][0] > a["content"][0])]
        cases[case] = {"loras": loras, "primary": primary, "methods": per, "ranking": ranked, "ranks": ranks,
                       "auto_rank_per_seed": seed_ranks, "content_floor": floor, "ranking_kept": kept,
                       "ranks_kept": ranks_kept, "auto_dominated_by": dominated}
    return {"singles": singles, "cases": cases}


def _competition_ranks(values: dict[str, float]) -> dict[str, int]:
    """1 + the number of methods strictly better (equal values share a rank)."""
    return {n: 1 + sum(round(w, 6) > round(v, 6) for w in values.values()) for n, v in values.items()}


def sanity(cfg: BenchConfig, agg: dict) -> list[dict]:
    """The issue's sanity checks, each with its numbers and whether it holds."""
    out = []
    base = agg["singles"]["base"]
    for name in ("subject", "bold", "slant", "thin"):
        single, ref = agg["singles"][name][name][0], base[name][0]
        out.append({"check": f"the {name} LoRA alone shows its effect: rate − base rate > {cfg.sanity_margin}",
                    "value": f"{single:.2f} vs base {ref:.2f}", "ok": bool(single - ref > cfg.sanity_margin)})
    if "subject+style" in agg["cases"]:
        m = agg["cases"]["subject+style"]["methods"]
        if "additive" in m and "average" in m:
            a, b = m["additive"]["joint"][0], m["average"]["joint"][0]
            out.append({"check": "subject+style: additive ≫ average on the joint rate (≥ 0.2 higher and ≥ 2×)",
                        "value": f"{a:.2f} vs {b:.2f}", "ok": bool(a - b >= 0.2 and a >= 2 * b)})
    return out


# -- PNG grids -----------------------------------------------------------------------------------------
def write_grids(cfg: BenchConfig, results: dict, out_dir: Path) -> dict[str, str]:
    seed = cfg.seeds[cfg.grid_seed_index]
    singles = results[f"singles/{seed}"]["images"]
    files = {}
    for case in cfg.cases:
        loras, _ = CASES[case]
        imgs = results[f"case/{seed}/{case}"]["images"]
        rows = [("base", singles["base"])] + [(f"only {n}", singles[n]) for n in loras]
        rows += [(n, imgs[n]) for n in cfg.methods if n in imgs]
        path = out_dir / f"grid_{case.replace('+', '_').replace(' ', '_')}.png"
        write_png(path, labelled_grid(rows, scale=3, pad=2, font=2))
        files[case] = path.name
    return files


# -- Markdown --------------------------------------------------------------------------------------------
def _rates_header(loras) -> tuple[str, str]:
    cols = ["subject", "bold", "slant", "thin"]
    head = "| " + " | ".join(cols) + " | joint | effect mean | content | " + " | ".join(f"ret. {lo}" for lo in loras) + " |"
    sep = "|" + "---|" * (len(cols) + 3 + len(loras))
    return head, sep


def _rates_cells(e: dict, loras) -> str:
    cells = [fmt(e[m]) for m in ("subject", "bold", "slant", "thin", "joint", "effect_mean", "content")]
    cells += [fmt(e["retention"][lo]) for lo in loras]
    return " | ".join(cells)


def _counts(counts: list[dict]) -> str:
    """Strategy counts over seeds, e.g. 'slerp 9, weighted_average 1 (3/3 seeds)'."""
    keys = Counter(json.dumps(c, sort_keys=True) for c in counts)
    parts = []
    for k, n in keys.most_common():
        c = json.loads(k)
        parts.append(", ".join(f"{s} {v}" for s, v in c.items()) + f" ({n}/{len(counts)} seeds)")
    return "; ".join(parts)


def markdown(cfg: BenchConfig, agg: dict, raw: dict, checks: list[dict], grids: dict, wall: float, env: dict,
             doc: Path, out_dir: Path) -> str:
    L: list[str] = []
    seeds = list(cfg.seeds)
    rel = lambda p: Path(p).relative_to(doc.parent).as_posix() if Path(p).is_relative_to(doc.parent) else str(p)
    L += ["# Merge quality benchmark", ""]
    L += [f"Generated by `.venv/bin/python -m bench.quality` ({cfg.name} configuration) — do not edit by hand; "
          "the interpretation section is `bench/quality/NOTES.md`, included verbatim.", ""]
    L += [f"- **Run time:** {wall / 60:.1f} min wall clock, {env['workers']} worker process(es) × "
          f"{env['threads_per_worker']} torch thread(s), {platform.machine()} CPU, Python {env['python']}; "
          "trained models are cached (`bench/quality/.cache/`), this time includes training them from scratch"
          + (" (cache was empty)" if env.get("fresh_cache") else " (cache state: see JSON)") + ".",
          f"- **Seeds:** {', '.join(map(str, seeds))} (each: base model, LoRAs, DARE/sign masks, sampling noise); "
          f"task arithmetic's λ tuned on seed {cfg.tuning_seed}. Every cell: mean ± sample std over the seeds.",
          f"- **Raw results:** [`{rel(out_dir / 'results.json')}`]({rel(out_dir / 'results.json')}); "
          f"sample grids: " + ", ".join(f"[{c}]({rel(out_dir / f)})" for c, f in grids.items()) + ".", ""]
    L += ["## Setup", "",
          "- **Data:** scikit-learn's 8×8 digits, upsampled to 16×16. Styles made measurable on real images: "
          "*bold* = grey dilation (3×3), *thin* = grey erosion (plus-shaped), *slant* = shear 0.35.",
          f"- **Base model:** class-conditional DDPM, MLP denoiser (hidden {cfg.model.hidden}, {cfg.model.blocks} residual "
          f"blocks, eps prediction, sinusoidal time + class embedding), T = {cfg.model.steps} linear-β steps, ancestral "
          f"sampling; {cfg.base_steps} training steps from scratch per seed.",
          f"- **LoRAs:** rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}, on every Linear layer of the denoiser "
          f"({_n_modules(cfg)} modules), base frozen, {cfg.lora_steps} steps; kohya files (`lora_unet_<module>`), read, merged and "
          "written by loramerge under architecture `unknown`. *subject*: prompt 0 draws a 7 (half of each batch; the "
          "other half is every real digit with its own label); *bold*, *slant*, *thin*: every real digit transformed.",
          "- **Applying a merge:** the merged file is read back with loramerge's reader and ΔW added to the base "
          "weights — the same code for every method.",
          f"- **Samples:** {cfg.per_subject_prompt} of prompt 0 and {cfg.per_other_prompt} of each prompt 1–9 per "
          "method and seed, the same noise for every method of a seed.",
          "- **Metrics:** *subject* = P(classifier reads 7 | prompt 0); *bold/slant/thin* = P(detector fires) over all "
          "prompts; *joint* = P(every intended effect in one image), over prompt 0 when the subject is intended; "
          "*effect mean* = mean of the intended effects' rates; *content* = P(classifier reads the prompted digit | "
          "prompts 1–9); *ret.* = retention ⟨M, ΔW_i⟩/‖ΔW_i‖² against each LoRA at strength 1 (so auto-strength and "
          "1/N scaling show).",
          "- **Primary metric** (ranking): *joint* for subject+style and subject+style+slant; bold and thin "
          "contradict each other, so style+thin and all four are ranked by *effect mean*.", ""]
    L += ["### Methods", "",
          "All through `loramerge.api.merge(..., arch='unknown', seed=<seed>)` + `MergeResult.save`, except KnOTS+TIES "
          "(assembled from loramerge's analysis, `knots_basis`/`merge_in_basis` and writer) and the candidates "
          "(loramerge with one function swapped in the benchmark's process, see `bench/quality/methods.py`).", "",
          "| method | kind | merge() options | what |", "|---|---|---|---|"]
    for n in cfg.methods:
        m = BY_NAME[n]
        opts = ", ".join(f"{k}={v!r}" for k, v in m.options.items()) or ("–" if m.custom else "(defaults)")
        if m.strengths == "inverse_n":
            opts += ", strengths 1/N"
        elif m.strengths == "lambda":
            opts += ", strengths λ"
        if m.what_if:
            opts += f"; what-if `{m.what_if}`"
        L.append(f"| {m.label} | {m.family} | {opts} | {m.note} |")
    L += [""]
    acc = raw["evaluator"]["accuracy"]
    L += ["Evaluators (one CNN, four heads, trained on real digits only), accuracy on the held-out real test split:", "",
          "| test images | digit | bold | thin | slant |", "|---|---|---|---|---|"]
    for k, v in acc.items():
        L.append(f"| {k} | {v['digit']:.3f} | {v['bold']:.3f} | {v['thin']:.3f} | {v['slant']:.3f} |")
    L += ["", "## Sanity", "", "| check | value (mean over seeds) | holds |", "|---|---|---|"]
    for c in checks:
        L.append(f"| {c['check']} | {c['value']} | {'yes' if c['ok'] else '**NO**'} |")
    if not cfg.assert_sanity:
        L += ["", f"({cfg.name} configuration: the checks are computed, not asserted — models this small do not "
                  "learn the effects.)"]
    L += ["", "Base model and each LoRA alone (strength 1):", "",
          "| model | subject | bold | slant | thin | content |", "|---|---|---|---|---|---|"]
    for name, e in agg["singles"].items():
        L.append(f"| {name} | " + " | ".join(fmt(e[m]) for m in ("subject", "bold", "slant", "thin", "content")) + " |")
    # -- headline
    L += ["", "## Where loramerge auto ranks", "",
          "Rank of `auto` (every default) among the baselines and itself, by each case's primary metric (mean over seeds; "
          "equal means share a rank); auto's rank on each seed separately; its rank among the methods that keep "
          f"content within {cfg.content_guard:g} of the case's LoRAs alone (the others are marked † in the case "
          "tables: they buy effect rates by breaking the other prompts' digits); and the baselines that beat auto on "
          "both the primary metric and content (auto is Pareto-dominated by them).", "",
          "| case | primary metric | auto (content) | rank | rank per seed | best method | best (content) | rank, content kept "
          "| best, content kept | dominate auto |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for case, c in agg["cases"].items():
        if "auto" not in c["methods"]:
            continue
        best = c["ranking"][0]
        kept = c["ranking_kept"]
        best_kept = kept[0] if kept else None
        rank_kept = f"{c['ranks_kept']['auto']} of {len(kept)}" if "auto" in c["ranks_kept"] else "† (auto breaks content)"
        m = c["methods"]
        L.append(f"| {case} | {c['primary']} | {fmt(m['auto']['primary'])} ({m['auto']['content'][0]:.2f}) | "
                 f"**{c['ranks']['auto']} of {len(c['ranking'])}** | {', '.join(map(str, c['auto_rank_per_seed']))} | "
                 f"{_label(c, best)} | {fmt(m[best]['primary'])} ({m[best]['content'][0]:.2f}) | {rank_kept} | "
                 + (f"{_label(c, best_kept)}: {fmt(m[best_kept]['primary'])} ({m[best_kept]['content'][0]:.2f})"
                    if best_kept else "–")
                 + " | " + (", ".join(_label(c, n) for n in c["auto_dominated_by"]) or "none") + " |")
    # -- per case
    for case, c in agg["cases"].items():
        loras = c["loras"]
        L += ["", f"## Case: {case} ({' + '.join(loras)})", "", f"Primary metric: **{c['primary']}**.", ""]
        head, sep = _rates_header(loras)
        L += ["| rank | method | " + head[2:], "|---|---|" + sep[1:]]
        for n in c["ranking"]:
            label = _label(c, n)
            label = f"**{label}**" if n == "auto" else label
            L.append(f"| {c['ranks'][n]} | {label} | {_rates_cells(c['methods'][n], loras)} |")
        L += ["", f"† content below {c['content_floor']:.2f} (the case's LoRAs alone: worst content − {cfg.content_guard:g})."]
        others = [n for n in c["methods"] if BY_NAME[n].family in (ABLATION, CANDIDATE)]
        if others and "auto" in c["methods"]:
            L += ["", "Ablations (one component of auto switched) and candidate defaults (emulated, not in loramerge); "
                  "*seeds +/=/−*: on how many seeds the row is better than / equal to / worse than auto:", "",
                  f"| method | {c['primary']} | Δ vs auto | seeds +/=/− | " + head[2:], "|---|---|---|---|" + sep[1:]]
            auto = c["methods"]["auto"]["primary"][0]
            for n in others:
                e = c["methods"][n]
                delta, v = e["primary"][0] - auto, e["vs_auto"]
                L.append(f"| {_label(c, n)} | {fmt(e['primary'])} | {delta:+.2f} | {v['better']}/{v['equal']}/{v['worse']} | "
                         f"{_rates_cells(e, loras)} |")
        if "auto" in c["methods"]:
            a = c["methods"]["auto"]
            L += ["", f"auto's decisions: {_counts(a['strategy_counts'])}; auto-strength scale {fmt(a['auto_strength'])}; "
                  "loramerge's reported retention (relative to the auto-strength-scaled LoRA): "
                  + ", ".join(f"{lo} {fmt(a['retention_report'][lo])}" for lo in loras) + "."]
            L += _auto_note(case, c)
            L += _group_table(raw, seeds[cfg.grid_seed_index], case, loras)
        if case in grids:
            L += ["", f"![samples, {case}]({rel(out_dir / grids[case])})", "",
                  f"Rows: base, each LoRA alone, then every method (seed {seeds[cfg.grid_seed_index]}); columns: "
                  f"{8} samples of prompt 0, then one sample of each prompt 1–9."]
    # -- METHOD §11 and §7.2 comparisons
    rows = [(q, a, b) for q, a, b in COMPARISONS if any(a in c["methods"] and b in c["methods"] for c in agg["cases"].values())]
    if rows:
        L += ["", "## Head-to-head (METHOD §11 open points, §7.2 ablations)", "",
              "Δ of the primary metric, A − B, mean over seeds, and on how many seeds A is better / equal / worse.", "",
              "| question | A | B | " + " | ".join(agg["cases"]) + " |", "|---|---|---|" + "---|" * len(agg["cases"])]
        for q, a, b in rows:
            cells = []
            for c in agg["cases"].values():
                if a not in c["methods"] or b not in c["methods"]:
                    cells.append("–")
                    continue
                pa, pb = c["methods"][a]["per_seed_primary"], c["methods"][b]["per_seed_primary"]
                d = statistics.fmean(pa) - statistics.fmean(pb)
                w = sum(x > y + 1e-9 for x, y in zip(pa, pb)), sum(abs(x - y) <= 1e-9 for x, y in zip(pa, pb)), \
                    sum(x < y - 1e-9 for x, y in zip(pa, pb))
                cells.append(f"{d:+.2f} ({w[0]}/{w[1]}/{w[2]})")
            L.append(f"| {q} | {BY_NAME[a].label} | {BY_NAME[b].label} | " + " | ".join(cells) + " |")
    # -- λ tuning
    tunes = {k.split('/', 1)[1]: v for k, v in raw.items() if k.startswith("tune/")}
    if tunes:
        L += ["", f"## Task arithmetic: λ tuned on the separate seed ({cfg.tuning_seed})", "",
              "Primary metric (content in brackets) per λ; chosen: the best primary metric among the λ whose content "
              f"stays within {cfg.content_guard:g} of the case's LoRAs alone (the worst of them) on that seed.", "",
              "| case | " + " | ".join(f"λ={x:g}" for x in LAMBDAS) + " | content floor | chosen |",
              "|---|" + "---|" * (len(LAMBDAS) + 2)]
        for case, t in tunes.items():
            L.append(f"| {case} | " + " | ".join(f"{t['scores'][str(x)]:.2f} ({t['content'][str(x)]:.2f})" for x in LAMBDAS)
                     + f" | {t['content_floor']:.2f} | {t['lambda']:g} |")
    notes = HERE / "NOTES.md"
    if cfg.name == "full" and notes.exists():
        L += ["", notes.read_text().strip()]
    L += ["", "## Timing", "", "| job | seconds |", "|---|---|"]
    for k, v in raw.items():
        if isinstance(v, dict) and "seconds" in v:
            L.append(f"| {k} | {v['seconds']:.1f} |")
    return "\n".join(L) + "\n"


def _n_modules(cfg: BenchConfig) -> int:
    from .model import Denoiser, linear_names

    return len(linear_names(Denoiser(cfg.model)))


def _label(c: dict, n: str) -> str:
    e = c["methods"][n]
    lam = e.get("lambda")
    return BY_NAME[n].label + (f" (λ = {lam:g})" if lam is not None else "") + (" †" if e.get("content_flag") else "")


def _auto_note(case: str, c: dict) -> list[str]:
    """Plain statement of auto's rank and, when it is not first, the numbers that explain it."""
    m, loras = c["methods"], c["loras"]
    rank, best = c["ranks"]["auto"], c["ranking"][0]
    if rank == 1:
        return ["", f"**auto is first on {case}** (tied with {', '.join(BY_NAME[n].label for n in c['ranking'] if c['ranks'][n] == 1 and n != 'auto') or 'none'})."]
    a, b = m["auto"], m[best]
    ret = lambda e: ", ".join(f"{lo} {e['retention'][lo][0]:.2f}" for lo in loras)
    return ["", f"**auto ranks {rank} of {len(c['ranking'])} on {case}**: {c['primary']} {a['primary'][0]:.2f} vs "
            f"{b['primary'][0]:.2f} for {BY_NAME[best].label}. Retention, auto: {ret(a)}; {BY_NAME[best].label}: {ret(b)}."]


def _group_table(raw: dict, seed: int, case: str, loras) -> list[str]:
    row = raw[f"case/{seed}/{case}"]["rows"].get("auto")
    if not row or not row["groups"]:
        return []
    L = ["", f"auto's per-group decisions (seed {seed}; cos / conflict / overlap / magnitude ratio are loramerge's pass-1 "
         "statistics; *ret.* here is loramerge's per-group retention, relative to the auto-strength-scaled LoRA — "
         "multiply by the scale for the share of the LoRA itself):", "",
         "| group | strategy | cos | eff. conflict | overlap | mag. ratio | " + " | ".join(f"ret. {lo}" for lo in loras) + " |",
         "|---|---|---|---|---|---|" + "---|" * len(loras)]
    f = lambda x: "–" if x is None else f"{x:.2f}"
    for g in row["groups"]:
        L.append(f"| {g['key']} | {g['strategy']} | {f(g['cosine'])} | {f(g['effective_conflict'])} | "
                 f"{f(g['subspace_overlap'])} | {f(g['magnitude_ratio'])} | "
                 + " | ".join(f(g["retention"].get(lo)) for lo in loras) + " |")
    return L


def _strip(obj):
    """Raw results without image arrays (those go to the PNGs)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "images"}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


STAT_FIELDS = ("cosine", "conflict", "effective_conflict", "subspace_overlap", "magnitude_ratio")


def _compact(raw: dict) -> dict:
    """The JSON keeps each case/seed's pass-1 group statistics once (`group_stats`; they do not depend
    on the method) and, per method, only what differs: strategy, retention, rank, compression error."""
    out = {}
    for key, value in raw.items():
        if not key.startswith("case/"):
            out[key] = value
            continue
        value = dict(value)
        stats = {}
        rows = {}
        for name, row in value["rows"].items():
            row = dict(row)
            for g in row.get("groups", []):
                stats.setdefault(g["key"], {f: g.get(f) for f in STAT_FIELDS})
            row["groups"] = {g["key"]: {k: v for k, v in g.items() if k not in STAT_FIELDS and k != "key"}
                             for g in row.get("groups", [])}
            rows[name] = row
        value["rows"], value["group_stats"] = rows, stats
        out[key] = value
    return out


def write_outputs(cfg: BenchConfig, results: dict, *, out_dir: Path, doc: Path, wall_seconds: float,
                  env: dict) -> tuple[dict, list[str]]:
    agg = aggregate(cfg, results)
    checks = sanity(cfg, agg)
    grids = write_grids(cfg, results, out_dir)
    payload = {"config": cfg.to_dict(), "env": env, "wall_seconds": wall_seconds, "sanity": checks,
               "aggregate": agg, "raw": _compact(results)}
    (out_dir / "results.json").write_text(json.dumps(_strip(payload), indent=0, separators=(",", ":"), sort_keys=True, default=str))
    doc.write_text(markdown(cfg, agg, results, checks, grids, wall_seconds, env, doc, out_dir))
    failures = [c["check"] + f" ({c['value']})" for c in checks if not c["ok"]]
    return payload, failures
