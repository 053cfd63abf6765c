"""`python -m bench.quality`: the merge quality benchmark, end to end.

    .venv/bin/python -m bench.quality                 # full: 3 seeds, 4 cases, every method → docs/QUALITY.md
    .venv/bin/python -m bench.quality --smoke --out /tmp/q   # CI-sized pipeline check (seconds)

Trained base models, LoRAs and the evaluator are cached under ``bench/quality/.cache/`` (``--fresh``
retrains); every merge, sample and score is recomputed on each run. The same seeds give the same
numbers: results.json is byte-identical from run to run (timings go to run.json), and each run
prints the hash of its results and whether it equals the previous run's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import ROOT
from .config import FULL, SMOKE
from .runner import report_only, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny models, one seed, two cases, a few methods")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for QUALITY.md, results.json and the grids (default: docs/ and docs/quality/)")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "quality" / ".cache")
    p.add_argument("--fresh", action="store_true", help="empty the cache first (time a run from scratch)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2: one per core)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1; part of the results: reductions depend on it)")
    p.add_argument("--domains", default="image,text",
                   help="which domains to run: image, text or both (default image,text)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of the methods (an experiment: write it elsewhere with --out)")
    p.add_argument("--report-only", action="store_true",
                   help="re-render the page, JSON and grids from the last run's raw results (no measuring)")
    args = p.parse_args(argv)
    cfg = replace(SMOKE if args.smoke else FULL, threads=args.threads)
    domains = {d.strip() for d in args.domains.split(",") if d.strip()}
    if not domains or domains - {"image", "text"}:
        p.error(f"--domains: image, text or image,text (got {args.domains!r})")
    cfg = replace(cfg, images="image" in domains, text=cfg.text if "text" in domains else None)
    if args.methods:
        chosen = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = sorted(set(chosen) - set(cfg.methods))
        if unknown:
            p.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(cfg.methods)}")
        cfg = replace(cfg, methods=chosen,
                      text=replace(cfg.text, methods=tuple(m for m in chosen if m in (cfg.text.methods or cfg.methods)))
                      if cfg.text else None)
    if args.out is None:
        doc, out_dir = ROOT / "docs" / "QUALITY.md", ROOT / "docs" / "quality"
    else:
        doc, out_dir = args.out / "QUALITY.md", args.out / "quality"
    log = lambda msg: print(msg, flush=True)
    if args.report_only:
        _, failures = report_only(cfg, cache=args.cache, out_dir=out_dir, doc=doc, log=log)
        log(f"re-rendered {doc}" + (f"; sanity failures: {failures}" if failures else ""))
        return 1 if failures and cfg.assert_sanity else 0
    if args.fresh and args.cache.exists():
        shutil.rmtree(args.cache)
    fresh = not args.cache.exists() or not any(args.cache.iterdir())
    t0 = time.perf_counter()
    _, failures = run(cfg, cache=args.cache, out_dir=out_dir, doc=doc, workers=args.workers, log=log,
                      fresh_cache=fresh)
    log(f"wrote {doc}, {out_dir / 'results.json'} and the grids in {time.perf_counter() - t0:.0f}s")
    if failures:
        log("SANITY CHECKS FAILED:\n  " + "\n  ".join(failures))
        return 1 if cfg.assert_sanity else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
