"""The one strict engine that applies an `ArchTable`: places (branch, path) stems on canonical modules.

Dotted paths are looked up as written. Kohya-style underscored paths (``input_blocks_4_1_...``) are
looked up in an index built from the table's own dotted names with '.' replaced by '_', never by
guessing where underscores were dots. Two different modules that collapse to the same underscored
name are recorded as ambiguous and reported, never silently resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .spec import Alias, ArchTable, Branch, Placement, Style

_AMBIGUOUS = Placement("<ambiguous>")


@dataclass(frozen=True)
class Stem:
    """An input module reference after the dialect stripped its prefix and suffix."""

    branch: Branch
    path: str
    dotted: bool  # False: kohya-style, underscores stand for dots


class KeyPlacer:
    """Places stems for one architecture table."""

    def __init__(self, table: ArchTable):
        self.table = table

    @cached_property
    def _dotted(self) -> dict[tuple[Branch, str], Placement]:
        index: dict[tuple[Branch, str], Placement] = {}
        for alias in self.table.all_aliases():
            _put(index, (alias.branch, alias.path), alias.placement)
        return index

    @cached_property
    def _underscored(self) -> dict[tuple[Branch, str], Placement]:
        index: dict[tuple[Branch, str], Placement] = {}
        for alias in self.table.all_aliases():
            _put(index, (alias.branch, alias.path.replace(".", "_")), alias.placement)
        return index

    @cached_property
    def ambiguous(self) -> list[tuple[Branch, str]]:
        """Underscored (or dotted) spellings that name two different modules: a table defect."""
        return [k for idx in (self._dotted, self._underscored) for k, v in idx.items() if v is _AMBIGUOUS]

    def place(self, stem: Stem) -> Placement | None:
        index = self._dotted if stem.dotted else self._underscored
        found = index.get((stem.branch, stem.path))
        return None if found is None or found is _AMBIGUOUS else found

    @cached_property
    def _by_style(self) -> dict[tuple[Style, str], Alias]:
        """First alias of each style for each placement key (what a writer emits)."""
        out: dict[tuple[Style, str], Alias] = {}
        for alias in self.table.all_aliases():
            out.setdefault((alias.style, alias.placement.key), alias)
        return out

    def spelling(self, placement: Placement, style: Style) -> Alias | None:
        """The alias a writer should emit for `placement` in `style` (None when the style has none)."""
        return self._by_style.get((style, placement.key))


def _put(index: dict, key: tuple[Branch, str], placement: Placement) -> None:
    old = index.get(key)
    if old is None:
        index[key] = placement
    elif old != placement:
        index[key] = _AMBIGUOUS
