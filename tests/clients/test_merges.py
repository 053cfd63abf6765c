"""loramerge ``merge`` outputs (the optimizer issue) loaded by the real clients.

Linear merges (``weighted_sum``, auto-strength off, strengths 0.8 and 0.5) are written as exact
low-rank patches, so every loaded weight must be base + 0.8·truth_a + 0.5·truth_b. A non-linear
merge (``ties``) must load as base + the patch loramerge reports for each group
(``result.groups[i].patch``), within that group's reported ``rel_error``.
"""

from __future__ import annotations

import pytest

from loramerge import architectures as A
from loramerge.architectures.engine import Stem
from loramerge.formats.align import branch_for, group_key
from loramerge.formats.dialects import parse_stem
from tests.fixtures import truth_key

from ._comfy import assert_loaded_exactly as assert_comfy_exact
from ._common import expected_deltas
from ._diffusers import (
    SDXL_COMPONENTS,
    assert_loaded_exactly,
    load_sdxl,
    load_transformer,
)

# one worker builds this package's ComfyUI SDXL model (scripts/check.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("clients_comfy_sdxl")

SDXL_PAIR = ("sdxl_peft_diffusers", "sdxl_lycoris_locon")
FLUX_PAIR = ("flux_peft_diffusers", "lycoris_wrapper")   # PEFT LoRA + LyCORIS full-matrix LoKr / LoCon
WAN_PAIR = ("wan_peft_diffusers", "wan_i2v_peft_rslora_diffusers")  # a T2V LoRA merged into an I2V one


def _linear(real_fixtures, pair):
    a, b = pair
    return expected_deltas([(real_fixtures[a], 0.8), (real_fixtures[b], 0.5)])


def _truth_keys(real_fixtures, pair):
    return set(real_fixtures[pair[0]].truth) | set(real_fixtures[pair[1]].truth)


def _assert_exact_linear(result):
    assert result.groups and all(g.exact and g.rel_error == 0.0 for g in result.groups)
    assert result.report.strategy_counts == {"weighted_sum": len(result.groups)}


def _group_results(result):
    """Expected ΔW and tolerance per canonical group key, from what loramerge reports."""
    expected = {g.key: g.patch.dense().float() for g in result.groups}
    rtols = {g.key: g.rel_error for g in result.groups}
    return expected, rtols


def _assert_not_linear(result, real_fixtures, pair, arch):
    """The ties merge is not the weighted sum in disguise (else the test would prove nothing new)."""
    linear = _linear(real_fixtures, pair)
    name_of = group_namer(arch)
    by_group = {name_of(k.split(".")[0], k.split(".", 1)[1] + ".weight"): v for k, v in linear.items() if "#" not in k}
    far = [g.key for g in result.groups
           if (g.patch.dense().reshape(by_group[g.key].shape) - by_group[g.key]).norm() > 1e-2 * by_group[g.key].norm()]
    assert len(far) > len(result.groups) // 4, (len(far), len(result.groups))


def group_namer(arch: str):
    """(component, diffusers model key) -> loramerge's canonical group key of that weight (the
    mapping tests/formats/test_fixture_truth.py checks), None for anything it does not place."""
    table = A.get_table(arch)
    placer = A.placer(table.name)

    def name_of(component: str, model_key: str) -> str | None:
        module, _, param = model_key.rpartition(".")
        parsed = parse_stem(truth_key(component, module))
        if parsed is None:
            return None
        placement = placer.place(Stem(branch_for(table, parsed.prefix, parsed.stem.branch), parsed.stem.path, True))
        return None if placement is None else group_key(placement, param)

    return name_of


# ------------------------------------------------------------------------------- weighted sum

def test_sdxl_weighted_sum_kohya_loads_exactly_in_comfyui(real_fixtures, merged, comfy_sdxl):
    path, result = merged(*SDXL_PAIR, "weighted_sum", "kohya")
    _assert_exact_linear(result)
    load = comfy_sdxl.load(path)
    assert_comfy_exact(comfy_sdxl, load, _linear(real_fixtures, SDXL_PAIR), "SDXL weighted_sum as kohya")


@pytest.mark.parametrize("fmt, component", [
    pytest.param(fmt, comp, id=f"{fmt}-{comp}")
    for fmt in ("kohya", "diffusers") for comp in SDXL_COMPONENTS
])
def test_sdxl_weighted_sum_loads_exactly_in_diffusers(real_fixtures, merged, fmt, component):
    # merged ranks: 4+4 where both LoRAs adapt a module, 4 where one does, 2+4 for attn2.to_k, ...
    path, result = merged(*SDXL_PAIR, "weighted_sum", fmt)
    _assert_exact_linear(result)
    load = load_sdxl(path, components=(component,))
    assert load.file_components == set(SDXL_COMPONENTS)
    assert_loaded_exactly(load, _linear(real_fixtures, SDXL_PAIR), _truth_keys(real_fixtures, SDXL_PAIR),
                          f"SDXL weighted_sum as {fmt}, {component}")


TRANSFORMER_PAIRS = [pytest.param(FLUX_PAIR, "flux", False, id="flux"),
                     pytest.param(WAN_PAIR, "wan", True, id="wan")]


@pytest.mark.parametrize("pair, arch, i2v", TRANSFORMER_PAIRS)
def test_transformer_weighted_sum_loads_exactly_in_diffusers(real_fixtures, merged, pair, arch, i2v):
    path, result = merged(*pair, "weighted_sum", "diffusers")
    assert all(g.rel_error == 0.0 for g in result.groups)  # LoKr full-matrix: dense, factorised at full rank
    load = load_transformer(arch, path, i2v=i2v)
    assert_loaded_exactly(load, _linear(real_fixtures, pair), _truth_keys(real_fixtures, pair),
                          f"{arch} weighted_sum as diffusers")


# ----------------------------------------------------------------------------------------- ties

def test_sdxl_ties_kohya_loads_as_reported_in_comfyui(real_fixtures, merged, comfy_sdxl):
    path, result = merged(*SDXL_PAIR, "ties", "kohya")
    assert result.report.strategy_counts.get("ties", 0) > len(result.groups) // 2
    _assert_not_linear(result, real_fixtures, SDXL_PAIR, "sdxl")
    expected, rtols = _group_results(result)
    load = comfy_sdxl.load(path)
    assert_comfy_exact(comfy_sdxl, load, expected, "SDXL ties as kohya", by="group", rtols=rtols)


@pytest.mark.parametrize("pair, arch, i2v", TRANSFORMER_PAIRS)
def test_transformer_ties_diffusers_loads_as_reported_in_diffusers(real_fixtures, merged, pair, arch, i2v):
    path, result = merged(*pair, "ties", "diffusers")
    assert result.report.strategy_counts.get("ties", 0) > len(result.groups) // 2
    _assert_not_linear(result, real_fixtures, pair, arch)
    expected, rtols = _group_results(result)
    load = load_transformer(arch, path, i2v=i2v)
    assert_loaded_exactly(load, expected, _truth_keys(real_fixtures, pair), f"{arch} ties as diffusers",
                          name_of=group_namer(arch), rtols=rtols)
