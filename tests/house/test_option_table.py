"""One option table: the CLI's merge/analyze options and the ComfyUI settings widgets are built from
`loramerge.options.OPTIONS`, which is derived from `MergeConfig`; nothing is written twice."""

from __future__ import annotations

import pytest
import typer

from loramerge.cli import app
from loramerge.config import MergeConfig
from loramerge.options import OPTIONS

TABLE_FIELDS = {o.field for o in OPTIONS}


def _command(name: str):
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def test_table_is_every_config_field_but_the_inputs():
    assert TABLE_FIELDS == set(MergeConfig.model_fields) - {"inputs"}
    assert all(o.help for o in OPTIONS), [o.field for o in OPTIONS if not o.help]


@pytest.mark.parametrize("command", ["merge", "analyze"])
def test_cli_exposes_exactly_the_table(command):
    params = {p.name: p for p in _command(command).params}
    assert TABLE_FIELDS <= set(params)
    for o in OPTIONS:
        p = params[o.field]
        assert set(p.opts) | set(p.secondary_opts) == set(o.flags), o.field
        assert p.default is None, f"{o.field}: unset on the CLI must mean 'the recipe's or the library default'"
        want = o.kind if o.field != "base" else p.type_descriptor.annotation  # a path on the CLI
        assert p.type_descriptor.annotation is want, o.field  # enums: the same choices
