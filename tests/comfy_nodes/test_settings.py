"""Optimizer Settings: every option of ``loramerge merge``, the library's defaults, clear errors, and
the options reaching the merge (a TIES merge through the node equals the library's TIES merge)."""

from __future__ import annotations

import loramerge
import pytest

from loramerge.config import LoraInput, MergeConfig
from tests.clients._common import assert_exact, compare_weights

from ._util import SDXL_PAIR, expected_from_groups, library_inputs, patch_kinds, stack


def _defaults(pack) -> dict:
    return {name: spec[1]["default"] for name, spec in pack.OptimizerSettings.INPUT_TYPES()["required"].items()}


def test_every_merge_option_has_a_widget(pack):
    fields = {o.field for o in pack.setting_widgets.WIDGETS}
    assert fields == set(MergeConfig.model_fields) - {"inputs"}
    assert set(pack.OptimizerSettings.INPUT_TYPES()["required"]) == {o.widget for o in pack.setting_widgets.WIDGETS}


def test_settings_widgets_are_the_option_table(pack):
    """Built from the library's option table: same fields, names, help, defaults and choices."""
    from loramerge.options import AUTO, OPTIONS

    widgets = {w.field: w for w in pack.setting_widgets.WIDGETS}
    assert set(widgets) == {o.field for o in OPTIONS}
    for o in OPTIONS:
        w = widgets[o.field]
        assert w.widget == o.widget and w.spec[1]["tooltip"] == o.help, o.field
        default = w.spec[1]["default"]
        assert w.to_config(default) == (None if o.optional else o.default_value), o.field
        if isinstance(w.spec[0], list) and o.field != "device":
            assert w.spec[0] == o.choices(), o.field
            assert AUTO in w.spec[0] if o.optional else w.to_config(AUTO) == AUTO, o.field


def test_widget_defaults_are_the_library_defaults(pack):
    (options,) = pack.OptimizerSettings().settings(**_defaults(pack))
    x = (LoraInput(path="x"),)
    assert MergeConfig(inputs=x, **options) == MergeConfig(inputs=x)


def test_combo_defaults_are_among_their_choices(pack):
    for name, (kind, spec) in pack.OptimizerSettings.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            assert spec["default"] in kind, name


def test_zero_and_auto_mean_unset(pack):
    values = {**_defaults(pack), "rank": 16, "error_target": 0.0, "density": 0.0, "preset": "dit", "arch": "auto",
              "merge_seed": 7, "mode": "ties", "base": ""}
    (options,) = pack.OptimizerSettings().settings(**values)
    assert (options["rank"], options["rel_error"], options["density"]) == (16, None, None)
    assert (options["preset"], options["arch"], options["seed"], options["mode"], options["base"]) == ("dit", None, 7,
                                                                                                      "ties", None)


def test_comfyui_device(pack):
    import comfy.model_management

    (options,) = pack.OptimizerSettings().settings(**{**_defaults(pack), "device": "comfyui"})
    assert options["device"] == str(comfy.model_management.get_torch_device()) == "cpu"


@pytest.mark.parametrize("change, message", [
    ({"mode": "tie"}, r"unknown merge strategy 'tie'. Did you mean 'ties'"),
    ({"base": "no_such_model.safetensors"}, r"base model 'no_such_model.safetensors' is not in checkpoints"),
    ({"base": "/no/such/model.safetensors"}, r"base model /no/such/model.safetensors does not exist"),
    ({"density": 1.5}, r"invalid options: density: Input should be less than or equal to 1"),
])
def test_invalid_settings_are_named(pack, change, message):
    with pytest.raises(pack.LoraOptimizerError, match=message):
        pack.OptimizerSettings().settings(**{**_defaults(pack), **change})


def test_settings_reach_the_merge(pack, host, loras):
    """A forced TIES merge (dense per group, re-factorised at the summed rank) through the node: still
    ComfyUI `lora` patches, and every weight is base + the library's own TIES merge."""
    (settings,) = pack.OptimizerSettings().settings(**{**_defaults(pack), "mode": "ties", "auto_strength": False,
                                                       "merge_seed": 3})
    model, clip, report, data = pack.LoraOptimizer().optimize(host.model, stack(pack, *SDXL_PAIR), 1.0, 1.0,
                                                              clip=host.clip, settings=settings)
    assert data.result.report.options["mode"] == "ties" and data.result.report.options["seed"] == 3
    assert data.result.report.strategy_counts["ties"] > len(data.result.groups) // 2
    result = loramerge.merge(library_inputs(loras, SDXL_PAIR), mode="ties", auto_strength=False, seed=3)
    assert patch_kinds(model) == {"lora"} and patch_kinds(clip.patcher) == {"lora"}
    expected = expected_from_groups(result, 1.0, 1.0)
    rtols = {g.key: g.rel_error for g in result.groups}
    assert_exact(compare_weights(host.weights(model, clip), host.sdxl.before, expected, host.sdxl.group_of.get,
                                 rtols=rtols), expected, "ties through the node vs loramerge.merge")
