"""Rows of module names and the one function that turns them into an `ArchTable`.

A family file lists its modules as `Row`s: the native name, its diffusers spelling (a path, or one
path per component of a fused weight) and any further spellings seen in the wild. Rows are written
relative to a block and placed under it with `under`, so a family file reads like the model's own
module tree, not like code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .spec import Alias, ArchTable, Branch, Fused, Placement, Style

QKV = Fused((("q", 1), ("k", 1), ("v", 1)))
"""Fused attention input projection: q, k, v rows of equal size."""

QKV_MLP4 = Fused((("q", 1), ("k", 1), ("v", 1), ("mlp", 4)))
"""FLUX/HunyuanVideo single-stream ``linear1``: q, k, v, then the MLP input (mlp_ratio 4)."""


@dataclass(frozen=True)
class Row:
    """One adaptable module.

    ``diffusers``: the diffusers/transformers spelling; a path for a plain module, a mapping
    component -> path for a fused one (diffusers keeps the parts as separate Linear layers), or
    None when diffusers has no spelling that is a pure rename (say so where the row is written).
    ``other``: further whole-module spellings (read-only).
    """

    native: str
    diffusers: str | Mapping[str, str] | None = None
    other: tuple[str, ...] = ()
    fused: Fused | None = None

    def with_other(self, *paths: str) -> Row:
        return replace(self, other=self.other + tuple(p for p in paths if p != self.native))


def same(*natives: str) -> list[Row]:
    """Rows for modules that diffusers names exactly like the native model does."""
    return [Row(n, n) for n in natives]


def under(rows: Iterable[Row], native_prefix: str, diffusers_prefix: str | None = None) -> list[Row]:
    """Place block-relative rows under a block: native and other spellings under `native_prefix`,
    diffusers spellings under `diffusers_prefix` (default: the same prefix)."""
    dp = native_prefix if diffusers_prefix is None else diffusers_prefix

    def join(prefix: str, path: str) -> str:
        return f"{prefix}.{path}" if prefix else path

    out = []
    for r in rows:
        if isinstance(r.diffusers, Mapping):
            diffusers: str | Mapping[str, str] | None = {c: join(dp, p) for c, p in r.diffusers.items()}
        else:
            diffusers = None if r.diffusers is None else join(dp, r.diffusers)
        out.append(
            Row(join(native_prefix, r.native), diffusers, tuple(join(native_prefix, o) for o in r.other), r.fused)
        )
    return out


def build_table(
    name: str,
    *,
    family: str,
    preset: str,
    branches: Mapping[Branch, Iterable[Row]],
    markers: tuple[str, ...] = (),
    priority: int = 0,
    diffusers_prefix: Mapping[Branch, str] | None = None,
    kohya_prefix: Mapping[Branch, str] | None = None,
    kohya_style: Mapping[Branch, Style] | None = None,
    comfy_style: Mapping[Branch, Style] | None = None,
) -> ArchTable:
    """Turn rows into an `ArchTable`; raises ValueError on a malformed row (a table defect)."""
    modules: dict[str, Fused | None] = {}
    aliases: list[Alias] = []
    for branch, rows in branches.items():
        for r in rows:
            module = f"{branch.value}.{r.native}"
            if module in modules:
                raise ValueError(f"{name}: module {module} is listed twice")
            modules[module] = r.fused
            aliases.extend(_aliases(name, branch, module, r))
    return ArchTable(
        name=name,
        preset=preset,
        modules=modules,
        aliases=tuple(aliases),
        markers=markers,
        priority=priority,
        diffusers_prefix=dict(diffusers_prefix or {}),
        kohya_prefix=dict(kohya_prefix or {}),
        family=family,
        kohya_style=dict(kohya_style or {}),
        comfy_style=dict(comfy_style or {}),
    )


def _aliases(name: str, branch: Branch, module: str, r: Row) -> list[Alias]:
    out = []
    if r.fused is None:
        if isinstance(r.diffusers, Mapping):
            raise ValueError(f"{name}: {module} has per-component diffusers names but no fused layout")
        if r.diffusers is not None:
            out.append(Alias(branch, r.diffusers, Placement(module), Style.DIFFUSERS))
    else:
        if not isinstance(r.diffusers, Mapping) or set(r.diffusers) != set(r.fused.names):
            raise ValueError(f"{name}: fused {module} needs one diffusers path per component {r.fused.names}")
        for component in r.fused.names:
            out.append(Alias(branch, r.diffusers[component], Placement(module, component), Style.DIFFUSERS))
    out.extend(Alias(branch, o, Placement(module), Style.OTHER) for o in r.other)
    return out
