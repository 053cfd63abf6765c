"""Groups laid out on the model's blocks: one row per block of the architecture's table, in order.

The rows are the numbered blocks (``input_blocks.4``, ``double_blocks.12``, ``layers.3``) of every
branch the merge touches, in the order the architecture table lists them, blocks that no group
reaches included, so that a picture of the rows is a picture of the model; the modules outside any
numbered block (embeddings, final layers) form one "other" row per branch. A group's cell position
in its row is its module's position in the table. Architecture "unknown" has no table: its rows are
the blocks of its groups in natural order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..analysis.stats import block_of
from ..architectures.registry import TABLES
from .model import GroupRow

OTHER = "(other)"
_NUMBERED = re.compile(r"(?:blocks?|layers)[._]\d+$")  # block_of() found a numbered block


@dataclass(frozen=True)
class BlockRow:
    name: str  # block as shown: ``input_blocks.4``, ``te1.text_model.encoder.layers.0``, ``(other)``
    groups: tuple[GroupRow, ...]  # in the model's module order


def _natural(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _module(key: str) -> str:
    return key.split("#", 1)[0].split(":", 1)[0]


def _row_name(key: str) -> str:
    branch = key.split(".", 1)[0]
    if not _NUMBERED.search(block_of(key)):
        return OTHER if branch == "diffusion_model" else f"{branch} {OTHER}"
    return block_of(key).removeprefix("diffusion_model.")


def block_rows(architecture: str, groups: Sequence[GroupRow]) -> list[BlockRow]:
    """The rows of the block layout of `architecture` for the branches that `groups` touch."""
    table = TABLES.get(architecture)
    branches = {g.key.split(".", 1)[0] for g in groups}
    modules = [m for m in (table.modules if table else ()) if m.split(".", 1)[0] in branches]
    position = {m: i for i, m in enumerate(modules)}
    rows: dict[str, list[GroupRow]] = {}
    for m in modules:
        rows.setdefault(_row_name(m), [])
    known = len(rows)
    for g in groups:
        rows.setdefault(_row_name(g.key), []).append(g)
    names = list(rows)
    names = names[:known] + sorted(names[known:], key=_natural)  # groups the table does not know: after
    names.sort(key=lambda n: OTHER in n)  # "(other)" rows last, stable otherwise
    end = len(position)
    return [
        BlockRow(n, tuple(sorted(rows[n], key=lambda g: (position.get(_module(g.key), end), _natural(g.key)))))
        for n in names
    ]
