import re

import pytest
import torch

import loramerge.strategies as st
from loramerge.strategies import DuplicateStrategyError, Registry, Strategy, UnknownStrategyError
from loramerge.strategies.linear import NoParams, weighted_sum

from .conftest import gen

EXPECTED = {
    "weighted_sum", "weighted_average", "normalize", "l2_weighted_average", "add_difference", "slerp",
    "consensus", "ties", "magnitude_prune", "ziplora",
}


def test_names_lists_every_builtin():
    assert set(st.names()) == EXPECTED


def test_get_returns_callable_with_params_class():
    s = st.get("ties")
    assert s.name == "ties" and s.params_cls is st.TiesParams
    p = s.params_cls()
    assert (p.density, p.sign_method, p.weighted_vote, p.columnwise) == (0.7, "total", True, False)
    out = s([torch.ones(2, 2), torch.ones(2, 2)], [1.0, 1.0], s.params_cls(density=1.0), generator=gen())
    assert torch.equal(out, torch.ones(2, 2))


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownStrategyError) as err:
        st.get("slerpp")
    assert isinstance(err.value, KeyError)
    assert err.value.suggestions[0] == "slerp"
    assert "Did you mean 'slerp'" in str(err.value)


def test_unknown_name_without_close_match_lists_known():
    with pytest.raises(UnknownStrategyError, match="Known strategies: add_difference"):
        st.get("zzzzzz")


def test_duplicate_registration_rejected():
    reg = Registry([Strategy("a", weighted_sum, NoParams)])
    with pytest.raises(DuplicateStrategyError):
        reg.register(Strategy("a", weighted_sum, NoParams))
    with pytest.raises(DuplicateStrategyError):
        st.register(st.get("ties"))


def test_wrong_params_type_rejected():
    with pytest.raises(TypeError, match="TiesParams"):
        st.get("ties")([torch.ones(2)], [1.0], st.SlerpParams(), generator=gen())


def test_arity_enforced():
    with pytest.raises(ValueError, match="exactly 3"):
        st.get("add_difference")([torch.ones(2)] * 2, [1.0, 1.0], generator=gen())
    with pytest.raises(ValueError, match="exactly 2"):
        st.get("ziplora")([torch.ones(2)] * 3, [1.0] * 3, generator=gen())


def test_mismatched_inputs_rejected():
    s = st.get("weighted_sum")
    with pytest.raises(ValueError, match="2 deltas but 1 weights"):
        s([torch.ones(2), torch.ones(2)], [1.0], generator=gen())
    with pytest.raises(ValueError, match="all deltas of a group must match"):
        s([torch.ones(2), torch.ones(3)], [1.0, 1.0], generator=gen())
    with pytest.raises(TypeError, match="floating point"):
        s([torch.ones(2, dtype=torch.int64)], [1.0], generator=gen())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_rejected():
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        st.get("ties")([torch.ones(2)], [1.0], generator=torch.Generator(device="cuda"))


def test_params_validate():
    with pytest.raises(ValueError):
        st.TiesParams(density=1.5)
    with pytest.raises(ValueError):
        st.TiesParams(sign_method="majority")
    with pytest.raises(ValueError):
        st.SparsifyParams(method="dropout")
    assert st.TiesParams(sparsifier="dare").sparsifier is st.Sparsifier.DARE
    assert st.TiesParams(sparsifier=None).sparsifier is st.Sparsifier.MAGNITUDE


def test_every_strategy_documents_formula_and_source():
    for s in st.BUILTIN:
        doc = s.fn.__doc__ or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        assert re.search(r"``[^`]*[=Σ⊙·][^`]*``", doc), f"{s.name}: the docstring should give its formula in ``…``"
        assert re.search(r"\((?:[A-Za-z ]+ )?(?:19|20)\d\d\)|\b(?:19|20)\d\d\b|seed 00\d|METHOD §", doc), \
            f"{s.name}: the docstring should cite its source (paper and year, a seed document or METHOD)"
        assert len(first) > 15, f"{s.name}: the docstring should open with what the strategy does"
