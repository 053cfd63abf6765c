"""Write one run's outputs: results.json (the numbers, hashed), run.json (timings, environment,
reproduction check), the PNG grids and the Markdown page.

results.json holds only what the seeds determine, so two runs of the same configuration on the same
machine write it byte for byte alike; everything that varies from run to run (wall clock, job and
merge seconds, the number of workers, whether the cache was warm) goes to run.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .config import CASES, BenchConfig
from .determinism import canonical_json, results_digest
from .page import markdown
from .png import labelled_grid, write_png
from .report import aggregate, sanity

TIMING_KEYS = ("seconds", "merge_seconds")
CASE_PREFIXES = ("case/", "text/case/")
STAT_FIELDS = ("cosine", "conflict", "effective_conflict", "subspace_overlap", "magnitude_ratio")


def write_outputs(cfg: BenchConfig, last: dict, *, out_dir: Path, doc: Path, log=print) -> tuple[dict, list[str]]:
    """`last`: the run as `runner.run` keeps it (results, provenance, run facts, the previous run's
    hash). Returns (results.json's content, sanity failures)."""
    results, timings = split_timings(last["results"])
    agg = aggregate(cfg, results)
    checks = sanity(cfg, agg)
    table = _strip({"sanity": checks, "aggregate": agg, "raw": _compact(results)})
    digest = results_digest(table)
    payload = {"config": _strip(cfg.to_dict()), "provenance": last["provenance"], **table, "results_sha256": digest}
    (out_dir / "results.json").write_text(canonical_json(payload))
    record = {"results_sha256": digest, "provenance": last["provenance"], "run": last["run"], "timings": timings,
              "reproduction": reproduction(last["previous"], payload)}
    (out_dir / "run.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    grids = write_grids(cfg, last["results"], out_dir)
    doc.write_text(markdown(cfg, agg, results, checks, grids, record, doc, out_dir))
    log(f"results sha256 {digest}: {record['reproduction']['status']}")
    failures = [c["check"] + f" ({c['value']})" for c in checks if not c["ok"]]
    return payload, failures


# -- timings and the reproduction check ----------------------------------------------------------------------
def split_timings(results: dict) -> tuple[dict, dict]:
    """(results without any timing, the timings): per job its seconds, per case/method its merge seconds."""
    clean, jobs, merges = {}, {}, {}
    for key, value in results.items():
        jobs[key] = value["seconds"]
        clean[key] = {k: v for k, v in value.items() if k not in TIMING_KEYS}
        if "rows" in value and key.startswith(CASE_PREFIXES):
            clean[key]["rows"] = {n: {k: v for k, v in row.items() if k not in TIMING_KEYS}
                                  for n, row in value["rows"].items()}
            merges[key] = {n: row["merge_seconds"] for n, row in value["rows"].items()}
    return clean, {"jobs": jobs, "merge_seconds": merges}


def previous_run(out_dir: Path) -> dict | None:
    """Hash, configuration and provenance of the results.json in `out_dir`, read before a run replaces it."""
    path = out_dir / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("results_sha256", "config", "provenance")}


def reproduction(previous: dict | None, current: dict) -> dict:
    """Compare this run's hash with the previous run's: 'reproduced' / 'not reproduced' when the
    configuration and provenance are the same; 'not comparable' (naming what differs) when not."""
    if previous is None or previous.get("results_sha256") is None:
        return {"status": "no previous run", "previous_sha256": None, "differs_in": []}
    differs = [] if previous["config"] == current["config"] else ["configuration"]
    prov_old, prov_new = previous.get("provenance") or {}, current["provenance"]
    differs += sorted(k for k in prov_old.keys() | prov_new.keys() if prov_old.get(k) != prov_new.get(k))
    same = previous["results_sha256"] == current["results_sha256"]
    status = "not comparable" if differs else ("reproduced" if same else "not reproduced")
    return {"status": status, "previous_sha256": previous["results_sha256"], "differs_in": differs}


# -- JSON shape ---------------------------------------------------------------------------------------------
def _strip(obj):
    """Plain JSON data: no image arrays (those go to the PNGs), tuples as lists, non-finite floats as None."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "images"}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _compact(raw: dict) -> dict:
    """The JSON keeps each case/seed's pass-1 group statistics once (`group_stats`; they do not depend
    on the method) and, per method, only what differs: strategy, retention, rank, compression error."""
    out = {}
    for key, value in raw.items():
        if not key.startswith(CASE_PREFIXES):
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


# -- PNG grids -----------------------------------------------------------------------------------------
def write_grids(cfg: BenchConfig, results: dict, out_dir: Path) -> dict[str, str]:
    if not cfg.images:
        return {}
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
