"""Shared pieces of the client tests: expected deltas, whole-model weight comparison, log capture."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

# Relative tolerance on ‖loaded − (base + ΔW)‖ / ‖ΔW‖ for adapted weights. The clients fuse in
# float32, so a few float32 ulps of the fused weight are allowed on top (see `compare_weights`).
RTOL = 1e-5
_EPS32 = torch.finfo(torch.float32).eps

LIBRARY_LOGGERS = ("diffusers", "transformers", "peft")


def expected_deltas(parts: Iterable[tuple[object, float]]) -> dict[str, torch.Tensor]:
    """Σ strength · fixture.truth per truth key (float64 sum, float32 result)."""
    acc: dict[str, torch.Tensor] = {}
    for fixture, strength in parts:
        for key, delta in fixture.truth.items():
            d = delta.double() * strength
            acc[key] = acc[key] + d if key in acc else d
    return {k: v.float() for k, v in acc.items()}


@dataclass
class Comparison:
    """Outcome of comparing one model's weights after the client fused/patched a LoRA."""

    matched: set[str] = field(default_factory=set)          # expected keys found on a model weight
    wrong: dict[str, float] = field(default_factory=dict)   # model key -> relative error
    changed: list[str] = field(default_factory=list)        # model keys with no expected ΔW that moved
    worst: float = 0.0
    checked: int = 0

    def merge(self, other: Comparison) -> Comparison:
        self.matched |= other.matched
        self.wrong.update(other.wrong)
        self.changed += other.changed
        self.worst = max(self.worst, other.worst)
        self.checked += other.checked
        return self


def compare_weights(after: Mapping[str, torch.Tensor], before: Mapping[str, torch.Tensor],
                    expected: Mapping[str, torch.Tensor], name_of: Callable[[str], str | None],
                    rtol: float = RTOL, rtols: Mapping[str, float] | None = None) -> Comparison:
    """Every tensor of `after` against `before` (+ `expected[name_of(key)]` where there is one).

    Adapted: ‖after − (before + ΔW)‖ ≤ rtol·‖ΔW‖ + 4 eps32 ‖before + ΔW‖, with rtol raised to
    ``rtols[name]`` where given. Everything else must be bit-identical to `before`."""
    assert set(after) == set(before), sorted(set(after) ^ set(before))[:10]
    out = Comparison()
    for key, got in after.items():
        base = before[key]
        name = name_of(key)
        delta = expected.get(name) if name is not None else None
        if delta is None:
            if not torch.equal(got, base):
                out.changed.append(key)
            continue
        out.matched.add(name)
        out.checked += 1
        want = base.double() + delta.double().reshape(base.shape)
        err = float((got.double() - want).norm())
        scale = float(delta.double().norm())
        rel = err / scale if scale > 0 else err
        out.worst = max(out.worst, rel)
        tol = max(rtol, (rtols or {}).get(name, 0.0))
        if err > tol * scale + 4 * _EPS32 * float(want.norm()):
            out.wrong[key] = rel
    return out


def assert_exact(cmp: Comparison, expected_keys: Iterable[str], what: str) -> None:
    """Every expected key was found on a model weight and matches; nothing else moved."""
    expected_keys = set(expected_keys)
    missing = expected_keys - cmp.matched
    assert not missing, f"{what}: {len(missing)} expected ΔW never reached a model weight, e.g. {sorted(missing)[:5]}"
    assert not cmp.changed, f"{what}: {len(cmp.changed)} weights without a ΔW changed, e.g. {cmp.changed[:5]}"
    assert not cmp.wrong, (f"{what}: {len(cmp.wrong)}/{cmp.checked} adapted weights differ from base + ΔW "
                           f"(worst rel err {cmp.worst:.3g}), e.g. {sorted(cmp.wrong.items())[:5]}")
    assert cmp.checked == len(expected_keys), (cmp.checked, len(expected_keys))


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class Captured:
    records: list[str] = field(default_factory=list)   # "logger LEVEL: message"
    warnings: list[str] = field(default_factory=list)

    def matching(self, *needles: str) -> list[str]:
        lines = self.records + self.warnings
        return [line for line in lines if any(n.lower() in line.lower() for n in needles)]


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink
        self.seen: list[logging.LogRecord] = []  # a record reaches every handler up its chain

    def emit(self, record: logging.LogRecord) -> None:
        if any(r is record for r in self.seen):
            return
        self.seen.append(record)
        self.sink.append(f"{record.name} {record.levelname}: {record.getMessage()}")


@contextlib.contextmanager
def capture_messages(loggers: Iterable[str] = ("",) + LIBRARY_LOGGERS):
    """Collect WARNING+ log records (the root logger, where ComfyUI logs, and the libraries' own
    loggers, which do not propagate) and Python warnings."""
    cap = Captured()
    handler = _Collect(cap.records)
    saved = []
    for name in dict.fromkeys(loggers):
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        lg.addHandler(handler)
        if lg.level == logging.NOTSET and name or lg.level > logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield cap
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
        cap.warnings.extend(f"{w.category.__name__}: {w.message}" for w in caught)


# ------------------------------------------------------------------ format-advice classification

def classify(r: dict) -> str:
    """The format-advice cell a measurement (``_comfy_models.measure`` / ``_diffusers_models.measure``)
    gives; asserts that whatever loaded, loaded right."""
    from loramerge.formats.advice import FULL, NONE, PARTIAL

    assert not r["wrong"], f"patches landed with wrong values (rel err): {dict(list(r['wrong'].items())[:5])}"
    assert not r["stray"], f"weights without a ΔW changed: {r['stray'][:5]}"
    assert r["expected"] > 0
    if r.get("error") is None and r["loaded"] == r["expected"] and not r["not_loaded"]:
        return FULL
    return NONE if r["loaded"] == 0 else PARTIAL


def summary(r: dict) -> str:
    parts = [f"{r['loaded']}/{r['expected']} patches loaded"]
    if r.get("error"):
        parts.append(f"raised {r['error'][:200]}")
    if r["not_loaded"]:
        parts.append(f"{len(r['not_loaded'])} keys/messages left over, e.g. {r['not_loaded'][:2]}")
    if r["missing"]:
        parts.append(f"missing e.g. {r['missing'][:3]}")
    return "; ".join(parts)


def check_partial(r: dict, left_out: tuple[str, ...], what: str) -> None:
    """A partial load dropped exactly the weights the cell's ``left_out`` fragments name."""
    assert left_out, "a partial cell names what is left out"
    unexplained = [k for k in r["missing"] if not any(f in k for f in left_out)]
    assert not unexplained, f"{what}: left out beyond {left_out}: {unexplained[:5]}"
    unseen = [f for f in left_out if not any(f in k for k in r["missing"])]
    assert not unseen, f"{what}: {unseen} named as left out, but loaded"
