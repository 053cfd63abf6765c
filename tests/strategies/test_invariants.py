"""Invariants every registered strategy must satisfy (property-based, small shapes)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import loramerge.strategies as st
from loramerge.refine import RefineParams, refined_merge

from .conftest import gen

SHAPES = [(5,), (4, 3), (6, 1), (3, 2, 2, 2)]

# (strategy name, params or None for defaults, order-free under permutation in this configuration)
CONFIGS = [(s.name, None) for s in st.BUILTIN] + [
    ("ties", st.TiesParams(sign_method="frequency")),
    ("ties", st.TiesParams(weighted_vote=False, density=0.5)),
    ("ties", st.TiesParams(columnwise=True)),
    ("ties", st.TiesParams(columnwise=True, sign_method="frequency")),
    ("ties", st.TiesParams(sparsifier="dare", density=0.5, dampening=0.3)),
    ("ties", st.TiesParams(sparsifier="della_conflict", density=0.5)),
    ("magnitude_prune", st.MagnitudePruneParams(density=0.3)),
    ("ziplora", st.ZipLoraParams(probe="identity")),
]
FAST = {"ziplora": {"steps": 15}}  # ZipLoRA's optimiser is exercised in test_ziplora.py


def params_for(name, params):
    s = st.get(name)
    p = params if params is not None else s.params_cls()
    if name in FAST:
        from dataclasses import replace

        p = replace(p, **FAST[name])
    return p


def is_random(params) -> bool:
    return isinstance(params, st.TiesParams) and params.sparsifier is not st.Sparsifier.MAGNITUDE


@hs.composite
def groups(draw, strategy: st.Strategy, positive: bool = False):
    lo, hi = strategy.min_inputs, strategy.max_inputs or 4
    n = draw(hs.integers(lo, max(lo, min(hi, 4))))
    shape = draw(hs.sampled_from(SHAPES))
    seed = draw(hs.integers(0, 2**16))
    kind = draw(hs.sampled_from(["normal", "sparse", "integer"]))
    g = gen(seed)
    deltas = [torch.randn(shape, generator=g) for _ in range(n)]
    if kind == "sparse":
        deltas = [d * (torch.rand(shape, generator=g) < 0.4) for d in deltas]
    elif kind == "integer":  # many exact ties in magnitude and in the sign vote
        deltas = [torch.randint(-2, 3, shape, generator=g).float() for _ in range(n)]
    dtype = draw(hs.sampled_from([torch.float32, torch.float64]))
    deltas = [d.to(dtype) for d in deltas]
    low = 0.1 if positive else -2.0
    weights = [draw(hs.floats(low, 2.0, allow_nan=False).filter(lambda w: abs(w) > 1e-3)) for _ in range(n)]
    return deltas, weights


def run(name, deltas, weights, params, seed=0):
    return st.get(name)(deltas, weights, params, generator=gen(seed))


IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]
# the configurations each property applies to (filtered, so that no case passes by checking nothing)
ORDER_FREE = [(n, p) for n, p in CONFIGS if st.get(n).order_free and not is_random(params_for(n, p))]
AVERAGING = [(n, p) for n, p in CONFIGS if st.get(n).averaging]
LINEAR = [s.name for s in st.BUILTIN if s.linear]
SCALE = [s.name for s in st.BUILTIN if s.name not in FAST]
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
@SETTINGS
@given(data=hs.data())
def test_shape_dtype_device_purity_determinism(name, params, data):
    deltas, weights = data.draw(groups(st.get(name)))
    p = params_for(name, params)
    before = [d.clone() for d in deltas]
    out = run(name, deltas, weights, p, seed=7)
    assert out.shape == deltas[0].shape and out.dtype == deltas[0].dtype and out.device == deltas[0].device
    assert all(torch.equal(a, b) for a, b in zip(deltas, before)), "inputs were modified"
    assert all(out.data_ptr() != d.data_ptr() for d in deltas), "the result aliases an input"
    assert torch.isfinite(out).all()
    assert torch.equal(out, run(name, deltas, weights, p, seed=7)), "not deterministic for a fixed generator"


@pytest.mark.parametrize("name,params", ORDER_FREE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ORDER_FREE)])
@SETTINGS
@given(data=hs.data())
def test_permutation_invariance(name, params, data):
    s = st.get(name)
    p = params_for(name, params)
    deltas, weights = data.draw(groups(s))
    perm = data.draw(hs.permutations(range(len(deltas))))
    out = run(name, deltas, weights, p)
    permuted = run(name, [deltas[i] for i in perm], [weights[i] for i in perm], p)
    scale = max(float(out.abs().max()), 1.0)
    torch.testing.assert_close(permuted, out, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("name,params", AVERAGING, ids=[f"{n}-{i}" for i, (n, _) in enumerate(AVERAGING)])
@SETTINGS
@given(data=hs.data())
def test_averaging_family_returns_identical_inputs(name, params, data):
    s = st.get(name)
    deltas, weights = data.draw(groups(s, positive=True))
    same = [deltas[0]] * len(deltas)
    out = run(name, same, weights, params_for(name, params))
    torch.testing.assert_close(out, deltas[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_all_zero_inputs_give_zero(name, params, shape):
    s = st.get(name)
    n = max(s.min_inputs, 2) if s.max_inputs is None else s.max_inputs
    out = run(name, [torch.zeros(shape)] * n, [1.0] * n, params_for(name, params))
    assert torch.equal(out, torch.zeros(shape))


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_exactly_cancelling_inputs_are_finite(name, params, shape):
    s = st.get(name)
    x = torch.randn(shape, generator=gen(1))
    p = params_for(name, params)
    extra = [torch.zeros(shape)] * (s.min_inputs - 2) if s.min_inputs > 2 else []
    for deltas, weights in (([x, -x], [1.0, 1.0]), ([x, x], [1.0, -1.0]), ([x, -x, x, -x], [1.0] * 4)):
        if s.max_inputs is not None and len(deltas) > s.max_inputs:
            continue
        ds, ws = deltas + extra, weights + [1.0] * len(extra)
        assert torch.isfinite(run(name, ds, ws, p)).all()


@pytest.mark.parametrize("level", ["refine", "full"])
@pytest.mark.parametrize("name", ["weighted_average", "slerp", "consensus", "ties"])
@settings(max_examples=8, deadline=None)
@given(data=hs.data())
def test_refined_merges_keep_the_invariants(level, name, data):
    deltas, weights = data.draw(groups(st.get(name)))
    before = [d.clone() for d in deltas]
    out = refined_merge(name, deltas, weights, generator=gen(3), refine=RefineParams.for_level(level),
                        sparsifier=st.SparsifyParams("della_conflict", density=0.6))
    assert out.shape == deltas[0].shape and out.dtype == deltas[0].dtype and torch.isfinite(out).all()
    assert all(torch.equal(a, b) for a, b in zip(deltas, before))
    again = refined_merge(name, deltas, weights, generator=gen(3), refine=RefineParams.for_level(level),
                          sparsifier=st.SparsifyParams("della_conflict", density=0.6))
    assert torch.equal(out, again)


def test_property_lists_are_not_empty():
    assert len(ORDER_FREE) >= 8 and len(AVERAGING) >= 4 and len(LINEAR) >= 4


@pytest.mark.parametrize("name", LINEAR)
@SETTINGS
@given(data=hs.data())
def test_linear_strategies_are_their_coefficients(name, data):
    """A strategy that declares a coefficient rule returns exactly Σ a_i ΔW_i with those a."""
    s = st.get(name)
    deltas, weights = data.draw(groups(s))
    flat = torch.stack([d.reshape(-1) for d in deltas]).double()
    a = s.coefficients(weights, lambda: flat @ flat.T, s.params_cls())
    want = sum(c * d.double() for c, d in zip(a, deltas))
    scale = max(float(want.abs().max()), 1.0)
    torch.testing.assert_close(run(name, deltas, weights, s.params_cls()).double(), want, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("name", SCALE)
@SETTINGS
@given(data=hs.data(), c=hs.sampled_from([0.5, 3.0]))
def test_scale_invariance_is_declared_truthfully(name, data, c):
    """Scaling every weight by c > 0 changes the result exactly when the strategy says it does."""
    s = st.get(name)
    deltas, weights = data.draw(groups(s))
    deltas = [d.double() for d in deltas]
    base = run(name, deltas, weights, s.params_cls(), seed=3)
    scaled = run(name, deltas, [c * w for w in weights], s.params_cls(), seed=3)
    tol = 1e-6 * max(float(base.abs().max()), 1.0)
    if s.scale_invariant:
        torch.testing.assert_close(scaled, base, atol=tol, rtol=1e-6)
    elif bool(base.abs().max() > 1e-3):  # a zero result is scale-free whatever the strategy
        assert not torch.allclose(scaled, base, atol=tol, rtol=1e-6), f"{name} behaves scale-invariantly"
