"""Smoke test of the merge quality benchmark (bench/quality): the whole pipeline at toy size.

Trains a tiny base model, the four LoRAs and the evaluator, merges two cases with a few methods
through loramerge, samples, scores and writes QUALITY.md, results.json and the PNG grids. At this
size the models learn next to nothing, so the sanity checks are computed and reported but their
thresholds are not asserted (the full benchmark asserts them).
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib

import numpy as np
import pytest
import torch

from bench.quality.config import SMOKE
from bench.quality.methods import LAMBDAS
from bench.quality.png import write_png
from bench.quality.runner import run


def test_quality_benchmark_smoke(tmp_path):
    settings = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    t0 = time.process_time()  # CPU seconds of this process (inline run): the smoke's size, whatever the load
    payload, failures = run(SMOKE, cache=tmp_path / "cache", out_dir=tmp_path / "quality",
                            doc=tmp_path / "QUALITY.md", workers=1, log=lambda msg: None)
    assert time.process_time() - t0 < 60  # both domains
    # an inline run leaves the caller's thread count and determinism setting as they were
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == settings

    data = json.loads((tmp_path / "quality" / "results.json").read_text())
    cases = data["aggregate"]["cases"]
    assert set(cases) == set(SMOKE.cases)
    for case, c in cases.items():
        assert set(c["methods"]) == set(SMOKE.methods)
        assert c["ranks"]["auto"] >= 1
        for name, entry in c["methods"].items():
            mean, std = entry["primary"]
            assert 0.0 <= mean <= 1.0 and std == 0.0, (case, name)  # one seed
            assert all(math.isfinite(v[0]) for v in entry["retention"].values())
        # additive keeps every LoRA whole; the average halves the pair
        assert c["methods"]["additive"]["retention"][c["loras"][0]][0] > c["methods"]["average"]["retention"][c["loras"][0]][0]
    # the sanity checks are computed (not asserted at this size): 4 LoRAs, the dimmed digits, additive ≫ average, 4 text LoRAs
    assert len(data["sanity"]) == 6 + 4 and all(isinstance(s["ok"], bool) for s in data["sanity"])
    _check_text_domain(data)
    assert isinstance(failures, list)
    # the merges went through loramerge: its report's decisions are kept
    auto = data["raw"]["case/0/subject+style"]["rows"]["auto"]
    assert sum(auto["strategy_counts"].values()) == len(auto["groups"]) > 0
    assert data["raw"]["tune/subject+style"]["lambda"] in LAMBDAS
    # timings live in run.json, not in the hashed results
    assert "seconds" not in data["raw"]["case/0/subject+style"] and "wall_seconds" not in data
    timings = json.loads((tmp_path / "quality" / "run.json").read_text())["timings"]
    assert set(timings["merge_seconds"]["case/0/subject+style"]) == set(SMOKE.methods)
    assert payload["results_sha256"] == data["results_sha256"]

    md = (tmp_path / "QUALITY.md").read_text()
    assert "## Where loramerge auto ranks" in md and "## Sanity" in md
    for case in SMOKE.cases:
        png = tmp_path / "quality" / f"grid_{case.replace('+', '_').replace(' ', '_')}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_text_domain(data: dict) -> None:
    """The text domain ran through the same command: every method on its case, normalized
    accuracies recomputed from the raw accuracies, retention consistent between two merges."""
    text = data["aggregate"]["text"]
    assert set(text["cases"]) == set(SMOKE.text.cases)
    for case, c in text["cases"].items():
        tasks = c["tasks"]
        assert set(c["methods"]) == set(SMOKE.text.methods) and c["ranks"]["auto"] >= 1
        singles = data["raw"]["text/singles/0"]["rows"]
        for name, row in data["raw"][f"text/case/0/{case}"]["rows"].items():
            norm = {t: row["accuracy"][t] / singles[t][t] for t in tasks}
            assert row["normalized"]["mean"] == pytest.approx(sum(norm.values()) / len(tasks)), name
            assert c["methods"][name]["primary"][0] == pytest.approx(row["normalized"]["mean"])
        # average = additive / 2 exactly (both read back from float16 files: 1 % tolerance)
        add, avg = c["methods"]["additive"]["retention"], c["methods"]["average"]["retention"]
        for t in tasks:
            assert avg[t][0] == pytest.approx(add[t][0] / 2, rel=1e-2), t
        assert c["best_global"] in ("additive", "average")
        assert c["auto_gap_to_best_global"] == pytest.approx(
            c["methods"]["auto"]["primary"][0] - c["methods"][c["best_global"]]["primary"][0])


def _read_png(data: bytes) -> np.ndarray:
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    rows = [raw[y * (w + 1):(y + 1) * (w + 1)] for y in range(h)]
    assert all(r[0] == 0 for r in rows)
    return np.frombuffer(b"".join(r[1:] for r in rows), dtype=np.uint8).reshape(h, w)


def test_png_writer_round_trip(tmp_path):
    img = (np.arange(7 * 5) * 7 % 256).astype(np.uint8).reshape(7, 5)
    path = write_png(tmp_path / "x.png", img)
    np.testing.assert_array_equal(_read_png(path.read_bytes()), img)
