"""Thread use: the automatic count follows the cores this process may use and their load; the
ordered parallel map keeps order and bounds the work in flight; intra-op threads are restored."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from loramerge import threads as T
from loramerge.api import analyze


def test_automatic_threads_follow_affinity_and_load(monkeypatch):
    monkeypatch.setattr(T, "available_cores", lambda: 4)
    monkeypatch.setattr(T.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert T.automatic_threads() == 3
    monkeypatch.setattr(T.os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert T.automatic_threads() == 1, "a fully loaded machine still gets one thread"
    monkeypatch.setattr(T.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert T.automatic_threads() == 4


def test_ordered_map_keeps_order_and_bounds_the_work_in_flight():
    running, peak, lock = [0], [0], threading.Lock()

    def work(x: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002 * (x % 3))
        with lock:
            running[0] -= 1
        return x * x

    consumed = []
    for r in T.ordered_map(work, range(40), workers=3):
        consumed.append(r)
    assert consumed == [x * x for x in range(40)]
    assert 1 < peak[0] <= 3
    assert list(T.ordered_map(work, range(5), workers=1)) == [0, 1, 4, 9, 16]


def test_single_threaded_ops_restores_the_callers_setting():
    before = torch.get_num_threads()
    with T.single_threaded_ops():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("mode, measured", [("weighted_sum", False), ("slerp", False), ("ties", True), ("auto", True)])
def test_sign_statistics_only_when_the_plan_can_use_them(real_fixtures, mode, measured):
    a, b = real_fixtures["sdxl_peft_diffusers"].path, real_fixtures["sdxl_lycoris_locon"].path
    result = analyze([a, b], mode=mode, threads=2)
    multi = [s for s in result.analysis.stats.values() if s.n > 1]
    assert multi and {s.signs_measured for s in multi} == {measured}
    rows = [g for g in result.report().groups if g.n_loras > 1]
    assert all((g.conflict is not None) == measured for g in rows)
    assert all(g.cosine is not None and g.subspace_overlap is not None for g in rows), "exact metrics always"
