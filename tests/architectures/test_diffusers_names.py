"""Every table against the real diffusers/transformers model classes (built on the meta device).

Both directions: every layer/norm of the model places through the table (as diffusers, PEFT and
AI-Toolkit name it, and underscored as OneTrainer/kohya SD1.x do), and every diffusers spelling the
table declares names a module that exists, so a file written in diffusers style loads there.
"""

from __future__ import annotations

from functools import cache

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from loramerge.architectures import Stem, Style, get_table, placer  # noqa: E402

from .tiny_models import CASES, adaptable_names, build_meta  # noqa: E402


@cache
def _model_names(case_id: str) -> tuple[list[str], frozenset[str]]:
    model = build_meta(CASES[case_id])
    return adaptable_names(model), frozenset(n for n, _ in model.named_modules())


@pytest.mark.parametrize("case_id", list(CASES))
def test_every_model_layer_places(case_id):
    case = CASES[case_id]
    key_placer = placer(case.table)
    names, _ = _model_names(case_id)
    assert len(names) > 10
    dotted = sorted(n for n in names if key_placer.place(Stem(case.branch, n, dotted=True)) is None)
    underscored = sorted(
        n for n in names if key_placer.place(Stem(case.branch, n.replace(".", "_"), dotted=False)) is None
    )
    assert dotted == sorted(case.not_aliased)
    assert underscored == sorted(case.not_aliased)


@pytest.mark.parametrize("case_id", list(CASES))
def test_model_layer_is_spelled_back_the_same(case_id):
    """The diffusers alias a writer picks for a placed diffusers name is that very name."""
    case = CASES[case_id]
    key_placer = placer(case.table)
    names, _ = _model_names(case_id)
    for name in names:
        placement = key_placer.place(Stem(case.branch, name, dotted=True))
        if placement is None:
            continue
        alias = key_placer.spelling(placement, Style.DIFFUSERS)
        assert alias is not None, name
        # transformers >= 5 CLIPTextModel has no text_model wrapper; diffusers strips it on load.
        assert alias.path.removeprefix("text_model.") == name.removeprefix("text_model."), name


@pytest.mark.parametrize("case_id", list(CASES))
def test_every_diffusers_alias_exists_in_the_model(case_id):
    case = CASES[case_id]
    _, modules = _model_names(case_id)
    if "text_model" not in modules:
        modules = modules | {f"text_model.{m}" for m in modules}
    aliases = [
        a
        for a in get_table(case.table).aliases
        if a.style is Style.DIFFUSERS and a.branch is case.branch and a.placement.module.startswith(case.alias_scope)
    ]
    assert aliases
    assert [a.path for a in aliases if a.path not in modules] == []
